//! Starting corpora and hand-made nasty inputs, built from the unit tests' vectors (etherparse-built
//! frames, the config in src/control/config.rs and config/vxlan.toml).
//!
//! `seeds()` are written to `fuzz/seeds/<target>/`, `nasty()` to `tests/fuzz-regressions/<target>/`;
//! `tests/fuzz_regressions.rs` checks the files match (`VTEPD_BLESS_SEEDS=1 cargo test --test
//! fuzz_regressions` rewrites them) and replays them all.
use super::*;
use etherparse::{PacketBuilder, TcpOptionElement};
use vtepd::wire::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6};

pub type Seed = (&'static str, String, Vec<u8>);

const V6_A: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_B: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const VXLAN_GOOD: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 1, 0];

fn icmp_frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0).ipv4([10, 244, 1, 0], [10, 244, 2, 0], 64).icmpv4_echo_request(7, 1);
    let mut out = Vec::new();
    b.write(&mut out, &[0x5a; 56]).unwrap();
    out
}

fn udp_frame(dst: MacAddr, src: MacAddr, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0).ipv4([10, 244, 1, 2], [10, 244, 2, 2], 64).udp(40000, 5001);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// A TCP frame: IPv4 or IPv6, optional timestamp option, ACK plus `psh`/`fin`.
#[allow(clippy::too_many_arguments)] // seed recipes read best with every knob spelled at the call
fn tcp_frame(dst: MacAddr, src: MacAddr, v6: bool, seq: u32, payload: &[u8], psh: bool, fin: bool, ts: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0);
    let b = if v6 { b.ipv6(V6_A, V6_B, 64) } else { b.ipv4([10, 244, 1, 2], [10, 244, 2, 2], 64) };
    let mut b = b.tcp(40000, 5001, seq, 500).ack(77);
    if psh {
        b = b.psh();
    }
    if fin {
        b = b.fin();
    }
    if ts {
        b = b.options(&[TcpOptionElement::Timestamp(1, 2)]).unwrap();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + 7) as u8).collect()
}

/// Replaces the L4 checksum of an IPv4 frame by the pseudo-header sum (a kernel's partial checksum).
fn make_partial_v4(f: &mut [u8], off: usize) {
    let ihl = (f[14] & 15) as usize * 4;
    let l4 = be16(f, 16) as usize - ihl;
    let pseudo = ref_sum(&[], ref_pseudo_v4(f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap(), f[23], l4));
    put16(f, 14 + ihl + off, pseudo);
}

/// Gives an IPv4/TCP frame 40 bytes of IP options (IHL 15), keeping every length and checksum right.
fn with_ihl15(f: &[u8]) -> Vec<u8> {
    let mut g = [&f[..34], &[1u8; 40][..], &f[34..]].concat(); // 40 NOPs
    g[14] = 0x4f;
    put16(&mut g, 16, be16(f, 16) + 40);
    fill_ipv4_csum(&mut g);
    let l = RefTcp::find(&g).unwrap();
    let n = g.len() - l.tcp_off;
    l.fill_tcp_csum(&mut g, n);
    g
}

fn vnet_bytes(h: VnetHdr) -> [u8; 12] {
    let mut v = [0u8; 12];
    h.emit(&mut v);
    v
}

fn gso(v6: bool, mss: u16) -> VnetHdr {
    VnetHdr { flags: F_NEEDS_CSUM, gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 }, hdr_len: 66, gso_size: mss, csum_start: 34, csum_offset: 16 }
}

/// The config unit tests' smallest valid config, so that a fuzzer seed and a test cannot drift apart.
const GOOD_CONFIG: &str = include_str!("../../../src/control/config/testdata/minimal.toml");

/// A run of `n` contiguous segments of `size` bytes: the first record is a full frame, the others
/// use the compact form (first frame's headers + payload, sequence and checksum repaired).
/// `n` datagrams of one UDP flow, `size` bytes each but a shorter last, with correct checksums.
fn udp_gro_run(v6: bool, n: usize, size: usize) -> Vec<u8> {
    let datagram = |len: usize| {
        let b = PacketBuilder::ethernet2(OUR_MAC.0, PEER_MACS[0].0);
        let b = if v6 { b.ipv6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 64) } else { b.ipv4([10, 244, 2, 2], [10, 244, 1, 2], 64) };
        let mut f = Vec::new();
        b.udp(443, 4433).write(&mut f, &pattern(len)).unwrap();
        f
    };
    (0..n).flat_map(|i| gro::record(0, &datagram(if i + 1 == n { size / 2 } else { size }))).collect()
}

