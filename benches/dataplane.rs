//! Per-packet cost of the sans-IO core: encapsulation, decapsulation, FDB lookup, software TSO and
//! software GRO. No syscalls are measured here; `vtepd bench` (scripts/bench.py) measures the whole
//! path against the kernel's VXLAN device.
//!
//! Packet benchmarks are registered twice, once with an element throughput (criterion prints
//! packets/s; the time per iteration divided by the packets in it is ns per packet) and once with a
//! byte throughput, because criterion takes one throughput per benchmark.
//!
//! Every input is built once, deterministically, with etherparse (an independent encoder) and checked
//! to take the intended path before it is timed, so a change that makes a frame fall into a drop
//! branch fails loudly instead of reporting a wonderfully fast drop.
//!
//! Run: `cargo bench --bench dataplane` (add `-- --warm-up-time 1 --measurement-time 3` for a quick look).
use criterion::{black_box, criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use criterion::measurement::WallTime;
use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;
use vtepd::dataplane::decap::process_datagram;
use vtepd::dataplane::encap::{dispatch_frame, TxTables};
use vtepd::dataplane::offload::coalesce::{self, Run};
use vtepd::dataplane::offload::Framing;
use vtepd::dataplane::offload::segment;
use vtepd::dataplane::{RxVerdict, TxVerdict, Vtep, FRAME_OFFSET, VXLAN_OFFSET};
use vtepd::table::Fdb;
use vtepd::wire::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_UDP_L4};
use vtepd::wire::vxlan::Vni;
use vtepd::wire::MacAddr;

const OUR_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Inner TCP MSS with timestamps over a 1450-byte overlay MTU: 1450 - 20 (IP) - 32 (TCP + options).
const MSS: usize = 1398;
/// VXLAN header with the I flag and VNI 1, as a peer sends it.
const VXLAN_HDR: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 1, 0];

fn vtep() -> Vtep {
    Vtep { vni: Vni::new(1).unwrap(), mac: OUR_MAC, ip: Ipv4Addr::new(10, 244, 1, 0), mtu: 1450 }
}

/// Deterministic payload bytes (no all-zero data, so checksums do real work).
fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31).wrapping_add(seed * 7 + 1)) as u8).collect()
}

/// An Ethernet/IPv4/TCP frame with the timestamp option, as Linux sends bulk data.
fn tcp_frame(dst: MacAddr, src: MacAddr, seq: u32, data: &[u8], psh: bool) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4([10, 244, 1, 2], [10, 244, 2, 2], 64)
        .tcp(40000, 5001, seq, 502)
        .ack(77)
        .options(&[etherparse::TcpOptionElement::Timestamp(1000, 2000)])
        .unwrap();
    let b = if psh { b.psh() } else { b };
    let mut out = Vec::with_capacity(b.size(data.len()));
    b.write(&mut out, data).unwrap();
    out
}

/// A UDP frame of exactly `frame_len` bytes (at least 42).
fn udp_frame(dst: MacAddr, src: MacAddr, frame_len: usize) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(src.0, dst.0).ipv4([10, 244, 1, 2], [10, 244, 2, 2], 64).udp(40000, 5001);
    let mut out = Vec::new();
    b.write(&mut out, &payload(frame_len - 42, 3)).unwrap();
    assert_eq!(out.len(), frame_len);
    out
}

