//! Two hosts, each running vtepd, joined by one underlay veth: overlay ping and 50 MB TCP both ways,
//! counters after a clean SIGTERM, and removal of everything vtepd installed.
//! Also `vtepd check` on good and bad configs (no root needed for those).

mod common;

use std::process::Command;

use common::*;
use common::ecn;

#[test]
fn vxlan_two_hosts_ping_and_tcp() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("2h");
    let dir = TempDir::new("2h");
    let (vtepd_a, vtepd_b) = start_pair(&hosts, &dir, &[]);

    // The device looks like flannel.1: the subnet's .0 as a /32, and the configured MTU.
    let addr_a = hosts.a.ip(&["addr", "show", "dev", "vtep0"]);
    assert!(
        addr_a.contains("10.244.1.0/32"),
        "vtep0 in A lacks 10.244.1.0/32:\n{addr_a}"
    );
    assert!(
        addr_a.contains("mtu 1450"),
        "vtep0 in A does not have mtu 1450:\n{addr_a}"
    );

    hosts.ping_both_ways();

    hosts.tcp_both_ways(BIG_TRANSFER);

    // The packet buffers the kernel copies every frame into asked for huge pages (fewer TLB misses
    // per copy; docs/performance.md), and the transfers have touched them.
    if thp_available() {
        for (host, v) in [("A", &vtepd_a), ("B", &vtepd_b)] {
            let huge = anon_huge_kib(v.pid().expect("vtepd running"));
            assert!(huge >= 2048, "{host}: no packet buffer on a huge page (AnonHugePages {huge} kB)");
        }
    }

    let (counters_a, counters_b) = stop_pair(vtepd_a, vtepd_b);
    assert_clean_traffic("A", &counters_a);
    assert_clean_traffic("B", &counters_b);
    // 50 MB went each way, so each side moved at least that much in both directions.
    for (host, c) in [("A", &counters_a), ("B", &counters_b)] {
        for k in ["rx_bytes", "tx_bytes"] {
            assert!(
                c[k] >= BIG_TRANSFER as u64,
                "{host}: {k} = {} < {BIG_TRANSFER}",
                c[k]
            );
        }
    }

    let (cfg_a, cfg_b) = pair_cfgs();
    assert_cleaned_up(&hosts.a, &cfg_a);
    assert_cleaned_up(&hosts.b, &cfg_b);
    let neigh_a = hosts.a.ip(&["neigh", "show"]);
    assert!(
        !neigh_a.contains("10.244.2.0 "),
        "neighbour 10.244.2.0 left in A:\n{neigh_a}"
    );
}

/// An idle vtepd sleeps: its workers wait for traffic or mail (no timer), the supervisor wakes once
/// a second for its health checks. A sleeping worker still forwards the next packet at once and
/// still stops on SIGTERM.
#[test]
fn an_idle_vtepd_sleeps_until_traffic_comes() {
    let hosts = TwoHosts::new("idle");
    let dir = TempDir::new("idle");
    let (vtepd_a, vtepd_b) = start_pair(&hosts, &dir, &[]);
    ping(&hosts.a, "10.244.1.0", "10.244.2.0");
    std::thread::sleep(std::time::Duration::from_secs(1));

    let before = vtepd_a.thread_switches();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let after = vtepd_a.thread_switches();
    let woke = |name: &str| after[name].saturating_sub(before.get(name).copied().unwrap_or(0));
    let report = format!("{before:?} -> {after:?}");
    let workers: Vec<&String> = after.keys().filter(|n| n.starts_with("vtepd-w")).collect();
    assert_eq!(workers.len(), 2, "two workers expected: {report}");
    for w in workers {
        // Allowance for a stray frame from the kernel; IPv6 is off on the device (see below).
        assert!(woke(w) <= 3, "{w} woke {} times in 3 idle seconds: {report}", woke(w));
    }
    let main = after.keys().find(|n| n.starts_with("vtepd (")).expect("main thread");
    assert!(woke(main) <= 8, "the supervisor woke {} times in 3 idle seconds: {report}", woke(main));

    ping(&hosts.a, "10.244.1.0", "10.244.2.0");
    let (counters_a, counters_b) = stop_pair(vtepd_a, vtepd_b);
    assert_clean_traffic("A", &counters_a);
    assert_clean_traffic("B", &counters_b);
    // With IPv6 on, the kernel's MLD reports, DAD and router solicitations on the TAP were flood
    // drops here: an idle node's drop counters grew with nobody's traffic.
    for (host, c) in [("A", &counters_a), ("B", &counters_b)] {
        assert_eq!(c["drop_tx_flood"], 0, "{host}: the kernel sent broadcast or multicast into an idle TAP\n{}", show_counters(c));
    }
}

