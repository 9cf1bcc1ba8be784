//! The kernel's side of things: memory of a process, neighbours, routes, MIBs, link statistics,
//! and a flannel.1 VTEP set up as flanneld does.
use super::*;
use std::collections::HashMap;
use std::fs;

/// VmRSS of `pid` in KiB, from /proc/PID/status.
pub fn vm_rss_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// AnonHugePages of a process in KiB: how much of its anonymous memory sits on transparent huge pages.
pub fn anon_huge_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/smaps_rollup"), "AnonHugePages:")
}

/// A `Name:   123 kB` line of a /proc file, in KiB.
fn proc_kib(path: &str, field: &str) -> u64 {
    let value = proc_field(path, field);
    value.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{field} in {path} is not a number: {value}"))
}

/// The value of a `Name: value` line of a /proc file (`field` with its colon), trimmed.
pub fn proc_field(path: &str, field: &str) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in {path}:\n{text}"))
}

/// The transparent-huge-page mode (`always`, `madvise`, `never`), `None` on a kernel without THP.
pub fn thp_mode() -> Option<String> {
    let text = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let (_, rest) = text.split_once('[')?;
    rest.split_once(']').map(|(mode, _)| mode.to_string())
}

/// Whether this kernel hands out transparent huge pages to a process that asks.
pub fn thp_available() -> bool {
    thp_mode().is_some_and(|m| m != "never")
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

/// A cgroup of the pids controller holding at most `max` tasks (threads count): a process moved in
/// cannot spawn a thread past that. The v1 hierarchy where this kind of machine mounts it, else
/// the unified (v2) one. Removed on drop, once its processes have exited.
pub struct PidsCgroup {
    dir: PathBuf,
}

impl PidsCgroup {
    pub fn new(tag: &str, max: u32) -> PidsCgroup {
        let cg = PidsCgroup { dir: pids_root().join(format!("vtepd-test-{tag}-{}", unique_suffix())) };
        fs::create_dir(&cg.dir).unwrap_or_else(|e| panic!("create {}: {e}", cg.dir.display()));
        fs::write(cg.dir.join("pids.max"), max.to_string()).unwrap_or_else(|e| panic!("set pids.max in {}: {e}", cg.dir.display()));
        cg
    }

    /// The file a process writes its pid to, to join.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

fn pids_root() -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup/pids");
    if v1.join("cgroup.procs").exists() {
        return v1.to_path_buf();
    }
    let v2 = Path::new("/sys/fs/cgroup");
    let controllers = fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
    assert!(controllers.split_whitespace().any(|c| c == "pids"), "no pids cgroup controller (v1 or v2) under /sys/fs/cgroup: this test needs one");
    // Children get pids.max only once the root hands the controller down; it may already have.
    let _ = fs::write(v2.join("cgroup.subtree_control"), "+pids");
    v2.to_path_buf()
}
