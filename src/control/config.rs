//! The configuration file: TOML, parsed into raw structs, then validated into [`Config`].
//!
//! Validation names the offending key in every error (`peer[2].subnet: overlaps node.subnet
//! 10.244.1.0/24`), because the person reading it is editing that file right now.
use crate::wire::vxlan::{Vni, IANA_PORT};
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use super::overlay::SubnetIndex;
use serde::Deserialize;
use std::collections::HashMap;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    control_socket: Option<String>,
    node: RawNode,
    vxlan: Option<RawVxlan>,
    ipip: Option<RawIpip>,
    #[serde(default)]
    peer: Vec<RawPeer>,
    etcd: Option<RawEtcd>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    endpoints: Vec<String>,
    prefix: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    subnet_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    public_ip: String,
    subnet: Option<String>,
    backend: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVxlan {
    device: Option<String>,
    vni: Option<i64>,
    port: Option<i64>,
    mac: Option<String>,
    mtu: Option<i64>,
    direct_routing: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIpip {
    device: Option<String>,
    mtu: Option<i64>,
    ttl: Option<i64>,
    direct_routing: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    public_ip: String,
    subnet: String,
    vtep_mac: Option<String>,
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

    /// Rules that involve more than one key. Linear in the number of peers (hash maps and one
    /// sort), so a generated file with 100k peers loads in well under a second.
    fn check_consistency(&self) -> Result<(), ConfigError> {
        let vxlan = self.node.backend == Backend::Vxlan;
        let mut ips: HashMap<Ipv4Addr, usize> = HashMap::with_capacity(self.peers.len());
        let mut macs: HashMap<MacAddr, usize> = HashMap::with_capacity(self.peers.len());
        for (i, p) in self.peers.iter().enumerate() {
            let key = |k: &str| format!("peer[{i}].{k}");
            if p.public_ip == self.node.public_ip {
                return Err(invalid(key("public_ip"), format!("{} is this node's own node.public_ip", p.public_ip)));
            }
            if overlaps(&p.subnet, &self.node.subnet) {
                return Err(invalid(key("subnet"), format!("{} overlaps node.subnet {}", p.subnet, self.node.subnet)));
            }
            if vxlan && p.vtep_mac == self.vxlan.mac {
                return Err(invalid(key("vtep_mac"), format!("{} is this node's own vxlan.mac", p.vtep_mac)));
            }
            if let Some(j) = ips.insert(p.public_ip, i) {
                return Err(invalid(key("public_ip"), format!("{} is also peer[{j}].public_ip", p.public_ip)));
            }
            if vxlan {
                if let Some(j) = macs.insert(p.vtep_mac, i) {
                    return Err(invalid(key("vtep_mac"), format!("{} is also peer[{j}].vtep_mac", p.vtep_mac)));
                }
            }
        }
        self.check_peer_subnets_disjoint()?;
        self.check_no_encapsulation_loop()
    }

    /// An overlay subnet that contains an underlay address: see [`SubnetIndex`].
    fn check_no_encapsulation_loop(&self) -> Result<(), ConfigError> {
        let subnet_key = |i: Option<usize>| i.map_or_else(|| "node.subnet".to_string(), |i| format!("peer[{i}].subnet"));
        let ip_key = |i: Option<usize>| i.map_or_else(|| "node.public_ip".to_string(), |i| format!("peer[{i}].public_ip"));
        let peers = self.peers.iter().enumerate();
        let index = SubnetIndex::new(std::iter::once((self.node.subnet, None)).chain(peers.clone().map(|(i, p)| (p.subnet, Some(i)))));
        let addrs = std::iter::once((self.node.public_ip, None)).chain(peers.map(|(i, p)| (p.public_ip, Some(i))));
        for (ip, who) in addrs {
            if let Some((net, owner)) = index.containing(ip) {
                let problem = format!(
                    "{net} contains {} {ip}: traffic to that underlay address would be routed into the overlay (with vxlan or ipip, the tunnel's own packets: an encapsulation loop)",
                    ip_key(who)
                );
                return Err(invalid(subnet_key(owner), problem));
            }
        }
        Ok(())
    }

    /// CIDR blocks are nested or disjoint, so in address order a block overlaps an earlier one
    /// exactly when it starts inside the widest block seen so far.
    fn check_peer_subnets_disjoint(&self) -> Result<(), ConfigError> {
        let mut order: Vec<usize> = (0..self.peers.len()).collect();
        order.sort_by_key(|&i| (self.peers[i].subnet.network(), self.peers[i].subnet.prefix_len()));
        let mut widest: Option<usize> = None;
        for i in order {
            let net = self.peers[i].subnet;
            if let Some(w) = widest {
                if self.peers[w].subnet.contains(&net.network()) {
                    let (later, earlier) = (i.max(w), i.min(w));
                    let (a, b) = (self.peers[later].subnet, self.peers[earlier].subnet);
                    return Err(invalid(format!("peer[{later}].subnet"), format!("{a} overlaps peer[{earlier}].subnet {b}")));
                }
            }
            if widest.is_none_or(|w| net.broadcast() > self.peers[w].subnet.broadcast()) {
                widest = Some(i);
            }
        }
        Ok(())
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

/// Parses the TOML into the raw structs; an error names the key it is about, as validation does.
fn deserialize(text: &str) -> Result<RawConfig, ConfigError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let at = e.inner().span().map(|s| line_column(text, s.start)).unwrap_or_default();
        let message = e.inner().message().replace('\n', "; ");
        match key_and_problem(&e.path().to_string(), &message) {
            Some((key, problem)) => invalid(key, format!("{problem}{at}")),
            None => ConfigError::Syntax { path: PathBuf::new(), message: format!("{message}{at}") },
        }
    })
}

