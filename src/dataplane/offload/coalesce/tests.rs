use super::*;
use crate::wire::vnet::GSO_NONE;

fn candidate_eth(frame: &[u8]) -> Option<Segment> {
    candidate(frame, Framing::Ethernet)
}

fn oversized_eth(frame: &mut [u8], mtu: usize) -> Option<VnetHdr> {
    oversized(frame, Framing::Ethernet, mtu)
}

fn seg(seq: u32, payload: &[u8], psh: bool, v6: bool) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]);
    let b = if v6 {
        b.ipv6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 64)
    } else {
        b.ipv4([10, 244, 2, 2], [10, 244, 1, 2], 64)
    };
    let mut b = b.tcp(5001, 40000, seq, 500).ack(9).options(&[etherparse::TcpOptionElement::Timestamp(5, 6)]).unwrap();
    if psh {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// Merges `frames` as the driver would; returns the merged frame (first + later payloads) and its vnet header.
fn merge(frames: &[Vec<u8>]) -> (Vec<u8>, VnetHdr, usize) {
    let s0 = candidate_eth(&frames[0]).unwrap();
    let mut run = Run::start(s0);
    for f in &frames[1..] {
        let s = candidate_eth(f).unwrap();
        if !run.accepts(&frames[0], f, &s) {
            break;
        }
        run.push(&s);
    }
    let mut first = frames[0].clone();
    let vnet = finish(&mut first, &run, 9000);
    let hdr = s0.layout.header_len();
    let mut merged = first[..hdr + s0.payload_len].to_vec();
    for f in &frames[1..run.count] {
        merged.extend_from_slice(&f[hdr..]);
    }
    (merged, vnet, run.count)
}

#[test]
fn merges_contiguous_segments_and_resegments_identically() {
    for v6 in [false, true] {
        let data: Vec<u8> = (0..1000 * 3 + 10).map(|i| (i * 13) as u8).collect();
        let frames = vec![
            seg(100, &data[..1000], false, v6),
            seg(1100, &data[1000..2000], false, v6),
            seg(2100, &data[2000..3000], false, v6),
            seg(3100, &data[3000..], true, v6),
        ];
        let (merged, vnet, count) = merge(&frames);
        assert_eq!(count, 4);
        assert_eq!(vnet.gso_size, 1000);
        assert_eq!(vnet.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
        assert!(vnet.needs_csum());
        // The kernel would segment this back into the original frames: check by doing so.
        let mut out = vec![0u8; 10_000];
        let segs = super::super::segment::segment(&vnet, &merged, Framing::Ethernet, &crate::wire::vxlan::Vni::new(1).unwrap(), &mut out).unwrap();
        assert_eq!(segs.count, 4);
        for (i, f) in frames.iter().enumerate() {
            let d = &out[i * segs.seg_len + 8..i * segs.seg_len + 8 + f.len()];
            let (a, b) = (L4Layout::parse(d, Framing::Ethernet, L4::Tcp).unwrap(), L4Layout::parse(f, Framing::Ethernet, L4::Tcp).unwrap());
            assert_eq!(a, b);
            // Identical but for the IPv4 id (TSO numbers it per segment) and its checksum.
            let skip = |j: usize| !v6 && ((18..20).contains(&j) || (24..26).contains(&j));
            for j in 0..f.len() {
                assert!(skip(j) || d[j] == f[j], "segment {i} byte {j}");
            }
        }
    }
}

/// A TUN packet (no Ethernet header): IPv4 10.244.2.2:5001 → 10.244.1.2:40000 with a timestamp
/// option, IP id `id`, DF set.
fn ip_seg(seq: u32, id: u16, payload: &[u8], psh: bool) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ipv4([10, 244, 2, 2], [10, 244, 1, 2], 63)
        .tcp(5001, 40000, seq, 500)
        .ack(9)
        .options(&[etherparse::TcpOptionElement::Timestamp(5, 6)])
        .unwrap();
    if psh {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out[4..6].copy_from_slice(&id.to_be_bytes());
    out[10..12].copy_from_slice(&[0, 0]);
    let c = etherparse::Ipv4Header::from_slice(&out).unwrap().0.calc_header_checksum();
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out
}

#[test]
fn merges_tun_packets_byte_for_byte() {
    let data: Vec<u8> = (0..1428 * 3 + 77).map(|i| (i * 13 + 1) as u8).collect();
    let pkts: Vec<Vec<u8>> = data.chunks(1428).enumerate().map(|(i, c)| ip_seg(7 + 1428 * i as u32, 40 + i as u16, c, i == 3)).collect();
    let s0 = candidate(&pkts[0], Framing::Ip).unwrap();
    assert_eq!(s0.layout, L4Layout { ip_off: 0, ip_len: 20, l4_off: 20, l4_len: 32, v6: false, l4: L4::Tcp });
    let mut run = Run::start(s0);
    for p in &pkts[1..] {
        let s = candidate(p, Framing::Ip).unwrap();
        assert!(run.accepts(&pkts[0], p, &s));
        run.push(&s);
    }
    let mut first = pkts[0].clone();
    let vnet = finish(&mut first, &run, 1480);
    let want_vnet = VnetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_TCPV4, hdr_len: 52, gso_size: 1428, csum_start: 20, csum_offset: 16 };
    assert_eq!(vnet, want_vnet);
    let merged = [&first[..52 + 1428], &pkts[1][52..], &pkts[2][52..], &pkts[3][52..]].concat();

    // What it must be: one packet with the first's id, ACK|PSH, the whole payload, a valid IPv4
    // checksum and the pseudo-header sum (RFC 793: addresses, protocol 6, TCP length) in the
    // TCP checksum field.
    let mut want = ip_seg(7, 40, &data, true);
    let tcp_len = (32 + data.len()) as u32;
    let pseudo = 0x0af4 + 0x0202 + 0x0af4 + 0x0102 + 6 + tcp_len;
    let pseudo = ((pseudo & 0xffff) + (pseudo >> 16)) as u16;
    want[36..38].copy_from_slice(&pseudo.to_be_bytes());
    assert_eq!(merged, want);

    // The kernel segments it back at gso_size: the originals come back but for id and checksum.
    let mut out = vec![0u8; 10_000];
    let segs = super::super::segment::segment(&vnet, &merged, Framing::Ip, &crate::wire::vxlan::Vni::new(1).unwrap(), &mut out).unwrap();
    assert_eq!(segs.count, 4);
    for (i, p) in pkts.iter().enumerate() {
        let d = &out[segs.range(i)][8..];
        let skip = |j: usize| (4..6).contains(&j) || (10..12).contains(&j);
        assert_eq!(d.len(), p.len());
        assert!((0..p.len()).all(|j| skip(j) || d[j] == p[j]), "segment {i}");
    }
}

#[test]
fn tun_packets_of_another_flow_or_with_fin_are_not_merged() {
    let p = [5u8; 400];
    let a = ip_seg(0, 1, &p, false);
    let s = candidate(&a, Framing::Ip).unwrap();
    let mut tos = ip_seg(400, 2, &p, false);
    tos[1] = 0x10;
    tos[10..12].copy_from_slice(&[0, 0]);
    let c = etherparse::Ipv4Header::from_slice(&tos).unwrap().0.calc_header_checksum();
    tos[10..12].copy_from_slice(&c.to_be_bytes());
    assert!(!Run::start(s).accepts(&a, &tos, &candidate(&tos, Framing::Ip).unwrap()), "TOS differs");
    let mut fin = ip_seg(400, 2, &p, false);
    fin[33] |= 0x01;
    assert!(candidate(&fin, Framing::Ip).is_none(), "FIN is never merged");
    assert!(candidate(&a, Framing::Ethernet).is_none(), "a TUN packet is not an Ethernet frame");
}

#[test]
fn stops_at_gaps_psh_short_and_foreign_flows() {
    let p = [7u8; 500];
    let a = seg(0, &p, false, false);
    assert_eq!(merge(&[a.clone(), seg(600, &p, false, false)]).2, 1, "gap in sequence");
    assert_eq!(merge(&[seg(0, &p, true, false), seg(500, &p, false, false)]).2, 1, "PSH ends a run");
    assert_eq!(merge(&[seg(0, &p[..100], false, false), seg(100, &p[..100], false, false), seg(200, &p, false, false)]).2, 2, "longer after shorter");
    let mut other = seg(500, &p, false, false);
    other[35] ^= 1; // source port
    let s = candidate_eth(&a).unwrap();
    let o = candidate_eth(&fix_tcp_csum(other.clone())).unwrap();
    assert!(!Run::start(s).accepts(&a, &other, &o));
}

fn fix_tcp_csum(mut f: Vec<u8>) -> Vec<u8> {
    let l = L4Layout::parse(&f, Framing::Ethernet, L4::Tcp).unwrap();
    put_be16(&mut f, l.l4_off + 16, 0);
    let n = f.len() - l.l4_off;
    let c = checksum::finish(checksum::sum(&f[l.l4_off..], l.pseudo_sum(&f, n)));
    put_be16(&mut f, l.l4_off + 16, c);
    f
}

#[test]
fn bad_checksum_is_not_a_candidate_but_partial_is() {
    let mut f = seg(0, &[1u8; 300], false, false);
    f[60] ^= 0xff;
    assert!(candidate_eth(&f).is_none());
    let mut f = seg(0, &[1u8; 300], false, false);
    let l = L4Layout::parse(&f, Framing::Ethernet, L4::Tcp).unwrap();
    let pseudo = checksum::fold(l.pseudo_sum(&f, f.len() - l.l4_off));
    put_be16(&mut f, l.l4_off + 16, pseudo);
    let s = candidate_eth(&f).unwrap();
    assert!(s.partial);
    assert_eq!(finish(&mut f, &Run::start(s), 1500).flags, F_NEEDS_CSUM);
}

#[test]
fn header_bits_of_later_segments_must_match_to_merge() {
    // Merged, a later segment's TCP reserved bits (AE) or IPv4 reserved flag would be replaced
    // by the first segment's (found by the gro_coalesce fuzz target).
    let p = [7u8; 500];
    let a = seg(0, &p, false, false);
    let s = candidate_eth(&a).unwrap();
    let mut ae = seg(500, &p, false, false);
    ae[46] |= 0x01;
    let ae = fix_tcp_csum(ae);
    assert!(!Run::start(s).accepts(&a, &ae, &candidate_eth(&ae).unwrap()));
    let mut evil = seg(500, &p, false, false);
    evil[20] |= 0x80;
    put_be16(&mut evil, 24, 0);
    let c = checksum::finish(checksum::sum(&evil[14..34], 0));
    put_be16(&mut evil, 24, c);
    assert!(!Run::start(s).accepts(&a, &evil, &candidate_eth(&evil).unwrap()));
    let same = seg(500, &p, false, false);
    assert!(Run::start(s).accepts(&a, &same, &candidate_eth(&same).unwrap()));
}

#[test]
fn a_later_segment_with_another_window_is_not_merged() {
    // Merged under the first segment's header, a window update (say, a reopened zero window)
    // carried only by a later segment would be lost; the kernel does not merge these either.
    let p = [7u8; 500];
    let mut a = seg(0, &p, false, false);
    put_be16(&mut a, 48, 0);
    let a = fix_tcp_csum(a);
    let s = candidate_eth(&a).unwrap();
    let mut reopened = seg(500, &p, false, false);
    put_be16(&mut reopened, 48, 500);
    let reopened = fix_tcp_csum(reopened);
    assert!(!Run::start(s).accepts(&a, &reopened, &candidate_eth(&reopened).unwrap()));
}

/// `seg` with the IPv4 id and DF flag given, header checksum fixed.
fn with_id(mut f: Vec<u8>, id: u16, df: bool) -> Vec<u8> {
    put_be16(&mut f, 18, id);
    f[20] = if df { f[20] | 0x40 } else { f[20] & !0x40 };
    put_be16(&mut f, 24, 0);
    let c = checksum::finish(checksum::sum(&f[14..34], 0));
    put_be16(&mut f, 24, c);
    f
}

#[test]
fn without_df_only_counting_ids_are_merged() {
    // Cut again, the kernel numbers the pieces first id + n; a datagram that may still be
    // fragmented must keep the id it had. With DF the id means nothing (RFC 6864).
    let p = [7u8; 500];
    for (df, id1, merged) in [(false, 101, true), (false, 500, false), (false, 100, false), (true, 500, true), (true, 100, true)] {
        let a = with_id(seg(0, &p, false, false), 100, df);
        let b = with_id(seg(500, &p, false, false), id1, df);
        let s = candidate_eth(&a).unwrap();
        assert_eq!(Run::start(s).accepts(&a, &b, &candidate_eth(&b).unwrap()), merged, "df {df}, ids 100 then {id1}");
    }
    // The third segment's id is the first's + 2.
    let (a, b) = (with_id(seg(0, &p, false, false), 0xffff, false), with_id(seg(500, &p, false, false), 0, false));
    let mut run = Run::start(candidate_eth(&a).unwrap());
    run.push(&candidate_eth(&b).unwrap());
    for (id, merged) in [(1, true), (2, false)] {
        let c = with_id(seg(1000, &p, false, false), id, false);
        assert_eq!(run.accepts(&a, &c, &candidate_eth(&c).unwrap()), merged, "third id {id}");
    }
}

#[test]
fn bad_ipv4_header_checksum_is_not_a_candidate() {
    // A corrupt TTL leaves the TCP checksum valid; merged, the frame would get a fresh, valid IPv4
    // header checksum (found by the gro_coalesce fuzz target).
    let mut f = seg(0, &[1u8; 300], false, false);
    f[22] ^= 0x01;
    assert!(candidate_eth(&f).is_none());
}

#[test]
fn oversized_lone_segment_goes_up_as_gso_at_the_mtu() {
    // A whole TSO super-frame in one datagram, as a kernel VXLAN peer on veth sends it.
    let data: Vec<u8> = (0..20_000).map(|i| (i * 7) as u8).collect();
    let mut f = seg(1, &data, true, false);
    let l = L4Layout::parse(&f, Framing::Ethernet, L4::Tcp).unwrap();
    let pseudo = checksum::fold(l.pseudo_sum(&f, f.len() - l.l4_off));
    put_be16(&mut f, l.l4_off + 16, pseudo); // partial, as it arrives
    let run = Run::start(candidate_eth(&f).unwrap());
    let v = finish(&mut f, &run, 1450);
    assert_eq!((v.gso_type, v.gso_size, v.flags), (GSO_TCPV4, 1450 - 20 - 32, F_NEEDS_CSUM));
    // The kernel segments it into valid MTU-sized packets: check by doing the same.
    let mut out = vec![0u8; 40_000];
    let segs = super::super::segment::segment(&v, &f, Framing::Ethernet, &crate::wire::vxlan::Vni::new(1).unwrap(), &mut out).unwrap();
    assert_eq!(segs.count, 20_000usize.div_ceil(1398));
    assert!(segs.seg_len - 8 <= 14 + 1450);
}

#[test]
fn oversized_fin_segment_is_marked_but_a_corrupt_one_is_not() {
    let data = vec![3u8; 5000];
    let fin = |mut f: Vec<u8>| {
        let l = L4Layout::parse(&f, Framing::Ethernet, L4::Tcp).unwrap();
        f[l.l4_off + 13] |= 0x01;
        fix_tcp_csum(f)
    };
    let mut f = fin(seg(1, &data, false, false));
    let v = oversized_eth(&mut f, 1450).unwrap();
    assert_eq!(v.gso_type, GSO_TCPV4);
    let mut small = fin(seg(1, &data[..1000], false, false));
    assert_eq!(oversized_eth(&mut small, 1450), None, "fits the MTU");
    let mut bad = fin(seg(1, &data, false, false));
    bad[100] ^= 0xff;
    assert_eq!(oversized_eth(&mut bad, 1450), None, "a wrong checksum is never laundered");
    // An MTU smaller than the headers: cut at Linux's minimum MSS, not into one-byte segments.
    let mut f = fin(seg(1, &data, false, false));
    assert_eq!(oversized_eth(&mut f, 50).map(|v| v.gso_size), Some(48));
}

#[test]
fn lone_segment_is_marked_valid() {
    let mut f = seg(0, &[1u8; 300], false, false);
    let v = finish(&mut f.clone(), &Run::start(candidate_eth(&f).unwrap()), 1500);
    assert_eq!((v.flags, v.gso_type), (F_DATA_VALID, GSO_NONE));
    f[47] = 0x02; // SYN: never merged
    assert!(candidate_eth(&f).is_none());
}

/// An inner UDP packet of `n` datagrams' payload, its checksum partial as a kernel peer leaves it.
fn udp_super(payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 17 + 5) as u8).collect();
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4([10, 244, 2, 2], [10, 244, 1, 2], 64)
        .udp(443, 4433)
        .write(&mut f, &payload)
        .unwrap();
    let l = L4Layout::parse(&f, Framing::Ethernet, L4::Udp).unwrap();
    let pseudo = checksum::fold(l.pseudo_sum(&f, 8 + payload_len));
    put_be16(&mut f, l.l4_off + 6, pseudo);
    f
}

