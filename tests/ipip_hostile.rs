//! Hostile input on the IPIP socket: packets with bad inner headers, lying lengths, a source that
//! is not a peer, bad outer IHLs and lengths, and outer fragments (complete, incomplete, overlapping) are sent
//! to a running vtepd while a ping runs through the tunnel. Each is dropped and counted — by vtepd
//! under exactly one reason, or by the kernel before a raw socket ever sees it (bad outer headers,
//! fragments that never reassemble) — and the ping loses nothing.
//!
//! Packets are built here by hand (outer header per RFC 791/2003) around inner packets built with
//! etherparse, independent of vtepd's own wire code, and sent from host B with an IPPROTO_RAW socket.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use common::ecn;

/// How many packets of each kind.
const N: u64 = 25;
const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const UDP_PORT: u16 = 7777;

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An outer IPv4 header, protocol 4, with the given IHL (in words), ID and flags/offset field.
fn outer(src: Ipv4Addr, ihl: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let hl = usize::from(ihl.max(5)) * 4;
    let mut h = vec![0u8; hl];
    h[0] = 0x40 | ihl;
    h[2..4].copy_from_slice(&((hl + payload.len()) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = 4;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&A.octets());
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// Inner UDP 10.244.2.0:5555 → `dst`:7777 carrying `marker`, built by etherparse.
fn inner_udp(dst: [u8; 4], marker: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ipv4([10, 244, 2, 0], dst, 64).udp(5555, UDP_PORT);
    let mut out = Vec::new();
    b.write(&mut out, marker).unwrap();
    out
}

fn refill_inner_checksum(p: &mut [u8]) {
    p[10] = 0;
    p[11] = 0;
    let hl = usize::from(p[0] & 0x0f) * 4;
    let c = csum(&p[..hl.min(p.len())]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The hostile packets, each with the vtepd counter it must land in (None: the kernel drops it).
fn hostile() -> Vec<(Vec<u8>, Option<&'static str>)> {
    let peer = Ipv4Addr::new(192, 0, 2, 2);
    let good = inner_udp([10, 244, 1, 0], b"must-not-arrive-0123456789abcdef");
    let mut v: Vec<(Vec<u8>, Option<&'static str>)> = Vec::new();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good.clone();
        f(&mut p);
        p
    };
    v.push((outer(Ipv4Addr::new(192, 0, 2, 99), 5, 1, 0, &good), Some("drop_rx_unknown_source")));
    v.push((outer(peer, 5, 2, 0, &with(&|p| { p[0] = 0x43; refill_inner_checksum(p) })), Some("drop_rx_inner_malformed")));
    v.push((outer(peer, 5, 3, 0, &with(&|p| { p[2] = 0x04; refill_inner_checksum(p) })), Some("drop_rx_inner_malformed")));
    v.push((outer(peer, 5, 4, 0, &with(&|p| { p[2] = 0; p[3] = 12; refill_inner_checksum(p) })), Some("drop_rx_inner_malformed")));
    v.push((outer(peer, 5, 5, 0, &good[..12]), Some("drop_rx_inner_truncated")));
    v.push((outer(peer, 5, 6, 0, &with(&|p| p[8] ^= 0x10)), Some("drop_rx_inner_bad_checksum")));
    v.push((outer(peer, 5, 7, 0, &inner_udp([10, 244, 9, 9], b"elsewhere")), Some("drop_rx_inner_not_ours")));
    v
}

/// Outer headers the sending kernel refuses to emit through a raw socket (it rewrites the total
/// length and rejects an IHL below 5), so they go out through a packet socket instead. The
/// receiving kernel drops them in ip_rcv before any raw socket: bad IHL and a total length below
/// the IHL count as InHdrErrors, a total length beyond the packet as InTruncatedPkts.
fn hostile_outer() -> Vec<Vec<u8>> {
    let peer = Ipv4Addr::new(192, 0, 2, 2);
    let good = inner_udp([10, 244, 1, 0], b"must-not-arrive-either");
    let ihl4 = outer(peer, 4, 8, 0, &good);
    let mut short_len = outer(peer, 5, 9, 0, &good);
    short_len[2..4].copy_from_slice(&16u16.to_be_bytes());
    let mut long_len = outer(peer, 5, 10, 0, &good);
    long_len[2..4].copy_from_slice(&1400u16.to_be_bytes());
    for p in [&mut short_len, &mut long_len] {
        p[10] = 0;
        p[11] = 0;
        let c = csum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    vec![ihl4, short_len, long_len]
}

/// Sends IPv4 packets as Ethernet frames to `dst_mac` out of `dev` (an AF_PACKET datagram socket
/// builds the Ethernet header), bypassing the IP layer's sanity checks. Runs in the caller's netns.
fn send_l2(dev: &str, dst_mac: [u8; 6], packets: &[Vec<u8>]) {
    let proto = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
    assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
    let name = std::ffi::CString::new(dev).unwrap();
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex > 0, "no device {dev}");
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&dst_mac);
    for p in packets {
        // SAFETY: `p` and `sll` are valid for the call; the lengths are theirs.
        let rc = unsafe {
            libc::sendto(
                fd,
                p.as_ptr().cast(),
                p.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, p.len() as isize, "AF_PACKET send: {}", std::io::Error::last_os_error());
    }
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
}

fn mac_of(ns: &Netns, dev: &str) -> [u8; 6] {
    let out = ns.ip(&["-br", "link", "show", "dev", dev]);
    let mac = out.split_whitespace().nth(2).expect("MAC in `ip -br link`");
    let v: Vec<u8> = mac.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// Fragmented outer packets whose inner UDP carries `marker`: complete pairs (the kernel
/// reassembles them and vtepd delivers the inner packet), lone first fragments (never complete)
/// and overlapping pairs (the kernel throws the whole datagram away).
fn fragments(id: u16, kind: &str) -> Vec<Vec<u8>> {
    let marker = format!("frag-{kind}-{id:05}-padding-to-make-it-longer-than-64-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    let inner = inner_udp([10, 244, 1, 0], marker.as_bytes());
    let peer = Ipv4Addr::new(192, 0, 2, 2);
    const MF: u16 = 0x2000;
    let first = outer(peer, 5, id, MF, &inner[..64]);
    match kind {
        "ok" => vec![first, outer(peer, 5, id, 8, &inner[64..])],
        "incomplete" => vec![first],
        _ => vec![first, outer(peer, 5, id, 4, &inner[32..])],
    }
}

/// The kernel's IP counters in `ns` that these tests move: from /proc/net/snmp (`Ip:`) and
/// /proc/net/netstat (`IpExt:`), by name.
fn kernel_counters(ns: &Netns) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for (file, section) in [("/proc/net/snmp", "Ip:"), ("/proc/net/netstat", "IpExt:")] {
        let text = ns.exec_ok("cat", &[file]);
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(section)).collect();
        for (name, value) in rows[0].split_whitespace().zip(rows[1].split_whitespace()).skip(1) {
            out.insert(name.to_string(), value.parse().unwrap_or(0));
        }
    }
    out
}

fn kernel_delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, name: &str) -> u64 {
    after[name] - before[name]
}

fn config(me: u8, peer: u8) -> String {
    routed_toml("ipip", &host_underlay_ip(me), &host_subnet(me), "", &[(&host_underlay_ip(peer), &host_subnet(peer))])
}

#[test]
fn ipip_hostile_input_is_dropped_and_counted() {
    let hosts = TwoHosts::new("iph");
    let dir = TempDir::new("iph");
    let start = |ns: &Netns, me: u8, peer: u8| {
        let path = dir.write(&format!("{me}.toml"), &config(me, peer));
        let route = host_subnet(peer);
        Vtepd::start_until(ns, &path, "ipip0 and peer route", || ns.has_link("ipip0") && ns.has_route(&route))
    };
    let vtepd_a = start(&hosts.a, 1, 2);
    let vtepd_b = start(&hosts.b, 2, 1);
    ping(&hosts.b, "10.244.2.0", "10.244.1.0");
    let kernel_before = kernel_counters(&hosts.a);
    let a_mac = mac_of(&hosts.a, UNDERLAY_DEV);

    // A UDP sink behind A's tunnel address: what vtepd delivers from the fragment tests lands here.
    let sink = spawn_in_netns(hosts.a.name(), || {
        let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 0), UDP_PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut got: HashMap<String, u64> = HashMap::new();
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut idle = 0;
        while Instant::now() < deadline && idle < 10 {
            match s.recv(&mut buf) {
                Ok(n) => {
                    idle = 0;
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let kind = text.split('-').take(2).collect::<Vec<_>>().join("-");
                    *got.entry(kind).or_default() += 1;
                }
                Err(_) => idle += 1,
            }
        }
        got
    });

    // Good traffic through the tunnel while the hostile packets arrive.
    let b_name = hosts.b.name().to_string();
    let pinger = std::thread::spawn(move || {
        run("ip", &["netns", "exec", &b_name, "ping", "-c", "40", "-i", "0.05", "-W", "2", "-I", "10.244.2.0", "10.244.1.0"])
    });

    let mut want: HashMap<&'static str, u64> = HashMap::new();
    let mut packets = Vec::new();
    let mut l2_packets = Vec::new();
    for i in 0..N as u16 {
        l2_packets.extend(hostile_outer());
        for (p, counter) in hostile() {
            if let Some(c) = counter {
                *want.entry(c).or_default() += 1;
            }
            packets.push(p);
        }
        // One ID range per kind: a shared ID would make fragments of different kinds reassemble.
        for (base, kind) in [(0x4000, "ok"), (0x5000, "incomplete"), (0x6000, "overlap")] {
            packets.extend(fragments(base + i, kind));
        }
    }
    in_netns(hosts.b.name(), move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::from(255))).unwrap();
        let to = socket2::SockAddr::from(SocketAddrV4::new(A, 0));
        for p in packets {
            s.send_to(&p, &to).unwrap_or_else(|e| panic!("send {} bytes: {e}", p.len()));
            std::thread::sleep(Duration::from_micros(200));
        }
        send_l2(UNDERLAY_DEV, a_mac, &l2_packets);
    });

    let ping_out = pinger.join().unwrap();
    let received = sink.join().unwrap();
    let kernel_after = kernel_counters(&hosts.a);
    let kd = |name: &str| kernel_delta(&kernel_before, &kernel_after, name);
    let counters = vtepd_a.stop();
    vtepd_b.stop();
    eprintln!(
        "A counters:\n{}\nUDP sink: {received:?}\nkernel: InHdrErrors +{} InTruncatedPkts +{} ReasmOKs +{} ReasmOverlaps +{}",
        show_counters(&counters),
        kd("InHdrErrors"),
        kd("InTruncatedPkts"),
        kd("ReasmOKs"),
        kd("ReasmOverlaps")
    );

    assert!(
        ping_out.status.success() && String::from_utf8_lossy(&ping_out.stdout).contains(" 0% packet loss"),
        "good traffic suffered:\n{}",
        String::from_utf8_lossy(&ping_out.stdout)
    );
    for (counter, n) in &want {
        assert_eq!(counters[*counter], *n, "{counter}\n{}", show_counters(&counters));
    }
    for quiet in ["drop_rx_outer_malformed", "drop_rx_outer_fragment", "drop_rx_not_ipip", "drop_rx_tap_write"] {
        assert_eq!(counters[quiet], 0, "{quiet}: the kernel should have handled these\n{}", show_counters(&counters));
    }
    // The kernel's own accounting of what never reached vtepd (other traffic may add to it).
    assert!(kd("InHdrErrors") >= 2 * N, "bad outer IHL / short total length not counted by the kernel");
    assert!(kd("InTruncatedPkts") >= N, "outer total length beyond the packet not counted by the kernel");
    assert!(kd("ReasmOKs") >= N, "complete fragment pairs not reassembled");
    assert!(kd("ReasmOverlaps") >= N, "overlapping fragments not refused");
    assert_eq!(received.get("frag-ok").copied(), Some(N), "reassembled fragments not all delivered: {received:?}");
    assert_eq!(received.len(), 1, "incomplete or overlapping fragments were delivered: {received:?}");
}