/// Serde's messages say `missing field \`subnet\``, `invalid type: string "x", expected i64`: the
/// key goes in front, the problem is put in the file's terms. `None`: a TOML syntax error, which
/// belongs to no key.
fn key_and_problem(path: &str, message: &str) -> Option<(String, String)> {
    let path = if path == "." { "" } else { path };
    let join = |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    if let Some(name) = backquoted_after(message, "missing field ") {
        return Some((join(name), "missing".into()));
    }
    if let Some(name) = backquoted_after(message, "unknown field ") {
        let known = message.split_once(", expected ").map(|(_, e)| e.strip_prefix("one of ").unwrap_or(e).replace('`', ""));
        let expected = known.map(|k| format!(" (known keys here: {k})")).unwrap_or_default();
        // The path may already end at the unknown key (a whole segment, not just its tail).
        let at_key = path == name || path.ends_with(&format!(".{name}"));
        let mut key = if at_key { path.to_string() } else { join(name) };
        if name.is_empty() {
            // `'' = 0`: TOML allows an empty quoted key; name it the way the file spells it.
            key.push_str(if key.is_empty() || key.ends_with('.') { "\"\"" } else { ".\"\"" });
        }
        return Some((key, format!("unknown key{expected}")));
    }
    if path.is_empty() {
        return None;
    }
    if let Some((found, expected)) = message.strip_prefix("invalid type: ").and_then(|m| m.split_once(", expected ")) {
        return Some((path.to_string(), format!("expected {}, found {}", toml_kind(expected), toml_kind(found))));
    }
    Some((path.to_string(), message.to_string()))
}

fn backquoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.strip_prefix('`')?.split('`').next()
}

/// A serde type (`i64`, `a boolean`, `struct RawNode`) or value (`string "x"`, `integer \`5\``) as
/// the kind of TOML value it is.
fn toml_kind(serde: &str) -> &str {
    let word = serde.strip_prefix("a ").or_else(|| serde.strip_prefix("an ")).unwrap_or(serde);
    match word.split(' ').next().unwrap_or(word) {
        "string" => "a string",
        "boolean" => "a boolean",
        "i64" | "integer" => "an integer",
        "floating" => "a float",
        "sequence" => "an array",
        "map" | "struct" => "a table",
        _ => serde,
    }
}

/// ` (line L, column C)` for a byte offset into `text`.
fn line_column(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" (line {line}, column {column})")
}

/// Reads a config file, refusing what is not a regular file (`/dev/zero`, a FIFO, a directory)
/// and anything over [`MAX_CONFIG_BYTES`]: either would hang `vtepd check` or eat memory.
fn read_config(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let read_err = |source| ConfigError::Read { path: path.into(), source };
    // Non-blocking, so opening a FIFO with no writer returns at once instead of waiting for one;
    // it changes nothing for a regular file.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile { path: path.into(), what: file_kind(&meta.file_type()) });
    }
    let too_big = || ConfigError::TooBig { path: path.into() };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    // Bounded even if the file grows after the size check.
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text).map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    Ok(text)
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "something else"
    }
}

