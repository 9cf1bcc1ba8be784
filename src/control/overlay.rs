//! The overlay's peers, reconciled into the tables and the kernel.
//!
//! Whatever the source of truth — the static config, a reloaded config, etcd's lease watch — it
//! hands [`Overlay::set_peers`] the complete list it wants; the overlay works out what changed and
//! touches only that, so flows to unchanged peers are never disturbed.
//!
//! What adding a peer means depends on the backend (FDB and neighbour entries for VXLAN, a route
//! table entry for IPIP, a kernel route only for host-gw); that part is an [`Installer`], kept in
//! `control::backend`. The diff, the bookkeeping and the teardown are shared here.
use super::backend::DirectRoutes;
use super::claims::Claims;
use super::netlink::{Netlink, NetlinkError, Route, RTPROT_VTEPD};
use crate::table::Tables;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, HashMap};
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
    /// The index of the device the entries are on (`None`: the backend has none).
    fn device(&self) -> Option<u32> {
        None
    }
    /// The plain routes through the underlay (host-gw's, cross-subnet mode's on-link peers'),
    /// whose view of the underlay [`Overlay::follow_underlay`] keeps current; `None`: none.
    fn direct_routes(&mut self) -> Option<&mut DirectRoutes> {
        None
    }
    /// Whether every peer gets a plain route (host-gw), not only the on-link ones.
    fn routes_every_peer(&self) -> bool {
        false
    }
}

/// The peers of one backend: those the source of truth wants, and those installed in the tables
/// and the kernel. The two differ while a peer cannot be installed (someone else's route covers its
/// subnet, a host-gw lease behind a router, a kernel error); such a peer is retried at every change
/// and every route check, and the others are installed regardless.
pub struct Overlay {
    nl: Netlink,
    installer: Box<dyn Installer>,
    tables: Arc<Tables>,
    /// What the source of truth last asked for, by underlay address.
    wanted: BTreeMap<Ipv4Addr, RemoteNode>,
    /// Installed peers, by underlay address.
    installed: BTreeMap<Ipv4Addr, RemoteNode>,
    /// Why each peer that could not be installed or removed failed last: said once, not at every
    /// retry.
    failing: BTreeMap<Ipv4Addr, String>,
    /// Where the underlay routes of `wanted` and `installed` are recorded for other instances'
    /// sweeps (`None`: nowhere, as where /run is not writable).
    claims: Option<Claims>,
}

impl Overlay {
    /// A VXLAN overlay on device `ifindex`, every peer encapsulated (as flanneld sets up flannel.1).
    pub fn new(nl: Netlink, ifindex: u32, tables: Arc<Tables>) -> Overlay {
        let installer = super::backend::vxlan::VxlanInstaller::new(ifindex, tables.clone(), None);
        Overlay::with_installer(nl, tables, Box::new(installer))
    }

    pub fn with_installer(nl: Netlink, tables: Arc<Tables>, installer: Box<dyn Installer>) -> Overlay {
        Overlay { nl, installer, tables, wanted: BTreeMap::new(), installed: BTreeMap::new(), failing: BTreeMap::new(), claims: None }
    }

    /// Records the underlay routes in `claims` from now on.
    pub fn with_claims(mut self, claims: Option<Claims>) -> Overlay {
        self.claims = claims;
        self
    }

    pub fn netlink(&mut self) -> &mut Netlink {
        &mut self.nl
    }

    /// Puts every wanted peer's kernel entries back on a recreated device (the old device took
    /// them with it). A peer that fails is logged and left to [`Self::repair`], as at any change:
    /// one peer's error must not cost the others their device.
    pub fn reinstall(&mut self, ifindex: u32) {
        self.installer.set_device(ifindex);
        // The wanted peers all go in again. Those still installed but no longer wanted (their
        // removal failed) stay for `reconcile` to remove: the old device took their neighbour and
        // route, not their table entries or a direct route on the underlay.
        let wanted = &self.wanted;
        self.installed.retain(|ip, n| wanted.get(ip) != Some(n));
        let _ = self.reconcile();
    }

    /// The index of the backend's device as last set up, if it has one.
    pub fn device_index(&self) -> Option<u32> {
        self.installer.device()
    }

    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    pub fn peers(&self) -> impl Iterator<Item = &RemoteNode> {
        self.installed.values()
    }

