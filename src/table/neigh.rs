//! Neighbour table: overlay IP → MAC, used to answer ARP for peers' VTEP addresses locally (as the
//! permanent `ip neigh` entries flannel installs would, even if someone flushes them).
use super::SnapshotMap;
use crate::wire::MacAddr;
use std::net::Ipv4Addr;

pub type Neigh = SnapshotMap<Ipv4Addr, MacAddr>;
