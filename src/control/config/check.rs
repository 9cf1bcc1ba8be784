//! Rules that involve more than one key.
use super::values::overlaps;
use super::{invalid, Backend, Config, ConfigError};
use crate::control::overlay::SubnetIndex;
use crate::wire::MacAddr;
use std::collections::HashMap;
use std::net::Ipv4Addr;

impl Config {
    /// Rules that involve more than one key. Linear in the number of peers (hash maps and one
    /// sort), so a generated file with 100k peers loads in well under a second.
    pub(super) fn check_consistency(&self) -> Result<(), ConfigError> {
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
            if let Some((net, owner)) = index.containing(ip).next() {
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
}
