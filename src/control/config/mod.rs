//! The configuration file: TOML, parsed into raw structs, then validated into [`Config`].
//!
//! Validation names the offending key in every error (`peer[2].subnet: overlaps node.subnet
//! 10.244.1.0/24`), because the person reading it is editing that file right now. In order:
//! `file` reads the TOML into raw structs, `sections` turns each section into its checked value
//! with the help of `values` (one value's rules), and `check` applies the rules across keys.
mod check;
mod file;
mod sections;
#[cfg(test)]
mod tests;
mod values;

pub(crate) use values::{parse_unicast_ip, parse_unicast_mac, reserved_overlap};

use crate::wire::vxlan::Vni;
use crate::wire::MacAddr;
use file::{deserialize, read_config};
use ipnet::Ipv4Net;
use sections::{only_for, parse_control_socket, parse_etcd_mode, parse_ipip, parse_node, parse_peer, parse_vxlan};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path} is {what}, not a regular file")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("config {path} is larger than {} MiB, the limit for a config file", MAX_CONFIG_BYTES >> 20)]
    TooBig { path: PathBuf },
    #[error("config {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key {key}: {problem}")]
    Invalid { key: String, problem: String },
}

/// The largest config file read. A generated file with 100k peers is about 9 MiB; this leaves
/// room for several times that (and comments), yet a runaway file is refused before it eats memory.
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), problem: problem.into() }
}

/// How pod traffic crosses the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Ethernet in VXLAN over UDP through a TAP device (flannel's vxlan).
    Vxlan,
    /// IP-in-IP through a TUN device (Calico's IPIP mode).
    Ipip,
    /// No encapsulation: kernel routes via each peer's underlay address (flannel's host-gw).
    HostGw,
}

impl Backend {
    /// The name used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::Ipip => "ipip",
            Backend::HostGw => "host-gw",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: Node,
    /// Filled with defaults unless the backend is VXLAN.
    pub vxlan: Vxlan,
    /// Filled with defaults unless the backend is IPIP.
    pub ipip: Ipip,
    pub peers: Vec<Peer>,
    /// `Some`: the subnet, backend and peers come from etcd (see [`super::etcd`]); until the node
    /// has joined, `node.subnet` is [`Node::UNJOINED`] and `node.backend` a placeholder.
    pub etcd: Option<Etcd>,
    /// The control API's Unix socket; `None`: the default, see [`crate::control::api::default_socket`].
    pub control_socket: Option<PathBuf>,
}

/// The `[etcd]` section: where the cluster's Flannel-style datastore is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etcd {
    pub endpoints: Vec<String>,
    /// Flannel's `--etcd-prefix`; the network config is at `<prefix>/config`.
    pub prefix: String,
    pub tls: Option<EtcdTls>,
    /// Flannel's subnet.env, read back at start-up to ask for the same subnet again.
    pub subnet_file: PathBuf,
}

/// Client TLS: all three files or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub const DEFAULT_ETCD_PREFIX: &str = "/coreos.com/network";
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub public_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub backend: Backend,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    pub device: String,
    pub vni: Vni,
    pub port: u16,
    pub mac: MacAddr,
    /// `None`: the underlay interface's MTU minus 50, found at start-up.
    pub mtu: Option<u16>,
    /// Route peers on the underlay's own subnet directly, without encapsulation.
    pub direct_routing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipip {
    pub device: String,
    /// `None`: the underlay interface's MTU minus 20, found at start-up.
    pub mtu: Option<u16>,
    /// Outer TTL (RFC 2003 §3.1 leaves it to the encapsulator).
    pub ttl: u8,
    /// Route peers on the underlay's own subnet directly, without encapsulation.
    pub direct_routing: bool,
}

impl Default for Ipip {
    fn default() -> Self {
        Ipip { device: "ipip0".into(), mtu: None, ttl: 64, direct_routing: false }
    }
}

/// A configured peer is exactly what the overlay installs.
pub use super::overlay::RemoteNode as Peer;

impl Node {
    /// `node.subnet` of an etcd-mode config before the lease is acquired.
    pub const UNJOINED: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0);

    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.subnet.network()
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config(path)?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax { path: path.into(), message },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw = deserialize(text)?;
        let control_socket = parse_control_socket(raw.control_socket.as_deref())?;
        if raw.etcd.is_some() {
            return Ok(Config { control_socket, ..parse_etcd_mode(raw)? });
        }
        let node = parse_node(&raw.node)?;
        let backend = node.backend;
        only_for(backend, Backend::Vxlan, "vxlan", raw.vxlan.is_some())?;
        only_for(backend, Backend::Ipip, "ipip", raw.ipip.is_some())?;
        let vxlan = parse_vxlan(raw.vxlan.unwrap_or_default(), node.public_ip)?;
        let ipip = parse_ipip(raw.ipip.unwrap_or_default())?;
        let peers =
            raw.peer.iter().enumerate().map(|(i, p)| parse_peer(i, p, backend)).collect::<Result<Vec<_>, _>>()?;
        let cfg = Config { node, vxlan, ipip, peers, etcd: None, control_socket };
        cfg.check_consistency()?;
        Ok(cfg)
    }

    /// This config with another peer list, checked as a file's would be. A reload applies only its
    /// peers, so they must fit the `[node]` and `[vxlan]` that are running, not the file's.
    pub fn with_peers(&self, peers: Vec<Peer>) -> Result<Config, ConfigError> {
        let cfg = Config { peers, ..self.clone() };
        cfg.check_consistency()?;
        Ok(cfg)
    }

    /// What names this instance among the vtepd processes of one network namespace, for its
    /// control socket and its route claims: its TAP or TUN device, whose name no two can share
    /// (the second could not create it); host-gw has no device and takes its underlay address.
    pub fn instance_name(&self) -> String {
        match self.node.backend {
            Backend::Vxlan => self.vxlan.device.clone(),
            Backend::Ipip => self.ipip.device.clone(),
            Backend::HostGw => format!("host-gw-{}", self.node.public_ip),
        }
    }

    /// Whether this backend may route some peers directly over the underlay.
    pub fn direct_routing(&self) -> bool {
        match self.node.backend {
            Backend::Vxlan => self.vxlan.direct_routing,
            Backend::Ipip => self.ipip.direct_routing,
            Backend::HostGw => true,
        }
    }
}
