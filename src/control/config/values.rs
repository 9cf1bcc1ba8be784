//! One value's rules: addresses, prefixes, MACs and MTUs a host or pod can have.
use super::{invalid, ConfigError};
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// A value from the file (or a control client) as an error echoes it: quoted, at most 40
/// characters, control characters escaped — a runaway value cannot flood the terminal, nor a
/// hostile one drive it (an escape sequence) or split the message over lines.
pub(crate) fn shown(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars().take(40) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push_str(if s.chars().nth(40).is_some() { "…'" } else { "'" });
    out
}

pub(super) fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

pub(super) fn mtu_in_range(key: &str, mtu: Option<i64>) -> Result<Option<u16>, ConfigError> {
    match mtu {
        None => Ok(None),
        Some(m) if (68..=65_000).contains(&m) => Ok(Some(m as u16)),
        Some(m) => Err(invalid(key, format!("{m} is out of range (68..=65000)"))),
    }
}

/// A VTEP MAC is the destination of unicast frames and the source of every frame it sends: the
/// all-zero address is no station's, and a group address (I/G bit, broadcast too) is refused as a
/// source by bridges and the kernel's neighbour table.
pub(super) fn unicast_mac(key: &str, s: &str) -> Result<MacAddr, ConfigError> {
    parse_unicast_mac(s).map_err(|problem| invalid(key, problem))
}

/// The rule behind [`unicast_mac`], which the control API applies too; the problem in words.
pub(crate) fn parse_unicast_mac(s: &str) -> Result<MacAddr, String> {
    // Over the control socket the text comes from anyone.
    let mac: MacAddr = s.parse().map_err(|_| format!("{} is not a MAC address (like 02:00:00:00:00:09)", shown(s)))?;
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
    Err(format!("{mac} is {problem}, not a unicast MAC"))
}

/// IPv4 ranges that no host or pod can use: a route to them would be ignored or would break the
/// host (RFC 6890: "this network", loopback, multicast, and the reserved block with broadcast).
pub(super) const RESERVED: [(Ipv4Net, &str); 4] = [
    (Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8), "0.0.0.0/8 (\"this network\")"),
    (Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8), "127.0.0.0/8 (loopback)"),
    (Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4), "224.0.0.0/4 (multicast)"),
    (Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4), "240.0.0.0/4 (reserved, and broadcast)"),
];

pub(crate) fn reserved_overlap(net: &Ipv4Net) -> Option<&'static str> {
    RESERVED.iter().find(|(r, _)| overlaps(r, net)).map(|(_, name)| *name)
}

pub(super) fn unicast_ip(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    parse_unicast_ip(s).map_err(|problem| invalid(key, problem))
}

/// The rule behind [`unicast_ip`], which the control API applies too; the problem in words.
pub(crate) fn parse_unicast_ip(s: &str) -> Result<Ipv4Addr, String> {
    let ip: Ipv4Addr = s.parse().map_err(|_| format!("{} is not an IPv4 address", shown(s)))?;
    if let Some(range) = reserved_overlap(&Ipv4Net::from(ip)) {
        return Err(format!("{ip} is not a unicast host address (it is in {range})"));
    }
    Ok(ip)
}

pub(super) fn subnet(key: &str, s: &str, max_prefix: u8) -> Result<Ipv4Net, ConfigError> {
    let net: Ipv4Net = s.parse().map_err(|_| invalid(key, format!("{} is not an IPv4 prefix like 10.244.1.0/24", shown(s))))?;
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
