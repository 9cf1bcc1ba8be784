//! Two hosts running vtepd's IPIP backend (Calico's IPIP mode) over one underlay veth: overlay ping
//! both ways, a capture on the underlay that tshark decodes as IP protocol 4 with the inner ICMP
//! inside, 50 MB TCP each way with matching SHA-256, ICMP "fragmentation needed" for an inner packet
//! over the tunnel MTU with DF and fragmentation without it, and clean removal at exit; then, with
//! offloads on (TUN TSO/checksum, userspace segmentation, receive coalescing into GSO TUN writes),
//! 256 MiB each way at once with matching SHA-256 and proof that both offload paths ran; and UDP
//! segmentation offload (USO) on the TUN: UDP_SEGMENT sends both ways, every datagram intact.
//!
//! There is no ipip kernel module on the test machine, so vtepd is the only IPIP implementation in
//! play; tshark's dissector is the independent check that what goes on the wire is RFC 2003.

mod common;


use common::offload::*;
use common::*;

const DEV: &str = "ipip0";
/// Each direction of the offload test: over 200 MB, so TCP's window is long open and nearly every
/// TUN read is a 64 KB super-packet.
const OFFLOAD_EACH_WAY: usize = 256 * 1024 * 1024;

fn config(me: u8, peer: u8) -> String {
    routed_toml(
        "ipip",
        &host_underlay_ip(me),
        &host_subnet(me),
        "[ipip]\nttl = 64\n",
        &[(&host_underlay_ip(peer), &host_subnet(peer))],
    )
}

fn start(ns: &Netns, dir: &TempDir, me: u8, peer: u8) -> Vtepd {
    let path = dir.write(&format!("{me}.toml"), &config(me, peer));
    let route = host_subnet(peer);
    Vtepd::start_until(ns, &path, &format!("{DEV} and route {route}"), || {
        ns.has_link(DEV) && ns.has_route(&route)
    })
}

/// Two hosts with vtepd IPIP on each, A = 1 and B = 2, namespaces tagged `tag`.
fn two_hosts(tag: &str) -> (TwoHosts, TempDir, Vtepd, Vtepd) {
    let hosts = TwoHosts::new(tag);
    let dir = TempDir::new(tag);
    let vtepd_a = start(&hosts.a, &dir, 1, 2);
    let vtepd_b = start(&hosts.b, &dir, 2, 1);
    (hosts, dir, vtepd_a, vtepd_b)
}