    /// The wanted peers that are not installed (as wanted), with why the last attempt failed.
    pub fn not_installed(&self) -> impl Iterator<Item = (&RemoteNode, &str)> {
        let pending = self.wanted.values().filter(|w| self.installed.get(&w.public_ip) != Some(*w));
        pending.map(|w| (w, self.failing.get(&w.public_ip).map_or("not tried yet", String::as_str)))
    }

    /// Makes the installed peers `want`, as far as the kernel lets it: every peer is tried, and
    /// one that fails is retried by [`Self::repair`]. Returns the first failure, other than a
    /// peer whose subnet someone else's route already covers (that one is only logged).
    pub fn set_peers(&mut self, want: &[RemoteNode]) -> Result<(), NetlinkError> {
        self.wanted = want.iter().map(|n| (n.public_ip, *n)).collect();
        self.failing.retain(|ip, _| self.wanted.contains_key(ip) || self.installed.contains_key(ip));
        self.reconcile().1
    }

    /// Removes the installed peers that are no longer wanted (or wanted with other values), then
    /// adds the wanted ones that are not installed. Returns how many were added and the first
    /// failure that was not [`NetlinkError::RouteTaken`].
    fn reconcile(&mut self) -> (usize, Result<(), NetlinkError>) {
        // Lookups in maps, not scans: with thousands of etcd leases a single lease change would
        // otherwise cost millions of comparisons.
        let gone: Vec<RemoteNode> =
            self.installed.values().filter(|old| self.wanted.get(&old.public_ip) != Some(*old)).copied().collect();
        let removed = self.remove_all(&gone);
        // A changed peer whose old entries could not be removed stays as it was until they can.
        let new: Vec<RemoteNode> =
            self.wanted.values().filter(|w| !self.installed.contains_key(&w.public_ip)).copied().collect();
        if !gone.is_empty() || !new.is_empty() {
            // Before the routes go in: another instance starting meanwhile must not take a new
            // route for a dead run's.
            self.record_claims();
        }
        let (added, result) = self.add_all(&new);
        (added, removed.and(result))
    }

    /// Tables once, then the kernel's entries peer by peer; a peer whose kernel entries fail is
    /// withdrawn from the tables again and left for the next attempt.
    fn add_all(&mut self, new: &[RemoteNode]) -> (usize, Result<(), NetlinkError>) {
        self.installer.update_tables(new, &[]);
        let (mut added, mut result) = (0, Ok(()));
        for n in new {
            if let Err(e) = self.installer.add(&mut self.nl, n) {
                self.installer.update_tables(&[], std::slice::from_ref(n));
                self.note_failure(n, "peer not installed; retrying every few seconds", &e);
                if !matches!(e, NetlinkError::RouteTaken { .. }) && result.is_ok() {
                    result = Err(e);
                }
                continue;
            }
            self.failing.remove(&n.public_ip);
            self.installed.insert(n.public_ip, *n);
            added += 1;
            tracing::info!(peer = %n.public_ip, subnet = %n.subnet, "peer added");
        }
        (added, result)
    }

    /// The kernel's entries peer by peer, then the tables once for those that are gone. A peer
    /// whose entries cannot be removed stays installed (and in the tables), to be tried again.
    fn remove_all(&mut self, gone: &[RemoteNode]) -> Result<(), NetlinkError> {
        let mut result = Ok(());
        let mut removed = Vec::with_capacity(gone.len());
        // How many installed peers want each kernel route: a subnet whose lease moved to another
        // address has one route (and, for VXLAN, one neighbour entry) for both peers, and once
        // the new peer is in they are its own. Counted once, not scanned per peer (etcd leases).
        let mut holders: HashMap<Route, usize> = HashMap::new();
        if !gone.is_empty() {
            for o in self.installed.values() {
                *holders.entry(self.installer.kernel_route(o)).or_default() += 1;
            }
        }
        for n in gone {
            let route = self.installer.kernel_route(n);
            let taken_over = holders.get(&route).is_some_and(|&c| c > 1);
            if taken_over {
                tracing::debug!(peer = %n.public_ip, subnet = %n.subnet, "kernel entries now another peer's; left in place");
            } else if let Err(e) = self.installer.remove(&mut self.nl, n) {
                self.note_failure(n, "peer not removed; retrying every few seconds", &e);
                if result.is_ok() {
                    result = Err(e);
                }
                continue;
            }
            self.failing.remove(&n.public_ip);
            self.installed.remove(&n.public_ip);
            holders.entry(route).and_modify(|c| *c -= 1);
            removed.push(*n);
            tracing::info!(peer = %n.public_ip, subnet = %n.subnet, "peer removed");
        }
        self.installer.update_tables(&[], &removed);
        result
    }

