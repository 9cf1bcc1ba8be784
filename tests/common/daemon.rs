//! The `vtepd` process under test: start, wait for readiness, logs, signals, counters.
use super::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A control socket path no other test uses: the namespace name is unique per test and process.
pub fn test_socket(ns: &Netns) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join("vtepd-test-sockets");
    std::fs::create_dir_all(&dir).expect("create socket dir");
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("{}-{n}.sock", ns.name()))
}

/// The usual pair's configs: host 1 and host 2, each with the other as its one peer.
pub fn pair_cfgs() -> (NodeCfg, NodeCfg) {
    (NodeCfg::host(1, &[2]), NodeCfg::host(2, &[1]))
}

/// vtepd on both of `hosts` with [`pair_cfgs`], written to `dir`, `extra` arguments for both; returns
/// once both have the peer's route.
pub fn start_pair(hosts: &TwoHosts, dir: &TempDir, extra: &[&str]) -> (Vtepd, Vtepd) {
    let (cfg_a, cfg_b) = pair_cfgs();
    let start = |ns: &Netns, cfg: &NodeCfg, file: &str| Vtepd::start_with(ns, &dir.write(file, &cfg.to_toml()), cfg, extra);
    (start(&hosts.a, &cfg_a, "a.toml"), start(&hosts.b, &cfg_b, "b.toml"))
}

/// Stops both daemons and prints their counters, so that an assertion failing after this has them in
/// its output.
pub fn stop_pair(a: Vtepd, b: Vtepd) -> (HashMap<String, u64>, HashMap<String, u64>) {
    let (ca, cb) = (a.stop(), b.stop());
    eprintln!("A counters:\n{}\nB counters:\n{}", show_counters(&ca), show_counters(&cb));
    (ca, cb)
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
        Vtepd::launch("ip", &["netns", "exec", ns.name()], ns, config, extra, what, ready)
    }

    /// As [`Vtepd::start`], entering the namespace with `nsenter --net` as an operator might:
    /// unlike `ip netns exec`, that leaves /sys showing the namespace nsenter was called from.
    pub fn start_nsenter(ns: &Netns, config: &Path, cfg: &NodeCfg) -> Vtepd {
        let net = format!("--net=/run/netns/{}", ns.name());
        Vtepd::launch("nsenter", &[&net], ns, config, &[], "device and routes", || {
            ns.has_link(&cfg.device) && cfg.peers.iter().all(|p| ns.has_route(&p.subnet))
        })
    }

    fn launch(
        launcher: &str,
        launcher_args: &[&str],
        ns: &Netns,
        config: &Path,
        extra: &[&str],
        what: &str,
        ready: impl FnMut() -> bool,
    ) -> Vtepd {
        let mut args: Vec<String> = launcher_args.iter().map(|a| a.to_string()).collect();
        args.extend([vtepd_bin().into(), "run".into(), "--config".into(), config.display().to_string()]);
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
        // `ip netns exec` and nsenter exec the program after setns, so the child's pid is vtepd's own.
        let mut child = Command::new(launcher)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vtepd");
        let (stdout, h1) = collect_output(child.stdout.take().unwrap());
        let (stderr, h2) = collect_output(child.stderr.take().unwrap());
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
        let Some(status) = exit_within(&mut child, READY_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            self.join_readers();
            panic!("vtepd in {} did not exit within {READY_TIMEOUT:?} of SIGTERM\nstderr:\n{}", self.ns, self.stderr());
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
        self.kill_and_tidy();
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

/// The child's exit status once it has exited, polling for at most `bound`; `None` if it still
/// runs then (it is left running).
pub fn exit_within(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
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
    ctl_json_at(&v.socket, cmd)
}

/// [`ctl_json`] against the daemon serving control socket `socket`.
pub fn ctl_json_at(socket: &Path, cmd: &str) -> serde_json::Value {
    let out = Command::new(vtepd_bin()).args([cmd, "--json", "--socket"]).arg(socket).output().expect("run vtepd");
    assert!(out.status.success(), "vtepd {cmd} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("vtepd {cmd} printed no JSON ({e})"))
}

/// One counter of the daemon serving control socket `socket`, from `vtepd stats --json`.
pub fn counter(socket: &Path, name: &str) -> u64 {
    let stats = ctl_json_at(socket, "stats");
    let row = stats["counters"].as_array().and_then(|rows| rows.iter().find(|c| c[0] == name));
    row.and_then(|c| c[1].as_u64()).unwrap_or_else(|| panic!("no counter {name}: {stats}"))
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

    /// Waits (bounded by [`RECOVERY_TIMEOUT`]) for vtepd to exit by itself; returns its status
    /// and everything it logged. Panics with the log if it is still running.
    pub fn wait_for_exit(mut self) -> (std::process::ExitStatus, String) {
        let child = self.child.as_mut().expect("vtepd already stopped");
        let Some(status) = exit_within(child, RECOVERY_TIMEOUT) else {
            panic!("vtepd in {} still runs after {RECOVERY_TIMEOUT:?}; its log:\n{}", self.ns, self.stderr());
        };
        self.child = None;
        self.join_readers();
        (status, self.stderr())
    }

    /// SIGKILL, reaped; returns everything it logged. Nothing of vtepd's own teardown runs.
    pub fn kill_hard(mut self) -> String {
        let status = self.kill_and_tidy().expect("vtepd already stopped");
        assert!(!status.success(), "vtepd exited 0 after SIGKILL?");
        self.join_readers();
        self.stderr()
    }

    /// SIGKILLs the daemon if it still runs and reaps it. Killed, it could not remove its control
    /// socket: that is ours to tidy, or the test directory fills up. (After a clean exit the file
    /// is the daemon's to remove, which tests check; one that had already exited may have lost
    /// its bind to another daemon's socket.)
    fn kill_and_tidy(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let running = matches!(child.try_wait(), Ok(None));
        let _ = child.kill();
        let status = child.wait().ok();
        if running {
            let _ = std::fs::remove_file(&self.socket);
        }
        status
    }

    /// Context switches (voluntary and not) of each thread so far, by thread name and id: how
    /// often each one has woken up.
    pub fn thread_switches(&self) -> HashMap<String, u64> {
        let pid = self.pid().expect("vtepd already stopped");
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read the threads of vtepd");
        let mut out = HashMap::new();
        for task in tasks.flatten() {
            let (Ok(comm), Ok(status)) = (std::fs::read_to_string(task.path().join("comm")), std::fs::read_to_string(task.path().join("status"))) else {
                continue;
            };
            let switches: u64 = status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            out.insert(format!("{} ({})", comm.trim(), task.file_name().to_string_lossy()), switches);
        }
        out
    }

    /// VmRSS of the process in KiB.
    pub fn rss_kib(&self) -> u64 {
        vm_rss_kib(self.pid().expect("vtepd already stopped"))
    }
}
