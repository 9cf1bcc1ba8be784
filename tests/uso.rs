//! UDP segmentation offload (USO) on the TAP: an application's UDP_SEGMENT sends reach vtepd as one
//! super-frame per sendmsg, and vtepd cuts them into datagrams. What must hold is what the
//! application asked for — every datagram arrives once, with its own length and bytes, behind a
//! correct UDP checksum — and that the super-frames really came (fewer device reads than datagrams
//! sent), so the test cannot pass on a kernel that segmented before the TAP. Received datagrams of
//! one flow go up to the TAP coalesced into USO writes (fewer writes than datagrams).
//! - vtepd ↔ vtepd, both directions at once;
//! - vtepd ↔ the kernel's VXLAN device, one way then the other. The kernel's stack counts any bad
//!   checksum vtepd sends; the kernel sends a UDP_SEGMENT super-packet whole inside one VXLAN
//!   datagram across the veth underlay, which vtepd must hand to its TAP as USO so the application
//!   gets datagrams back rather than one of 48 KB;
//! - the kernel's VXLAN device → vtepd started with `--no-uso`, as on a kernel before 6.2 whose TAP
//!   has no USO (and refuses a USO write): vtepd must cut that whole super-packet into the
//!   application's datagrams itself, one TAP write each.

mod common;


use common::offload::*;
use common::*;

const USO_ON: &[&str] = &["tap_tso=true", "tap_uso=true", "udp_gso=true"];
const FLOW: UsoFlow = USO_FLOW;
/// UDP_SEGMENT sends that fit the MTU whole (400 + 400 + 200 bytes): the kernel peer sends each in
/// one VXLAN datagram, which must still reach the application as three datagrams.
const SMALL_FLOW: UsoFlow = UsoFlow { sends: 50, segs: 3, size: 400 };

#[test]
fn uso_both_ways_vtepd_to_vtepd() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("us");
    let dir = TempDir::new("us");
    let (vtepd_a, vtepd_b) = start_pair(&hosts, &dir, &[]);
    assert_offloads_on("A", &vtepd_a, USO_ON);
    assert_offloads_on("B", &vtepd_b, USO_ON);
    ping(&hosts.a, "10.244.1.0", "10.244.2.0");

    let (snmp_a, snmp_b) = (snmp(&hosts.a), snmp(&hosts.b));
    udp_gso_both_ways(&hosts.a, &hosts.b, 6001, FLOW);
    assert_no_csum_errors("A", &hosts.a, &snmp_a);
    assert_no_csum_errors("B", &hosts.b, &snmp_b);
    let (tap_a, tap_b) = (link_stats(&hosts.a, "vtep0"), link_stats(&hosts.b, "vtep0"));
    for (host, d, tap) in [("A", vtepd_a, tap_a), ("B", vtepd_b, tap_b)] {
        let c = d.stop();
        eprintln!("{host} counters:\n{}", show_counters(&c));
        assert_clean_traffic(host, &c);
        assert_no_offload_drops(host, &c);
        assert_uso_used(host, &c, &tap, FLOW, true);
    }
}

#[test]
fn uso_each_way_with_kernel_vxlan() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("uk");
    flannel_kernel_vtep(&hosts.b);
    let dir = TempDir::new("uk");
    let cfg_a = NodeCfg::host(1, &[2]);
    let vtepd_a = Vtepd::start(&hosts.a, &dir.write("a.toml", &cfg_a.to_toml()), &cfg_a);
    assert_offloads_on("A", &vtepd_a, USO_ON);
    ping(&hosts.a, "10.244.1.0", "10.244.2.0");

    let snmp_b = snmp(&hosts.b);
    udp_gso_transfer(&hosts.b, IP_B, &hosts.a, IP_A, 6004, FLOW);
    udp_gso_transfer(&hosts.b, IP_B, &hosts.a, IP_A, 6007, SMALL_FLOW);
    udp_gso_transfer(&hosts.a, IP_A, &hosts.b, IP_B, 6003, FLOW);
    // The kernel decapsulates and checks each datagram's UDP checksum: a wrong one is counted here
    // (and the datagram lost, which the transfer also reports).
    assert_no_csum_errors("B", &hosts.b, &snmp_b);
    let tap_a = link_stats(&hosts.a, "vtep0");
    let flannel_b = link_stats(&hosts.b, "flannel.1");
    let c = vtepd_a.stop();
    eprintln!("A counters:\n{}", show_counters(&c));
    assert_clean_traffic("A", &c);
    assert_no_offload_drops("A", &c);
    assert_no_rx_errors("B", "flannel.1", &flannel_b);
    assert_uso_used("A", &c, &tap_a, FLOW, false);
}

#[test]
fn kernel_vxlan_to_vtepd_without_uso() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("un");
    flannel_kernel_vtep(&hosts.b);
    let dir = TempDir::new("un");
    let cfg_a = NodeCfg::host(1, &[2]);
    let vtepd_a = Vtepd::start_with(&hosts.a, &dir.write("a.toml", &cfg_a.to_toml()), &cfg_a, &["--no-uso"]);
    assert_offloads_on("A", &vtepd_a, &["tap_tso=true", "tap_uso=false", "udp_gro=true"]);
    ping(&hosts.a, "10.244.1.0", "10.244.2.0");

    let snmp_a = snmp(&hosts.a);
    udp_gso_transfer(&hosts.b, IP_B, &hosts.a, IP_A, 6005, FLOW);
    udp_gso_transfer(&hosts.b, IP_B, &hosts.a, IP_A, 6008, SMALL_FLOW);
    // vtepd leaves the checksums of the datagrams it cuts for A's stack to verify.
    assert_no_csum_errors("A", &hosts.a, &snmp_a);
    let tap_a = link_stats(&hosts.a, "vtep0");
    let c = vtepd_a.stop();
    eprintln!("A counters:\n{}", show_counters(&c));
    assert_clean_traffic("A", &c);
    assert_no_offload_drops("A", &c);
    let written = packets(&tap_a, "rx");
    // Whole super-packets came (far fewer VXLAN datagrams than UDP datagrams) and went up cut.
    assert!(c["rx_packets"] * 10 < FLOW.total() as u64, "A: {} VXLAN datagrams for {} UDP datagrams: not whole", c["rx_packets"], FLOW.total());
    assert!(written >= FLOW.total() as u64, "A: {written} TAP writes for {} datagrams: not cut", FLOW.total());
}
