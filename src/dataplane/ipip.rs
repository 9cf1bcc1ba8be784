//! IP-in-IP (RFC 2003) encapsulation and decapsulation, as Calico's IPIP mode puts it on the wire.
//!
//! ```text
//! +---------------------------+
//! |      Outer IP Header      |   protocol 4, no options, built here
//! +---------------------------+
//! |       IP Header           |   the packet from the TUN device, unchanged
//! |       IP Payload          |
//! +---------------------------+
//! ```
//!
//! Buffer layout, chosen so that neither direction moves the inner packet:
//! ```text
//! 0        8            20
//! |    outer IPv4 (20)   | inner IPv4 packet ...   encapsulated, as sent on the raw socket
//! | spare  | vnet (12)   | inner IPv4 packet ...   as read from the TUN device
//! | outer IPv4 (IHL)     | inner ...               as received (the inner starts at the outer IHL)
//! ```
//! Encapsulation reads the vnet header, then writes the outer header over it; decapsulation writes
//! a vnet header into the last 12 bytes of the outer header, wherever the received IHL puts them.
//!
//! The outer header follows RFC 2003 §3.1: TTL set by the encapsulator (configured, default 64),
//! TOS copied, DF copied from the inner header (a clear DF stays clear so the underlay may
//! fragment), no options. The identification is left 0: the raw socket sends with IP_HDRINCL,
//! and the kernel then picks an ID itself for packets that may be fragmented (and leaves 0 on DF
//! packets, which RFC 6864 allows for atomic datagrams). TOS copied means ECN copied too, RFC
//! 6040's normal mode; on the way out a congestion mark on the outer header is carried over to the
//! inner one ([`super::ecn`]).
use super::encap::complete_checksum;
use super::offload::segment::{self, Outer, Segments};
use super::offload::Framing;
use super::{DropReason, IpipRxVerdict, IpipTxVerdict};
use crate::table::Lpm;
use crate::wire::ipv4::{self, PROTO_ICMP, PROTO_IPIP};
use crate::wire::vnet::{self, VnetHdr};
use crate::wire::{checksum, put_be16};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// Length of the outer header vtepd builds.
pub const OUTER_LEN: usize = ipv4::MIN_HEADER_LEN;
/// Offset of the inner packet in a buffer read from the TUN device.
pub const INNER_OFFSET: usize = OUTER_LEN;
/// Where a TUN read starts, so the vnet header ends right where the inner packet begins.
pub const TUN_OFFSET: usize = INNER_OFFSET - vnet::HEADER_LEN;
/// ICMP errors quote as much of the offending packet as fits in 576 bytes (RFC 1812 §4.3.2.3).
const ICMP_QUOTE_MAX: usize = 576 - ipv4::MIN_HEADER_LEN - 8;
/// TTL of the ICMP errors vtepd originates.
const ICMP_TTL: u8 = 64;
/// Precedence "internetwork control", as Linux marks its own ICMP errors.
const ICMP_TOS: u8 = 0xc0;

/// This end of the tunnel: fixed for the life of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// Outer source address (the node's underlay address).
    pub local: Ipv4Addr,
    /// The node's pod subnet: the only inner destinations accepted from peers.
    pub subnet: Ipv4Net,
    /// Largest inner packet (the TUN device's MTU).
    pub mtu: u16,
    /// Outer TTL.
    pub ttl: u8,
}

