//! Resident memory of vtepd's forwarding state with 100k peers (issue target: under 64 MB).
//!
//! Builds, through the public API, what a running `vtepd run` holds for its data path — the three
//! tables (FDB, neighbours, peer allow-list) filled with 100k peers, and the buffers of two workers —
//! and prints VmRSS/VmHWM from /proc/self/status after each step. The worker buffers are written
//! end to end, because a running vtepd touches every slot once traffic has filled a batch of 64 KB
//! super-frames; untouched they would cost nothing and the number would flatter us.
//!
//! Not counted here (the daemon run in the report measures them): the parsed config and the
//! control plane's record of installed peers, the TOML text while it is parsed, thread stacks.
//!
//! Run: `cargo bench --bench fdb_memory` (optionally `-- PEERS WORKERS BATCH`). No root needed.
use std::net::Ipv4Addr;
use vtepd::dataplane::FRAME_OFFSET;
use vtepd::io::udp::MmsgScratch;
use vtepd::io::Slots;
use vtepd::table::Tables;
use vtepd::wire::MacAddr;

/// io::worker::SLOT_SIZE: the largest TAP frame (64 KB) plus the virtio-net header.
const SLOT_SIZE: usize = FRAME_OFFSET + 65_536;
/// io::worker::SEGMENT_BUF.
const SEGMENT_BUF: usize = 256 * 1024;

/// (VmRSS, VmHWM) in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn report(step: &str, base: u64) {
    let (rss, hwm) = rss_kib();
    println!("{step:<48} VmRSS {:>8.1} MiB (+{:>7.1})  VmHWM {:>8.1} MiB", mib(rss), mib(rss - base), mib(hwm));
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn arg(i: usize, default: usize) -> usize {
    // `cargo bench` passes `--bench`; only plain numbers are ours.
    std::env::args().skip(1).filter(|a| !a.starts_with('-')).nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    let peers = arg(0, 100_000);
    let workers = arg(1, 2);
    let batch = arg(2, 64);
    let (base, _) = rss_kib();
    report("start", base);

    let tables = Tables::new();
    // Peer i: underlay 172.16.0.0/12 + i, VTEP MAC 02:aa:i, tunnel address the .0 of a /24 in 10/8.
    let peer = |i: u32| {
        let b = i.to_be_bytes();
        (Ipv4Addr::from(0xac10_0000 + i), MacAddr([2, 0xaa, b[0], b[1], b[2], b[3]]), Ipv4Addr::from(0x0a00_0000 + (i << 8)))
    };
    // One copy-on-write update per table: `add_peer` per peer would copy the tables 100k times.
    tables.peers.update(|m| m.extend((0..peers as u32).map(|i| (peer(i).0, ()))));
    tables.fdb.update(|m| m.extend((0..peers as u32).map(|i| (peer(i).1, peer(i).0))));
    tables.neigh.update(|m| m.extend((0..peers as u32).map(|i| (peer(i).2, peer(i).1))));
    assert_eq!((tables.fdb.len(), tables.neigh.len(), tables.peers.len()), (peers, peers, peers));
    report(&format!("tables with {peers} peers"), base);

    let mut held = Vec::new();
    for _ in 0..workers {
        let mut tx = Slots::new(batch, SLOT_SIZE);
        let mut rx = Slots::new(batch, SLOT_SIZE);
        let mut segments = vec![0u8; SEGMENT_BUF];
        for s in 0..batch {
            tx.get_mut(s).fill(1);
            rx.get_mut(s).fill(1);
        }
        segments.fill(1);
        held.push((tx, rx, segments, MmsgScratch::new(batch.max(64))));
    }
    report(&format!("+ {workers} workers' buffers (batch {batch}, touched)"), base);

    // A reader's snapshot pins a whole old table while the control plane publishes a new one:
    // the peak during a peer change is two copies of the table being changed.
    let pinned = tables.fdb.load();
    tables.fdb.insert(MacAddr([2, 0xbb, 0, 0, 0, 1]), Ipv4Addr::new(192, 0, 2, 99));
    report("+ one FDB change while a reader holds the old", base);
    drop(pinned);
    std::hint::black_box((&tables, &held));
}
