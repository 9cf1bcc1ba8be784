//! The control API against real vtepd daemons in namespaces: every subcommand in text and JSON,
//! manual FDB/neighbour entries that change what the data path does, hostile requests that change
//! nothing, and the socket's life cycle (mode 0600, default paths, stale files, a path in use).

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output};

/// `vtepd <args> --socket S` (no namespace needed: the socket is a file).
fn cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(vtepd_bin()).args(args).arg("--socket").arg(socket).output().expect("run vtepd CLI")
}

fn cli_ok(socket: &Path, args: &[&str]) -> String {
    let out = cli(socket, args);
    assert!(out.status.success(), "vtepd {args:?} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cli_json(socket: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let text = cli_ok(socket, &a);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("vtepd {a:?} printed no JSON ({e}):\n{text}"))
}

/// Exit code and stderr of a command that should fail.
fn cli_err(socket: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = cli(socket, args);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Sends raw bytes on the socket and returns the first response line.
fn raw(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).expect("connect control socket");
    // A huge request may be refused before it is all written; the answer is what matters.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("read response");
    line
}

/// One HTTP exchange with A's metrics endpoint (on A's loopback).
fn scrape(ns: &Netns, request: &'static str) -> String {
    in_netns(ns.name(), move || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9476").expect("connect to --metrics");
        // Fail rather than hang if the endpoint never ends its answer.
        s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("the metrics answer, ended by the endpoint");
        out
    })
}

/// Twenty connections that never send a request, then a scrape. Served one at a time (each idle
/// one holding the endpoint for its 3 s), the scrape would wait a minute; now the oldest idle
/// connection is closed to make room and the scrape is answered at once.
fn idle_connections_do_not_keep_a_scrape_out(ns: &Netns) {
    let answer = in_netns(ns.name(), || {
        let idle: Vec<_> = (0..20).map(|_| std::net::TcpStream::connect("127.0.0.1:9476").expect("connect to --metrics")).collect();
        let mut s = std::net::TcpStream::connect("127.0.0.1:9476").expect("connect to --metrics");
        // A bound for the test to fail rather than hang on a build that serves one at a time.
        s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        let read = s.read_to_string(&mut out);
        drop(idle);
        read.map(|_| out)
    });
    let answer = answer.expect("the scrape behind twenty idle connections was not answered within 20 s");
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
}

/// Fires one ping that is not expected to be answered (it only makes the data path act).
fn poke(ns: &Netns, dst: &str) {
    let _ = ns.exec("ping", &["-c", "1", "-W", "1", dst]);
}