/// Decides what to do with the packet at `buf[INNER_OFFSET..INNER_OFFSET + len]`, read from the TUN
/// together with its vnet header at `buf[TUN_OFFSET..INNER_OFFSET]`. On `Forward` the outer header is
/// in `buf[..OUTER_LEN]` and any partial checksum has been completed.
pub fn dispatch_packet(t: &Tunnel, routes: &Lpm<Ipv4Addr>, buf: &mut [u8], len: usize) -> IpipTxVerdict {
    if buf.len() < INNER_OFFSET + len {
        return IpipTxVerdict::Drop(DropReason::TxMalformed);
    }
    let Ok(vnet) = VnetHdr::parse(&buf[TUN_OFFSET..INNER_OFFSET]) else {
        return IpipTxVerdict::Drop(DropReason::TxBadVnetHdr);
    };
    let inner = &buf[INNER_OFFSET..INNER_OFFSET + len];
    if inner.first().map(|b| b >> 4) != Some(4) {
        return IpipTxVerdict::Drop(DropReason::TxNotIpv4);
    }
    let Ok(ip) = ipv4::Packet::new_checked(inner) else {
        return IpipTxVerdict::Drop(DropReason::TxMalformed);
    };
    let Some(remote) = routes.lookup(ip.dst()) else {
        return IpipTxVerdict::Drop(DropReason::TxNoRoute);
    };
    if vnet.is_gso() {
        // A TSO super-packet (offloads on): each segment gets its own outer header and a complete
        // checksum, so there is nothing to check against the MTU before cutting it.
        return IpipTxVerdict::Segment { dst: remote, len: ip.total_len() as usize };
    }
    let outer = ipv4::Repr {
        src: t.local,
        dst: remote,
        protocol: PROTO_IPIP,
        payload_len: ip.total_len(),
        ttl: t.ttl,
        tos: ip.tos(),
        ident: 0,
        dont_frag: ip.dont_frag(),
    };
    let total = outer.payload_len;
    // Before a possible split into fragments: the checksum covers the whole L4 segment.
    if vnet.needs_csum() {
        let inner = &mut buf[INNER_OFFSET..INNER_OFFSET + total as usize];
        if !complete_checksum(inner, vnet.csum_start, vnet.csum_offset) {
            return IpipTxVerdict::Drop(DropReason::TxBadVnetHdr);
        }
    }
    if total > t.mtu {
        return too_big(t, remote, buf, total as usize);
    }
    outer.emit(&mut buf[..OUTER_LEN]);
    IpipTxVerdict::Forward { dst: remote, len: OUTER_LEN + total as usize }
}

/// An inner packet over the tunnel MTU: what a router does. With DF set it answers "fragmentation
/// needed" (RFC 1191) so the sender lowers its path MTU; without DF it fragments (RFC 791).
fn too_big(t: &Tunnel, remote: Ipv4Addr, buf: &mut [u8], total: usize) -> IpipTxVerdict {
    let inner = &buf[INNER_OFFSET..INNER_OFFSET + total];
    let Ok(ip) = ipv4::Packet::new_checked(inner) else {
        return IpipTxVerdict::Drop(DropReason::TxMalformed);
    };
    if !ip.dont_frag() {
        // Options would have to be copied or not per their copy bit; no host sends them, so a
        // packet with options is refused rather than fragmented half-right.
        if ip.header_len() != ipv4::MIN_HEADER_LEN {
            return IpipTxVerdict::Drop(DropReason::TxTooBig);
        }
        return IpipTxVerdict::Fragment { dst: remote, len: total };
    }
    if !may_send_icmp_error(&ip) {
        return IpipTxVerdict::Drop(DropReason::TxTooBig);
    }
    match frag_needed(buf, total, t.mtu) {
        Some(len) => IpipTxVerdict::Reply { start: TUN_OFFSET, len },
        None => IpipTxVerdict::Drop(DropReason::TxTooBig),
    }
}

/// The RFC 2003 outer header of one segment of a super-packet: TOS and DF copied from the
/// segment's own inner header, as [`dispatch_packet`] does for a whole packet.
#[derive(Debug, Clone, Copy)]
pub struct IpipOuter {
    pub local: Ipv4Addr,
    pub remote: Ipv4Addr,
    pub ttl: u8,
}

impl Outer for IpipOuter {
    const LEN: usize = OUTER_LEN;
    /// The outer IPv4 total length field.
    const MAX_PACKET: usize = 65_535;

    fn emit(&self, hdr: &mut [u8], inner_len: usize) {
        let (outer, inner) = hdr.split_at_mut(OUTER_LEN);
        let repr = ipv4::Repr {
            src: self.local,
            dst: self.remote,
            protocol: PROTO_IPIP,
            payload_len: inner_len as u16,
            ttl: self.ttl,
            tos: inner[1],
            ident: 0,
            dont_frag: inner[6] & 0x40 != 0,
        };
        repr.emit(outer);
    }
}

/// Cuts the TCP or UDP super-packet at `buf[INNER_OFFSET..INNER_OFFSET + len]` (its vnet header at
/// `TUN_OFFSET`) into segments of the kernel's gso_size, each behind its outer header for `remote`,
/// back to back in `out` for one sendmmsg. Segments are checked against the tunnel MTU: the kernel
/// sizes them by the TUN's MTU, so a larger one is a malformed header, not a path MTU problem.
pub fn segment(t: &Tunnel, remote: Ipv4Addr, buf: &[u8], len: usize, out: &mut [u8]) -> Result<Segments, DropReason> {
    let (Some(vnet), Some(pkt)) = (buf.get(TUN_OFFSET..INNER_OFFSET), buf.get(INNER_OFFSET..INNER_OFFSET + len)) else {
        return Err(DropReason::TxMalformed);
    };
    let vnet = VnetHdr::parse(vnet).map_err(|_| DropReason::TxBadVnetHdr)?;
    let outer = IpipOuter { local: t.local, remote, ttl: t.ttl };
    let segs = segment::segment(&vnet, pkt, Framing::Ip, &outer, out).map_err(|_| DropReason::TxBadGso)?;
    if segs.range(0).len() - OUTER_LEN > t.mtu as usize {
        return Err(DropReason::TxBadGso);
    }
    Ok(segs)
}

