//! etcd mode against a node run the Flannel way: the kernel's VXLAN device set up as flannel.1, its
//! lease written by hand byte for byte as flanneld writes it. vtepd programs that node from the
//! lease; and the kernel node, programmed from vtepd's lease exactly as flanneld would program it
//! (onlink route, permanent neighbour, fdb entry), carries traffic to vtepd.

mod common;

use common::etcd::*;
use common::*;

const KERNEL_MAC: &str = "8e:4d:7c:1a:22:0b";

#[test]
fn vtepd_and_a_flannel_kernel_node_share_one_network() {
    let (ul, etcd, dir) = vxlan_network("ei");
    let vt = ul.host("ei", 1);
    let kernel = ul.host("ei", 2);

    // The kernel node: flannel.1 as flanneld creates it, and its lease as flanneld writes it.
    kernel.ip(&["link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472", "local", "192.0.2.2", "dev", UNDERLAY_DEV, "nolearning"]);
    kernel.ip(&["link", "set", "flannel.1", "address", KERNEL_MAC, "mtu", "1450", "up"]);
    kernel.ip(&["addr", "add", "10.244.7.0/32", "dev", "flannel.1"]);
    let lease = etcd.grant(86400);
    let value = vxlan_lease_value("192.0.2.2", KERNEL_MAC);
    etcd.put_with_lease(&format!("{PREFIX}/subnets/10.244.7.0-24"), &value, &lease);

    let (d, _) = start_member(&vt, 1, &etcd, &dir);
    wait_until("vtepd routes to the kernel node's subnet", || vt.has_route("10.244.7.0/24"));
    assert!(has_permanent_neigh(&vt, "vtep0", "10.244.7.0", KERNEL_MAC), "{:?}", permanent_neighbours(&vt, "vtep0"));

    // The reverse, as flanneld on the kernel node handles vtepd's lease.
    let key = etcd.lease_of("192.0.2.1").expect("vtepd's lease");
    let (subnet, _) = subnet_of_key(&key);
    let vtep_ip = key.split('-').next().unwrap().to_string();
    let mac = etcd.leases().into_iter().find(|(k, _)| *k == key).unwrap().1;
    let mac = mac.split("\"VtepMAC\":\"").nth(1).and_then(|s| s.split('"').next()).expect("VtepMAC in vtepd's lease").to_string();
    assert_eq!(mac, fmt_mac(link_mac(&vt, "vtep0")));
    kernel.ip(&["route", "add", &subnet, "via", &vtep_ip, "dev", "flannel.1", "onlink"]);
    kernel.ip(&["neigh", "add", &vtep_ip, "lladdr", &mac, "dev", "flannel.1", "nud", "permanent"]);
    kernel.exec_ok("bridge", &["fdb", "append", &mac, "dev", "flannel.1", "dst", "192.0.2.1"]);

    // Pods behind each side: addresses in each node's subnet, not just the tunnel addresses.
    let pod_vt = first_pod(&subnet);
    vt.ip(&["addr", "add", &format!("{pod_vt}/32"), "dev", "lo"]);
    kernel.ip(&["addr", "add", "10.244.7.10/32", "dev", "lo"]);
    ping(&vt, &vtep_ip, "10.244.7.0");
    ping(&kernel, "10.244.7.0", &vtep_ip);
    ping(&vt, &pod_vt, "10.244.7.10");
    ping(&kernel, "10.244.7.10", &pod_vt);
    tcp_transfer(&kernel, Some("10.244.7.10".parse().unwrap()), &vt, pod_vt.parse().unwrap(), 5301, 4 * 1024 * 1024);
    let c = d.stop();
    assert_clean_traffic("vtepd", &c);
}

/// `10.244.3.0/24` → "10.244.3.10".
fn first_pod(subnet: &str) -> String {
    let net = subnet.split('/').next().unwrap();
    format!("{}.10", net.rsplit_once('.').unwrap().0)
}
