//! The live control API: a Unix socket on which a running vtepd answers `vtepd fdb|neigh|route|
//! peers|stats|leases`, and the client the CLI uses to ask it.
//!
//! The socket is served by its own thread; a request is parsed there ([`proto`]) and only the short
//! [`dispatch`] step runs on the supervisor thread, which owns the installed state. A slow or
//! hostile client therefore costs the server thread its time, never the supervisor or the workers.
mod accept;
pub mod client;
pub mod dispatch;
pub mod metrics;
pub mod netns;
pub mod proto;
pub mod server;
pub mod show;

use crate::control::config::Config;
use std::path::PathBuf;

pub use netns::SOCKET_DIR;

/// The default socket: `<netns socket dir>/<instance>.sock`, named as [`Config::instance_name`]
/// says; the directory is per namespace ([`netns`]).
pub fn default_socket(cfg: &Config) -> PathBuf {
    default_socket_in(&netns::socket_dir(), cfg)
}

fn default_socket_in(dir: &std::path::Path, cfg: &Config) -> PathBuf {
    dir.join(format!("{}.sock", cfg.instance_name()))
}

/// The socket a `vtepd run` with this config serves: `control_socket` if set, else the default.
pub fn socket_path(cfg: &Config) -> PathBuf {
    cfg.control_socket.clone().unwrap_or_else(|| default_socket(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_socket_is_named_after_the_device() {
        let base = "[node]\npublic_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\"\n";
        let vxlan = Config::parse(&format!("{base}[vxlan]\ndevice = \"flannel.1\"\n")).unwrap();
        let dir = std::path::Path::new(SOCKET_DIR);
        assert_eq!(default_socket_in(dir, &vxlan), PathBuf::from("/run/vtepd/flannel.1.sock"));
        let ipip = Config::parse(&base.replace("\"10.244.1.0/24\"\n", "\"10.244.1.0/24\"\nbackend = \"ipip\"\n")).unwrap();
        assert_eq!(default_socket_in(dir, &ipip), PathBuf::from("/run/vtepd/ipip0.sock"));
        let hostgw = Config::parse(&base.replace("\"10.244.1.0/24\"\n", "\"10.244.1.0/24\"\nbackend = \"host-gw\"\n")).unwrap();
        assert_eq!(default_socket_in(dir, &hostgw), PathBuf::from("/run/vtepd/host-gw-192.0.2.1.sock"));
        let set = Config::parse(&format!("control_socket = \"/tmp/v.sock\"\n{base}")).unwrap();
        assert_eq!(socket_path(&set), PathBuf::from("/tmp/v.sock"));
    }
}