fn gro_run(v6: bool, n: usize, size: usize, last_psh: bool) -> Vec<u8> {
    let data = pattern(n * size);
    let first = tcp_frame(OUR_MAC, PEER_MACS[0], v6, 100, &data[..size], n == 1 && last_psh, false, true);
    let mut input = gro::record(0, &first);
    for i in 1..n {
        let psh = last_psh && i + 1 == n;
        let ctrl = 1 | 2 | 4 | 8 | 16 | 64 | if psh { 128 } else { 0 };
        input.extend(gro::record(ctrl, &data[i * size..(i + 1) * size]));
    }
    input
}

/// An inner TCP packet from a pod behind peer 0 (10.244.2.2) to one of ours (10.244.1.2), as a TUN
/// packet: no Ethernet header, a timestamp option, ACK plus `psh`/`fin`.
fn ipip_tcp(seq: u32, payload: &[u8], psh: bool, fin: bool) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4([10, 244, 2, 2], [10, 244, 1, 2], 63).tcp(5001, 40000, seq, 500).ack(9);
    b = b.options(&[TcpOptionElement::Timestamp(5, 6)]).unwrap();
    if psh {
        b = b.psh();
    }
    if fin {
        b = b.fin();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn ipip_icmp(dst: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4([10, 244, 2, 0], dst, 64).icmpv4_echo_request(7, 1).write(&mut out, &[0x5a; 56]).unwrap();
    out
}

/// A receive batch of `n` contiguous wrapped segments of `size` bytes from peer 0: the first record
/// a full inner packet, the others compact (its headers + payload, everything repaired), PSH last.
fn ipip_run(n: usize, size: usize) -> Vec<u8> {
    let data = pattern(n * size);
    let mut input = ipip::record(4, &ipip_tcp(100, &data[..size], n == 1, false));
    for i in 1..n {
        let ctrl = 4 | 8 | 16 | 32 | 64 | if i + 1 == n { 128 } else { 0 };
        input.extend(ipip::record(ctrl, &data[i * size..(i + 1) * size]));
    }
    input
}

/// Inputs the fuzzer starts from (fuzz/seeds/<target>/).
pub fn seeds() -> Vec<Seed> {
    let mut s: Vec<Seed> = Vec::new();
    let mut add = |t: &'static str, name: &str, v: Vec<u8>| s.push((t, name.to_string(), v));

    // vxlan_decap: the decap unit tests' datagrams.
    let dg = |h: [u8; 8], f: &[u8]| [&h[..], f].concat();
    let icmp_in = icmp_frame(OUR_MAC, PEER_MACS[0]);
    add("vxlan_decap", "icmp", decap::encode(PEER_IPS[0], &dg(VXLAN_GOOD, &icmp_in)));
    add("vxlan_decap", "broadcast", decap::encode(PEER_IPS[1], &dg(VXLAN_GOOD, &icmp_frame(MacAddr::BROADCAST, PEER_MACS[1]))));
    add("vxlan_decap", "stranger", decap::encode(STRANGER, &dg(VXLAN_GOOD, &icmp_in)));
    add("vxlan_decap", "no-i-flag", decap::encode(PEER_IPS[0], &dg([0, 0, 0, 0, 0, 0, 1, 0], &icmp_in)));
    add("vxlan_decap", "reserved", decap::encode(PEER_IPS[0], &dg([0x0c, 0, 0, 0, 0, 0, 1, 0], &icmp_in)));
    add("vxlan_decap", "wrong-vni", decap::encode(PEER_IPS[0], &dg([0x08, 0, 0, 0, 0, 0, 2, 0], &icmp_in)));
    add("vxlan_decap", "inner-runt", decap::encode(PEER_IPS[0], &dg(VXLAN_GOOD, &icmp_in[..13])));
    add("vxlan_decap", "not-for-us", decap::encode(PEER_IPS[0], &dg(VXLAN_GOOD, &icmp_frame(PEER_MACS[0], PEER_MACS[0]))));
    let mut tcp_partial = tcp_frame(OUR_MAC, PEER_MACS[0], false, 1000, &[7; 100], true, false, false);
    make_partial_v4(&mut tcp_partial, 16);
    add("vxlan_decap", "tcp-partial", decap::encode(PEER_IPS[0], &dg(VXLAN_GOOD, &tcp_partial)));
    let mut udp_partial = udp_frame(OUR_MAC, PEER_MACS[0], b"hello vxlan");
    make_partial_v4(&mut udp_partial, 6);
    add("vxlan_decap", "udp-partial", decap::encode(PEER_IPS[0], &dg(VXLAN_GOOD, &udp_partial)));
    add("vxlan_decap", "tcp-full", decap::encode(PEER_IPS[0], &dg(VXLAN_GOOD, &tcp_frame(OUR_MAC, PEER_MACS[0], false, 1, &[7; 100], true, false, false))));

    // arp: the encap unit test's requests.
    let arp_req = |target: Ipv4Addr| {
        let mut f = vec![0u8; 42];
        f[..6].copy_from_slice(&MacAddr::BROADCAST.0);
        f[6..12].copy_from_slice(&OUR_MAC.0);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f[22..28].copy_from_slice(&OUR_MAC.0);
        f[28..32].copy_from_slice(&OUR_VTEP_IP.octets());
        f[38..42].copy_from_slice(&target.octets());
        f
    };
    add("arp", "request-peer0", arp::encode(0, &arp_req(PEER_VTEP_IPS[0])));
    add("arp", "request-peer1-padded", arp::encode(0, &[arp_req(PEER_VTEP_IPS[1]), vec![0; 18]].concat()));
    add("arp", "request-unknown", arp::encode(0, &arp_req(Ipv4Addr::new(10, 244, 9, 0))));
    let mut reply = arp_req(PEER_VTEP_IPS[0]);
    reply[21] = 2;
    add("arp", "reply", arp::encode(0, &reply));
    add("arp", "repair-all", arp::encode(1 | 2 | 4, &[0u8; 42]));

    // encap: the encap unit tests' frames.
    let zero = [0u8; 12];
    add("encap", "icmp", encap::encode(zero, 0, &icmp_frame(PEER_MACS[0], OUR_MAC)));
    add("encap", "unknown-mac", encap::encode(zero, 0, &icmp_frame(MacAddr([2, 0, 0, 0, 0, 0x99]), OUR_MAC)));
    add("encap", "broadcast", encap::encode(zero, 0, &icmp_frame(MacAddr::BROADCAST, OUR_MAC)));
    let mut big = icmp_frame(PEER_MACS[1], OUR_MAC);
    big.resize(14 + 1451, 0);
    add("encap", "too-big", encap::encode(zero, 0, &big));
    let mut partial = udp_frame(PEER_MACS[0], OUR_MAC, b"hello vxlan");
    make_partial_v4(&mut partial, 6);
    let needs = vnet_bytes(VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..VnetHdr::default() });
    add("encap", "udp-partial", encap::encode(needs, 0, &partial));
    let mut tcp_p = tcp_frame(PEER_MACS[0], OUR_MAC, false, 9, &pattern(200), true, false, true);
    make_partial_v4(&mut tcp_p, 16);
    let needs_tcp = vnet_bytes(VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..VnetHdr::default() });
    add("encap", "tcp-partial", encap::encode(needs_tcp, 0, &tcp_p));
    add("encap", "repair-tcp", encap::encode(zero, 1 | 4 | 8 | 16 | 32, &pattern(120)));
    add("encap", "arp-request", encap::encode(zero, 0, &arp_req(PEER_VTEP_IPS[0])));
    add("encap", "gso-superframe", encap::encode(vnet_bytes(gso(false, 1398)), 0, &tcp_frame(PEER_MACS[0], OUR_MAC, false, 1, &pattern(3000), true, false, true)));

    // tso_segment: the segment unit tests' super-frames (payloads kept small; `grow` makes them big).
    for (name, v6, len, mss, psh, fin, ts) in [
        ("v4-even", false, 1398 * 2, 1398, true, false, true),
        ("v4-short-last", false, 1000 * 2 + 100, 1000, true, false, true),
        ("v6-fin", true, 1378 * 2 + 1, 1378, true, true, true),
        ("single", false, 500, 1398, true, true, false),
    ] {
        let f = tcp_frame(PEER_MACS[0], OUR_MAC, v6, 0xffff_fff0, &pattern(len), psh, fin, ts);
        add("tso_segment", name, tso::encode(&gso(v6, mss), 0, 0, &f));
    }
    let small = tcp_frame(PEER_MACS[0], OUR_MAC, false, 5, &pattern(64), false, false, true);
    add("tso_segment", "grow-64k", tso::encode(&gso(false, 1448), 8, 65_000, &small));
    add("tso_segment", "shape-repair", tso::encode(&gso(false, 100), 1 | 4 | 8, 1000, &[]));
    // USO: a UDP frame shaped and grown by the repairs, v4 and v6, with a short last datagram.
    add("tso_segment", "uso-v4", tso::encode(&gso(false, 1200), 1 | 4 | 8 | 32, 1200 * 5 + 7, &[]));
    add("tso_segment", "uso-v6", tso::encode(&gso(true, 1180), 1 | 2 | 4 | 8 | 32, 1180 * 3 + 1, &[]));

    // gro_coalesce: the coalesce unit tests' runs.
    add("gro_coalesce", "v4-run", gro_run(false, 4, 300, true));
    add("gro_coalesce", "v6-run", gro_run(true, 4, 300, true));
    let p = [7u8; 100];
    let gap = [gro::record(0, &tcp_frame(OUR_MAC, PEER_MACS[0], false, 0, &p, false, false, true)), gro::record(0, &tcp_frame(OUR_MAC, PEER_MACS[0], false, 600, &p, false, false, true))].concat();
    add("gro_coalesce", "gap", gap);
    let short_then_long = [
        gro::record(0, &tcp_frame(OUR_MAC, PEER_MACS[0], false, 0, &p[..50], false, false, true)),
        gro::record(0, &tcp_frame(OUR_MAC, PEER_MACS[0], false, 50, &p[..50], false, false, true)),
        gro::record(0, &tcp_frame(OUR_MAC, PEER_MACS[0], false, 100, &p, false, false, true)),
    ]
    .concat();
    add("gro_coalesce", "short-then-long", short_then_long);
    add("gro_coalesce", "udp-run", udp_gro_run(false, 5, 300));
    add("gro_coalesce", "udp-run-v6", udp_gro_run(true, 3, 200));

    // ipip_decap: the IPIP unit tests' packets, and runs for the coalescer.
    add("ipip_decap", "tcp-run", ipip_run(4, 1000));
    add("ipip_decap", "tcp-run-mss", ipip_run(3, 1428));
    add("ipip_decap", "icmp", ipip::record(4, &ipip_icmp([10, 244, 1, 0])));
    add("ipip_decap", "stranger", ipip::record(2 | 4, &ipip_icmp([10, 244, 1, 0])));
    add("ipip_decap", "not-ours", ipip::record(4, &ipip_icmp([10, 244, 9, 0])));
    let mut frag = ipip::wrap(PEER_IPS[0], &ipip_icmp([10, 244, 1, 0]));
    frag[6] = 0x20; // MF
    add("ipip_decap", "outer-fragment", ipip::record(0, &frag));
    let mut bad = ipip_icmp([10, 244, 1, 0]);
    bad[8] ^= 1; // TTL: the inner header checksum no longer matches
    add("ipip_decap", "bad-inner-checksum", ipip::record(4, &bad));
    let mixed = [ipip_run(2, 500), ipip::record(2 | 4, &ipip_icmp([10, 244, 1, 0])), ipip_run(2, 500)].concat();
    add("ipip_decap", "runs-and-a-stranger", mixed);

    // config: the config unit tests' files.
    add("config", "good", GOOD_CONFIG.as_bytes().to_vec());
    add("config", "defaults", b"[node]\npublic_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\"\n".to_vec());
    add("config", "example", include_str!("../../../config/vxlan.toml").as_bytes().to_vec());
    let two = format!("{GOOD_CONFIG}[[peer]]\npublic_ip = \"192.0.2.3\"\nsubnet = \"10.244.3.0/24\"\nvtep_mac = \"02:00:00:00:00:03\"\n");
    add("config", "two-peers", two.into_bytes());

    // control_request: one line of each command, as the CLI sends them.
    for (name, line) in CONTROL_REQUESTS {
        add("control_request", name, line.as_bytes().to_vec());
    }
    s
}

