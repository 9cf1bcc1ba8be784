//! Underlay UDP sockets and batched (mmsg) send/receive.
//!
//! Each worker owns one receive socket on the VXLAN port (SO_REUSEPORT: the kernel spreads peers'
//! flows across workers by 4-tuple hash); all workers share one small pool of send sockets bound to
//! ephemeral ports. A UDP socket cannot choose its source port per datagram, and RFC 7348 wants the
//! source port to carry the inner flow's hash; picking the send socket by flow hash does that while
//! keeping the kernel's UDP path (and UDP GSO) — a raw socket would lose both. The pool is shared
//! because a flow can change workers: the kernel moves it to the TAP queue its replies are written
//! on. With a pool per worker its source port would change with it, the peer's SO_REUSEPORT would
//! hand the rest of the flow to another of its workers, and the two would reorder it.
use super::{retry, Slots};
use crate::dataplane::offload::segment::Segments;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

pub(crate) fn force_buffers(s: &Socket, bytes: libc::c_int) {
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

/// The sockets of one worker: its own receive socket, and the send pool all workers share.
#[derive(Debug)]
pub struct Underlay {
    pub rx: Socket,
    pub tx: Arc<[Socket]>,
}

/// The shared send pool: `count` sockets on ephemeral ports of `ip`, i.e. that many source ports.
pub fn send_pool(ip: Ipv4Addr, count: usize) -> Result<Arc<[Socket]>, UdpError> {
    (0..count.max(1)).map(|_| send_socket(ip)).collect()
}

/// A socket only ever sent from: nothing reads it, so whatever arrives at its port would sit in
/// the receive buffer for good — 16 MB of kernel memory per socket (8 MB forced, which the kernel
/// doubles) for anyone who sprays the ephemeral ports. The smallest buffer the kernel allows takes
/// a few datagrams and drops the rest.
fn send_socket(ip: Ipv4Addr) -> Result<Socket, UdpError> {
    let s = socket(ip, 0, false)?;
    let _ = s.set_recv_buffer_size(0);
    Ok(s)
}

impl Underlay {
    /// The receive socket reports each datagram's TOS byte: its ECN bits are the underlay's
    /// congestion marks (a kernel too old for IP_RECVTOS just reports none).
    pub fn bind(ip: Ipv4Addr, port: u16, tx: Arc<[Socket]>) -> Result<Underlay, UdpError> {
        let rx = socket(ip, port, true)?;
        if let Err(e) = rx.set_recv_tos(true) {
            tracing::warn!(error = %e, "IP_RECVTOS refused: congestion marks (ECN) on the underlay will not reach the inner packets");
        }
        Ok(Underlay { rx, tx })
    }

    /// Which send socket (index into `tx`) a flow uses: a function of the flow alone, so its
    /// source port is the same whichever worker sends it.
    #[inline]
    pub fn tx_index(&self, flow_hash: u32) -> usize {
        flow_hash as usize % self.tx.len()
    }
}

const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// Room for the cmsgs of one received message (UDP_GRO's int and IP_TOS's byte, 24 bytes each)
/// or one sent, 8-byte aligned.
type CmsgBuf = [u64; 8];
/// Pieces one gathered UDP_SEGMENT send takes: a header and a payload for each of 64 segments.
pub const GATHER_MAX: usize = 128;

/// Turns on UDP GRO (Linux 5.0+): the kernel hands over runs of same-sized datagrams from one
/// sender as one buffer. Returns false where the kernel refuses, and vtepd receives one by one.
pub fn enable_gro(s: &Socket) -> bool {
    set_udp_opt(s, UDP_GRO, 1)
}

/// Whether this kernel takes UDP_SEGMENT (Linux 4.18+). The egress device may still refuse at
/// send time (EIO), which the worker handles by falling back.
pub fn gso_supported(s: &Socket) -> bool {
    set_udp_opt(s, UDP_SEGMENT, 0)
}

fn set_udp_opt(s: &Socket, opt: libc::c_int, v: libc::c_int) -> bool {
    // SAFETY: setsockopt reads one c_int from a valid pointer for the duration of the call.
    unsafe { libc::setsockopt(s.as_raw_fd(), libc::SOL_UDP, opt, (&v as *const libc::c_int).cast(), size_of::<libc::c_int>() as u32) == 0 }
}

/// One received buffer: `len` bytes from `src`; with GRO, datagrams of `seg_size` bytes back to
/// back (the last may be shorter), otherwise `seg_size == len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub src: Ipv4Addr,
    pub seg_size: usize,
    /// The outer header's TOS byte, for ECN at egress (RFC 6040); 0 unless the socket has
    /// IP_RECVTOS. GRO merges only datagrams with the same TOS, so one byte covers the buffer.
    pub tos: u8,
}

