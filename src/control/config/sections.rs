//! Each section of the file, from its raw struct to its checked value.
use super::file::{RawConfig, RawEtcd, RawIpip, RawNode, RawPeer, RawVxlan};
use super::values::{mtu_in_range, shown, subnet, unicast_ip, unicast_mac};
use super::{invalid, Backend, Config, ConfigError, Etcd, EtcdTls, Ipip, Node, Peer, Vxlan, DEFAULT_ETCD_PREFIX, DEFAULT_SUBNET_FILE};
use crate::wire::vxlan::{Vni, IANA_PORT};
use crate::wire::MacAddr;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A backend's section in a config for another backend is almost always a mistake (an edited copy
/// of another node's file), so it is refused rather than silently ignored.
pub(super) fn only_for(backend: Backend, owner: Backend, section: &str, present: bool) -> Result<(), ConfigError> {
    if present && backend != owner {
        let problem = format!("section is only used with node.backend = \"{}\" (this node's backend is \"{}\")", owner.name(), backend.name());
        return Err(invalid(section, problem));
    }
    Ok(())
}

pub(super) fn parse_node(raw: &RawNode) -> Result<Node, ConfigError> {
    let backend = match raw.backend.as_deref().unwrap_or("vxlan") {
        "vxlan" => Backend::Vxlan,
        "ipip" => Backend::Ipip,
        "host-gw" => Backend::HostGw,
        other => return Err(invalid("node.backend", format!("{} is not a backend (supported: vxlan, ipip, host-gw)", shown(other)))),
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
pub(super) fn parse_etcd_mode(raw: RawConfig) -> Result<Config, ConfigError> {
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

pub(super) fn parse_control_socket(raw: Option<&str>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(p) = raw else { return Ok(None) };
    file_path("control_socket", p)?;
    // sun_path holds 108 bytes with the terminating NUL.
    if p.len() > 107 {
        return Err(invalid("control_socket", format!("{} is {} bytes long; a Unix socket path holds at most 107", shown(p), p.len())));
    }
    Ok(Some(PathBuf::from(p)))
}

/// A path vtepd will create a file at: not empty, not a directory, no NUL (which no path holds).
fn file_path(key: &str, p: &str) -> Result<(), ConfigError> {
    if p.is_empty() || p.ends_with('/') || p.contains('\0') {
        return Err(invalid(key, format!("{} is not a file path", shown(p))));
    }
    if std::path::Path::new(p).is_dir() {
        return Err(invalid(key, format!("{} is a directory; name a file in it", shown(p))));
    }
    Ok(())
}

/// What etcd-client will make of it (tonic parses endpoints as an `http::Uri`), checked up front.
fn endpoint(key: &str, e: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| invalid(key, format!("{} is not a URL like http://192.0.2.10:2379{why}", shown(e)));
    let uri: http::Uri = e.parse().map_err(|_| bad(""))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad(" (the scheme is http or https)"));
    }
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else { return Err(bad(" (no host)")) };
    // `port_u16` is None for both no port and one beyond u16; after an IPv6 host's ']' a ':' says which.
    let has_port = authority.as_str().rsplit(']').next().is_some_and(|t| t.contains(':'));
    if has_port && authority.port_u16().is_none_or(|p| p == 0) {
        return Err(bad(" (the port is 1 to 65535)"));
    }
    Ok(())
}

pub(super) fn parse_etcd(raw: RawEtcd) -> Result<Etcd, ConfigError> {
    if raw.endpoints.is_empty() {
        return Err(invalid("etcd.endpoints", "needs at least one endpoint like \"http://192.0.2.10:2379\""));
    }
    for (i, e) in raw.endpoints.iter().enumerate() {
        endpoint(&format!("etcd.endpoints[{i}]"), e)?;
    }
    let prefix = raw.prefix.unwrap_or_else(|| DEFAULT_ETCD_PREFIX.into());
    if !prefix.starts_with('/') || prefix.ends_with('/') {
        return Err(invalid("etcd.prefix", format!("{} must start with '/' and not end with one (like {DEFAULT_ETCD_PREFIX})", shown(&prefix))));
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
    // etcd-client refuses TLS options on an http:// endpoint, but only when it connects.
    if let Some(i) = raw.endpoints.iter().position(|e| tls.is_some() && e.starts_with("http://")) {
        return Err(invalid(format!("etcd.endpoints[{i}]"), format!("{} is http:// while etcd.ca, etcd.cert and etcd.key are set: TLS needs https://", shown(&raw.endpoints[i]))));
    }
    let subnet_file = raw.subnet_file.unwrap_or_else(|| DEFAULT_SUBNET_FILE.into());
    file_path("etcd.subnet_file", &subnet_file.to_string_lossy())?;
    Ok(Etcd { endpoints: raw.endpoints, prefix, tls, subnet_file })
}

pub(super) fn parse_vxlan(raw: RawVxlan, public_ip: Ipv4Addr) -> Result<Vxlan, ConfigError> {
    let device = raw.device.unwrap_or_else(|| "vtep0".into());
    crate::io::tap::check_name(&device).map_err(|p| invalid("vxlan.device", format!("{}: {p}", shown(&device))))?;
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

pub(super) fn parse_ipip(raw: RawIpip) -> Result<Ipip, ConfigError> {
    let d = Ipip::default();
    let device = raw.device.unwrap_or(d.device);
    crate::io::tap::check_name(&device).map_err(|p| invalid("ipip.device", format!("{}: {p}", shown(&device))))?;
    let ttl = match raw.ttl {
        None => d.ttl,
        Some(t) => u8::try_from(t).ok().filter(|t| *t != 0).ok_or_else(|| invalid("ipip.ttl", format!("{t} is out of range (1..=255)")))?,
    };
    let mtu = mtu_in_range("ipip.mtu", raw.mtu)?;
    Ok(Ipip { device, mtu, ttl, direct_routing: raw.direct_routing.unwrap_or(d.direct_routing) })
}

pub(super) fn parse_peer(i: usize, raw: &RawPeer, backend: Backend) -> Result<Peer, ConfigError> {
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
