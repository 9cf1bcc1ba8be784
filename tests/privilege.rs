//! `--user`: after set-up vtepd runs as an unprivileged user with exactly CAP_NET_ADMIN and
//! CAP_NET_RAW, on every thread, and still forwards.

mod common;

use common::*;

/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13).
const KEPT_CAPS: &str = "0000000000003000";

#[test]
fn runs_unprivileged_with_only_network_capabilities() {
    require_root();
    let hosts = TwoHosts::new("pv");
    let dir = TempDir::new("pv");
    let cfg_a = NodeCfg::host(1, &[2]);
    let cfg_b = NodeCfg::host(2, &[1]);
    let path_a = dir.write("a.toml", &cfg_a.to_toml());
    let path_b = dir.write("b.toml", &cfg_b.to_toml());
    let a = Vtepd::start_with(&hosts.a, &path_a, &cfg_a, &["--user", "nobody"]);
    let b = Vtepd::start(&hosts.b, &path_b, &cfg_b);

    let pid = a.pid().expect("vtepd A running");
    // The switch happens right after the routes are in; wait for it rather than race it.
    wait_until("vtepd A to switch to nobody", || {
        proc_field(&format!("/proc/{pid}/status"), "Uid:").starts_with("65534")
    });
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten().collect();
    assert!(tasks.len() >= 2, "expected the main thread and workers, found {}", tasks.len());
    for t in tasks {
        let status = t.path().join("status");
        let status = status.to_str().unwrap();
        assert!(proc_field(status, "Uid:").split_whitespace().all(|u| u == "65534"), "{status}: uid");
        assert_eq!(proc_field(status, "CapEff:"), KEPT_CAPS, "{status}: effective caps");
        assert_eq!(proc_field(status, "CapPrm:"), KEPT_CAPS, "{status}: permitted caps");
    }

    hosts.ping_both_ways();
    // Routes are still removable with the capability kept: the clean exit proves it.
    let socket_a = a.socket.clone();
    a.stop();
    // As nobody it cannot unlink its socket from root's directory (a restart removes it as stale).
    let _ = std::fs::remove_file(socket_a);
    b.stop();
    assert!(!hosts.a.has_route("10.244.2.0/24"), "route left behind by the unprivileged vtepd");
}

/// A misspelt `--user` is found while the arguments are read, before any device or socket exists.
#[test]
fn unknown_user_is_refused_before_set_up() {
    let out = std::process::Command::new(vtepd_bin())
        .args(["run", "--config", "/nonexistent/vtepd.toml", "--user", "fxc-no-such-user"])
        .output()
        .expect("run vtepd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("--user") && stderr.contains("no such user"), "{stderr}");
    // The config is not even read: set-up would have come after it.
    assert!(!stderr.contains("/nonexistent/vtepd.toml"), "{stderr}");
}

/// Without root the first thing said is the missing privilege and its fix, not its first symptom
/// (no right to create the control socket under /run/vtepd).
#[test]
fn without_privilege_the_missing_capability_is_named_first() {
    require_root();
    let dir = TempDir::new("pvnone");
    let path = dir.write("a.toml", &NodeCfg::host(1, &[2]).to_toml());
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", vtepd_bin(), "run", "--config"])
        .arg(&path)
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected:\n{stderr}");
    assert!(stderr.contains("needs CAP_NET_ADMIN") && stderr.contains("run vtepd as root"), "{stderr}");
}
