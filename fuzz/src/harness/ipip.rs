//! `ipip_decap`: a receive batch of packets from the raw IPIP socket through `ipip::process_packet`,
//! then the delivered inner packets through the coalescer as `io::gro` drives it for the TUN.
//!
//! Input: records `ctrl | len(u16 le) | bytes[len]`, up to 64 of them (one receive batch).
//! - `ctrl & 3`: the outer source is peer 0 (0 or 3), peer 1, or a stranger (2);
//! - `ctrl & 4`: wrap: `bytes` is an inner packet and the harness puts a well-formed outer header
//!   (protocol 4, DF, from the source) in front; otherwise `bytes` is the whole outer packet;
//! - with `ctrl & 4` only, repairs of the inner packet: `ctrl & 8`: it is the first wrapped TCP
//!   packet's headers followed by `bytes` as payload, its sequence number following on from the
//!   previous wrapped TCP packet's; `ctrl & 16`: IPv4 total length and header checksum made right;
//!   `ctrl & 32`: TCP checksum made right; `ctrl & 64`: TCP flags := ACK, plus PSH if `ctrl & 128`.
//!
//! Checked: every verdict equals a reference of the receive rules (RFC 2003 outer, a peer's source,
//! a sound inner IPv4 header for our subnet, RFC 6040's ECN rules), each fault its own drop reason;
//! a drop writes nothing; a delivery points at the inner packet (trimmed to its total length),
//! changed at most in its ECN bits (with a header checksum still right), behind a vnet header that
//! is all zero but for a still-partial TCP/UDP checksum (NEEDS_CSUM at its place), and writes
//! nothing else. The delivered packets are then coalesced twice: as bare IP
//! packets (the TUN) and as the same packets behind an Ethernet header (the TAP path, whose runs
//! `gro::check_run` verifies against independent rules); runs, merged bytes and virtio-net headers
//! must agree, offsets shifted by the Ethernet header, and so must a lone oversized packet's header.
use super::*;
use vtepd::dataplane::ipip::{process_packet, Tunnel};
use vtepd::dataplane::offload::coalesce::{finish, oversized};
use vtepd::dataplane::offload::Framing;
use vtepd::dataplane::{DropReason, IpipRxVerdict};
use vtepd::wire::vnet::VnetHdr;

const MAX_PACKETS: usize = 64;
pub const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const IPIP_MTU: u16 = 1480;
/// Bytes after each packet in its buffer (a slot is bigger than a packet).
const SLACK: usize = 16;
const SLACK_FILL: u8 = 0xa5;
/// The Ethernet header the TAP-framed copies get.
const ETH: [u8; 14] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];

fn tunnel() -> Tunnel {
    Tunnel { local: LOCAL, subnet: "10.244.1.0/24".parse().unwrap(), mtu: IPIP_MTU, ttl: 64 }
}

pub fn run(data: &[u8]) {
    let peers = peers();
    let mut delivered: Vec<Vec<u8>> = Vec::new();
    for (src, pkt) in decode(data) {
        let mut buf = [&pkt[..], &[SLACK_FILL; SLACK]].concat();
        let before = buf.clone();
        let verdict = process_packet(&tunnel(), &peers, src, &mut buf, pkt.len(), 0);
        let expected = reference(src, &pkt);
        match verdict {
            IpipRxVerdict::Drop(r) => {
                assert_eq!(Err(r), expected, "drop reason");
                assert!(buf == before, "a dropped packet's buffer was written");
            }
            IpipRxVerdict::Deliver { start, len } => {
                let (ihl, inner_len, ecn) = expected.unwrap_or_else(|r| panic!("delivered, but the reference drops it as {r:?}"));
                assert_eq!((start, len), (ihl - 12, 12 + inner_len), "delivered range");
                let end = ihl + inner_len;
                assert!(buf[..start] == before[..start] && buf[end..] == before[end..], "bytes beyond the packet written");
                let (got, mut want) = (&buf[ihl..end], pkt[ihl..end].to_vec());
                want[1] = (want[1] & !3) | ecn;
                assert!(got[..10] == want[..10] && got[12..] == want[12..], "inner packet changed beyond its ECN bits");
                assert_eq!(ref_sum(&got[..(got[0] & 15) as usize * 4], 0), 0xffff, "inner header checksum after marking");
                assert_eq!(VnetHdr::parse(&buf[start..ihl]).ok(), Some(ref_hint(got)), "vnet header");
                delivered.push(got.to_vec());
            }
        }
    }
    check_coalescing(&delivered);
}

