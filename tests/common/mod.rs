//! Shared harness for the namespace tests: network namespaces, veth pairs, the `vtepd` process, config
//! files and a checksummed TCP transfer.
//!
//! Every resource is owned by an RAII guard whose `Drop` removes it, so a panicking test leaves no
//! namespace, process or file behind. Names carry a per-test tag and the process id, because the tests of
//! one binary run as parallel threads and several binaries may run at once.
//!
//! Waits are bounded (about 10 s, then a panic that says what was awaited); nothing asserts on speed.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod offload;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

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

// ---------------------------------------------------------------------------------------------------------
// Network namespaces

/// A named network namespace (`ip netns add`). Drop kills whatever still runs in it and deletes it, which
/// also removes its veths, bridges and TAP devices.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `vt-<tag>-<pid>-<n>` with `lo` up.
    pub fn new(tag: &str) -> Netns {
        let name = format!("vt-{tag}-{}", unique_suffix());
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args...`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// `ip netns exec NAME cmd args...` without checking the exit status.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str(), cmd];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip netns exec NAME cmd args...`, which must succeed; returns stdout.
    pub fn exec_ok(&self, cmd: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", self.name.as_str(), cmd];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    pub fn sysctl(&self, key_value: &str) {
        self.exec_ok("sysctl", &["-q", "-w", key_value]);
    }

    /// Adds `cidr` to `dev` and sets the device up.
    pub fn addr(&self, dev: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", dev]);
        self.ip(&["link", "set", dev, "up"]);
    }

    /// True if `ip -n NAME route show` has a route for exactly `prefix` (e.g. "10.244.2.0/24").
    pub fn has_route(&self, prefix: &str) -> bool {
        self.ip(&["route", "show"])
            .lines()
            .any(|l| l.split_whitespace().next() == Some(prefix))
    }

    pub fn has_link(&self, dev: &str) -> bool {
        let mut args = vec!["-n", self.name.as_str()];
        args.extend_from_slice(&["link", "show", "dev", dev]);
        run("ip", &args).status.success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside would keep nothing alive (the name goes away with `del`), but a stray
        // vtepd or ping must not outlive the test.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: plain kill(2) on a pid that `ip netns pids` reported for our namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Creates a veth pair with one end in each namespace (names are per namespace, so they may be equal)
/// and sets both up.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    a.ip(&[
        "link",
        "add",
        a_dev,
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ]);
    a.ip(&["link", "set", a_dev, "up"]);
    b.ip(&["link", "set", b_dev, "up"]);
}

/// The underlay device name in both host namespaces.
pub const UNDERLAY_DEV: &str = "ul0";

/// Two "hosts" on one underlay link: A = 192.0.2.1/24, B = 192.0.2.2/24 on `ul0`.
pub struct TwoHosts {
    pub a: Netns,
    pub b: Netns,
}

impl TwoHosts {
    pub fn new(tag: &str) -> TwoHosts {
        require_root();
        let a = Netns::new(&format!("{tag}a"));
        let b = Netns::new(&format!("{tag}b"));
        veth(&a, UNDERLAY_DEV, &b, UNDERLAY_DEV);
        a.addr(UNDERLAY_DEV, "192.0.2.1/24");
        b.addr(UNDERLAY_DEV, "192.0.2.2/24");
        wait_until("underlay ping 192.0.2.1 -> 192.0.2.2", || {
            a.exec("ping", &["-c", "1", "-W", "1", "192.0.2.2"])
                .status
                .success()
        });
        TwoHosts { a, b }
    }
}

/// Polls `cond` every 50 ms until it holds, for at most [`READY_TIMEOUT`]; panics naming `what`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {READY_TIMEOUT:?} waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `f` on a new thread that has joined the namespace `ns` (setns on /var/run/netns/NAME).
/// Sockets created there belong to that namespace.
pub fn spawn_in_netns<T, F>(ns: &str, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = format!("/var/run/netns/{ns}");
    thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns(2) with a valid namespace fd; CLONE_NEWNET only moves this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        f()
    })
}

/// Like [`spawn_in_netns`] but waits for the result; a panic in `f` is re-raised here.
pub fn in_netns<T, F>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    spawn_in_netns(ns, f)
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

// ---------------------------------------------------------------------------------------------------------
// Ping

