//! Cross-subnet mode (Calico's CrossSubnet, Flannel's DirectRouting) with the IPIP and the VXLAN
//! backend: hosts A and B share 192.0.2.0/24, host C sits on 198.51.100.0/24 behind a router. With
//! `direct_routing = true`, A and B route each other's pods plainly over the shared link and
//! encapsulate only towards C; a capture on A's underlay shows both. Two more hosts on one link
//! show a peer moving between tunnel and direct route as the underlay is re-addressed.
//!
//! ```text
//!  A 192.0.2.1 ─┐
//!               ├─ br0 (switch netns) ─ 192.0.2.254 R 198.51.100.254 ─── 198.51.100.3 C
//!  B 192.0.2.2 ─┘
//! ```

mod common;

use common::*;

struct ThreeHosts {
    a: Netns,
    b: Netns,
    c: Netns,
    _router: Netns,
    _switch: Netns,
}

fn build() -> ThreeHosts {
    require_root();
    let (a, b, c) = (Netns::new("xsa"), Netns::new("xsb"), Netns::new("xsc"));
    let (router, switch) = (Netns::new("xsr"), Netns::new("xss"));
    switch.ip(&["link", "add", "br0", "type", "bridge"]);
    switch.ip(&["link", "set", "br0", "up"]);
    for (ns, dev, port) in [(&a, UNDERLAY_DEV, "pa"), (&b, UNDERLAY_DEV, "pb"), (&router, "eth0", "pr")] {
        veth(ns, dev, &switch, port);
        switch.ip(&["link", "set", port, "master", "br0"]);
    }
    veth(&router, "eth1", &c, UNDERLAY_DEV);
    a.addr(UNDERLAY_DEV, "192.0.2.1/24");
    b.addr(UNDERLAY_DEV, "192.0.2.2/24");
    router.addr("eth0", "192.0.2.254/24");
    router.addr("eth1", "198.51.100.254/24");
    router.sysctl("net.ipv4.ip_forward=1");
    c.addr(UNDERLAY_DEV, "198.51.100.3/24");
    for ns in [&a, &b] {
        ns.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.254"]);
    }
    c.ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.254"]);
    wait_until("underlay ping A -> C through the router", || {
        a.exec("ping", &["-c", "1", "-W", "1", "198.51.100.3"]).status.success()
    });
    ThreeHosts { a, b, c, _router: router, _switch: switch }
}

const HOSTS: [(&str, &str); 3] =
    [("192.0.2.1", "10.244.1.0/24"), ("192.0.2.2", "10.244.2.0/24"), ("198.51.100.3", "10.244.3.0/24")];

/// What differs between the backends: the config, the device and how tshark shows a tunnelled
/// packet's outer protocol (IPIP: "4", VXLAN: UDP "17").
struct Mode {
    backend: &'static str,
    dev: &'static str,
    outer_proto: &'static str,
}

const IPIP: Mode = Mode { backend: "ipip", dev: "ipip0", outer_proto: "4" };
const VXLAN: Mode = Mode { backend: "vxlan", dev: "vtep0", outer_proto: "17" };