fn decode(data: &[u8]) -> Vec<(Ipv4Addr, Vec<u8>)> {
    let mut b = Bytes::new(data);
    let mut out = Vec::new();
    let mut template: Option<Vec<u8>> = None;
    let mut next_seq: Option<u32> = None;
    while !b.0.is_empty() && out.len() < MAX_PACKETS {
        let ctrl = b.u8();
        let len = b.u16() as usize;
        let bytes = b.take(len);
        let src = match ctrl & 3 {
            1 => PEER_IPS[1],
            2 => STRANGER,
            _ => PEER_IPS[0],
        };
        if ctrl & 4 == 0 {
            out.push((src, bytes.to_vec()));
            continue;
        }
        // Repairs work on an Ethernet-framed copy, where the reference TCP helpers look.
        let mut f = match (&template, ctrl & 8 != 0) {
            (Some(t), true) => [&t[..], bytes].concat(),
            _ => [&ETH[..], bytes].concat(),
        };
        if let Some(l) = RefTcp::find(&f) {
            repair_tcp(&mut f, &l, ctrl, &mut next_seq);
            template.get_or_insert_with(|| f[..l.header_len()].to_vec());
        } else if ctrl & 16 != 0 && f.len() >= 34 {
            let total = (f.len() - 14) as u16;
            put16(&mut f, 16, total);
            fill_ipv4_csum(&mut f);
        }
        out.push((src, wrap(src, &f[14..])));
    }
    out
}

fn repair_tcp(f: &mut [u8], l: &RefTcp, ctrl: u8, next_seq: &mut Option<u32>) {
    if ctrl & 64 != 0 {
        f[l.tcp_off + 13] = 0x10 | if ctrl & 128 != 0 { 0x08 } else { 0 };
    }
    if let (true, Some(seq)) = (ctrl & 8 != 0, *next_seq) {
        f[l.tcp_off + 4..l.tcp_off + 8].copy_from_slice(&seq.to_be_bytes());
    }
    let tcp_bytes = f.len() - l.tcp_off;
    if ctrl & 16 != 0 {
        l.fill_ip_len(f, tcp_bytes);
        if !l.v6 {
            fill_ipv4_csum(f);
        }
    }
    if ctrl & 32 != 0 {
        l.fill_tcp_csum(f, tcp_bytes);
    }
    *next_seq = Some(be32(f, l.tcp_off + 4).wrapping_add((tcp_bytes - l.tcp_len) as u32));
}

/// `inner` behind a well-formed RFC 2003 outer header from `src` to us.
pub fn wrap(src: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    let mut p = [&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 4, 0, 0][..], &src.octets(), &LOCAL.octets(), inner].concat();
    let total = p.len().min(0xffff) as u16;
    put16(&mut p, 2, total);
    let c = !ref_sum(&p[..20], 0);
    put16(&mut p, 10, c);
    p
}

/// The receive rules, written independently of `ipip::process_packet`: `Ok((outer IHL, inner total
/// length, the inner ECN field delivered))` for a packet to deliver.
fn reference(src: Ipv4Addr, p: &[u8]) -> Result<(usize, usize, u8), DropReason> {
    if !PEER_IPS.contains(&src) {
        return Err(DropReason::RxUnknownSource);
    }
    let header = |b: &[u8]| -> Option<(usize, usize)> {
        let ihl = (*b.first()? & 15) as usize * 4;
        let total = be16(b.get(..20)?, 2) as usize;
        (b[0] >> 4 == 4 && ihl >= 20 && total >= ihl && total <= b.len()).then_some((ihl, total))
    };
    let Some((ihl, total)) = header(p) else { return Err(DropReason::RxOuterMalformed) };
    if p[9] != 4 {
        return Err(DropReason::RxNotIpip);
    }
    if be16(p, 6) & 0x3fff != 0 {
        return Err(DropReason::RxOuterFragment);
    }
    let inner = &p[ihl..total];
    if inner.len() < 20 {
        return Err(DropReason::RxInnerTruncated);
    }
    let Some((inner_ihl, inner_len)) = header(inner) else { return Err(DropReason::RxInnerMalformed) };
    if ref_sum(&inner[..inner_ihl], 0) != 0xffff {
        return Err(DropReason::RxInnerBadChecksum);
    }
    if inner[16..19] != [10, 244, 1] {
        return Err(DropReason::RxInnerNotOurs);
    }
    // RFC 6040 §4.2, Figure 4 (Not-ECT 0, ECT(1) 1, ECT(0) 2, CE 3).
    let ecn = match (inner[1] & 3, p[1] & 3) {
        (0, 3) => return Err(DropReason::RxEcnNotEct),
        (0, _) => 0,
        (_, 3) => 3,
        (2, 1) => 1,
        (e, _) => e,
    };
    Ok((ihl, inner_len, ecn))
}

