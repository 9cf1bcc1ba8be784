//! The cluster's subnet leases as this node knows them, kept whole from etcd's watch on
//! `<prefix>/subnets/`, and the peer list derived from them.
//!
//! The map is the source; the peer list is recomputed from it after each batch of events and sent
//! only when it changed, so the supervisor applies one diff per etcd response, not one per key. The
//! async loop that feeds it lives in [`super::session`]; this part is pure and unit-tested.
use super::flannel::{parse_subnet_key, LeaseAttrs};
use crate::control::config::{reserved_overlap, Backend};
use crate::control::overlay::{RemoteNode, SubnetIndex};
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub attrs: LeaseAttrs,
    /// The etcd lease the key is attached to; 0 for a reservation.
    pub lease: i64,
    /// When the key was first written: of two overlapping leases the older one stands.
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// This node, as the other nodes' leases are judged against it.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    pub public_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    /// The network config's `Network`, which every lease should lie in.
    pub network: Ipv4Net,
    pub backend: Backend,
}

/// Every readable lease under the prefix, by subnet.
#[derive(Debug, Default)]
pub struct LeaseMap {
    pub entries: BTreeMap<Ipv4Net, Entry>,
    /// Keys already warned about, so a bad key is logged once, not on every resync.
    warned: BTreeSet<String>,
    /// Leases left out of the last peer list, and why, so each is warned about once.
    skipped: BTreeMap<Ipv4Net, (Ipv4Addr, &'static str)>,
}

impl LeaseMap {
    /// A put under the prefix; `name` is the key after `<prefix>/subnets/`.
    pub fn put(&mut self, name: &str, value: &[u8], lease: i64, create_revision: i64, mod_revision: i64) {
        let Some(subnet) = parse_subnet_key(name) else {
            self.warn_once(name, "key is not a subnet like 10.244.3.0-24; ignoring it".into());
            return;
        };
        match LeaseAttrs::parse(name, value) {
            Ok(attrs) => {
                self.warned.remove(name);
                self.entries.insert(subnet, Entry { attrs, lease, create_revision, mod_revision });
            }
            Err(e) => {
                self.warn_once(name, format!("{e}; ignoring it"));
                self.entries.remove(&subnet);
            }
        }
    }

    pub fn delete(&mut self, name: &str) {
        if let Some(subnet) = parse_subnet_key(name) {
            self.entries.remove(&subnet);
        }
        self.warned.remove(name);
    }

    fn warn_once(&mut self, name: &str, problem: String) {
        if self.warned.insert(name.to_string()) {
            tracing::warn!(key = %name, "subnet lease: {problem}");
        }
    }

    /// The nodes this backend can reach: leases of the same backend type (as flanneld's backends
    /// skip the others), minus this node's own address. Two leases naming one address (a node that
    /// moved subnets, its old key not yet expired) are one node: the newest write wins; so are two
    /// naming one VTEP MAC (a node that changed address): the newest lease wins. A lease the
    /// config file would refuse as a `[[peer]]` is skipped, with a warning when it starts to be:
    /// flanneld installs whatever it reads, but a lease on our own subnet (a hand edit, a twin)
    /// would take our pods' traffic away, and of two overlapping ones only the older is trusted.
    pub fn peers(&mut self, me: &Local) -> Vec<RemoteNode> {
        let mut skipped = BTreeMap::new();
        let mut by_ip: BTreeMap<Ipv4Addr, (&Entry, RemoteNode)> = BTreeMap::new();
        for (subnet, e) in &self.entries {
            let Some(node) = remote_node(me, *subnet, e) else { continue };
            if let Some(why) = refusal(me, &node) {
                skipped.insert(*subnet, (node.public_ip, why));
                continue;
            }
            if by_ip.get(&node.public_ip).is_none_or(|(seen, _)| seen.mod_revision <= e.mod_revision) {
                by_ip.insert(node.public_ip, (e, node));
            }
        }
        let mut by_age: Vec<(&Entry, RemoteNode)> = by_ip.into_values().collect();
        by_age.sort_by_key(|(e, n)| (e.create_revision, n.subnet));
        let by_age = newest_per_mac(by_age.into_iter().map(|(_, n)| n).collect(), &mut skipped);
        let mut peers = disjoint_oldest_first(by_age.into_iter(), &mut skipped);
        let index = SubnetIndex::new(peers.iter().map(|n| (n.subnet, n.public_ip)));
        for ip in std::iter::once(me.public_ip).chain(peers.iter().map(|n| n.public_ip)) {
            // All of them: with the inner one left out, the outer one would route the address.
            for (subnet, peer) in index.containing(ip) {
                skipped.insert(subnet, (peer, "its subnet holds an underlay address: an encapsulation loop"));
            }
        }
        peers.retain(|n| !skipped.contains_key(&n.subnet));
        peers.sort_by_key(|n| n.subnet);
        for (subnet, (peer, why)) in &skipped {
            if !self.skipped.contains_key(subnet) {
                tracing::warn!(subnet = %subnet, peer = %peer, why, "lease skipped");
            }
        }
        self.skipped = skipped;
        peers
    }
}

/// The peer a lease describes for this backend; `None` for our own and other backends' leases.
fn remote_node(me: &Local, subnet: Ipv4Net, e: &Entry) -> Option<RemoteNode> {
    if e.attrs.public_ip == me.public_ip || e.attrs.backend_type != me.backend.name() {
        return None;
    }
    let vtep_mac = match (me.backend, e.attrs.backend_data) {
        (Backend::Vxlan, Some(d)) => d.vtep_mac,
        (Backend::Vxlan, None) => return None,
        // Unused without VXLAN, as for configured peers.
        _ => MacAddr::from_underlay_ip(e.attrs.public_ip),
    };
    Some(RemoteNode { public_ip: e.attrs.public_ip, subnet, vtep_mac })
}

/// Why the config file would refuse this lease as a `[[peer]]`, on its own.
fn refusal(me: &Local, n: &RemoteNode) -> Option<&'static str> {
    if reserved_overlap(&n.public_ip.into()).is_some() {
        Some("its PublicIP is not a unicast host address")
    } else if reserved_overlap(&n.subnet).is_some() {
        Some("its subnet overlaps a reserved range (this network, loopback, multicast)")
    } else if !me.network.contains(&n.subnet) {
        Some("its subnet lies outside the network config's Network")
    } else if me.subnet.contains(&n.subnet.network()) || n.subnet.contains(&me.subnet.network()) {
        Some("its subnet overlaps this node's own: its route would take our pods' traffic")
    } else if me.backend == Backend::Vxlan && !n.vtep_mac.is_unicast() {
        Some("its VtepMAC is not a unicast MAC")
    } else {
        None
    }
}

