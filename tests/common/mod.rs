//! Shared harness for the namespace tests: network namespaces, veth pairs, the `vtepd` process, config
//! files and a checksummed TCP transfer.
//!
//! Every resource is owned by an RAII guard whose `Drop` removes it, so a panicking test leaves no
//! namespace, process or file behind. Names carry a per-test tag and the process id, because the tests of
//! one binary run as parallel threads and several binaries may run at once.
//!
//! Waits are bounded (about 10 s, then a panic that says what was awaited); nothing asserts on speed.
//!
//! Here: commands, waits, the heavy-test lock. `netns` (namespaces, veths, ping, pods), `node` (temp
//! dir, per-host addresses and configs), `daemon` (the vtepd process), `transfer` (checksummed TCP,
//! background ping), `capture` (tcpdump/tshark), `packet` (AF_PACKET, ARP), `kernel` (the kernel's
//! tables and counters, a flannel.1 peer), `offload`, `etcd` and `ecn` (those tests' shared checks).
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod capture;
pub mod daemon;
pub mod ecn;
pub mod etcd;
pub mod kernel;
pub mod netns;
pub mod node;
pub mod offload;
pub mod packet;
pub mod transfer;

// Test files `use common::*`; which binary needs which part varies.
#[allow(unused_imports)]
pub use {capture::*, daemon::*, kernel::*, netns::*, node::*, packet::*, transfer::*};

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long any "wait until ready" poll may take before the test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of the throughput transfers.
pub const BIG_TRANSFER: usize = 50 * 1024 * 1024;

/// Every counter `vtepd run` prints on exit.
pub const ALL_COUNTERS: &[&str] = &[
    "rx_packets",
    "rx_bytes",
    "tx_packets",
    "tx_bytes",
    "arp_replies",
    "drop_rx_truncated",
    "drop_rx_no_i_flag",
    "drop_rx_reserved_bits",
    "drop_rx_wrong_vni",
    "drop_rx_unknown_source",
    "drop_rx_inner_runt",
    "drop_rx_not_for_us",
    "drop_rx_own_source_mac",
    "drop_rx_tap_write",
    "drop_rx_bad_gso",
    "drop_tx_runt",
    "drop_tx_unknown_dst_mac",
    "drop_tx_flood",
    "drop_tx_arp_unknown",
    "drop_tx_arp_other",
    "drop_tx_too_big",
    "drop_tx_bad_vnet_hdr",
    "drop_tx_bad_gso",
    "drop_tx_send_error",
];

/// Receive drops that well-formed VXLAN from a configured peer must never cause.
pub const RX_HEADER_DROPS: &[&str] = &[
    "drop_rx_truncated",
    "drop_rx_no_i_flag",
    "drop_rx_reserved_bits",
    "drop_rx_wrong_vni",
    "drop_rx_unknown_source",
];

pub fn vtepd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vtepd")
}

/// Panics with a clear message unless we are root: namespaces, veths and TAP devices need it.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test creates network namespaces and must run as root"
    );
}

/// A short unique suffix: the pid plus a per-process counter, so two guards of the same test never clash.
fn unique_suffix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------------------
// Running commands

/// Runs a command, returning its output; panics if it could not be started.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start `{cmd} {}`: {e}", args.join(" ")))
}

/// Runs a command and panics, with its stdout and stderr, unless it exits 0. Returns stdout.
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    if !out.status.success() {
        panic!(
            "`{cmd} {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cond` every 50 ms until it holds, for at most [`READY_TIMEOUT`]; panics naming `what`.
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_for(what, READY_TIMEOUT, cond)
}

/// The longest a fault test waits for vtepd to recover from something done to it.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Like [`wait_until`] with an explicit bound (polls every 50 ms).
pub fn wait_until_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {bound:?} waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Throughput tests serialise on this lock (two cores).
pub const HEAVY_LOCK_PATH: &str = "/tmp/vtepd-heavy-tests.lock";

/// An exclusive flock on [`HEAVY_LOCK_PATH`], held until drop. Throughput tests take it so that no two of
/// them (in any test binary) share the two cores. flock locks belong to the open file, so threads of one
/// process exclude each other too.
pub struct HeavyLock {
    _file: File,
}

pub fn heavy_lock() -> HeavyLock {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HEAVY_LOCK_PATH)
        .unwrap_or_else(|e| panic!("open {HEAVY_LOCK_PATH}: {e}"));
    loop {
        // SAFETY: flock(2) on an fd we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::Interrupted,
            "flock {HEAVY_LOCK_PATH}: {err}"
        );
    }
    HeavyLock { _file: file }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Output of a child process, collected by a reader thread so the pipe never fills.
type Captured = Arc<Mutex<String>>;

fn collect_output(mut r: impl Read + Send + 'static) -> (Captured, JoinHandle<()>) {
    let buf: Captured = Arc::default();
    let sink = Arc::clone(&buf);
    let h = thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    });
    (buf, h)
}
