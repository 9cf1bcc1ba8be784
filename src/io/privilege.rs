//! Dropping root after set-up: switch to an unprivileged user and keep only the capabilities the
//! running daemon still needs — CAP_NET_ADMIN (netlink changes on reload, recreating a deleted
//! device, socket buffer sizes) and CAP_NET_RAW (raw sockets, for the IPIP backend).
//!
//! Capabilities are per thread, so this runs on the main thread before any worker is spawned;
//! glibc applies setuid/setgid to every thread of the process.
use caps::{CapSet, Capability, CapsHashSet};
use std::ffi::CString;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("--user {0}: no such user")]
    NoSuchUser(String),
    #[error("--user {user}: cannot {what}: {source}")]
    Switch { user: String, what: &'static str, source: io::Error },
    #[error("--user {user}: cannot keep CAP_NET_ADMIN/CAP_NET_RAW: {source}")]
    Caps { user: String, source: caps::errors::CapsError },
}

/// The capabilities kept after the switch.
pub fn kept() -> CapsHashSet {
    [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW].into_iter().collect()
}

/// Becomes `user` (its uid, primary gid, no supplementary groups), keeping [`kept`] capabilities.
pub fn drop_to(user: &str) -> Result<(), PrivilegeError> {
    let (uid, gid) = lookup(user)?;
    let fail = |what: &'static str| PrivilegeError::Switch { user: user.into(), what, source: io::Error::last_os_error() };
    let caps_err = |source| PrivilegeError::Caps { user: user.into(), source };
    // Only what we keep stays permitted; KEEPCAPS makes the permitted set survive setuid.
    let keep = kept();
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(caps_err)?;
    // SAFETY: prctl/setgroups/setgid/setuid take plain integers (and a null list); no memory is shared.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(fail("set PR_SET_KEEPCAPS"));
        }
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(fail("clear supplementary groups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(fail("setgid"));
        }
        if libc::setuid(uid) != 0 {
            return Err(fail("setuid"));
        }
    }
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_err)?;
    caps::set(None, CapSet::Effective, &keep).map_err(caps_err)?;
    Ok(())
}

pub fn lookup(user: &str) -> Result<(libc::uid_t, libc::gid_t), PrivilegeError> {
    let name = CString::new(user).map_err(|_| PrivilegeError::NoSuchUser(user.into()))?;
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r writes into `pwd` and `buf` (sized as passed) and sets `out` to &pwd or null.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return Err(PrivilegeError::NoSuchUser(user.into()));
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is a plain C struct; all-zero (null pointers, zero ids) is a valid value that
    // getpwnam_r overwrites.
    unsafe { std::mem::zeroed() }
}
