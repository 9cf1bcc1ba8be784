use super::*;
use etherparse::{Icmpv4Type, IpNumber, Ipv4Header, Ipv4Slice, PacketBuilder};

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn tunnel() -> Tunnel {
    Tunnel { local: LOCAL, subnet: "10.244.1.0/24".parse().unwrap(), mtu: 1480, ttl: 64 }
}

fn routes() -> Lpm<Ipv4Addr> {
    let mut r = Lpm::default();
    r.insert("10.244.2.0/24".parse().unwrap(), PEER);
    r
}

fn peers() -> crate::table::PeerSet {
    let mut p = crate::table::PeerSet::default();
    p.insert(PEER, Default::default());
    p
}

/// ICMP echo 10.244.1.2 → `dst`, `payload` bytes, built by etherparse.
fn echo(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src, dst, 63).icmpv4_echo_request(0x1234, 7);
    let mut out = Vec::new();
    b.write(&mut out, &vec![0x5a; payload]).unwrap();
    out
}

fn tun_buffer(pkt: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; INNER_OFFSET + pkt.len().max(600) + 64];
    b[INNER_OFFSET..INNER_OFFSET + pkt.len()].copy_from_slice(pkt);
    b
}

fn dispatch(pkt: &[u8]) -> (IpipTxVerdict, Vec<u8>) {
    let mut buf = tun_buffer(pkt);
    let v = dispatch_packet(&tunnel(), &routes(), &mut buf, pkt.len());
    (v, buf)
}

#[test]
fn encapsulates_byte_exact() {
    let mut inner = echo([10, 244, 1, 2], [10, 244, 2, 2], 56);
    inner[1] = 0xb8; // DSCP EF, to see TOS copied
    let c = Ipv4Header::from_slice(&inner).unwrap().0.calc_header_checksum();
    inner[10..12].copy_from_slice(&c.to_be_bytes());
    let (v, buf) = dispatch(&inner);
    assert_eq!(v, IpipTxVerdict::Forward { dst: PEER, len: 20 + inner.len() });
    #[rustfmt::skip]
    let want_outer: [u8; 20] = [
        0x45, 0xb8, 0x00, 0x68, // v4 IHL 5, TOS copied, total 20 + 84
        0x00, 0x00, 0x40, 0x00, // ID 0 (kernel picks), DF copied from the inner packet
        0x40, 0x04, 0x00, 0x00, // TTL 64, protocol 4, checksum (patched below)
        192, 0, 2, 1, 192, 0, 2, 2,
    ];
    let mut want = want_outer;
    let c = checksum::finish(checksum::sum(&want, 0));
    want[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(&buf[..20], &want);
    assert_eq!(&buf[20..20 + inner.len()], &inner[..], "inner packet untouched");

    // Independent decode: etherparse sees IPIP with a valid checksum and the inner echo.
    let outer = Ipv4Slice::from_slice(&buf[..20 + inner.len()]).unwrap();
    let h = outer.header().to_header();
    assert_eq!(h.protocol, IpNumber::IPV4);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert!(h.dont_fragment && h.time_to_live == 64);
    let inner_view = Ipv4Slice::from_slice(outer.payload().payload).unwrap();
    assert_eq!(inner_view.header().destination(), [10, 244, 2, 2]);
}

#[test]
fn df_clear_stays_clear() {
    let mut inner = echo([10, 244, 1, 2], [10, 244, 2, 2], 56);
    inner[6] = 0; // clear DF
    let c = Ipv4Header::from_slice(&inner).unwrap().0.calc_header_checksum();
    inner[10..12].copy_from_slice(&c.to_be_bytes());
    let (_, buf) = dispatch(&inner);
    let h = Ipv4Header::from_slice(&buf[..20]).unwrap().0;
    assert!(!h.dont_fragment);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
}

#[test]
fn tx_drops_with_reasons() {
    let good = echo([10, 244, 1, 2], [10, 244, 2, 2], 56);
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (echo([10, 244, 1, 2], [10, 244, 9, 2], 56), DropReason::TxNoRoute),
        ({ let mut p = good.clone(); p[0] = 0x60; p }, DropReason::TxNotIpv4),
        ({ let mut p = good.clone(); p[0] = 0x44; p }, DropReason::TxMalformed),
        ({ let mut p = good.clone(); p[2] = 0x7f; p }, DropReason::TxMalformed),
        (good[..12].to_vec(), DropReason::TxMalformed),
        (Vec::new(), DropReason::TxNotIpv4),
    ];
    for (pkt, want) in cases {
        assert_eq!(dispatch(&pkt).0, IpipTxVerdict::Drop(want), "{want:?}");
    }
    let mut buf = tun_buffer(&good);
    buf[TUN_OFFSET + 1] = vnet::GSO_TCPV4;
    let v = dispatch_packet(&tunnel(), &routes(), &mut buf, good.len());
    assert_eq!(v, IpipTxVerdict::Segment { dst: PEER, len: good.len() });
    let mut out = vec![0u8; 4096];
    assert_eq!(segment(&tunnel(), PEER, &buf, good.len(), &mut out), Err(DropReason::TxBadGso), "GSO on an ICMP packet");
}