/// A backend's section in a config for another backend is almost always a mistake (an edited copy
/// of another node's file), so it is refused rather than silently ignored.
fn only_for(backend: Backend, owner: Backend, section: &str, present: bool) -> Result<(), ConfigError> {
    if present && backend != owner {
        let problem = format!("section is only used with node.backend = \"{}\" (this node's backend is \"{}\")", owner.name(), backend.name());
        return Err(invalid(section, problem));
    }
    Ok(())
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn parse_node(raw: &RawNode) -> Result<Node, ConfigError> {
    let backend = match raw.backend.as_deref().unwrap_or("vxlan") {
        "vxlan" => Backend::Vxlan,
        "ipip" => Backend::Ipip,
        "host-gw" => Backend::HostGw,
        other => return Err(invalid("node.backend", format!("'{other}' is not a backend (supported: vxlan, ipip, host-gw)"))),
    };
    Ok(Node {
        public_ip: unicast_ip("node.public_ip", &raw.public_ip)?,
        subnet: subnet("node.subnet", raw.subnet.as_deref().ok_or_else(|| invalid("node.subnet", "is required (or configure [etcd])"))?, 30)?,
        backend,
    })
}

/// With `[etcd]`, the network's config in etcd decides the subnet, the backend, the VNI, the port,
/// direct routing and the peers; the same keys in the file would be silently overridden, so they are
/// refused. What stays local is what flanneld also takes from its host: devices, MAC and MTU.
fn parse_etcd_mode(raw: RawConfig) -> Result<Config, ConfigError> {
    const FROM_ETCD: &str = "comes from the network config in etcd with [etcd]; remove it";
    if raw.node.subnet.is_some() {
        return Err(invalid("node.subnet", "comes from the subnet lease in etcd with [etcd]; remove it"));
    }
    if raw.node.backend.is_some() {
        return Err(invalid("node.backend", format!("{FROM_ETCD} (Backend.Type)")));
    }
    if !raw.peer.is_empty() {
        return Err(invalid("peer", "peers come from the subnet leases in etcd with [etcd]; remove every [[peer]]"));
    }
    if let Some(v) = &raw.vxlan {
        for (key, set) in [("vxlan.vni", v.vni.is_some()), ("vxlan.port", v.port.is_some()), ("vxlan.direct_routing", v.direct_routing.is_some())] {
            if set {
                return Err(invalid(key, FROM_ETCD));
            }
        }
    }
    if raw.ipip.as_ref().is_some_and(|i| i.direct_routing.is_some()) {
        return Err(invalid("ipip.direct_routing", format!("{FROM_ETCD} (Backend.DirectRouting)")));
    }
    let public_ip = unicast_ip("node.public_ip", &raw.node.public_ip)?;
    let node = Node { public_ip, subnet: Node::UNJOINED, backend: Backend::Vxlan };
    let vxlan = parse_vxlan(raw.vxlan.unwrap_or_default(), public_ip)?;
    let ipip = parse_ipip(raw.ipip.unwrap_or_default())?;
    let etcd = raw.etcd.map(parse_etcd).transpose()?;
    Ok(Config { node, vxlan, ipip, peers: Vec::new(), etcd, control_socket: None })
}

fn parse_control_socket(raw: Option<&str>) -> Result<Option<PathBuf>, ConfigError> {
    match raw {
        Some(p) if p.is_empty() || p.ends_with('/') => Err(invalid("control_socket", format!("'{p}' is not a file path"))),
        p => Ok(p.map(PathBuf::from)),
    }
}

fn parse_etcd(raw: RawEtcd) -> Result<Etcd, ConfigError> {
    if raw.endpoints.is_empty() {
        return Err(invalid("etcd.endpoints", "needs at least one endpoint like \"http://192.0.2.10:2379\""));
    }
    for (i, e) in raw.endpoints.iter().enumerate() {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(invalid(format!("etcd.endpoints[{i}]"), format!("'{e}' is not a URL like http://192.0.2.10:2379")));
        }
    }
    let prefix = raw.prefix.unwrap_or_else(|| DEFAULT_ETCD_PREFIX.into());
    if !prefix.starts_with('/') || prefix.ends_with('/') {
        return Err(invalid("etcd.prefix", format!("'{prefix}' must start with '/' and not end with one (like {DEFAULT_ETCD_PREFIX})")));
    }
    let tls = match (raw.ca, raw.cert, raw.key) {
        (None, None, None) => None,
        (Some(ca), Some(cert), Some(key)) => {
            for (k, p) in [("etcd.ca", &ca), ("etcd.cert", &cert), ("etcd.key", &key)] {
                if !p.is_file() {
                    return Err(invalid(k, format!("{} is not a readable file", p.display())));
                }
            }
            Some(EtcdTls { ca, cert, key })
        }
        (ca, cert, _) => {
            let missing = if ca.is_none() { "etcd.ca" } else if cert.is_none() { "etcd.cert" } else { "etcd.key" };
            return Err(invalid(missing, "is missing: TLS needs all three of etcd.ca, etcd.cert and etcd.key"));
        }
    };
    let subnet_file = raw.subnet_file.unwrap_or_else(|| DEFAULT_SUBNET_FILE.into());
    Ok(Etcd { endpoints: raw.endpoints, prefix, tls, subnet_file })
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
        Some(m) => unicast_mac("vxlan.mac", &m)?,
    };
    let mtu = mtu_in_range("vxlan.mtu", raw.mtu)?;
    Ok(Vxlan { device, vni, port, mac, mtu, direct_routing: raw.direct_routing.unwrap_or(false) })
}