/// Splits `pkt` (an IPv4 packet without options whose DF is clear) into RFC 791 fragments of at
/// most `t.mtu` bytes and encapsulates each for `remote`, back to back in `out`. A packet that is
/// itself a fragment keeps its offset and MF bit. `None` if `out` is too small or the MTU leaves
/// no room for data. The peer decapsulates the fragments one by one and the destination host
/// reassembles them, exactly as if a router on the path had fragmented the packet.
pub fn fragment(t: &Tunnel, remote: Ipv4Addr, pkt: &[u8], out: &mut [u8]) -> Option<Segments> {
    let ip = ipv4::Packet::new_checked(pkt).ok()?;
    let hl = ip.header_len();
    let data = &pkt[hl..ip.total_len() as usize];
    let max = (t.mtu as usize).checked_sub(hl)? / 8 * 8;
    if max == 0 || hl != ipv4::MIN_HEADER_LEN {
        return None;
    }
    // A fragment whose data would end past 65,535 bytes cannot be reassembled, and its offsets
    // would spill into the flag bits: no real sender makes one.
    if ip.frag_offset() as usize * 8 + hl + data.len() > u16::MAX as usize {
        return None;
    }
    let count = data.len().div_ceil(max);
    let last_data = data.len() - (count - 1) * max;
    let frags = Segments { count, seg_len: OUTER_LEN + hl + max, last_len: OUTER_LEN + hl + last_data };
    if out.len() < frags.range(count - 1).end {
        return None;
    }
    let (base_offset, more_after) = (ip.frag_offset(), ip.more_frags());
    for (i, chunk) in data.chunks(max).enumerate() {
        let o = &mut out[frags.range(i)];
        o[OUTER_LEN..OUTER_LEN + hl].copy_from_slice(&pkt[..hl]);
        o[OUTER_LEN + hl..].copy_from_slice(chunk);
        let mf = if i + 1 < count || more_after { FLAG_MF } else { 0 };
        put_be16(o, OUTER_LEN + 6, mf | (base_offset + (i * max / 8) as u16));
        put_be16(o, OUTER_LEN + 2, (hl + chunk.len()) as u16);
        put_be16(o, OUTER_LEN + 10, 0);
        let c = checksum::finish(checksum::sum(&o[OUTER_LEN..OUTER_LEN + hl], 0));
        put_be16(o, OUTER_LEN + 10, c);
        let outer = ipv4::Repr {
            src: t.local,
            dst: remote,
            protocol: PROTO_IPIP,
            payload_len: (hl + chunk.len()) as u16,
            ttl: t.ttl,
            tos: ip.tos(),
            ident: 0,
            dont_frag: false,
        };
        outer.emit(&mut o[..OUTER_LEN]);
    }
    Some(frags)
}

const FLAG_MF: u16 = 0x2000;

/// RFC 1812 §4.3.2.7: no ICMP error about an ICMP error, a non-initial fragment, or a packet whose
/// source does not name one host.
fn may_send_icmp_error(ip: &ipv4::Packet<&[u8]>) -> bool {
    let src = ip.src();
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || src.is_loopback() {
        return false;
    }
    if ip.frag_offset() != 0 {
        return false;
    }
    if ip.protocol() == PROTO_ICMP {
        // Only queries (echo, timestamp, ...) may be answered with an error.
        let icmp_type = ip.payload().first().copied().unwrap_or(255);
        return matches!(icmp_type, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18);
    }
    true
}

