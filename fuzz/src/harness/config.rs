//! `config`: arbitrary text through `Config::parse`.
//!
//! Input: the bytes, if they are UTF-8 (anything else cannot come out of `read_to_string`).
//!
//! Checked: no panic; an error names what is wrong (a key for `Invalid`); an accepted config obeys
//! every rule the daemon relies on (unicast addresses, host bits clear, prefixes of /30 or shorter,
//! no two subnets overlapping, distinct peer addresses and MACs, none equal to our own, a usable
//! device name, port and MTU); and writing it back out as TOML and parsing that gives the same
//! config.
use ipnet::Ipv4Net;
use vtepd::control::config::{Config, ConfigError};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let cfg = match Config::parse(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if let ConfigError::Invalid { key, problem } = &e {
                assert!(!key.is_empty() && !problem.is_empty(), "{e}");
            }
            return;
        }
    };
    check(&cfg);
    let again = Config::parse(&emit(&cfg)).unwrap_or_else(|e| panic!("re-parsing {cfg:?}: {e}\n{}", emit(&cfg)));
    assert_eq!(again, cfg, "round trip through TOML");
}

fn unicast(ip: std::net::Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
}

fn good_net(n: &Ipv4Net) -> bool {
    n.prefix_len() <= 30 && n.trunc() == *n
}

fn overlap(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    // Independent of vtepd's `overlaps`: compare as address ranges.
    let (a0, a1) = (u32::from(a.network()), u32::from(a.broadcast()));
    let (b0, b1) = (u32::from(b.network()), u32::from(b.broadcast()));
    a0 <= b1 && b0 <= a1
}

fn check(c: &Config) {
    assert!(unicast(c.node.public_ip), "node.public_ip {}", c.node.public_ip);
    assert!(good_net(&c.node.subnet), "node.subnet {}", c.node.subnet);
    let dev = &c.vxlan.device;
    assert!(!dev.is_empty() && dev.len() < 16 && dev != "." && dev != "..", "device {dev:?}");
    assert!(!dev.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace()), "device {dev:?}");
    assert!(c.vxlan.vni.get() < 1 << 24);
    assert_ne!(c.vxlan.port, 0);
    assert!(!c.vxlan.mac.is_multicast());
    if let Some(m) = c.vxlan.mtu {
        assert!((68..=65_000).contains(&m), "mtu {m}");
    }
    for (i, p) in c.peers.iter().enumerate() {
        assert!(unicast(p.public_ip), "peer[{i}].public_ip");
        assert!(good_net(&p.subnet), "peer[{i}].subnet");
        assert!(!p.vtep_mac.is_multicast(), "peer[{i}].vtep_mac");
        assert_ne!(p.public_ip, c.node.public_ip, "peer[{i}] is this node");
        assert_ne!(p.vtep_mac, c.vxlan.mac, "peer[{i}] has our MAC");
        assert!(!overlap(&p.subnet, &c.node.subnet), "peer[{i}].subnet {} overlaps node.subnet {}", p.subnet, c.node.subnet);
        assert_eq!(p.vtep_ip(), p.subnet.network());
        for (j, q) in c.peers.iter().enumerate().take(i) {
            assert_ne!(p.public_ip, q.public_ip, "peer[{i}] and peer[{j}] share an address");
            assert_ne!(p.vtep_mac, q.vtep_mac, "peer[{i}] and peer[{j}] share a MAC");
            assert!(!overlap(&p.subnet, &q.subnet), "peer[{i}] and peer[{j}] subnets overlap");
        }
    }
}

/// `c` as a config file (every key explicit).
fn emit(c: &Config) -> String {
    let s = |v: &dyn std::fmt::Display| toml_string(&v.to_string());
    // A top-level key goes before the first table.
    let mut t = c.control_socket.as_ref().map_or(String::new(), |p| format!("control_socket = {}\n", toml_string(&p.to_string_lossy())));
    t += &format!("[node]\npublic_ip = {}\nsubnet = {}\nbackend = \"vxlan\"\n", s(&c.node.public_ip), s(&c.node.subnet));
    t += &format!(
        "[vxlan]\ndevice = {}\nvni = {}\nport = {}\nmac = {}\n",
        toml_string(&c.vxlan.device),
        c.vxlan.vni,
        c.vxlan.port,
        s(&c.vxlan.mac)
    );
    if let Some(m) = c.vxlan.mtu {
        t += &format!("mtu = {m}\n");
    }
    for p in &c.peers {
        t += &format!("[[peer]]\npublic_ip = {}\nsubnet = {}\nvtep_mac = {}\n", s(&p.public_ip), s(&p.subnet), s(&p.vtep_mac));
    }
    t
}

/// A TOML basic string, every non-printable or non-ASCII character escaped.
fn toml_string(v: &str) -> String {
    let mut out = String::from("\"");
    for ch in v.chars() {
        match ch {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            ' '..='~' => out.push(ch),
            c => out += &format!("\\U{:08X}", c as u32),
        }
    }
    out.push('"');
    out
}