// ---------------------------------------------------------------------------------------------------------
// vtepd check

/// Runs `vtepd check --config` on `toml`; returns (exit code, stderr).
fn check(tag: &str, toml: &str) -> (Option<i32>, String) {
    let dir = TempDir::new(tag);
    let path = dir.write("vtepd.toml", toml);
    let out = Command::new(vtepd_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run vtepd check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_rejected(tag: &str, toml: &str, key: &str) {
    let (code, stderr) = check(tag, toml);
    assert_eq!(
        code,
        Some(2),
        "vtepd check should exit 2 for bad `{key}`; stderr:\n{stderr}\nconfig:\n{toml}"
    );
    assert!(
        stderr.contains(key),
        "vtepd check stderr does not name `{key}`:\n{stderr}\nconfig:\n{toml}"
    );
}

#[test]
fn check_accepts_good_config() {
    let toml = NodeCfg::host(1, &[2, 3]).to_toml();
    let (code, stderr) = check("ckok", &toml);
    assert_eq!(
        code,
        Some(0),
        "vtepd check rejected a good config; stderr:\n{stderr}\nconfig:\n{toml}"
    );
}

#[test]
fn check_rejects_vni_over_24_bits() {
    let mut cfg = NodeCfg::host(1, &[2]);
    cfg.vni = 16_777_216;
    assert_rejected("ckvni", &cfg.to_toml(), "vni");
}

#[test]
fn check_rejects_peer_with_own_public_ip() {
    let mut cfg = NodeCfg::host(1, &[2]);
    cfg.peers[0].public_ip = cfg.public_ip.clone();
    assert_rejected("ckself", &cfg.to_toml(), "public_ip");
}

#[test]
fn check_rejects_overlapping_peer_subnets() {
    let mut cfg = NodeCfg::host(1, &[2, 3]);
    cfg.peers[1].subnet = "10.244.2.128/25".into();
    assert_rejected("ckovl", &cfg.to_toml(), "subnet");
}

#[test]
fn check_rejects_unknown_key() {
    let toml = NodeCfg::host(1, &[2])
        .to_toml()
        .replace("[vxlan]\n", "[vxlan]\nfrobnicate_level = 3\n");
    assert_rejected("ckunk", &toml, "frobnicate_level");
}

#[test]
fn check_rejects_all_zero_vtep_mac() {
    let mut cfg = NodeCfg::host(1, &[2]);
    cfg.peers[0].vtep_mac = "00:00:00:00:00:00".into();
    assert_rejected("ckmac", &cfg.to_toml(), "config key peer[0].vtep_mac: 00:00:00:00:00:00 is the all-zero address");
}

#[test]
fn check_rejects_multicast_node_subnet() {
    let mut cfg = NodeCfg::host(1, &[2]);
    cfg.subnet = "224.1.0.0/24".into();
    assert_rejected("ckmc", &cfg.to_toml(), "config key node.subnet: 224.1.0.0/24 overlaps 224.0.0.0/4 (multicast)");
}

/// A peer subnet holding the node's own underlay address would route the VXLAN packets into vtep0.
#[test]
fn check_rejects_encapsulation_loop() {
    let mut cfg = NodeCfg::host(1, &[2]);
    cfg.peers[0].subnet = "192.0.2.0/24".into();
    assert_rejected("ckloop", &cfg.to_toml(), "config key peer[0].subnet: 192.0.2.0/24 contains node.public_ip 192.0.2.1");
}

/// Runs `vtepd ARGS`; returns (exit code, stderr).
fn vtepd(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(vtepd_bin()).args(args).output().expect("run vtepd");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_names_a_missing_file_and_its_cause_once() {
    let (code, stderr) = vtepd(&["check", "--config", "/nonexistent/vtepd.toml"]);
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("/nonexistent/vtepd.toml"), "{stderr}");
    let cause = std::io::Error::from_raw_os_error(libc::ENOENT).to_string();
    assert_eq!(stderr.matches(&cause).count(), 1, "the cause `{cause}` should be printed once:\n{stderr}");
}

#[test]
fn a_bogus_log_level_is_a_usage_error() {
    let (code, stderr) = vtepd(&["--log-level", "bogus", "check", "--config", "/nonexistent/vtepd.toml"]);
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("--log-level") && stderr.contains("'bogus' is not a level"), "{stderr}");
}

/// Log lines go to journald or a file when stderr is no terminal: no colour escapes there.
#[test]
fn logs_to_a_pipe_are_plain_text() {
    let hosts = TwoHosts::new("2hlog");
    let dir = TempDir::new("2hlog");
    let cfg = NodeCfg::host(1, &[2]);
    let path = dir.write("a.toml", &cfg.to_toml());
    let a = Vtepd::start(&hosts.a, &path, &cfg);
    let log = a.wait_for_log("forwarding", 0);
    assert!(!log.contains("\x1b["), "colour escapes in a log written to a pipe:\n{log:?}");
    a.stop();
}

/// `--busy-poll` changes only how workers wait: traffic both ways must be exactly as without it
/// (and the spinning workers must not starve the transfer into a timeout).
#[test]
fn busy_poll_forwards_both_ways() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("2hbp");
    let dir = TempDir::new("2hbp");
    let (vtepd_a, vtepd_b) = start_pair(&hosts, &dir, &["--busy-poll", "2000"]);
    hosts.ping_both_ways();
    hosts.tcp_both_ways(BIG_TRANSFER);
    assert_clean_traffic("A", &vtepd_a.stop());
    assert_clean_traffic("B", &vtepd_b.stop());
}

