//! What the core decided about one packet; the I/O driver carries it out.
use super::DropReason;
use std::net::Ipv4Addr;

/// Verdict on a frame read from the TAP device.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxVerdict {
    /// Send `buf[VXLAN_OFFSET..FRAME_OFFSET + frame_len]` to `dst`; `flow_hash` picks the UDP
    /// source port so ECMP in the underlay keeps a flow on one path (RFC 7348 §5).
    Forward { dst: Ipv4Addr, flow_hash: u32 },
    /// A TCP super-frame (TSO) for `dst`: segment it (see `offload::segment`) and send the pieces.
    Segment { dst: Ipv4Addr, flow_hash: u32 },
    /// An ARP reply was built in place; write `buf[..FRAME_OFFSET + len]` back to the TAP.
    Reply { len: usize },
    Drop(DropReason),
}

/// Verdict on a datagram received from the underlay.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxVerdict {
    /// Write `buf[..FRAME_OFFSET + frame_len]` (vnet header already filled in) to the TAP.
    Deliver { frame_len: usize },
    Drop(DropReason),
}

/// Verdict on an IPv4 packet read from the IPIP TUN device (see [`super::ipip`] for the layout).
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpipTxVerdict {
    /// Send `buf[..len]` (outer header included) to `dst` on the raw socket.
    Forward { dst: Ipv4Addr, len: usize },
    /// The inner packet at `INNER_OFFSET`, `len` bytes, is over the MTU with DF clear: split it into
    /// fragments for `dst` with `ipip::fragment` and send those.
    Fragment { dst: Ipv4Addr, len: usize },
    /// The inner packet at `INNER_OFFSET`, `len` bytes, is a TCP super-packet (TSO on the TUN): cut
    /// it into encapsulated segments for `dst` with `ipip::segment` and send those.
    Segment { dst: Ipv4Addr, len: usize },
    /// An ICMP error was built in place; write `buf[start..start + len]` (vnet header first) to the TUN.
    Reply { start: usize, len: usize },
    Drop(DropReason),
}

/// Verdict on an IPIP packet from the raw socket.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpipRxVerdict {
    /// Write `buf[start..start + len]` (vnet header, then the inner packet) to the TUN.
    Deliver { start: usize, len: usize },
    Drop(DropReason),
}
