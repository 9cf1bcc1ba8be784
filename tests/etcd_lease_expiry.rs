//! etcd mode: a node's lease deleted, and another expiring with its etcd lease, take the node's
//! route and neighbour entries away from the others (asserted on the kernel's tables); our own
//! lease revoked is written again, and our subnet given to another node stops us.

mod common;

use common::etcd::*;
use common::*;

#[test]
fn deleted_and_expired_leases_leave_the_tables() {
    let (ul, etcd, dir) = vxlan_network("ex");
    let a = ul.host("ex", 1);
    let b = ul.host("ex", 2);
    let (da, _) = start_member(&a, 1, &etcd, &dir);
    let (db, _) = start_member(&b, 2, &etcd, &dir);
    let key_b = etcd.lease_of("192.0.2.2").expect("lease of node 2");
    let (subnet_b, _) = subnet_of_key(&key_b);
    let vtep_b = key_b.split('-').next().unwrap().to_string();
    wait_until("node 1 routes to node 2", || a.has_route(&subnet_b));
    assert!(permanent_neighbours(&a, "vtep0").iter().any(|l| l.starts_with(&format!("{vtep_b} "))));

    // Node 2 stops (its lease stays, as flanneld's does), then an operator deletes the lease.
    db.stop();
    assert!(a.has_route(&subnet_b), "node 1 dropped node 2 while its lease still existed");
    etcd.ctl(&["del", &format!("{PREFIX}/subnets/{key_b}")]);
    wait_until("node 1 forgets node 2's route", || !a.has_route(&subnet_b));
    assert!(!permanent_neighbours(&a, "vtep0").iter().any(|l| l.starts_with(&format!("{vtep_b} "))), "neighbour for {vtep_b} left behind");

    // A lease on a short etcd lease, as a node that died leaves it: there, then gone by itself.
    let lease = etcd.grant(4);
    let value = &vxlan_lease_value("192.0.2.9", "02:00:00:00:00:09");
    let key = etcd.free_lease_key();
    let (subnet, _) = subnet_of_key(&key);
    let vtep = key.split('-').next().unwrap().to_string();
    etcd.put_with_lease(&format!("{PREFIX}/subnets/{key}"), value, &lease);
    wait_until("node 1 routes to the short-lived node", || a.has_route(&subnet));
    assert!(has_permanent_neigh(&a, "vtep0", &vtep, "02:00:00:00:00:09"));
    wait_until_for("the short-lived lease expires out of node 1", std::time::Duration::from_secs(20), || !a.has_route(&subnet));
    assert!(!has_permanent_neigh(&a, "vtep0", &vtep, "02:00:00:00:00:09"));
    da.stop();
}

/// Our own etcd lease revoked (by an operator, or lost with an etcd that was restored from an old
/// snapshot): the key goes with it, and the node writes it again on a new lease, same subnet, so
/// the other nodes route to it again.
#[test]
fn a_revoked_own_lease_is_written_again() {
    let (ul, etcd, dir) = vxlan_network("rv");
    let a = ul.host("rv", 1);
    let b = ul.host("rv", 2);
    let (da, _) = start_member(&a, 1, &etcd, &dir);
    let (db, _) = start_member(&b, 2, &etcd, &dir);
    let key_a = etcd.lease_of("192.0.2.1").expect("lease of node 1");
    let (subnet_a, _) = subnet_of_key(&key_a);
    wait_until("node 2 routes to node 1", || b.has_route(&subnet_a));
    let lease_id = |key: &str| -> i64 {
        let out = etcd.ctl(&["get", &format!("{PREFIX}/subnets/{key}"), "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
        v["kvs"][0]["lease"].as_i64().unwrap_or(0)
    };
    let old = lease_id(&key_a);
    assert_ne!(old, 0, "node 1's key is on no lease");
    let rewritten = da.log_count("lease was gone from etcd; written again");
    etcd.ctl(&["lease", "revoke", &format!("{old:x}")]);
    da.wait_for_log("lease was gone from etcd; written again", rewritten);
    wait_until("node 1's key is back", || etcd.lease_of("192.0.2.1").as_deref() == Some(key_a.as_str()));
    let new = lease_id(&key_a);
    assert!(new != 0 && new != old, "node 1's key is back on lease {new:x} (revoked: {old:x})");
    // Node 2 saw the delete, then the new key.
    wait_until("node 2 routes to node 1 again", || b.has_route(&subnet_a));
    da.stop();
    db.stop();
}

/// Our subnet given to another node (our lease expired in a long partition and a new node took
/// it, or an operator reassigned it): every node routes it there now, so node 1 must not go on
/// with it. It stops with status 1, removing its routes, and a restart acquires another subnet.
/// (It used to log "restart vtepd" and carry on, its pods cut off.)
#[test]
fn a_subnet_taken_by_another_node_stops_vtepd_and_a_restart_leases_another() {
    let (ul, etcd, dir) = vxlan_network("tk");
    let a = ul.host("tk", 1);
    let b = ul.host("tk", 2);
    let (da, _) = start_member(&a, 1, &etcd, &dir);
    let (db, _) = start_member(&b, 2, &etcd, &dir);
    let key_a = etcd.lease_of("192.0.2.1").expect("lease of node 1");
    let key_b = etcd.lease_of("192.0.2.2").expect("lease of node 2");
    let (subnet_b, _) = subnet_of_key(&key_b);
    wait_until("node 1 routes to node 2", || a.has_route(&subnet_b));

    etcd.put(&format!("{PREFIX}/subnets/{key_a}"), &vxlan_lease_value("192.0.2.9", "02:00:00:00:00:09"));
    let (status, log) = da.wait_for_exit();
    assert_eq!(status.code(), Some(1), "node 1 exited with {status}; its log:\n{log}");
    assert!(log.contains("is now leased by 192.0.2.9"), "the reason is not in node 1's log:\n{log}");
    assert!(!a.has_route(&subnet_b), "node 1 left its route to node 2 behind");

    let (da, _) = start_member(&a, 1, &etcd, &dir);
    let key_new = etcd.lease_of("192.0.2.1").expect("a new lease of node 1");
    assert_ne!(key_new, key_a, "node 1 leased the subnet another node holds");
    let (subnet_new, _) = subnet_of_key(&key_new);
    wait_until("node 2 routes to node 1's new subnet", || b.has_route(&subnet_new));
    da.stop();
    db.stop();
}
