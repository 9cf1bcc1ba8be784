//! The netlink socket's system calls, each wrapped so that the rtnetlink client
//! (`control::netlink`) is safe code.
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;

pub fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the arguments are constants.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), so it is open and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn set_opt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // Option values are an int or a timeval, far below socklen_t's range.
    let len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` points to a live `T` of exactly `len` bytes for the whole call, and the
    // kernel only reads from it.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            ptr::from_ref(value).cast(),
            len,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends one datagram to the kernel: an unconnected netlink socket sends to port 0, and the
/// first send binds it to a port id of the kernel's choosing.
pub fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    retry_eintr(|| {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call.
        unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) }
    })
}

/// The length of the next datagram, which stays queued. With `MSG_TRUNC` netlink reports the
/// full length even though nothing is copied.
pub fn peek_len(fd: &OwnedFd) -> io::Result<usize> {
    retry_eintr(|| {
        // SAFETY: a zero-length buffer is never written to, so a null pointer is fine.
        unsafe {
            libc::recv(
                fd.as_raw_fd(),
                ptr::null_mut(),
                0,
                libc::MSG_PEEK | libc::MSG_TRUNC,
            )
        }
    })
}

/// Reads one datagram into `buf`; returns its full length (`MSG_TRUNC`, so a length above
/// `buf.len()` shows truncation) and the sender's port id (0 is the kernel).
pub fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, u32)> {
    // SAFETY: sockaddr_nl is plain old data, for which all zero bytes is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    let mut addr_len = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let len = retry_eintr(|| {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and `addr` for writes of
        // `addr_len` bytes, for the whole call.
        unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                ptr::from_mut(&mut addr).cast(),
                ptr::from_mut(&mut addr_len),
            )
        }
    })?;
    Ok((len, addr.nl_pid))
}

fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        if let Ok(n) = usize::try_from(call()) {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