/// Pings `dst` from `src` inside `ns`: first polls single pings until one answers (bounded), then
/// requires `ping -c 3` to succeed.
pub fn ping(ns: &Netns, src: &str, dst: &str) {
    let what = format!("ping {src} -> {dst} in {}", ns.name());
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let out = ns.exec("ping", &["-c", "1", "-W", "1", "-I", src, dst]);
        if out.status.success() {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {READY_TIMEOUT:?} waiting for {what}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    ns.exec_ok("ping", &["-c", "3", "-W", "2", "-I", src, dst]);
}

// ---------------------------------------------------------------------------------------------------------
// Temporary directory and configs

/// A directory under /tmp removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("vtepd-test-{tag}-{}", unique_suffix()));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the directory and returns the full path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[derive(Clone, Debug)]
pub struct PeerCfg {
    pub public_ip: String,
    pub subnet: String,
    pub vtep_mac: String,
}

#[derive(Clone, Debug)]
pub struct NodeCfg {
    pub public_ip: String,
    pub subnet: String,
    pub device: String,
    pub vni: u32,
    pub port: u16,
    pub mac: String,
    pub mtu: u32,
    pub peers: Vec<PeerCfg>,
}

/// VTEP MAC of host `n`: 02:00:00:00:00:0n.
pub fn host_mac(n: u8) -> String {
    format!("02:00:00:00:00:{n:02x}")
}

/// The overlay address vtepd puts on host `n`'s device (like flannel.1): 10.244.n.0.
pub fn host_vtep_ip(n: u8) -> String {
    format!("10.244.{n}.0")
}

pub fn host_subnet(n: u8) -> String {
    format!("10.244.{n}.0/24")
}

pub fn host_underlay_ip(n: u8) -> String {
    format!("192.0.2.{n}")
}

impl PeerCfg {
    /// Host `n` as seen by its peers.
    pub fn host(n: u8) -> PeerCfg {
        PeerCfg {
            public_ip: host_underlay_ip(n),
            subnet: host_subnet(n),
            vtep_mac: host_mac(n),
        }
    }
}

impl NodeCfg {
    /// The standard config of host `me` (192.0.2.me, 10.244.me.0/24, MAC ..:0me, vtep0, vni 1, port 8472,
    /// mtu 1450) with the given hosts as peers.
    pub fn host(me: u8, peers: &[u8]) -> NodeCfg {
        NodeCfg {
            public_ip: host_underlay_ip(me),
            subnet: host_subnet(me),
            device: "vtep0".into(),
            vni: 1,
            port: 8472,
            mac: host_mac(me),
            mtu: 1450,
            peers: peers.iter().map(|&p| PeerCfg::host(p)).collect(),
        }
    }

    pub fn to_toml(&self) -> String {
        let mut s = format!(
            "[node]\npublic_ip = \"{}\"\nsubnet = \"{}\"\nbackend = \"vxlan\"\n\n\
             [vxlan]\ndevice = \"{}\"\nvni = {}\nport = {}\nmac = \"{}\"\nmtu = {}\n",
            self.public_ip, self.subnet, self.device, self.vni, self.port, self.mac, self.mtu
        );
        for p in &self.peers {
            s.push_str(&format!(
                "\n[[peer]]\npublic_ip = \"{}\"\nsubnet = \"{}\"\nvtep_mac = \"{}\"\n",
                p.public_ip, p.subnet, p.vtep_mac
            ));
        }
        s
    }
}

/// A config for a routed backend (`ipip` or `host-gw`): `[node]`, then `section` verbatim (e.g.
/// "[ipip]\ndirect_routing = true\n", or ""), then one `[[peer]]` per (public_ip, subnet).
pub fn routed_toml(backend: &str, public_ip: &str, subnet: &str, section: &str, peers: &[(&str, &str)]) -> String {
    let mut s = format!(
        "[node]\npublic_ip = \"{public_ip}\"\nsubnet = \"{subnet}\"\nbackend = \"{backend}\"\n\n{section}"
    );
    for (ip, net) in peers {
        s.push_str(&format!("\n[[peer]]\npublic_ip = \"{ip}\"\nsubnet = \"{net}\"\n"));
    }
    s
}

/// Receive drops that well-formed IPIP from a configured peer must never cause.
pub const IPIP_RX_DROPS: &[&str] = &[
    "drop_rx_unknown_source",
    "drop_rx_outer_malformed",
    "drop_rx_outer_fragment",
    "drop_rx_not_ipip",
    "drop_rx_inner_truncated",
    "drop_rx_inner_malformed",
    "drop_rx_inner_bad_checksum",
    "drop_rx_inner_not_ours",
    "drop_rx_tap_write",
];

// ---------------------------------------------------------------------------------------------------------
// The daemon

/// Output of a child process, collected by a reader thread so the pipe never fills.
type Captured = Arc<Mutex<String>>;

fn capture(mut r: impl Read + Send + 'static) -> (Captured, JoinHandle<()>) {
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

/// A control socket path no other test uses: the namespace name is unique per test and process.
pub fn test_socket(ns: &Netns) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join("vtepd-test-sockets");
    std::fs::create_dir_all(&dir).expect("create socket dir");
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("{}-{n}.sock", ns.name()))
}

/// A running `vtepd run` inside a namespace. Drop kills it if [`Vtepd::stop`] was not called, and prints
/// its stderr when the test is panicking so the failure shows what the daemon said.
pub struct Vtepd {
    ns: String,
    /// The control socket it serves (`--socket`).
    pub socket: PathBuf,
    child: Option<Child>,
    stdout: Captured,
    stderr: Captured,
    readers: Vec<JoinHandle<()>>,
}