/// RFC 6040 at the tunnel's egress: a congestion mark a router put on the outer header reaches the
/// inner packet (checked on A's TUN device), ECT(1) on the outer header turns an inner ECT(0) into
/// ECT(1), an unmarked outer header changes nothing, and a mark over a packet that is not
/// ECN-capable is dropped and counted.
#[test]
fn ipip_congestion_marks_reach_the_inner_packet() {
    let hosts = TwoHosts::new("ipecn");
    let dir = TempDir::new("ipecn");
    let path = dir.write("1.toml", &config(1, 2));
    let route = host_subnet(2);
    let vtepd = Vtepd::start_until(&hosts.a, &path, "ipip0 and peer route", || hosts.a.has_link("ipip0") && hosts.a.has_route(&route));
    let cap = Capture::start(&hosts.a, "ipip0", &dir, "ecn.pcap", &format!("udp dst port {UDP_PORT}"));
    let mut packets = Vec::new();
    for (i, (inner_ecn, outer_ecn, _)) in ecn::EGRESS_CASES.iter().enumerate() {
        let mut inner = Vec::new();
        let sport = ecn::FIRST_PORT + i as u16;
        etherparse::PacketBuilder::ipv4([10, 244, 2, 0], [10, 244, 1, 0], 64).udp(sport, UDP_PORT).write(&mut inner, b"ecn").unwrap();
        inner[1] = 0x28 | inner_ecn;
        refill_inner_checksum(&mut inner);
        let mut p = outer(Ipv4Addr::new(192, 0, 2, 2), 5, 0x100 + i as u16, 0, &inner);
        p[1] = *outer_ecn;
        refill_inner_checksum(&mut p);
        packets.push(p);
    }
    in_netns(hosts.b.name(), move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::from(255))).unwrap();
        let to = socket2::SockAddr::from(SocketAddrV4::new(A, 0));
        for _ in 0..N {
            for p in &packets {
                s.send_to(p, &to).unwrap_or_else(|e| panic!("send: {e}"));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    wait_until("the ECN-capable packets delivered", || ecn::delivered(&vtepd) >= 4 * N);
    cap.wait_for_packets(4 * N as usize);
    let lines = tshark_fields(&cap.finish(), &["udp.srcport", "ip.dsfield.ecn"]);
    let counters = vtepd.stop();
    ecn::assert_egress(&lines, N);
    assert_eq!(counters["drop_rx_ecn_not_ect"], N, "{}", show_counters(&counters));
}
