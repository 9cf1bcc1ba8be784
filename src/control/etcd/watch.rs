//! The cluster's subnet leases as this node knows them, kept whole from etcd's watch on
//! `<prefix>/subnets/`, and the peer list derived from them.
//!
//! The map is the source; the peer list is recomputed from it after each batch of events and sent
//! only when it changed, so the supervisor applies one diff per etcd response, not one per key. The
//! async loop that feeds it lives in [`super::session`]; this part is pure and unit-tested.
use super::flannel::{parse_subnet_key, LeaseAttrs};
use crate::control::config::Backend;
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
    pub mod_revision: i64,
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
    pub fn put(&mut self, name: &str, value: &[u8], lease: i64, mod_revision: i64) {
        let Some(subnet) = parse_subnet_key(name) else {
            self.warn_once(name, "key is not a subnet like 10.244.3.0-24; ignoring it".into());
            return;
        };
        match LeaseAttrs::parse(name, value) {
            Ok(attrs) => {
                self.warned.remove(name);
                self.entries.insert(subnet, Entry { attrs, lease, mod_revision });
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
    /// moved subnets, its old key not yet expired) are one node: the newest write wins. A lease the
    /// config file would refuse as a `[[peer]]` is skipped, with a warning when it starts to be.
    pub fn peers(&mut self, own_ip: Ipv4Addr, backend: Backend) -> Vec<RemoteNode> {
        let mut by_ip: BTreeMap<Ipv4Addr, (i64, RemoteNode)> = BTreeMap::new();
        let mut skipped = BTreeMap::new();
        for (subnet, e) in &self.entries {
            if e.attrs.public_ip == own_ip || e.attrs.backend_type != backend.name() {
                continue;
            }
            let vtep_mac = match (backend, e.attrs.backend_data) {
                (Backend::Vxlan, Some(d)) => d.vtep_mac,
                (Backend::Vxlan, None) => continue,
                // Unused without VXLAN, as for configured peers.
                _ => MacAddr::from_underlay_ip(e.attrs.public_ip),
            };
            if backend == Backend::Vxlan && !vtep_mac.is_unicast() {
                skipped.insert(*subnet, (e.attrs.public_ip, "its VtepMAC is not a unicast MAC"));
                continue;
            }
            let node = RemoteNode { public_ip: e.attrs.public_ip, subnet: *subnet, vtep_mac };
            match by_ip.get(&node.public_ip) {
                Some((rev, _)) if *rev > e.mod_revision => {}
                _ => {
                    by_ip.insert(node.public_ip, (e.mod_revision, node));
                }
            }
        }
        let mut peers: Vec<RemoteNode> = by_ip.into_values().map(|(_, n)| n).collect();
        let index = SubnetIndex::new(peers.iter().map(|n| (n.subnet, n.public_ip)));
        for ip in std::iter::once(own_ip).chain(peers.iter().map(|n| n.public_ip)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vxlan(ip: &str, mac: &str) -> Vec<u8> {
        format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#).into_bytes()
    }

    #[test]
    fn peers_follow_puts_and_deletes() {
        let mut m = LeaseMap::default();
        let own = Ipv4Addr::new(192, 0, 2, 1);
        m.put("10.244.1.0-24", &vxlan("192.0.2.1", "02:00:00:00:00:01"), 7, 1);
        m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:02"), 7, 2);
        m.put("10.244.3.0-24", br#"{"PublicIP":"192.0.2.3","PublicIPv6":null,"BackendType":"host-gw"}"#, 0, 3);
        m.put("10.244.4.0-24", b"garbage", 7, 4);
        m.put("not-a-subnet", &vxlan("192.0.2.5", "02:00:00:00:00:05"), 7, 5);
        let p = m.peers(own, Backend::Vxlan);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].public_ip, p[0].subnet.to_string(), p[0].vtep_mac.to_string()),
            (Ipv4Addr::new(192, 0, 2, 2), "10.244.2.0/24".into(), "02:00:00:00:00:02".into()));
        assert_eq!(m.peers(own, Backend::HostGw).len(), 1);
        m.delete("10.244.2.0-24");
        assert!(m.peers(own, Backend::Vxlan).is_empty());
        assert_eq!(m.entries.len(), 2);
    }

    #[test]
    fn a_changed_value_replaces_the_old_one_and_newest_wins_per_address() {
        let mut m = LeaseMap::default();
        let own = Ipv4Addr::new(192, 0, 2, 1);
        m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:02"), 7, 2);
        m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:22"), 7, 3);
        assert_eq!(m.peers(own, Backend::Vxlan)[0].vtep_mac.to_string(), "02:00:00:00:00:22");
        m.put("10.244.9.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:99"), 7, 9);
        let p = m.peers(own, Backend::Vxlan);
        assert_eq!((p.len(), p[0].subnet.to_string()), (1, "10.244.9.0/24".into()));
        // A bad value for a known key removes it: the node's old state is not trustworthy either.
        m.put("10.244.9.0-24", b"{}", 7, 10);
        assert_eq!(m.peers(own, Backend::Vxlan)[0].subnet.to_string(), "10.244.2.0/24");
    }

    #[test]
    fn leases_that_would_loop_or_have_no_unicast_mac_are_skipped() {
        let mut m = LeaseMap::default();
        let own = Ipv4Addr::new(192, 0, 2, 1);
        m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:02"), 7, 2);
        m.put("192.0.2.0-25", &vxlan("192.0.2.3", "02:00:00:00:00:03"), 7, 3);
        m.put("198.51.100.0-24", &vxlan("198.51.100.4", "02:00:00:00:00:04"), 7, 4);
        m.put("10.244.5.0-24", &vxlan("192.0.2.5", "01:00:5e:00:00:05"), 7, 5);
        m.put("10.244.6.0-24", &vxlan("192.0.2.6", "00:00:00:00:00:00"), 7, 6);
        let p: Vec<String> = m.peers(own, Backend::Vxlan).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/24"]);
    }

    #[test]
    fn a_lease_whose_subnet_holds_another_nodes_address_is_skipped_not_the_other() {
        let mut m = LeaseMap::default();
        let own = Ipv4Addr::new(192, 0, 2, 1);
        m.put("10.244.2.0-24", &vxlan("192.0.2.2", "02:00:00:00:00:02"), 7, 2);
        // Node 6's address is in a /28 nested in a /24: both go, or the /24 would still route it.
        m.put("198.51.100.0-24", &vxlan("192.0.2.4", "02:00:00:00:00:04"), 7, 4);
        m.put("198.51.100.16-28", &vxlan("192.0.2.5", "02:00:00:00:00:05"), 7, 5);
        m.put("10.244.6.0-24", &vxlan("198.51.100.20", "02:00:00:00:00:06"), 7, 6);
        let p: Vec<String> = m.peers(own, Backend::Vxlan).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/24", "10.244.6.0/24"]);
        assert_eq!(m.skipped.len(), 2);
        // Another node's address in a subnet that nests nothing.
        m.put("10.244.3.0-24", &vxlan("192.0.2.3", "02:00:00:00:00:03"), 7, 3);
        m.put("10.244.7.0-24", &vxlan("10.244.3.9", "02:00:00:00:00:07"), 7, 7);
        let p: Vec<String> = m.peers(own, Backend::Vxlan).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/24", "10.244.6.0/24", "10.244.7.0/24"]);
        // Gone the address it held, the lease is usable again.
        m.delete("10.244.6.0-24");
        m.delete("10.244.7.0-24");
        let p: Vec<String> = m.peers(own, Backend::Vxlan).iter().map(|n| n.subnet.to_string()).collect();
        assert_eq!(p, ["10.244.2.0/24", "10.244.3.0/24", "198.51.100.0/24", "198.51.100.16/28"]);
        assert!(m.skipped.is_empty());
    }
}