/// The folded pseudo-header sum of an IPv4/TCP frame: what the checksum field holds when the TAP
/// leaves the checksum to us (NEEDS_CSUM).
fn tcp_pseudo_fold(frame: &[u8]) -> u16 {
    let tcp_len = (frame.len() - 34) as u32;
    let mut s = 6 + tcp_len;
    for w in frame[26..34].chunks(2) {
        s += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A TAP read: virtio-net header, then the frame.
fn tap_buffer(vnet: VnetHdr, frame: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; FRAME_OFFSET + frame.len()];
    vnet.emit(&mut b[..FRAME_OFFSET]);
    b[FRAME_OFFSET..].copy_from_slice(frame);
    b
}

/// Registers `f` as `name/pkts` (elements) and `name/bytes` (bytes) in `g`.
fn both(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, packets: u64, bytes: u64, mut f: impl FnMut()) {
    g.throughput(Throughput::Elements(packets));
    g.bench_function(format!("{name}/pkts"), |b| b.iter(&mut f));
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(format!("{name}/bytes"), |b| b.iter(&mut f));
}

fn encap(c: &mut Criterion) {
    let vtep = vtep();
    let mut fdb = FxHashMap::default();
    fdb.insert(PEER_MAC, PEER_IP);
    let neigh = FxHashMap::default();
    let tables = TxTables { fdb: &fdb, neigh: &neigh };
    // A full-MTU TCP segment (1450-byte IP packet), a 64-byte frame, and the full-size segment with
    // the checksum left partial, which is what the TAP hands over once TUN_F_CSUM is on.
    let full = tcp_frame(PEER_MAC, OUR_MAC, 1, &payload(MSS, 1), false);
    assert_eq!(full.len(), 14 + 1450);
    let small = udp_frame(PEER_MAC, OUR_MAC, 64);
    let partial = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..VnetHdr::default() };
    let mut full_partial = full.clone();
    full_partial[50..52].copy_from_slice(&tcp_pseudo_fold(&full).to_be_bytes());
    // (name, TAP buffer, the frame that must leave: a partial checksum completed as etherparse has it)
    let cases = [
        ("1450B", tap_buffer(VnetHdr::default(), &full), &full),
        ("64B", tap_buffer(VnetHdr::default(), &small), &small),
        ("1450B_csum_partial", tap_buffer(partial, &full_partial), &full),
    ];
    let mut g = c.benchmark_group("encap");
    for (name, mut buf, want) in cases {
        let len = buf.len() - FRAME_OFFSET;
        let mut once = buf.clone();
        let v = dispatch_frame(&vtep, &tables, &mut once, len);
        assert!(matches!(v, TxVerdict::Forward { dst: PEER_IP, .. }), "{name}: {v:?}");
        assert_eq!(&once[VXLAN_OFFSET..FRAME_OFFSET], &VXLAN_HDR, "{name}");
        assert!(once[FRAME_OFFSET..] == want[..], "{name}: encapsulated frame differs");
        // Encapsulation writes the VXLAN header over the vnet header's tail and completes a partial
        // checksum; put both back (14 bytes) as the next TAP read would, or every later round would
        // see csum_start 0 / csum_offset 0, overwrite the destination MAC and measure a drop.
        let pristine = buf.clone();
        let restore = |buf: &mut [u8]| {
            buf[..FRAME_OFFSET].copy_from_slice(&pristine[..FRAME_OFFSET]);
            buf[FRAME_OFFSET + 50..FRAME_OFFSET + 52].copy_from_slice(&pristine[FRAME_OFFSET + 50..FRAME_OFFSET + 52]);
        };
        both(&mut g, name, 1, len as u64, || {
            restore(&mut buf);
            let v = dispatch_frame(&vtep, &tables, black_box(&mut buf), black_box(len));
            // Checked every round (a compare and a predicted branch): a silent fall into a drop branch
            // is exactly how this benchmark once measured the wrong thing.
            assert!(matches!(v, TxVerdict::Forward { .. }), "{name}: {v:?}");
        });
    }
    g.finish();
}

fn decap(c: &mut Criterion) {
    let vtep = vtep();
    let mut peers = vtepd::table::PeerSet::default();
    peers.insert(PEER_IP, Default::default());
    let full = tcp_frame(OUR_MAC, PEER_MAC, 1, &payload(MSS, 2), false);
    let small = udp_frame(OUR_MAC, PEER_MAC, 64);
    let mut g = c.benchmark_group("decap");
    for (name, frame) in [("1450B", full), ("64B", small)] {
        let mut buf = vec![0u8; VXLAN_OFFSET];
        buf.extend_from_slice(&VXLAN_HDR);
        buf.extend_from_slice(&frame);
        let len = buf.len() - VXLAN_OFFSET;
        // Decapsulation writes the vnet header over the VXLAN header; put it back (8 bytes) so every
        // round validates a real datagram, and check that it was delivered.
        both(&mut g, name, 1, frame.len() as u64, || {
            buf[VXLAN_OFFSET..FRAME_OFFSET].copy_from_slice(&VXLAN_HDR);
            let v = process_datagram(&vtep, &peers, PEER_IP, black_box(&mut buf), black_box(len), 1);
            assert!(matches!(v, RxVerdict::Deliver { .. }), "{name}: {v:?}");
        });
    }
    g.finish();
}

