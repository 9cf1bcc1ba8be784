//! The overlay's peers, reconciled into the tables and the kernel.
//!
//! Whatever the source of truth — the static config, a reloaded config, etcd's lease watch — it
//! hands [`Overlay::set_peers`] the complete list it wants; the overlay works out what changed and
//! touches only that, so flows to unchanged peers are never disturbed.
//!
//! What adding a peer means depends on the backend (FDB and neighbour entries for VXLAN, a route
//! table entry for IPIP, a kernel route only for host-gw); that part is an [`Installer`], kept in
//! `control::backend`. The diff, the bookkeeping and the teardown are shared here.
use super::netlink::{Netlink, NetlinkError, Route, RTPROT_VTEPD};
use crate::table::Tables;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A remote node as the control plane knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

/// Overlay subnets by prefix, to ask which one holds an address. An overlay subnet holding an
/// underlay address is an encapsulation loop: the route to it would carry the tunnel's own packets
/// back into the tunnel (the kernel's VXLAN drops those as a circular route). Both peer sources
/// refuse such a subnet: the config file with exit 2, etcd's lease watch by skipping the lease.
pub struct SubnetIndex<K> {
    by_net: BTreeMap<Ipv4Net, K>,
    /// The prefix lengths present, longest first: one lookup each, however the subnets nest.
    lens: Vec<u8>,
}

impl<K: Copy> SubnetIndex<K> {
    pub fn new(subnets: impl IntoIterator<Item = (Ipv4Net, K)>) -> SubnetIndex<K> {
        let by_net: BTreeMap<Ipv4Net, K> = subnets.into_iter().map(|(n, k)| (n.trunc(), k)).collect();
        let mut lens: Vec<u8> = by_net.keys().map(|n| n.prefix_len()).collect();
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        SubnetIndex { by_net, lens }
    }

    /// Every subnet that contains `ip` (more than one only where subnets nest), most specific
    /// first, and whose each is.
    pub fn containing(&self, ip: Ipv4Addr) -> impl Iterator<Item = (Ipv4Net, K)> + '_ {
        self.lens.iter().filter_map(move |&len| {
            let net = Ipv4Net::new(ip, len).ok()?.trunc();
            self.by_net.get(&net).map(|&k| (net, k))
        })
    }
}

