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
        self.peers.update(|m| {
            m.entry(p.underlay_ip).or_default();
        });
        self.fdb.insert(p.vtep_mac, p.underlay_ip);
        self.neigh.insert(p.vtep_ip, p.vtep_mac);
    }

    /// Removes what `add_peer` installed.
    pub fn remove_peer(&self, p: &Peer) {
        self.neigh.remove(&p.vtep_ip);
        self.fdb.remove(&p.vtep_mac);
        self.peers.remove(&p.underlay_ip);
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