impl Default for Received {
    fn default() -> Self {
        Received { len: 0, src: Ipv4Addr::UNSPECIFIED, seg_size: 0, tos: 0 }
    }
}

/// Scratch arrays for one recvmmsg/sendmmsg call, allocated once per worker.
pub struct MmsgScratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    /// The pieces of one gathered UDP_SEGMENT send.
    gather: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    ctrl: Vec<CmsgBuf>,
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
            gather: Vec::with_capacity(GATHER_MAX),
            addrs: (0..n).map(|_| sockaddr(Ipv4Addr::UNSPECIFIED, 0)).collect(),
            ctrl: vec![[0; 8]; n],
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives up to `out.len()` buffers into `slots[first..]`, each at byte `offset` of its slot.
    /// Returns how many arrived (0 if none were waiting).
    pub fn recv(&mut self, s: &Socket, slots: &mut Slots, first: usize, offset: usize, out: &mut [Received]) -> io::Result<usize> {
        let n = out.len().min(self.hdrs.len()).min(slots.count().saturating_sub(first));
        for i in 0..n {
            let buf = &mut slots.get_mut(first + i)[offset..];
            self.iovs[i] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            self.point_header(i, true);
        }
        // SAFETY: the first n headers point at live iovecs/addresses/cmsg buffers/slots borrowed for this call.
        let r = retry(|| {
            let rc = unsafe { libc::recvmmsg(s.as_raw_fd(), self.hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
            if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as usize) }
        });
        let got = match r {
            Ok(g) => g,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        for (i, o) in out.iter_mut().enumerate().take(got) {
            let len = self.hdrs[i].msg_len as usize;
            let (gro, tos) = self.cmsgs(i);
            let seg = gro.filter(|g| *g > 0).unwrap_or(len);
            *o = Received { len, src: Ipv4Addr::from(u32::from_be(self.addrs[i].sin_addr.s_addr)), seg_size: seg, tos };
        }
        Ok(got)
    }

    /// What the kernel reported with message `i`: the UDP_GRO segment size, an int (OFFLOAD.md),
    /// and the TOS byte (IP_TOS, with IP_RECVTOS on).
    fn cmsgs(&self, i: usize) -> (Option<usize>, u8) {
        let h = &self.hdrs[i].msg_hdr;
        let (mut gro, mut tos) = (None, 0);
        // SAFETY: msg_control/msg_controllen describe this message's cmsg buffer as the kernel left
        // it; the CMSG_* walkers stay within msg_controllen, and each payload read is the size the
        // kernel writes for that type.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::SOL_UDP, UDP_GRO) => {
                        gro = usize::try_from(std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int)).ok();
                    }
                    (libc::IPPROTO_IP, libc::IP_TOS) => tos = *libc::CMSG_DATA(c),
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        (gro, tos)
    }

    /// Sends each `(datagram, destination, TOS)` to `port` in as few sendmmsg calls as the kernel
    /// allows. Returns how many were accepted and their bytes; the caller counts the rest as send
    /// errors. A datagram the kernel refuses outright (EMSGSIZE, EHOSTUNREACH...) is skipped so one
    /// bad destination cannot stall the batch (so the accepted ones need not be the first ones); a
    /// full socket buffer is waited for, up to [`SEND_PATIENCE`], then the rest is given up. A TOS
    /// other than 0 (the inner packet's ECN bits) goes with the datagram as an IP_TOS cmsg; 0 costs
    /// nothing.
    pub fn send<'a>(&mut self, s: &Socket, items: impl IntoIterator<Item = (&'a [u8], Ipv4Addr, u8)>, port: u16) -> (usize, usize) {
        let mut n = 0;
        for (buf, dst, tos) in items.into_iter().take(self.hdrs.len()) {
            self.addrs[n] = sockaddr(dst, port);
            self.iovs[n] = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
            self.point_header(n, tos != 0);
            if tos != 0 {
                self.hdrs[n].msg_hdr.msg_controllen = 0;
                self.push_tos(n, tos);
            }
            n += 1;
        }
        let (mut sent, mut bytes) = (0, 0);
        let (mut next, mut waiting) = (0, None);
        while next < n {
            // SAFETY: headers next..n point at live iovecs, addresses and buffers borrowed for this call.
            let rc = unsafe { libc::sendmmsg(s.as_raw_fd(), self.hdrs.as_mut_ptr().add(next), (n - next) as u32, 0) };
            if rc > 0 {
                let done = next + rc as usize;
                bytes += self.iovs[next..done].iter().map(|v| v.iov_len).sum::<usize>();
                sent += rc as usize;
                next = done;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                // The socket buffer is full: wait briefly for room rather than drop the burst.
                io::ErrorKind::WouldBlock if wait_writable(s, &mut waiting) => {}
                io::ErrorKind::WouldBlock => break,
                _ => next += 1,
            }
        }
        (sent, bytes)
    }

    /// Sends the packets `segs` describes, laid back to back in `data`, to `dst:port`: as many per
    /// sendmmsg as the scratch holds. Returns how many packets went out and their bytes; the rest
    /// were refused (see [`MmsgScratch::send`]).
    pub fn send_laid_out(&mut self, s: &Socket, data: &[u8], segs: &Segments, dst: Ipv4Addr, tos: u8, port: u16) -> (usize, usize) {
        let (mut packets, mut bytes) = (0, 0);
        let step = self.capacity().max(1);
        for first in (0..segs.count).step_by(step) {
            let end = (first + step).min(segs.count);
            let (sent, sent_bytes) = self.send(s, (first..end).map(|i| (&data[segs.range(i)], dst, tos)), port);
            packets += sent;
            bytes += sent_bytes;
        }
        (packets, bytes)
    }

    /// Sends the concatenation of `parts` — datagrams of `seg_len` bytes back to back, the last
    /// possibly shorter — to `dst:port` in one sendmsg with UDP_SEGMENT. The parts are gathered by
    /// the kernel, so a datagram's headers and payload may come from different buffers (at most
    /// [`GATHER_MAX`] parts). The caller keeps the total within the kernel's limits (64 segments,
    /// 65507 bytes). EIO means the egress device cannot do it; EMSGSIZE (EINVAL before Linux 6.x)
    /// that a segment exceeds the path MTU. `tos` as for [`Self::send`].
    pub fn send_gso<'a>(&mut self, s: &Socket, parts: impl IntoIterator<Item = &'a [u8]>, seg_len: u16, dst: Ipv4Addr, tos: u8, port: u16) -> io::Result<()> {
        self.addrs[0] = sockaddr(dst, port);
        self.gather.clear();
        let iov = parts.into_iter().map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() });
        self.gather.extend(iov.take(GATHER_MAX));
        self.point_header(0, true);
        self.hdrs[0].msg_hdr.msg_iov = self.gather.as_mut_ptr();
        self.hdrs[0].msg_hdr.msg_iovlen = self.gather.len();
        let h = &mut self.hdrs[0].msg_hdr;
        // SAFETY: CMSG_SPACE/LEN are pure size computations; the cmsg is written inside ctrl[0]
        // (64 bytes), which CMSG_SPACE(2) (24 bytes) fits.
        unsafe {
            h.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(h);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg_len);
        }
        if tos != 0 {
            self.push_tos(0, tos);
        }
        let h = &mut self.hdrs[0].msg_hdr;
        let mut waiting = None;
        loop {
            // SAFETY: header 0 points at live iovecs (into buffers borrowed for this call), an
            // address and a cmsg buffer.
            let rc = unsafe { libc::sendmsg(s.as_raw_fd(), h, 0) };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock if wait_writable(s, &mut waiting) => {}
                _ => return Err(e),
            }
        }
    }

    /// Appends an IP_TOS cmsg to message `i`'s control data (`msg_controllen` so far), which
    /// `point_header` pointed at `ctrl[i]`.
    fn push_tos(&mut self, i: usize, tos: u8) {
        let h = &mut self.hdrs[i].msg_hdr;
        let used = h.msg_controllen;
        // SAFETY: CMSG_SPACE/LEN are pure size computations; the new cmsg starts at `used` (a
        // multiple of the cmsg alignment, as CMSG_SPACE returns) inside ctrl[i] (64 bytes), and
        // `used` (at most one UDP_SEGMENT cmsg, 24 bytes) plus CMSG_SPACE(4) (24 bytes) fits.
        unsafe {
            let space = libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) as usize;
            let c = (h.msg_control as *mut u8).add(used) as *mut libc::cmsghdr;
            (*c).cmsg_level = libc::IPPROTO_IP;
            (*c).cmsg_type = libc::IP_TOS;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::c_int, libc::c_int::from(tos));
            h.msg_controllen = used + space;
        }
    }

    fn point_header(&mut self, i: usize, with_ctrl: bool) {
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
        h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        h.msg_iov = &mut self.iovs[i];
        h.msg_iovlen = 1;
        if with_ctrl {
            h.msg_control = self.ctrl[i].as_mut_ptr().cast();
            h.msg_controllen = size_of::<CmsgBuf>();
        } else {
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
        }
        h.msg_flags = 0;
    }
}

