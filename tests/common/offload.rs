//! Checks shared by the offload tests (tests/offload_bulk.rs for VXLAN, tests/ipip_offload.rs for
//! IPIP): transfers both ways at once, the stack's checksum-error counters, device statistics, and
//! vtepd's own counters and start-up log.
use super::*;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::thread;

/// Drops that mean vtepd produced something the kernel refused, or could not handle what the kernel
/// handed it; none may happen on a clean link.
pub const OFFLOAD_DROPS: &[&str] = &[
    "drop_rx_tap_write",
    "drop_tx_bad_gso",
    "drop_tx_bad_vnet_hdr",
    "drop_tx_send_error",
];


/// Runs A→B and B→A transfers concurrently; both finish (or fail) before any failure is raised,
/// so the message names the direction that broke.
pub fn transfer_both_ways(a: &Netns, b: &Netns, nbytes: usize) {
    let ip_a = Ipv4Addr::new(10, 244, 1, 0);
    let ip_b = Ipv4Addr::new(10, 244, 2, 0);
    thread::scope(|s| {
        let ab = s.spawn(|| tcp_transfer(a, Some(ip_a), b, ip_b, 5001, nbytes));
        let ba = s.spawn(|| tcp_transfer(b, Some(ip_b), a, ip_a, 5002, nbytes));
        let (ab, ba) = (ab.join(), ba.join());
        for r in [ab, ba] {
            if let Err(e) = r {
                std::panic::resume_unwind(e);
            }
        }
    });
}

/// `Proto.Field` → value from the namespace's /proc/net/snmp (read by a process inside it).
pub fn snmp(ns: &Netns) -> HashMap<String, u64> {
    let text = ns.exec_ok("cat", &["/proc/net/snmp"]);
    let mut out = HashMap::new();
    // Pairs of lines with the same prefix: "Tcp: Name1 Name2 ..." then "Tcp: v1 v2 ...".
    let mut lines = text.lines().filter_map(|l| l.split_once(':')).peekable();
    while let Some((proto, names)) = lines.next() {
        let Some((_, values)) = lines.next_if(|(p, _)| *p == proto) else {
            continue;
        };
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse() {
                out.insert(format!("{proto}.{n}"), v);
            }
        }
    }
    out
}

/// Checksum errors counted by the stack in `ns` since `before`: zero unless some frame or datagram
/// reached it with a wrong checksum.
pub fn assert_no_csum_errors(host: &str, ns: &Netns, before: &HashMap<String, u64>) {
    let after = snmp(ns);
    for k in ["Tcp.InCsumErrors", "Udp.InCsumErrors", "Ip.InHdrErrors"] {
        let (b, a) = (before.get(k).copied(), after.get(k).copied());
        assert!(a.is_some(), "{host}: /proc/net/snmp has no {k}");
        assert_eq!(
            a, b,
            "{host}: {k} rose from {b:?} to {a:?} during the transfers"
        );
    }
}

/// The device's statistics (`ip -s -s -j link`). For a TAP, "rx" is what vtepd wrote to it and "tx"
/// what the kernel handed vtepd.
pub fn link_stats(ns: &Netns, dev: &str) -> serde_json::Value {
    let json = ns.ip(&["-j", "-s", "-s", "link", "show", "dev", dev]);
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("ip -j link: {e}: {json}"));
    v[0]["stats64"].clone()
}

pub fn packets(stats: &serde_json::Value, dir: &str) -> u64 {
    stats[dir]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no {dir}.packets in {stats}"))
}

/// Proof that the offload engine ran rather than a plain path that happens to work: the TAP (or TUN)
/// moved fewer frames than vtepd counted segments, so some frame read was a super-frame vtepd segmented
/// (TSO) or, with `coalesced`, some frame written carried several received segments (GRO).
pub fn assert_offloads_used(
    host: &str,
    c: &HashMap<String, u64>,
    tap: &serde_json::Value,
    coalesced: bool,
) {
    let (read, written) = (packets(tap, "tx"), packets(tap, "rx"));
    eprintln!(
        "{host}: device frames read {read} -> packets sent {}; packets received {} -> device frames written {written}",
        c["tx_packets"], c["rx_packets"]
    );
    assert!(
        read < c["tx_packets"],
        "{host}: no super-frame was segmented"
    );
    if coalesced {
        assert!(
            written < c["rx_packets"],
            "{host}: no received segments were coalesced"
        );
    }
}

pub fn assert_no_rx_errors(host: &str, dev: &str, stats: &serde_json::Value) {
    let stats = &stats["rx"];
    eprintln!("{host}: {dev} rx stats: {stats}");
    for k in ["errors", "frame_errors", "length_errors"] {
        if let Some(n) = stats.get(k) {
            assert_eq!(
                n.as_u64(),
                Some(0),
                "{host}: {dev} rx {k} = {n}: the kernel refused frames\n{stats}"
            );
        }
    }
}

/// The "offloads" line vtepd logs at start-up must show each of `wanted` (`tap_tso=true`...):
/// otherwise an offload test would pass while exercising only the plain path.
pub fn assert_offloads_on(host: &str, d: &Vtepd, wanted: &[&str]) {
    let log = strip_ansi(&d.stderr());
    let line = log
        .lines()
        .find(|l| l.contains("offloads"))
        .unwrap_or_else(|| panic!("{host}: no offloads line:\n{log}"));
    for want in wanted {
        assert!(
            line.contains(want),
            "{host}: offloads not all on ({want} missing): {line}"
        );
    }
}

/// tracing's formatter colours its output even into a pipe.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn assert_no_offload_drops(host: &str, c: &HashMap<String, u64>) {
    for k in OFFLOAD_DROPS {
        let n = c
            .get(*k)
            .unwrap_or_else(|| panic!("{host}: vtepd printed no {k}\n{}", show_counters(c)));
        assert_eq!(*n, 0, "{host}: {k} = {n}\n{}", show_counters(c));
    }
}

pub fn assert_moved(host: &str, c: &HashMap<String, u64>, nbytes: usize) {
    for k in ["rx_bytes", "tx_bytes"] {
        assert!(
            c[k] >= nbytes as u64,
            "{host}: {k} = {} < {nbytes}\n{}",
            c[k],
            show_counters(c)
        );
    }
}
