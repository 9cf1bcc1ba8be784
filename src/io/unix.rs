//! Unix stream sockets: one that only its owner can connect to from the moment it exists, and
//! whether a peer has hung up.
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Binds `path` with mode 0600. Binding under umask 0177 rather than chmod-ing afterwards leaves no
/// window in which another user could connect. The umask is process-wide; this only makes it
/// stricter for an instant, which can only make a file another thread creates meanwhile more
/// private, never less.
pub fn bind_private(path: &Path) -> io::Result<UnixListener> {
    // SAFETY: umask only swaps an integer in the process's file-creation state; no memory involved.
    let old = unsafe { libc::umask(0o177) };
    let r = UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    r
}

/// Whether the peer closed its end entirely (POLLHUP; a peer that only shut down its writing side
/// can still read an answer).
pub fn hung_up(stream: &UnixStream) -> bool {
    let mut pfd = libc::pollfd { fd: stream.as_raw_fd(), events: 0, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n == 1 && pfd.revents & libc::POLLHUP != 0
}
