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
    "drop_rx_bad_gso",
    "drop_tx_bad_gso",
    "drop_tx_bad_vnet_hdr",
    "drop_tx_send_error",
];

/// Runs A→B and B→A transfers concurrently; both finish (or fail) before any failure is raised,
/// so the message names the direction that broke.
pub fn transfer_both_ways(a: &Netns, b: &Netns, nbytes: usize) {
    both_ways(
        || tcp_transfer(a, Some(IP_A), b, IP_B, 5001, nbytes),
        || tcp_transfer(b, Some(IP_B), a, IP_A, 5002, nbytes),
    );
}

/// `udp_gso_transfer` A→B on `port` and B→A on `port + 1`, at once.
pub fn udp_gso_both_ways(a: &Netns, b: &Netns, port: u16, flow: UsoFlow) {
    both_ways(
        || udp_gso_transfer(a, IP_A, b, IP_B, port, flow),
        || udp_gso_transfer(b, IP_B, a, IP_A, port + 1, flow),
    );
}

/// Runs both directions on their own threads and re-raises the first panic once both are done.
fn both_ways(ab: impl FnOnce() + Send, ba: impl FnOnce() + Send) {
    thread::scope(|s| {
        let (ab, ba) = (s.spawn(ab), s.spawn(ba));
        for r in [ab.join(), ba.join()] {
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

/// 300 sendmsgs of 40 datagrams (QUIC-sized, 1200 bytes; the last of each 600): 12,000 datagrams.
pub const USO_FLOW: UsoFlow = UsoFlow { sends: 300, segs: 40, size: 1200 };

/// A UDP GSO (`UDP_SEGMENT`) flow: `sends` sendmsg calls of `segs` datagrams each, all `size` bytes
/// but the last of each call (`size / 2`, the short tail USO must keep).
#[derive(Debug, Clone, Copy)]
pub struct UsoFlow {
    pub sends: usize,
    pub segs: usize,
    pub size: usize,
}

impl UsoFlow {
    pub fn total(&self) -> usize {
        self.sends * self.segs
    }

    fn len(&self, seg: usize) -> usize {
        if seg + 1 == self.segs { self.size / 2 } else { self.size }
    }

    /// Datagram `(send, seg)`: its two indices, then bytes that depend on both and the offset.
    fn fill(&self, send: usize, seg: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&(send as u32).to_be_bytes());
        out.extend_from_slice(&(seg as u32).to_be_bytes());
        out.extend((8..self.len(seg)).map(|k| (send * 7 + seg * 13 + k) as u8));
    }

    /// Why `d` is not a datagram of this flow, or its number.
    fn check(&self, d: &[u8]) -> Result<usize, String> {
        let idx = |at: usize| d.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let (Some(send), Some(seg)) = (idx(0), idx(4)) else { return Err(format!("runt of {} bytes", d.len())) };
        if send >= self.sends || seg >= self.segs {
            return Err(format!("indices ({send}, {seg}) out of range, {} bytes", d.len()));
        }
        let mut want = Vec::with_capacity(self.size);
        self.fill(send, seg, &mut want);
        if d != want {
            return Err(format!("datagram ({send}, {seg}): {} bytes, want {}, or its bytes differ", d.len(), want.len()));
        }
        Ok(send * self.segs + seg)
    }
}

/// UDP_SEGMENT sendmsgs from `src` in `tx_ns` to `dst:port` in `rx_ns`, paced (one per
/// millisecond) so nothing is lost to buffers; asserts the receiver got every datagram exactly
/// once, with its own length and bytes — the datagram boundaries are what USO must keep.
pub fn udp_gso_transfer(tx_ns: &Netns, src: Ipv4Addr, rx_ns: &Netns, dst: Ipv4Addr, port: u16, flow: UsoFlow) {
    let what = format!("UDP GSO {}:{src} -> {}:{dst}:{port}, {flow:?}", tx_ns.name(), rx_ns.name());
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let receiver = spawn_in_netns(rx_ns.name(), move || -> Result<(), String> {
        let sock = std::net::UdpSocket::bind((dst, port)).map_err(|e| format!("bind: {e}"))?;
        force_rcvbuf(&sock, 32 << 20);
        sock.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
        let _ = ready_tx.send(());
        let (mut seen, mut got, mut problems) = (vec![false; flow.total()], 0, Vec::new());
        let mut buf = vec![0u8; 65_536];
        let mut quiet_since: Option<Instant> = None;
        while got < flow.total() {
            match sock.recv(&mut buf) {
                Ok(n) => match flow.check(&buf[..n]) {
                    Ok(i) if seen[i] => problems.push(format!("datagram {i} twice")),
                    Ok(i) => (seen[i], got) = (true, got + 1),
                    Err(e) => problems.push(e),
                },
                Err(_) => {
                    // Once the sender is done, two quiet seconds mean nothing more is coming.
                    if done_rx.try_recv().is_ok() {
                        quiet_since = Some(Instant::now());
                    }
                    if quiet_since.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
                        break;
                    }
                }
            }
            if problems.len() > 10 {
                break;
            }
        }
        if got == flow.total() && problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{got} of {} datagrams intact; problems: {problems:?}", flow.total()))
        }
    });
    if ready_rx.recv_timeout(READY_TIMEOUT).is_err() {
        panic!("{what}: receiver did not bind: {:?}", receiver.join());
    }
    let sent = in_netns(tx_ns.name(), move || -> Result<(), String> {
        let sock = std::net::UdpSocket::bind((src, 0)).map_err(|e| format!("bind: {e}"))?;
        sock.connect((dst, port)).map_err(|e| format!("connect: {e}"))?;
        let seg = flow.size as libc::c_int;
        // SAFETY: setsockopt with a valid fd and an int option value (UDP_SEGMENT = 103).
        let rc = unsafe { libc::setsockopt(sock.as_raw_fd(), libc::SOL_UDP, 103, (&seg as *const libc::c_int).cast(), 4) };
        if rc != 0 {
            return Err(format!("UDP_SEGMENT: {}", std::io::Error::last_os_error()));
        }
        let mut buf = Vec::with_capacity(flow.segs * flow.size);
        for send in 0..flow.sends {
            buf.clear();
            (0..flow.segs).for_each(|seg| flow.fill(send, seg, &mut buf));
            sock.send(&buf).map_err(|e| format!("send {send}: {e}"))?;
            thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    });
    let _ = done_tx.send(());
    let received = receiver.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    sent.unwrap_or_else(|e| panic!("{what}: sender failed: {e}"));
    received.unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// The device handed vtepd about a frame per sendmsg of `flow` (plus pings and ARP) while vtepd sent
/// a packet per datagram: the super-frames were USO's, not datagrams the kernel had cut already.
/// With `coalesced`, the received datagrams also went up in USO writes of several each.
pub fn assert_uso_used(host: &str, c: &HashMap<String, u64>, dev: &serde_json::Value, flow: UsoFlow, coalesced: bool) {
    let (read, written) = (packets(dev, "tx"), packets(dev, "rx"));
    eprintln!(
        "{host}: device frames read {read} -> packets sent {}; packets received {} -> device frames written {written}",
        c["tx_packets"], c["rx_packets"]
    );
    assert!(read < (flow.sends + 100) as u64, "{host}: {read} device frames for {} UDP_SEGMENT sends: no USO", flow.sends);
    assert!(c["tx_packets"] >= flow.total() as u64, "{host}: {} packets sent for {} datagrams", c["tx_packets"], flow.total());
    if coalesced {
        assert!(written * 2 < c["rx_packets"], "{host}: {written} device writes for {} datagrams received: little coalescing", c["rx_packets"]);
    }
}