/// xorshift64: deterministic "random" probe order, so big tables are hit all over, not in insertion order.
fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

fn mac_of(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([2, 0x42, b[0], b[1], b[2], b[3]])
}

fn fdb_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb_lookup");
    g.throughput(Throughput::Elements(1));
    for n in [1u32, 1_000, 100_000, 1_000_000] {
        let fdb = Fdb::default();
        // One bulk update: a copy-on-write insert per entry would be O(n²).
        fdb.update(|m| {
            m.reserve(n as usize);
            for i in 0..n {
                m.insert(mac_of(i), Ipv4Addr::from(0xc000_0000 | i));
            }
        });
        assert_eq!(fdb.len(), n as usize);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        // 64k probe keys: more than L1 holds, so the probe list itself is not what stays hot.
        let keys: Vec<MacAddr> = (0..1 << 16).map(|_| mac_of((xorshift(&mut rng) % n as u64) as u32)).collect();
        let mut i = 0usize;
        // What a worker does per batch (load) plus per packet (get), here both per packet: the upper bound.
        g.bench_function(format!("load_get/{n}"), |b| {
            b.iter(|| {
                let k = &keys[i & 0xffff];
                i = i.wrapping_add(1);
                let hit = fdb.load().get(black_box(k)).copied();
                black_box(hit.expect("every probe is a hit"))
            })
        });
        // A held snapshot: the per-packet part alone.
        let snap = fdb.load();
        g.bench_function(format!("get/{n}"), |b| {
            b.iter(|| {
                let k = &keys[i & 0xffff];
                i = i.wrapping_add(1);
                black_box(snap.get(black_box(k)).copied().expect("every probe is a hit"))
            })
        });
    }
    g.finish();
}

fn segmentation(c: &mut Criterion) {
    // The largest super-frame the TAP hands over: a 65535-byte IP packet, MSS 1398, so 46 full
    // segments and a short last one.
    let data = payload(65_535 - 20 - 32, 4);
    let frame = tcp_frame(PEER_MAC, OUR_MAC, 0xffff_f000, &data, true);
    let vnet = VnetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_TCPV4, hdr_len: 66, gso_size: MSS as u16, csum_start: 34, csum_offset: 16 };
    let vni = Vni::new(1).unwrap();
    // The worker's segment buffer size (io::worker::SEGMENT_BUF).
    let mut out = vec![0u8; 256 * 1024];
    let segs = segment::segment(&vnet, &frame, Framing::Ethernet, &vni, &mut out).unwrap();
    assert_eq!((segs.count, segs.seg_len), (47, 8 + 14 + 1450));
    let mut g = c.benchmark_group("segment_tcp");
    both(&mut g, "64KB_mss1398", segs.count as u64, frame.len() as u64, || {
        black_box(segment::segment(&vnet, black_box(&frame), Framing::Ethernet, &vni, black_box(&mut out)).unwrap());
    });
    g.finish();

    // USO: what a QUIC stack's UDP_SEGMENT send of 48 datagrams of 1200 bytes becomes.
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(OUR_MAC.0, PEER_MAC.0)
        .ipv4([10, 244, 1, 2], [10, 244, 2, 2], 64)
        .udp(4433, 443)
        .write(&mut frame, &payload(48 * 1200, 5))
        .unwrap();
    let vnet = VnetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_UDP_L4, hdr_len: 42, gso_size: 1200, csum_start: 34, csum_offset: 6 };
    let segs = segment::segment(&vnet, &frame, Framing::Ethernet, &vni, &mut out).unwrap();
    assert_eq!(segs.count, 48);
    let mut g = c.benchmark_group("segment_udp");
    both(&mut g, "57KB_1200B", segs.count as u64, frame.len() as u64, || {
        black_box(segment::segment(&vnet, black_box(&frame), Framing::Ethernet, &vni, black_box(&mut out)).unwrap());
    });
    g.finish();
}