/// Of nodes (oldest lease first) sharing a VTEP MAC, keeps the newest lease: the FDB maps a MAC to
/// one address, so two such leases cannot both be served, and they are one VXLAN device whose node
/// changed address (its old lease not yet expired) or a cloned one. Serving both let the older win
/// the FDB entry after a restart, and its expiry then removed the entry the newer one needed.
fn newest_per_mac(
    oldest_first: Vec<RemoteNode>,
    skipped: &mut BTreeMap<Ipv4Net, (Ipv4Addr, &'static str)>,
) -> Vec<RemoteNode> {
    let mut macs = std::collections::HashSet::with_capacity(oldest_first.len());
    let mut kept = Vec::with_capacity(oldest_first.len());
    for n in oldest_first.into_iter().rev() {
        if macs.insert(n.vtep_mac) {
            kept.push(n);
        } else {
            skipped.insert(n.subnet, (n.public_ip, "its VtepMAC is also a newer lease's"));
        }
    }
    kept.reverse();
    kept
}

/// Keeps each node whose subnet overlaps none kept before it; the others go to `skipped`. CIDR
/// blocks nest or are disjoint, so a new block overlaps a kept one exactly when the kept block
/// starting at or before it contains its start, or a kept block starts inside it.
fn disjoint_oldest_first(
    nodes: impl Iterator<Item = RemoteNode>,
    skipped: &mut BTreeMap<Ipv4Net, (Ipv4Addr, &'static str)>,
) -> Vec<RemoteNode> {
    let mut kept: BTreeMap<Ipv4Addr, Ipv4Net> = BTreeMap::new();
    let mut peers = Vec::new();
    for n in nodes {
        let (start, end) = (n.subnet.network(), n.subnet.broadcast());
        let covered = kept.range(..=start).next_back().is_some_and(|(_, k)| k.contains(&start));
        if covered || kept.range(start..=end).next().is_some() {
            skipped.insert(n.subnet, (n.public_ip, "its subnet overlaps an older lease's"));
            continue;
        }
        kept.insert(start, n.subnet);
        peers.push(n);
    }
    peers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node 192.0.2.1 with 10.244.1.0/24, in a Network that holds every subnet used below.
    fn me(backend: Backend) -> Local {
        let net = |s: &str| s.parse().unwrap();
        Local { public_ip: Ipv4Addr::new(192, 0, 2, 1), subnet: net("10.244.1.0/24"), network: net("0.0.0.0/0"), backend }
    }

    fn vxlan(ip: &str, mac: &str) -> Vec<u8> {
        format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#).into_bytes()
    }

    #[test]
    fn peers_follow_puts_and_deletes() {
        let mut m = LeaseMap::default();
                m.put("10.244.1.0-24", &vxlan("192.0.2.1", "02:00:00:00:00:01"), 7, 1, 1);
        m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:02"), 7, 2, 2);
        m.put("10.244.3.0-24", br#"{"PublicIP":"192.0.2.3","PublicIPv6":null,"BackendType":"host-gw"}"#, 0, 3, 3);
        m.put("10.244.4.0-24", b"garbage", 7, 4, 4);
        m.put("not-a-subnet", &vxlan("192.0.2.5", "02:00:00:00:00:05"), 7, 5, 5);
        let p = m.peers(&me(Backend::Vxlan));
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].public_ip, p[0].subnet.to_string(), p[0].vtep_mac.to_string()),
            (Ipv4Addr::new(192, 0, 2, 2), "10.244.2.0/24".into(), "02:00:00:00:00:02".into()));
        assert_eq!(m.peers(&me(Backend::HostGw)).len(), 1);
        m.delete("10.244.2.0-24");
        assert!(m.peers(&me(Backend::Vxlan)).is_empty());
        assert_eq!(m.entries.len(), 2);
    }

    #[test]
    fn a_changed_value_replaces_the_old_one_and_newest_wins_per_address() {
        let mut m = LeaseMap::default();
                m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:02"), 7, 2, 2);
        m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:22"), 7, 3, 3);
        assert_eq!(m.peers(&me(Backend::Vxlan))[0].vtep_mac.to_string(), "02:00:00:00:00:22");
        m.put("10.244.9.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:99"), 7, 9, 9);
        let p = m.peers(&me(Backend::Vxlan));
        assert_eq!((p.len(), p[0].subnet.to_string()), (1, "10.244.9.0/24".into()));
        // A bad value for a known key removes it: the node's old state is not trustworthy either.
        m.put("10.244.9.0-24", b"{}", 7, 10, 10);
        assert_eq!(m.peers(&me(Backend::Vxlan))[0].subnet.to_string(), "10.244.2.0/24");
    }

    #[test]
    fn leases_that_would_loop_or_have_no_unicast_mac_are_skipped() {
        let mut m = LeaseMap::default();
                m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:02"), 7, 2, 2);
        m.put("192.0.2.0-25", &vxlan("192.0.2.3", "02:00:00:00:00:03"), 7, 3, 3);
        m.put("198.51.100.0-24", &vxlan("198.51.100.4", "02:00:00:00:00:04"), 7, 4, 4);
        m.put("10.244.5.0-24", &vxlan("192.0.2.5", "01:00:5e:00:00:05"), 7, 5, 5);
        m.put("10.244.6.0-24", &vxlan("192.0.2.6", "00:00:00:00:00:00"), 7, 6, 6);
        let p: Vec<String> = m.peers(&me(Backend::Vxlan)).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/24"]);
    }

    #[test]
    fn a_lease_whose_subnet_holds_another_nodes_address_is_skipped_not_the_other() {
        let mut m = LeaseMap::default();
                m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:02"), 7, 2, 2);
        // Node 6's address is in a /28 nested in a /24 (the younger /28 goes for the overlap alone).
        m.put("198.51.100.0-24", &vxlan("192.0.2.4", "02:00:00:00:00:04"), 7, 4, 4);
        m.put("198.51.100.16-28", &vxlan("192.0.2.5", "02:00:00:00:00:05"), 7, 5, 5);
        m.put("10.244.6.0-24", &vxlan("198.51.100.20", "02:00:00:00:00:06"), 7, 6, 6);
        let p: Vec<String> = m.peers(&me(Backend::Vxlan)).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/24", "10.244.6.0/24"]);
        assert_eq!(m.skipped.len(), 2);
        // Another node's address in a subnet that nests nothing.
        m.put("10.244.3.0-24", &vxlan("192.0.2.3", "02:00:00:00:00:03"), 7, 3, 3);
        m.put("10.244.7.0-24", &vxlan("10.244.3.9", "02:00:00:00:00:07"), 7, 7, 7);
        let p: Vec<String> = m.peers(&me(Backend::Vxlan)).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/24", "10.244.6.0/24", "10.244.7.0/24"]);
        // Gone the address it held, the lease is usable again; the /28 nested in it still is not.
        m.delete("10.244.6.0-24");
        m.delete("10.244.7.0-24");
        let p: Vec<String> = m.peers(&me(Backend::Vxlan)).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/24", "10.244.3.0/24", "198.51.100.0/24"]);
        assert_eq!(m.skipped.len(), 1);
    }

    #[test]
    fn leases_the_config_file_would_refuse_are_skipped() {
        let mut m = LeaseMap::default();
        let me = Local { network: "10.244.0.0/16".parse().unwrap(), ..me(Backend::Vxlan) };
        m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:02"), 7, 2, 2);
        // Inside our own /24: the more specific route would take half of our pods' traffic.
        m.put("10.244.1.128-25", &vxlan("192.0.2.3", "02:00:00:00:00:03"), 7, 3, 3);
        m.put("10.0.0.0-8", &vxlan("192.0.2.4", "02:00:00:00:00:04"), 7, 4, 4);
        m.put("10.245.0.0-24", &vxlan("192.0.2.5", "02:00:00:00:00:05"), 7, 5, 5);
        m.put("10.244.6.0-24", &vxlan("224.0.0.6", "02:00:00:00:00:06"), 7, 6, 6);
        m.put("10.244.7.0-24", &vxlan("0.0.0.0", "02:00:00:00:00:07"), 7, 7, 7);
        let p: Vec<String> = m.peers(&me).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/24"]);
        assert_eq!(m.skipped.len(), 5);
        assert_eq!(m.skipped[&"10.244.1.128/25".parse().unwrap()].1, "its subnet overlaps this node's own: its route would take our pods' traffic");
        // A reserved subnet is refused whatever the Network says.
        let everywhere = Local { network: "0.0.0.0/0".parse().unwrap(), ..me };
        m.put("0.0.0.0-1", &vxlan("192.0.2.8", "02:00:00:00:00:08"), 7, 8, 8);
        let p: Vec<String> = m.peers(&everywhere).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/24", "10.245.0.0/24"]);
        assert_eq!(m.skipped[&"0.0.0.0/1".parse().unwrap()].1, "its subnet overlaps a reserved range (this network, loopback, multicast)");
    }

    #[test]
    fn of_leases_sharing_a_vtep_mac_the_newest_stands() {
        let mut m = LeaseMap::default();
        // Node 2 moved from 192.0.2.2 to 192.0.2.9: a new lease with the same flannel.1 MAC; the
        // old one is rewritten later (a renewal) but was created first.
        m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:02"), 7, 2, 20);
        m.put("10.244.9.0-24", &vxlan("192.0.2.9", "02:00:00:00:00:02"), 7, 9, 9);
        m.put("10.244.3.0-24", &vxlan("192.0.2.3", "02:00:00:00:00:03"), 7, 3, 3);
        let p: Vec<String> = m.peers(&me(Backend::Vxlan)).iter().map(|n| n.public_ip.to_string()).collect();
        assert_eq!(p, ["192.0.2.3", "192.0.2.9"]);
        assert_eq!(m.skipped[&"10.244.2.0/24".parse().unwrap()].1, "its VtepMAC is also a newer lease's");
        // The newer one gone, the older is served again.
        m.delete("10.244.9.0-24");
        let p: Vec<String> = m.peers(&me(Backend::Vxlan)).iter().map(|n| n.public_ip.to_string()).collect();
        assert_eq!(p, ["192.0.2.2", "192.0.2.3"]);
        // Other backends have no VTEP MAC: one is made up from the address, so none collide.
        m.put("10.244.4.0-24", br#"{"PublicIP":"192.0.2.4","PublicIPv6":null,"BackendType":"host-gw"}"#, 0, 4, 4);
        m.put("10.244.5.0-24", br#"{"PublicIP":"192.0.2.5","PublicIPv6":null,"BackendType":"host-gw"}"#, 0, 5, 5);
        assert_eq!(m.peers(&me(Backend::HostGw)).len(), 2);
    }

    #[test]
    fn of_overlapping_leases_the_older_stands_whatever_its_later_writes() {
        let mut m = LeaseMap::default();
        let me = Local { network: "10.244.0.0/16".parse().unwrap(), ..me(Backend::Vxlan) };
        // Node 2's lease, created first and rewritten since (flanneld renews by writing it again).
        m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:02"), 7, 2, 20);
        m.put("10.244.2.0-25", &vxlan("192.0.2.3", "02:00:00:00:00:03"), 7, 3, 3);
        m.put("10.244.0.0-22", &vxlan("192.0.2.4", "02:00:00:00:00:04"), 7, 4, 4);
        m.put("10.244.3.0-24", &vxlan("192.0.2.5", "02:00:00:00:00:05"), 7, 5, 5);
        let p: Vec<String> = m.peers(&me).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/24", "10.244.3.0/24"]);
        assert_eq!(m.skipped[&"10.244.2.0/25".parse().unwrap()].1, "its subnet overlaps an older lease's");
        // The older one gone, the next oldest takes its place.
        m.delete("10.244.2.0-24");
        let p: Vec<String> = m.peers(&me).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/25", "10.244.3.0/24"]);
    }
}