/// A TCP packet as the TUN hands it (super-packet) or as a segment should look: 10.244.1.2:40000
/// → 10.244.2.2:5001, TOS 0x28, DF as given, a timestamp option, FIN|PSH if `last`.
fn tcp_packet(seq: u32, id: u16, df: bool, payload: &[u8], last: bool) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4([10, 244, 1, 2], [10, 244, 2, 2], 63)
        .tcp(40000, 5001, seq, 1000)
        .ack(5)
        .options(&[etherparse::TcpOptionElement::Timestamp(1, 2)])
        .unwrap();
    if last {
        b = b.psh().fin();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out[1] = 0x28;
    out[4..8].copy_from_slice(&[(id >> 8) as u8, id as u8, if df { 0x40 } else { 0 }, 0]);
    out[10..12].copy_from_slice(&[0, 0]);
    let c = Ipv4Header::from_slice(&out).unwrap().0.calc_header_checksum();
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out
}

#[test]
fn segments_a_tun_super_packet_byte_for_byte() {
    for df in [true, false] {
        let data: Vec<u8> = (0..1428 * 2 + 100).map(|i| (i * 7 + 3) as u8).collect();
        let sup = tcp_packet(0xffff_fc00, 0x1000, df, &data, true);
        let mut buf = tun_buffer(&sup);
        // As the kernel hands it with TSO: NEEDS_CSUM, the pseudo-header sum in the field (any
        // value will do: every segment gets a complete checksum).
        let v = VnetHdr { flags: vnet::F_NEEDS_CSUM, gso_type: vnet::GSO_TCPV4, hdr_len: 52, gso_size: 1428, csum_start: 20, csum_offset: 16 };
        v.emit(&mut buf[TUN_OFFSET..INNER_OFFSET]);
        let verdict = dispatch_packet(&tunnel(), &routes(), &mut buf, sup.len());
        assert_eq!(verdict, IpipTxVerdict::Segment { dst: PEER, len: sup.len() });
        let mut out = vec![0u8; 8192];
        let segs = segment(&tunnel(), PEER, &buf, sup.len(), &mut out).unwrap();
        assert_eq!(segs, Segments { count: 3, seg_len: 20 + 1480, last_len: 20 + 52 + 100 });
        for (i, chunk) in data.chunks(1428).enumerate() {
            let inner = tcp_packet(0xffff_fc00u32.wrapping_add(1428 * i as u32), 0x1000 + i as u16, df, chunk, i == 2);
            let mut outer = Ipv4Header::new(inner.len() as u16, 64, IpNumber::IPV4, LOCAL.octets(), PEER.octets()).unwrap();
            outer.dont_fragment = df;
            outer.dscp = etherparse::Ipv4Dscp::try_new(0x28 >> 2).unwrap();
            outer.header_checksum = outer.calc_header_checksum();
            let want = [outer.to_bytes().to_vec(), inner].concat();
            assert_eq!(&out[segs.range(i)], &want[..], "segment {i}, DF {df}");
        }
    }
}

