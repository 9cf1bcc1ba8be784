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

use std::net::Ipv4Addr;
use std::sync::Arc;

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
    /// Underlay addresses we accept encapsulated traffic from.
    pub peers: SnapshotMap<Ipv4Addr, ()>,
    /// IPIP: overlay prefix → the underlay address of the host that owns it.
    pub routes: RouteTable,
}

impl Tables {
    pub fn new() -> Arc<Tables> {
        Arc::new(Tables::default())
    }

    /// Installs a peer's FDB, neighbour and allow-list entries.
    pub fn add_peer(&self, p: &Peer) {
        self.peers.insert(p.underlay_ip, ());
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
