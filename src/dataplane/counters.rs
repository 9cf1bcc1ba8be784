//! Packet counters and the named reasons a packet is dropped.
//!
//! Workers count into a plain [`LocalCounters`] while they process a batch and add it to the shared,
//! cache-line-aligned [`Counters`] once per batch: no atomic per packet, no shared line bounced between
//! cores per packet.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why a packet was dropped; each has its own counter, named `drop_<name>`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum DropReason { $(#[doc = $doc] $variant,)* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// The public counter name, `drop_<name>`.
            pub fn counter_name(self) -> &'static str {
                match self { $(DropReason::$variant => concat!("drop_", $name),)* }
            }
        }
    };
}

drop_reasons! {
    RxTruncated => "rx_truncated", "UDP payload shorter than a VXLAN header (8 bytes), or empty.";
    RxNoIFlag => "rx_no_i_flag", "VXLAN flags without the I (valid VNI) bit.";
    RxReservedBits => "rx_reserved_bits", "VXLAN reserved bits set (an extension we do not speak).";
    RxWrongVni => "rx_wrong_vni", "VNI other than ours.";
    RxUnknownSource => "rx_unknown_source", "Sender is not a configured peer.";
    RxInnerRunt => "rx_inner_runt", "Inner frame too short to be Ethernet.";
    RxNotForUs => "rx_not_for_us", "Inner destination MAC is neither ours nor broadcast/multicast.";
    RxOwnSourceMac => "rx_own_source_mac", "Inner source MAC is this VTEP's own: a looped frame (the kernel's VXLAN drops these too).";
    RxTapWrite => "rx_tap_write", "The TAP (or, for IPIP, TUN) device refused the frame.";
    TxRunt => "tx_runt", "Frame from the TAP shorter than an Ethernet header.";
    TxUnknownDstMac => "tx_unknown_dst_mac", "No FDB entry for the destination MAC (flooding is not implemented).";
    TxFlood => "tx_flood", "Broadcast or multicast frame other than ARP (no BUM replication yet).";
    TxArpUnknown => "tx_arp_unknown", "ARP request for an address with no neighbour entry.";
    TxArpOther => "tx_arp_other", "ARP that is not an Ethernet/IPv4 request.";
    TxTooBig => "tx_too_big", "Frame larger than the device MTU allows.";
    TxBadVnetHdr => "tx_bad_vnet_hdr", "virtio-net header from the TAP that does not fit the frame.";
    TxBadGso => "tx_bad_gso", "TCP or UDP super-frame from the TAP that cannot be segmented.";
    RxBadGso => "rx_bad_gso", "A whole UDP_SEGMENT packet received in one datagram that cannot be cut into datagrams for a device without USO.";
    TxSendError => "tx_send_error", "The underlay socket refused the datagram.";
    RxOuterMalformed => "rx_outer_malformed", "IPIP: outer IPv4 header with a bad version, IHL or total length.";
    RxOuterFragment => "rx_outer_fragment", "IPIP: outer packet is a fragment (the kernel reassembles before raw delivery, so this is defence in depth).";
    RxNotIpip => "rx_not_ipip", "IPIP: outer protocol is not 4 (IP-in-IP).";
    RxInnerTruncated => "rx_inner_truncated", "IPIP: outer payload shorter than an IPv4 header.";
    RxInnerMalformed => "rx_inner_malformed", "IPIP: inner IPv4 header with a bad version, IHL or total length.";
    RxInnerBadChecksum => "rx_inner_bad_checksum", "IPIP: inner IPv4 header checksum is wrong.";
    RxInnerNotOurs => "rx_inner_not_ours", "IPIP: inner destination is outside this node's subnet.";
    RxEcnNotEct => "rx_ecn_not_ect", "Outer header marked congestion experienced over an inner packet that is not ECN-capable (RFC 6040 drops it).";
    TxNotIpv4 => "tx_not_ipv4", "IPIP: packet from the TUN device is not IPv4 (IPv6 is not tunnelled).";
    TxMalformed => "tx_malformed", "IPIP: IPv4 header from the TUN device with a bad IHL or total length.";
    TxNoRoute => "tx_no_route", "IPIP: no route for the inner destination.";
    TxFragNeeded => "tx_frag_needed", "IPIP: inner packet over the MTU with DF set; ICMP fragmentation-needed sent back.";
}

/// Per-worker tallies for one batch.
#[derive(Debug, Default, Clone)]
pub struct LocalCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub arp_replies: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl LocalCounters {
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }

    /// `n` packets dropped for the same reason (the unsent rest of a batch).
    #[inline]
    pub fn drop_n(&mut self, r: DropReason, n: usize) {
        self.drops[r as usize] += n as u64;
    }

    /// `packets` packets of `bytes` bytes in all went out to the underlay.
    #[inline]
    pub fn sent(&mut self, packets: usize, bytes: usize) {
        self.tx_packets += packets as u64;
        self.tx_bytes += bytes as u64;
    }
}

/// Shared counters of one worker; read by anyone, written by that worker only.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Counters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    arp_replies: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
}

impl Counters {
    /// Adds a batch's tallies and clears them.
    pub fn flush(&self, l: &mut LocalCounters) {
        add(&self.rx_packets, l.rx_packets);
        add(&self.rx_bytes, l.rx_bytes);
        add(&self.tx_packets, l.tx_packets);
        add(&self.tx_bytes, l.tx_bytes);
        add(&self.arp_replies, l.arp_replies);
        for (c, v) in self.drops.iter().zip(l.drops.iter()) {
            add(c, *v);
        }
        *l = LocalCounters::default();
    }

    /// Packets this worker delivered and sent: (rx, tx).
    pub fn packets(&self) -> (u64, u64) {
        (self.rx_packets.load(Relaxed), self.tx_packets.load(Relaxed))
    }

    /// Every counter with its public name, in a fixed order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("rx_packets", self.rx_packets.load(Relaxed)),
            ("rx_bytes", self.rx_bytes.load(Relaxed)),
            ("tx_packets", self.tx_packets.load(Relaxed)),
            ("tx_bytes", self.tx_bytes.load(Relaxed)),
            ("arp_replies", self.arp_replies.load(Relaxed)),
        ];
        v.extend(DropReason::ALL.iter().zip(self.drops.iter()).map(|(r, c)| (r.counter_name(), c.load(Relaxed))));
        v
    }
}

/// Sums the counters of all workers.
pub fn total(all: &[std::sync::Arc<Counters>]) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = Counters::default().snapshot();
    for c in all {
        for (slot, (_, v)) in out.iter_mut().zip(c.snapshot()) {
            slot.1 += v;
        }
    }
    out
}

#[inline]
fn add(c: &AtomicU64, v: u64) {
    if v != 0 {
        c.fetch_add(v, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_names_match_reasons() {
        for r in DropReason::ALL {
            assert_eq!(DropReason::ALL[*r as usize], *r, "ALL is in declaration order");
            assert_eq!(r.counter_name(), format!("drop_{}", r.name()));
        }
    }

    #[test]
    fn flush_adds_and_clears() {
        let c = Counters::default();
        let mut l = LocalCounters { rx_packets: 3, ..Default::default() };
        l.drop(DropReason::RxWrongVni);
        l.drop(DropReason::RxWrongVni);
        c.flush(&mut l);
        c.flush(&mut l);
        let s: std::collections::HashMap<_, _> = c.snapshot().into_iter().collect();
        assert_eq!(s["rx_packets"], 3);
        assert_eq!(s["drop_rx_wrong_vni"], 2);
        assert_eq!(l.rx_packets, 0);
    }
}