fn parse_ipip(raw: RawIpip) -> Result<Ipip, ConfigError> {
    let d = Ipip::default();
    let device = raw.device.unwrap_or(d.device);
    crate::io::tap::check_name(&device).map_err(|p| invalid("ipip.device", format!("'{device}': {p}")))?;
    let ttl = match raw.ttl {
        None => d.ttl,
        Some(t) => u8::try_from(t).ok().filter(|t| *t != 0).ok_or_else(|| invalid("ipip.ttl", format!("{t} is out of range (1..=255)")))?,
    };
    let mtu = mtu_in_range("ipip.mtu", raw.mtu)?;
    Ok(Ipip { device, mtu, ttl, direct_routing: raw.direct_routing.unwrap_or(d.direct_routing) })
}

fn mtu_in_range(key: &str, mtu: Option<i64>) -> Result<Option<u16>, ConfigError> {
    match mtu {
        None => Ok(None),
        Some(m) if (68..=65_000).contains(&m) => Ok(Some(m as u16)),
        Some(m) => Err(invalid(key, format!("{m} is out of range (68..=65000)"))),
    }
}

fn parse_peer(i: usize, raw: &RawPeer, backend: Backend) -> Result<Peer, ConfigError> {
    let key = |k: &str| format!("peer[{i}].{k}");
    let public_ip = unicast_ip(&key("public_ip"), &raw.public_ip)?;
    // A VXLAN peer's subnet network address is its VTEP address, so it needs room for pods; a routed
    // peer's subnet is only a route, and a /32 (one pod, or a Calico borrowed address) is fine.
    let max_prefix = if backend == Backend::Vxlan { 30 } else { 32 };
    let subnet = subnet(&key("subnet"), &raw.subnet, max_prefix)?;
    let vtep_mac = match (backend, &raw.vtep_mac) {
        (Backend::Vxlan, Some(m)) => unicast_mac(&key("vtep_mac"), m)?,
        (Backend::Vxlan, None) => return Err(invalid(key("vtep_mac"), "is required with node.backend = \"vxlan\"")),
        (other, Some(_)) => {
            return Err(invalid(key("vtep_mac"), format!("is only used with node.backend = \"vxlan\" (this node's backend is \"{}\")", other.name())))
        }
        // Never used without VXLAN; the derived MAC keeps `Peer` one type for every backend.
        (_, None) => MacAddr::from_underlay_ip(public_ip),
    };
    Ok(Peer { public_ip, subnet, vtep_mac })
}

/// A VTEP MAC is the destination of unicast frames and the source of every frame it sends: the
/// all-zero address is no station's, and a group address (I/G bit, broadcast too) is refused as a
/// source by bridges and the kernel's neighbour table.
fn unicast_mac(key: &str, s: &str) -> Result<MacAddr, ConfigError> {
    let mac: MacAddr = s.parse().map_err(|e| invalid(key, format!("{e}")))?;
    if mac.is_unicast() {
        return Ok(mac);
    }
    let problem = if mac == MacAddr::default() {
        "the all-zero address"
    } else if mac.is_broadcast() {
        "the broadcast address"
    } else {
        "a multicast address (I/G bit set)"
    };
    Err(invalid(key, format!("{mac} is {problem}, not a unicast MAC")))
}

/// IPv4 ranges that no host or pod can use: a route to them would be ignored or would break the
/// host (RFC 6890: "this network", loopback, multicast, and the reserved block with broadcast).
const RESERVED: [(Ipv4Net, &str); 4] = [
    (Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8), "0.0.0.0/8 (\"this network\")"),
    (Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8), "127.0.0.0/8 (loopback)"),
    (Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4), "224.0.0.0/4 (multicast)"),
    (Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4), "240.0.0.0/4 (reserved, and broadcast)"),
];

pub(crate) fn reserved_overlap(net: &Ipv4Net) -> Option<&'static str> {
    RESERVED.iter().find(|(r, _)| overlaps(r, net)).map(|(_, name)| *name)
}

fn unicast_ip(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    let ip: Ipv4Addr = s.parse().map_err(|_| invalid(key, format!("'{s}' is not an IPv4 address")))?;
    if let Some(range) = reserved_overlap(&Ipv4Net::from(ip)) {
        return Err(invalid(key, format!("{ip} is not a unicast host address (it is in {range})")));
    }
    Ok(ip)
}

