//! Which subnet a node takes when etcd already holds leases naming its address, through the
//! library against a real etcd (no namespaces): flanneld's rules for keys left by another config
//! (another SubnetLen, a dual-stack network since made IPv4-only) and for reservations.

mod common;

use common::etcd::*;
use std::net::Ipv4Addr;
use vtepd::control::etcd::flannel::{LeaseAttrs, Network};
use vtepd::control::etcd::lease::{self, Acquired};
use vtepd::wire::MacAddr;

const NETWORK: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const ME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn acquire(etcd: &Etcd, hint: Option<&str>) -> Acquired {
    let net = Network::parse(NETWORK.as_bytes()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await.unwrap();
        let attrs = LeaseAttrs::ours(ME, &net.backend, MacAddr::from_underlay_ip(ME));
        lease::acquire(&mut client, PREFIX, &net, &attrs, hint.map(|h| h.parse().unwrap())).await.unwrap()
    })
}

fn keys_naming_me(etcd: &Etcd) -> Vec<String> {
    etcd.leases().into_iter().filter(|(_, v)| v.contains(&format!("\"PublicIP\":\"{ME}\""))).map(|(k, _)| k).collect()
}

/// A /26 from before SubnetLen went back to the default sorts before our /24 from a dual-stack
/// past. The /26 is deleted (other nodes would go on routing it to us), the /24 reclaimed under its
/// plain IPv4 key, so the node keeps its subnet. (The /26 used to be skipped and left, and the
/// dual-stack key's reclaim compared a key that does not exist: twenty lost "races", then an error.)
#[test]
fn leases_from_an_older_config_give_way_to_the_one_we_can_keep() {
    let etcd = Etcd::on_loopback("acq");
    let value = vxlan_lease_value(&ME.to_string(), "02:76:c0:00:02:01");
    let lease = etcd.grant(3600);
    etcd.put_with_lease(&format!("{PREFIX}/subnets/10.244.77.0-26"), &value, &lease);
    etcd.put_with_lease(&format!("{PREFIX}/subnets/10.244.80.0-24&fd00:0:0:50::-64"), &value, &lease);
    let got = acquire(&etcd, Some("10.244.9.0/24"));
    assert_eq!(got.subnet.to_string(), "10.244.80.0/24");
    assert!(got.lease_id.is_some());
    assert_eq!(keys_naming_me(&etcd), ["10.244.80.0-24"]);

    // A restart takes the same key back.
    assert_eq!(acquire(&etcd, None).subnet.to_string(), "10.244.80.0/24");
    assert_eq!(keys_naming_me(&etcd), ["10.244.80.0-24"]);
}

/// An operator's reservation (no etcd lease) outside the range is theirs to remove: it stays, and
/// the node leases a subnet it may hold (here its subnet file's).
#[test]
fn a_reservation_outside_the_range_stays_and_the_node_leases_elsewhere() {
    let etcd = Etcd::on_loopback("acqr");
    let value = vxlan_lease_value(&ME.to_string(), "02:76:c0:00:02:01");
    etcd.put(&format!("{PREFIX}/subnets/10.244.77.0-26"), &value);
    let got = acquire(&etcd, Some("10.244.9.0/24"));
    assert_eq!(got.subnet.to_string(), "10.244.9.0/24");
    let mut keys = keys_naming_me(&etcd);
    keys.sort();
    assert_eq!(keys, ["10.244.77.0-26", "10.244.9.0-24"]);
}