    fn record_claims(&mut self) {
        if let Some(claims) = &mut self.claims {
            let peers = self.installed.values().chain(self.wanted.values());
            claims.record(peers.map(|n| self.installer.kernel_route(n)));
        }
    }

    /// Logs a peer's failure when it is new or differs from the last one; a retry that fails the
    /// same way says nothing more.
    fn note_failure(&mut self, n: &RemoteNode, what: &str, e: &NetlinkError) {
        let error = crate::error_chain(e);
        if self.failing.get(&n.public_ip) != Some(&error) {
            tracing::error!(peer = %n.public_ip, subnet = %n.subnet, error = %error, "{what}");
            self.failing.insert(n.public_ip, error);
        }
    }

    /// Puts back the kernel entries of installed peers whose route has gone — flushed when the
    /// device was set down and up again, or deleted by hand — and retries the peers that could not
    /// be installed or removed before. Returns how many peers went in. Cheap enough for a periodic
    /// check: one dump of vtepd's routes. A peer that still fails is logged (once) and left out;
    /// only a failed dump is an error.
    pub fn repair(&mut self) -> Result<usize, NetlinkError> {
        // A lost peer that is no longer wanted is one whose removal failed: the retry below
        // finishes it.
        for n in self.lost_routes()?.into_iter().filter(|n| self.wanted.get(&n.public_ip) == Some(n)) {
            self.installed.remove(&n.public_ip);
            tracing::info!(peer = %n.public_ip, subnet = %n.subnet, "route was gone from the kernel; putting it back");
        }
        Ok(self.reconcile().0)
    }

