//! Multi-queue TAP devices with a virtio-net header (as Firecracker's virtio-net opens them).
//! The TUN devices of the IPIP backend ([`super::tun`]) differ only in one flag and share this code.
//!
//! One queue per worker: the kernel steers each flow to one queue by its hash, so a flow stays on
//! one worker and is never reordered. IFF_VNET_HDR is always on, because it is what lets decap hand a
//! partial inner checksum to the kernel (see `dataplane::decap::checksum_hint`) and, with offloads,
//! move 64 KB super-frames in one read.
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;
/// UDP segmentation offload (Linux 6.2+); the kernel takes USO4 and USO6 only together.
pub const TUN_F_USO4: u32 = 0x20;
pub const TUN_F_USO6: u32 = 0x40;

/// Which kind of device: Ethernet frames (TAP) or bare IP packets (TUN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tap,
    Tun,
}

impl Kind {
    fn flag(self) -> libc::c_short {
        match self {
            Kind::Tap => IFF_TAP,
            Kind::Tun => IFF_TUN,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Tap => "TAP",
            Kind::Tun => "TUN",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("/dev/net/tun is missing: load the tun module (`modprobe tun`) or create the node (`mknod /dev/net/tun c 10 200`)")]
    NoTunDevice,
    #[error("cannot open /dev/net/tun for {device}: permission denied (an unprivileged vtepd needs it mode 0666, the udev default: `chmod 0666 /dev/net/tun`)")]
    TunAccess { device: String },
    #[error("creating {kind} device {device} needs CAP_NET_ADMIN: run vtepd as root or grant it the capability (setcap cap_net_admin+ep)")]
    NoPermission { kind: Kind, device: String },
    #[error("{kind} device name '{device}' is not usable: {reason}")]
    BadName { kind: Kind, device: String, reason: &'static str },
    #[error("cannot attach queue {queue} of {kind} device {device}: {source} (is it an existing non-multi-queue device, a device of the other kind, or in use by another program?)")]
    Attach { kind: Kind, device: String, queue: usize, source: io::Error },
    #[error("cannot configure {kind} device {device} ({what}): {source}")]
    Configure { kind: Kind, device: String, what: &'static str, source: io::Error },
}

/// One queue of a TAP (or TUN) device, non-blocking.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates (or attaches to) the multi-queue TAP `device` with `queues` queues.
pub fn open(device: &str, queues: usize) -> Result<Vec<TapQueue>, TapError> {
    open_kind(Kind::Tap, device, queues)
}

/// Creates (or attaches to) a multi-queue TAP or TUN device with `queues` queues.
pub(crate) fn open_kind(kind: Kind, device: &str, queues: usize) -> Result<Vec<TapQueue>, TapError> {
    check_name(device).map_err(|reason| TapError::BadName { kind, device: device.into(), reason })?;
    (0..queues.max(1)).map(|q| open_queue(kind, device, q)).collect()
}

fn open_queue(kind: Kind, device: &str, queue: usize) -> Result<TapQueue, TapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TapError::NoTunDevice,
            io::ErrorKind::PermissionDenied if e.raw_os_error() == Some(libc::EACCES) => TapError::TunAccess { device: device.into() },
            io::ErrorKind::PermissionDenied => TapError::NoPermission { kind, device: device.into() },
            _ => TapError::Attach { kind, device: device.into(), queue, source: e },
        })?;
    let fd: OwnedFd = file.into();
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: kind.flag() | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE, _pad: [0; 22] };
    req.name[..device.len()].copy_from_slice(device.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an `ifreq`; `req` is a properly sized, initialised repr(C)
    // struct that outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) => TapError::NoPermission { kind, device: device.into() },
            _ => TapError::Attach { kind, device: device.into(), queue, source: e },
        });
    }
    let q = TapQueue { fd };
    q.ioctl_int(TUNSETVNETHDRSZ, crate::wire::vnet::HEADER_LEN as libc::c_int)
        .map_err(|e| TapError::Configure { kind, device: device.into(), what: "TUNSETVNETHDRSZ", source: e })?;
    // Offloads off until asked for: the kernel then hands us only complete, checksummed frames.
    q.set_offload(0).map_err(|e| TapError::Configure { kind, device: device.into(), what: "TUNSETOFFLOAD", source: e })?;
    Ok(q)
}

impl TapQueue {
    fn ioctl_int(&self, req: libc::c_ulong, v: libc::c_int) -> io::Result<()> {
        let mut v = v;
        // SAFETY: both ioctls read one int through the pointer, which is valid for the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), req, &mut v as *mut libc::c_int) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Sets the TUN_F_* offload mask. It is device-wide and survives re-attach, so it is always set
    /// explicitly (OFFLOAD.md pitfall 3).
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes the mask by value in the argument register.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), TUNSETOFFLOAD, flags as libc::c_ulong) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Reads one vnet header + frame into `buf`. `Ok(None)` when the queue is empty.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
        let r = super::retry(|| cvt(unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }));
        would_block_none(r)
    }

    /// Writes one vnet header + frame. `Ok(false)` when the queue is full.
    pub fn send(&self, buf: &[u8]) -> io::Result<bool> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
        let r = super::retry(|| cvt(unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) }));
        would_block_none(r).map(|o| o.is_some())
    }
}

impl TapQueue {
    /// Writes one vnet header + frame gathered from `iov` (writev), so coalesced segments go to
    /// the kernel without first being copied together. `Ok(false)` when the queue is full.
    pub fn send_iov(&self, iov: &[libc::iovec]) -> io::Result<bool> {
        // SAFETY: every iovec points into a buffer the caller keeps alive and unmodified for the call.
        let r = super::retry(|| cvt(unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) }));
        would_block_none(r).map(|o| o.is_some())
    }
}

impl AsFd for TapQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub(crate) fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
}

pub(crate) fn would_block_none(r: io::Result<usize>) -> io::Result<Option<usize>> {
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// The kernel's rules for an interface name, so a config can be checked without touching the system.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && name.bytes().all(|c| c.is_ascii_graphic() && !matches!(c, b'/' | b':' | b'%'));
    // Stricter than the kernel in one way: no bytes beyond ASCII (the kernel refuses 0xa0 as a space
    // but takes the rest, which `ip` then shows escaped). '%' would be a template: the kernel
    // names each queue's device anew from `vtep%d` (vtep0, vtep1, ...).
    if ok { Ok(()) } else { Err("1 to 15 printable ASCII characters, none of '/', ':', '%' or space") }
}

#[cfg(test)]
impl TapQueue {
    /// Any descriptor as a queue, for tests that look at what a driver writes.
    pub(crate) fn from_fd(fd: OwnedFd) -> TapQueue {
        TapQueue { fd }
    }
}
