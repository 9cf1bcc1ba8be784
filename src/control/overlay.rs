//! The overlay's peers, reconciled into the tables and the kernel.
//!
//! Whatever the source of truth — the static config, a reloaded config, etcd's lease watch — it
//! hands [`Overlay::set_peers`] the complete list it wants; the overlay works out what changed and
//! touches only that, so flows to unchanged peers are never disturbed.
use super::netlink::{Netlink, NetlinkError, Route};
use crate::table::{Peer, Tables};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A remote node as the control plane knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteNode {
    pub public_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub vtep_mac: crate::wire::MacAddr,
}

impl RemoteNode {
    /// The tunnel address flannel gives a node: the network address of its subnet.
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.subnet.network()
    }

    fn peer(&self) -> Peer {
        Peer { underlay_ip: self.public_ip, vtep_mac: self.vtep_mac, vtep_ip: self.subnet.network() }
    }

    fn route(&self, ifindex: u32) -> Route {
        Route {
            dst: self.subnet.network(),
            prefix_len: self.subnet.prefix_len(),
            gateway: Some(self.subnet.network()),
            ifindex,
            onlink: true,
        }
    }
}

/// The VXLAN device's peers: FDB + neighbour + allow-list entries in the tables, and the
/// `ip neigh` / `ip route` entries in the kernel, as flanneld installs them for flannel.1.
pub struct Overlay {
    nl: Netlink,
    ifindex: u32,
    tables: Arc<Tables>,
    /// Installed peers, by underlay address.
    installed: BTreeMap<Ipv4Addr, RemoteNode>,
}

impl Overlay {
    pub fn new(nl: Netlink, ifindex: u32, tables: Arc<Tables>) -> Overlay {
        Overlay { nl, ifindex, tables, installed: BTreeMap::new() }
    }

    pub fn netlink(&mut self) -> &mut Netlink {
        &mut self.nl
    }

    /// Puts every installed peer's kernel entries back on a recreated device.
    pub fn reinstall(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        self.ifindex = ifindex;
        let peers: Vec<RemoteNode> = std::mem::take(&mut self.installed).into_values().collect();
        self.set_peers(&peers)
    }

    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    pub fn peers(&self) -> impl Iterator<Item = &RemoteNode> {
        self.installed.values()
    }

    /// Makes the installed peers exactly `want`. Stops at the first kernel error; what was
    /// applied before it stays applied and recorded, so a retry continues from there.
    pub fn set_peers(&mut self, want: &[RemoteNode]) -> Result<(), NetlinkError> {
        let gone: Vec<RemoteNode> =
            self.installed.values().filter(|old| !want.iter().any(|w| w == *old)).copied().collect();
        for old in gone {
            self.remove(&old)?;
        }
        for w in want {
            if self.installed.get(&w.public_ip) != Some(w) {
                self.add(w)?;
            }
        }
        Ok(())
    }

    fn add(&mut self, n: &RemoteNode) -> Result<(), NetlinkError> {
        // Tables first: by the time the kernel routes a packet to the device, we can forward it.
        self.tables.add_peer(&n.peer());
        self.nl.add_neigh(self.ifindex, n.subnet.network(), n.vtep_mac.0)?;
        self.nl.add_route(&n.route(self.ifindex))?;
        self.installed.insert(n.public_ip, *n);
        tracing::info!(peer = %n.public_ip, subnet = %n.subnet, mac = %n.vtep_mac, "peer added");
        Ok(())
    }

    fn remove(&mut self, n: &RemoteNode) -> Result<(), NetlinkError> {
        // Kernel first: stop routing to the peer before the tables forget it.
        self.nl.del_route(&n.route(self.ifindex))?;
        self.nl.del_neigh(self.ifindex, n.subnet.network())?;
        self.tables.remove_peer(&n.peer());
        self.installed.remove(&n.public_ip);
        tracing::info!(peer = %n.public_ip, subnet = %n.subnet, "peer removed");
        Ok(())
    }

    /// Removes every peer's kernel entries (best effort, logged); the tables are left for the
    /// workers that are still draining.
    pub fn uninstall(&mut self) {
        for n in self.installed.values() {
            if let Err(e) = self.nl.del_route(&n.route(self.ifindex)) {
                tracing::warn!(error = %crate::error_chain(&e), "route removal failed");
            }
            if let Err(e) = self.nl.del_neigh(self.ifindex, n.subnet.network()) {
                tracing::warn!(error = %crate::error_chain(&e), "neighbour removal failed");
            }
        }
        self.installed.clear();
    }
}