#[test]
fn ipip_two_hosts_ping_capture_tcp() {
    let _heavy = heavy_lock();
    let (hosts, dir, vtepd_a, vtepd_b) = two_hosts("ip2");

    // The device looks like Calico's tunl0: the block's network address as a /32, MTU underlay - 20.
    let addr_a = hosts.a.ip(&["addr", "show", "dev", DEV]);
    assert!(addr_a.contains("10.244.1.0/32"), "{DEV} in A lacks 10.244.1.0/32:\n{addr_a}");
    assert!(addr_a.contains("mtu 1480"), "{DEV} in A does not have mtu 1480:\n{addr_a}");

    let cap = Capture::start(&hosts.a, UNDERLAY_DEV, &dir, "ul0.pcap", "ip proto 4");
    hosts.ping_both_ways();
    let pcap = cap.finish();
    let lines = tshark_fields(&pcap, &["ip.proto", "ip.src", "ip.dst", "ip.ttl", "ip.flags.df", "icmp.type"]);
    // Each IPIP packet has two IP layers; tshark lists both occurrences, outer first. DF follows
    // the inner header (RFC 2003 §3.1): Linux sets it on echo requests and not on echo replies.
    let request = "4,1\t192.0.2.1,10.244.1.0\t192.0.2.2,10.244.2.0\t64,64\t1,1\t8";
    let reply = "4,1\t192.0.2.2,10.244.2.0\t192.0.2.1,10.244.1.0\t64,64\t0,0\t0";
    let count = |want: &str| lines.iter().filter(|l| l.as_str() == want).count();
    assert!(
        count(request) >= 4 && count(reply) >= 4,
        "capture lacks decodable IPIP echo requests/replies (want >= 4 of each):\n{}",
        lines.join("\n")
    );
    assert!(lines.iter().all(|l| l.starts_with("4,")), "non-IPIP or undecodable packets:\n{}", lines.join("\n"));
    // The receive path timed the peer: `vtepd peers` says up, heard just now, and shows no MAC.
    let p = ctl_json(&vtepd_a, "peers");
    let peer = &p["peers"][0];
    assert_eq!((&peer["mode"], &peer["reachable"], &peer["vtep_mac"]), (&"ipip".into(), &true.into(), &serde_json::Value::Null), "{p}");
    assert!(peer["last_heard_secs"].as_u64().is_some_and(|s| s < 60), "{p}");

    hosts.tcp_both_ways(BIG_TRANSFER);

    // An inner packet over the tunnel MTU with DF: raise the device MTU behind vtepd's back so the
    // kernel hands it a 2028-byte packet; vtepd answers like a router with ICMP type 3 code 4.
    hosts.a.ip(&["link", "set", DEV, "mtu", "9000"]);
    let out = hosts.a.exec("ping", &["-c", "1", "-W", "2", "-M", "do", "-s", "2000", "-I", "10.244.1.0", "10.244.2.0"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("Frag needed and DF set (mtu = 1480)"),
        "no ICMP fragmentation-needed with mtu 1480 for an oversized DF ping:\n{text}"
    );
    // Without DF the same packet is fragmented, as a router would, and reassembled by B.
    let out = hosts.a.exec("ping", &["-c", "2", "-W", "2", "-M", "dont", "-s", "3000", "-I", "10.244.1.0", "10.244.2.0"]);
    assert!(
        out.status.success(),
        "oversized ping without DF did not get through:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    hosts.a.ip(&["link", "set", DEV, "mtu", "1480"]);

    let counters_a = vtepd_a.stop();
    let counters_b = vtepd_b.stop();
    eprintln!("A counters:\n{}\nB counters:\n{}", show_counters(&counters_a), show_counters(&counters_b));
    for (host, c) in [("A", &counters_a), ("B", &counters_b)] {
        for k in ["rx_bytes", "tx_bytes"] {
            assert!(c[k] >= BIG_TRANSFER as u64, "{host}: {k} = {} < {BIG_TRANSFER}", c[k]);
        }
        for k in IPIP_RX_DROPS {
            assert_eq!(c[*k], 0, "{host}: {k} with only well-formed peer traffic\n{}", show_counters(c));
        }
    }
    assert!(counters_a["drop_tx_frag_needed"] >= 1, "A sent no ICMP:\n{}", show_counters(&counters_a));

    for (ns, peer_route) in [(&hosts.a, "10.244.2.0/24"), (&hosts.b, "10.244.1.0/24")] {
        assert!(!ns.has_link(DEV), "{DEV} left in {} after exit", ns.name());
        assert!(!ns.has_route(peer_route), "route {peer_route} left in {}", ns.name());
    }
}

#[test]
fn ipip_device_deleted_under_vtepd_is_recreated() {
    let (hosts, _dir, vtepd_a, vtepd_b) = two_hosts("iprc");
    ping(&hosts.a, "10.244.1.0", "10.244.2.0");

    hosts.a.ip(&["link", "del", DEV]);
    wait_until("ipip0 and its route recreated in A", || hosts.a.has_link(DEV) && hosts.a.has_route("10.244.2.0/24"));
    hosts.ping_both_ways();

    let counters = vtepd_a.stop();
    vtepd_b.stop();
    assert!(counters["rx_packets"] >= 4, "no traffic after recreation:\n{}", show_counters(&counters));
    assert!(!hosts.a.has_link(DEV), "{DEV} left in A after exit");
}

#[test]
fn ipip_offloads_bulk_both_ways() {
    let _heavy = heavy_lock();
    let (hosts, _dir, vtepd_a, vtepd_b) = two_hosts("ipo");
    assert_offloads_on("A", &vtepd_a, &["tun_tso=true", "tun_gro=true"]);
    assert_offloads_on("B", &vtepd_b, &["tun_tso=true", "tun_gro=true"]);
    ping(&hosts.a, "10.244.1.0", "10.244.2.0");

    let (snmp_a, snmp_b) = (snmp(&hosts.a), snmp(&hosts.b));
    transfer_both_ways(&hosts.a, &hosts.b, OFFLOAD_EACH_WAY);
    assert_no_csum_errors("A", &hosts.a, &snmp_a);
    assert_no_csum_errors("B", &hosts.b, &snmp_b);
    // Read while the TUNs still exist: they go away when vtepd stops.
    let (tun_a, tun_b) = (link_stats(&hosts.a, DEV), link_stats(&hosts.b, DEV));

    let counters_a = vtepd_a.stop();
    let counters_b = vtepd_b.stop();
    eprintln!("A counters:\n{}\nB counters:\n{}", show_counters(&counters_a), show_counters(&counters_b));
    for (host, c, tun) in [("A", &counters_a, &tun_a), ("B", &counters_b, &tun_b)] {
        for k in IPIP_RX_DROPS {
            assert_eq!(c[*k], 0, "{host}: {k} with only well-formed peer traffic\n{}", show_counters(c));
        }
        assert_no_offload_drops(host, c);
        assert_moved(host, c, OFFLOAD_EACH_WAY);
        assert_no_rx_errors(host, DEV, tun);
        assert_offloads_used(host, c, tun, true);
    }
}

#[test]
fn ipip_uso_both_ways() {
    let _heavy = heavy_lock();
    let (hosts, _dir, vtepd_a, vtepd_b) = two_hosts("ipu");
    assert_offloads_on("A", &vtepd_a, &["tun_uso=true"]);
    assert_offloads_on("B", &vtepd_b, &["tun_uso=true"]);
    ping(&hosts.a, "10.244.1.0", "10.244.2.0");

    let (snmp_a, snmp_b) = (snmp(&hosts.a), snmp(&hosts.b));
    udp_gso_both_ways(&hosts.a, &hosts.b, 6011, USO_FLOW);
    assert_no_csum_errors("A", &hosts.a, &snmp_a);
    assert_no_csum_errors("B", &hosts.b, &snmp_b);
    let (tun_a, tun_b) = (link_stats(&hosts.a, DEV), link_stats(&hosts.b, DEV));
    for (host, d, tun) in [("A", vtepd_a, tun_a), ("B", vtepd_b, tun_b)] {
        let c = d.stop();
        assert_no_offload_drops(host, &c);
        assert_uso_used(host, &c, &tun, USO_FLOW, true);
    }
}

/// Raw sockets would each get a copy of every packet; instead each worker's receive socket keeps
/// its share of the inner flows (a BPF hash, `io::steer`). 16 UDP flows from A (distinct source
/// ports) into B running 3 workers: every datagram arrives once, and every worker of B delivers
/// at least one flow's worth.
#[test]
fn ipip_receive_spreads_flows_over_workers() {
    const FLOWS: u16 = 16;
    const EACH: usize = 50;
    let hosts = TwoHosts::new("ipsp");
    let dir = TempDir::new("ipsp");
    let vtepd_a = start(&hosts.a, &dir, 1, 2);
    let path = dir.write("2.toml", &config(2, 1));
    let vtepd_b = Vtepd::start_until_with(&hosts.b, &path, &["--workers", "3"], "ipip0 and its route in B", || {
        hosts.b.has_link(DEV) && hosts.b.has_route("10.244.1.0/24")
    });
    ping(&hosts.a, "10.244.1.0", "10.244.2.0");

    let rx = spawn_in_netns(hosts.b.name(), || {
        let sock = std::net::UdpSocket::bind("10.244.2.0:7100").expect("bind receiver");
        // Room for every datagram even if this thread is starved for a while on a busy machine.
        force_rcvbuf(&sock, 8 << 20);
        sock.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut per_port = std::collections::HashMap::<u16, usize>::new();
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = sock.recv_from(&mut buf) {
            *per_port.entry(from.port()).or_default() += 1;
        }
        per_port
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    in_netns(hosts.a.name(), || {
        let socks: Vec<_> = (0..FLOWS).map(|k| std::net::UdpSocket::bind(("10.244.1.0", 7000 + k)).expect("bind sender")).collect();
        for _ in 0..EACH {
            for s in &socks {
                s.send_to(&[0x5a; 200], "10.244.2.0:7100").expect("send");
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    let per_port = rx.join().expect("receiver");
    let stats = ctl_json(&vtepd_b, "stats");
    vtepd_a.stop();
    let counters_b = vtepd_b.stop();
    for k in 0..FLOWS {
        assert_eq!(per_port.get(&(7000 + k)), Some(&EACH), "flow from port {}: {per_port:?}", 7000 + k);
    }
    for k in IPIP_RX_DROPS {
        assert_eq!(counters_b[*k], 0, "B: {k}\n{}", show_counters(&counters_b));
    }
    eprintln!("B stats: {stats}");
    let workers = stats["workers"].as_array().expect("per-worker stats");
    assert_eq!(workers.len(), 3, "{stats}");
    for (i, w) in workers.iter().enumerate() {
        let rx = w["rx_packets"].as_u64().unwrap_or(0);
        assert!(rx >= EACH as u64, "B worker {i} delivered {rx} packets: flows not spread over workers\n{stats}");
    }
}
