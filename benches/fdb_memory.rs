//! Resident memory of vtepd's forwarding state with 100k peers (issue target: under 64 MB).
//!
//! Builds, through the public API, what a running `vtepd run` holds for its data path — the three
//! tables (FDB, neighbours, peer allow-list) filled with 100k peers, and the buffers of two workers —
//! and prints VmRSS/VmHWM from /proc/self/status after each step. The worker buffers are written
//! end to end, because a running vtepd touches every slot once traffic has filled a batch of 64 KB
//! super-frames; untouched they would cost nothing and the number would flatter us.
//!
//! With `--with-config` it first generates and parses (`Config::parse`, as `vtepd run` does) a
//! config file naming every peer, keeps the parsed config as the daemon does, and shows what the
//! allocator keeps resident afterwards: with 100k peers the TOML parse, not the tables, sets
//! vtepd's resident size. The parse validates peers pairwise, so that mode takes about a minute.
//! Not counted in either mode: the control plane's record of installed peers, thread stacks.
//!
//! Run: `cargo bench --bench fdb_memory [-- [--with-config] [PEERS [WORKERS [BATCH]]]]`. No root needed.
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Instant;
use vtepd::control::config::Config;
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

// Peer i (from 1): underlay 172.16.0.0/12 + i, VTEP MAC 02:aa:i, tunnel address the network address
// of a /26 in 10/8 (room for a million peers, clear of node.subnet 10.244.1.0/24 below 250k).
fn peer(i: u32) -> (Ipv4Addr, MacAddr, Ipv4Addr) {
    let b = i.to_be_bytes();
    (Ipv4Addr::from(0xac10_0000 + i), MacAddr([2, 0xaa, b[0], b[1], b[2], b[3]]), Ipv4Addr::from(0x0a00_0000 + (i << 6)))
}

/// A `vtepd run` config naming `n` peers.
fn config_text(n: u32) -> String {
    let mut t = String::from(
        "[node]\npublic_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\"\nbackend = \"vxlan\"\n\n\
         [vxlan]\ndevice = \"vtep0\"\nvni = 1\nport = 8472\nmac = \"02:00:00:00:00:01\"\nmtu = 1450\n",
    );
    for i in 1..=n {
        let (ul, mac, net) = peer(i);
        let _ = write!(t, "\n[[peer]]\npublic_ip = \"{ul}\"\nsubnet = \"{net}/26\"\nvtep_mac = \"{mac}\"\n");
    }
    t
}

/// Returns freed heap to the kernel, so the next report shows what is live rather than what the
/// allocator keeps around after a burst of small allocations.
fn trim() {
    vtepd::io::release_free_memory();
}

fn main() {
    let with_config = std::env::args().any(|a| a == "--with-config");
    let peers = arg(0, 100_000);
    let workers = arg(1, 2);
    let batch = arg(2, 64);
    let (base, _) = rss_kib();
    report("start", base);

    let config = with_config.then(|| {
        let text = config_text(peers as u32);
        report(&format!("config text ({:.1} MiB)", text.len() as f64 / (1024.0 * 1024.0)), base);
        let t = Instant::now();
        let cfg = Config::parse(&text).expect("generated config is valid");
        let took = t.elapsed();
        drop(text);
        report(&format!("config parsed in {:.0} s, text dropped", took.as_secs_f64()), base);
        trim();
        report("  after malloc_trim(0)", base);
        assert_eq!(cfg.peers.len(), peers);
        cfg
    });

    let tables = Tables::new();
    // One copy-on-write update per table: `add_peer` per peer would copy the tables 100k times.
    tables.peers.update(|m| m.extend((1..=peers as u32).map(|i| (peer(i).0, Default::default()))));
    tables.fdb.update(|m| m.extend((1..=peers as u32).map(|i| (peer(i).1, peer(i).0))));
    tables.neigh.update(|m| m.extend((1..=peers as u32).map(|i| (peer(i).2, peer(i).1))));
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
    std::hint::black_box((&tables, &held, &config));
}
