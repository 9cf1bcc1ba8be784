//! A real etcd for the etcd-mode tests, and a switched underlay its vtepd nodes share.
//!
//! [`Etcd`] is a single-member etcd (the Debian 3.4 server) with its own data directory, killed and
//! removed on drop. It runs either on 127.0.0.1 with ports unique to the test (for tests that use
//! the library directly) or inside the hub namespace of an [`Underlay`], on 192.0.2.254, where every
//! vtepd node in its own namespace reaches it — just as nodes reach etcd in a real cluster.
use super::*;

pub const HUB_IP: &str = "192.0.2.254";
/// What kube-flannel's ConfigMap puts at `/coreos.com/network/config`.
pub const VXLAN_NETWORK: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
pub const PREFIX: &str = "/coreos.com/network";

pub struct Etcd {
    child: Option<Child>,
    /// Namespace it runs in; `None` for the host's loopback.
    ns: Option<String>,
    ip: String,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
}

impl Etcd {
    /// On 127.0.0.1 with ports derived from the pid, so parallel test binaries never share one.
    pub fn on_loopback(tag: &str) -> Etcd {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = 20000 + (std::process::id() % 2000) as u16 * 20 + (n as u16 % 10) * 2;
        Etcd::start(None, "127.0.0.1", base, base + 1, tag)
    }

    /// Inside `ns` on `ip` (standard ports: the namespace is the test's own).
    pub fn in_netns(ns: &Netns, ip: &str, tag: &str) -> Etcd {
        Etcd::start(Some(ns.name().to_string()), ip, 2379, 2380, tag)
    }

