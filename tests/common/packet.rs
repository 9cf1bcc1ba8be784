//! Raw frames on a device: an AF_PACKET socket and an ARP question asked through it, and a VXLAN
//! header built by hand (RFC 7348), independent of vtepd's own wire code.
use super::*;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

/// Asks, from the TAP side of `dev` in `ns`, who has `target` (an ARP request transmitted on the
/// device, as the kernel would send it), and returns the sender MAC of the first reply that comes
/// back in, or None within about 3 s. The request comes from a MAC nobody uses, so the kernel
/// ignores the answer (PACKET_OTHERHOST) and its own neighbour table is not touched.
pub fn arp_ask_tap(
    ns: &Netns,
    dev: &str,
    sender_ip: Ipv4Addr,
    target: Ipv4Addr,
) -> Option<[u8; 6]> {
    let dev = dev.to_string();
    in_netns(ns.name(), move || {
        const ETH_P_ARP: u16 = 0x0806;
        let asker = [0x02, 0xaa, 0xaa, 0xaa, 0xaa, 0x01];
        let sock = PacketSocket::open(&dev, ETH_P_ARP);
        sock.set_recv_timeout(Duration::from_millis(200));
        let mut req = vec![0xff; 6];
        req.extend_from_slice(&asker);
        req.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        req.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
        req.extend_from_slice(&asker);
        req.extend_from_slice(&sender_ip.octets());
        req.extend_from_slice(&[0; 6]);
        req.extend_from_slice(&target.octets());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            sock.send(&req, [0xff; 6]);
            let until = Instant::now() + Duration::from_millis(500);
            let mut buf = [0u8; 2048];
            while Instant::now() < until {
                let Some((n, pkttype)) = sock.recv(&mut buf) else {
                    continue;
                };
                let f = &buf[..n];
                // Incoming (not our own request looping back), an ARP reply about `target` to us.
                if pkttype != libc::PACKET_OUTGOING
                    && n >= 42
                    && f[12..14] == ETH_P_ARP.to_be_bytes()
                    && f[20..22] == [0, 2]
                    && f[28..32] == target.octets()
                    && f[32..38] == asker
                {
                    return Some(f[22..28].try_into().unwrap());
                }
            }
        }
        None
    })
}

/// An AF_PACKET socket bound to one device of the calling thread's namespace: whole Ethernet
/// frames in and out, nothing of the kernel's IP stack in between.
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// `protocol` is the ethertype to receive (host order), 0 for a send-only socket.
    pub fn open(dev: &str, protocol: u16) -> PacketSocket {
        use std::os::fd::FromRawFd;
        let cname = std::ffi::CString::new(dev).unwrap();
        // SAFETY: if_nametoindex reads a NUL-terminated string that lives for the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
        assert!(ifindex > 0, "no device {dev} in this namespace");
        // SAFETY: plain socket(2); the fd is owned right below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol.to_be()),
            )
        };
        assert!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let s = PacketSocket { fd, ifindex };
        let addr = s.sockaddr(protocol, [0; 6]);
        // SAFETY: bind(2) with a sockaddr_ll that lives for the call and its true size.
        let rc = unsafe {
            libc::bind(
                s.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            rc,
            0,
            "bind AF_PACKET to {dev}: {}",
            std::io::Error::last_os_error()
        );
        s
    }

    fn sockaddr(&self, protocol: u16, dst: [u8; 6]) -> libc::sockaddr_ll {
        let mut addr = [0u8; 8];
        addr[..6].copy_from_slice(&dst);
        libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: protocol.to_be(),
            sll_ifindex: self.ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: addr,
        }
    }

    pub fn set_recv_timeout(&self, t: Duration) {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: setsockopt reads one timeval from a pointer valid for the call.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
    }

    /// Transmits one whole Ethernet frame (`frame` starts with its destination MAC). A full device
    /// queue is waited out, so no frame is silently skipped; any other error panics.
    pub fn send(&self, frame: &[u8], dst: [u8; 6]) {
        let addr = self.sockaddr(0, dst);
        loop {
            // SAFETY: sendto(2) reads `frame` and `addr`, both valid for the call.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc >= 0 {
                assert_eq!(rc as usize, frame.len(), "short AF_PACKET send");
                return;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => thread::sleep(Duration::from_millis(1)),
                _ => panic!("AF_PACKET send of {} bytes: {e}", frame.len()),
            }
        }
    }

    /// One frame and its packet type (PACKET_HOST, PACKET_OUTGOING, ...), or None on timeout.
    pub fn recv(&self, buf: &mut [u8]) -> Option<(usize, u8)> {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: recvfrom(2) writes at most buf.len() bytes and at most `len` address bytes.
        let rc = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        (rc >= 0).then_some((rc as usize, from.sll_pkttype))
    }
}

/// A VXLAN header with every field as given, reserved ones included: flags (0x08 is the I flag),
/// 24 reserved bits, the 24-bit VNI, 8 reserved bits.
pub fn vxlan_header(flags: u8, reserved1: [u8; 3], vni: u32, reserved2: u8) -> [u8; 8] {
    let v = vni.to_be_bytes();
    [flags, reserved1[0], reserved1[1], reserved1[2], v[1], v[2], v[3], reserved2]
}