#[test]
fn oversized_udp_goes_up_as_uso_and_resegments_to_the_datagrams() {
    let mut f = udp_super(1200 * 5 + 300);
    let v = oversized_udp(&mut f, Framing::Ethernet, 1200).unwrap();
    assert_eq!((v.flags, v.gso_type, v.gso_size, v.hdr_len, v.csum_start, v.csum_offset), (F_NEEDS_CSUM, GSO_UDP_L4, 1200, 42, 34, 6));
    // What the kernel does with it: our own USO segmentation stands in, and etherparse checks.
    let mut out = vec![0u8; 20_000];
    let segs = super::super::segment::segment(&v, &f, Framing::Ethernet, &crate::wire::vxlan::Vni::new(1).unwrap(), &mut out).unwrap();
    assert_eq!(segs.count, 6);
    for i in 0..segs.count {
        let p = etherparse::SlicedPacket::from_ethernet(&out[segs.range(i)][8..]).unwrap();
        let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(u))) = (p.net, p.transport) else { panic!() };
        let want = u.to_header().calc_checksum_ipv4(&ip.header().to_header(), u.payload()).unwrap();
        assert_eq!((u.checksum(), u.payload().len()), (want, if i == 5 { 300 } else { 1200 }));
    }
}

#[test]
fn oversized_udp_refuses_what_it_cannot_vouch_for() {
    let mut small = udp_super(1200);
    assert_eq!(oversized_udp(&mut small, Framing::Ethernet, 1200), None, "one datagram's worth");
    let mut corrupt = udp_super(5000);
    corrupt[40] ^= 1; // neither partial nor a correct full checksum
    assert_eq!(oversized_udp(&mut corrupt, Framing::Ethernet, 1200), None);
    let mut lying = udp_super(5000);
    put_be16(&mut lying, 38, 100); // UDP length disagrees with IP's
    assert_eq!(oversized_udp(&mut lying, Framing::Ethernet, 1200), None);
    let mut tcp = seg(1, &[1; 3000], false, false);
    assert_eq!(oversized_udp(&mut tcp, Framing::Ethernet, 1200), None);
    // A corrupt TTL leaves the UDP checksum valid; cut up, each datagram would get a fresh, valid
    // IPv4 header checksum.
    let mut ttl = udp_super(5000);
    ttl[22] ^= 1;
    assert_eq!(oversized_udp(&mut ttl, Framing::Ethernet, 1200), None);
    let mut ttl = seg(1, &[1; 3000], true, false);
    ttl[22] ^= 1;
    assert_eq!(oversized_eth(&mut ttl, 1500), None);
}