/// How one backend puts peers in place and takes them away again: data-path tables first and
/// kernel state second on the way in (by the time the kernel routes a packet to us, we can forward
/// it), the reverse on the way out. The tables change for a whole batch of peers at once (each
/// snapshot is copied once per change, not once per peer); the kernel's entries one peer at a time.
pub trait Installer: Send {
    /// Publishes the data-path entries of `adding` and withdraws those of `removing`.
    fn update_tables(&mut self, adding: &[RemoteNode], removing: &[RemoteNode]);
    /// The kernel's entries for one peer.
    fn add(&mut self, nl: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError>;
    /// Removes what `add` installed; also the best-effort teardown at exit.
    fn remove(&mut self, nl: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError>;
    /// The route `add` puts in the kernel for the peer: its absence means the kernel lost it.
    fn kernel_route(&self, n: &RemoteNode) -> Route;
    /// The backend's device was recreated with a new index (backends without a device ignore it).
    fn set_device(&mut self, _ifindex: u32) {}
}

/// The installed peers of one backend, in the tables and the kernel.
pub struct Overlay {
    nl: Netlink,
    installer: Box<dyn Installer>,
    tables: Arc<Tables>,
    /// Installed peers, by underlay address.
    installed: BTreeMap<Ipv4Addr, RemoteNode>,
}

impl Overlay {
    /// A VXLAN overlay on device `ifindex`, every peer encapsulated (as flanneld sets up flannel.1).
    pub fn new(nl: Netlink, ifindex: u32, tables: Arc<Tables>) -> Overlay {
        let installer = super::backend::vxlan::VxlanInstaller::new(ifindex, tables.clone(), None);
        Overlay::with_installer(nl, tables, Box::new(installer))
    }

    pub fn with_installer(nl: Netlink, tables: Arc<Tables>, installer: Box<dyn Installer>) -> Overlay {
        Overlay { nl, installer, tables, installed: BTreeMap::new() }
    }

    pub fn netlink(&mut self) -> &mut Netlink {
        &mut self.nl
    }

    /// Puts every installed peer's kernel entries back on a recreated device.
    pub fn reinstall(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        self.installer.set_device(ifindex);
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
        // A set, not a scan per installed peer: with thousands of etcd leases a single lease change
        // would otherwise cost millions of comparisons.
        let wanted: std::collections::HashSet<&RemoteNode> = want.iter().collect();
        let gone: Vec<RemoteNode> = self.installed.values().filter(|old| !wanted.contains(old)).copied().collect();
        self.remove_all(&gone)?;
        let new: Vec<RemoteNode> =
            want.iter().filter(|w| self.installed.get(&w.public_ip) != Some(*w)).copied().collect();
        self.add_all(&new)
    }

    /// Tables once, then the kernel's entries peer by peer; a peer whose kernel entries fail is
    /// withdrawn from the tables again, with every peer after it — except a peer whose subnet
    /// someone else's route already covers, which alone is left out (and logged; retried at the
    /// next change), so one conflicting peer does not keep the others away.
    fn add_all(&mut self, new: &[RemoteNode]) -> Result<(), NetlinkError> {
        self.installer.update_tables(new, &[]);
        for (i, n) in new.iter().enumerate() {
            match self.installer.add(&mut self.nl, n) {
                Ok(()) => {}
                Err(e @ NetlinkError::RouteTaken { .. }) => {
                    self.installer.update_tables(&[], std::slice::from_ref(n));
                    tracing::error!(peer = %n.public_ip, subnet = %n.subnet, error = %e, "peer not installed");
                    continue;
                }
                Err(e) => {
                    self.installer.update_tables(&[], &new[i..]);
                    return Err(e);
                }
            }
            self.installed.insert(n.public_ip, *n);
            tracing::info!(peer = %n.public_ip, subnet = %n.subnet, "peer added");
        }
        Ok(())
    }

    /// The kernel's entries peer by peer, then the tables once for those that are gone.
    fn remove_all(&mut self, gone: &[RemoteNode]) -> Result<(), NetlinkError> {
        let mut result = Ok(());
        let mut done = 0;
        for n in gone {
            if let Err(e) = self.installer.remove(&mut self.nl, n) {
                result = Err(e);
                break;
            }
            self.installed.remove(&n.public_ip);
            tracing::info!(peer = %n.public_ip, subnet = %n.subnet, "peer removed");
            done += 1;
        }
        self.installer.update_tables(&[], &gone[..done]);
        result
    }

    /// Puts back the kernel entries of installed peers whose route has gone — flushed when the
    /// device was set down and up again, or deleted by hand — and returns how many. Cheap enough
    /// for a periodic check: one dump of vtepd's routes.
    pub fn repair(&mut self) -> Result<usize, NetlinkError> {
        let lost = self.lost_routes()?;
        for n in &lost {
            self.installer.add(&mut self.nl, n)?;
            tracing::info!(peer = %n.public_ip, subnet = %n.subnet, "route was gone from the kernel; put back");
        }
        Ok(lost.len())
    }

    /// The installed peers whose route the kernel no longer has (flushed with the device, deleted by
    /// hand, or replaced by someone else's route to the prefix).
    pub fn lost_routes(&mut self) -> Result<Vec<RemoteNode>, NetlinkError> {
        let present: std::collections::HashSet<Route> = self.nl.routes_by_protocol(RTPROT_VTEPD)?.into_iter().collect();
        Ok(self.installed.values().filter(|n| !present.contains(&self.installer.kernel_route(n))).copied().collect())
    }

    /// Removes every peer's entries (best effort, logged). Workers that are still draining may
    /// drop the odd packet for a peer that is gone; that is the point of stopping.
    pub fn uninstall(&mut self) {
        if self.installed.is_empty() {
            return;
        }
        let all: Vec<RemoteNode> = std::mem::take(&mut self.installed).into_values().collect();
        for n in &all {
            if let Err(e) = self.installer.remove(&mut self.nl, n) {
                tracing::warn!(peer = %n.public_ip, error = %crate::error_chain(&e), "peer removal failed");
            }
        }
        self.installer.update_tables(&[], &all);
    }
}

/// However the overlay ends — a clean stop, a start that fails after the peers went in (a thread
/// that cannot be spawned), a panic — its kernel entries go with it: host-gw's and direct routes
/// sit on the underlay and would outlive the process. (SIGKILL runs no drop; the next start sweeps
/// what it left.)
impl Drop for Overlay {
    fn drop(&mut self) {
        self.uninstall();
    }
}

#[cfg(test)]
mod tests {
    use super::SubnetIndex;

    #[test]
    fn subnet_index_finds_every_subnet_holding_an_address_most_specific_first() {
        let net = |s: &str| s.parse().unwrap();
        let index = SubnetIndex::new([(net("10.0.0.0/8"), 1), (net("10.5.0.0/24"), 2), (net("10.6.0.0/31"), 3), (net("0.0.0.0/0"), 4)]);
        let at = |ip: &str| index.containing(ip.parse().unwrap()).map(|(n, k)| (n.to_string(), k)).collect::<Vec<_>>();
        let (n8, n0) = (("10.0.0.0/8".to_string(), 1), ("0.0.0.0/0".to_string(), 4));
        assert_eq!(at("10.5.0.9"), [("10.5.0.0/24".into(), 2), n8.clone(), n0.clone()]);
        // Past the last subnet that starts before it, but inside a wider one that starts earlier.
        assert_eq!(at("10.6.0.2"), [n8.clone(), n0.clone()]);
        assert_eq!(at("10.6.0.1"), [("10.6.0.0/31".into(), 3), n8, n0.clone()]);
        assert_eq!(at("192.0.2.1"), [n0]);
        assert_eq!(SubnetIndex::new([(net("10.244.1.0/24"), ())]).containing("10.244.2.1".parse().unwrap()).next(), None);
    }
}
