//! Underlay UDP sockets and batched (mmsg) send/receive.
//!
//! Each worker owns one receive socket on the VXLAN port (SO_REUSEPORT: the kernel spreads peers'
//! flows across workers by 4-tuple hash) and a small pool of send sockets bound to ephemeral ports.
//! A UDP socket cannot choose its source port per datagram, and RFC 7348 wants the source port to
//! carry the inner flow's hash; picking the send socket by flow hash does that while keeping the
//! kernel's UDP path (and, later, UDP GSO) — a raw socket would lose both.
use super::{retry, Slots};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error("{ip} is not an address of this host: add it to an interface (`ip addr add {ip}/24 dev eth0`) or fix node.public_ip")]
    AddrNotHere { ip: Ipv4Addr },
    #[error("UDP port {port} on {ip} is in use (another vtepd, or a kernel VXLAN device on the same port?): stop it or choose another vxlan.port")]
    PortInUse { ip: Ipv4Addr, port: u16 },
    #[error("cannot set up UDP socket on {ip}:{port}: {source}")]
    Socket { ip: Ipv4Addr, port: u16, source: io::Error },
}

fn socket(ip: Ipv4Addr, port: u16, reuseport: bool) -> Result<Socket, UdpError> {
    let wrap = |source: io::Error| match source.raw_os_error() {
        Some(libc::EADDRNOTAVAIL) => UdpError::AddrNotHere { ip },
        Some(libc::EADDRINUSE) => UdpError::PortInUse { ip, port },
        _ => UdpError::Socket { ip, port, source },
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM.nonblocking().cloexec(), Some(Protocol::UDP)).map_err(wrap)?;
    if reuseport {
        s.set_reuse_port(true).map_err(wrap)?;
    }
    // Bursts of 64 datagrams per syscall overrun the default buffers (OFFLOAD.md pitfall 7); the
    // FORCE variants need CAP_NET_ADMIN, which we have, and fall back to the capped size otherwise.
    force_buffers(&s, 8 << 20);
    s.bind(&SockAddr::from(SocketAddrV4::new(ip, port))).map_err(wrap)?;
    Ok(s)
}

fn force_buffers(s: &Socket, bytes: libc::c_int) {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: setsockopt reads one c_int from a valid pointer for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, opt, (&bytes as *const libc::c_int).cast(), size_of::<libc::c_int>() as u32)
        };
        if rc < 0 {
            // Unprivileged: ask for the normal (sysctl-capped) size instead; small buffers only
            // cost drops under burst, never correctness.
            let _ = s.set_recv_buffer_size(bytes as usize);
            let _ = s.set_send_buffer_size(bytes as usize);
        }
    }
}

/// Fails with a clear error if another socket already holds `ip:port`. SO_REUSEPORT would otherwise
/// let a second vtepd silently share (and split) our traffic.
pub fn probe_port(ip: Ipv4Addr, port: u16) -> Result<(), UdpError> {
    socket(ip, port, false).map(drop)
}

/// The sockets of one worker.
#[derive(Debug)]
pub struct Underlay {
    pub rx: Socket,
    pub tx: Vec<Socket>,
}

impl Underlay {
    pub fn bind(ip: Ipv4Addr, port: u16, tx_ports: usize) -> Result<Underlay, UdpError> {
        let rx = socket(ip, port, true)?;
        let tx = (0..tx_ports.max(1)).map(|_| socket(ip, 0, false)).collect::<Result<_, _>>()?;
        Ok(Underlay { rx, tx })
    }

    /// The send socket for a flow.
    #[inline]
    pub fn tx_for(&self, flow_hash: u32) -> &Socket {
        &self.tx[flow_hash as usize % self.tx.len()]
    }
}

/// Scratch arrays for one recvmmsg/sendmmsg call, allocated once per worker.
pub struct MmsgScratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
}

// SAFETY: the raw pointers inside are rewritten before every call and only ever point into buffers
// borrowed for that call; the scratch itself owns nothing thread-bound.
unsafe impl Send for MmsgScratch {}