    fn start(ns: Option<String>, ip: &str, client_port: u16, peer_port: u16, tag: &str) -> Etcd {
        // Without etcdctl the health wait below would only time out, saying nothing of why.
        let etcdctl = Command::new("etcdctl").arg("version").env("ETCDCTL_API", "3").output();
        assert!(etcdctl.is_ok_and(|o| o.status.success()), "etcdctl not found: run scripts/deps.sh (Debian package etcd-client)");
        let mut e = Etcd { child: None, ns, ip: ip.into(), client_port, peer_port, dir: TempDir::new(&format!("etcd-{tag}")) };
        e.spawn();
        e
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    fn spawn(&mut self) {
        let peer = format!("http://{}:{}", self.ip, self.peer_port);
        let client = self.endpoint();
        let data = self.dir.path().join("data").display().to_string();
        let etcd_args = [
            "etcd", "--name", "vt", "--data-dir", &data, "--listen-client-urls", &client, "--advertise-client-urls", &client,
            "--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer, "--initial-cluster", &format!("vt={peer}"),
            "--log-level", "error", "--logger", "zap",
        ];
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(etcd_args);
                c
            }
            None => {
                let mut c = Command::new(etcd_args[0]);
                c.args(&etcd_args[1..]);
                c
            }
        };
        let log = File::create(self.dir.path().join("etcd.log")).expect("etcd log file");
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().expect("start etcd (is etcd installed?)");
        self.child = Some(child);
        wait_until_for(&format!("etcd at {client} healthy"), Duration::from_secs(20), || {
            self.ctl_status(&["endpoint", "health"]).status.success()
        });
    }

    /// Kills etcd (SIGKILL: an outage, not a shutdown); its data stays for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `etcdctl` against this etcd (inside its namespace, if it has one), not yet run.
    fn ctl_command(&self, args: &[&str]) -> Command {
        let ep = format!("--endpoints={}", self.endpoint());
        let mut full: Vec<&str> = Vec::new();
        if let Some(ns) = &self.ns {
            full.extend(["netns", "exec", ns.as_str()]);
        }
        full.extend(["etcdctl", ep.as_str(), "--command-timeout=3s"]);
        full.extend_from_slice(args);
        let (cmd, rest) = if self.ns.is_some() { ("ip", &full[..]) } else { (full[0], &full[1..]) };
        let mut c = Command::new(cmd);
        c.args(rest).env("ETCDCTL_API", "3");
        c
    }

    fn ctl_status(&self, args: &[&str]) -> Output {
        self.ctl_command(args).stdin(Stdio::null()).output().expect("run etcdctl")
    }

    /// `etcdctl args...`, which must succeed; returns stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_status(args);
        assert!(out.status.success(), "etcdctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl put key` with the value on stdin: a command-line argument holds at most 128 KiB.
    pub fn put_large(&self, key: &str, value: &[u8]) {
        use std::io::Write;
        let mut child = self
            .ctl_command(&["put", key])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run etcdctl");
        child.stdin.take().expect("stdin").write_all(value).expect("write value");
        let out = child.wait_with_output().expect("etcdctl");
        assert!(out.status.success(), "etcdctl put {key} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", key, value]);
    }

    /// Grants an etcd lease of `ttl_s` seconds and returns its id (hex, as etcdctl takes it).
    pub fn grant(&self, ttl_s: u32) -> String {
        let out = self.ctl(&["lease", "grant", &ttl_s.to_string()]);
        // "lease 694d7cb7c1b3a10b granted with TTL(5s)"
        out.split_whitespace().nth(1).expect("lease id in etcdctl output").to_string()
    }

    pub fn put_with_lease(&self, key: &str, value: &str, lease: &str) {
        self.ctl(&["put", &format!("--lease={lease}"), key, value]);
    }

    /// Every key under `prefix` with its value.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self.ctl(&["get", "--prefix", prefix]);
        let lines: Vec<&str> = out.lines().collect();
        lines.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].to_string(), c[1].to_string())).collect()
    }

    /// The subnet leases: (subnet key name like "10.244.3.0-24", value).
    pub fn leases(&self) -> Vec<(String, String)> {
        let base = format!("{PREFIX}/subnets/");
        self.get_prefix(&base).into_iter().map(|(k, v)| (k.trim_start_matches(&base).to_string(), v)).collect()
    }

    /// A lease key no lease holds ("10.244.99.0-24", or the next /24 down) for a test's own made-up
    /// node: the real nodes lease subnets at random, and a hard-coded one could be theirs.
    pub fn free_lease_key(&self) -> String {
        let taken: Vec<String> = self.leases().into_iter().map(|(k, _)| k).collect();
        (0..=99u8).rev().map(|n| format!("10.244.{n}.0-24")).find(|k| !taken.contains(k)).expect("a free /24 in 10.244.0.0/16")
    }

    /// The lease key holding `public_ip` ("10.244.3.0-24").
    pub fn lease_of(&self, public_ip: &str) -> Option<String> {
        let needle = format!("\"PublicIP\":\"{public_ip}\"");
        self.leases().into_iter().find(|(_, v)| v.contains(&needle)).map(|(k, _)| k)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A VXLAN node's lease value exactly as flanneld writes it, for a test's made-up node.
pub fn vxlan_lease_value(public_ip: &str, vtep_mac: &str) -> String {
    format!(r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{vtep_mac}"}}}}"#)
}

/// `10.244.3.0-24` → ("10.244.3.0/24", first host "10.244.3.1").
pub fn subnet_of_key(key: &str) -> (String, String) {
    let (ip, len) = key.split_once('-').expect("lease key like 10.244.3.0-24");
    let first: Ipv4Addr = ip.parse().expect("lease key address");
    let first = Ipv4Addr::from(u32::from(first) + 1);
    (format!("{ip}/{len}"), first.to_string())
}

/// A switch on the underlay: a hub namespace with bridge `br0` (192.0.2.254/24, where etcd runs)
/// and any number of hosts on it, host n at 192.0.2.n/24 on `ul0`.
pub struct Underlay {
    pub hub: Netns,
}

impl Underlay {
    pub fn new(tag: &str) -> Underlay {
        require_root();
        let hub = Netns::new(&format!("{tag}hub"));
        // A fixed MAC: otherwise the bridge takes its lowest port's MAC, which changes as hosts
        // are added, and hosts that already resolved 192.0.2.254 lose etcd for seconds.
        hub.ip(&["link", "add", "br0", "address", "02:00:c0:00:02:fe", "type", "bridge"]);
        hub.addr("br0", &format!("{HUB_IP}/24"));
        Underlay { hub }
    }

    pub fn host(&self, tag: &str, n: u8) -> Netns {
        let ns = Netns::new(&format!("{tag}{n}"));
        let port = format!("p{n}");
        veth(&self.hub, &port, &ns, UNDERLAY_DEV);
        self.hub.ip(&["link", "set", &port, "master", "br0"]);
        ns.addr(UNDERLAY_DEV, &format!("192.0.2.{n}/24"));
        wait_until(&format!("underlay ping 192.0.2.{n} -> hub"), || {
            ns.exec("ping", &["-c", "1", "-W", "1", HUB_IP]).status.success()
        });
        ns
    }
}

/// An etcd-mode config for host n.
pub fn etcd_toml(n: u8, endpoint: &str, subnet_file: &Path) -> String {
    format!(
        "[node]\npublic_ip = \"192.0.2.{n}\"\n[etcd]\nendpoints = [\"{endpoint}\"]\nsubnet_file = \"{}\"\n",
        subnet_file.display()
    )
}

/// Starts vtepd in etcd mode for host n and waits until it has joined (its subnet file exists and
/// its device is up). Returns the process and the lease key it got.
/// How most etcd tests begin: an underlay, etcd in its hub holding a VXLAN network config (one
/// whose nodes are all vtepd), and a scratch directory, all named after `tag`.
pub fn vxlan_network(tag: &str) -> (Underlay, Etcd, TempDir) {
    network(tag, VXLAN_NETWORK)
}

/// [`vxlan_network`] with another network config.
pub fn network(tag: &str, config: &str) -> (Underlay, Etcd, TempDir) {
    let ul = Underlay::new(tag);
    let etcd = Etcd::in_netns(&ul.hub, HUB_IP, tag);
    etcd.put(&format!("{PREFIX}/config"), config);
    (ul, etcd, TempDir::new(tag))
}

pub const HOST_GW_NETWORK: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#;

/// What flanneld writes as a host-gw node's lease.
pub fn host_gw_lease(public_ip: &str) -> String {
    format!(r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#)
}

/// Host n's etcd-mode config file in `dir`, and the subnet file it names.
pub fn member_config(n: u8, etcd: &Etcd, dir: &TempDir) -> (PathBuf, PathBuf) {
    let env = dir.path().join(format!("subnet-{n}.env"));
    (dir.write(&format!("node{n}.toml"), &etcd_toml(n, &etcd.endpoint(), &env)), env)
}

pub fn start_member(ns: &Netns, n: u8, etcd: &Etcd, dir: &TempDir) -> (Vtepd, PathBuf) {
    let (cfg, env) = member_config(n, etcd, dir);
    let d = Vtepd::start_until(ns, &cfg, &format!("node {n} joined"), || env.exists() && ns.has_link("vtep0"));
    (d, env)
}