impl Vtepd {
    /// Starts `ip netns exec NS vtepd run --config FILE` and waits until the device exists and every
    /// peer's route is installed. Set VTEPD_TEST_LOG_LEVEL (e.g. `debug`) to pass `--log-level`.
    pub fn start(ns: &Netns, config: &Path, cfg: &NodeCfg) -> Vtepd {
        Vtepd::start_with(ns, config, cfg, &[])
    }

    /// As `start`, with extra `vtepd run` arguments.
    pub fn start_with(ns: &Netns, config: &Path, cfg: &NodeCfg, extra: &[&str]) -> Vtepd {
        let what = format!(
            "device {} and routes {:?}",
            cfg.device,
            cfg.peers.iter().map(|p| &p.subnet).collect::<Vec<_>>()
        );
        Vtepd::start_until_with(ns, config, extra, &what, || {
            ns.has_link(&cfg.device) && cfg.peers.iter().all(|p| ns.has_route(&p.subnet))
        })
    }

    /// Like [`Vtepd::start`] for any backend: waits until `ready` holds (e.g. the device and routes
    /// of an IPIP or host-gw config exist); `what` names the wait in the timeout message.
    pub fn start_until(ns: &Netns, config: &Path, what: &str, ready: impl FnMut() -> bool) -> Vtepd {
        Vtepd::start_until_with(ns, config, &[], what, ready)
    }

    /// As `start_until`, with extra `vtepd run` arguments.
    pub fn start_until_with(
        ns: &Netns,
        config: &Path,
        extra: &[&str],
        what: &str,
        ready: impl FnMut() -> bool,
    ) -> Vtepd {
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            ns.name().into(),
            vtepd_bin().into(),
            "run".into(),
            "--config".into(),
            config.display().to_string(),
        ];
        if let Ok(level) = std::env::var("VTEPD_TEST_LOG_LEVEL") {
            args.push("--log-level".into());
            args.push(level);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        // Namespaces share the filesystem, so the default /run/vtepd/<device>.sock would collide
        // between tests running in parallel: each daemon gets a socket of its own.
        let socket = match extra.iter().position(|a| *a == "--socket") {
            Some(i) => PathBuf::from(extra[i + 1]),
            None => {
                let s = test_socket(ns);
                args.push("--socket".into());
                args.push(s.display().to_string());
                s
            }
        };
        // `ip netns exec` execs the program after setns, so the child's pid is vtepd's own.
        let mut child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vtepd");
        let (stdout, h1) = capture(child.stdout.take().unwrap());
        let (stderr, h2) = capture(child.stderr.take().unwrap());
        let mut d = Vtepd {
            ns: ns.name().into(),
            socket,
            child: Some(child),
            stdout,
            stderr,
            readers: vec![h1, h2],
        };
        d.wait_ready(ns, what, ready);
        d
    }

    fn wait_ready(&mut self, ns: &Netns, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                self.join_readers();
                panic!(
                    "vtepd in {} exited before becoming ready ({status})\nstderr:\n{}\nstdout:\n{}",
                    self.ns,
                    self.stderr(),
                    self.stdout.lock().unwrap()
                );
            }
            if ready() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "vtepd in {} not ready after {READY_TIMEOUT:?}: want {what}\n\
                     ip link:\n{}\nip route:\n{}\nstderr so far:\n{}",
                    self.ns,
                    ns.ip(&["link", "show"]),
                    ns.ip(&["route", "show"]),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn join_readers(&mut self) {
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }

    /// Sends SIGTERM, waits (bounded) for a clean exit 0 and returns the counters it printed. Panics if it
    /// does not exit, exits non-zero, or leaves out a counter.
    pub fn stop(mut self) -> HashMap<String, u64> {
        let mut child = self.child.take().expect("vtepd already stopped");
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + READY_TIMEOUT;
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.join_readers();
                panic!(
                    "vtepd in {} did not exit within {READY_TIMEOUT:?} of SIGTERM\nstderr:\n{}",
                    self.ns,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.join_readers();
        let stdout = self.stdout.lock().unwrap().clone();
        assert!(
            status.success(),
            "vtepd in {} exited with {status} after SIGTERM\nstdout:\n{stdout}\nstderr:\n{}",
            self.ns,
            self.stderr()
        );
        let counters = parse_counters(&stdout);
        let missing: Vec<_> = ALL_COUNTERS
            .iter()
            .filter(|c| !counters.contains_key(**c))
            .collect();
        assert!(
            missing.is_empty(),
            "vtepd in {} did not print counters {missing:?}; stdout:\n{stdout}",
            self.ns
        );
        counters
    }
}

impl Drop for Vtepd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_readers();
        if thread::panicking() {
            eprintln!(
                "--- vtepd stderr ({}) ---\n{}\n--- end ---",
                self.ns,
                self.stderr()
            );
        }
    }
}