/// vtepd's default VTEP MAC for an underlay address (02:76 + the address).
fn default_mac(ip: &str) -> String {
    let o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
    format!("02:76:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

fn start(m: &Mode, ns: &Netns, dir: &TempDir, me: usize) -> Vtepd {
    start_among(m, ns, dir, &HOSTS, me)
}

/// Host `me` of `hosts`, with all the others as its peers.
fn start_among(m: &Mode, ns: &Netns, dir: &TempDir, hosts: &[(&str, &str)], me: usize) -> Vtepd {
    let peers: Vec<(&str, &str)> = hosts.iter().enumerate().filter(|(i, _)| *i != me).map(|(_, p)| *p).collect();
    let (ip, subnet) = hosts[me];
    let mut text = format!(
        "[node]\npublic_ip = \"{ip}\"\nsubnet = \"{subnet}\"\nbackend = \"{}\"\n\n[{}]\ndirect_routing = true\n",
        m.backend, m.backend
    );
    for (ip, net) in &peers {
        text.push_str(&format!("\n[[peer]]\npublic_ip = \"{ip}\"\nsubnet = \"{net}\"\n"));
        if m.backend == "vxlan" {
            text.push_str(&format!("vtep_mac = \"{}\"\n", default_mac(ip)));
        }
    }
    let path = dir.write(&format!("{me}.toml"), &text);
    Vtepd::start_until(ns, &path, "device and every peer route", || {
        ns.has_link(m.dev) && peers.iter().all(|(_, net)| ns.has_route(net))
    })
}

#[test]
fn ipip_cross_subnet_routes_near_peers_and_encapsulates_far_ones() {
    cross_subnet(&IPIP);
}

#[test]
fn vxlan_cross_subnet_routes_near_peers_and_encapsulates_far_ones() {
    cross_subnet(&VXLAN);
}

fn cross_subnet(m: &Mode) {
    let t = build();
    let dir = TempDir::new("xs");
    let vtepd = [start(m, &t.a, &dir, 0), start(m, &t.b, &dir, 1), start(m, &t.c, &dir, 2)];

    let dev = m.dev;
    let routes_a = t.a.ip(&["route", "show", "proto", "118"]);
    assert!(routes_a.contains("10.244.2.0/24 via 192.0.2.2 dev ul0"), "A → B is not a plain route:\n{routes_a}");
    assert!(routes_a.lines().any(|l| l.starts_with("10.244.3.0/24 ") && l.contains(&format!("dev {dev}"))), "A → C is not through the tunnel:\n{routes_a}");
    let routes_c = t.c.ip(&["route", "show", "proto", "118"]);
    assert!(
        routes_c.lines().filter(|l| l.contains(&format!("dev {dev}"))).count() == 2,
        "C must tunnel to both:\n{routes_c}"
    );

    let cap = Capture::start(&t.a, UNDERLAY_DEV, &dir, "a.pcap", "ip");
    ping(&t.a, "10.244.1.0", "10.244.2.0");
    ping(&t.a, "10.244.1.0", "10.244.3.0");
    ping(&t.c, "10.244.3.0", "10.244.1.0");
    ping(&t.b, "10.244.2.0", "10.244.3.0");
    let lines = tshark_fields(&cap.finish(), &["ip.proto", "ip.src", "ip.dst", "icmp.type"]);
    let count = |want: &str| lines.iter().filter(|l| l.as_str() == want).count();
    let show = || lines.join("\n");
    assert!(count("1\t10.244.1.0\t10.244.2.0\t8") >= 4, "A → B not plain ICMP on the wire:\n{}", show());
    assert!(count("1\t10.244.2.0\t10.244.1.0\t0") >= 4, "B → A replies not plain:\n{}", show());
    let p = m.outer_proto;
    assert!(
        count(&format!("{p},1\t192.0.2.1,10.244.1.0\t198.51.100.3,10.244.3.0\t8")) >= 4,
        "A → C not encapsulated:\n{}",
        show()
    );
    assert!(
        count(&format!("{p},1\t198.51.100.3,10.244.3.0\t192.0.2.1,10.244.1.0\t8")) >= 4,
        "C → A not encapsulated:\n{}",
        show()
    );
    assert!(
        !lines.iter().any(|l| l.contains(',') && l.contains("192.0.2.1,") && l.contains("192.0.2.2,")),
        "A and B encapsulated to each other:\n{}",
        show()
    );

    let [a, b, c] = vtepd;
    let counters = [a.stop(), b.stop(), c.stop()];
    for (host, ctr) in ["A", "B", "C"].iter().zip(&counters) {
        for k in IPIP_RX_DROPS.iter().chain(RX_HEADER_DROPS) {
            assert_eq!(ctr[*k], 0, "{host}: {k}\n{}", show_counters(ctr));
        }
    }
    assert!(counters[2]["rx_packets"] >= 8, "C received no tunnelled traffic:\n{}", show_counters(&counters[2]));
    assert!(!t.a.has_route("10.244.2.0/24"), "A's direct route left behind after exit");
}

/// The device deleted while the underlay link is down: the recreated device must stay although
/// the near peer's direct route cannot go in until the link is back. (A failure of that one peer
/// used to fail the whole recreation, which dropped the new device again, once a second.)
#[test]
fn a_recreated_device_stays_while_a_direct_peer_cannot_go_in() {
    let t = build();
    let dir = TempDir::new("xsre");
    let vtepd = [start(&VXLAN, &t.a, &dir, 0), start(&VXLAN, &t.b, &dir, 1), start(&VXLAN, &t.c, &dir, 2)];
    let index = |ns: &Netns| ns.link_index("vtep0");
    t.a.ip(&["link", "set", UNDERLAY_DEV, "down"]);
    t.a.ip(&["link", "del", "vtep0"]);
    wait_until_for("vtep0 recreated on A", RECOVERY_TIMEOUT, || t.a.has_link("vtep0"));
    let first = index(&t.a);
    // Several of the supervisor's one-second device checks.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(t.a.has_link("vtep0") && index(&t.a) == first, "vtep0 went or was made again (index {first} before, now {:?})", index(&t.a));
    assert!(t.a.has_route("10.244.3.0/24"), "the tunnelled peer's route is not back on the new device");

    t.a.ip(&["link", "set", UNDERLAY_DEV, "up"]);
    // The link going down took the static route to C's side with it.
    t.a.ip(&["route", "replace", "198.51.100.0/24", "via", "192.0.2.254"]);
    wait_until_for("A's direct route to B back", RECOVERY_TIMEOUT, || t.a.has_route("10.244.2.0/24"));
    wait_until_for("underlay ping A -> C", RECOVERY_TIMEOUT, || {
        t.a.exec("ping", &["-c", "1", "-W", "1", "198.51.100.3"]).status.success()
    });
    ping(&t.a, "10.244.1.0", "10.244.2.0");
    ping(&t.a, "10.244.1.0", "10.244.3.0");
    for v in vtepd {
        v.stop();
    }
}

/// Re-addressing the underlay moves a peer between tunnel and direct route without a restart.
/// A (192.0.2.1) and B (198.51.100.2) share a link but no subnet (each reaches the other by a
/// device route), so they start tunnelled. An address in B's subnet on A makes B on-link for A
/// only: A routes to B plainly while B still tunnels to A, which A must accept (as a kernel VXLAN
/// device would). Then B gets one in A's subnet (plain both ways), and taking both away brings
/// the tunnel back. (Peers used to keep the class they had at start until a restart, and a
/// directly routed peer's tunnelled packets were dropped as from an unknown source.)
#[test]
fn vxlan_cross_subnet_follows_the_underlay_being_readdressed() {
    follows_readdressing(&VXLAN);
}

#[test]
fn ipip_cross_subnet_follows_the_underlay_being_readdressed() {
    follows_readdressing(&IPIP);
}

fn follows_readdressing(m: &Mode) {
    require_root();
    let (a, b) = (Netns::new("xma"), Netns::new("xmb"));
    veth(&a, UNDERLAY_DEV, &b, UNDERLAY_DEV);
    for ns in [&a, &b] {
        // Plain packets arrive on the underlay from pods whose route points into the tunnel (the
        // asymmetric phase): strict reverse-path filtering would drop them before vtepd matters.
        ns.sysctl("net.ipv4.conf.all.rp_filter=0");
        ns.sysctl(&format!("net.ipv4.conf.{UNDERLAY_DEV}.rp_filter=0"));
    }
    a.addr(UNDERLAY_DEV, "192.0.2.1/24");
    b.addr(UNDERLAY_DEV, "198.51.100.2/24");
    a.ip(&["route", "add", "198.51.100.0/24", "dev", UNDERLAY_DEV]);
    b.ip(&["route", "add", "192.0.2.0/24", "dev", UNDERLAY_DEV]);
    wait_until("underlay ping A -> B over the device route", || {
        a.exec("ping", &["-c", "1", "-W", "1", "198.51.100.2"]).status.success()
    });
    let hosts = [("192.0.2.1", "10.244.1.0/24"), ("198.51.100.2", "10.244.2.0/24")];
    let dir = TempDir::new("xm");
    let vtepd = [start_among(m, &a, &dir, &hosts, 0), start_among(m, &b, &dir, &hosts, 1)];
    let route = |ns: &Netns, net: &str| {
        let routes = ns.ip(&["route", "show", "proto", "118"]);
        routes.lines().find(|l| l.starts_with(&format!("{net} "))).unwrap_or_default().to_string()
    };
    let on_dev = format!("dev {}", m.dev);
    let a_tunnels = || route(&a, "10.244.2.0/24").contains(&on_dev);
    let b_tunnels = || route(&b, "10.244.1.0/24").contains(&on_dev);
    let a_direct = || route(&a, "10.244.2.0/24").contains("via 198.51.100.2 dev ul0");
    let b_direct = || route(&b, "10.244.1.0/24").contains("via 192.0.2.1 dev ul0");
    assert!(a_tunnels() && b_tunnels(), "not tunnelled at start: A {:?}, B {:?}", route(&a, "10.244.2.0/24"), route(&b, "10.244.1.0/24"));
    assert_on_wire(m, &a, &b, &dir, "start", [true, true]);

    a.ip(&["route", "del", "198.51.100.0/24", "dev", UNDERLAY_DEV]);
    a.ip(&["addr", "add", "198.51.100.1/24", "dev", UNDERLAY_DEV]);
    wait_until_for("A's direct route to B after A's re-addressing", RECOVERY_TIMEOUT, a_direct);
    assert!(b_tunnels(), "B moved too: {:?}", route(&b, "10.244.1.0/24"));
    // VXLAN's neighbour entry for B's VTEP went out with its tunnel route (IPIP has none).
    assert!(permanent_neighbours(&a, m.dev).is_empty(), "the tunnel's neighbour entry stayed: {:?}", permanent_neighbours(&a, m.dev));
    assert_on_wire(m, &a, &b, &dir, "A direct, B tunnelled", [false, true]);

    b.ip(&["route", "del", "192.0.2.0/24", "dev", UNDERLAY_DEV]);
    b.ip(&["addr", "add", "192.0.2.2/24", "dev", UNDERLAY_DEV]);
    wait_until_for("B's direct route to A after B's re-addressing", RECOVERY_TIMEOUT, b_direct);
    assert!(a_direct(), "A moved back: {:?}", route(&a, "10.244.2.0/24"));
    assert_on_wire(m, &a, &b, &dir, "both direct", [false, false]);

    for (ns, addr, other_side) in [(&a, "198.51.100.1/24", "198.51.100.0/24"), (&b, "192.0.2.2/24", "192.0.2.0/24")] {
        ns.ip(&["addr", "del", addr, "dev", UNDERLAY_DEV]);
        ns.ip(&["route", "add", other_side, "dev", UNDERLAY_DEV]);
    }
    wait_until_for("tunnel routes both ways again", RECOVERY_TIMEOUT, || a_tunnels() && b_tunnels());
    assert_on_wire(m, &a, &b, &dir, "addresses gone again", [true, true]);

    let [va, vb] = vtepd;
    for (host, ctr) in [("A", va.stop()), ("B", vb.stop())] {
        for k in RX_HEADER_DROPS.iter().chain(["drop_rx_unknown_source"].iter()) {
            assert_eq!(ctr[*k], 0, "{host}: {k}\n{}", show_counters(&ctr));
        }
    }
    assert!(!a.has_route("10.244.2.0/24") && !b.has_route("10.244.1.0/24"), "a route left behind after exit");
}

/// Pings A -> B and B -> A pod to pod, and checks on A's underlay how each side's requests went:
/// `tunnelled[0]` for A's, `tunnelled[1]` for B's (encapsulated if true, plain if not).
fn assert_on_wire(m: &Mode, a: &Netns, b: &Netns, dir: &TempDir, phase: &str, tunnelled: [bool; 2]) {
    let cap = Capture::start(a, UNDERLAY_DEV, dir, &format!("{}.pcap", phase.replace([' ', ','], "-")), "ip");
    ping(a, "10.244.1.0", "10.244.2.0");
    ping(b, "10.244.2.0", "10.244.1.0");
    let lines = tshark_fields(&cap.finish(), &["ip.proto", "ip.src", "ip.dst", "icmp.type"]);
    let show = lines.join("\n");
    let p = m.outer_proto;
    let forms = |[src, dst]: [(&str, &str); 2]| {
        let encapsulated = format!("{p},1\t{},{}\t{},{}\t8", src.0, src.1, dst.0, dst.1);
        let plain = format!("1\t{}\t{}\t8", src.1, dst.1);
        (encapsulated, plain)
    };
    let (ua, ub) = (("192.0.2.1", "10.244.1.0"), ("198.51.100.2", "10.244.2.0"));
    for (who, ends, tunnel) in [("A -> B", [ua, ub], tunnelled[0]), ("B -> A", [ub, ua], tunnelled[1])] {
        let (encapsulated, plain) = forms(ends);
        let (want, not) = if tunnel { (encapsulated, plain) } else { (plain, encapsulated) };
        let count = |form: &str| lines.iter().filter(|l| l.as_str() == form).count();
        assert!(count(&want) >= 3 && count(&not) == 0, "{phase}: {who} requests not (only) {want:?} on the wire:\n{show}");
    }
}
