//! etcd mode: etcd killed for 30 s in the middle of a TCP transfer between two nodes. The transfer
//! (SHA-256 checked) does not notice; after etcd returns, a change made then reaches the nodes.

mod common;

use common::etcd::*;
use common::*;
use std::time::Duration;

#[test]
fn an_etcd_outage_does_not_touch_forwarding() {
    let _heavy = heavy_lock();
    let (ul, mut etcd, dir) = vxlan_network("eo");
    let a = ul.host("eo", 1);
    let b = ul.host("eo", 2);
    let (mut da, _) = start_member(&a, 1, &etcd, &dir);
    let (mut db, _) = start_member(&b, 2, &etcd, &dir);
    let key_a = etcd.lease_of("192.0.2.1").unwrap();
    let key_b = etcd.lease_of("192.0.2.2").unwrap();
    let (subnet_b, _) = subnet_of_key(&key_b);
    wait_until("node 1 routes to node 2", || a.has_route(&subnet_b));
    let ip_a = key_a.split('-').next().unwrap().parse().unwrap();
    let ip_b = key_b.split('-').next().unwrap().parse().unwrap();

    // Paced so it is surely still running when etcd comes back.
    let plan = TransferPlan { nbytes: 16 << 20, rate: Some(400_000), hold: 1 << 20 };
    let transfer = Transfer::start(&a, ip_a, &b, ip_b, 5401, plan);
    transfer.wait_sent(1 << 20);
    let before = da.log_count("etcd unreachable");
    etcd.kill();
    da.wait_for_log("etcd unreachable", before);
    let sent_at_kill = transfer.sent();
    std::thread::sleep(Duration::from_secs(30));
    assert!(transfer.sent() > sent_at_kill, "the transfer stalled while etcd was down");
    assert!(da.is_running() && db.is_running(), "a node exited while etcd was down");
    assert!(a.has_route(&subnet_b), "node 1 lost its route to node 2 while etcd was down");
    // Logged once per state change, not once per retry.
    assert_eq!(da.log_count("etcd unreachable"), before + 1, "{}", da.stderr());
    assert_eq!(ctl_json(&da, "stats")["datastore_reachable"], false, "stats during the outage");

    let back = da.log_count("etcd reachable again");
    etcd.restart();
    da.wait_for_log("etcd reachable again", back);
    assert_eq!(ctl_json(&da, "stats")["datastore_reachable"], true, "stats after the outage");
    let value = &vxlan_lease_value("192.0.2.9", "02:00:00:00:00:09");
    let key = etcd.free_lease_key();
    let (subnet, _) = subnet_of_key(&key);
    etcd.put(&format!("{PREFIX}/subnets/{key}"), value);
    wait_until_for("both nodes learn a lease written after the outage", RECOVERY_TIMEOUT, || {
        a.has_route(&subnet) && b.has_route(&subnet)
    });
    transfer.finish(16 << 20);
    da.stop();
    db.stop();
}

/// The control socket is bound before the node joins (so a second vtepd is refused at once) but
/// served only after; a request sent meanwhile waits in the socket's backlog. If its client has
/// hung up by the time vtepd serves it, nobody is told the outcome, so it must not be carried out.
#[test]
fn a_request_whose_client_left_while_vtepd_was_joining_is_not_carried_out() {
    use std::io::Write;
    let (ul, mut etcd, dir) = vxlan_network("ej");
    let a = ul.host("ej", 1);
    etcd.kill();
    let env = dir.path().join("subnet-1.env");
    let cfg = dir.write("node1.toml", &etcd_toml(1, &etcd.endpoint(), &env));
    let socket = test_socket(&a);
    let socket_arg = socket.display().to_string();
    let da = Vtepd::start_until_with(&a, &cfg, &["--socket", &socket_arg], "control socket bound", || socket.exists());
    let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connect while joining");
    s.write_all(b"{\"cmd\":\"fdb_add\",\"mac\":\"02:00:00:00:00:77\",\"dst\":\"192.0.2.77\"}\n").unwrap();
    drop(s);
    // Still joining: etcd is down.
    std::thread::sleep(Duration::from_secs(1));
    assert!(!env.exists(), "joined without etcd");
    etcd.restart();
    wait_until("node 1 joined once etcd is back", || env.exists() && a.has_link("vtep0"));
    let fdb = fdb_show(&socket_arg);
    assert!(
        !fdb.to_string().contains("02:00:00:00:00:77"),
        "the request of a client that had hung up was carried out: {fdb}"
    );
    // A client that waits is answered as usual.
    let out = std::process::Command::new(vtepd_bin())
        .args(["fdb", "add", "02:00:00:00:00:78", "dst", "192.0.2.78", "--socket", &socket_arg])
        .output()
        .unwrap();
    assert!(out.status.success(), "fdb add: {}", String::from_utf8_lossy(&out.stderr));
    assert!(fdb_show(&socket_arg).contains("02:00:00:00:00:78"));
    da.stop();
}

fn fdb_show(socket: &str) -> String {
    let out = std::process::Command::new(vtepd_bin()).args(["fdb", "show", "--socket", socket]).output().unwrap();
    assert!(out.status.success(), "fdb show: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
