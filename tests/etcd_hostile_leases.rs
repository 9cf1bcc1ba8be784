//! etcd mode: leases the config file would refuse as a `[[peer]]` (one inside this node's own
//! subnet, one overlapping another node's, one outside the network) are skipped with a warning,
//! and the routes and neighbours they would have replaced stay as they were. A host-gw lease that
//! cannot be routed (behind a router) keeps no other lease out.

mod common;

use common::etcd::*;
use common::*;

/// `10.244.3.0/24` → `10.244.3.128-25`: the upper half, as a lease key.
fn upper_half_key(subnet: &str) -> (String, String) {
    let net = subnet.split('/').next().unwrap();
    let upper = net.rsplit_once('.').map(|(p, _)| format!("{p}.128")).unwrap();
    (format!("{upper}-25"), format!("{upper}/25"))
}

#[test]
fn leases_on_our_subnet_or_overlapping_an_older_one_are_skipped() {
    let (ul, etcd, dir) = vxlan_network("hl");
    let a = ul.host("hl", 1);
    let b = ul.host("hl", 2);
    let (da, _) = start_member(&a, 1, &etcd, &dir);
    let (db, _) = start_member(&b, 2, &etcd, &dir);
    let key_a = etcd.lease_of("192.0.2.1").expect("lease of node 1");
    let key_b = etcd.lease_of("192.0.2.2").expect("lease of node 2");
    let (subnet_a, _) = subnet_of_key(&key_a);
    let (subnet_b, _) = subnet_of_key(&key_b);
    let vtep_b = key_b.split('-').next().unwrap().to_string();
    wait_until("node 1 routes to node 2", || a.has_route(&subnet_b));
    let mac_b = permanent_neighbours(&a, "vtep0")
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{vtep_b} ")).and_then(|r| r.split_whitespace().nth(1)).map(String::from))
        .expect("node 1's neighbour entry for node 2's VTEP");
    let skipped_before = da.log_count("lease skipped");

    // Inside node 1's /24: the /25 route would take half of node 1's pods' traffic.
    let (in_a, in_a_net) = upper_half_key(&subnet_a);
    etcd.put(&format!("{PREFIX}/subnets/{in_a}"), &vxlan_lease_value("192.0.2.9", "02:00:00:00:00:09"));
    // Node 2's VTEP address under another MAC: would re-point node 2's neighbour entry.
    let twin_b = key_b.replace("-24", "-25");
    etcd.put(&format!("{PREFIX}/subnets/{twin_b}"), &vxlan_lease_value("192.0.2.8", "02:00:00:00:00:08"));
    // Outside the network's 10.244.0.0/16.
    etcd.put(&format!("{PREFIX}/subnets/198.51.100.0-24"), &vxlan_lease_value("192.0.2.7", "02:00:00:00:00:07"));
    // A good one after them: once it is routed, the others have been looked at.
    let good = etcd.free_lease_key();
    let (good_net, _) = subnet_of_key(&good);
    etcd.put(&format!("{PREFIX}/subnets/{good}"), &vxlan_lease_value("192.0.2.6", "02:00:00:00:00:06"));
    wait_until("node 1 routes to the good lease", || a.has_route(&good_net));

    for (net, what) in [(in_a_net.as_str(), "inside node 1's subnet"), ("198.51.100.0/24", "outside the network")] {
        assert!(!a.has_route(net), "node 1 installed the lease {what} ({net})");
    }
    let twin_net = subnet_of_key(&twin_b).0;
    assert!(!a.has_route(&twin_net), "node 1 installed the lease overlapping node 2's ({twin_net})");
    assert!(has_permanent_neigh(&a, "vtep0", &vtep_b, &mac_b), "node 2's VTEP no longer maps to its MAC {mac_b}");
    assert!(a.has_route(&subnet_b), "node 2's route went with the overlapping lease");
    let log = da.stderr();
    for why in ["overlaps this node's own", "overlaps an older lease's", "outside the network config's Network"] {
        assert!(log.lines().any(|l| l.contains("lease skipped") && l.contains(why)), "no 'lease skipped' warning with '{why}':\n{log}");
    }
    assert_eq!(da.log_count("lease skipped"), skipped_before + 3, "each lease is warned about once:\n{log}");
    db.stop();
    da.stop();
}

/// More than tonic's default 4 MiB under `<prefix>/subnets/` (junk here; a few thousand leases in a
/// big cluster): a full read must still succeed, or no node could join or resync.
#[test]
fn a_subnets_prefix_larger_than_4_mib_is_read_whole() {
    let (ul, etcd, dir) = vxlan_network("hb");
    let junk = vec![b'x'; 1400 << 10];
    for i in 0..4 {
        etcd.put_large(&format!("{PREFIX}/subnets/junk-{i}"), &junk);
    }
    let a = ul.host("hb", 1);
    let b = ul.host("hb", 2);
    let (da, _) = start_member(&a, 1, &etcd, &dir);
    let (db, _) = start_member(&b, 2, &etcd, &dir);
    let key_b = etcd.lease_of("192.0.2.2").expect("lease of node 2");
    wait_until("node 1 routes to node 2", || a.has_route(&subnet_of_key(&key_b).0));
    // Each junk key is warned about once, not fatal.
    assert_eq!(da.log_count("junk-"), 4, "{}", da.stderr());
    db.stop();
    da.stop();
}

/// host-gw in etcd mode: a lease from a node behind a router cannot be routed (its public IP is no
/// gateway on this link), but it must not keep out the leases after it: its failure is logged and
/// retried, and the others go in.
#[test]
fn a_host_gw_lease_behind_a_router_does_not_keep_the_others_out() {
    let (ul, etcd, dir) = network("hr", HOST_GW_NETWORK);
    let a = ul.host("hr", 1);
    let (cfg, env) = member_config(1, &etcd, &dir);
    let da = Vtepd::start_until(&a, &cfg, "node 1 joined", || env.exists());
    // Peers are installed in subnet order: the far one's subnet comes first.
    let near = etcd.free_lease_key();
    etcd.put(&format!("{PREFIX}/subnets/{near}"), &host_gw_lease("192.0.2.6"));
    let far = etcd.free_lease_key();
    assert!(far < near, "{far} sorts before {near}");
    etcd.put(&format!("{PREFIX}/subnets/{far}"), &host_gw_lease("198.51.100.7"));
    let log = da.wait_for_log("peer not installed", 0);
    assert!(log.contains("198.51.100.7") && log.contains("on no subnet of the underlay"), "the failure does not say why:\n{log}");
    // A change after the failure: the good lease must be (or stay) installed all the same.
    etcd.put(&format!("{PREFIX}/subnets/{near}"), &host_gw_lease("192.0.2.5"));
    let (near_net, _) = subnet_of_key(&near);
    wait_until("node 1 routes the on-link lease via 192.0.2.5", || a.ip(&["route", "show", &near_net]).contains("via 192.0.2.5"));
    assert!(!a.has_route(&subnet_of_key(&far).0), "the far lease was routed");
    assert_eq!(da.log_count("peer not installed"), 1, "the failure was logged again:\n{}", da.stderr());
    da.stop();
}