    /// Follows the underlay the plain routes go through (host-gw's, cross-subnet mode's): when
    /// the address moved to another interface (a bridge or bond made anew) or the interface's
    /// subnets changed, each peer whose entries that changes — a plain route on the old interface,
    /// a cross-subnet peer that changes class — goes out as it went in and back in as the new
    /// underlay asks. Returns how many peers moved.
    pub fn follow_underlay(&mut self) -> usize {
        let every_peer = self.installer.routes_every_peer();
        let Some(direct) = self.installer.direct_routes() else { return 0 };
        let Some(now) = direct.underlay.changed(&mut self.nl) else { return 0 };
        let moving: Vec<RemoteNode> = self.installed.values().filter(|n| direct.moves(n, &now, every_peer)).copied().collect();
        let subnets = now.subnets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
        if let Err(e) = self.remove_all(&moving) {
            // The old view stays, so what is installed and how it was installed still agree: the
            // peers taken out go back in as they were, and the move is tried at the next check.
            tracing::warn!(error = %crate::error_chain(&e), device = %now.name, %subnets, "underlay changed, but a peer's entries could not be removed; keeping the old view for now");
        } else {
            tracing::info!(device = %now.name, index = now.ifindex, %subnets, peers = moving.len(), "underlay changed; moving the peers whose entries it changes");
            if let Some(claims) = &mut self.claims {
                claims.set_underlay(now.ifindex);
            }
            if let Some(direct) = self.installer.direct_routes() {
                direct.underlay = now;
            }
        }
        let _ = self.reconcile();
        moving.len()
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
        self.wanted.clear();
        let all: Vec<RemoteNode> = std::mem::take(&mut self.installed).into_values().collect();
        for n in &all {
            if let Err(e) = self.installer.remove(&mut self.nl, n) {
                tracing::warn!(peer = %n.public_ip, error = %crate::error_chain(&e), "peer removal failed");
            }
        }
        if !all.is_empty() {
            self.installer.update_tables(&[], &all);
        }
        // A route whose removal failed is left unclaimed: the lock goes with the process anyway,
        // and any instance's next start sweeps it.
        self.claims = None;
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
    use super::*;
    use crate::control::netlink::Op;
    use std::sync::Mutex;

    /// Kernel routes kept in a map; removing the peers named in `refuse` fails. With `claims`, each
    /// add notes whether the overlay's claim file in that directory already held the route.
    struct FakeKernel {
        routes: Arc<Mutex<BTreeMap<Ipv4Net, Ipv4Addr>>>,
        refuse: Arc<Mutex<Vec<Ipv4Addr>>>,
        claims: Option<(std::path::PathBuf, Arc<Mutex<Vec<bool>>>)>,
    }

    fn route(n: &RemoteNode) -> Route {
        Route { dst: n.subnet.network(), prefix_len: n.subnet.prefix_len(), gateway: None, ifindex: 9, onlink: false }
    }

    impl Installer for FakeKernel {
        fn update_tables(&mut self, _: &[RemoteNode], _: &[RemoteNode]) {}
        fn add(&mut self, _: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError> {
            if let Some((dir, seen)) = &self.claims {
                let held = crate::control::claims::held_by_others(dir, "observer");
                seen.lock().unwrap().push(held.contains_key(&route(n)));
            }
            self.routes.lock().unwrap().insert(n.subnet, n.public_ip);
            Ok(())
        }
        fn remove(&mut self, _: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError> {
            if self.refuse.lock().unwrap().contains(&n.public_ip) {
                return Err(NetlinkError::Invalid { op: Op::DelRoute(route(n)), reason: "refused by the test" });
            }
            self.routes.lock().unwrap().remove(&n.subnet);
            Ok(())
        }
        fn kernel_route(&self, n: &RemoteNode) -> Route {
            route(n)
        }
    }

    #[test]
    fn a_late_removal_leaves_the_route_a_moved_subnet_now_has() {
        let (routes, refuse) = (Arc::default(), Arc::default());
        let fake = FakeKernel { routes: Arc::clone(&routes), refuse: Arc::clone(&refuse), claims: None };
        let Ok(nl) = Netlink::open() else { return eprintln!("no netlink socket here; skipped") };
        let mut o = Overlay::with_installer(nl, Tables::new(), Box::new(fake));
        let node = |ip: [u8; 4]| RemoteNode { public_ip: ip.into(), subnet: "10.244.2.0/24".parse().unwrap(), vtep_mac: crate::wire::MacAddr([2, 0, 0, 0, 0, ip[3]]) };
        let (old, new) = (node([192, 0, 2, 2]), node([192, 0, 2, 9]));
        assert!(o.set_peers(&[old]).is_ok());
        // The lease moves to another address while the old peer's removal fails: the new one goes
        // in regardless, replacing the route.
        refuse.lock().unwrap().push(old.public_ip);
        assert!(o.set_peers(&[new]).is_err());
        assert_eq!(routes.lock().unwrap()[&new.subnet], new.public_ip);
        // The retried removal must not take the route with it.
        refuse.lock().unwrap().clear();
        assert!(o.set_peers(&[new]).is_ok());
        assert_eq!(routes.lock().unwrap().get(&new.subnet), Some(&new.public_ip));
        assert_eq!(o.peers().copied().collect::<Vec<_>>(), [new]);
    }

    /// Another instance starting between a route going in and its claim being written would sweep
    /// a live instance's route as a dead run's: the claim comes first.
    #[test]
    fn a_route_is_claimed_before_it_goes_in_and_the_claims_go_with_the_overlay() {
        let dir = std::env::temp_dir().join(format!("vtepd-overlay-claims-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fake = FakeKernel { routes: Arc::default(), refuse: Arc::default(), claims: Some((dir.clone(), Arc::clone(&seen))) };
        let Ok(nl) = Netlink::open() else { return eprintln!("no netlink socket here; skipped") };
        let claims = crate::control::claims::Claims::open(&dir, "vtep0", 9).unwrap();
        let mut o = Overlay::with_installer(nl, Tables::new(), Box::new(fake)).with_claims(Some(claims));
        let node = |i: u8| RemoteNode { public_ip: [192, 0, 2, i].into(), subnet: Ipv4Net::new([10, 244, i, 0].into(), 24).unwrap(), vtep_mac: crate::wire::MacAddr([2, 0, 0, 0, 0, i]) };
        assert!(o.set_peers(&[node(2)]).is_ok());
        assert!(o.set_peers(&[node(2), node(3)]).is_ok());
        assert_eq!(*seen.lock().unwrap(), [true, true], "a route went in before its claim");
        // A peer gone is a claim gone.
        assert!(o.set_peers(&[node(3)]).is_ok());
        let held = crate::control::claims::held_by_others(&dir, "observer");
        assert_eq!(held.keys().copied().collect::<Vec<_>>(), [route(&node(3))]);
        drop(o);
        assert!(crate::control::claims::held_by_others(&dir, "observer").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

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
