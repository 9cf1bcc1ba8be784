//! Bulk transfers with every offload on (TAP TSO/checksum, UDP GSO, UDP GRO + TCP coalescing), in
//! both directions at once, SHA-256 checked at each end:
//! - vtepd ↔ vtepd, 1 GiB each way (2 GiB through each daemon);
//! - vtepd ↔ the kernel's VXLAN device set up as Flannel sets up flannel.1, 200 MiB each way, where
//!   the kernel must accept every frame vtepd writes to its TAP and every datagram it sends; once as
//!   the veth underlay comes (the kernel's GSO packets cross it whole) and once with the underlay
//!   segmenting them as a real NIC would (vtepd then coalesces the kernel's segments);
//! - the kernel peer → vtepd → a pod behind a bridge, where whole TSO super-frames arrive in single
//!   datagrams and must reach the TAP as GSO frames to be forwarded on.
//!
//! Simultaneous directions matter: each worker then interleaves segmenting super-frames from the TAP
//! with coalescing received segments into TAP writes, sharing one batch loop, which one-way
//! transfers never exercise.
//!
//! Beyond the checksums of the data, "accepted" is checked where a rejection would be recorded: vtepd's
//! own drop counters for TAP writes, segmentation and sends; the TAP device's receive errors (the
//! kernel refusing a virtio-net header); and the TCP/UDP checksum-error counters of both hosts' stacks
//! (a frame with a wrong checksum, which the transfer alone would survive by retransmitting).

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use common::offload::*;
use common::*;

const VXLAN_OFFLOADS: &[&str] = &["tap_tso=true", "udp_gso=true", "udp_gro=true"];

/// Each direction of the vtepd ↔ vtepd test.
const BULK_EACH_WAY: usize = 1024 * 1024 * 1024;
/// Each direction of the kernel-peer test.
const KERNEL_EACH_WAY: usize = 200 * 1024 * 1024;

#[test]
fn bulk_both_ways_vtepd_to_vtepd() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("ob");
    let dir = TempDir::new("ob");
    let (vtepd_a, vtepd_b) = start_pair(&hosts, &dir, &[]);
    assert_offloads_on("A", &vtepd_a, VXLAN_OFFLOADS);
    assert_offloads_on("B", &vtepd_b, VXLAN_OFFLOADS);
    ping(&hosts.a, "10.244.1.0", "10.244.2.0");

    let (snmp_a, snmp_b) = (snmp(&hosts.a), snmp(&hosts.b));
    transfer_both_ways(&hosts.a, &hosts.b, BULK_EACH_WAY);
    assert_no_csum_errors("A", &hosts.a, &snmp_a);
    assert_no_csum_errors("B", &hosts.b, &snmp_b);
    // Read while the TAPs still exist: they go away when vtepd stops.
    let (tap_a, tap_b) = (link_stats(&hosts.a, "vtep0"), link_stats(&hosts.b, "vtep0"));

    let (counters_a, counters_b) = stop_pair(vtepd_a, vtepd_b);
    for (host, c, tap) in [("A", &counters_a, &tap_a), ("B", &counters_b, &tap_b)] {
        assert_clean_traffic(host, c);
        assert_no_offload_drops(host, c);
        assert_moved(host, c, BULK_EACH_WAY);
        assert_no_rx_errors(host, "vtep0", tap);
        assert_offloads_used(host, c, tap, true);
    }
    let (cfg_a, cfg_b) = pair_cfgs();
    assert_cleaned_up(&hosts.a, &cfg_a);
    assert_cleaned_up(&hosts.b, &cfg_b);
}

/// vtepd on A against the kernel's flannel.1 on B. With `wire_sized`, B's underlay segments VXLAN
/// packets itself, as a real NIC does, so vtepd receives MTU-sized datagrams to coalesce; without it
/// the kernel's GSO packets cross the veth whole (see `kernel_peer_to_pod_through_vtepd`).
fn against_kernel(tag: &str, wire_sized: bool) {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new(tag);
    if wire_sized {
        hosts.b.exec_ok(
            "ethtool",
            &[
                "-K",
                UNDERLAY_DEV,
                "tx-udp_tnl-segmentation",
                "off",
                "tx-udp_tnl-csum-segmentation",
                "off",
            ],
        );
    }
    flannel_kernel_vtep(&hosts.b);
    let dir = TempDir::new(tag);
    let cfg_a = NodeCfg::host(1, &[2]);
    let vtepd_a = Vtepd::start(&hosts.a, &dir.write("a.toml", &cfg_a.to_toml()), &cfg_a);
    assert_offloads_on("A", &vtepd_a, VXLAN_OFFLOADS);
    ping(&hosts.a, "10.244.1.0", "10.244.2.0");

    let (snmp_a, snmp_b) = (snmp(&hosts.a), snmp(&hosts.b));
    transfer_both_ways(&hosts.a, &hosts.b, KERNEL_EACH_WAY);
    assert_no_csum_errors("A", &hosts.a, &snmp_a);
    // B's stack sees vtepd's segments after the kernel decapsulates them: a wrong inner checksum
    // from the software TSO, or a wrong outer UDP checksum from UDP GSO, is counted here.
    assert_no_csum_errors("B", &hosts.b, &snmp_b);
    let tap_a = link_stats(&hosts.a, "vtep0");
    let flannel_b = link_stats(&hosts.b, "flannel.1");

    let counters = vtepd_a.stop();
    eprintln!("A counters:\n{}", show_counters(&counters));
    assert_clean_traffic("A", &counters);
    assert_no_offload_drops("A", &counters);
    assert_moved("A", &counters, KERNEL_EACH_WAY);
    assert_no_rx_errors("A", "vtep0", &tap_a);
    assert_no_rx_errors("B", "flannel.1", &flannel_b);
    assert_offloads_used("A", &counters, &tap_a, wire_sized);
    assert_cleaned_up(&hosts.a, &cfg_a);
}

