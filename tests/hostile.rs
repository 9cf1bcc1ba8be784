//! Hostile traffic on the underlay while a 50 MB transfer runs through the tunnel: vtepd forwards
//! every byte of the transfer, counts every bad datagram under its own reason, does not grow, and
//! keeps its neighbour entries and routes exactly as configured.
//!
//! A third namespace C ("the attacker", 192.0.2.99) sits on the underlay segment: B's end of the
//! underlay veth is a port of a bridge, and C hangs off the same bridge. C writes whole Ethernet
//! frames with an AF_PACKET socket, so it can forge anything — outer IPv4/UDP headers, source
//! addresses (including the peer's, 192.0.2.2), fragments — to A's VXLAN port. The frames are built
//! here by hand and with etherparse, independently of vtepd's own wire code.
//!
//! What each class must do, and how exactly it can be checked:
//! - Classes that reach vtepd's socket are counted by vtepd under exactly one reason, and the count is
//!   exact: nothing on the path (veth, bridge, UDP) drops a well-formed datagram unless a queue
//!   overflows, and every queue that could overflow is measured (device drop statistics, UDP
//!   RcvbufErrors). Only if one of them moved is the check relaxed to the range it allows.
//! - Classes with a broken outer IPv4/UDP header never reach vtepd: A's kernel drops them first. Each
//!   carries a VXLAN header with a wrong VNI, so one that leaked through would break the exact
//!   `drop_rx_wrong_vni` count; and the kernel's own counter for the fault must have grown by at least
//!   as many (at least, because the same counter also counts other faults of A's namespace).
//! - Well-formed frames that come from the peer's address are delivered: VXLAN has no authentication,
//!   and a spoofed source cannot be told from the real peer (README, Security). What must hold then is
//!   that vtepd learns nothing from them: ARP replies and requests trying to re-point 10.244.2.0 (B) or
//!   10.244.1.0 (A) at the attacker's MAC leave the PERMANENT neighbour entries and the routes exactly as
//!   they were, and vtepd's own ARP answers on the TAP still carry the configured MACs.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::thread;
use std::time::Duration;

use common::*;

const MB: usize = 1024 * 1024;
const VXLAN_PORT: u16 = 8472;
const VNI: u32 = 1;
/// The VNI carried by packets the kernel must drop: if one leaks to vtepd it shows as a wrong VNI.
const LEAK_VNI: u32 = 0x000bad;

const A_UL: [u8; 4] = [192, 0, 2, 1];
const B_UL: [u8; 4] = [192, 0, 2, 2];
const C_UL: [u8; 4] = [192, 0, 2, 99];
/// On the segment, assigned to nobody.
const UNASSIGNED: [u8; 4] = [192, 0, 2, 77];
/// Off the segment entirely.
const OFFNET: [u8; 4] = [198, 51, 100, 7];
const A_VTEP: [u8; 4] = [10, 244, 1, 0];
const B_VTEP: [u8; 4] = [10, 244, 2, 0];
const ATTACKER_MAC: [u8; 6] = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];
/// Rounds of the flood; every round sends each class once or a few times (about 110 frames).
const ROUNDS: usize = 60;
/// Bound on vtepd's VmRSS growth across the flood.
const RSS_GROWTH_KIB: u64 = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Class {
    // Reach vtepd's socket and are dropped by it.
    SourceUnassigned,
    SourceAttacker,
    SourceOffnet,
    Truncated,
    UdpLengthTrims,
    InnerRunt,
    NoIFlag,
    ReservedBits,
    WrongVni,
    NotForUs,
    JumboNotForUs,
    JumboWrongVni,
    FragmentedNoIFlag,
    // Reach vtepd's socket, valid, from the peer's (spoofed) address: delivered to the TAP.
    ArpReplyPoison,
    ArpGratuitous,
    ArpRequestPoison,
    JumboToUs,
    InnerTcpBadChecksum,
    // Broken outer headers: A's kernel drops them before any socket.
    UdpBadChecksum,
    UdpLengthBeyondPacket,
    UdpLengthBelowHeader,
    UdpHeaderCut,
    IpBadChecksum,
    IpIhlBelow5,
    IpTotalLengthBeyondFrame,
    FragmentIncomplete,
    FragmentOverlap,
}