/// RFC 7348 §5: the outer UDP source port carries a hash of the inner flow, so it must be one port
/// per flow whichever worker sends it. The kernel moves a flow to the TAP queue its replies were
/// written on (its first packets may leave from another): with send sockets of each worker's own,
/// that changed the flow's port mid-stream, the peer's SO_REUSEPORT handed the rest to another of
/// its workers, and the flow arrived reordered (thousands of spurious fast retransmits a second in
/// the bench).
#[test]
fn a_flow_keeps_its_outer_source_port_whichever_worker_sends_it() {
    let hosts = TwoHosts::new("2hsp");
    let dir = TempDir::new("2hsp");
    let (vtepd_a, vtepd_b) = start_pair(&hosts, &dir, &["--workers", "2"]);
    hosts.ping_both_ways();
    let cap = Capture::start(&hosts.a, UNDERLAY_DEV, &dir, "ul.pcap", "src host 192.0.2.1 and udp dst port 8472");
    const FLOWS: u16 = 8;
    for port in 5301..5301 + FLOWS {
        tcp_transfer(&hosts.a, Some(IP_A), &hosts.b, IP_B, port, 1 << 20);
    }
    let lines = tshark_fields_as(&cap.finish(), &["udp.port==8472,vxlan"], &["udp.srcport", "tcp.srcport", "tcp.dstport"]);
    stop_pair(vtepd_a, vtepd_b);
    let mut ports: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for l in &lines {
        let f: Vec<&str> = l.split('\t').collect();
        if let [outer, sport, dport] = f[..] {
            if !sport.is_empty() {
                ports.entry(format!("{sport}->{dport}")).or_default().insert(outer.to_string());
            }
        }
    }
    assert_eq!(ports.len(), FLOWS as usize, "inner TCP flows seen on the underlay: {ports:?}");
    let moved: Vec<_> = ports.iter().filter(|(_, p)| p.len() != 1).collect();
    assert!(moved.is_empty(), "flows sent from more than one outer source port: {moved:?}");
}