/// A receive buffer of `bytes` for a test's UDP receiver, past rmem_max (we are root).
pub fn force_rcvbuf(sock: &std::net::UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with a valid fd and an int option value.
    let rc = unsafe {
        libc::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&bytes as *const libc::c_int).cast(), 4)
    };
    // A silently small buffer would make the receiver, not vtepd, drop the burst under test.
    assert_eq!(rc, 0, "SO_RCVBUFFORCE {bytes}: {}", std::io::Error::last_os_error());
}

/// `vtepd <cmd> --json` (e.g. `stats`, `peers`) against a running daemon.
pub fn ctl_json(v: &Vtepd, cmd: &str) -> serde_json::Value {
    let out = Command::new(vtepd_bin()).args([cmd, "--json", "--socket"]).arg(&v.socket).output().expect("run vtepd");
    assert!(out.status.success(), "vtepd {cmd} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("vtepd {cmd} printed no JSON ({e})"))
}

/// Parses `name value` lines; other lines (if any) are ignored.
pub fn parse_counters(stdout: &str) -> HashMap<String, u64> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (name, value, rest) = (it.next()?, it.next()?, it.next());
            if rest.is_some() {
                return None;
            }
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Formats counters sorted by name, for assertion messages.
pub fn show_counters(c: &HashMap<String, u64>) -> String {
    let mut v: Vec<_> = c.iter().collect();
    v.sort();
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts the traffic counters moved and no header-level receive drop happened.
pub fn assert_clean_traffic(host: &str, c: &HashMap<String, u64>) {
    for k in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"] {
        assert!(c[k] > 0, "{host}: {k} is 0\n{}", show_counters(c));
    }
    for k in RX_HEADER_DROPS {
        assert_eq!(
            c[*k],
            0,
            "{host}: {k} non-zero with only well-formed peer traffic\n{}",
            show_counters(c)
        );
    }
}

/// Asserts the daemon removed its device and the peers' routes.
pub fn assert_cleaned_up(ns: &Netns, cfg: &NodeCfg) {
    assert!(
        !ns.has_link(&cfg.device),
        "device {} still exists in {} after vtepd exited:\n{}",
        cfg.device,
        ns.name(),
        ns.ip(&["link", "show"])
    );
    for p in &cfg.peers {
        assert!(
            !ns.has_route(&p.subnet),
            "route {} still present in {} after vtepd exited:\n{}",
            p.subnet,
            ns.name(),
            ns.ip(&["route", "show"])
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Pods

/// A pod behind host `n`'s cni0 bridge (10.244.n.1/24), as Flannel's CNI plugin builds it: the pod
/// gets 10.244.n.2/24 with MTU `mtu` (the overlay MTU) and a default route via the bridge.
pub fn add_pod(host: &Netns, n: u8, tag: &str, mtu: u32) -> Netns {
    let pod = Netns::new(tag);
    let mtu = mtu.to_string();
    host.ip(&["link", "add", "cni0", "type", "bridge"]);
    host.addr("cni0", &format!("10.244.{n}.1/24"));
    veth(host, "veth0", &pod, "eth0");
    host.ip(&["link", "set", "veth0", "mtu", &mtu, "master", "cni0"]);
    pod.ip(&["link", "set", "eth0", "mtu", &mtu]);
    pod.addr("eth0", &format!("10.244.{n}.2/24"));
    pod.ip(&["route", "add", "default", "via", &format!("10.244.{n}.1")]);
    host.sysctl("net.ipv4.ip_forward=1");
    pod
}

// ---------------------------------------------------------------------------------------------------------
// Packet captures

/// A `tcpdump -w` running in a namespace until [`Capture::finish`] (or drop, which kills it).
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    stderr: Captured,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing on `dev` in `ns` into `dir/name` with the pcap `filter`, and waits until
    /// tcpdump says it is listening, so nothing sent after this returns is missed.
    pub fn start(ns: &Netns, dev: &str, dir: &TempDir, name: &str, filter: &str) -> Capture {
        let path = dir.path().join(name);
        let path_s = path.display().to_string();
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "tcpdump", "-i", dev, "-n", "-U", "-w", &path_s, filter])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        let (stderr, reader) = capture(child.stderr.take().unwrap());
        let cap = Capture { child: Some(child), path, stderr, reader: Some(reader) };
        wait_until(&format!("tcpdump listening on {dev} in {}", ns.name()), || {
            cap.stderr.lock().unwrap().contains("listening on")
        });
        cap
    }

    /// Stops tcpdump (SIGINT, so it flushes) and returns the pcap file's path.
    pub fn finish(mut self) -> PathBuf {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.path.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Decodes a pcap with tshark into one line per packet of the given `-e` fields, separated by tabs;
/// a field that occurs twice (the outer and inner IP header of IPIP) is joined with commas.
pub fn tshark_fields(pcap: &Path, fields: &[&str]) -> Vec<String> {
    let mut args = vec!["-r".to_string(), pcap.display().to_string(), "-T".into(), "fields".into()];
    for f in fields {
        args.push("-e".into());
        args.push((*f).into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok("tshark", &args).lines().map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Serialising the throughput tests

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

// ---------------------------------------------------------------------------------------------------------
// TCP transfer

/// Deterministic pseudo-random bytes (xorshift64), so both ends can be checked without storing 50 MB.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Sends `nbytes` of xorshift data over TCP from namespace `tx_ns` (bound to `tx_src` if given) to a
/// listener on `rx_addr:port` in namespace `rx_ns`; asserts both ends saw the same byte count and SHA-256.
pub fn tcp_transfer(
    tx_ns: &Netns,
    tx_src: Option<Ipv4Addr>,
    rx_ns: &Netns,
    rx_addr: Ipv4Addr,
    port: u16,
    nbytes: usize,
) {
    let plan = TransferPlan { nbytes, rate: None, hold: 0 };
    Transfer::spawn(tx_ns, tx_src, rx_ns, rx_addr, port, plan, IO_TIMEOUT).finish(nbytes);
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Faults and hostile traffic (tests/faults.rs, tests/hostile.rs): signals, logs, memory, kernel state,
// and a transfer that can be held open across a fault.

/// The longest a fault test waits for vtepd to recover from something done to it.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Like [`wait_until`] with an explicit bound.
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

impl Vtepd {
    /// True while the process has not exited (reaps it if it has).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `sig` (libc::SIGHUP, ...) to vtepd.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid().expect("vtepd already stopped") as i32;
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold its Child).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// How many times `needle` occurs in what vtepd has logged so far.
    pub fn log_count(&self, needle: &str) -> usize {
        self.stderr().matches(needle).count()
    }

    /// Waits (bounded by [`RECOVERY_TIMEOUT`]) until vtepd has logged `needle` more than `before`
    /// times; returns the log. Panics with the log otherwise.
    pub fn wait_for_log(&self, needle: &str, before: usize) -> String {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        loop {
            let log = self.stderr();
            if log.matches(needle).count() > before {
                return log;
            }
            if Instant::now() >= deadline {
                panic!(
                    "vtepd in {} did not log {needle:?} within {RECOVERY_TIMEOUT:?}; its log:\n{log}",
                    self.ns
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, reaped; returns everything it logged. Nothing of vtepd's own teardown runs.
    pub fn kill_hard(mut self) -> String {
        let mut child = self.child.take().expect("vtepd already stopped");
        child.kill().expect("SIGKILL vtepd");
        let status = child.wait().expect("wait for vtepd");
        assert!(!status.success(), "vtepd exited 0 after SIGKILL?");
        self.join_readers();
        self.stderr()
    }

    /// VmRSS of the process in KiB.
    pub fn rss_kib(&self) -> u64 {
        vm_rss_kib(self.pid().expect("vtepd already stopped"))
    }
}

/// VmRSS of `pid` in KiB, from /proc/PID/status.
pub fn vm_rss_kib(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {path}:\n{status}"))
}

/// `ip -n NS neigh show dev DEV nud permanent`, one entry per line, sorted.
pub fn permanent_neighbours(ns: &Netns, dev: &str) -> Vec<String> {
    sorted_lines(&ns.ip(&["neigh", "show", "dev", dev, "nud", "permanent"]))
}

/// `ip -n NS route show dev DEV`, sorted.
pub fn routes_via(ns: &Netns, dev: &str) -> Vec<String> {
    sorted_lines(&ns.ip(&["route", "show", "dev", dev]))
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

/// True if `ns` has a PERMANENT neighbour `ip` with `lladdr` on `dev`.
pub fn has_permanent_neigh(ns: &Netns, dev: &str, ip: &str, lladdr: &str) -> bool {
    permanent_neighbours(ns, dev)
        .iter()
        .any(|l| l.split_whitespace().next() == Some(ip) && l.contains(&format!("lladdr {lladdr}")))
}

/// The namespace's protocol counters: /proc/net/snmp and /proc/net/netstat as `"Udp.InErrors"` etc.
pub fn kernel_mibs(ns: &Netns) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = ns.exec_ok("cat", &[file]);
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let (Some((proto, names)), Some((_, values))) =
                (names.split_once(':'), values.split_once(':'))
            else {
                continue;
            };
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                if let Ok(v) = v.parse::<u64>() {
                    out.insert(format!("{proto}.{n}"), v);
                }
            }
        }
    }
    out
}

/// One of `dev`'s statistics (`rx_dropped`, `tx_dropped`, ...) from sysfs inside `ns`.
pub fn link_stat(ns: &Netns, dev: &str, stat: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/{stat}");
    ns.exec_ok("cat", &[&path])
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path} in {}: {e}", ns.name()))
}

/// The MAC address of `dev` in `ns`.
pub fn link_mac(ns: &Netns, dev: &str) -> [u8; 6] {
    let path = format!("/sys/class/net/{dev}/address");
    parse_mac(ns.exec_ok("cat", &[&path]).trim())
}

pub fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap_or_else(|e| panic!("MAC {s}: {e}")))
        .collect();
    v.try_into()
        .unwrap_or_else(|_| panic!("MAC {s}: not 6 bytes"))
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Asks, from the TAP side of `dev` in `ns`, who has `target` (an ARP request transmitted on the
/// device, as the kernel would send it), and returns the sender MAC of the first reply that comes
/// back in, or None within about 3 s. The request comes from a MAC nobody uses, so the kernel
/// ignores the answer (PACKET_OTHERHOST) and its own neighbour table is not touched.
pub fn arp_ask_tap(
    ns: &Netns,
    dev: &str,
    sender_ip: Ipv4Addr,
    target: Ipv4Addr,
) -> Option<[u8; 6]> {
    let dev = dev.to_string();
    in_netns(ns.name(), move || {
        const ETH_P_ARP: u16 = 0x0806;
        let asker = [0x02, 0xaa, 0xaa, 0xaa, 0xaa, 0x01];
        let sock = PacketSocket::open(&dev, ETH_P_ARP);
        sock.set_recv_timeout(Duration::from_millis(200));
        let mut req = vec![0xff; 6];
        req.extend_from_slice(&asker);
        req.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        req.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
        req.extend_from_slice(&asker);
        req.extend_from_slice(&sender_ip.octets());
        req.extend_from_slice(&[0; 6]);
        req.extend_from_slice(&target.octets());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            sock.send(&req, [0xff; 6]);
            let until = Instant::now() + Duration::from_millis(500);
            let mut buf = [0u8; 2048];
            while Instant::now() < until {
                let Some((n, pkttype)) = sock.recv(&mut buf) else {
                    continue;
                };
                let f = &buf[..n];
                // Incoming (not our own request looping back), an ARP reply about `target` to us.
                if pkttype != libc::PACKET_OUTGOING
                    && n >= 42
                    && f[12..14] == ETH_P_ARP.to_be_bytes()
                    && f[20..22] == [0, 2]
                    && f[28..32] == target.octets()
                    && f[32..38] == asker
                {
                    return Some(f[22..28].try_into().unwrap());
                }
            }
        }
        None
    })
}

/// An AF_PACKET socket bound to one device of the calling thread's namespace: whole Ethernet
/// frames in and out, nothing of the kernel's IP stack in between.
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// `protocol` is the ethertype to receive (host order), 0 for a send-only socket.
    pub fn open(dev: &str, protocol: u16) -> PacketSocket {
        use std::os::fd::FromRawFd;
        let cname = std::ffi::CString::new(dev).unwrap();
        // SAFETY: if_nametoindex reads a NUL-terminated string that lives for the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
        assert!(ifindex > 0, "no device {dev} in this namespace");
        // SAFETY: plain socket(2); the fd is owned right below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol.to_be()),
            )
        };
        assert!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let s = PacketSocket { fd, ifindex };
        let addr = s.sockaddr(protocol, [0; 6]);
        // SAFETY: bind(2) with a sockaddr_ll that lives for the call and its true size.
        let rc = unsafe {
            libc::bind(
                s.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            rc,
            0,
            "bind AF_PACKET to {dev}: {}",
            std::io::Error::last_os_error()
        );
        s
    }

    fn sockaddr(&self, protocol: u16, dst: [u8; 6]) -> libc::sockaddr_ll {
        let mut addr = [0u8; 8];
        addr[..6].copy_from_slice(&dst);
        libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: protocol.to_be(),
            sll_ifindex: self.ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: addr,
        }
    }

    pub fn set_recv_timeout(&self, t: Duration) {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: setsockopt reads one timeval from a pointer valid for the call.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
    }

    /// Transmits one whole Ethernet frame (`frame` starts with its destination MAC). A full device
    /// queue is waited out, so no frame is silently skipped; any other error panics.
    pub fn send(&self, frame: &[u8], dst: [u8; 6]) {
        let addr = self.sockaddr(0, dst);
        loop {
            // SAFETY: sendto(2) reads `frame` and `addr`, both valid for the call.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc >= 0 {
                assert_eq!(rc as usize, frame.len(), "short AF_PACKET send");
                return;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => thread::sleep(Duration::from_millis(1)),
                _ => panic!("AF_PACKET send of {} bytes: {e}", frame.len()),
            }
        }
    }

    /// One frame and its packet type (PACKET_HOST, PACKET_OUTGOING, ...), or None on timeout.
    pub fn recv(&self, buf: &mut [u8]) -> Option<(usize, u8)> {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: recvfrom(2) writes at most buf.len() bytes and at most `len` address bytes.
        let rc = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        (rc >= 0).then_some((rc as usize, from.sll_pkttype))
    }
}

/// How a [`Transfer`] sends.
#[derive(Clone, Copy, Debug)]
pub struct TransferPlan {
    pub nbytes: usize,
    /// Upper bound on the send rate in bytes per second (None: as fast as TCP goes). Pacing only
    /// ever slows the sender, so a loaded machine cannot make a transfer end sooner than planned.
    pub rate: Option<u64>,
    /// The last `hold` bytes are sent only after [`Transfer::release`]: the transfer is
    /// guaranteed to be open across whatever the test does in between.
    pub hold: usize,
}

/// What one end of a [`Transfer`] ends with: bytes and their SHA-256, or what went wrong.
type EndResult = Result<(usize, Vec<u8>), String>;

/// A checksummed TCP transfer running in the background, with progress, so a test can do
/// something to the path while it is in flight ([`tcp_transfer`] is one run to the end).
pub struct Transfer {
    what: String,
    sent: Arc<AtomicUsize>,
    gate: Arc<std::sync::atomic::AtomicBool>,
    sender: Option<JoinHandle<EndResult>>,
    receiver: Option<JoinHandle<EndResult>>,
}

use std::sync::atomic::AtomicUsize;

/// Read/write timeout of a [`Transfer`]: longer than any fault plus recovery, so a connection that
/// rides out an outage is not declared dead, yet a stalled one fails instead of hanging. Not a
/// speed assertion.
const HELD_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Read/write timeout of a plain [`tcp_transfer`]: nothing is done to its path, so a stall is a
/// failure to report soon. Not a speed assertion.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

impl Transfer {
    pub fn start(
        tx_ns: &Netns,
        tx_src: Ipv4Addr,
        rx_ns: &Netns,
        rx_addr: Ipv4Addr,
        port: u16,
        plan: TransferPlan,
    ) -> Transfer {
        Transfer::spawn(tx_ns, Some(tx_src), rx_ns, rx_addr, port, plan, HELD_IO_TIMEOUT)
    }

    /// The sender binds to `tx_src` if given, else the kernel picks its source address; a read or
    /// write that waits longer than `io_timeout` fails the transfer.
    fn spawn(
        tx_ns: &Netns,
        tx_src: Option<Ipv4Addr>,
        rx_ns: &Netns,
        rx_addr: Ipv4Addr,
        port: u16,
        plan: TransferPlan,
        io_timeout: Duration,
    ) -> Transfer {
        let what = format!(
            "TCP {} ({tx_src:?}) -> {}:{rx_addr}:{port}, {} bytes",
            tx_ns.name(),
            rx_ns.name(),
            plan.nbytes
        );
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let receiver = spawn_in_netns(rx_ns.name(), move || -> Result<(usize, Vec<u8>), String> {
            let listener = TcpListener::bind(SocketAddrV4::new(rx_addr, port))
                .map_err(|e| format!("bind: {e}"))?;
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            let _ = ready_tx.send(());
            let deadline = Instant::now() + READY_TIMEOUT + READY_TIMEOUT;
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            && Instant::now() < deadline =>
                    {
                        thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(format!("accept: {e}")),
                }
            };
            stream.set_nonblocking(false).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(io_timeout))
                .map_err(|e| e.to_string())?;
            read_and_hash(&mut stream)
        });
        if ready_rx.recv_timeout(READY_TIMEOUT).is_err() {
            let r = receiver.join();
            panic!("{what}: receiver did not start listening: {r:?}");
        }
        let sent = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (progress, open) = (Arc::clone(&sent), Arc::clone(&gate));
        let sender = spawn_in_netns(tx_ns.name(), move || -> Result<(usize, Vec<u8>), String> {
            let dst = SocketAddr::V4(SocketAddrV4::new(rx_addr, port));
            let deadline = Instant::now() + READY_TIMEOUT;
            let mut stream = loop {
                let attempt = (|| -> std::io::Result<TcpStream> {
                    let sock =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                    if let Some(src) = tx_src {
                        sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
                    }
                    sock.connect_timeout(&dst.into(), Duration::from_secs(3))?;
                    Ok(sock.into())
                })();
                match attempt {
                    Ok(s) => break s,
                    Err(e) if Instant::now() >= deadline => return Err(format!("connect: {e}")),
                    Err(_) => thread::sleep(Duration::from_millis(100)),
                }
            };
            stream
                .set_write_timeout(Some(io_timeout))
                .map_err(|e| e.to_string())?;
            let mut rng = XorShift::new(0x5eed_0000 ^ u64::from(port) ^ (plan.nbytes as u64));
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut n_sent = 0usize;
            let start = Instant::now();
            let held_from = plan.nbytes.saturating_sub(plan.hold);
            while n_sent < plan.nbytes {
                if n_sent >= held_from && !open.load(Ordering::Relaxed) {
                    let until = Instant::now() + io_timeout;
                    while !open.load(Ordering::Relaxed) {
                        if Instant::now() >= until {
                            return Err(format!("never released after {n_sent} bytes"));
                        }
                        thread::sleep(Duration::from_millis(20));
                    }
                }
                let limit = if n_sent < held_from {
                    held_from
                } else {
                    plan.nbytes
                };
                let n = buf.len().min(limit - n_sent);
                rng.fill(&mut buf[..n]);
                stream
                    .write_all(&buf[..n])
                    .map_err(|e| format!("write after {n_sent} bytes: {e}"))?;
                hasher.update(&buf[..n]);
                n_sent += n;
                progress.store(n_sent, Ordering::Relaxed);
                if let Some(rate) = plan.rate {
                    let due = Duration::from_secs_f64(n_sent as f64 / rate as f64);
                    if let Some(ahead) = due.checked_sub(start.elapsed()) {
                        thread::sleep(ahead);
                    }
                }
            }
            stream
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            stream
                .set_read_timeout(Some(io_timeout))
                .map_err(|e| e.to_string())?;
            let mut sink = [0u8; 64];
            let _ = stream.read(&mut sink);
            Ok((n_sent, hasher.finalize().to_vec()))
        });
        Transfer {
            what,
            sent,
            gate,
            sender: Some(sender),
            receiver: Some(receiver),
        }
    }

    /// Bytes the sender has handed to TCP so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until the sender has written at least `bytes`.
    pub fn wait_sent(&self, bytes: usize) {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        while self.sent() < bytes {
            if self.sender.as_ref().is_some_and(|s| s.is_finished()) {
                panic!(
                    "{}: sender ended after {} bytes, before {bytes}",
                    self.what,
                    self.sent()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: only {} of {bytes} bytes sent after {RECOVERY_TIMEOUT:?}",
                    self.what,
                    self.sent()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets the held last bytes go.
    pub fn release(&self) {
        self.gate.store(true, Ordering::Relaxed);
    }

    /// Releases, waits for both ends and asserts byte count and SHA-256 match.
    pub fn finish(mut self, nbytes: usize) {
        self.release();
        let sent = self
            .sender
            .take()
            .unwrap()
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        let received = self
            .receiver
            .take()
            .unwrap()
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        let what = &self.what;
        let (sent_n, sent_h) =
            sent.unwrap_or_else(|e| panic!("{what}: sender failed: {e} (receiver: {received:?})"));
        let (recv_n, recv_h) = received.unwrap_or_else(|e| panic!("{what}: receiver failed: {e}"));
        assert_eq!(sent_n, nbytes, "{what}: sender wrote {sent_n} bytes");
        assert_eq!(recv_n, nbytes, "{what}: receiver got {recv_n} bytes");
        assert_eq!(
            hex(&sent_h),
            hex(&recv_h),
            "{what}: SHA-256 differs between sender and receiver"
        );
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        // A failed test must not leave the sender waiting on the gate for a minute.
        self.release();
    }
}

/// Pings `dst` from `src` in `ns` once every 200 ms on a background thread until dropped or
/// [`PingLoop::stop`]ped; counts answers. Used to keep traffic flowing across a fault.
pub struct PingLoop {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<JoinHandle<(u32, u32)>>,
}

impl PingLoop {
    pub fn start(ns: &Netns, src: &str, dst: &str) -> PingLoop {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ns, src, dst) = (ns.name().to_string(), src.to_string(), dst.to_string());
        let handle = thread::spawn(move || {
            let (mut ok, mut lost) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                let out = run(
                    "ip",
                    &[
                        "netns", "exec", &ns, "ping", "-c", "1", "-W", "1", "-I", &src, &dst,
                    ],
                );
                if out.status.success() {
                    ok += 1;
                } else {
                    lost += 1;
                }
                thread::sleep(Duration::from_millis(200));
            }
            (ok, lost)
        });
        PingLoop {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops and returns (answered, unanswered).
    pub fn stop(mut self) -> (u32, u32) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .unwrap()
            .join()
            .expect("ping loop thread")
    }
}

impl Drop for PingLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sets up flannel.1 on host B (192.0.2.2, VNI 1, port 8472, MAC ..:02, overlay 10.244.2.0) pointing at
/// A, with exactly the commands flanneld's set-up amounts to (shared so every test faces the same peer).
pub fn flannel_kernel_vtep(b: &Netns) {
    b.ip(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "dstport",
        "8472",
        "local",
        "192.0.2.2",
        "dev",
        UNDERLAY_DEV,
        "nolearning",
    ]);
    b.ip(&[
        "link",
        "set",
        "flannel.1",
        "address",
        &host_mac(2),
        "mtu",
        "1450",
        "up",
    ]);
    b.ip(&["addr", "add", "10.244.2.0/32", "dev", "flannel.1"]);
    b.ip(&[
        "route",
        "add",
        "10.244.1.0/24",
        "via",
        "10.244.1.0",
        "dev",
        "flannel.1",
        "onlink",
    ]);
    b.ip(&[
        "neigh",
        "add",
        "10.244.1.0",
        "lladdr",
        &host_mac(1),
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    ]);
    b.exec_ok(
        "bridge",
        &[
            "fdb",
            "append",
            &host_mac(1),
            "dev",
            "flannel.1",
            "dst",
            "192.0.2.1",
        ],
    );
}

/// Reads `stream` to its end; returns the byte count and the SHA-256 of what arrived.
fn read_and_hash(stream: &mut impl Read) -> Result<(usize, Vec<u8>), String> {
    let mut hasher = Sha256::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {total} bytes: {e}")),
        }
    }
    Ok((total, hasher.finalize().to_vec()))
}

pub mod etcd;