/// One datagram of a flow 10.244.2.2:443 -> 10.244.1.2:`dport` with a correct checksum.
fn datagram(payload: &[u8], dport: u16, v6: bool) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]);
    let b = if v6 {
        b.ipv6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 64)
    } else {
        b.ipv4([10, 244, 2, 2], [10, 244, 1, 2], 64)
    };
    let mut out = Vec::new();
    b.udp(443, dport).write(&mut out, payload).unwrap();
    out
}

/// Drives candidate_udp / Run as io::gro does; returns the runs' member indices.
fn udp_runs(frames: &[Vec<u8>]) -> Vec<Vec<usize>> {
    let mut runs: Vec<(Run, Vec<usize>)> = Vec::new();
    let mut open: Option<(Run, Vec<usize>)> = None;
    for (k, f) in frames.iter().enumerate() {
        let Some(seg) = candidate_udp(f, Framing::Ethernet) else {
            runs.extend(open.take());
            continue;
        };
        if let Some((run, members)) = &mut open {
            if run.accepts(&frames[members[0]], f, &seg) {
                run.push(&seg);
                members.push(k);
                continue;
            }
        }
        runs.extend(open.take());
        open = Some((Run::start(seg), vec![k]));
    }
    runs.extend(open);
    runs.into_iter().map(|(_, m)| m).collect()
}