/// RFC 6040 at the tunnel's egress, as the kernel's VXLAN device does it: a congestion mark a
/// router put on the outer header reaches the inner packet (seen on A's TAP), ECT(1) outside turns
/// an inner ECT(0) into ECT(1), an unmarked outer header changes nothing, and a mark over a packet
/// that is not ECN-capable is dropped and counted. B sends VXLAN by hand, the outer ECN bits set
/// with IP_TOS as a marking router would leave them.
#[test]
fn congestion_marks_on_the_outer_header_reach_the_inner_packet() {
    const N: u64 = 25;
    let hosts = TwoHosts::new("vecn");
    let dir = TempDir::new("vecn");
    let (cfg_a, _) = pair_cfgs();
    let vtepd = Vtepd::start(&hosts.a, &dir.write("a.toml", &cfg_a.to_toml()), &cfg_a);
    let cap = Capture::start(&hosts.a, "vtep0", &dir, "ecn.pcap", "udp dst port 7777");
    let vni = cfg_a.vni;
    let datagrams: Vec<(u8, Vec<u8>)> = ecn::EGRESS_CASES
        .iter()
        .enumerate()
        .map(|(i, (inner_ecn, outer_ecn, _))| {
            let b = etherparse::PacketBuilder::ethernet2(parse_mac(&host_mac(2)), parse_mac(&host_mac(1)))
                .ipv4([10, 244, 2, 0], [10, 244, 1, 0], 64)
                .udp(ecn::FIRST_PORT + i as u16, 7777);
            let mut f = Vec::new();
            b.write(&mut f, b"ecn").unwrap();
            f[15] = 0x28 | inner_ecn;
            let mut ip = etherparse::Ipv4Header::from_slice(&f[14..]).unwrap().0;
            ip.header_checksum = ip.calc_header_checksum();
            f[24..26].copy_from_slice(&ip.header_checksum.to_be_bytes());
            (*outer_ecn, [&vxlan_header(0x08, [0; 3], vni, 0)[..], &f].concat())
        })
        .collect();
    in_netns(hosts.b.name(), move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.bind(&"192.0.2.2:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        let to = "192.0.2.1:8472".parse::<std::net::SocketAddr>().unwrap().into();
        for _ in 0..N {
            for (outer_ecn, d) in &datagrams {
                s.set_tos(u32::from(*outer_ecn)).unwrap();
                s.send_to(d, &to).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
    });
    wait_until("the ECN-capable packets delivered", || ecn::delivered(&vtepd) >= 4 * N);
    cap.wait_for_packets(4 * N as usize);
    let lines = tshark_fields(&cap.finish(), &["udp.srcport", "ip.dsfield.ecn"]);
    let counters = vtepd.stop();
    ecn::assert_egress(&lines, N);
    assert_eq!(counters["drop_rx_ecn_not_ect"], N, "{}", show_counters(&counters));
}

/// At ingress the outer header carries the inner packet's ECN bits (RFC 6040's normal mode, as the
/// kernel's VXLAN device does), so a router on the underlay can mark congestion instead of
/// dropping: on the plain send path (UDP with ECT(1) here) and on the segmented one (an
/// ECN-negotiated TCP transfer, whose data segments carry ECT(0)).
#[test]
fn the_outer_header_carries_the_inner_ecn_bits() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("vecni");
    let dir = TempDir::new("vecni");
    for ns in [&hosts.a, &hosts.b] {
        ns.sysctl("net.ipv4.tcp_ecn=1");
    }
    let (a, b) = start_pair(&hosts, &dir, &[]);
    let cap = Capture::start(&hosts.a, UNDERLAY_DEV, &dir, "ul.pcap", "src host 192.0.2.1 and udp dst port 8472");
    in_netns(hosts.a.name(), || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.bind(&std::net::SocketAddr::from((IP_A, 0)).into()).unwrap();
        s.set_tos(1).unwrap();
        for _ in 0..10 {
            s.send_to(b"ecn", &std::net::SocketAddr::from((IP_B, 7777)).into()).unwrap();
        }
    });
    tcp_transfer(&hosts.a, Some(IP_A), &hosts.b, IP_B, 5003, 4 << 20);
    let lines = tshark_fields_as(&cap.finish(), &["udp.port==8472,vxlan"], &["ip.dsfield.ecn", "ip.proto"]);
    stop_pair(a, b);
    // Outer and inner header, joined: "1,1\t17,17" is an ECT(1) UDP datagram in a VXLAN one.
    let count = |want: &str| lines.iter().filter(|l| l.as_str() == want).count();
    let differing: Vec<&String> = lines.iter().filter(|l| l.split('\t').next().and_then(|e| e.split_once(',')).is_none_or(|(o, i)| o != i)).collect();
    assert!(differing.is_empty(), "outer ECN differs from the inner one: {differing:?}");
    assert_eq!(count("1,1\t17,17"), 10, "the ECT(1) datagrams: {lines:?}");
    assert!(count("2,2\t17,6") > 100, "too few ECT(0) TCP segments: {} of {}", count("2,2\t17,6"), lines.len());
}
