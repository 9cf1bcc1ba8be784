//! The host-gw backend (Flannel's host-gw) between two hosts on one L2 segment, with pods behind
//! cni0 bridges: vtepd installs `peer_subnet via peer_public_ip dev ul0`, pods reach each other
//! with no encapsulation at all (checked on the wire), and the routes go away at exit. A peer that is
//! not on-link is refused with an error naming it, before anything is installed; a start that
//! fails after installing takes its routes out again.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;

use common::*;

fn config(me: u8, peer_ip: &str, peer_subnet: &str) -> String {
    routed_toml("host-gw", &host_underlay_ip(me), &host_subnet(me), "", &[(peer_ip, peer_subnet)])
}

fn start(ns: &Netns, dir: &TempDir, me: u8, peer: u8) -> Vtepd {
    let path = dir.write(&format!("{me}.toml"), &config(me, &host_underlay_ip(peer), &host_subnet(peer)));
    let route = host_subnet(peer);
    Vtepd::start_until(ns, &path, &format!("route {route}"), || ns.has_route(&route))
}

#[test]
fn host_gw_pods_talk_over_plain_routes() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("hg");
    // No encapsulation, so the pods keep the underlay's full MTU.
    let pod1 = add_pod(&hosts.a, 1, "hgp1", 1500);
    let pod2 = add_pod(&hosts.b, 2, "hgp2", 1500);
    let dir = TempDir::new("hg");
    let vtepd_a = start(&hosts.a, &dir, 1, 2);
    let vtepd_b = start(&hosts.b, &dir, 2, 1);

    let route = hosts.a.ip(&["route", "show", "10.244.2.0/24"]);
    assert!(
        route.contains("via 192.0.2.2 dev ul0 proto 118"),
        "A's route to B's pods is not `via 192.0.2.2 dev ul0 proto 118`:\n{route}"
    );

    let cap = Capture::start(&hosts.a, UNDERLAY_DEV, &dir, "ul0.pcap", "ip");
    ping(&pod1, "10.244.1.2", "10.244.2.2");
    ping(&pod2, "10.244.2.2", "10.244.1.2");
    let lines = tshark_fields(&cap.finish(), &["ip.proto", "ip.src", "ip.dst", "icmp.type"]);
    let plain = |src: &str, dst: &str, ty: u8| lines.iter().filter(|l| **l == format!("1\t{src}\t{dst}\t{ty}")).count();
    assert!(
        plain("10.244.1.2", "10.244.2.2", 8) >= 4 && plain("10.244.2.2", "10.244.1.2", 0) >= 4,
        "pod pings are not plain ICMP on the underlay:\n{}",
        lines.join("\n")
    );
    assert!(lines.iter().all(|l| l.starts_with("1\t")), "something other than plain ICMP on ul0:\n{}", lines.join("\n"));

    tcp_transfer(&pod1, None, &pod2, Ipv4Addr::new(10, 244, 2, 2), 5001, BIG_TRANSFER);

    let counters = vtepd_a.stop();
    vtepd_b.stop();
    assert_eq!(counters["tx_packets"], 0, "host-gw has no data path:\n{}", show_counters(&counters));
    for (ns, route) in [(&hosts.a, "10.244.2.0/24"), (&hosts.b, "10.244.1.0/24")] {
        assert!(!ns.has_route(route), "route {route} left in {} after exit", ns.name());
    }
}

