//! A Unix stream socket that only its owner can connect to, from the moment it exists.
use std::io;
use std::os::unix::net::UnixListener;
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