fn subnet(key: &str, s: &str, max_prefix: u8) -> Result<Ipv4Net, ConfigError> {
    let net: Ipv4Net = s.parse().map_err(|_| invalid(key, format!("'{s}' is not an IPv4 prefix like 10.244.1.0/24")))?;
    if net.prefix_len() > max_prefix {
        return Err(invalid(key, format!("{net} leaves no room for pods (prefix longer than /30)")));
    }
    if net.trunc() != net {
        return Err(invalid(key, format!("{net} has host bits set (did you mean {}?)", net.trunc())));
    }
    if let Some(range) = reserved_overlap(&net) {
        return Err(invalid(key, format!("{net} overlaps {range}, which pods cannot use")));
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
    fn control_socket_is_a_top_level_path() {
        assert_eq!(Config::parse(GOOD).unwrap().control_socket, None);
        let c = Config::parse(&format!("control_socket = \"/run/x/a.sock\"\n{GOOD}")).unwrap();
        assert_eq!(c.control_socket, Some(PathBuf::from("/run/x/a.sock")));
        assert_eq!(err_of(&format!("control_socket = \"/run/x/\"\n{GOOD}")), "config key control_socket: '/run/x/' is not a file path");
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

    const IPIP: &str = r#"
[node]
public_ip = "192.0.2.1"
subnet = "10.244.1.0/26"
backend = "ipip"
[ipip]
device = "tunl0"
direct_routing = true
[[peer]]
public_ip = "192.0.2.2"
subnet = "10.244.1.64/26"
[[peer]]
public_ip = "198.51.100.3"
subnet = "10.244.7.9/32"
"#;

    #[test]
    fn ipip_config_parses_with_defaults() {
        let c = Config::parse(IPIP).unwrap();
        assert_eq!(c.node.backend, Backend::Ipip);
        assert_eq!(c.ipip, Ipip { device: "tunl0".into(), mtu: None, ttl: 64, direct_routing: true });
        assert!(c.direct_routing());
        assert_eq!(c.peers[0].subnet.to_string(), "10.244.1.64/26");
        assert_eq!(c.peers[1].subnet.prefix_len(), 32);
        let plain = Config::parse(&IPIP.replace("device = \"tunl0\"\ndirect_routing = true\n", "")).unwrap();
        assert_eq!(plain.ipip, Ipip::default());
        assert_eq!(plain.ipip.device, "ipip0");
    }

    #[test]
    fn host_gw_config_parses() {
        let text = IPIP.replace("backend = \"ipip\"", "backend = \"host-gw\"").replace("[ipip]\ndevice = \"tunl0\"\ndirect_routing = true\n", "");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.node.backend, Backend::HostGw);
        assert_eq!(c.peers.len(), 2);
    }

    #[test]
    fn vtep_macs_must_be_unicast() {
        let own = |mac: &str| GOOD.replace("mac = \"02:00:00:00:00:01\"", &format!("mac = \"{mac}\""));
        let peer = |mac: &str| GOOD.replace("vtep_mac = \"02:00:00:00:00:02\"", &format!("vtep_mac = \"{mac}\""));
        let cases = [
            (own("00:00:00:00:00:00"), "config key vxlan.mac: 00:00:00:00:00:00 is the all-zero address, not a unicast MAC"),
            (own("ff:ff:ff:ff:ff:ff"), "config key vxlan.mac: ff:ff:ff:ff:ff:ff is the broadcast address, not a unicast MAC"),
            (own("33:33:00:00:00:01"), "config key vxlan.mac: 33:33:00:00:00:01 is a multicast address (I/G bit set), not a unicast MAC"),
            (peer("00:00:00:00:00:00"), "config key peer[0].vtep_mac: 00:00:00:00:00:00 is the all-zero address, not a unicast MAC"),
            (peer("ff:ff:ff:ff:ff:ff"), "config key peer[0].vtep_mac: ff:ff:ff:ff:ff:ff is the broadcast address, not a unicast MAC"),
            (peer("01:00:5e:00:00:01"), "config key peer[0].vtep_mac: 01:00:5e:00:00:01 is a multicast address (I/G bit set), not a unicast MAC"),
        ];
        for (text, want) in cases {
            assert_eq!(err_of(&text), want);
        }
    }

    #[test]
    fn overlay_subnets_must_be_usable_for_pods() {
        let host_gw = IPIP.replace("backend = \"ipip\"", "backend = \"host-gw\"").replace("[ipip]\ndevice = \"tunl0\"\ndirect_routing = true\n", "");
        let cases = [
            (GOOD.replace("10.244.1.0/24", "127.0.0.0/24"), "node.subnet: 127.0.0.0/24 overlaps 127.0.0.0/8 (loopback)"),
            (GOOD.replace("10.244.1.0/24", "224.1.0.0/24"), "node.subnet: 224.1.0.0/24 overlaps 224.0.0.0/4 (multicast)"),
            (GOOD.replace("10.244.1.0/24", "0.0.0.0/0"), "node.subnet: 0.0.0.0/0 overlaps 0.0.0.0/8"),
            (GOOD.replace("10.244.1.0/24", "255.255.255.0/30"), "node.subnet: 255.255.255.0/30 overlaps 240.0.0.0/4 (reserved, and broadcast)"),
            (GOOD.replace("10.244.2.0/24", "240.0.0.0/24"), "peer[0].subnet: 240.0.0.0/24 overlaps 240.0.0.0/4"),
            (IPIP.replace("10.244.7.9/32", "239.1.1.1/32"), "peer[1].subnet: 239.1.1.1/32 overlaps 224.0.0.0/4 (multicast)"),
            (host_gw.replace("10.244.7.9/32", "0.0.0.1/32"), "peer[1].subnet: 0.0.0.1/32 overlaps 0.0.0.0/8"),
            (host_gw.replace("10.244.7.9/32", "127.0.0.1/32"), "peer[1].subnet: 127.0.0.1/32 overlaps 127.0.0.0/8 (loopback)"),
            (GOOD.replace("\"192.0.2.2\"", "\"240.0.0.1\""), "peer[0].public_ip: 240.0.0.1 is not a unicast host address"),
        ];
        for (text, want) in cases {
            let e = err_of(&text);
            assert!(e.contains(want), "expected `{want}` in: {e}");
        }
    }

    #[test]
    fn an_overlay_subnet_containing_an_underlay_address_is_an_encapsulation_loop() {
        let host_gw = IPIP.replace("backend = \"ipip\"", "backend = \"host-gw\"").replace("[ipip]\ndevice = \"tunl0\"\ndirect_routing = true\n", "");
        let cases = [
            (GOOD.replace("10.244.1.0/24", "192.0.2.0/24"), "node.subnet: 192.0.2.0/24 contains node.public_ip 192.0.2.1"),
            (
                GOOD.replace("10.244.1.0/24", "192.0.2.0/30").replace("\"192.0.2.1\"", "\"198.51.100.1\""),
                "node.subnet: 192.0.2.0/30 contains peer[0].public_ip 192.0.2.2",
            ),
            (GOOD.replace("10.244.2.0/24", "192.0.2.0/30"), "peer[0].subnet: 192.0.2.0/30 contains node.public_ip 192.0.2.1"),
            (IPIP.replace("10.244.7.9/32", "192.0.2.2/32"), "peer[1].subnet: 192.0.2.2/32 contains peer[0].public_ip 192.0.2.2"),
            (IPIP.replace("10.244.1.64/26", "198.51.100.0/24"), "peer[0].subnet: 198.51.100.0/24 contains peer[1].public_ip 198.51.100.3"),
            (host_gw.replace("10.244.7.9/32", "192.0.2.1/32"), "peer[1].subnet: 192.0.2.1/32 contains node.public_ip 192.0.2.1"),
        ];
        for (text, want) in cases {
            let e = err_of(&text);
            assert!(e.starts_with(&format!("config key {want}: traffic to that underlay address")), "expected `{want}` in: {e}");
            assert!(e.contains("encapsulation loop"), "{e}");
        }
        // Next to the subnet, not inside it: fine.
        assert!(Config::parse(&IPIP.replace("10.244.7.9/32", "198.51.100.4/32")).is_ok());
    }

    #[test]
    fn toml_errors_name_the_full_key() {
        let second_peer = format!("{GOOD}{}", peer_toml("192.0.2.3", "10.244.3.0/24", "02:00:00:00:00:03"));
        let cases = [
            (second_peer.replace("subnet = \"10.244.3.0/24\"\n", ""), "config key peer[1].subnet: missing (line 16, column 1)"),
            (GOOD.replace("vni = 1", "vni = \"1\""), "config key vxlan.vni: expected an integer, found a string (line 8, column 7)"),
            (GOOD.replace("mtu = 1450", "mtu = 1450.0"), "config key vxlan.mtu: expected an integer, found a float (line 11, column 7)"),
            (IPIP.replace("direct_routing = true", "direct_routing = \"yes\""), "config key ipip.direct_routing: expected a boolean, found a string (line 8, column 18)"),
            (GOOD.replace("[node]\n", "node = 1\n[nod]\n"), "config key node: expected a table, found an integer (line 2, column 8)"),
            ("[node]\nsubnet = \"10.244.1.0/24\"\n".into(), "config key node.public_ip: missing (line 1, column 1)"),
            ("".into(), "config key node: missing (line 1, column 1)"),
            (
                GOOD.replace("mtu = 1450", "colour = 1"),
                "config key vxlan.colour: unknown key (known keys here: device, vni, port, mac, mtu, direct_routing) (line 11, column 1)",
            ),
            ("'' = 0".to_string(), "config key \"\": unknown key (known keys here: control_socket, node, vxlan, ipip, peer, etcd) (line 1, column 1)"),
            (GOOD.replace("mtu = 1450", "lan = 1"), "config key vxlan.lan: unknown key (known keys here: device, vni, port, mac, mtu, direct_routing) (line 11, column 1)"),
            (format!("{ETCD}[etcd]\n"), "config : invalid table header; duplicate key `etcd` in document root (line 8, column 1)"),
        ];
        for (text, want) in cases {
            assert_eq!(err_of(&text), want, "config:\n{text}");
        }
    }

    #[test]
    fn ipip_errors_name_their_key() {
        let cases = [
            (IPIP.replace("direct_routing = true", "ttl = 0"), "ipip.ttl"),
            (IPIP.replace("direct_routing = true", "ttl = 256"), "ipip.ttl"),
            (IPIP.replace("direct_routing = true", "mtu = 40"), "ipip.mtu"),
            (IPIP.replace("direct_routing = true", "direct_routing = 1"), "direct_routing"),
            (IPIP.replace("device = \"tunl0\"", "device = \"a/b\""), "ipip.device"),
            (IPIP.replace("\"10.244.1.64/26\"", "\"10.244.1.64/26\"\nvtep_mac = \"02:00:00:00:00:02\""), "peer[0].vtep_mac"),
            (IPIP.replace("\"10.244.1.64/26\"", "\"10.244.1.0/25\""), "peer[0].subnet"),
            (format!("{IPIP}[vxlan]\nvni = 2\n"), "vxlan"),
            (GOOD.replace("mtu = 1450", "mtu = 1450\n[ipip]\n"), "ipip"),
            (GOOD.replace("vtep_mac = \"02:00:00:00:00:02\"", ""), "peer[0].vtep_mac"),
        ];
        for (text, key) in cases {
            let e = err_of(&text);
            assert!(e.contains(key), "expected {key} in: {e}");
        }
    }

    #[test]
    fn example_configs_are_valid() {
        for name in ["ipip.toml", "host-gw.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(name);
            if let Err(e) = Config::load(&path) {
                panic!("{}: {e}", path.display());
            }
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

    fn peer_toml(ip: &str, subnet: &str, mac: &str) -> String {
        format!("[[peer]]\npublic_ip = \"{ip}\"\nsubnet = \"{subnet}\"\nvtep_mac = \"{mac}\"\n")
    }

    #[test]
    fn nested_overlap_is_found_whatever_the_file_order() {
        // peer[0] = 10.244.2.0/24 (in GOOD); the /25 sits inside a /23 listed after an unrelated peer.
        let mut text = GOOD.to_string();
        text += &peer_toml("192.0.2.3", "10.244.5.128/25", "02:00:00:00:00:03");
        text += &peer_toml("192.0.2.4", "10.244.3.0/24", "02:00:00:00:00:04");
        text += &peer_toml("192.0.2.5", "10.244.4.0/23", "02:00:00:00:00:05");
        assert!(err_of(&text).contains("peer[3].subnet: 10.244.4.0/23 overlaps peer[1].subnet 10.244.5.128/25"), "{}", err_of(&text));
        let text = GOOD.to_string() + &peer_toml("192.0.2.3", "10.244.2.0/24", "02:00:00:00:00:03");
        assert!(err_of(&text).contains("peer[1].subnet: 10.244.2.0/24 overlaps peer[0].subnet 10.244.2.0/24"), "{}", err_of(&text));
    }

    #[test]
    fn duplicate_mac_and_ip_name_both_peers() {
        let text = GOOD.to_string() + &peer_toml("192.0.2.2", "10.244.3.0/24", "02:00:00:00:00:03");
        assert!(err_of(&text).contains("peer[1].public_ip: 192.0.2.2 is also peer[0].public_ip"), "{}", err_of(&text));
        let text = GOOD.to_string() + &peer_toml("192.0.2.3", "10.244.3.0/24", "02:00:00:00:00:02");
        assert!(err_of(&text).contains("peer[1].vtep_mac: 02:00:00:00:00:02 is also peer[0].vtep_mac"), "{}", err_of(&text));
    }

    #[test]
    fn many_disjoint_peers_are_accepted() {
        // Every underlay address of both documentation ranges, each with a /30 next to the last.
        let mut text = GOOD.to_string();
        let hosts = (3..=254u8).map(|h| format!("192.0.2.{h}")).chain((1..=254u8).map(|h| format!("198.51.100.{h}")));
        for (i, ip) in hosts.enumerate() {
            let subnet = format!("10.244.{}.{}/30", 3 + i / 64, (i % 64) * 4);
            text += &peer_toml(&ip, &subnet, &format!("02:00:00:01:{:02x}:{:02x}", i >> 8, i & 0xff));
        }
        let cfg = Config::parse(&text).map_err(|e| e.to_string()).unwrap();
        assert_eq!(cfg.peers.len(), 1 + 252 + 254);
    }

    const ETCD: &str = r#"
[node]
public_ip = "192.0.2.1"
[etcd]
endpoints = ["http://192.0.2.254:2379"]
[vxlan]
device = "flannel0"
"#;

    #[test]
    fn etcd_mode_defaults() {
        let c = Config::parse(ETCD).unwrap();
        let e = c.etcd.as_ref().unwrap();
        assert_eq!(e.prefix, "/coreos.com/network");
        assert_eq!(e.subnet_file, Path::new("/run/flannel/subnet.env"));
        assert_eq!(e.tls, None);
        assert_eq!(c.node.subnet, Node::UNJOINED);
        assert!(c.peers.is_empty());
        assert_eq!(c.vxlan.device, "flannel0");
        // Stable across restarts: derived from the underlay address, not random.
        assert_eq!(c.vxlan.mac, MacAddr::from_underlay_ip(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn etcd_mode_refuses_what_etcd_owns() {
        let cases = [
            (ETCD.replace("public_ip = \"192.0.2.1\"", "public_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\""), "node.subnet"),
            (ETCD.replace("public_ip = \"192.0.2.1\"", "public_ip = \"192.0.2.1\"\nbackend = \"vxlan\""), "node.backend"),
            (format!("{ETCD}vni = 1\n"), "vxlan.vni"),
            (format!("{ETCD}port = 8472\n"), "vxlan.port"),
            (format!("{ETCD}direct_routing = true\n"), "vxlan.direct_routing"),
            (format!("{ETCD}[ipip]\ndirect_routing = true\n"), "ipip.direct_routing"),
            (format!("{ETCD}[[peer]]\npublic_ip = \"192.0.2.2\"\nsubnet = \"10.244.2.0/24\"\n"), "peer"),
            (ETCD.replace("[\"http://192.0.2.254:2379\"]", "[]"), "etcd.endpoints"),
            (ETCD.replace("\"http://192.0.2.254:2379\"", "\"192.0.2.254:2379\""), "etcd.endpoints[0]"),
            (ETCD.replace("[vxlan]", "prefix = \"coreos.com/network\"\n[vxlan]"), "etcd.prefix"),
            (ETCD.replace("[vxlan]", "ca = \"/nonexistent/ca.pem\"\n[vxlan]"), "etcd.cert"),
            (ETCD.replace("[vxlan]", "ca = \"/nonexistent/ca.pem\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n[vxlan]"), "etcd.ca"),
            (ETCD.replace("[vxlan]", "colour = 1\n[vxlan]"), "colour"),
        ];
        for (text, key) in cases {
            let e = err_of(&text);
            assert!(e.contains(key), "expected {key} in: {e}");
        }
        assert!(err_of("[node]\npublic_ip = \"192.0.2.1\"\n").contains("node.subnet"));
    }

    /// A scratch directory for one test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("vtepd-config-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Loads `path` on another thread, so a regression that blocks fails the test instead of hanging it.
    fn load_within_seconds(path: &Path) -> Result<Config, ConfigError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        // The send fails only if the test gave up waiting; nothing to do then.
        std::thread::spawn(move || {
            let _ = tx.send(Config::load(&path));
        });
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("Config::load blocked")
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = Scratch::new("kinds");
        let fifo = dir.0.join("fifo.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path and nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let cases = [
            (fifo.as_path(), "is a FIFO, not a regular file"),
            (Path::new("/dev/zero"), "is a character device, not a regular file"),
            (dir.0.as_path(), "is a directory, not a regular file"),
        ];
        for (path, want) in cases {
            let e = load_within_seconds(path).unwrap_err().to_string();
            assert_eq!(e, format!("config {} {want}", path.display()));
        }
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let dir = Scratch::new("big");
        let path = dir.0.join("big.toml");
        // Sparse: no disk or memory is spent on it.
        std::fs::File::create(&path).unwrap().set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let e = load_within_seconds(&path).unwrap_err().to_string();
        assert_eq!(e, format!("config {} is larger than 64 MiB, the limit for a config file", path.display()));
        std::fs::write(&path, GOOD).unwrap();
        assert!(load_within_seconds(&path).is_ok());
    }

    #[test]
    fn shipped_etcd_example_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/etcd.toml");
        let c = Config::load(Path::new(path)).unwrap();
        assert_eq!(c.etcd.unwrap().endpoints, ["http://192.0.2.254:2379"]);
    }
}