impl MmsgScratch {
    pub fn new(n: usize) -> MmsgScratch {
        MmsgScratch {
            // SAFETY: mmsghdr is a plain C struct for which all-zero (null pointers) is valid.
            hdrs: (0..n).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..n).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect(),
            addrs: (0..n).map(|_| sockaddr(Ipv4Addr::UNSPECIFIED, 0)).collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives up to `out.len()` datagrams into `slots[first..]`, each at byte `offset` of its slot;
    /// `out[i]` gets the length and source of the datagram in slot `first + i`. Returns how many
    /// arrived (0 if none were waiting).
    pub fn recv(&mut self, s: &Socket, slots: &mut Slots, first: usize, offset: usize, out: &mut [(usize, Ipv4Addr)]) -> io::Result<usize> {
        let n = out.len().min(self.hdrs.len()).min(slots.count().saturating_sub(first));
        for i in 0..n {
            let buf = &mut slots.get_mut(first + i)[offset..];
            self.iovs[i] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            self.point_header(i);
        }
        // SAFETY: the first n headers point at live iovecs/addresses/slots borrowed for this call.
        let r = retry(|| {
            let rc = unsafe { libc::recvmmsg(s.as_raw_fd(), self.hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
            if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as usize) }
        });
        let got = match r {
            Ok(g) => g,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        for i in 0..got {
            let a = &self.addrs[i];
            out[i] = (self.hdrs[i].msg_len as usize, Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)));
        }
        Ok(got)
    }

    /// Sends each item's `slots[item.slot][offset..offset + item.len]` to `item.dst:port`, as few
    /// sendmmsg calls as the kernel allows. Returns how many were accepted; the caller counts the
    /// rest as send errors. A datagram the kernel refuses outright (EMSGSIZE, EHOSTUNREACH...) is
    /// skipped so one bad destination cannot stall the batch.
    pub fn send(&mut self, s: &Socket, slots: &Slots, offset: usize, items: &[TxItem], port: u16) -> usize {
        let n = items.len().min(self.hdrs.len());
        for (i, it) in items.iter().take(n).enumerate() {
            let buf = &slots.get(it.slot as usize)[offset..offset + it.len as usize];
            self.addrs[i] = sockaddr(it.dst, port);
            self.iovs[i] = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
            self.point_header(i);
        }
        let mut sent = 0;
        let mut next = 0;
        while next < n {
            // SAFETY: headers next..n point at live iovecs, addresses and slots borrowed for this call.
            let rc = unsafe { libc::sendmmsg(s.as_raw_fd(), self.hdrs.as_mut_ptr().add(next), (n - next) as u32, 0) };
            if rc > 0 {
                sent += rc as usize;
                next += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                // The socket buffer is full: wait briefly for room rather than drop the burst.
                io::ErrorKind::WouldBlock => wait_writable(s),
                _ => next += 1,
            }
        }
        sent
    }

    fn point_header(&mut self, i: usize) {
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
        h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        h.msg_iov = &mut self.iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
    }
}

/// One datagram to send: which slot, how long, to whom.
#[derive(Debug, Clone, Copy)]
pub struct TxItem {
    pub slot: u32,
    pub len: u32,
    pub dst: Ipv4Addr,
}

fn wait_writable(s: &Socket) {
    let mut p = libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, 10) };
}

pub(crate) fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmsg_round_trip_on_loopback() {
        let lo = Ipv4Addr::LOCALHOST;
        let rx = socket(lo, 0, true).unwrap();
        let port = rx.local_addr().unwrap().as_socket_ipv4().unwrap().port();
        let tx = socket(lo, 0, false).unwrap();
        let mut scratch = MmsgScratch::new(8);
        let mut out_slots = Slots::new(8, 256);
        let items: Vec<TxItem> = (0..5u8)
            .map(|i| {
                out_slots.get_mut(i as usize).fill(i);
                TxItem { slot: i as u32, len: 100 + i as u32, dst: lo }
            })
            .collect();
        assert_eq!(scratch.send(&tx, &out_slots, 4, &items, port), 5);
        let mut slots = Slots::new(8, 256);
        let mut out = [(0usize, Ipv4Addr::UNSPECIFIED); 8];
        let mut got = 0;
        for _ in 0..100 {
            got += scratch.recv(&rx, &mut slots, got, 4, &mut out[got..]).unwrap();
            if got == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, 5);
        for i in 0..5 {
            assert_eq!(out[i], (100 + i, lo));
            assert!(slots.get(i)[4..4 + out[i].0].iter().all(|b| *b == i as u8));
        }
    }

    #[test]
    fn probe_reports_port_in_use() {
        let held = socket(Ipv4Addr::LOCALHOST, 0, false).unwrap();
        let port = held.local_addr().unwrap().as_socket_ipv4().unwrap().port();
        assert!(matches!(probe_port(Ipv4Addr::LOCALHOST, port), Err(UdpError::PortInUse { .. })));
        assert!(matches!(probe_port(Ipv4Addr::new(192, 0, 2, 250), 0), Err(UdpError::AddrNotHere { .. })));
    }
}
