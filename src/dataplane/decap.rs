//! Underlay → TAP: validation and VXLAN decapsulation in place.
//!
//! Checks run cheapest and most-hostile first: a datagram from a stranger is dropped before a single
//! header byte is trusted.
use super::{DropReason, RxVerdict, Vtep, FRAME_OFFSET, VXLAN_OFFSET};
use crate::wire::ethernet::{self, Frame, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ipv4::{self, PROTO_TCP, PROTO_UDP};
use crate::wire::vnet::{VnetHdr, F_NEEDS_CSUM};
use crate::wire::vxlan::{self, HeaderFault};
use crate::wire::{be16, checksum};
use crate::table::PeerSet;
use std::net::Ipv4Addr;

/// Decides what to do with the UDP payload at `buf[VXLAN_OFFSET..VXLAN_OFFSET + len]` sent by `src`.
/// On `Deliver` the virtio-net header has been written over the VXLAN header.
pub fn process_datagram(
    vtep: &Vtep,
    peers: &PeerSet,
    src: Ipv4Addr,
    buf: &mut [u8],
    len: usize,
    now: u32,
) -> RxVerdict {
    let Some(dgram) = buf.get(VXLAN_OFFSET..VXLAN_OFFSET + len) else {
        return RxVerdict::Drop(DropReason::RxTruncated);
    };
    if let Err(r) = validate(vtep, peers, src, dgram, now) {
        return RxVerdict::Drop(r);
    }
    let frame_len = len - vxlan::HEADER_LEN;
    let vnet = checksum_hint(&buf[FRAME_OFFSET..FRAME_OFFSET + frame_len]);
    vnet.emit(&mut buf[..FRAME_OFFSET]);
    RxVerdict::Deliver { frame_len }
}

/// Checks one VXLAN datagram (UDP payload) from `src`; on success the inner frame is `dgram[8..]`
/// and the peer is marked as heard from at `now` ([`crate::table::coarse_now`] seconds).
pub fn validate(vtep: &Vtep, peers: &PeerSet, src: Ipv4Addr, dgram: &[u8], now: u32) -> Result<(), DropReason> {
    let Some(heard) = peers.get(&src) else {
        return Err(DropReason::RxUnknownSource);
    };
    let hdr = vxlan::Packet::new_checked(dgram).map_err(|_| DropReason::RxTruncated)?;
    match hdr.fault() {
        Some(HeaderFault::NoIFlag) => return Err(DropReason::RxNoIFlag),
        Some(HeaderFault::ReservedBits) => return Err(DropReason::RxReservedBits),
        None => {}
    }
    if hdr.vni() != vtep.vni.get() {
        return Err(DropReason::RxWrongVni);
    }
    let eth = Frame::new_checked(hdr.payload()).map_err(|_| DropReason::RxInnerRunt)?;
    let dst = eth.dst();
    if dst != vtep.mac && !dst.is_multicast() {
        return Err(DropReason::RxNotForUs);
    }
    if eth.src() == vtep.mac {
        // Our own frame come back (a peer reflecting it, or a forged one): delivering it would
        // show the TAP's stack a second host with its own MAC.
        return Err(DropReason::RxOwnSourceMac);
    }
    heard.note(now);
    Ok(())
}

/// RFC 6040 at egress for the inner Ethernet frame of a datagram whose outer header carried TOS
/// `outer_tos` ([`super::ecn`]): a congestion mark is copied into an inner IPv4 or IPv6 header,
/// and a frame it cannot be copied into (the sender did not ask for ECN) is dropped. Other frames
/// (ARP) have no ECN field and pass. An unmarked outer header, the usual case, costs one test.
pub fn apply_ecn(frame: &mut [u8], outer_tos: u8) -> Result<(), DropReason> {
    use super::ecn;
    if outer_tos & ecn::MASK == ecn::NOT_ECT || frame.len() < ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN {
        return Ok(());
    }
    let (ethertype, ip) = (be16(frame, 12), &mut frame[ethernet::HEADER_LEN..]);
    let kept = match (ethertype, ip[0] >> 4) {
        (ETHERTYPE_IPV4, 4) => ecn::egress_ipv4(ip, outer_tos),
        (ETHERTYPE_IPV6, 6) => ecn::egress_ipv6(ip, outer_tos),
        _ => true,
    };
    if kept { Ok(()) } else { Err(DropReason::RxEcnNotEct) }
}

/// Whether a UDP_GRO receive buffer `buf` (reported as datagrams of some smaller size) is really
/// one VXLAN datagram: a kernel peer on a veth underlay sends an inner UDP_SEGMENT super-packet
/// whole, and the socket then reports the inner segment size. Told apart by the inner IP length:
/// it spans the whole buffer, where in a train of datagrams it ends within the first.
pub fn is_one_datagram(buf: &[u8]) -> bool {
    let inner = vxlan::HEADER_LEN + ethernet::HEADER_LEN;
    let ip_len = match (buf.get(inner - 2..inner).map(|t| be16(t, 0)), buf.get(inner..inner + 6)) {
        (Some(ETHERTYPE_IPV4), Some(ip)) if ip[0] >> 4 == 4 => be16(ip, 2) as usize,
        (Some(ETHERTYPE_IPV6), Some(ip)) if ip[0] >> 4 == 6 => 40 + be16(ip, 4) as usize,
        _ => return false,
    };
    inner + ip_len == buf.len()
}

/// The virtio-net header to write with an inner frame.
///
/// A kernel VXLAN peer on a veth underlay sends inner TCP/UDP with the checksum still partial (only
/// the pseudo-header sum, the skb's CHECKSUM_PARTIAL state having travelled with it); the TAP would
/// hand that to the stack as a corrupt segment. When the field holds exactly the pseudo-header sum,
/// tell the kernel the checksum is still to be done (NEEDS_CSUM), which is the state the sender was
/// in. Anything else is passed on untouched, so a genuinely wrong checksum is still dropped by the
/// receiving stack. (A correct full checksum equal to the pseudo-header sum would require the data
/// to sum to zero: the payload would be all zeros or all ones; then completing it is still right.)
pub fn checksum_hint(frame: &[u8]) -> VnetHdr {
    if frame.len() < ethernet::HEADER_LEN || be16(frame, 12) != ETHERTYPE_IPV4 {
        return VnetHdr::default();
    }
    partial_checksum_hint(frame, ethernet::HEADER_LEN)
}

/// [`checksum_hint`] for an IPv4 packet as a TUN device takes it: IPIP's inner packet, which a
/// kernel IPIP peer on a veth underlay sends with the same partial checksum.
pub fn checksum_hint_ip(packet: &[u8]) -> VnetHdr {
    partial_checksum_hint(packet, 0)
}

/// NEEDS_CSUM for the TCP or UDP checksum of the IPv4 packet at `l3` if it holds exactly the
/// pseudo-header sum; no flags otherwise.
fn partial_checksum_hint(buf: &[u8], l3: usize) -> VnetHdr {
    let none = VnetHdr::default();
    let Ok(ip) = ipv4::Packet::new_checked(&buf[l3..]) else { return none };
    let csum_offset = match ip.protocol() {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return none,
    };
    let l4 = ip.payload();
    if ip.is_fragment() || l4.len() < csum_offset + 2 {
        return none;
    }
    let field = be16(l4, csum_offset);
    let pseudo = checksum::fold(checksum::pseudo_header_v4(ip.src(), ip.dst(), ip.protocol(), l4.len() as u16));
    if field != pseudo || (ip.protocol() == PROTO_UDP && field == 0) {
        return none;
    }
    VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: (l3 + ip.header_len()) as u16,
        csum_offset: csum_offset as u16,
        ..VnetHdr::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::testvec;
    use crate::table::LastHeard;

    const GOOD: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 1, 0];

    fn peers() -> PeerSet {
        let mut p = PeerSet::default();
        p.insert(testvec::PEER_IP, LastHeard::default());
        p
    }

    fn run(hdr: [u8; 8], frame: &[u8], src: Ipv4Addr) -> (RxVerdict, Vec<u8>) {
        let (mut buf, len) = testvec::datagram_buffer(hdr, frame);
        let v = process_datagram(&testvec::vtep(), &peers(), src, &mut buf, len, 1);
        (v, buf)
    }

    #[test]
    fn decapsulates_byte_exact() {
        let frame = testvec::icmp_frame(testvec::OUR_MAC, testvec::PEER_MAC);
        let (v, buf) = run(GOOD, &frame, testvec::PEER_IP);
        assert_eq!(v, RxVerdict::Deliver { frame_len: frame.len() });
        assert_eq!(&buf[..FRAME_OFFSET], &[0u8; 12], "no offload flags for ICMP");
        assert_eq!(&buf[FRAME_OFFSET..FRAME_OFFSET + frame.len()], &frame[..]);
    }

    #[test]
    fn every_fault_has_its_reason() {
        let frame = testvec::icmp_frame(testvec::OUR_MAC, testvec::PEER_MAC);
        let cases: [([u8; 8], &[u8], Ipv4Addr, DropReason); 8] = [
            (GOOD, &frame, Ipv4Addr::new(192, 0, 2, 99), DropReason::RxUnknownSource),
            ([0x00, 0, 0, 0, 0, 0, 1, 0], &frame, testvec::PEER_IP, DropReason::RxNoIFlag),
            ([0x0c, 0, 0, 0, 0, 0, 1, 0], &frame, testvec::PEER_IP, DropReason::RxReservedBits),
            ([0x08, 0, 1, 0, 0, 0, 1, 0], &frame, testvec::PEER_IP, DropReason::RxReservedBits),
            ([0x08, 0, 0, 0, 0, 0, 2, 0], &frame, testvec::PEER_IP, DropReason::RxWrongVni),
            (GOOD, &frame[..13], testvec::PEER_IP, DropReason::RxInnerRunt),
            (GOOD, &testvec::icmp_frame(testvec::PEER_MAC, testvec::PEER_MAC), testvec::PEER_IP, DropReason::RxNotForUs),
            (GOOD, &testvec::icmp_frame(testvec::OUR_MAC, testvec::OUR_MAC), testvec::PEER_IP, DropReason::RxOwnSourceMac),
        ];
        for (hdr, f, src, want) in cases {
            assert_eq!(run(hdr, f, src).0, RxVerdict::Drop(want), "{want:?}");
        }
        let (mut buf, _) = testvec::datagram_buffer(GOOD, &frame);
        let v = process_datagram(&testvec::vtep(), &peers(), testvec::PEER_IP, &mut buf, 4, 1);
        assert_eq!(v, RxVerdict::Drop(DropReason::RxTruncated));
    }

    #[test]
    fn only_a_valid_datagram_marks_the_peer_heard() {
        let p = peers();
        let heard = |p: &PeerSet| p[&testvec::PEER_IP].get();
        let frame = testvec::icmp_frame(testvec::OUR_MAC, testvec::PEER_MAC);
        let (mut buf, len) = testvec::datagram_buffer([0x08, 0, 0, 0, 0, 0, 2, 0], &frame);
        let _ = process_datagram(&testvec::vtep(), &p, testvec::PEER_IP, &mut buf, len, 7);
        assert_eq!(heard(&p), None, "a wrong-VNI datagram is not the peer speaking VXLAN to us");
        let (mut buf, len) = testvec::datagram_buffer(GOOD, &frame);
        let _ = process_datagram(&testvec::vtep(), &p, testvec::PEER_IP, &mut buf, len, 7);
        assert_eq!(heard(&p), Some(7));
        let (mut buf, len) = testvec::datagram_buffer(GOOD, &frame);
        let _ = process_datagram(&testvec::vtep(), &p, testvec::PEER_IP, &mut buf, len, 9);
        assert_eq!(heard(&p), Some(9));
    }

    #[test]
    fn multicast_inner_is_delivered() {
        let frame = testvec::icmp_frame(crate::wire::MacAddr::BROADCAST, testvec::PEER_MAC);
        assert!(matches!(run(GOOD, &frame, testvec::PEER_IP).0, RxVerdict::Deliver { .. }));
    }

    #[test]
    fn partial_tcp_checksum_is_flagged_for_the_kernel() {
        let mut frame = testvec::tcp_frame(testvec::OUR_MAC, testvec::PEER_MAC, &[7u8; 100]);
        let pseudo = testvec::pseudo_fold(&frame, PROTO_TCP);
        frame[50..52].copy_from_slice(&pseudo.to_be_bytes());
        let (v, buf) = run(GOOD, &frame, testvec::PEER_IP);
        assert!(matches!(v, RxVerdict::Deliver { .. }));
        let h = VnetHdr::parse(&buf).unwrap();
        assert_eq!((h.flags, h.csum_start, h.csum_offset), (F_NEEDS_CSUM, 34, 16));
    }

    #[test]
    fn partial_checksum_of_a_bare_ip_packet_is_flagged_at_its_offset() {
        let mut frame = testvec::tcp_frame(testvec::OUR_MAC, testvec::PEER_MAC, &[7u8; 100]);
        let pseudo = testvec::pseudo_fold(&frame, PROTO_TCP);
        frame[50..52].copy_from_slice(&pseudo.to_be_bytes());
        let h = checksum_hint_ip(&frame[ethernet::HEADER_LEN..]);
        assert_eq!((h.flags, h.csum_start, h.csum_offset), (F_NEEDS_CSUM, 20, 16));
        // A full checksum, and an Ethernet frame where an IP packet belongs, get no flags.
        let good = testvec::tcp_frame(testvec::OUR_MAC, testvec::PEER_MAC, &[7u8; 100]);
        assert_eq!(checksum_hint_ip(&good[ethernet::HEADER_LEN..]), VnetHdr::default());
        assert_eq!(checksum_hint_ip(&frame), VnetHdr::default());
    }

    #[test]
    fn congestion_marks_reach_the_inner_frame() {
        use crate::dataplane::ecn::{CE, ECT0};
        let plain = testvec::tcp_frame(testvec::OUR_MAC, testvec::PEER_MAC, &[7u8; 100]);
        // Unmarked outer header, or no ECN in the inner one and none asked for: untouched.
        let mut f = plain.clone();
        assert_eq!(apply_ecn(&mut f, 0xb8), Ok(()));
        assert_eq!(f, plain);
        assert_eq!(apply_ecn(&mut f, CE), Err(DropReason::RxEcnNotEct));
        // ECT(0) inside, CE outside: CE inside, header checksum still right.
        f[15] |= ECT0;
        let mut ip = ipv4::Packet::new_checked(&mut f[14..]).unwrap();
        ip.fill_checksum();
        assert_eq!(apply_ecn(&mut f, CE), Ok(()));
        let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!((ip.tos() & 3, ip.header_checksum_ok()), (CE, true));
        // ARP has no ECN field; a runt is left to the checks that drop runts.
        let mut arp = testvec::arp_request(Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(apply_ecn(&mut arp, CE), Ok(()));
        assert_eq!(apply_ecn(&mut [0u8; 20], CE), Ok(()));
    }

    #[test]
    fn full_or_wrong_checksum_is_left_alone() {
        let good = testvec::tcp_frame(testvec::OUR_MAC, testvec::PEER_MAC, &[7u8; 100]);
        assert_eq!(checksum_hint(&good), VnetHdr::default());
        let mut wrong = good.clone();
        wrong[50] ^= 0x40;
        assert_eq!(checksum_hint(&wrong), VnetHdr::default());
    }

    #[test]
    fn one_datagram_is_told_from_a_gro_train() {
        // VXLAN + Ethernet + an IPv4 packet of 1400 bytes: whole when the buffer ends with it.
        let mut d = vec![0u8; 8 + 14 + 1400];
        d[20..22].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        d[22] = 0x45;
        d[24..26].copy_from_slice(&1400u16.to_be_bytes());
        assert!(is_one_datagram(&d));
        // Two such datagrams back to back (a GRO train): the first's IP length ends mid-buffer.
        let train = [d.clone(), d.clone()].concat();
        assert!(!is_one_datagram(&train));
        d[20..22].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        d[22] = 0x60;
        d[26..28].copy_from_slice(&1360u16.to_be_bytes());
        assert!(is_one_datagram(&d));
        d[20..22].copy_from_slice(&[0x08, 0x06]); // ARP
        assert!(!is_one_datagram(&d));
        assert!(!is_one_datagram(&d[..30]));
    }
}