#[test]
fn udp_datagrams_merge_into_uso_and_resegment_identically() {
    for v6 in [false, true] {
        let sizes = [1200, 1200, 1200, 700];
        let frames: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| datagram(&vec![i as u8 + 1; *n], 4433, v6)).collect();
        let segs: Vec<Segment> = frames.iter().map(|f| candidate_udp(f, Framing::Ethernet).unwrap()).collect();
        let mut run = Run::start(segs[0]);
        for (f, s) in frames.iter().zip(&segs).skip(1) {
            assert!(run.accepts(&frames[0], f, s));
            run.push(s);
        }
        let mut merged = frames[0].clone();
        let vnet = finish(&mut merged, &run, 1450);
        let hdr = segs[0].layout.header_len();
        assert_eq!((vnet.flags, vnet.gso_type, vnet.gso_size, vnet.csum_offset), (F_NEEDS_CSUM, GSO_UDP_L4, 1200, 6));
        frames[1..].iter().for_each(|f| merged.extend_from_slice(&f[hdr..]));
        // The kernel's cut, played by our own USO segmentation: the datagrams come back.
        let mut out = vec![0u8; 20_000];
        let s = super::super::segment::segment(&vnet, &merged, Framing::Ethernet, &crate::wire::vxlan::Vni::new(1).unwrap(), &mut out).unwrap();
        assert_eq!(s.count, 4);
        for (i, f) in frames.iter().enumerate() {
            let d = &out[s.range(i)][8..];
            // Only the IPv4 id (and so the header checksum) may differ: the kernel numbers them.
            let skip = |j: usize| !v6 && ((18..20).contains(&j) || (24..26).contains(&j));
            assert_eq!(d.len(), f.len(), "datagram {i}");
            assert!(d.iter().zip(f.iter()).enumerate().all(|(j, (a, b))| skip(j) || a == b), "datagram {i} (v6 {v6})");
        }
    }
}

