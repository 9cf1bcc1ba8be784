//! Which directory holds this network namespace's control sockets.
//!
//! `/run` is shared by every network namespace of a host, but device names are not: two vtepd
//! processes in two namespaces (two "nodes" on one test host, the demo, the benchmark) may both
//! own a `vtep0`. So the socket directory is per namespace — `/run/vtepd` in the host's own,
//! `/run/vtepd/netns/<name>` in one `ip netns add` named — and a client started in the same
//! namespace (`ip netns exec <name> vtepd stats`) computes the same directory.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the control sockets live in the host's network namespace.
pub const SOCKET_DIR: &str = "/run/vtepd";
/// Where `ip netns` keeps its named namespaces (bind mounts of the nsfs files).
const NAMED_NETNS_DIR: &str = "/run/netns";

/// A network namespace's identity: the nsfs device and inode of its `/proc/*/ns/net`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl NetnsId {
    fn of(path: &Path) -> Option<NetnsId> {
        std::fs::metadata(path).ok().map(|m| NetnsId { dev: m.dev(), ino: m.ino() })
    }
}

/// The socket directory for namespace `own`: `netns/<name>` for a named one; the base one for the
/// host's namespace (`init`) or when nothing can be told (PID 1's namespace may not be readable);
/// `netns/net-<inode>` for any other.
pub fn dir_for(own: Option<NetnsId>, init: Option<NetnsId>, named: &[(String, NetnsId)]) -> PathBuf {
    let base = PathBuf::from(SOCKET_DIR);
    let Some(own) = own else { return base };
    if let Some((name, _)) = named.iter().find(|(_, id)| *id == own) {
        return base.join("netns").join(name);
    }
    match init {
        Some(i) if i != own => base.join("netns").join(format!("net-{}", own.ino)),
        _ => base,
    }
}

/// This process's socket directory. PID 1's namespace stands for the host's (in a container, for
/// the container's own, which is what its users expect).
pub fn socket_dir() -> PathBuf {
    let own = NetnsId::of(Path::new("/proc/self/ns/net"));
    let init = NetnsId::of(Path::new("/proc/1/ns/net"));
    let named: Vec<(String, NetnsId)> = std::fs::read_dir(NAMED_NETNS_DIR)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| Some((e.file_name().into_string().ok()?, NetnsId::of(&e.path())?)))
                .collect()
        })
        .unwrap_or_default();
    dir_for(own, init, &named)
}

/// Removes a file of this directory (a socket, route claims), and the directory too when that is
/// a namespace's own and now empty (the namespaces of tests and demos come and go; their
/// directories should not pile up in /run).
pub fn remove_file(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent().filter(|d| d.parent() == Some(&Path::new(SOCKET_DIR).join("netns"))) {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: NetnsId = NetnsId { dev: 4, ino: 4026531840 };
    const OTHER: NetnsId = NetnsId { dev: 4, ino: 4026532999 };

    #[test]
    fn host_namespace_uses_the_base_directory() {
        assert_eq!(dir_for(Some(HOST), Some(HOST), &[]), PathBuf::from("/run/vtepd"));
        assert_eq!(dir_for(None, Some(HOST), &[]), PathBuf::from("/run/vtepd"));
        assert_eq!(dir_for(Some(OTHER), None, &[]), PathBuf::from("/run/vtepd"));
    }

    #[test]
    fn named_namespace_gets_its_own_directory() {
        let named = vec![("vt1-A".to_string(), OTHER), ("vt1-B".to_string(), NetnsId { dev: 4, ino: 1 })];
        assert_eq!(dir_for(Some(OTHER), Some(HOST), &named), PathBuf::from("/run/vtepd/netns/vt1-A"));
        // Even when PID 1's namespace cannot be read (some sandboxes refuse it).
        assert_eq!(dir_for(Some(OTHER), None, &named), PathBuf::from("/run/vtepd/netns/vt1-A"));
    }

    #[test]
    fn unnamed_namespace_is_told_by_its_inode() {
        assert_eq!(dir_for(Some(OTHER), Some(HOST), &[]), PathBuf::from("/run/vtepd/netns/net-4026532999"));
    }

    #[test]
    fn this_process_gets_a_directory_under_the_base() {
        assert!(socket_dir().starts_with(SOCKET_DIR));
    }
}