#[test]
fn bulk_both_ways_against_kernel_vxlan() {
    against_kernel("ok", false);
}

#[test]
fn bulk_both_ways_against_kernel_vxlan_wire_sized() {
    against_kernel("ow", true);
}

/// A pod behind host A's cni0 bridge, as tests/pod_path.rs builds it: 10.244.1.2/24, MTU 1450.
fn add_pod(host: &Netns, tag: &str) -> Netns {
    let pod = Netns::new(tag);
    host.ip(&["link", "add", "cni0", "type", "bridge"]);
    host.addr("cni0", "10.244.1.1/24");
    veth(host, "veth0", &pod, "eth0");
    host.ip(&["link", "set", "veth0", "mtu", "1450", "master", "cni0"]);
    pod.ip(&["link", "set", "eth0", "mtu", "1450"]);
    pod.addr("eth0", "10.244.1.2/24");
    pod.ip(&["route", "add", "default", "via", "10.244.1.1"]);
    host.sysctl("net.ipv4.ip_forward=1");
    pod
}

/// Kernel flannel.1 on B → vtepd on A → a pod behind A's cni0 (MTU 1450).
///
/// Over a veth underlay the kernel peer's VXLAN GSO packets cross unsegmented, so vtepd's socket
/// receives single UDP datagrams of up to 64 KB holding one inner TCP super-frame (no UDP_GRO cmsg:
/// the skb is a UDP-tunnel GSO skb, not UDP_L4). Written as one plain frame larger than the MTU, it
/// was delivered locally but could not be forwarded to the pod ("fragmentation needed", the flow
/// crawled at 361 kbit/s). vtepd now writes it as GSO with an MTU-sized gso_size; Ip.FragFails on A
/// must not move.
#[test]
fn kernel_peer_to_pod_through_vtepd() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("okp");
    flannel_kernel_vtep(&hosts.b);
    let pod = add_pod(&hosts.a, "okpod");
    let dir = TempDir::new("okp");
    let cfg_a = NodeCfg::host(1, &[2]);
    let vtepd_a = Vtepd::start(&hosts.a, &dir.write("a.toml", &cfg_a.to_toml()), &cfg_a);
    ping(&hosts.b, "10.244.2.0", "10.244.1.2");

    let before = snmp(&hosts.a);
    let ip_b = Ipv4Addr::new(10, 244, 2, 0);
    let ip_pod = Ipv4Addr::new(10, 244, 1, 2);
    // A small transfer first: with the bug it still completes (slowly), and the counter below then
    // names the cause instead of leaving a 50 MB transfer to crawl.
    tcp_transfer(&hosts.b, Some(ip_b), &pod, ip_pod, 5003, 1024 * 1024);
    let frag_fails = |m: &HashMap<String, u64>| m.get("Ip.FragFails").copied();
    assert_eq!(
        frag_fails(&snmp(&hosts.a)),
        frag_fails(&before),
        "A could not forward frames vtepd wrote to its TAP on to the pod's 1450-byte link"
    );
    tcp_transfer(&hosts.b, Some(ip_b), &pod, ip_pod, 5004, BIG_TRANSFER);
    tcp_transfer(&pod, None, &hosts.b, ip_b, 5005, BIG_TRANSFER);

    let counters = vtepd_a.stop();
    assert_clean_traffic("A", &counters);
    assert_no_offload_drops("A", &counters);
}

/// An underlay narrower than the tunnel MTU needs (vxlan.mtu = 1450 on a 1400-byte link: a
/// misconfiguration vtepd warns about, or an etcd Backend.MTU too big for one node). Plain datagrams
/// leave as IP fragments, but the kernel refuses a UDP GSO send whose segments exceed the path MTU
/// (EMSGSIZE), which vtepd counted as a send error: every TSO super-frame was dropped and bulk TCP
/// lived on retransmitted single segments. Such a frame now goes out as plain datagrams.
#[test]
fn bulk_tcp_over_an_underlay_narrower_than_the_tunnel_mtu() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("onu");
    for h in [&hosts.a, &hosts.b] {
        h.ip(&["link", "set", UNDERLAY_DEV, "mtu", "1400"]);
    }
    let dir = TempDir::new("onu");
    let (vtepd_a, vtepd_b) = start_pair(&hosts, &dir, &[]);
    assert_offloads_on("A", &vtepd_a, VXLAN_OFFLOADS);
    hosts.ping_both_ways();

    hosts.tcp_both_ways(BIG_TRANSFER);

    let (counters_a, counters_b) = stop_pair(vtepd_a, vtepd_b);
    for (host, c) in [("A", &counters_a), ("B", &counters_b)] {
        assert_clean_traffic(host, c);
        assert_no_offload_drops(host, c);
    }
}
