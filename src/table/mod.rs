//! Forwarding tables: FDB (VTEP MAC → underlay IP), neighbours (overlay IP → MAC), the peer
//! allow-list, and (for IPIP) routes.
//!
//! Readers on the data path never lock: each worker loads the current immutable snapshot once per
//! batch (`arc_swap` is lock-free on load) and looks entries up in it. Writers — the control plane
//! only — build a new snapshot and publish it atomically, so a reader sees either the old table or the
//! new one, never a half-applied change. Writes are rare (peer churn), reads are per packet; this is
//! the trade Oxide's opte makes, and it is why dashmap's sharded read locks are not used here.
pub mod fdb;
pub mod neigh;
pub mod route;
pub mod snapshot;

pub use fdb::Fdb;
pub use neigh::Neigh;
pub use route::{Lpm, RouteTable};
pub use snapshot::SnapshotMap;

use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A remote VTEP: where its frames go, what MAC answers for its tunnel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: crate::wire::MacAddr,
    /// The tunnel address (network address of the peer's pod subnet), as flannel uses it.
    pub vtep_ip: Ipv4Addr,
}

/// Everything the data path reads, shared between workers and the control plane.
#[derive(Debug, Default)]
pub struct Tables {
    pub fdb: Fdb,
    pub neigh: Neigh,
    /// Underlay addresses we accept encapsulated traffic from, each with when it was last heard.
    pub peers: SnapshotMap<Ipv4Addr, LastHeard>,
    /// IPIP: overlay prefix → the underlay address of the host that owns it.
    pub routes: RouteTable,
}

impl Tables {
    pub fn new() -> Arc<Tables> {
        Arc::new(Tables::default())
    }

    /// Installs a peer's FDB, neighbour and allow-list entries.
    pub fn add_peer(&self, p: &Peer) {
        self.add_peers(std::slice::from_ref(p));
    }

    /// Removes what `add_peer` installed.
    pub fn remove_peer(&self, p: &Peer) {
        self.remove_peers(std::slice::from_ref(p));
    }

    /// `add_peer` for many peers, copying each table once rather than once per peer (which made
    /// 10,000 etcd leases take 20 s to install). The allow-list goes first and the FDB last, so a
    /// reader never finds an FDB entry whose replies it would refuse.
    pub fn add_peers(&self, ps: &[Peer]) {
        if ps.is_empty() {
            return;
        }
        self.peers.update(|m| {
            for p in ps {
                m.entry(p.underlay_ip).or_default();
            }
        });
        self.neigh.update(|m| m.extend(ps.iter().map(|p| (p.vtep_ip, p.vtep_mac))));
        self.fdb.update(|m| m.extend(ps.iter().map(|p| (p.vtep_mac, p.underlay_ip))));
    }

    /// Removes what `add_peers` installed, in the reverse order. An entry that another peer (or
    /// an operator) has since pointed elsewhere is not ours to remove: two etcd leases can carry
    /// one VTEP MAC (a node whose address changed, its old lease not yet expired), and the kernel
    /// likewise refuses `fdb del MAC dst A` once the entry says B.
    pub fn remove_peers(&self, ps: &[Peer]) {
        if ps.is_empty() {
            return;
        }
        self.fdb.update(|m| ps.iter().for_each(|p| remove_if(m, &p.vtep_mac, &p.underlay_ip)));
        self.neigh.update(|m| ps.iter().for_each(|p| remove_if(m, &p.vtep_ip, &p.vtep_mac)));
        self.peers.update(|m| ps.iter().for_each(|p| _ = m.remove(&p.underlay_ip)));
    }
}

impl Tables {
    /// Accepts encapsulated traffic from these underlay addresses without any FDB, neighbour or
    /// route entry towards them: peers that cross-subnet mode routes directly but that may still
    /// tunnel to us (their view of the link differs from ours, or they have not moved yet).
    pub fn allow_sources(&self, ips: &[Ipv4Addr]) {
        if !ips.is_empty() {
            self.peers.update(|m| ips.iter().for_each(|ip| _ = m.entry(*ip).or_default()));
        }
    }

