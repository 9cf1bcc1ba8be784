//! A test's temporary directory and the nodes' config files (addresses per host number).
use super::*;
use std::fs;
use std::path::{Path, PathBuf};

/// A directory under /tmp removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("vtepd-test-{tag}-{}", unique_suffix()));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the directory and returns the full path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[derive(Clone, Debug)]
pub struct PeerCfg {
    pub public_ip: String,
    pub subnet: String,
    pub vtep_mac: String,
}

#[derive(Clone, Debug)]
pub struct NodeCfg {
    pub public_ip: String,
    pub subnet: String,
    pub device: String,
    pub vni: u32,
    pub port: u16,
    pub mac: String,
    pub mtu: u32,
    pub peers: Vec<PeerCfg>,
}

/// VTEP MAC of host `n`: 02:00:00:00:00:0n.
pub fn host_mac(n: u8) -> String {
    format!("02:00:00:00:00:{n:02x}")
}

/// The overlay address vtepd puts on host `n`'s device (like flannel.1): 10.244.n.0.
pub fn host_vtep_ip(n: u8) -> String {
    format!("10.244.{n}.0")
}

pub fn host_subnet(n: u8) -> String {
    format!("10.244.{n}.0/24")
}

pub fn host_underlay_ip(n: u8) -> String {
    format!("192.0.2.{n}")
}

impl PeerCfg {
    /// Host `n` as seen by its peers.
    pub fn host(n: u8) -> PeerCfg {
        PeerCfg {
            public_ip: host_underlay_ip(n),
            subnet: host_subnet(n),
            vtep_mac: host_mac(n),
        }
    }
}

impl NodeCfg {
    /// The standard config of host `me` (192.0.2.me, 10.244.me.0/24, MAC ..:0me, vtep0, vni 1, port 8472,
    /// mtu 1450) with the given hosts as peers.
    pub fn host(me: u8, peers: &[u8]) -> NodeCfg {
        NodeCfg {
            public_ip: host_underlay_ip(me),
            subnet: host_subnet(me),
            device: "vtep0".into(),
            vni: 1,
            port: 8472,
            mac: host_mac(me),
            mtu: 1450,
            peers: peers.iter().map(|&p| PeerCfg::host(p)).collect(),
        }
    }

    pub fn to_toml(&self) -> String {
        let mut s = format!(
            "[node]\npublic_ip = \"{}\"\nsubnet = \"{}\"\nbackend = \"vxlan\"\n\n\
             [vxlan]\ndevice = \"{}\"\nvni = {}\nport = {}\nmac = \"{}\"\nmtu = {}\n",
            self.public_ip, self.subnet, self.device, self.vni, self.port, self.mac, self.mtu
        );
        for p in &self.peers {
            s.push_str(&format!(
                "\n[[peer]]\npublic_ip = \"{}\"\nsubnet = \"{}\"\nvtep_mac = \"{}\"\n",
                p.public_ip, p.subnet, p.vtep_mac
            ));
        }
        s
    }
}

/// A config for a routed backend (`ipip` or `host-gw`): `[node]`, then `section` verbatim (e.g.
/// "[ipip]\ndirect_routing = true\n", or ""), then one `[[peer]]` per (public_ip, subnet).
pub fn routed_toml(backend: &str, public_ip: &str, subnet: &str, section: &str, peers: &[(&str, &str)]) -> String {
    let mut s = format!(
        "[node]\npublic_ip = \"{public_ip}\"\nsubnet = \"{subnet}\"\nbackend = \"{backend}\"\n\n{section}"
    );
    for (ip, net) in peers {
        s.push_str(&format!("\n[[peer]]\npublic_ip = \"{ip}\"\nsubnet = \"{net}\"\n"));
    }
    s
}

/// Receive drops that well-formed IPIP from a configured peer must never cause.
pub const IPIP_RX_DROPS: &[&str] = &[
    "drop_rx_unknown_source",
    "drop_rx_outer_malformed",
    "drop_rx_outer_fragment",
    "drop_rx_not_ipip",
    "drop_rx_inner_truncated",
    "drop_rx_inner_malformed",
    "drop_rx_inner_bad_checksum",
    "drop_rx_inner_not_ours",
    "drop_rx_ecn_not_ect",
    "drop_rx_tap_write",
];
