//! The path a Kubernetes pod's packets take with Flannel: pod netns → veth → cni0 bridge on the host →
//! routed into vtepd's device → VXLAN → peer host → its cni0 → pod. Ping and 50 MB TCP pod to pod.

mod common;

use std::net::Ipv4Addr;

use common::*;

#[test]
fn pod_to_pod_over_vtepd() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("pod");
    let pod1 = add_pod(&hosts.a, 1, "pod1", 1450);
    let pod2 = add_pod(&hosts.b, 2, "pod2", 1450);

    let dir = TempDir::new("pod");
    let (vtepd_a, vtepd_b) = start_pair(&hosts, &dir, &[]);

    ping(&pod1, "10.244.1.2", "10.244.2.2");
    ping(&pod2, "10.244.2.2", "10.244.1.2");

    tcp_transfer(
        &pod1,
        None,
        &pod2,
        Ipv4Addr::new(10, 244, 2, 2),
        5001,
        BIG_TRANSFER,
    );

    let (counters_a, counters_b) = stop_pair(vtepd_a, vtepd_b);
    assert_clean_traffic("A", &counters_a);
    assert_clean_traffic("B", &counters_b);
    assert!(
        counters_a["tx_bytes"] >= BIG_TRANSFER as u64,
        "A tx_bytes below the transfer size"
    );
    assert!(
        counters_b["rx_bytes"] >= BIG_TRANSFER as u64,
        "B rx_bytes below the transfer size"
    );
}