/// The vnet header a delivered inner packet `p` (trimmed) gets: NEEDS_CSUM when its TCP or UDP
/// checksum field holds exactly the pseudo-header sum (a kernel sender's partial checksum), else
/// none.
fn ref_hint(p: &[u8]) -> VnetHdr {
    let none = VnetHdr::default();
    let ihl = (p[0] & 15) as usize * 4;
    let off = match p[9] {
        6 => 16,
        17 => 6,
        _ => return none,
    };
    let l4 = &p[ihl..];
    if be16(p, 6) & 0x3fff != 0 || l4.len() < off + 2 {
        return none;
    }
    let ip = |at: usize| [p[at], p[at + 1], p[at + 2], p[at + 3]];
    let pseudo = ref_sum(&[], ref_pseudo_v4(ip(12), ip(16), p[9], l4.len()));
    let field = be16(l4, off);
    if field != pseudo || (p[9] == 17 && field == 0) {
        return none;
    }
    VnetHdr { flags: 1, csum_start: ihl as u16, csum_offset: off as u16, ..none }
}

/// The TUN coalescer must do exactly what the (independently checked) TAP coalescer does with the
/// same packets behind an Ethernet header.
fn check_coalescing(ip: &[Vec<u8>]) {
    let eth: Vec<Vec<u8>> = ip.iter().map(|p| [&ETH[..], p].concat()).collect();
    let (runs_ip, lens_ip) = gro::drive(ip, Framing::Ip);
    let (runs_eth, lens_eth) = gro::drive(&eth, Framing::Ethernet);
    let members = |runs: &[(vtepd::dataplane::offload::coalesce::Run, Vec<usize>)]| runs.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>();
    assert_eq!(members(&runs_ip), members(&runs_eth), "runs differ between TUN and TAP framing");
    let trimmed: Vec<&[u8]> = eth.iter().zip(&lens_eth).map(|(f, n)| &f[..*n]).collect();
    for ((run_ip, m), (run_eth, _)) in runs_ip.iter().zip(&runs_eth) {
        assert_eq!(lens_ip[m[0]] + 14, lens_eth[m[0]], "gathered length of the head");
        gro::check_run(run_eth, m, &trimmed);
        let mut head_ip = ip[m[0]][..lens_ip[m[0]]].to_vec();
        let mut head_eth = trimmed[m[0]].to_vec();
        let v_ip = finish(&mut head_ip, run_ip, IPIP_MTU as usize);
        let v_eth = finish(&mut head_eth, run_eth, IPIP_MTU as usize);
        assert_eq!(head_ip, head_eth[14..], "merged head of run {m:?}");
        assert_eq!(v_ip, unshift(v_eth), "vnet header of run {m:?}");
    }
    let in_run: Vec<usize> = runs_ip.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    for k in (0..ip.len()).filter(|k| !in_run.contains(k) && ip[*k].len() > IPIP_MTU as usize) {
        let (mut a, mut b) = (ip[k].clone(), eth[k].clone());
        let (va, vb) = (oversized(&mut a, Framing::Ip, IPIP_MTU as usize), oversized(&mut b, Framing::Ethernet, IPIP_MTU as usize));
        assert_eq!(va, vb.map(unshift), "oversized header of packet {k}");
        assert_eq!(a, b[14..], "oversized packet {k}");
    }
}

/// A TAP vnet header as the TUN's: every offset counted from the IP header instead.
fn unshift(v: VnetHdr) -> VnetHdr {
    let less = |x: u16| if x == 0 { 0 } else { x - 14 };
    VnetHdr { hdr_len: less(v.hdr_len), csum_start: less(v.csum_start), ..v }
}

/// One record of the input.
pub fn record(ctrl: u8, bytes: &[u8]) -> Vec<u8> {
    gro::record(ctrl, bytes)
}