#[test]
fn every_subcommand_against_a_running_vtepd() {
    let hosts = TwoHosts::new("capi");
    let dir = TempDir::new("capi");
    let (cfg_a, cfg_b) = pair_cfgs();
    let a = Vtepd::start_with(&hosts.a, &dir.write("a.toml", &cfg_a.to_toml()), &cfg_a, &["--metrics", "127.0.0.1:9476"]);
    let b = Vtepd::start(&hosts.b, &dir.write("b.toml", &cfg_b.to_toml()), &cfg_b);
    let (sa, sb) = (a.socket.as_path(), b.socket.as_path());

    let mode = std::fs::metadata(sa).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode is {mode:o}");

    // Nothing has crossed the tunnel yet (no BUM replication, permanent neighbours): B is silent.
    let p = cli_json(sa, &["peers"]);
    assert_eq!(p["peers"][0]["last_heard_secs"], Value::Null, "{p}");
    assert_eq!(p["peers"][0]["reachable"], false, "{p}");
    ping(&hosts.a, "10.244.1.0", "10.244.2.0");
    let p = cli_json(sa, &["peers"]);
    let peer = &p["peers"][0];
    assert_eq!((&peer["public_ip"], &peer["mode"], &peer["reachable"]), (&"192.0.2.2".into(), &"vxlan".into(), &true.into()), "{p}");
    assert!(peer["last_heard_secs"].as_u64().is_some_and(|s| s < 60), "{p}");
    let text = cli_ok(sa, &["peers"]);
    assert!(text.contains("| 192.0.2.2    | 10.244.2.0/24 | vxlan | 02:00:00:00:00:02 | up    |"), "{text}");

    assert_eq!(cli_ok(sa, &["fdb", "show"]), "02:00:00:00:00:02 dev vtep0 dst 192.0.2.2 self permanent\n");
    assert_eq!(cli_ok(sa, &["neigh", "show"]), "10.244.2.0 dev vtep0 lladdr 02:00:00:00:00:02 PERMANENT\n");
    assert_eq!(cli_ok(sa, &["route", "show"]), "10.244.2.0/24 via 10.244.2.0 dev vtep0 onlink\n");
    let fdb = cli_json(sa, &["fdb", "show"]);
    assert_eq!(fdb, serde_json::json!([{"mac": "02:00:00:00:00:02", "dst": "192.0.2.2", "dev": "vtep0", "origin": "peer"}]));
    assert_eq!(cli_json(sa, &["neigh", "show"])[0]["lladdr"], "02:00:00:00:00:02");
    assert_eq!(cli_json(sa, &["route", "show"])[0]["dst"], "10.244.2.0/24");
    let stats = cli_ok(sa, &["stats"]);
    assert!(stats.contains("table_fdb_entries "), "{stats}");
    assert!(counter(sa, "rx_packets") >= 3 && counter(sa, "tx_packets") >= 3, "{stats}");
    assert!(stats.contains("\nworker0_rx_packets "), "{stats}");
    // Per worker, in order, adding up to the totals (nothing crosses the tunnel meanwhile).
    let v = cli_json(sa, &["stats"]);
    for dir in ["rx_packets", "tx_packets"] {
        let sum: u64 = v["workers"].as_array().unwrap().iter().map(|w| w[dir].as_u64().unwrap()).sum();
        assert_eq!(sum, counter(sa, dir), "per-worker {dir} do not add up: {v}");
    }
    let (code, err) = cli_err(sa, &["leases"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not in etcd mode"), "{err}");

    let metrics = scrape(&hosts.a, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(metrics.starts_with("HTTP/1.0 200 OK\r\n"), "{metrics}");
    assert!(metrics.contains("\nvtepd_table_entries{table=\"fdb\"} 1\n"), "{metrics}");
    assert!(metrics.contains("\nvtepd_drops_total{reason=\"rx_unknown_source\"} 0\n"), "{metrics}");
    let tx = metrics.lines().find_map(|l| l.strip_prefix("vtepd_tx_packets_total ")).and_then(|v| v.parse::<u64>().ok());
    assert!(tx.is_some_and(|n| n >= 3), "{metrics}");
    assert!(metrics.contains("\nvtepd_worker_rx_packets_total{worker=\"0\"} "), "{metrics}");
    assert!(scrape(&hosts.a, "POST / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 400"));
    idle_connections_do_not_keep_a_scrape_out(&hosts.a);

    manual_entries_steer_the_data_path(&hosts, sa, sb);
    a_lost_route_is_shown_until_it_is_back(&hosts, sa);
    bad_input_is_refused(sa);
    // None of it disturbed forwarding.
    hosts.ping_both_ways();
    let (ca, cb) = (a.stop(), b.stop());
    assert_eq!((ca["drop_rx_unknown_source"], cb["drop_rx_unknown_source"]), (0, 0));
}

/// A route to 10.244.9.0/24 through vtep0 in A: the kernel ARPs for 10.244.9.0, which only a manual
/// neighbour entry answers; the frame then goes to MAC ..:99, which only a manual FDB entry sends
/// to B (whose vtepd drops it as not for its MAC — proof it crossed the tunnel).
fn manual_entries_steer_the_data_path(hosts: &TwoHosts, sa: &Path, sb: &Path) {
    hosts.a.ip(&["route", "add", "10.244.9.0/24", "via", "10.244.9.0", "dev", "vtep0", "onlink"]);
    let arp_unknown = counter(sa, "drop_tx_arp_unknown");
    poke(&hosts.a, "10.244.9.1");
    wait_until("A's vtepd counts the unanswerable ARP", || counter(sa, "drop_tx_arp_unknown") > arp_unknown);

    assert_eq!(cli_ok(sa, &["neigh", "add", "10.244.9.0", "lladdr", "02:00:00:00:00:99"]), "neigh 10.244.9.0 lladdr 02:00:00:00:00:99 added\n");
    assert!(cli_ok(sa, &["neigh", "show"]).contains("10.244.9.0 dev vtep0 lladdr 02:00:00:00:00:99 PERMANENT manual\n"));
    hosts.a.ip(&["neigh", "flush", "dev", "vtep0", "nud", "failed"]);
    let unknown_mac = counter(sa, "drop_tx_unknown_dst_mac");
    wait_until("vtepd answers ARP for 10.244.9.0 from the manual entry", || {
        poke(&hosts.a, "10.244.9.1");
        hosts.a.ip(&["neigh", "show", "10.244.9.0"]).contains("lladdr 02:00:00:00:00:99")
    });
    wait_until("A drops frames to ..:99 for want of an FDB entry", || counter(sa, "drop_tx_unknown_dst_mac") > unknown_mac);

    cli_ok(sa, &["fdb", "add", "02:00:00:00:00:99", "dst", "192.0.2.2"]);
    assert!(cli_ok(sa, &["fdb", "show"]).contains("02:00:00:00:00:99 dev vtep0 dst 192.0.2.2 self permanent manual\n"));
    let not_for_b = counter(sb, "drop_rx_not_for_us");
    wait_until("frames to ..:99 reach B through the tunnel", || {
        poke(&hosts.a, "10.244.9.1");
        counter(sb, "drop_rx_not_for_us") > not_for_b
    });

    // The peer's own entries belong to the config: refused, and unchanged.
    let (code, err) = cli_err(sa, &["fdb", "del", "02:00:00:00:00:02"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("peer 192.0.2.2"), "{err}");
    let (code, err) = cli_err(sa, &["neigh", "add", "10.244.2.0", "lladdr", "02:00:00:00:00:77"]);
    assert!(code == Some(1) && err.contains("peer 192.0.2.2"), "{err}");

    cli_ok(sa, &["fdb", "del", "02:00:00:00:00:99"]);
    let unknown_mac = counter(sa, "drop_tx_unknown_dst_mac");
    wait_until("without the FDB entry, frames to ..:99 are dropped again", || {
        poke(&hosts.a, "10.244.9.1");
        counter(sa, "drop_tx_unknown_dst_mac") > unknown_mac
    });
    cli_ok(sa, &["neigh", "del", "10.244.9.0"]);
    assert_eq!(cli_ok(sa, &["fdb", "show"]), "02:00:00:00:00:02 dev vtep0 dst 192.0.2.2 self permanent\n");
    assert_eq!(cli_ok(sa, &["neigh", "show"]), "10.244.2.0 dev vtep0 lladdr 02:00:00:00:00:02 PERMANENT\n");
    hosts.a.ip(&["route", "del", "10.244.9.0/24"]);
}

/// `route show` says what the kernel has, not only what vtepd wants: a route that someone else's
/// replaced stays lost (vtepd never replaces a route it does not own), so it is shown as lost until
/// the other route goes and vtepd's repair puts its own back.
fn a_lost_route_is_shown_until_it_is_back(hosts: &TwoHosts, sa: &Path) {
    assert_eq!(cli_json(sa, &["route", "show"])[0]["in_kernel"], true);
    hosts.a.ip(&["route", "replace", "10.244.2.0/24", "via", "192.0.2.2"]);
    let text = cli_ok(sa, &["route", "show"]);
    assert!(text.starts_with("10.244.2.0/24 via 10.244.2.0 dev vtep0 onlink    # not in the kernel"), "{text}");
    assert_eq!(cli_json(sa, &["route", "show"])[0]["in_kernel"], false);
    hosts.a.ip(&["route", "del", "10.244.2.0/24", "via", "192.0.2.2"]);
    wait_until_for("vtepd's repair puts its route back", RECOVERY_TIMEOUT, || cli_json(sa, &["route", "show"])[0]["in_kernel"] == true);
    assert_eq!(cli_ok(sa, &["route", "show"]), "10.244.2.0/24 via 10.244.2.0 dev vtep0 onlink\n");
}

fn bad_input_is_refused(sa: &Path) {
    let (code, err) = cli_err(sa, &["fdb", "add", "02:00:00:00:00:zz", "dst", "192.0.2.2"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("argument MAC") && err.contains("02:00:00:00:00:zz"), "{err}");
    let (code, err) = cli_err(sa, &["neigh", "add", "10.244.9.300", "lladdr", "02:00:00:00:00:99"]);
    assert!(code == Some(2) && err.contains("argument IP"), "{err}");
    let (code, err) = cli_err(sa, &["fdb", "add", "01:00:5e:00:00:01", "dst", "192.0.2.2"]);
    assert!(code == Some(2) && err.contains("not a unicast MAC"), "{err}");

    assert!(raw(sa, b"garbage\n").starts_with(r#"{"error":"request is not a JSON object"#));
    assert!(raw(sa, b"{\"cmd\":\"flush\"}\n").starts_with(r#"{"error":"unknown command 'flush'"#));
    let bad_mac = raw(sa, b"{\"cmd\":\"fdb_del\",\"mac\":\"nope\"}\n");
    assert!(bad_mac.contains(r#"field \"mac\""#), "{bad_mac}");
    let huge = vec![b'x'; 1 << 20];
    assert!(raw(sa, &huge).contains("the limit is 4096"));
    // A client that connects and says nothing ties up only its own thread.
    let idle = UnixStream::connect(sa).unwrap();
    assert!(raw(sa, b"{\"cmd\":\"stats\"}\n").starts_with(r#"{"ok":{"stats""#));
    drop(idle);

    // Another user: the socket is 0600, and the message should say so rather than "not running".
    // A copy of the binary in /tmp, since the checkout may sit where that user cannot reach.
    let bin = std::env::temp_dir().join(format!("vtepd-as-nobody-{}", std::process::id()));
    std::fs::copy(vtepd_bin(), &bin).expect("copy vtepd");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["stats", "--socket"])
        .arg(sa)
        .output()
        .expect("run setpriv");
    let _ = std::fs::remove_file(&bin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("permission denied on {}", sa.display())) && err.contains("sudo"), "{err}");

    // Eight clients that say nothing fill the server; the ninth is told so, not "Broken pipe".
    let held: Vec<UnixStream> = (0..8).map(|_| UnixStream::connect(sa).unwrap()).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, err) = cli_err(sa, &["stats"]);
    assert!(code == Some(1) && err.contains("vtepd is busy (8 clients); try again"), "{err}");
    drop(held);
    wait_until("the held clients' threads end", || cli(sa, &["stats"]).status.success());

    let missing = Path::new("/nonexistent/vtepd.sock");
    let (code, err) = cli_err(missing, &["stats"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("/nonexistent/vtepd.sock") && err.contains("is vtepd running?") && err.contains("--socket"), "{err}");
}

/// A vtepd started without `--socket`, killed with SIGTERM on drop.
struct Daemon(std::process::Child);

impl Daemon {
    fn start(ns: &Netns, config: &Path, extra: &[&str]) -> Daemon {
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), vtepd_bin(), "run", "--config"])
            .arg(config)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn vtepd");
        Daemon(child)
    }

    /// SIGTERM, and at most 10 s for it to exit (then SIGKILL and a failed test).
    fn stop(mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.0.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() >= deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                panic!("vtepd did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn single_node(public_ip: &str, subnet: &str, device: &str, extra: &str) -> String {
    format!("{extra}[node]\npublic_ip = \"{public_ip}\"\nsubnet = \"{subnet}\"\n\n[vxlan]\ndevice = \"{device}\"\n")
}

/// `ip netns exec <ns> vtepd <args>` without `--socket`: the CLI finds the socket by itself.
fn cli_in(ns: &Netns, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns.name(), vtepd_bin()]).args(args).output().expect("run vtepd CLI")
}

#[test]
fn sockets_default_stale_and_in_use() {
    let hosts = TwoHosts::new("csock");
    hosts.a.ip(&["addr", "add", "192.0.2.11/24", "dev", UNDERLAY_DEV]);
    let dir = TempDir::new("csock");
    // Two nodes on one host, each with a `vtep0` and the default socket: one directory per
    // namespace keeps them apart (the demo and the benchmark run exactly this).
    let peer = |ip: &str, subnet: &str| format!("\n[[peer]]\npublic_ip = \"{ip}\"\nsubnet = \"{subnet}\"\nvtep_mac = \"02:00:00:00:00:09\"\n");
    let c1 = dir.write("1.toml", &(single_node("192.0.2.1", "10.244.1.0/24", "vtep0", "") + &peer("192.0.2.2", "10.244.2.0/24")));
    let c2 = dir.write("2.toml", &(single_node("192.0.2.2", "10.244.2.0/24", "vtep0", "") + &peer("192.0.2.1", "10.244.1.0/24")));
    let d1 = Daemon::start(&hosts.a, &c1, &[]);
    let d2 = Daemon::start(&hosts.b, &c2, &[]);
    let netns_dir = |ns: &Netns| Path::new("/run/vtepd/netns").join(ns.name());
    let (s1, s2) = (netns_dir(&hosts.a).join("vtep0.sock"), netns_dir(&hosts.b).join("vtep0.sock"));
    for s in [&s1, &s2] {
        wait_until(&format!("{} answers", s.display()), || cli(s, &["stats"]).status.success());
        assert_eq!(std::fs::metadata(s).unwrap().permissions().mode() & 0o777, 0o600);
    }
    for (ns, ip) in [(&hosts.a, "192.0.2.2"), (&hosts.b, "192.0.2.1")] {
        let out = cli_in(ns, &["peers"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(ip), "vtepd peers in {}: {}\n{text}", ns.name(), String::from_utf8_lossy(&out.stderr));
    }

    // A second vtepd in the same namespace, another device: its own default socket, and the CLI
    // there no longer guesses.
    let c3 = dir.write("3.toml", &single_node("192.0.2.11", "10.244.11.0/24", "vtep1", ""));
    let d3 = Daemon::start(&hosts.a, &c3, &[]);
    let s3 = netns_dir(&hosts.a).join("vtep1.sock");
    wait_until(&format!("{} answers", s3.display()), || cli(&s3, &["stats"]).status.success());
    let out = cli_in(&hosts.a, &["stats"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("several vtepd control sockets") && err.contains("--socket"), "{err}");
    assert!(cli_ok(&s1, &["neigh", "show"]).contains("10.244.2.0"));
    // Its socket file unlinked under it and another socket bound at the path (another vtepd's;
    // here the test's own): stopping must neither connect to that one nor remove it.
    std::fs::remove_file(&s3).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&s3).unwrap();
    other.set_nonblocking(true).unwrap();
    d3.stop();
    assert!(s3.exists(), "vtepd removed a socket that was not its own");
    let woke = other.accept();
    assert!(matches!(&woke, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "vtepd's shutdown connected to another socket: {woke:?}");
    drop(other);
    std::fs::remove_file(&s3).unwrap();

    // A second vtepd may not take over a socket a live one serves.
    let out = Command::new("ip")
        .args(["netns", "exec", hosts.b.name(), vtepd_bin(), "run", "--config"])
        .arg(&c1)
        .args(["--socket", s1.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("belongs to a vtepd that is running"), "{err}");
    assert!(cli(&s1, &["stats"]).status.success(), "the first vtepd lost its socket");

    d1.stop();
    d2.stop();
    assert!(!s1.exists() && !s2.exists(), "sockets left behind after SIGTERM");
    assert!(!netns_dir(&hosts.a).exists() && !netns_dir(&hosts.b).exists(), "empty namespace socket directories left behind");

    // A socket file from a vtepd that died (nothing listens) is replaced.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let cfg_b = NodeCfg::host(2, &[]);
    let b = Vtepd::start_with(&hosts.b, &dir.write("b.toml", &cfg_b.to_toml()), &cfg_b, &["--socket", stale.to_str().unwrap()]);
    assert!(cli(&stale, &["stats"]).status.success());
    let err = b.stderr();
    assert!(err.contains("removing stale control socket"), "{err}");
    b.stop();
    assert!(!stale.exists());
}