#[test]
fn host_gw_refuses_peer_not_on_link() {
    require_root();
    let host = Netns::new("hgoff");
    let other = Netns::new("hgoffb");
    veth(&host, UNDERLAY_DEV, &other, UNDERLAY_DEV);
    host.addr(UNDERLAY_DEV, "192.0.2.1/24");
    let dir = TempDir::new("hgoff");
    let text = routed_toml(
        "host-gw",
        "192.0.2.1",
        "10.244.1.0/24",
        "",
        &[("192.0.2.2", "10.244.2.0/24"), ("198.51.100.3", "10.244.3.0/24")],
    );
    let path = dir.write("a.toml", &text);
    let out = Command::new("ip")
        .args(["netns", "exec", host.name(), vtepd_bin(), "run", "--config"])
        .arg(&path)
        .output()
        .expect("run vtepd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "vtepd should fail to start; stderr:\n{stderr}");
    for want in ["peer[1]", "198.51.100.3", "not on-link", "ul0"] {
        assert!(stderr.contains(want), "error does not mention {want}:\n{stderr}");
    }
    assert!(!host.has_route("10.244.2.0/24"), "a route was installed before the check failed");
}

/// A reload that brings a peer behind a router is refused as a start with it would be, naming it;
/// the running peers stay as they were. (Accepted, it would sit uninstalled until a restart
/// failed on it.)
#[test]
fn host_gw_reload_with_a_peer_not_on_link_is_rejected() {
    let hosts = TwoHosts::new("hgrel");
    let dir = TempDir::new("hgrel");
    let vtepd = start(&hosts.a, &dir, 1, 2);
    let before = hosts.a.ip(&["route", "show"]);
    let far = routed_toml("host-gw", &host_underlay_ip(1), &host_subnet(1), "", &[(&host_underlay_ip(2), &host_subnet(2)), ("198.51.100.3", "10.244.3.0/24")]);
    dir.write("1.toml", &far);
    let n = vtepd.log_count("config reload rejected");
    vtepd.signal(libc::SIGHUP);
    let log = vtepd.wait_for_log("config reload rejected", n);
    for want in ["peer[1].public_ip", "198.51.100.3", "not on-link", "ul0"] {
        assert!(log.contains(want), "the rejection does not mention {want}:\n{log}");
    }
    assert_eq!(hosts.a.ip(&["route", "show"]), before, "the rejected reload changed the routes");
    vtepd.stop();
}

/// The other way round: a subnet added to the underlay after start makes a peer in it on-link, and
/// a reload that brings that peer is accepted — so its route must go in, not be refused by a view
/// of the underlay from start-up and retried for ever.
#[test]
fn host_gw_reload_with_a_peer_on_a_subnet_added_since_start_installs_it() {
    let hosts = TwoHosts::new("hgnew");
    let dir = TempDir::new("hgnew");
    let vtepd = start(&hosts.a, &dir, 1, 2);
    hosts.a.addr(UNDERLAY_DEV, "198.51.100.1/24");
    let near = routed_toml("host-gw", &host_underlay_ip(1), &host_subnet(1), "", &[(&host_underlay_ip(2), &host_subnet(2)), ("198.51.100.3", "10.244.3.0/24")]);
    dir.write("1.toml", &near);
    vtepd.signal(libc::SIGHUP);
    wait_until("the new peer's route", || hosts.a.has_route("10.244.3.0/24"));
    let route = hosts.a.ip(&["route", "show", "10.244.3.0/24"]);
    assert!(route.contains("via 198.51.100.3") && route.contains("proto 118"), "not vtepd's route to the peer: {route}");
    assert_eq!(vtepd.log_count("peer not installed"), 0, "{}", vtepd.stderr());
    vtepd.stop();
    assert!(!hosts.a.has_route("10.244.3.0/24"), "the route outlived the stop");
}

/// SIGKILL runs no teardown, and host-gw's routes are on the underlay, so they outlive the process
/// (pods keep talking meanwhile). The next start removes those its config no longer wants — and
/// only those: a kept peer's route is never deleted and re-added, and routes vtepd did not install
/// (another protocol, another device) are left alone.
#[test]
fn host_gw_restart_after_sigkill_sweeps_stale_routes() {
    let hosts = TwoHosts::new("hgk");
    let dir = TempDir::new("hgk");
    let peers = [(host_underlay_ip(2), host_subnet(2)), ("192.0.2.3".to_string(), "10.244.3.0/24".to_string())];
    let peers: Vec<(&str, &str)> = peers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let both = dir.write("both.toml", &routed_toml("host-gw", &host_underlay_ip(1), &host_subnet(1), "", &peers));
    let one = dir.write("one.toml", &routed_toml("host-gw", &host_underlay_ip(1), &host_subnet(1), "", &peers[..1]));
    // Someone else's route through the same device, and one of ours to keep.
    hosts.a.ip(&["route", "add", "10.244.9.0/24", "via", "192.0.2.9", "dev", UNDERLAY_DEV, "proto", "static"]);

    let a = Vtepd::start_until(&hosts.a, &both, "routes to both peers", || hosts.a.has_route("10.244.3.0/24"));
    let killed_log = a.kill_hard();
    let left = hosts.a.ip(&["route", "show", "proto", "118"]);
    assert!(left.contains("10.244.2.0/24") && left.contains("10.244.3.0/24"), "SIGKILL took routes with it?\n{left}");

    let a = Vtepd::start_until(&hosts.a, &one, "the kept route", || hosts.a.has_route("10.244.2.0/24"));
    wait_until("the stale route to 10.244.3.0/24 removed", || !hosts.a.has_route("10.244.3.0/24"));
    // The route goes before the log line reaches our reader thread: wait for the line, not just the route.
    let log = a.wait_for_log("removed a stale route", 0);
    assert!(log.contains("10.244.3.0/24"), "the sweep does not name the stale route:\n{log}");
    assert!(!log.contains("10.244.2.0/24 via"), "the kept route was swept:\n{log}\nkilled run:\n{killed_log}");
    assert!(hosts.a.has_route("10.244.9.0/24"), "a route vtepd did not install was removed");
    a.stop();
    assert_eq!(hosts.a.ip(&["route", "show", "proto", "118"]).trim(), "", "routes left after SIGTERM");
}

/// One instance per VNI is how several VNIs share a host, so one instance's start must not sweep
/// another's routes off the underlay while it runs — only once it is dead. Here a VXLAN instance
/// starts beside a running host-gw one on the same underlay: it leaves the host-gw route (and says
/// why); after the host-gw instance is SIGKILLed, its next start removes it as stale.
#[test]
fn a_start_leaves_a_running_instances_routes_and_sweeps_a_dead_ones() {
    let hosts = TwoHosts::new("hgco");
    let dir = TempDir::new("hgco");
    let route = host_subnet(2);
    let hostgw = Vtepd::start_until(&hosts.a, &dir.write("hg.toml", &config(1, &host_underlay_ip(2), &route)), "host-gw route", || hosts.a.has_route(&route));
    // Beside the control sockets, in the namespace's own directory.
    let claims_dir = format!("/run/vtepd/netns/{}", hosts.a.name());
    let claimed = std::fs::read_to_string(format!("{claims_dir}/host-gw-{}.routes", host_underlay_ip(1))).unwrap_or_default();
    assert!(claimed.contains(&format!("{route} via {}", host_underlay_ip(2))), "the host-gw instance claims no route:\n{claimed}");

    let vxlan_cfg = dir.write("vx.toml", &routed_toml("vxlan", &host_underlay_ip(1), "10.244.101.0/24", "", &[]));
    let vxlan = Vtepd::start_until(&hosts.a, &vxlan_cfg, "vtep0", || hosts.a.has_link("vtep0"));
    let log = vxlan.wait_for_log("left a route another running vtepd instance holds", 0);
    assert!(log.contains(&route) && log.contains("host-gw"), "the kept route is not named with its holder:\n{log}");
    assert_eq!(vxlan.log_count("removed a stale route"), 0, "a running instance's route was swept:\n{}", vxlan.stderr());
    assert!(hosts.a.has_route(&route));
    vxlan.stop();
    assert!(!std::path::Path::new(&format!("{claims_dir}/vtep0.routes")).exists(), "a clean stop leaves its claim file");

    // Dead: its route stays behind (and its claim file, whose lock died with it), claiming nothing.
    hostgw.kill_hard();
    assert!(hosts.a.has_route(&route), "SIGKILL took the route with it?");
    let vxlan = Vtepd::start_until(&hosts.a, &vxlan_cfg, "vtep0", || hosts.a.has_link("vtep0"));
    wait_until("the dead instance's route swept", || !hosts.a.has_route(&route));
    let log = vxlan.wait_for_log("removed a stale route", 0);
    assert!(log.contains(&route), "the sweep does not name the dead instance's route:\n{log}");
    vxlan.stop();
}

/// The underlay made anew under running vtepds (a bond re-created, the address moved onto a new
/// bridge): the kernel flushed the routes with the old interface, and they come back on the new
/// one, as does the claim file's record of them. (They used to be retried on the old interface
/// index for ever, until a restart.)
#[test]
fn host_gw_follows_its_underlay_made_anew() {
    let hosts = TwoHosts::new("hgre");
    let dir = TempDir::new("hgre");
    let (to_b, to_a) = (host_subnet(2), host_subnet(1));
    let a = start(&hosts.a, &dir, 1, 2);
    let b = start(&hosts.b, &dir, 2, 1);
    // Deleting one end of a veth pair takes the other with it: both hosts lose their underlay.
    hosts.a.ip(&["link", "del", UNDERLAY_DEV]);
    // A's address moves onto a bridge, B's back onto a plain ul0.
    hosts.a.ip(&["link", "add", "br0", "type", "bridge"]);
    veth(&hosts.a, "port0", &hosts.b, UNDERLAY_DEV);
    hosts.a.ip(&["link", "set", "port0", "master", "br0"]);
    hosts.a.addr("br0", "192.0.2.1/24");
    hosts.b.addr(UNDERLAY_DEV, "192.0.2.2/24");
    let routes = |ns: &Netns| ns.ip(&["route", "show", "proto", "118"]);
    wait_until_for("A's route to B's pods on br0", RECOVERY_TIMEOUT, || routes(&hosts.a).contains(&format!("{to_b} via 192.0.2.2 dev br0")));
    wait_until_for("B's route to A's pods on the new ul0", RECOVERY_TIMEOUT, || routes(&hosts.b).contains(&format!("{to_a} via 192.0.2.1 dev ul0")));
    let br0 = hosts.a.link_index("br0");
    let claims = format!("/run/vtepd/netns/{}/host-gw-{}.routes", hosts.a.name(), host_underlay_ip(1));
    wait_until("A's claim file names br0's index", || {
        std::fs::read_to_string(&claims).unwrap_or_default().contains(&format!("{to_b} via 192.0.2.2 dev {br0}"))
    });
    wait_until("underlay ping A -> B over br0", || hosts.a.exec("ping", &["-c", "1", "-W", "1", "192.0.2.2"]).status.success());
    a.stop();
    b.stop();
    assert!(!hosts.a.has_route(&to_b) && !hosts.b.has_route(&to_a), "routes left behind after exit");
}

/// A second instance of one name (here the same host-gw config, with a control socket of its own)
/// is refused before it touches anything: it used to warn, sweep the running one's routes that
/// its config lacked, and remove the rest at its exit. (For VXLAN or IPIP the name is the device,
/// which two instances cannot share either.)
#[test]
fn a_second_instance_of_one_name_is_refused_and_leaves_the_first_alone() {
    let hosts = TwoHosts::new("hgtw");
    let dir = TempDir::new("hgtw");
    let route = host_subnet(2);
    let path = dir.write("a.toml", &config(1, &host_underlay_ip(2), &route));
    let first = Vtepd::start_until(&hosts.a, &path, "host-gw route", || hosts.a.has_route(&route));
    // Its own peer list is empty: had it run, its sweep would have taken the first one's route.
    let second_cfg = dir.write("b.toml", &routed_toml("host-gw", &host_underlay_ip(1), &host_subnet(1), "", &[]));
    let mut second = Command::new("ip")
        .args(["netns", "exec", hosts.a.name(), vtepd_bin(), "run", "--config"])
        .arg(&second_cfg)
        .arg("--socket")
        .arg(test_socket(&hosts.a))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run vtepd");
    // Bounded: an instance that is not refused runs until it is stopped.
    if exit_within(&mut second, READY_TIMEOUT).is_none() {
        let _ = second.kill();
    }
    let out = second.wait_with_output().expect("vtepd output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the second instance should be refused; stderr:\n{stderr}");
    assert!(stderr.contains(&format!("another vtepd instance named host-gw-{} runs", host_underlay_ip(1))), "the refusal does not name the instance:\n{stderr}");
    assert!(!stderr.contains("removed a stale route"), "the refused instance swept:\n{stderr}");
    assert!(hosts.a.has_route(&route), "the first instance's route is gone");
    first.stop();
    assert!(!hosts.a.has_route(&route));
}

/// A start that fails after the peers' routes went in takes them out again: host-gw's routes sit
/// on the underlay and would outlive the process. The failure here is a thread vtepd cannot spawn
/// (a cgroup's pids.max lets it have its main thread and one more; the control socket's thread
/// comes after the routes), which the error names with the limit to look at.
#[test]
fn host_gw_start_failing_after_install_removes_its_routes() {
    let hosts = TwoHosts::new("hgthr");
    let dir = TempDir::new("hgthr");
    let path = dir.write("a.toml", &config(1, &host_underlay_ip(2), &host_subnet(2)));
    let limit = PidsCgroup::new("hgthr", 2);
    // Joined before entering the namespace: `ip netns exec` mounts a sysfs without the cgroups.
    let out = Command::new("sh")
        .args(["-c", "echo $$ > \"$0\" && exec ip netns exec \"$1\" \"$2\" run --config \"$3\""])
        .arg(limit.procs())
        .arg(hosts.a.name())
        .arg(vtepd_bin())
        .arg(&path)
        .output()
        .expect("run vtepd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "vtepd should fail to start; stderr:\n{stderr}");
    assert!(stderr.contains("peer added"), "it failed before installing the peer, which this test is not about:\n{stderr}");
    for want in ["cannot start the", "thread", "pids.max"] {
        assert!(stderr.contains(want), "the error does not say {want:?}:\n{stderr}");
    }
    let left = hosts.a.ip(&["route", "show", "proto", "118"]);
    assert_eq!(left.trim(), "", "routes left behind by the failed start:\n{left}\nstderr:\n{stderr}");
}
