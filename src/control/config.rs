//! The configuration file: TOML, parsed into raw structs, then validated into [`Config`].
//!
//! Validation names the offending key in every error (`peer[2].subnet: overlaps node.subnet
//! 10.244.1.0/24`), because the person reading it is editing that file right now.
use crate::wire::vxlan::{Vni, IANA_PORT};
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key {key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), problem: problem.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Vxlan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: Node,
    pub vxlan: Vxlan,
    pub peers: Vec<Peer>,
}

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
}

/// A configured peer is exactly what the overlay installs.
pub use super::overlay::RemoteNode as Peer;

impl Node {
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.subnet.network()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    vxlan: Option<RawVxlan>,
    #[serde(default)]
    peer: Vec<RawPeer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    public_ip: String,
    subnet: String,
    #[serde(default = "default_backend")]
    backend: String,
}

fn default_backend() -> String {
    "vxlan".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVxlan {
    device: Option<String>,
    vni: Option<i64>,
    port: Option<i64>,
    mac: Option<String>,
    mtu: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    public_ip: String,
    subnet: String,
    vtep_mac: String,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax { path: path.into(), message },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { path: PathBuf::new(), message: e.to_string() })?;
        let node = parse_node(&raw.node)?;
        let vxlan = parse_vxlan(raw.vxlan.unwrap_or_default(), node.public_ip)?;
        let peers = raw.peer.iter().enumerate().map(|(i, p)| parse_peer(i, p)).collect::<Result<Vec<_>, _>>()?;
        let cfg = Config { node, vxlan, peers };
        cfg.check_consistency()?;
        Ok(cfg)
    }

    /// Rules that involve more than one key.
    fn check_consistency(&self) -> Result<(), ConfigError> {
        for (i, p) in self.peers.iter().enumerate() {
            let key = |k: &str| format!("peer[{i}].{k}");
            if p.public_ip == self.node.public_ip {
                return Err(invalid(key("public_ip"), format!("{} is this node's own node.public_ip", p.public_ip)));
            }
            if overlaps(&p.subnet, &self.node.subnet) {
                return Err(invalid(key("subnet"), format!("{} overlaps node.subnet {}", p.subnet, self.node.subnet)));
            }
            if p.vtep_mac == self.vxlan.mac {
                return Err(invalid(key("vtep_mac"), format!("{} is this node's own vxlan.mac", p.vtep_mac)));
            }
            for (j, q) in self.peers.iter().enumerate().take(i) {
                if p.public_ip == q.public_ip {
                    return Err(invalid(key("public_ip"), format!("{} is also peer[{j}].public_ip", p.public_ip)));
                }
                if overlaps(&p.subnet, &q.subnet) {
                    return Err(invalid(key("subnet"), format!("{} overlaps peer[{j}].subnet {}", p.subnet, q.subnet)));
                }
                if p.vtep_mac == q.vtep_mac {
                    return Err(invalid(key("vtep_mac"), format!("{} is also peer[{j}].vtep_mac", p.vtep_mac)));
                }
            }
        }
        Ok(())
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn parse_node(raw: &RawNode) -> Result<Node, ConfigError> {
    let backend = match raw.backend.as_str() {
        "vxlan" => Backend::Vxlan,
        other => return Err(invalid("node.backend", format!("'{other}' is not a backend (supported: vxlan)"))),
    };
    Ok(Node {
        public_ip: unicast_ip("node.public_ip", &raw.public_ip)?,
        subnet: subnet("node.subnet", &raw.subnet)?,
        backend,
    })
}

fn parse_vxlan(raw: RawVxlan, public_ip: Ipv4Addr) -> Result<Vxlan, ConfigError> {
    let device = raw.device.unwrap_or_else(|| "vtep0".into());
    crate::io::tap::check_name(&device).map_err(|p| invalid("vxlan.device", format!("'{device}': {p}")))?;
    let vni = raw.vni.unwrap_or(1);
    let vni = u32::try_from(vni)
        .ok()
        .and_then(Vni::new)
        .ok_or_else(|| invalid("vxlan.vni", format!("{vni} is out of range (0..={})", Vni::MAX)))?;
    let port = raw.port.unwrap_or(IANA_PORT as i64);
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid("vxlan.port", format!("{port} is not a UDP port (1..=65535)")))?;
    let mac = match raw.mac {
        None => MacAddr::from_underlay_ip(public_ip),
        Some(m) => {
            let mac: MacAddr = m.parse().map_err(|e| invalid("vxlan.mac", format!("{e}")))?;
            if mac.is_multicast() {
                return Err(invalid("vxlan.mac", format!("{mac} is a multicast address")));
            }
            mac
        }
    };
    let mtu = match raw.mtu {
        None => None,
        Some(m) if (68..=65_000).contains(&m) => Some(m as u16),
        Some(m) => return Err(invalid("vxlan.mtu", format!("{m} is out of range (68..=65000)"))),
    };
    Ok(Vxlan { device, vni, port, mac, mtu })
}

