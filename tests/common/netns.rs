//! Network namespaces, veth pairs, running code inside a namespace, ping and pods.
use super::*;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// A named network namespace (`ip netns add`). Drop kills whatever still runs in it and deletes it, which
/// also removes its veths, bridges and TAP devices.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `vt-<tag>-<pid>-<n>` with `lo` up; VTEPD_TEST_NETNS_PREFIX replaces `vt`, for a machine
    /// where each user of it must keep to namespaces named their own way.
    pub fn new(tag: &str) -> Netns {
        let prefix = std::env::var("VTEPD_TEST_NETNS_PREFIX").unwrap_or_else(|_| "vt".into());
        let name = format!("{prefix}-{tag}-{}", unique_suffix());
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

    /// `dev`'s interface index as `ip -o link` prints it ("" if there is no such device).
    pub fn link_index(&self, dev: &str) -> String {
        let out = self.exec("ip", &["-o", "link", "show", dev]);
        String::from_utf8_lossy(&out.stdout).split(':').next().unwrap_or_default().trim().to_string()
    }
}

/// `ip -o monitor route` running in a namespace: every route added, replaced or deleted there
/// while it runs, one line each. Killed on drop.
pub struct RouteMonitor {
    child: std::process::Child,
    out: Captured,
}

impl RouteMonitor {
    /// Starts the monitor and returns once it reports a change made after it started (a blackhole
    /// route to a documentation address, added and removed): nothing later is missed.
    pub fn start(ns: &Netns) -> RouteMonitor {
        let mut child = Command::new("ip")
            .args(["-n", ns.name(), "-o", "monitor", "route"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ip monitor");
        let (out, _reader) = collect_output(child.stdout.take().expect("ip monitor stdout"));
        let m = RouteMonitor { child, out };
        let marker = "198.51.100.254";
        // A replace that changes nothing is not reported: add and delete each time.
        wait_until("ip monitor reporting", || {
            ns.ip(&["route", "add", "blackhole", marker]);
            ns.ip(&["route", "del", "blackhole", marker]);
            m.lines().iter().any(|l| l.contains(marker))
        });
        m
    }

    pub fn lines(&self) -> Vec<String> {
        self.out.lock().unwrap().lines().map(str::to_string).collect()
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        // What a killed vtepd left in the namespace's own directory (route claims, a socket).
        let _ = std::fs::remove_dir_all(std::path::Path::new("/run/vtepd/netns").join(&self.name));
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

/// The hosts' overlay addresses (their device's /32).
pub const IP_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 0);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 0);

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

    /// Pings each node's VTEP address (10.244.1.0, 10.244.2.0) from the other: the overlay is up
    /// both ways.
    pub fn ping_both_ways(&self) {
        ping(&self.a, "10.244.1.0", "10.244.2.0");
        ping(&self.b, "10.244.2.0", "10.244.1.0");
    }

    /// `nbytes` over TCP from A's VTEP address to B's, then back, each end's SHA-256 compared.
    pub fn tcp_both_ways(&self, nbytes: usize) {
        super::tcp_transfer(&self.a, Some(IP_A), &self.b, IP_B, 5001, nbytes);
        super::tcp_transfer(&self.b, Some(IP_B), &self.a, IP_A, 5002, nbytes);
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