/// The Internet checksum alone: a segment's payload and a whole super-frame; beside it the two
/// crates we could have used instead (the README's dependency table quotes the comparison).
fn internet_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [MSS, 65_536] {
        let data = payload(len, 6);
        let ours = !vtepd::wire::checksum::fold(vtepd::wire::checksum::sum(&data, 0));
        assert_eq!(u16::from_be_bytes(internet_checksum::checksum(&data)), ours, "internet-checksum disagrees");
        // etherparse sums native-endian words; its callers swap the result with to_be().
        assert_eq!(etherparse::checksum::Sum16BitWords::new().add_slice(&data).ones_complement().to_be(), ours, "etherparse disagrees");
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len}B"), |b| b.iter(|| black_box(vtepd::wire::checksum::sum(black_box(&data), 0))));
        g.bench_function(format!("{len}B_internet_checksum_crate"), |b| {
            b.iter(|| black_box(internet_checksum::checksum(black_box(&data))))
        });
        g.bench_function(format!("{len}B_etherparse"), |b| {
            b.iter(|| black_box(etherparse::checksum::Sum16BitWords::new().add_slice(black_box(&data)).ones_complement()))
        });
    }
    g.finish();
}

fn coalesce(c: &mut Criterion) {
    const N: usize = 44;
    // 44 full segments of one flow as UDP GRO hands them over: VXLAN datagrams back to back in one
    // buffer, the last with PSH (which closes the run).
    let data = payload(N * MSS, 5);
    let frames: Vec<Vec<u8>> =
        (0..N).map(|i| tcp_frame(OUR_MAC, PEER_MAC, 1000 + (i * MSS) as u32, &data[i * MSS..(i + 1) * MSS], i + 1 == N)).collect();
    let dgram_len = 8 + frames[0].len();
    let mut gro = Vec::with_capacity(N * dgram_len);
    for f in &frames {
        gro.extend_from_slice(&VXLAN_HDR);
        gro.extend_from_slice(f);
    }
    let hdr_len = 14 + 20 + 32;
    let pristine_head: Vec<u8> = frames[0][..hdr_len].to_vec();
    let frame_at = |i: usize| 8 + i * dgram_len..(i + 1) * dgram_len;

    // The driver's loop (io::worker::deliver + flush_run) without the writev.
    let merge = |gro: &mut [u8]| -> (Run, VnetHdr) {
        let mut run = Run::start(coalesce::candidate(&gro[frame_at(0)], Framing::Ethernet).expect("head is a candidate"));
        for i in 1..N {
            let s = coalesce::candidate(&gro[frame_at(i)], Framing::Ethernet).expect("segment is a candidate");
            assert!(run.accepts(&gro[frame_at(0)], &gro[frame_at(i)], &s), "segment {i} continues the run");
            run.push(&s);
        }
        let vnet = coalesce::finish(&mut gro[frame_at(0)], &run, 1450);
        // finish rewrote the head's IP length, checksums and flags; restore them for the next round.
        gro[frame_at(0)][..hdr_len].copy_from_slice(&pristine_head);
        (run, vnet)
    };
    let (run, vnet) = merge(&mut gro);
    assert_eq!((run.count, run.payload, vnet.gso_size as usize), (N, N * MSS, MSS));

    let mut g = c.benchmark_group("coalesce");
    let bytes: usize = frames.iter().map(Vec::len).sum();
    both(&mut g, "44x1398", N as u64, bytes as u64, || {
        black_box(merge(black_box(&mut gro)));
    });
    g.finish();
}

criterion_group!(benches, encap, decap, fdb_lookup, segmentation, internet_checksum, coalesce);
criterion_main!(benches);