#[test]
fn refuses_segments_over_the_tunnel_mtu() {
    let sup = tcp_packet(1, 1, true, &[9u8; 3000], false);
    let mut buf = tun_buffer(&sup);
    let v = VnetHdr { flags: vnet::F_NEEDS_CSUM, gso_type: vnet::GSO_TCPV4, hdr_len: 52, gso_size: 1429, csum_start: 20, csum_offset: 16 };
    v.emit(&mut buf[TUN_OFFSET..INNER_OFFSET]);
    let mut out = vec![0u8; 8192];
    assert_eq!(segment(&tunnel(), PEER, &buf, sup.len(), &mut out), Err(DropReason::TxBadGso));
    VnetHdr { gso_size: 1428, ..v }.emit(&mut buf[TUN_OFFSET..INNER_OFFSET]);
    assert_eq!(segment(&tunnel(), PEER, &buf, sup.len(), &mut out).map(|s| s.count), Ok(3));
}

#[test]
fn too_big_with_df_answers_frag_needed() {
    let big = echo([10, 244, 1, 2], [10, 244, 2, 2], 1480); // 1508 bytes > MTU 1480
    let (v, buf) = dispatch(&big);
    let IpipTxVerdict::Reply { start, len } = v else { panic!("want ICMP, got {v:?}") };
    assert_eq!(start, TUN_OFFSET);
    assert_eq!(&buf[start..start + 12], &[0u8; 12], "plain vnet header");
    let reply = &buf[start + 12..start + len];
    assert_eq!(reply.len(), 576, "quotes up to 576 bytes in all");
    let ip = Ipv4Slice::from_slice(reply).unwrap();
    let h = ip.header().to_header();
    assert_eq!((h.source, h.destination), ([10, 244, 2, 2], [10, 244, 1, 2]));
    assert_eq!(h.protocol, IpNumber::ICMP);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    let icmp = etherparse::Icmpv4Slice::from_slice(ip.payload().payload).unwrap();
    match icmp.icmp_type() {
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu }) => {
            assert_eq!(next_hop_mtu, 1480)
        }
        other => panic!("wrong ICMP type {other:?}"),
    }
    let want = etherparse::Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
    assert_eq!(icmp.checksum(), want.checksum, "ICMP checksum");
    assert_eq!(icmp.payload(), &big[..548], "quote is the start of the original packet");
}