/// Where a class must show up.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// vtepd's drop counter, exactly once per datagram.
    Vtepd(&'static str),
    /// Handed to A's kernel through the TAP.
    Delivered,
    /// A's kernel drops it; its MIB counter (`Proto.Name`) grows by at least one per frame.
    Kernel(&'static str),
}

impl Class {
    const ALL: [Class; 27] = [
        Class::SourceUnassigned,
        Class::SourceAttacker,
        Class::SourceOffnet,
        Class::Truncated,
        Class::UdpLengthTrims,
        Class::InnerRunt,
        Class::NoIFlag,
        Class::ReservedBits,
        Class::WrongVni,
        Class::NotForUs,
        Class::JumboNotForUs,
        Class::JumboWrongVni,
        Class::FragmentedNoIFlag,
        Class::ArpReplyPoison,
        Class::ArpGratuitous,
        Class::ArpRequestPoison,
        Class::JumboToUs,
        Class::InnerTcpBadChecksum,
        Class::UdpBadChecksum,
        Class::UdpLengthBeyondPacket,
        Class::UdpLengthBelowHeader,
        Class::UdpHeaderCut,
        Class::IpBadChecksum,
        Class::IpIhlBelow5,
        Class::IpTotalLengthBeyondFrame,
        Class::FragmentIncomplete,
        Class::FragmentOverlap,
    ];

    fn expect(self) -> Expect {
        use Class::*;
        match self {
            SourceUnassigned | SourceAttacker | SourceOffnet => {
                Expect::Vtepd("drop_rx_unknown_source")
            }
            // The kernel trims the datagram to the UDP length (shorter than a VXLAN header) first.
            Truncated | UdpLengthTrims => Expect::Vtepd("drop_rx_truncated"),
            InnerRunt => Expect::Vtepd("drop_rx_inner_runt"),
            NoIFlag | FragmentedNoIFlag => Expect::Vtepd("drop_rx_no_i_flag"),
            ReservedBits => Expect::Vtepd("drop_rx_reserved_bits"),
            WrongVni | JumboWrongVni => Expect::Vtepd("drop_rx_wrong_vni"),
            NotForUs | JumboNotForUs => Expect::Vtepd("drop_rx_not_for_us"),
            ArpReplyPoison | ArpGratuitous | ArpRequestPoison | JumboToUs | InnerTcpBadChecksum => {
                Expect::Delivered
            }
            // Also counted in Udp.InErrors; checked under the more specific name.
            UdpBadChecksum => Expect::Kernel("Udp.InCsumErrors"),
            // Short packet: UDP length beyond the IP payload, or below its own header.
            UdpLengthBeyondPacket | UdpLengthBelowHeader | UdpHeaderCut => {
                Expect::Kernel("Udp.InErrors")
            }
            IpBadChecksum | IpIhlBelow5 => Expect::Kernel("Ip.InHdrErrors"),
            IpTotalLengthBeyondFrame => Expect::Kernel("IpExt.InTruncatedPkts"),
            // Held for reassembly (incomplete: until ipfrag_time; overlapping: the queue is
            // discarded), never handed to a socket.
            FragmentIncomplete | FragmentOverlap => Expect::Kernel("Ip.ReasmReqds"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Building frames

fn csum(data: &[u8], mut acc: u32) -> u16 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    u32::from(csum(&p, 0))
}

/// An outer IPv4 header's fields; defaults make a valid, unfragmented UDP packet.
#[derive(Clone, Copy)]
struct Ip {
    src: [u8; 4],
    id: u16,
    /// Flags and fragment offset (in 8-byte units).
    frag: u16,
    proto: u8,
    ihl: u8,
    total_len: Option<u16>,
    bad_checksum: bool,
}

impl Ip {
    fn udp(src: [u8; 4], id: u16) -> Ip {
        Ip {
            src,
            id,
            frag: 0,
            proto: 17,
            ihl: 5,
            total_len: None,
            bad_checksum: false,
        }
    }

    fn packet(self, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 20];
        v[0] = 0x40 | self.ihl;
        let total = self.total_len.unwrap_or((20 + payload.len()) as u16);
        v[2..4].copy_from_slice(&total.to_be_bytes());
        v[4..6].copy_from_slice(&self.id.to_be_bytes());
        v[6..8].copy_from_slice(&self.frag.to_be_bytes());
        v[8] = 64;
        v[9] = self.proto;
        v[12..16].copy_from_slice(&self.src);
        v[16..20].copy_from_slice(&A_UL);
        let mut c = !csum(&v, 0);
        if self.bad_checksum {
            c ^= 0x0101;
        }
        v[10..12].copy_from_slice(&c.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }
}

/// A UDP datagram (header + payload) from `src:sport` to A's VXLAN port, with a correct checksum
/// over the first `len` bytes (the header's length field; default: all of it).
fn udp(src: [u8; 4], sport: u16, payload: &[u8], len: Option<usize>) -> Vec<u8> {
    let len_field = len.unwrap_or(8 + payload.len());
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&VXLAN_PORT.to_be_bytes());
    d.extend_from_slice(&(len_field as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let covered = len_field.min(d.len());
    let mut c = !csum(&d[..covered], pseudo(src, A_UL, 17, len_field));
    if c == 0 {
        c = 0xffff;
    }
    d[6..8].copy_from_slice(&c.to_be_bytes());
    d
}

fn vxlan(flags: u8, reserved1: [u8; 3], vni: u32, reserved2: u8, inner: &[u8]) -> Vec<u8> {
    [&vxlan_header(flags, reserved1, vni, reserved2)[..], inner].concat()
}

/// The receive drops that bad input causes: all but drop_rx_tap_write (if the TAP ever refused a
/// frame, which would be worth a look but is not a hostile-input fault).
fn input_drops() -> impl Iterator<Item = &'static str> {
    ALL_COUNTERS.iter().copied().filter(|n| n.starts_with("drop_rx_") && *n != "drop_rx_tap_write")
}

fn good_vxlan(inner: &[u8]) -> Vec<u8> {
    vxlan(0x08, [0; 3], VNI, 0, inner)
}

/// Inner Ethernet (B's VTEP MAC → `dst`) / IPv4 10.244.2.0 → 10.244.1.0 / ICMP echo, `payload` bytes.
fn inner_icmp(dst: [u8; 6], seq: u16, payload: usize) -> Vec<u8> {
    let data = vec![0xab; payload];
    let b = etherparse::PacketBuilder::ethernet2(parse_mac(&host_mac(2)), dst)
        .ipv4(B_VTEP, A_VTEP, 64)
        .icmpv4_echo_request(0x4854, seq);
    let mut out = Vec::with_capacity(b.size(data.len()));
    b.write(&mut out, &data).unwrap();
    out
}

/// Inner TCP segment 10.244.2.0 → 10.244.1.0 with a wrong checksum, which is neither the correct one
/// nor the bare pseudo-header sum (which vtepd would, rightly, pass on as "checksum still to do").
fn inner_tcp_bad_checksum(seq: u32) -> Vec<u8> {
    let data = [0x5au8; 100];
    let b = etherparse::PacketBuilder::ethernet2(parse_mac(&host_mac(2)), parse_mac(&host_mac(1)))
        .ipv4(B_VTEP, A_VTEP, 64)
        .tcp(40_000, 5999, seq, 1024)
        .ack(1);
    let mut f = Vec::with_capacity(b.size(data.len()));
    b.write(&mut f, &data).unwrap();
    let at = 14 + 20 + 16;
    let good = u16::from_be_bytes([f[at], f[at + 1]]);
    let partial = csum(&[], pseudo(B_VTEP, A_VTEP, 6, f.len() - 34));
    let mut bad = good ^ 0x0f0f;
    if bad == partial {
        bad ^= 0x0001;
    }
    f[at..at + 2].copy_from_slice(&bad.to_be_bytes());
    f
}

/// An inner ARP frame from the attacker's MAC.
fn inner_arp(eth_dst: [u8; 6], op: u16, spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = eth_dst.to_vec();
    f.extend_from_slice(&ATTACKER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&ATTACKER_MAC);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f
}

/// Builds the attacker's frames: Ethernet to A's underlay MAC around forged IPv4.
struct Forge {
    a_mac: [u8; 6],
    c_mac: [u8; 6],
    id: u16,
    sport: u16,
}

impl Forge {
    fn eth(&self, ip: Vec<u8>) -> Vec<u8> {
        let mut f = self.a_mac.to_vec();
        f.extend_from_slice(&self.c_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        f
    }

    fn next_id(&mut self) -> u16 {
        self.id = self.id.wrapping_add(1).max(1);
        self.id
    }

    /// A UDP datagram from B carrying [`small_leak`], its UDP length field forced to `len` if given.
    fn leak_datagram(&mut self, len: Option<usize>) -> Vec<u8> {
        let sport = self.next_sport();
        udp(B_UL, sport, &small_leak(), len)
    }

    /// Source ports vary so that SO_REUSEPORT spreads the flood over all of vtepd's workers.
    fn next_sport(&mut self) -> u16 {
        self.sport = if self.sport >= 60_999 {
            41_000
        } else {
            self.sport + 7
        };
        self.sport
    }

    /// One datagram carrying `vx` (a VXLAN header and what follows) from `src`, fragmented as a
    /// sender on a 1500-byte underlay would if it does not fit.
    fn datagram(&mut self, src: [u8; 4], vx: &[u8]) -> Vec<Vec<u8>> {
        let sport = self.next_sport();
        let d = udp(src, sport, vx, None);
        self.fragments(src, &d, d.len())
    }

    /// `l4` split into fragments of at most 1480 bytes, of which only the first `upto` bytes are sent.
    fn fragments(&mut self, src: [u8; 4], l4: &[u8], upto: usize) -> Vec<Vec<u8>> {
        let id = self.next_id();
        let mut out = Vec::new();
        for (i, chunk) in l4.chunks(1480).enumerate() {
            let off = i * 1480;
            if off >= upto {
                break;
            }
            let more = if off + chunk.len() < l4.len() {
                0x2000
            } else {
                0
            };
            let ip = Ip {
                frag: more | (off / 8) as u16,
                ..Ip::udp(src, id)
            };
            out.push(self.eth(ip.packet(chunk)));
        }
        out
    }

    /// One unfragmented packet from the peer's address carrying `l4`, its IPv4 header changed by `tweak`.
    fn one_from_peer(&mut self, tweak: impl FnOnce(Ip) -> Ip, l4: &[u8]) -> Vec<Vec<u8>> {
        let ip = tweak(Ip::udp(B_UL, self.next_id()));
        vec![self.eth(ip.packet(l4))]
    }

    /// The frames of one instance (`i`) of `class`. Most classes are one datagram in one frame.
    fn build(&mut self, class: Class, i: usize) -> Vec<Vec<u8>> {
        use Class::*;
        let a_vtep_mac = parse_mac(&host_mac(1));
        let seq = i as u16;
        let to_a = || inner_icmp(a_vtep_mac, seq, 32);
        match class {
            SourceUnassigned => self.datagram(UNASSIGNED, &good_vxlan(&to_a())),
            SourceAttacker => {
                // What a poisoner would send: B's VTEP IP at the attacker's MAC.
                let arp = inner_arp(a_vtep_mac, 2, B_VTEP, a_vtep_mac, A_VTEP);
                self.datagram(C_UL, &good_vxlan(&arp))
            }
            SourceOffnet => self.datagram(OFFNET, &good_vxlan(&to_a())),
            // 1 to 7 bytes. The empty datagram has a test of its own below (a known bug).
            Truncated => self.datagram(B_UL, &good_vxlan(&[])[..1 + i % 7]),
            UdpLengthTrims => {
                let sport = self.next_sport();
                let d = udp(B_UL, sport, &good_vxlan(&to_a()), Some(8 + 1 + i % 7));
                self.one_from_peer(|ip| ip, &d)
            }
            InnerRunt => self.datagram(B_UL, &good_vxlan(&to_a()[..i % 14])),
            NoIFlag => {
                let flags = [0x00, 0x80, 0x04, 0x40, 0xf7][i % 5];
                self.datagram(B_UL, &vxlan(flags, [0; 3], VNI, 0, &to_a()))
            }
            ReservedBits => {
                let (flags, r1, r2) = [
                    (0x0c, [0, 0, 0], 0),
                    (0x88, [0, 0, 0], 0),
                    (0xff, [0, 0, 0], 0),
                    (0x08, [1, 0, 0], 0),
                    (0x08, [0, 0x80, 0], 0),
                    (0x08, [0, 0, 1], 0),
                    (0x08, [0, 0, 0], 1),
                    (0x08, [0xff; 3], 0xff),
                ][i % 8];
                self.datagram(B_UL, &vxlan(flags, r1, VNI, r2, &to_a()))
            }
            WrongVni => {
                let vni = [0, 2, 0x000100, 0xffffff, 0x800001][i % 5];
                self.datagram(B_UL, &vxlan(0x08, [0; 3], vni, 0, &to_a()))
            }
            NotForUs => {
                let dst = [
                    parse_mac(&host_mac(2)),
                    parse_mac("02:00:00:00:00:99"),
                    [0; 6],
                    self.a_mac,
                    ATTACKER_MAC,
                ][i % 5];
                self.datagram(B_UL, &good_vxlan(&inner_icmp(dst, seq, 32)))
            }
            JumboNotForUs => self.datagram(B_UL, &good_vxlan(&inner_icmp(ATTACKER_MAC, seq, 8150))),
            JumboWrongVni => self.datagram(
                B_UL,
                &vxlan(0x08, [0; 3], 7, 0, &inner_icmp(a_vtep_mac, seq, 8150)),
            ),
            FragmentedNoIFlag => self.datagram(
                B_UL,
                &vxlan(0x00, [0; 3], VNI, 0, &inner_icmp(a_vtep_mac, seq, 2900)),
            ),
            ArpReplyPoison => {
                // Re-point B's VTEP IP, or A's own, at the attacker.
                let spa = if i.is_multiple_of(2) { B_VTEP } else { A_VTEP };
                self.datagram(
                    B_UL,
                    &good_vxlan(&inner_arp(a_vtep_mac, 2, spa, a_vtep_mac, A_VTEP)),
                )
            }
            ArpGratuitous => {
                let ip = if i.is_multiple_of(2) { B_VTEP } else { A_VTEP };
                self.datagram(
                    B_UL,
                    &good_vxlan(&inner_arp([0xff; 6], 2, ip, [0xff; 6], ip)),
                )
            }
            ArpRequestPoison => {
                // "B's VTEP IP is at the attacker, who has A's?" — the kernel answers these
                // (to the attacker's MAC, which vtepd then refuses as drop_tx_arp_other); and
                // "who has B's?" in the same guise, which the kernel ignores.
                let tpa = if i.is_multiple_of(2) { A_VTEP } else { B_VTEP };
                self.datagram(
                    B_UL,
                    &good_vxlan(&inner_arp([0xff; 6], 1, B_VTEP, [0; 6], tpa)),
                )
            }
            JumboToUs => {
                // 8 KB to our MAC with an ethertype nobody handles (IEEE local experimental).
                let mut f = a_vtep_mac.to_vec();
                f.extend_from_slice(&ATTACKER_MAC);
                f.extend_from_slice(&[0x88, 0xb5]);
                f.resize(8192, 0x77);
                self.datagram(B_UL, &good_vxlan(&f))
            }
            InnerTcpBadChecksum => {
                self.datagram(B_UL, &good_vxlan(&inner_tcp_bad_checksum(i as u32 * 100)))
            }
            UdpBadChecksum => {
                let mut d = self.leak_datagram(None);
                // Wrong, and not 0 (which would mean "no checksum" and be accepted).
                let bad = match u16::from_be_bytes([d[6], d[7]]) ^ 0x5a5a {
                    0 => 0x0001,
                    c => c,
                };
                d[6..8].copy_from_slice(&bad.to_be_bytes());
                self.one_from_peer(|ip| ip, &d)
            }
            UdpLengthBeyondPacket => {
                // 40 bytes more than the datagram has.
                let d = self.leak_datagram(Some(8 + small_leak().len() + 40));
                self.one_from_peer(|ip| ip, &d)
            }
            UdpLengthBelowHeader => {
                let d = self.leak_datagram(Some(4));
                self.one_from_peer(|ip| ip, &d)
            }
            UdpHeaderCut => {
                let d = self.leak_datagram(None);
                self.one_from_peer(|ip| ip, &d[..4])
            }
            IpBadChecksum => {
                let d = self.leak_datagram(None);
                self.one_from_peer(
                    |ip| Ip {
                        bad_checksum: true,
                        ..ip
                    },
                    &d,
                )
            }
            IpIhlBelow5 => {
                let d = self.leak_datagram(None);
                self.one_from_peer(|ip| Ip { ihl: 4, ..ip }, &d)
            }
            IpTotalLengthBeyondFrame => {
                let d = self.leak_datagram(None);
                let total = (20 + d.len() + 100) as u16;
                self.one_from_peer(
                    |ip| Ip {
                        total_len: Some(total),
                        ..ip
                    },
                    &d,
                )
            }
            FragmentIncomplete => {
                // The first fragment of a 3 KB datagram, or the last one; the rest never comes.
                let d = udp(B_UL, self.next_sport(), &leak(seq, 2900), None);
                let mut frags = self.fragments(B_UL, &d, d.len());
                if i.is_multiple_of(2) {
                    frags.truncate(1);
                } else {
                    frags.drain(..frags.len() - 1);
                }
                frags
            }
            FragmentOverlap => {
                // Bytes 0..800 and 400..1200 of one datagram: RFC 5722-style, the kernel discards
                // the whole reassembly rather than pick one version of bytes 400..800.
                let d = udp(B_UL, self.next_sport(), &leak(seq, 1200), None);
                let id = self.next_id();
                let first = Ip {
                    frag: 0x2000,
                    ..Ip::udp(B_UL, id)
                }
                .packet(&d[..800]);
                let second = Ip {
                    frag: 400 / 8,
                    ..Ip::udp(B_UL, id)
                }
                .packet(&d[400..]);
                vec![self.eth(first), self.eth(second)]
            }
        }
    }
}

/// The payload of packets A's kernel must drop: a VXLAN datagram to A's VTEP that vtepd would
/// count as drop_rx_wrong_vni, so a leak shows.
fn leak(seq: u16, icmp_payload: usize) -> Vec<u8> {
    vxlan(0x08, [0; 3], LEAK_VNI, 0, &inner_icmp(parse_mac(&host_mac(1)), seq, icmp_payload))
}

/// The [`leak`] that fits one datagram, for the classes that break the outer headers.
fn small_leak() -> Vec<u8> {
    leak(0, 32)
}

/// How many instances of a class one round sends.
fn per_round(class: Class) -> usize {
    use Class::*;
    match class {
        Truncated => 7,
        InnerRunt => 14,
        ReservedBits => 8,
        NoIFlag | WrongVni | NotForUs => 5,
        ArpReplyPoison | ArpRequestPoison | InnerTcpBadChecksum => 4,
        SourceUnassigned | SourceAttacker | SourceOffnet | UdpBadChecksum | ArpGratuitous => 2,
        UdpLengthTrims
        | UdpLengthBeyondPacket
        | UdpLengthBelowHeader
        | UdpHeaderCut
        | IpBadChecksum
        | IpIhlBelow5
        | IpTotalLengthBeyondFrame => 2,
        JumboNotForUs | JumboWrongVni | FragmentedNoIFlag | JumboToUs | FragmentIncomplete
        | FragmentOverlap => 1,
    }
}

#[derive(Default, Debug)]
struct Sent {
    datagrams: HashMap<Class, u64>,
    frames: HashMap<Class, u64>,
}

/// Sends the whole flood from C; returns what was sent per class.
fn flood(c: &Netns, a_mac: [u8; 6], c_mac: [u8; 6]) -> Sent {
    in_netns(c.name(), move || {
        let sock = PacketSocket::open(UNDERLAY_DEV, 0);
        let mut forge = Forge {
            a_mac,
            c_mac,
            id: 0,
            sport: 41_000,
        };
        let mut sent = Sent::default();
        let mut burst = 0u64;
        for round in 0..ROUNDS {
            for class in Class::ALL {
                for k in 0..per_round(class) {
                    let frames = forge.build(class, round * per_round(class) + k);
                    for f in &frames {
                        sock.send(f, a_mac);
                        burst += 1;
                        // Paced in bursts of 16 frames: the point is many kinds of bad input
                        // interleaved with the transfer, not overflowing queues (which would
                        // make the counts inexact, and is not vtepd's to count).
                        if burst.is_multiple_of(16) {
                            thread::sleep(Duration::from_millis(2));
                        }
                    }
                    *sent.frames.entry(class).or_default() += frames.len() as u64;
                    *sent.datagrams.entry(class).or_default() += 1;
                }
            }
        }
        sent
    })
}

/// Puts namespace C on the underlay segment: B's underlay veth end becomes a port of bridge br0,
/// which takes over B's address and MAC (so A's neighbour entry for B stays right); C's veth is
/// another port. C gets 192.0.2.99.
fn attach_attacker(hosts: &TwoHosts) -> Netns {
    let (a, b) = (&hosts.a, &hosts.b);
    let c = Netns::new("hostc");
    // A bridge with br_netfilter's call-iptables on (the default in a new namespace) validates IPv4
    // headers itself and would drop the malformed frames before they reach A. The segment must be a
    // plain wire. (If br_netfilter is absent the key does not exist and nothing needs turning off.)
    for key in [
        "net.bridge.bridge-nf-call-iptables=0",
        "net.bridge.bridge-nf-call-arptables=0",
    ] {
        let _ = b.exec("sysctl", &["-q", "-w", key]);
    }
    let b_mac = link_mac(b, UNDERLAY_DEV);
    b.ip(&["addr", "del", "192.0.2.2/24", "dev", UNDERLAY_DEV]);
    b.ip(&["link", "add", "br0", "type", "bridge"]);
    b.ip(&["link", "set", "br0", "address", &fmt_mac(b_mac)]);
    b.ip(&["link", "set", UNDERLAY_DEV, "master", "br0"]);
    veth(b, "atk0", &c, UNDERLAY_DEV);
    b.ip(&["link", "set", "atk0", "master", "br0"]);
    b.addr("br0", "192.0.2.2/24");
    c.addr(UNDERLAY_DEV, "192.0.2.99/24");
    // Spoofed sources must reach vtepd, which is what is under test here: no reverse-path filter
    // on A (0 is the default in a new namespace; set so that a host default cannot change it).
    a.sysctl("net.ipv4.conf.all.rp_filter=0");
    a.sysctl(&format!("net.ipv4.conf.{UNDERLAY_DEV}.rp_filter=0"));
    for (ns, dst) in [(a, "192.0.2.2"), (a, "192.0.2.99"), (&c, "192.0.2.1")] {
        wait_until(&format!("underlay ping {} -> {dst}", ns.name()), || {
            ns.exec("ping", &["-c", "1", "-W", "1", dst])
                .status
                .success()
        });
    }
    c
}

/// Every device statistic along the attacker's path that counts frames a queue dropped.
fn path_drops(hosts: &TwoHosts, c: &Netns) -> u64 {
    let mut n = 0;
    for (ns, dev) in [
        (c, UNDERLAY_DEV),
        (&hosts.b, "atk0"),
        (&hosts.b, "br0"),
        (&hosts.b, UNDERLAY_DEV),
        (&hosts.a, UNDERLAY_DEV),
    ] {
        n += link_stat(ns, dev, "tx_dropped") + link_stat(ns, dev, "rx_dropped");
    }
    n
}

#[test]
fn hostile_flood_during_transfer() {
    let _heavy = heavy_lock();
    let hosts = TwoHosts::new("host");
    let c = attach_attacker(&hosts);
    let dir = TempDir::new("host");
    let cfg_a = NodeCfg::host(1, &[2]);
    let cfg_b = NodeCfg::host(2, &[1]);
    let mut vtepd_a = Vtepd::start(&hosts.a, &dir.write("a.toml", &cfg_a.to_toml()), &cfg_a);
    let vtepd_b = Vtepd::start(&hosts.b, &dir.write("b.toml", &cfg_b.to_toml()), &cfg_b);
    hosts.ping_both_ways();

    let a_vtep = Ipv4Addr::from(A_VTEP);
    let b_vtep = Ipv4Addr::from(B_VTEP);
    let neigh_before = permanent_neighbours(&hosts.a, "vtep0");
    let routes_before = routes_via(&hosts.a, "vtep0");
    assert!(
        has_permanent_neigh(&hosts.a, "vtep0", "10.244.2.0", &host_mac(2)),
        "no PERMANENT neighbour 10.244.2.0 -> B's MAC to begin with:\n{neigh_before:#?}"
    );
    assert_eq!(
        arp_ask_tap(&hosts.a, "vtep0", a_vtep, b_vtep),
        Some(parse_mac(&host_mac(2))),
        "vtepd's ARP answer for 10.244.2.0 before the flood"
    );

    // The transfer is paced so that it is busy while the flood runs, and its last megabyte is held
    // until the flood is over: the connection is open across all of it however the machine is loaded.
    let nbytes = BIG_TRANSFER;
    let plan = TransferPlan {
        nbytes,
        rate: Some(12 * MB as u64),
        hold: MB,
    };
    let transfer = Transfer::start(&hosts.a, a_vtep, &hosts.b, b_vtep, 5201, plan);
    transfer.wait_sent(5 * MB);

    let rss_before = vtepd_a.rss_kib();
    let mibs_before = kernel_mibs(&hosts.a);
    let drops_before = path_drops(&hosts, &c);
    // A frame with an ethertype no protocol takes is counted by the core as rx_dropped (rx_nohandler
    // only on devices that deliver exactly, such as bond slaves); read both.
    let unhandled = |h: &TwoHosts| {
        link_stat(&h.a, "vtep0", "rx_dropped") + link_stat(&h.a, "vtep0", "rx_nohandler")
    };
    let nohandler_before = unhandled(&hosts);
    let a_mac = link_mac(&hosts.a, UNDERLAY_DEV);
    let c_mac = link_mac(&c, UNDERLAY_DEV);
    let sent = flood(&c, a_mac, c_mac);
    let sent_at_flood_end = transfer.sent();
    transfer.finish(nbytes);
    eprintln!(
        "flood over with {} of {nbytes} transfer bytes sent",
        sent_at_flood_end
    );

    // Everything still works, and nothing was learned.
    hosts.ping_both_ways();
    // Give the last datagrams time to be read before the counters are taken at exit.
    thread::sleep(Duration::from_millis(300));
    let rss_after = vtepd_a.rss_kib();
    let mibs_after = kernel_mibs(&hosts.a);
    let path_loss = path_drops(&hosts, &c) - drops_before;
    let nohandler = unhandled(&hosts) - nohandler_before;
    let neigh_after = permanent_neighbours(&hosts.a, "vtep0");
    let routes_after = routes_via(&hosts.a, "vtep0");
    let all_neigh = hosts.a.ip(&["neigh", "show", "dev", "vtep0"]);
    let arp_after = arp_ask_tap(&hosts.a, "vtep0", a_vtep, b_vtep);
    assert!(
        vtepd_a.is_running(),
        "vtepd A died during the flood; log:\n{}",
        vtepd_a.stderr()
    );

    let counters_a = vtepd_a.stop();
    let counters_b = vtepd_b.stop();
    let mib = |k: &str| {
        mibs_after.get(k).copied().unwrap_or(0) - mibs_before.get(k).copied().unwrap_or(0)
    };
    let rcvbuf_errors = mib("Udp.RcvbufErrors");
    let kernel_loss = path_loss + rcvbuf_errors;
    let total_frames: u64 = sent.frames.values().sum();
    eprintln!(
        "sent {total_frames} frames ({} datagrams) in {} classes; RSS {rss_before} -> {rss_after} KiB; \
         path drops {path_loss}, UDP RcvbufErrors {rcvbuf_errors}, vtep0 rx_dropped/rx_nohandler +{nohandler}; \
         A's reassembly: ReasmReqds +{} ReasmOKs +{} ReasmFails +{}\n\
         neighbours on vtep0 after:\n{all_neigh}\nA counters:\n{}\nB counters:\n{}",
        sent.datagrams.values().sum::<u64>(),
        Class::ALL.len(),
        mib("Ip.ReasmReqds"),
        mib("Ip.ReasmOKs"),
        mib("Ip.ReasmFails"),
        show_counters(&counters_a),
        show_counters(&counters_b)
    );

    let mut failures = Vec::new();

    // vtepd's counters: the sum over the classes that map to each.
    let mut want: HashMap<&str, u64> = HashMap::new();
    let mut from: HashMap<&str, Vec<String>> = HashMap::new();
    let mut delivered = 0;
    for class in Class::ALL {
        match class.expect() {
            Expect::Vtepd(counter) => {
                *want.entry(counter).or_default() += sent.datagrams[&class];
                from.entry(counter)
                    .or_default()
                    .push(format!("{class:?} x{}", sent.datagrams[&class]));
            }
            Expect::Delivered => delivered += sent.datagrams[&class],
            Expect::Kernel(_) => {}
        }
    }
    for (counter, n) in &want {
        let got = counters_a[*counter];
        // Exact unless a queue on the path dropped something, which the kernel counted.
        let ok = if kernel_loss == 0 {
            got == *n
        } else {
            got <= *n && got + kernel_loss >= *n
        };
        if !ok {
            failures.push(format!(
                "{counter} = {got}, want {n} = {} (kernel-side drops on the path: {kernel_loss})",
                from[counter].join(" + ")
            ));
        }
    }
    // The only receive drops that may move are those the classes target.
    for name in input_drops() {
        if !want.contains_key(name) && counters_a[name] != 0 {
            failures.push(format!(
                "{name} = {}, but no class targets it",
                counters_a[name]
            ));
        }
    }
    if counters_a["rx_packets"] < delivered.saturating_sub(kernel_loss) {
        failures.push(format!(
            "rx_packets = {} < {delivered} well-formed frames sent from the peer's address",
            counters_a["rx_packets"]
        ));
    }
    // A's kernel answers "who has 10.244.1.0?" to the attacker's MAC; vtepd forwards no ARP replies.
    let requests_for_a = sent.datagrams[&Class::ArpRequestPoison].div_ceil(2);
    if counters_a["drop_tx_arp_other"] > requests_for_a {
        failures.push(format!(
            "drop_tx_arp_other = {} > {requests_for_a} ARP requests for A's address",
            counters_a["drop_tx_arp_other"]
        ));
    }
    for k in [
        "drop_tx_send_error",
        "drop_tx_unknown_dst_mac",
        "drop_tx_bad_gso",
        "drop_tx_bad_vnet_hdr",
    ] {
        if counters_a[k] != 0 {
            failures.push(format!("A: {k} = {} during the flood", counters_a[k]));
        }
    }

    // A's kernel dropped the broken outer headers itself (at least once per frame).
    let mut want_mib: HashMap<&str, u64> = HashMap::new();
    for class in Class::ALL {
        if let Expect::Kernel(name) = class.expect() {
            *want_mib.entry(name).or_default() += sent.frames[&class];
        }
    }
    // Checksum errors are counted as InErrors too.
    *want_mib.entry("Udp.InErrors").or_default() += sent.frames[&Class::UdpBadChecksum];
    for (name, n) in &want_mib {
        let got = mib(name);
        if got + kernel_loss < *n {
            failures.push(format!(
                "A's kernel counted {name} +{got}, want >= {n}: did the frames reach A?"
            ));
        }
    }
    // The 8 KB frames to our MAC with an unhandled ethertype did reach A's stack.
    if nohandler + kernel_loss < sent.datagrams[&Class::JumboToUs] {
        failures.push(format!("vtep0 rx_dropped + rx_nohandler +{nohandler} < {} jumbo frames of an unhandled ethertype delivered", sent.datagrams[&Class::JumboToUs]));
    }
    if mib("Tcp.InCsumErrors") + kernel_loss < sent.datagrams[&Class::InnerTcpBadChecksum] {
        failures.push(format!(
            "Tcp.InCsumErrors +{} < {} inner TCP segments with bad checksums: were they \"fixed\" on the way?",
            mib("Tcp.InCsumErrors"),
            sent.datagrams[&Class::InnerTcpBadChecksum]
        ));
    }

    if neigh_after != neigh_before {
        failures.push(format!("PERMANENT neighbours on vtep0 changed:\nbefore {neigh_before:#?}\nafter {neigh_after:#?}"));
    }
    let attacker = fmt_mac(ATTACKER_MAC);
    if all_neigh.lines().any(|l| {
        l.contains(&attacker) && (l.starts_with("10.244.2.0 ") || l.starts_with("10.244.1.0 "))
    }) {
        failures.push(format!(
            "a VTEP address was re-pointed at the attacker's MAC:\n{all_neigh}"
        ));
    }
    if routes_after != routes_before {
        failures.push(format!(
            "routes via vtep0 changed:\nbefore {routes_before:#?}\nafter {routes_after:#?}"
        ));
    }
    if arp_after != Some(parse_mac(&host_mac(2))) {
        failures.push(format!(
            "vtepd's ARP answer for 10.244.2.0 after the flood: {:?}, want {}",
            arp_after.map(fmt_mac),
            host_mac(2)
        ));
    }
    if rss_after > rss_before + RSS_GROWTH_KIB {
        failures.push(format!(
            "vtepd's VmRSS grew from {rss_before} to {rss_after} KiB (bound: +{RSS_GROWTH_KIB})"
        ));
    }
    // Only the transfer's traffic reached B.
    for k in input_drops() {
        if counters_b[k] != 0 {
            failures.push(format!(
                "B: {k} = {}; the flood was addressed to A",
                counters_b[k]
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} problem(s) after the flood:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An empty UDP datagram to the VXLAN port is shorter than a VXLAN header like any other truncated
/// one, and must be counted as drop_rx_truncated. The worker splits what recvmmsg returned with
/// `while off < r.len`, which for a 0-byte datagram never runs: the datagram is read and silently
/// forgotten (found by the flood above, where exactly the empty ones were missing). An empty one
/// from a stranger is a stranger's like any other: the source is checked first.
#[test]
fn empty_datagrams_are_counted_as_truncated() {
    let hosts = TwoHosts::new("hemp");
    let dir = TempDir::new("hemp");
    let cfg_a = NodeCfg::host(1, &[2]);
    let vtepd_a = Vtepd::start(&hosts.a, &dir.write("a.toml", &cfg_a.to_toml()), &cfg_a);
    const EACH: u64 = 50;
    hosts.b.addr(UNDERLAY_DEV, "192.0.2.9/24");
    let before = kernel_mibs(&hosts.a);
    in_netns(hosts.b.name(), || {
        let peer = std::net::UdpSocket::bind("192.0.2.2:0").expect("bind 192.0.2.2");
        let stranger = std::net::UdpSocket::bind("192.0.2.9:0").expect("bind 192.0.2.9");
        for i in 0..2 * EACH {
            // Alternately empty and 4 bytes, both from the configured peer's address; and an empty
            // one from a stranger for each pair.
            let d: &[u8] = if i % 2 == 0 { &[] } else { &[0x08, 0, 0, 0] };
            peer.send_to(d, ("192.0.2.1", VXLAN_PORT)).expect("send");
            if i % 2 == 0 {
                stranger.send_to(&[], ("192.0.2.1", VXLAN_PORT)).expect("send");
            }
            thread::sleep(Duration::from_millis(2));
        }
    });
    thread::sleep(Duration::from_millis(300));
    let after = kernel_mibs(&hosts.a);
    let delivered = after["Udp.InDatagrams"] - before["Udp.InDatagrams"];
    let c = vtepd_a.stop();
    assert_eq!(delivered, 3 * EACH, "A's kernel delivered {delivered} datagrams to the VXLAN port");
    assert_eq!(c["drop_rx_unknown_source"], EACH, "{EACH} empty datagrams from a stranger\n{}", show_counters(&c));
    assert_eq!(
        c["drop_rx_truncated"],
        2 * EACH,
        "the kernel handed vtepd {EACH} empty and {EACH} 4-byte datagrams, all from its peer; \
         drop_rx_truncated counts {}\n{}",
        c["drop_rx_truncated"],
        show_counters(&c)
    );
}