const CONTROL_REQUESTS: [(&str, &str); 12] = [
    ("fdb-show", r#"{"cmd":"fdb_show"}"#),
    ("fdb-add", r#"{"cmd":"fdb_add","mac":"02:00:00:00:00:09","dst":"192.0.2.2"}"#),
    ("fdb-add-peer-mac", r#"{"cmd":"fdb_add","mac":"02:00:00:00:00:02","dst":"192.0.2.9"}"#),
    ("fdb-del", r#"{"cmd":"fdb_del","mac":"02:00:00:00:00:09"}"#),
    ("neigh-show", r#"{"cmd":"neigh_show"}"#),
    ("neigh-add", r#"{"cmd":"neigh_add","ip":"10.244.9.0","mac":"02:00:00:00:00:09"}"#),
    ("neigh-del-peer", r#"{"cmd":"neigh_del","ip":"10.244.2.0"}"#),
    ("route-show", r#"{"cmd":"route_show"}"#),
    ("peers", r#"{"cmd":"peers"}"#),
    ("stats", r#"{"cmd":"stats"}"#),
    ("leases", r#"{"cmd":"leases"}"#),
    ("fdb-add-newline", "{\"cmd\":\"fdb_add\",\"dst\":\"192.0.2.2\",\"mac\":\"02:00:00:00:00:0a\"}\n"),
];

/// Hand-made hostile inputs kept as regression tests (tests/fuzz-regressions/<target>/).
pub fn nasty() -> Vec<Seed> {
    let mut s: Vec<Seed> = Vec::new();
    let mut add = |t: &'static str, name: &str, v: Vec<u8>| s.push((t, format!("nasty-{name}"), v));
    let dg = |f: &[u8]| [&VXLAN_GOOD[..], f].concat();
    let tcp = tcp_frame(OUR_MAC, PEER_MACS[0], false, 1000, &pattern(100), true, false, false);

    // vxlan_decap
    let mut lie = decap::encode(PEER_IPS[0], &dg(&icmp_frame(OUR_MAC, PEER_MACS[0])));
    lie[1] = 0x80 | 10; // len claims 10 bytes more than the buffer has
    add("vxlan_decap", "len-beyond-buffer", lie);
    let mut ihl15 = with_ihl15(&tcp);
    make_partial_v4(&mut ihl15, 16);
    add("vxlan_decap", "ihl15-partial", decap::encode(PEER_IPS[0], &dg(&ihl15)));
    let mut total_lies = tcp.clone();
    make_partial_v4(&mut total_lies, 16);
    put16(&mut total_lies, 16, 1500); // total length beyond the frame
    add("vxlan_decap", "total-len-beyond-frame", decap::encode(PEER_IPS[0], &dg(&total_lies)));
    let mut total_short = tcp.clone();
    put16(&mut total_short, 16, 19); // below the header
    add("vxlan_decap", "total-len-below-ihl", decap::encode(PEER_IPS[0], &dg(&total_short)));
    add("vxlan_decap", "vxlan-header-only", decap::encode(PEER_IPS[0], &VXLAN_GOOD));
    add("vxlan_decap", "empty", Vec::new());

    // encap
    add("encap", "truncated-vnet-header", vec![0x01, 0x01, 0x42, 0, 0x76]);
    let zero = [0u8; 12];
    let out_tcp = tcp_frame(PEER_MACS[0], OUR_MAC, false, 1000, &pattern(100), true, false, false);
    let beyond = vnet_bytes(VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 400, ..VnetHdr::default() });
    add("encap", "csum-offset-beyond-frame", encap::encode(beyond, 0, &out_tcp));
    let max = vnet_bytes(VnetHdr { flags: F_NEEDS_CSUM, csum_start: 0xffff, csum_offset: 0xffff, ..VnetHdr::default() });
    add("encap", "csum-fields-max", encap::encode(max, 0, &out_tcp));
    let mut ihl15 = with_ihl15(&out_tcp);
    make_partial_v4(&mut ihl15, 16);
    let at74 = vnet_bytes(VnetHdr { flags: F_NEEDS_CSUM, csum_start: 74, csum_offset: 16, ..VnetHdr::default() });
    add("encap", "ihl15-partial", encap::encode(at74, 0, &ihl15));
    let mut runt = encap::encode(zero, 0, &out_tcp[..13]);
    runt[13] = 0x80 | 0x7f; // and frame_len lies
    add("encap", "runt-len-lies", runt);
    add("encap", "gso-size-0", encap::encode(vnet_bytes(gso(false, 0)), 0, &out_tcp));
    // A partial UDP checksum whose completion is 0: it must be sent as 0xffff (0 is "no checksum").
    let mut zero_sum = udp_frame(PEER_MACS[0], OUR_MAC, b"hello vxlan!");
    make_partial_v4(&mut zero_sum, 6);
    put16(&mut zero_sum, 42, 0);
    let rest = ref_sum(&zero_sum[34..], 0);
    put16(&mut zero_sum, 42, 0xffff - rest);
    let needs = vnet_bytes(VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..VnetHdr::default() });
    add("encap", "udp-checksum-completes-to-zero", encap::encode(needs, 0, &zero_sum));

    // arp
    let mut req = vec![0u8; 41];
    req[..6].copy_from_slice(&[0xff; 6]);
    add("arp", "truncated-request", arp::encode(1 | 2, &req));
    let mut lie = arp::encode(1 | 2 | 4, &[0u8; 42]);
    lie[13] = 0x80 | 1;
    add("arp", "len-beyond-buffer", lie);

    // tso_segment
    let sf = tcp_frame(PEER_MACS[0], OUR_MAC, false, 7, &pattern(3000), true, false, true);
    add("tso_segment", "gso-size-0", tso::encode(&gso(false, 0), 0, 0, &sf));
    add("tso_segment", "gso-size-1", tso::encode(&gso(false, 1), 0, 0, &sf));
    add("tso_segment", "gso-size-8", tso::encode(&gso(false, 8), 0, 0, &sf));
    add("tso_segment", "ihl15", tso::encode(&gso(false, 1000), 0, 0, &with_ihl15(&sf)));
    let mut total_lies = sf.clone();
    put16(&mut total_lies, 16, 40); // IP total length says headers only
    add("tso_segment", "total-len-lies", tso::encode(&gso(false, 1000), 0, 0, &total_lies));
    add("tso_segment", "v4-frame-v6-type", tso::encode(&gso(true, 1000), 0, 0, &sf));
    add("tso_segment", "headers-only", tso::encode(&gso(false, 1000), 0, 0, &sf[..66]));
    add("tso_segment", "truncated-tcp", tso::encode(&gso(false, 1000), 0, 0, &sf[..50]));
    add("tso_segment", "no-room", [tso::encode(&gso(false, 1000), 16, 0, &sf)].concat());
    let small = tcp_frame(PEER_MACS[0], OUR_MAC, false, 5, &pattern(64), false, false, true);
    add("tso_segment", "grow-64k-mss-65535", tso::encode(&gso(false, 65_535), 8, 65_535, &small));

    // gro_coalesce
    let seg = |seq: u32, p: &[u8]| tcp_frame(OUR_MAC, PEER_MACS[0], false, seq, p, false, false, true);
    let ihl15_run = [gro::record(0, &with_ihl15(&seg(0, &[1; 100]))), gro::record(0, &with_ihl15(&seg(100, &[1; 100])))].concat();
    add("gro_coalesce", "ihl15", ihl15_run);
    let mut padded = seg(0, &[2; 20]);
    padded.extend_from_slice(&[0xee; 30]); // Ethernet padding after the IP packet
    add("gro_coalesce", "padding", [gro::record(0, &padded), gro::record(0, &seg(20, &[2; 20]))].concat());
    let mut lies = seg(0, &[3; 100]);
    put16(&mut lies, 16, 1400); // total length beyond the frame
    add("gro_coalesce", "total-len-beyond-frame", [gro::record(0, &lies), gro::record(0, &seg(100, &[3; 100]))].concat());
    // A later segment with a header bit the first lacks must not be merged into it.
    let mut evil = seg(100, &[4; 100]);
    evil[20] |= 0x80; // IPv4 reserved flag
    add("gro_coalesce", "ipv4-reserved-flag-on-second", [gro::record(0, &seg(0, &[4; 100])), gro::record(8, &evil)].concat());
    let mut ae = seg(100, &[4; 100]);
    ae[46] |= 0x01; // TCP AE (AccECN)
    add("gro_coalesce", "tcp-ae-flag-on-second", [gro::record(0, &seg(0, &[4; 100])), gro::record(16, &ae)].concat());
    add("gro_coalesce", "one-byte-segments", gro_run(false, 5, 1, false));
    add("gro_coalesce", "max-segments", gro_run(false, 70, 8, false));

    // ipip_decap
    let mut ihl15 = ipip::wrap(PEER_IPS[0], &ipip_tcp(1, &pattern(100), true, false));
    ihl15.splice(20..20, [0u8; 40]);
    ihl15[0] = 0x4f;
    let total = ihl15.len() as u16;
    ihl15[2..4].copy_from_slice(&total.to_be_bytes());
    add("ipip_decap", "outer-ihl15", ipip::record(0, &ihl15));
    let mut long = ipip::wrap(PEER_IPS[0], &ipip_icmp([10, 244, 1, 0]));
    long[2..4].copy_from_slice(&2000u16.to_be_bytes());
    add("ipip_decap", "outer-total-len-beyond-packet", ipip::record(0, &long));
    let mut inner_long = ipip_icmp([10, 244, 1, 0]);
    inner_long.extend([0xee; 30]); // trailing bytes after the inner total length
    add("ipip_decap", "inner-shorter-than-outer", ipip::record(4, &inner_long));
    add("ipip_decap", "oversized-fin", ipip::record(4, &ipip_tcp(1, &pattern(3000), false, true)));
    add("ipip_decap", "oversized-ack", ipip::record(4, &ipip_tcp(1, &pattern(5000), false, false)));

    // config
    add("config", "deep-nesting", "a = ".bytes().chain(std::iter::repeat_n(b'[', 5000)).collect());
    add("config", "non-ascii-device", GOOD_CONFIG.replace("\"vtep0\"", "\"vtép\u{0}\"").into_bytes());
    add("config", "mtu-i64-min", GOOD_CONFIG.replace("mtu = 1450", "mtu = -9223372036854775808").into_bytes());
    add("config", "vni-max", GOOD_CONFIG.replace("vni = 1", "vni = 16777215").into_bytes());
    add("config", "peer-slash-0", GOOD_CONFIG.replace("10.244.2.0/24", "0.0.0.0/0").into_bytes());
    add("config", "adjacent-subnets", GOOD_CONFIG.replace("10.244.2.0/24", "10.244.0.0/24").into_bytes());

    // control_request
    add("control_request", "too-long", [b"{\"cmd\":\"stats\"}".as_slice(), &[b' '; 4096]].concat());
    add("control_request", "not-utf8", b"{\"cmd\":\"st\xffats\"}".to_vec());
    add("control_request", "deep-nesting", std::iter::repeat_n(b'[', 4000).collect());
    add("control_request", "long-unknown-cmd", format!("{{\"cmd\":\"{}\"}}", "x".repeat(4000)).into_bytes());
    add("control_request", "long-bad-mac", format!("{{\"cmd\":\"fdb_del\",\"mac\":\"{}\"}}", "é".repeat(1500)).into_bytes());
    add("control_request", "duplicate-field", br#"{"cmd":"fdb_del","mac":"02:00:00:00:00:09","mac":"02:00:00:00:00:02"}"#.to_vec());
    add("control_request", "cmd-not-string", br#"{"cmd":{"cmd":"stats"}}"#.to_vec());
    add("control_request", "null-field", br#"{"cmd":"fdb_del","mac":null}"#.to_vec());
    add("control_request", "broadcast-dst", br#"{"cmd":"fdb_add","mac":"02:00:00:00:00:09","dst":"255.255.255.255"}"#.to_vec());
    add("control_request", "own-mac", br#"{"cmd":"fdb_add","mac":"02:00:00:00:00:01","dst":"192.0.2.2"}"#.to_vec());
    s
}