/// A 3000-byte UDP datagram, DF clear, as etherparse builds it.
fn big_udp() -> Vec<u8> {
    let mut p = Vec::new();
    let data: Vec<u8> = (0..2972u32).map(|i| (i * 7) as u8).collect();
    PacketBuilder::ipv4([10, 244, 1, 2], [10, 244, 2, 2], 64).udp(40000, 5001).write(&mut p, &data).unwrap();
    p[6] = 0; // etherparse sets DF
    let c = Ipv4Header::from_slice(&p).unwrap().0.calc_header_checksum();
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn too_big_without_df_is_fragmented() {
    let big = big_udp();
    assert_eq!(big.len(), 3000);
    let (v, buf) = dispatch(&big);
    assert_eq!(v, IpipTxVerdict::Fragment { dst: PEER, len: 3000 });
    let mut out = vec![0u8; 8192];
    let f = fragment(&tunnel(), PEER, &buf[INNER_OFFSET..INNER_OFFSET + 3000], &mut out).unwrap();
    // 2980 data bytes in pieces of 1456 (1480 - 20, rounded down to 8): 1456 + 1456 + 68.
    assert_eq!(f, Segments { count: 3, seg_len: 20 + 20 + 1456, last_len: 20 + 20 + 68 });
    let mut data = Vec::new();
    for i in 0..f.count {
        let pkt = &out[f.range(i)];
        let outer = Ipv4Header::from_slice(pkt).unwrap().0;
        assert_eq!((outer.protocol, outer.dont_fragment), (IpNumber::IPV4, false));
        assert_eq!(outer.header_checksum, outer.calc_header_checksum());
        assert_eq!(outer.total_len as usize, pkt.len());
        let inner = Ipv4Header::from_slice(&pkt[20..]).unwrap().0;
        assert_eq!(inner.header_checksum, inner.calc_header_checksum(), "fragment {i}");
        assert_eq!(inner.total_len as usize, pkt.len() - 20);
        assert_eq!(inner.more_fragments, i + 1 < f.count);
        assert_eq!(inner.fragment_offset.value() as usize * 8, data.len());
        assert!(inner.total_len <= 1480);
        data.extend_from_slice(&pkt[40..]);
    }
    assert_eq!(data, &big[20..], "the fragments reassemble to the original payload");
}

#[test]
fn a_fragment_is_fragmented_further_and_keeps_mf() {
    let mut frag = big_udp();
    frag[6] = 0x20; // MF, offset 0x0010 (128 bytes)
    frag[7] = 0x10;
    let c = Ipv4Header::from_slice(&frag).unwrap().0.calc_header_checksum();
    frag[10..12].copy_from_slice(&c.to_be_bytes());
    let mut out = vec![0u8; 8192];
    let f = fragment(&tunnel(), PEER, &frag, &mut out).unwrap();
    let offsets: Vec<(u16, bool)> = (0..f.count)
        .map(|i| {
            let h = Ipv4Header::from_slice(&out[f.range(i)][20..]).unwrap().0;
            (h.fragment_offset.value(), h.more_fragments)
        })
        .collect();
    assert_eq!(offsets, vec![(16, true), (16 + 182, true), (16 + 364, true)]);
    assert_eq!(fragment(&tunnel(), PEER, &frag, &mut out[..100]), None, "no room");
}

#[test]
fn a_fragment_ending_past_64k_is_refused() {
    let mut frag = big_udp();
    let data = frag.len() - 20;
    // The last fragment (MF clear) at the highest offset whose data still ends within 65,535
    // bytes is cut; 8 bytes further, its later pieces' offsets would not fit in 13 bits.
    let top = ((u16::MAX as usize - 20 - data) / 8) as u16;
    let mut out = vec![0u8; 8192];
    for (off, ok) in [(top, true), (top + 1, false)] {
        frag[6..8].copy_from_slice(&off.to_be_bytes());
        frag[10..12].copy_from_slice(&[0, 0]);
        let c = Ipv4Header::from_slice(&frag).unwrap().0.calc_header_checksum();
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(fragment(&tunnel(), PEER, &frag, &mut out).is_some(), ok, "offset {off}");
    }
}

#[test]
fn too_big_without_icmp() {
    // An ICMP error about an ICMP error is never sent: a destination-unreachable, too big.
    let mut err = echo([10, 244, 1, 2], [10, 244, 2, 2], 1480);
    err[20] = 3;
    assert_eq!(dispatch(&err).0, IpipTxVerdict::Drop(DropReason::TxTooBig));
    let bcast = echo([255, 255, 255, 255], [10, 244, 2, 2], 1480);
    assert_eq!(dispatch(&bcast).0, IpipTxVerdict::Drop(DropReason::TxTooBig));
}

// ---- receive side

/// Outer header from `src` around `inner`, built by etherparse.
fn ipip(src: [u8; 4], inner: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(inner.len() as u16, 64, IpNumber::IPV4, src, LOCAL.octets()).unwrap();
    h.header_checksum = h.calc_header_checksum();
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(inner);
    out
}

fn process(pkt: &[u8], src: Ipv4Addr) -> (IpipRxVerdict, Vec<u8>) {
    let mut buf = pkt.to_vec();
    buf.resize(pkt.len() + 64, 0);
    let v = process_packet(&tunnel(), &peers(), src, &mut buf, pkt.len(), 0);
    (v, buf)
}

#[test]
fn only_a_delivered_packet_marks_the_peer_heard() {
    let peers = peers();
    let heard = || peers[&PEER].get();
    let mut not_ours = ipip(PEER.octets(), &echo([10, 244, 2, 2], [10, 244, 3, 2], 56));
    let len = not_ours.len();
    not_ours.resize(len + 64, 0);
    assert!(matches!(process_packet(&tunnel(), &peers, PEER, &mut not_ours, len, 7), IpipRxVerdict::Drop(_)));
    assert_eq!(heard(), None, "a dropped packet is not the peer speaking IPIP to us");
    let mut good = ipip(PEER.octets(), &echo([10, 244, 2, 2], [10, 244, 1, 2], 56));
    let len = good.len();
    good.resize(len + 64, 0);
    assert!(matches!(process_packet(&tunnel(), &peers, PEER, &mut good, len, 7), IpipRxVerdict::Deliver { .. }));
    assert_eq!(heard(), Some(7));
}

#[test]
fn decapsulates_byte_exact() {
    let inner = echo([10, 244, 2, 2], [10, 244, 1, 2], 56);
    let pkt = ipip(PEER.octets(), &inner);
    let (v, buf) = process(&pkt, PEER);
    assert_eq!(v, IpipRxVerdict::Deliver { start: 8, len: 12 + inner.len() });
    assert_eq!(&buf[8..20], &[0u8; 12]);
    assert_eq!(&buf[20..20 + inner.len()], &inner[..]);
}

#[test]
fn a_partial_inner_checksum_is_flagged_for_the_kernel() {
    // A kernel IPIP peer on a veth underlay sends the inner TCP checksum still partial (only the
    // pseudo-header sum): written plain, the TUN would hand the stack a corrupt segment.
    let mut inner = tcp_packet(1, 7, true, &[9; 300], false);
    // Coming back: the addresses swapped, which leaves every checksum as it was.
    let (src, dst) = (inner[12..16].to_vec(), inner[16..20].to_vec());
    inner[12..16].copy_from_slice(&dst);
    inner[16..20].copy_from_slice(&src);
    let ip = crate::wire::ipv4::Packet::new_checked(&inner[..]).unwrap();
    let pseudo = crate::wire::checksum::fold(crate::wire::checksum::pseudo_header_v4(ip.src(), ip.dst(), 6, (inner.len() - 20) as u16));
    inner[36..38].copy_from_slice(&pseudo.to_be_bytes());
    let (v, buf) = process(&ipip(PEER.octets(), &inner), PEER);
    assert_eq!(v, IpipRxVerdict::Deliver { start: 8, len: 12 + inner.len() });
    let h = VnetHdr::parse(&buf[8..20]).unwrap();
    assert_eq!((h.flags, h.csum_start, h.csum_offset), (vnet::F_NEEDS_CSUM, 20, 16));
}

#[test]
fn a_congestion_mark_on_the_outer_header_reaches_the_inner_one() {
    use crate::dataplane::ecn::{CE, ECT0, NOT_ECT};
    for (inner_ecn, want) in [(ECT0, Some(CE)), (CE, Some(CE)), (NOT_ECT, None)] {
        let mut inner = echo([10, 244, 2, 2], [10, 244, 1, 2], 56);
        inner[1] = 0x28 | inner_ecn;
        inner[10..12].copy_from_slice(&[0, 0]);
        let c = Ipv4Header::from_slice(&inner).unwrap().0.calc_header_checksum();
        inner[10..12].copy_from_slice(&c.to_be_bytes());
        let mut pkt = ipip(PEER.octets(), &inner);
        pkt[1] = CE;
        pkt[10..12].copy_from_slice(&[0, 0]);
        let c = Ipv4Header::from_slice(&pkt).unwrap().0.calc_header_checksum();
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
        let (v, buf) = process(&pkt, PEER);
        match want {
            None => assert_eq!(v, IpipRxVerdict::Drop(DropReason::RxEcnNotEct)),
            Some(ecn) => {
                assert_eq!(v, IpipRxVerdict::Deliver { start: 8, len: 12 + inner.len() });
                let out = Ipv4Header::from_slice(&buf[20..20 + inner.len()]).unwrap().0;
                assert_eq!(out.dscp.value() << 2 | out.ecn.value(), 0x28 | ecn);
                assert_eq!(out.header_checksum, out.calc_header_checksum());
            }
        }
    }
}

#[test]
fn outer_options_move_the_inner_start() {
    let inner = echo([10, 244, 2, 2], [10, 244, 1, 2], 8);
    let mut h = Ipv4Header::new(inner.len() as u16, 64, IpNumber::IPV4, PEER.octets(), LOCAL.octets()).unwrap();
    h.options = [1u8, 1, 1, 0][..].try_into().unwrap(); // NOP NOP NOP EOL
    h.total_len = (24 + inner.len()) as u16;
    h.header_checksum = h.calc_header_checksum();
    let mut pkt = h.to_bytes().to_vec();
    pkt.extend_from_slice(&inner);
    let (v, buf) = process(&pkt, PEER);
    assert_eq!(v, IpipRxVerdict::Deliver { start: 12, len: 12 + inner.len() });
    assert_eq!(&buf[24..24 + inner.len()], &inner[..]);
}

#[test]
fn encap_then_decap_round_trips() {
    let inner = echo([10, 244, 2, 2], [10, 244, 1, 2], 100);
    // Peer side: route 10.244.1.0/24 → us.
    let peer = Tunnel { local: PEER, subnet: "10.244.2.0/24".parse().unwrap(), mtu: 1480, ttl: 64 };
    let mut r = Lpm::default();
    r.insert("10.244.1.0/24".parse().unwrap(), LOCAL);
    let mut buf = tun_buffer(&inner);
    let IpipTxVerdict::Forward { len, .. } = dispatch_packet(&peer, &r, &mut buf, inner.len()) else { panic!() };
    let (v, out) = process(&buf[..len], PEER);
    let IpipRxVerdict::Deliver { start, len } = v else { panic!("{v:?}") };
    assert_eq!(&out[start + 12..start + len], &inner[..]);
}

#[test]
fn rx_drops_with_reasons() {
    let inner = echo([10, 244, 2, 2], [10, 244, 1, 2], 56);
    let good = ipip(PEER.octets(), &inner);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good.clone();
        f(&mut p);
        p
    };
    let refill_outer = |p: &mut Vec<u8>| {
        p[10] = 0;
        p[11] = 0;
        let c = checksum::finish(checksum::sum(&p[..20], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    };
    let cases: Vec<(Vec<u8>, Ipv4Addr, DropReason)> = vec![
        (good.clone(), Ipv4Addr::new(192, 0, 2, 99), DropReason::RxUnknownSource),
        (good[..10].to_vec(), PEER, DropReason::RxOuterMalformed),
        (with(&|p| p[0] = 0x44), PEER, DropReason::RxOuterMalformed),
        (with(&|p| p[0] = 0x65), PEER, DropReason::RxOuterMalformed),
        (with(&|p| p[2] = 0x7f), PEER, DropReason::RxOuterMalformed),
        (with(&|p| { p[9] = 41; refill_outer(p) }), PEER, DropReason::RxNotIpip),
        (with(&|p| { p[6] = 0x20; refill_outer(p) }), PEER, DropReason::RxOuterFragment),
        (with(&|p| { p[6] = 0x00; p[7] = 0x10; refill_outer(p) }), PEER, DropReason::RxOuterFragment),
        (ipip(PEER.octets(), &inner[..19]), PEER, DropReason::RxInnerTruncated),
        (ipip(PEER.octets(), &{ let mut i = inner.clone(); i[0] = 0x43; i }), PEER, DropReason::RxInnerMalformed),
        (ipip(PEER.octets(), &{ let mut i = inner.clone(); i[0] = 0x65; i }), PEER, DropReason::RxInnerMalformed),
        (ipip(PEER.octets(), &{ let mut i = inner.clone(); i[2] = 0x05; i }), PEER, DropReason::RxInnerMalformed),
        (ipip(PEER.octets(), &{ let mut i = inner.clone(); i[3] = 0x00; i[2] = 0; i }), PEER, DropReason::RxInnerMalformed),
        (ipip(PEER.octets(), &{ let mut i = inner.clone(); i[8] ^= 1; i }), PEER, DropReason::RxInnerBadChecksum),
        (ipip(PEER.octets(), &echo([10, 244, 2, 2], [10, 244, 3, 2], 56)), PEER, DropReason::RxInnerNotOurs),
    ];
    for (i, (pkt, src, want)) in cases.into_iter().enumerate() {
        assert_eq!(process(&pkt, src).0, IpipRxVerdict::Drop(want), "case {i}: {want:?}");
    }
    // A length beyond the buffer is refused, not indexed.
    let mut buf = good.clone();
    let v = process_packet(&tunnel(), &peers(), PEER, &mut buf, good.len() + 1, 0);
    assert_eq!(v, IpipRxVerdict::Drop(DropReason::RxOuterMalformed));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic fuzz of both directions over short, odd inputs.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in 0..4000usize {
        let len = n % 90;
        let mut buf = vec![0u8; 700];
        for b in buf.iter_mut().take(INNER_OFFSET + len) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        if n % 3 == 0 {
            buf[INNER_OFFSET] = 0x45;
            buf[0] = 0x45;
        }
        let _ = dispatch_packet(&tunnel(), &routes(), &mut buf.clone(), len);
        let _ = process_packet(&tunnel(), &peers(), PEER, &mut buf, len, 0);
    }
}
