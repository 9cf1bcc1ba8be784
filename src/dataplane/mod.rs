//! The sans-IO forwarding core.
//!
//! Functions here take a buffer (and the table snapshots) and return a verdict; they never make a
//! syscall, read a clock or allocate. The I/O drivers in [`crate::io`] feed them batches and act on
//! the verdicts, so everything here is unit-tested with byte vectors and fuzzed without root.
//!
//! Buffer layout, shared by both directions so no header is ever moved:
//! ```text
//! 0          4              12
//! | slack(4) | VXLAN hdr(8)  | inner Ethernet frame ...        (on the UDP socket side)
//! |     virtio_net_hdr(12)   | inner Ethernet frame ...        (on the TAP side)
//! ```
//! Encapsulation reads the vnet header, then overwrites its tail with the VXLAN header; decapsulation
//! does the reverse. The payload is never copied.
pub mod arp;
pub mod counters;
pub mod decap;
pub mod ecn;
pub mod encap;
pub mod flow;
pub mod ipip;
pub mod offload;
pub mod verdict;

#[cfg(test)]
mod testvec;

pub use counters::{Counters, DropReason, LocalCounters};
pub use verdict::{IpipRxVerdict, IpipTxVerdict, RxVerdict, TxVerdict};

use crate::wire::{vnet, vxlan, MacAddr};
use std::net::Ipv4Addr;

/// Offset of the inner Ethernet frame in every packet buffer.
pub const FRAME_OFFSET: usize = vnet::HEADER_LEN;
/// Offset of the VXLAN header (the start of the UDP payload).
pub const VXLAN_OFFSET: usize = FRAME_OFFSET - vxlan::HEADER_LEN;

/// What this VTEP is: the constants the core needs, fixed for the life of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vtep {
    pub vni: vxlan::Vni,
    pub mac: MacAddr,
    /// The tunnel (overlay) address on the device: the network address of our pod subnet.
    pub ip: Ipv4Addr,
    /// Largest inner IP packet (the device MTU); frames are this plus the Ethernet header.
    pub mtu: u16,
}