    /// Withdraws what `allow_sources` allowed.
    pub fn forget_sources(&self, ips: &[Ipv4Addr]) {
        if !ips.is_empty() {
            self.peers.update(|m| ips.iter().for_each(|ip| _ = m.remove(ip)));
        }
    }
}

fn remove_if<K: std::hash::Hash + Eq, V: PartialEq>(m: &mut FxHashMap<K, V>, k: &K, v: &V) {
    if m.get(k) == Some(v) {
        m.remove(k);
    }
}

/// The peer allow-list as the data path reads it.
pub type PeerSet = FxHashMap<Ipv4Addr, LastHeard>;

/// When a peer was last heard from, in [`coarse_now`] seconds (0: never), for `vtepd peers`.
///
/// Shared by every snapshot of the allow-list (a table update clones the handle, not the time), and
/// written by the receive path only when the second has changed: a peer sending a million packets a
/// second costs one store per second per worker, not a cache line bounced between cores per packet.
#[derive(Debug, Clone, Default)]
pub struct LastHeard(Arc<AtomicU32>);

impl LastHeard {
    #[inline]
    pub fn note(&self, now: u32) {
        if self.0.load(Relaxed) != now {
            self.0.store(now, Relaxed);
        }
    }

    /// `None` if nothing valid has arrived from the peer since it was installed.
    pub fn get(&self) -> Option<u32> {
        Some(self.0.load(Relaxed)).filter(|s| *s != 0)
    }
}

/// Whole seconds since the first call, plus one (so 0 can mean "never"); one clock read, called by
/// workers once per batch and by the control API to turn a [`LastHeard`] into an age.
pub fn coarse_now() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    let secs = START.get_or_init(Instant::now).elapsed().as_secs();
    u32::try_from(secs).unwrap_or(u32::MAX - 1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;

    fn peer(i: u8) -> Peer {
        Peer { underlay_ip: Ipv4Addr::new(192, 0, 2, i), vtep_mac: MacAddr([2, 0, 0, 0, 0, i]), vtep_ip: Ipv4Addr::new(10, 244, i, 0) }
    }

    #[test]
    fn batch_and_single_updates_agree_and_keep_last_heard() {
        let (one, many) = (Tables::default(), Tables::default());
        let ps: Vec<Peer> = (2..40).map(peer).collect();
        ps.iter().for_each(|p| one.add_peer(p));
        many.add_peers(&ps);
        assert_eq!(one.fdb.entries(), many.fdb.entries());
        assert_eq!(one.neigh.entries(), many.neigh.entries());
        assert_eq!(many.peers.len(), ps.len());
        // Re-adding a present peer must not reset when it was last heard from.
        many.peers.load()[&peer(2).underlay_ip].note(7);
        many.add_peers(&ps[..1]);
        assert_eq!(many.peers.load()[&peer(2).underlay_ip].get(), Some(7));
        many.remove_peers(&ps[1..]);
        one.remove_peer(&ps[0]);
        assert_eq!(many.fdb.entries(), vec![(ps[0].vtep_mac, ps[0].underlay_ip)]);
        assert_eq!(many.neigh.len(), 1);
        assert_eq!(many.peers.len(), 1);
        assert_eq!(one.fdb.len(), ps.len() - 1);
    }

    #[test]
    fn removing_a_peer_keeps_entries_another_peer_now_owns() {
        let t = Tables::default();
        let a = peer(10);
        // B took over A's VTEP MAC (same node, new address) while A's lease lingered.
        let b = Peer { underlay_ip: Ipv4Addr::new(192, 0, 2, 11), ..peer(11) };
        let b = Peer { vtep_mac: a.vtep_mac, ..b };
        t.add_peers(&[a, b]);
        t.remove_peer(&a);
        assert_eq!(t.fdb.load().get(&a.vtep_mac), Some(&b.underlay_ip), "B's FDB entry went with A");
        assert_eq!(t.neigh.load().get(&b.vtep_ip), Some(&b.vtep_mac));
        assert_eq!(t.neigh.load().get(&a.vtep_ip), None);
        assert!(!t.peers.load().contains_key(&a.underlay_ip));
        t.remove_peer(&b);
        assert_eq!(t.fdb.len(), 0);
        assert_eq!(t.neigh.len(), 0);
    }
}
