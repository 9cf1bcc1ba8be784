//! etcd mode: three vtepd nodes join an empty Flannel network, each leases a distinct subnet, all
//! pairs reach each other, and each writes Flannel's subnet.env exactly. A restarted node gets its
//! subnet and its VTEP MAC back; a host-gw node killed and restarted never takes down a route a
//! lease still wants.

mod common;

use common::etcd::*;
use common::*;

#[test]
fn three_nodes_join_an_empty_network() {
    let (ul, etcd, dir) = vxlan_network("ec");
    let hosts: Vec<Netns> = (1..=3).map(|n| ul.host("ec", n)).collect();
    let members: Vec<_> = hosts.iter().zip(1u8..).map(|(ns, n)| start_member(ns, n, &etcd, &dir)).collect();

    let keys: Vec<String> = (1..=3)
        .map(|n| etcd.lease_of(&format!("192.0.2.{n}")).unwrap_or_else(|| panic!("no lease for node {n}: {:?}", etcd.leases())))
        .collect();
    let mut distinct = keys.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "subnets not distinct: {keys:?}");

    for (i, ((_, env), key)) in members.iter().zip(&keys).enumerate() {
        let (subnet, first) = subnet_of_key(key);
        assert!(subnet.starts_with("10.244.") && subnet.ends_with("/24"), "{subnet}");
        let text = std::fs::read_to_string(env).unwrap();
        assert_eq!(text, format!("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={first}/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"), "node {}", i + 1);
        // The device carries the subnet's network address, as flannel.1 does.
        let vtep = subnet.replace("/24", "/32");
        let addr = hosts[i].ip(&["addr", "show", "dev", "vtep0"]);
        assert!(addr.contains(&vtep), "node {}: vtep0 lacks {vtep}:\n{addr}", i + 1);
    }

    // The lease each node wrote is Flannel's, with the VTEP MAC its device really has.
    for (i, key) in keys.iter().enumerate() {
        let value = etcd.leases().into_iter().find(|(k, _)| k == key).unwrap().1;
        let mac = fmt_mac(link_mac(&hosts[i], "vtep0"));
        assert_eq!(value, format!(r#"{{"PublicIP":"192.0.2.{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#, i + 1));
    }

    let vtep_ips: Vec<String> = keys.iter().map(|k| k.split('-').next().unwrap().to_string()).collect();
    for i in 0..3 {
        for j in 0..3 {
            if i != j {
                let (subnet, _) = subnet_of_key(&keys[j]);
                wait_until(&format!("node {} has a route to {subnet}", i + 1), || hosts[i].has_route(&subnet));
                ping(&hosts[i], &vtep_ips[i], &vtep_ips[j]);
            }
        }
    }
    for (d, _) in members {
        let c = d.stop();
        assert_clean_traffic("member", &c);
    }
}

#[test]
fn a_restarted_node_gets_its_subnet_and_mac_back() {
    let (ul, etcd, dir) = vxlan_network("er");
    let a = ul.host("er", 1);
    let b = ul.host("er", 2);
    let (da, _) = start_member(&a, 1, &etcd, &dir);
    let (db, env_b) = start_member(&b, 2, &etcd, &dir);
    let key_b = etcd.lease_of("192.0.2.2").expect("lease of node 2");
    let mac_b = link_mac(&b, "vtep0");
    db.stop();
    // SIGTERM revokes nothing: the lease stays, as flanneld's does.
    assert_eq!(etcd.lease_of("192.0.2.2"), Some(key_b.clone()));

    // Taken by the lease with our PublicIP.
    let (db, _) = start_member(&b, 2, &etcd, &dir);
    assert_eq!(etcd.lease_of("192.0.2.2"), Some(key_b.clone()));
    assert_eq!(link_mac(&b, "vtep0"), mac_b, "VTEP MAC changed across a restart");
    db.stop();

    // Lease gone (e.g. expired while the node was down): the subnet file brings the same subnet back.
    etcd.ctl(&["del", &format!("{PREFIX}/subnets/{key_b}")]);
    let (db, env_b2) = start_member(&b, 2, &etcd, &dir);
    assert_eq!(env_b, env_b2);
    assert_eq!(etcd.lease_of("192.0.2.2"), Some(key_b.clone()));
    let (subnet_b, _) = subnet_of_key(&key_b);
    let key_a = etcd.lease_of("192.0.2.1").unwrap();
    wait_until("node 1 routes to node 2's subnet again", || a.has_route(&subnet_b));
    ping(&a, key_a.split('-').next().unwrap(), key_b.split('-').next().unwrap());
    db.stop();
    da.stop();
}

/// host-gw's routes are on the underlay and outlive a SIGKILL. At the restart vtepd removes the
/// routes no lease wants any more — and not the others: it reads the leases before sweeping, so a
/// route to a node that is still there is never deleted (its pods would be cut off until the etcd
/// thread put it back), only replaced in place.
#[test]
fn a_killed_host_gw_node_keeps_the_routes_the_leases_still_want() {
    let (ul, etcd, dir) = network("ek", HOST_GW_NETWORK);
    let a = ul.host("ek", 1);
    let (cfg, _) = member_config(1, &etcd, &dir);
    let kept = etcd.free_lease_key();
    etcd.put(&format!("{PREFIX}/subnets/{kept}"), &host_gw_lease("192.0.2.6"));
    let gone = etcd.free_lease_key();
    etcd.put(&format!("{PREFIX}/subnets/{gone}"), &host_gw_lease("192.0.2.7"));
    let (kept_net, gone_net) = (subnet_of_key(&kept).0, subnet_of_key(&gone).0);
    let da = Vtepd::start_until(&a, &cfg, "routes to both leases", || a.has_route(&kept_net) && a.has_route(&gone_net));
    da.kill_hard();
    etcd.ctl(&["del", &format!("{PREFIX}/subnets/{gone}")]);

    let monitor = RouteMonitor::start(&a);
    let da = Vtepd::start_until(&a, &cfg, "started", || true);
    // The etcd thread's first resync installs (replaces) the kept route: the restart is complete.
    let log = da.wait_for_log("peer added", 0);
    assert!(log.contains("192.0.2.6"), "the kept lease was not installed:\n{log}");
    wait_until("the route of the deleted lease removed", || !a.has_route(&gone_net));
    let changes = monitor.lines();
    assert!(changes.iter().any(|l| l.starts_with("Deleted") && l.contains(&gone_net)), "no deletion of {gone_net} seen: {changes:#?}");
    let cut = changes.iter().find(|l| l.starts_with("Deleted") && l.contains(&kept_net));
    assert!(cut.is_none(), "the route a lease still wants was deleted at the restart: {cut:?}\n{changes:#?}");
    assert!(a.ip(&["route", "show", &kept_net]).contains("via 192.0.2.6 "), "{}", a.ip(&["route", "show"]));
    da.stop();
}
