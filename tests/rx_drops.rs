//! Malformed or misaddressed VXLAN datagrams sent to a running vtepd are dropped and counted under
//! exactly one reason each, while good overlay traffic keeps flowing.
//!
//! The datagrams are built here by hand (VXLAN header per RFC 7348) around an inner Ethernet/IPv4/ICMP
//! echo built with etherparse, independent of vtepd's own wire code.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::thread;
use std::time::Duration;

use common::*;

/// How many datagrams of each kind.
const N: u64 = 25;

const VXLAN_PORT: u16 = 8472;

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// Ethernet (B's VTEP MAC → `dst_mac`) / IPv4 10.244.2.0 → 10.244.1.0 / ICMP echo request.
fn inner_frame(dst_mac: [u8; 6], seq: u16) -> Vec<u8> {
    let payload = [0xabu8; 32];
    let builder = etherparse::PacketBuilder::ethernet2(mac(&host_mac(2)), dst_mac)
        .ipv4([10, 244, 2, 0], [10, 244, 1, 0], 64)
        .icmpv4_echo_request(0x7654, seq);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, &payload).unwrap();
    out
}

/// A VXLAN datagram's payload: the header (`vxlan_header`), then the inner frame.
fn datagram(hdr: [u8; 8], frame: &[u8]) -> Vec<u8> {
    [&hdr[..], frame].concat()
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Truncated,
    NoIFlag,
    ReservedBits,
    WrongVni,
    NotForUs,
    UnknownSource,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Truncated,
        Kind::NoIFlag,
        Kind::ReservedBits,
        Kind::WrongVni,
        Kind::NotForUs,
        Kind::UnknownSource,
    ];

    fn counter(self) -> &'static str {
        match self {
            Kind::Truncated => "drop_rx_truncated",
            Kind::NoIFlag => "drop_rx_no_i_flag",
            Kind::ReservedBits => "drop_rx_reserved_bits",
            Kind::WrongVni => "drop_rx_wrong_vni",
            Kind::NotForUs => "drop_rx_not_for_us",
            Kind::UnknownSource => "drop_rx_unknown_source",
        }
    }

    /// Each kind has exactly one defect; everything else is what a good datagram for A carries.
    fn payload(self, seq: u16) -> Vec<u8> {
        let for_a = mac(&host_mac(1));
        let good = vxlan_header(0x08, [0; 3], 1, 0);
        match self {
            Kind::Truncated => vec![0x08, 0, 0, 0],
            Kind::NoIFlag => datagram(vxlan_header(0x00, [0; 3], 1, 0), &inner_frame(for_a, seq)),
            Kind::ReservedBits => datagram(
                vxlan_header(0x08, [0, 0x01, 0], 1, 0),
                &inner_frame(for_a, seq),
            ),
            Kind::WrongVni => datagram(vxlan_header(0x08, [0; 3], 2, 0), &inner_frame(for_a, seq)),
            Kind::NotForUs => datagram(good, &inner_frame(mac("02:00:00:00:00:99"), seq)),
            Kind::UnknownSource => datagram(good, &inner_frame(for_a, seq)),
        }
    }
}

#[test]
fn rx_drops_are_counted_exactly() {
    // Not a throughput test, but the counts must be exact: with the heavy tests excluded, vtepd is never
    // starved long enough for its socket buffer to overflow.
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("rxd");
    // A second address on B that is not a configured peer.
    hosts
        .b
        .ip(&["addr", "add", "192.0.2.99/24", "dev", UNDERLAY_DEV]);

    let dir = TempDir::new("rxd");
    let (vtepd_a, vtepd_b) = start_pair(&hosts, &dir, &[]);

    ping(&hosts.a, "10.244.1.0", "10.244.2.0");

    // Good traffic during the bad: a ping running while the datagrams go out.
    let a_name = hosts.a.name().to_string();
    let pinger = thread::spawn(move || {
        common::run(
            "ip",
            &[
                "netns",
                "exec",
                &a_name,
                "ping",
                "-c",
                "10",
                "-i",
                "0.2",
                "-W",
                "2",
                "-I",
                "10.244.1.0",
                "10.244.2.0",
            ],
        )
    });

    let sent = in_netns(hosts.b.name(), || {
        let peer = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 0))
            .expect("bind 192.0.2.2");
        let stranger = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 0))
            .expect("bind 192.0.2.99");
        let dst = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), VXLAN_PORT);
        let mut sent = [0u64; Kind::ALL.len()];
        for i in 0..N {
            for (k, kind) in Kind::ALL.iter().enumerate() {
                let sock = match kind {
                    Kind::UnknownSource => &stranger,
                    _ => &peer,
                };
                let d = kind.payload(i as u16);
                let n = sock
                    .send_to(&d, dst)
                    .unwrap_or_else(|e| panic!("send {kind:?}: {e}"));
                assert_eq!(n, d.len());
                sent[k] += 1;
                // Paced so nothing is lost to queue limits (counts must be exact) and so the datagrams
                // arrive interleaved with the ping running meanwhile.
                thread::sleep(Duration::from_millis(10));
            }
        }
        sent
    });

    let during = pinger.join().expect("ping thread");
    assert!(
        during.status.success()
            && String::from_utf8_lossy(&during.stdout).contains(" 0% packet loss"),
        "ping A -> B lost packets while bad datagrams were arriving:\n{}{}",
        String::from_utf8_lossy(&during.stdout),
        String::from_utf8_lossy(&during.stderr)
    );
    // And afterwards, both ways. This also gives vtepd time to have read every datagram before SIGTERM.
    hosts.ping_both_ways();

    let (counters_a, counters_b) = stop_pair(vtepd_a, vtepd_b);
    assert!(
        counters_a["rx_packets"] > 0,
        "A rx_packets is 0\n{}",
        show_counters(&counters_a)
    );
    let mut wrong = Vec::new();
    for (k, kind) in Kind::ALL.iter().enumerate() {
        let got = counters_a[kind.counter()];
        if got != sent[k] {
            wrong.push(format!(
                "{} = {got}, sent {} ({kind:?})",
                kind.counter(),
                sent[k]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "A's drop counters do not match what was sent:\n{}\nall counters:\n{}",
        wrong.join("\n"),
        show_counters(&counters_a)
    );
    // Only good traffic reached B.
    assert_clean_traffic("B", &counters_b);
}