#[test]
fn udp_runs_break_where_the_kernel_could_not_cut_them_back() {
    let d = |n: usize, port: u16| datagram(&vec![7; n], port, false);
    let mut corrupt = d(1200, 4433);
    corrupt[60] ^= 1;
    let mut unchecked = d(1200, 4433);
    put_be16(&mut unchecked, 40, 0); // IPv4 "no checksum"
    let frames = vec![
        d(1200, 4433), d(1200, 4433), d(800, 4433), // a short one ends the run
        d(1200, 4433), d(1300, 4433),               // a larger one cannot follow
        d(1200, 4434), corrupt, d(1200, 4434),      // other port; a corrupt one is no candidate
        unchecked,
    ];
    assert_eq!(udp_runs(&frames), vec![vec![0, 1, 2], vec![3], vec![4], vec![5], vec![7]]);
    // A lone datagram goes up on its own, its checksum verified.
    let one = d(100, 4433);
    let run = Run::start(candidate_udp(&one, Framing::Ethernet).unwrap());
    assert_eq!(finish(&mut one.clone(), &run, 1450), VnetHdr { flags: F_DATA_VALID, ..VnetHdr::default() });
    assert!(candidate(&one, Framing::Ethernet).is_none() && candidate_udp(&seg(1, &[1; 100], false, false), Framing::Ethernet).is_none());
}
