//! Subnet acquisition under contention, through the library against a real etcd (no namespaces):
//! four nodes reach for a network with exactly four subnets at the same instant, 50 rounds. Every
//! node must get one and no two the same: the create-if-absent transaction is what guarantees it.

mod common;

use common::etcd::*;
use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};
use vtepd::control::etcd::flannel::{LeaseAttrs, Network};
use vtepd::control::etcd::lease;
use vtepd::wire::MacAddr;

const NODES: u8 = 4;
const NETWORK: &str = r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.4.0","Backend":{"Type":"vxlan"}}"#;

#[test]
fn racing_nodes_never_share_a_subnet() {
    let etcd = Etcd::on_loopback("race");
    let net = Network::parse(NETWORK.as_bytes()).unwrap();
    for round in 0..50 {
        etcd.ctl(&["del", "--prefix", &format!("{PREFIX}/subnets/")]);
        let start = Arc::new(Barrier::new(NODES as usize));
        let nodes: Vec<_> = (1..=NODES)
            .map(|n| {
                let (start, net, ep) = (start.clone(), net.clone(), etcd.endpoint());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(async {
                        let mut client = etcd_client::Client::connect([ep], None).await.unwrap();
                        let ip = Ipv4Addr::new(192, 0, 2, n);
                        let attrs = LeaseAttrs::ours(ip, &net.backend, MacAddr::from_underlay_ip(ip));
                        start.wait();
                        lease::acquire(&mut client, PREFIX, &net, &attrs, None).await
                    })
                })
            })
            .collect();
        let mut got: Vec<String> = nodes
            .into_iter()
            .map(|h| h.join().unwrap().unwrap_or_else(|e| panic!("round {round}: {e}")).subnet.to_string())
            .collect();
        got.sort();
        let before = got.len();
        got.dedup();
        assert_eq!(got.len(), before, "round {round}: two nodes share a subnet: {got:?}");
        assert_eq!(etcd.leases().len(), NODES as usize, "round {round}: {:?}", etcd.leases());
    }
}