fn parse_peer(i: usize, raw: &RawPeer) -> Result<Peer, ConfigError> {
    let key = |k: &str| format!("peer[{i}].{k}");
    let vtep_mac: MacAddr = raw.vtep_mac.parse().map_err(|e| invalid(key("vtep_mac"), format!("{e}")))?;
    if vtep_mac.is_multicast() {
        return Err(invalid(key("vtep_mac"), format!("{vtep_mac} is a multicast address")));
    }
    Ok(Peer { public_ip: unicast_ip(&key("public_ip"), &raw.public_ip)?, subnet: subnet(&key("subnet"), &raw.subnet)?, vtep_mac })
}

fn unicast_ip(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    let ip: Ipv4Addr = s.parse().map_err(|_| invalid(key, format!("'{s}' is not an IPv4 address")))?;
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
        return Err(invalid(key, format!("{ip} is not a unicast host address")));
    }
    Ok(ip)
}

fn subnet(key: &str, s: &str) -> Result<Ipv4Net, ConfigError> {
    let net: Ipv4Net = s.parse().map_err(|_| invalid(key, format!("'{s}' is not an IPv4 prefix like 10.244.1.0/24")))?;
    if net.prefix_len() > 30 {
        return Err(invalid(key, format!("{net} leaves no room for pods (prefix longer than /30)")));
    }
    if net.trunc() != net {
        return Err(invalid(key, format!("{net} has host bits set (did you mean {}?)", net.trunc())));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
public_ip = "192.0.2.1"
subnet = "10.244.1.0/24"
backend = "vxlan"
[vxlan]
device = "vtep0"
vni = 1
port = 8472
mac = "02:00:00:00:00:01"
mtu = 1450
[[peer]]
public_ip = "192.0.2.2"
subnet = "10.244.2.0/24"
vtep_mac = "02:00:00:00:00:02"
"#;

    fn err_of(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn good_config_parses() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.vxlan.vni.get(), 1);
        assert_eq!(c.vxlan.port, 8472);
        assert_eq!(c.peers[0].vtep_ip(), Ipv4Addr::new(10, 244, 2, 0));
        assert_eq!(c.node.vtep_ip(), Ipv4Addr::new(10, 244, 1, 0));
    }

    #[test]
    fn defaults() {
        let c = Config::parse("[node]\npublic_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\"\n").unwrap();
        assert_eq!(c.vxlan.device, "vtep0");
        assert_eq!(c.vxlan.port, 4789);
        assert_eq!(c.vxlan.vni.get(), 1);
        assert_eq!(c.vxlan.mac, MacAddr::from_underlay_ip(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(c.vxlan.mtu, None);
    }

    #[test]
    fn each_error_names_its_key() {
        let cases = [
            (GOOD.replace("vni = 1", "vni = 16777216"), "vxlan.vni"),
            (GOOD.replace("vni = 1", "vni = -1"), "vxlan.vni"),
            (GOOD.replace("port = 8472", "port = 70000"), "vxlan.port"),
            (GOOD.replace("\"192.0.2.2\"", "\"192.0.2.1\""), "peer[0].public_ip"),
            (GOOD.replace("10.244.2.0/24", "10.244.0.0/16"), "peer[0].subnet"),
            (GOOD.replace("10.244.2.0/24", "10.244.2.7/24"), "peer[0].subnet"),
            (GOOD.replace("\"192.0.2.2\"", "\"192.0.2.300\""), "peer[0].public_ip"),
            (GOOD.replace("02:00:00:00:00:02", "02:00:00:00:00"), "peer[0].vtep_mac"),
            (GOOD.replace("backend = \"vxlan\"", "backend = \"gre\""), "node.backend"),
            (GOOD.replace("device = \"vtep0\"", "device = \"a-very-long-device-name\""), "vxlan.device"),
            (GOOD.replace("mtu = 1450", "mtu = 20"), "vxlan.mtu"),
            (GOOD.replace("mtu = 1450", "mtu = 1450\ncolour = 1"), "colour"),
            (GOOD.replace("mac = \"02:00:00:00:00:01\"", "mac = \"01:00:00:00:00:01\""), "vxlan.mac"),
        ];
        for (text, key) in cases {
            let e = err_of(&text);
            assert!(e.contains(key), "expected {key} in: {e}");
        }
    }

    #[test]
    fn shipped_example_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/vxlan.toml");
        let c = Config::load(Path::new(path)).unwrap();
        assert_eq!((c.vxlan.port, c.peers.len()), (8472, 1));
    }

    #[test]
    fn overlapping_peers_are_refused() {
        let text = format!("{GOOD}[[peer]]\npublic_ip = \"192.0.2.3\"\nsubnet = \"10.244.2.128/25\"\nvtep_mac = \"02:00:00:00:00:03\"\n");
        assert!(err_of(&text).contains("peer[1].subnet: 10.244.2.128/25 overlaps peer[0].subnet"));
    }
}