/// How long one send waits in all for room in a full socket buffer before it gives up the rest of
/// its datagrams (counted as refused). Waiting is the backpressure that keeps a burst whole; an
/// underlay that stays full this long has stalled (a shaper, a hung queue), and a worker stuck
/// here would neither drain its receive socket nor see a stop — SIGTERM hung behind it.
const SEND_PATIENCE: Duration = Duration::from_millis(100);

/// Waits up to 10 ms for `s` to have room; `false` once this send (which started waiting at
/// `since`) has waited [`SEND_PATIENCE`].
fn wait_writable(s: &Socket, since: &mut Option<Instant>) -> bool {
    if since.get_or_insert_with(Instant::now).elapsed() >= SEND_PATIENCE {
        return false;
    }
    let mut p = libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, 10) };
    true
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

    fn pair() -> (Socket, Socket, u16) {
        let lo = Ipv4Addr::LOCALHOST;
        let rx = socket(lo, 0, true).unwrap();
        let port = rx.local_addr().unwrap().as_socket_ipv4().unwrap().port();
        (rx, socket(lo, 0, false).unwrap(), port)
    }

    #[test]
    fn send_sockets_keep_a_big_send_buffer_and_no_receive_buffer_to_speak_of() {
        let pool = send_pool(Ipv4Addr::LOCALHOST, 2).unwrap();
        for s in pool.iter() {
            let (rcv, snd) = (s.recv_buffer_size().unwrap(), s.send_buffer_size().unwrap());
            // The send side as big as we may make it (8 MB as root, the sysctl cap otherwise).
            assert!(rcv <= 8 << 10 && snd >= 200 << 10, "receive buffer {rcv}, send buffer {snd}");
        }
    }

    fn recv_all(rx: &Socket, scratch: &mut MmsgScratch, slots: &mut Slots, want: usize) -> Vec<Received> {
        let mut out = vec![Received::default(); slots.count()];
        let mut got = 0;
        for _ in 0..200 {
            got += scratch.recv(rx, slots, got, 4, &mut out[got..]).unwrap();
            if got >= want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        out.truncate(got);
        out
    }

    #[test]
    fn mmsg_round_trip_on_loopback() {
        let (rx, tx, port) = pair();
        let mut scratch = MmsgScratch::new(8);
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + i as usize]).collect();
        assert_eq!(scratch.send(&tx, payloads.iter().map(|p| (&p[..], Ipv4Addr::LOCALHOST, 0)), port).0, 5);
        let mut slots = Slots::new(8, 256);
        let got = recv_all(&rx, &mut scratch, &mut slots, 5);
        assert_eq!(got.len(), 5);
        for (i, r) in got.iter().enumerate() {
            assert_eq!((r.len, r.src, r.seg_size), (100 + i, Ipv4Addr::LOCALHOST, 100 + i));
            assert!(slots.get(i)[4..4 + r.len].iter().all(|b| *b == i as u8));
        }
    }

    #[test]
    fn a_refused_datagram_is_skipped_and_not_counted() {
        let (_rx, tx, port) = pair();
        let mut scratch = MmsgScratch::new(8);
        // Over 65,507 bytes: EMSGSIZE for the middle one only.
        let (small, huge) = (vec![1u8; 100], vec![2u8; 70_000]);
        let items = [&small[..], &huge[..], &small[..50]];
        assert_eq!(scratch.send(&tx, items.iter().map(|p| (*p, Ipv4Addr::LOCALHOST, 0)), port), (2, 150));
    }

    #[test]
    fn the_tos_byte_goes_out_with_the_datagram_and_is_read_back() {
        let (rx, tx, port) = pair();
        rx.set_recv_tos(true).unwrap();
        let mut scratch = MmsgScratch::new(8);
        let d = [7u8; 300];
        let sent = scratch.send(&tx, [0u8, 2, 3].map(|tos| (&d[..], Ipv4Addr::LOCALHOST, tos)), port);
        assert_eq!(sent, (3, 900));
        // A GSO send with the TOS after the UDP_SEGMENT cmsg; two segments.
        scratch.send_gso(&tx, [&d[..], &d[..]], 300, Ipv4Addr::LOCALHOST, 1, port).unwrap();
        let mut slots = Slots::new(8, 1024);
        let got = recv_all(&rx, &mut scratch, &mut slots, 5);
        assert_eq!(got.iter().map(|r| r.tos).collect::<Vec<_>>(), [0, 2, 3, 1, 1]);
    }

    #[test]
    fn gso_send_arrives_as_gro_buffer_or_datagrams() {
        let (rx, tx, port) = pair();
        let gro = enable_gro(&rx);
        assert!(gso_supported(&tx));
        let mut scratch = MmsgScratch::new(8);
        let mut buf = vec![0u8; 1000 * 3 + 300];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i / 1000) as u8;
        }
        // Gathered from pieces that do not line up with the datagrams.
        let (a, b) = buf.split_at(1500);
        let (b, c) = b.split_at(7);
        scratch.send_gso(&tx, [a, b, c], 1000, Ipv4Addr::LOCALHOST, 0, port).unwrap();
        let mut slots = Slots::new(8, 70_000);
        let got = recv_all(&rx, &mut scratch, &mut slots, if gro { 1 } else { 4 });
        let total: usize = got.iter().map(|r| r.len).sum();
        assert_eq!(total, buf.len());
        assert!(got.iter().all(|r| r.seg_size == 1000 || r.len == 300));
        let bytes: Vec<u8> = got.iter().enumerate().flat_map(|(i, r)| slots.get(i)[4..4 + r.len].to_vec()).collect();
        assert_eq!(bytes, buf);
    }

    #[test]
    fn probe_reports_port_in_use() {
        let held = socket(Ipv4Addr::LOCALHOST, 0, false).unwrap();
        let port = held.local_addr().unwrap().as_socket_ipv4().unwrap().port();
        assert!(matches!(probe_port(Ipv4Addr::LOCALHOST, port), Err(UdpError::PortInUse { .. })));
        assert!(matches!(probe_port(Ipv4Addr::new(192, 0, 2, 250), 0), Err(UdpError::AddrNotHere { .. })));
    }
}