/// Rewrites the buffer into an ICMP "fragmentation needed" (type 3 code 4, RFC 1191 §4) for the
/// packet at `buf[INNER_OFFSET..INNER_OFFSET + total]`, ready to write to the TUN from `TUN_OFFSET`;
/// returns its length including the vnet header.
///
/// The error is sourced from the original destination rather than from this node: written into the
/// TUN it arrives as a received packet, and the kernel drops received packets whose source is one
/// of its own addresses (a martian, unless accept_local is set), while the destination routes back
/// through the TUN and passes reverse-path filtering.
fn frag_needed(buf: &mut [u8], total: usize, mtu: u16) -> Option<usize> {
    let quote = total.min(ICMP_QUOTE_MAX);
    let icmp_at = INNER_OFFSET + ipv4::MIN_HEADER_LEN;
    let quote_at = icmp_at + 8;
    if buf.len() < quote_at + quote {
        return None;
    }
    let ip = ipv4::Packet::new_checked(&buf[INNER_OFFSET..INNER_OFFSET + total]).ok()?;
    let (orig_src, orig_dst) = (ip.src(), ip.dst());
    buf.copy_within(INNER_OFFSET..INNER_OFFSET + quote, quote_at);
    let icmp = &mut buf[icmp_at..quote_at + quote];
    icmp[..8].copy_from_slice(&[3, 4, 0, 0, 0, 0, 0, 0]);
    put_be16(icmp, 6, mtu);
    let c = checksum::finish(checksum::sum(icmp, 0));
    put_be16(icmp, 2, c);
    let reply = ipv4::Repr {
        src: orig_dst,
        dst: orig_src,
        protocol: PROTO_ICMP,
        payload_len: (8 + quote) as u16,
        ttl: ICMP_TTL,
        tos: ICMP_TOS,
        ident: 0,
        // At most 576 bytes, so never fragmented: an atomic datagram, ID 0 allowed (RFC 6864).
        dont_frag: true,
    };
    reply.emit(&mut buf[INNER_OFFSET..icmp_at]);
    VnetHdr::default().emit(&mut buf[TUN_OFFSET..INNER_OFFSET]);
    Some(vnet::HEADER_LEN + ipv4::MIN_HEADER_LEN + 8 + quote)
}

/// Decides what to do with the packet at `buf[..len]` received on the raw IPIP socket from `src`
/// (outer header included). On `Deliver` a vnet header has been written in front of the inner packet
/// and the peer is marked as heard from at `now` ([`crate::table::coarse_now`] seconds).
///
/// Checks run cheapest and most hostile first: a stranger's packet is dropped before a header byte
/// is trusted, and every length is checked against the one before it.
pub fn process_packet(t: &Tunnel, peers: &crate::table::PeerSet, src: Ipv4Addr, buf: &mut [u8], len: usize, now: u32) -> IpipRxVerdict {
    let Some(heard) = peers.get(&src) else {
        return IpipRxVerdict::Drop(DropReason::RxUnknownSource);
    };
    let Some(pkt) = buf.get(..len) else {
        return IpipRxVerdict::Drop(DropReason::RxOuterMalformed);
    };
    let Ok(outer) = ipv4::Packet::new_checked(pkt) else {
        return IpipRxVerdict::Drop(DropReason::RxOuterMalformed);
    };
    if outer.protocol() != PROTO_IPIP {
        return IpipRxVerdict::Drop(DropReason::RxNotIpip);
    }
    if outer.is_fragment() {
        return IpipRxVerdict::Drop(DropReason::RxOuterFragment);
    }
    let at = outer.header_len();
    let payload = outer.payload();
    if payload.len() < ipv4::MIN_HEADER_LEN {
        return IpipRxVerdict::Drop(DropReason::RxInnerTruncated);
    }
    let Ok(inner) = ipv4::Packet::new_checked(payload) else {
        return IpipRxVerdict::Drop(DropReason::RxInnerMalformed);
    };
    if !inner.header_checksum_ok() {
        return IpipRxVerdict::Drop(DropReason::RxInnerBadChecksum);
    }
    if !t.subnet.contains(&inner.dst()) {
        return IpipRxVerdict::Drop(DropReason::RxInnerNotOurs);
    }
    let inner_len = inner.total_len() as usize;
    let outer_tos = outer.tos();
    if !super::ecn::egress_ipv4(&mut buf[at..], outer_tos) {
        return IpipRxVerdict::Drop(DropReason::RxEcnNotEct);
    }
    // `at` >= 20 (the view checked IHL), so the vnet header fits in front of the inner packet.
    let start = at - vnet::HEADER_LEN;
    let hint = super::decap::checksum_hint_ip(&buf[at..at + inner_len]);
    hint.emit(&mut buf[start..at]);
    heard.note(now);
    IpipRxVerdict::Deliver { start, len: vnet::HEADER_LEN + inner_len }
}

#[cfg(test)]
mod tests;
