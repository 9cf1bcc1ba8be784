//! `gro_coalesce`: a list of received frames through `candidate` (TCP, then `candidate_udp`) /
//! `Run::accepts` / `push` / `finish`, driven exactly as `io::gro` drives them with USO on (a
//! non-candidate ends the current run).
//!
//! Input: records `ctrl | len(u16 le) | bytes[len]`, up to 80 of them.
//! - `ctrl & 1`: the frame is the first record's TCP headers followed by `bytes` as payload
//!   (otherwise `bytes` is the whole frame);
//! - `ctrl & 2`: sequence number := the previous TCP frame's + its payload length;
//! - `ctrl & 4`: IP length field := the frame's; `ctrl & 8`: correct IPv4 header checksum;
//! - `ctrl & 16`: correct TCP checksum; `ctrl & 32`: partial TCP checksum (the pseudo-header sum);
//! - `ctrl & 64`: TCP flags := ACK, plus PSH if `ctrl & 128`.
//!
//! A UDP frame gets the same repairs where they apply: `4` sets the UDP length with IP's, `16` a
//! correct UDP checksum, `32` a partial one.
//!
//! Checked, for every run: each member was a valid candidate (by an independent parse: IPv4 header
//! checksum, lengths, flags, TCP checksum full or partial); members are contiguous, all the first
//! one's size but a shorter last, PSH only on the last; the virtio-net header is right for a single
//! frame or a GSO frame; the merged frame's lengths and IPv4 checksum are right and its TCP field
//! holds the pseudo-header sum; and `segment` (standing in for the kernel's GSO) cuts the
//! merged frame back into the members: same payloads, and headers identical but for the fields
//! coalescing may legitimately rewrite (IPv4 id and checksum, TCP window, checksum, urgent pointer).
//! A UDP run: same addresses and ports, all the first one's size but a shorter last, each checksum
//! correct or partial and never 0; a USO header; and `segment` gives back every member byte for
//! byte but the IPv4 id and checksum (and a partial UDP checksum, which it completes).
use super::*;
use super::tso::RefUdp;
use vtepd::dataplane::offload::coalesce::{candidate, candidate_udp, finish, Run, MAX_SEGMENTS};
use vtepd::dataplane::offload::L4;
use vtepd::dataplane::offload::Framing;
use vtepd::dataplane::offload::segment::{segment, SegmentError};
use vtepd::wire::vnet::{VnetHdr, F_DATA_VALID, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};

const MAX_FRAMES: usize = 80;

pub fn run(data: &[u8]) {
    let frames = decode(data);
    let (runs, lens) = drive(&frames, Framing::Ethernet);
    let trimmed: Vec<&[u8]> = frames.iter().zip(&lens).map(|(f, n)| &f[..*n]).collect();
    for (run, members) in &runs {
        check_run(run, members, &trimmed);
    }
}

/// The runs `io::gro` would form over `frames` (each with its members' indices), and each frame's
/// length as gathered (a candidate without trailing bytes, anything else whole).
pub fn drive(frames: &[Vec<u8>], framing: Framing) -> (Vec<(Run, Vec<usize>)>, Vec<usize>) {
    let mut runs = Vec::new();
    let mut lens = Vec::with_capacity(frames.len());
    let mut open: Option<(Run, Vec<usize>)> = None;
    for (k, f) in frames.iter().enumerate() {
        let Some(seg) = candidate(f, framing).or_else(|| candidate_udp(f, framing)) else {
            lens.push(f.len());
            runs.extend(open.take());
            continue;
        };
        lens.push(seg.layout.header_len() + seg.payload_len);
        if let Some((run, members)) = &mut open {
            let head = &frames[members[0]][..lens[members[0]]];
            if run.accepts(head, &f[..lens[k]], &seg) {
                run.push(&seg);
                members.push(k);
                continue;
            }
        }
        runs.extend(open.take());
        open = Some((Run::start(seg), vec![k]));
    }
    runs.extend(open);
    (runs, lens)
}

fn decode(data: &[u8]) -> Vec<Vec<u8>> {
    let mut b = Bytes::new(data);
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut template: Option<Vec<u8>> = None;
    let mut prev: Option<(u32, usize)> = None;
    while !b.rest_is_empty() && frames.len() < MAX_FRAMES {
        let ctrl = b.u8();
        let len = b.u16() as usize;
        let bytes = b.take(len);
        let mut f = match (&template, ctrl & 1 != 0) {
            (Some(t), true) => [&t[..], bytes].concat(),
            _ => bytes.to_vec(),
        };
        if let Some(l) = RefTcp::find(&f) {
            let tcp_bytes = f.len() - l.tcp_off;
            if ctrl & 64 != 0 {
                f[l.tcp_off + 13] = 0x10 | if ctrl & 128 != 0 { 0x08 } else { 0 };
            }
            if ctrl & 4 != 0 {
                l.fill_ip_len(&mut f, tcp_bytes);
            }
            if ctrl & 2 != 0 {
                if let Some((seq, payload)) = prev {
                    f[l.tcp_off + 4..l.tcp_off + 8].copy_from_slice(&seq.wrapping_add(payload as u32).to_be_bytes());
                }
            }
            if ctrl & 8 != 0 && !l.v6 {
                fill_ipv4_csum(&mut f);
            }
            // Checksums over what the IP header says, as a sender computes them.
            let csum_bytes = l.ip_tcp_bytes(&f).filter(|n| l.tcp_off + n <= f.len() && *n >= l.tcp_len);
            if let Some(n) = csum_bytes {
                if ctrl & 16 != 0 {
                    l.fill_tcp_csum(&mut f, n);
                }
                if ctrl & 32 != 0 {
                    let pseudo = ref_sum(&[], l.pseudo(&f, n));
                    put16(&mut f, l.tcp_off + 16, pseudo);
                }
            }
            prev = Some((be32(&f, l.tcp_off + 4), csum_bytes.unwrap_or(tcp_bytes) - l.tcp_len));
            if template.is_none() {
                template = Some(f[..l.header_len()].to_vec());
            }
        } else if let Some(u) = RefUdp::find(&f) {
            repair_udp(&mut f, &u, ctrl);
            if template.is_none() {
                template = Some(f[..u.header_len()].to_vec());
            }
        }
        frames.push(f);
    }
    frames
}

fn repair_udp(f: &mut [u8], u: &RefUdp, ctrl: u8) {
    if ctrl & 4 != 0 {
        u.fill_lens(f, f.len() - u.udp_off());
    }
    if ctrl & 8 != 0 && !u.v6 {
        fill_ipv4_csum(f);
    }
    let Some(n) = u.ip_udp_bytes(f).filter(|n| u.udp_off() + n <= f.len() && *n >= 8) else { return };
    if ctrl & 16 != 0 {
        u.fill_csum(f, n);
    }
    if ctrl & 32 != 0 {
        let pseudo = ref_sum(&[], u.pseudo(f, n));
        put16(f, u.udp_off() + 6, pseudo);
    }
}

impl Bytes<'_> {
    fn rest_is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What `candidate` must have checked, re-derived without vtepd's parser: returns the TCP layout
/// and whether the checksum is partial.
fn independent_candidate(f: &[u8]) -> (RefTcp, bool) {
    let l = RefTcp::find(f).expect("a candidate must be Ethernet/IP/TCP");
    assert!(l.v6 || l.ip_len == 20, "IPv4 options are not merged");
    let tcp_bytes = l.ip_tcp_bytes(f).expect("IP length below the header");
    assert_eq!(l.tcp_off + tcp_bytes, f.len(), "trimmed to the IP length");
    assert!(tcp_bytes > l.tcp_len, "a candidate carries data");
    let flags = f[l.tcp_off + 13];
    assert!(flags == 0x10 || flags == 0x18, "flags {flags:#x}: only ACK or ACK|PSH");
    let partial = be16(f, l.tcp_off + 16) == ref_sum(&[], l.pseudo(f, tcp_bytes));
    assert!(partial || l.tcp_csum_ok(f, tcp_bytes), "TCP checksum of a candidate");
    (l, partial)
}

pub fn check_run(run: &Run, members: &[usize], frames: &[&[u8]]) {
    if run.first.layout.l4 == L4::Udp {
        return check_udp_run(run, members, frames);
    }
    assert_eq!(run.count, members.len());
    assert!(run.count <= MAX_SEGMENTS);
    let facts: Vec<(RefTcp, bool)> = members.iter().map(|&k| independent_candidate(frames[k])).collect();
    let l = facts[0].0;
    let hdr = l.header_len();
    let payloads: Vec<&[u8]> = members.iter().map(|&k| &frames[k][hdr..]).collect();
    let mss = payloads[0].len();
    assert_eq!(run.payload, payloads.iter().map(|p| p.len()).sum::<usize>());
    for (i, &k) in members.iter().enumerate().skip(1) {
        let (f, prev) = (frames[k], frames[members[i - 1]]);
        assert_eq!(facts[i].0, l, "layout of member {i}");
        let want_seq = be32(prev, l.tcp_off + 4).wrapping_add(payloads[i - 1].len() as u32);
        assert_eq!(be32(f, l.tcp_off + 4), want_seq, "member {i} is not contiguous");
        assert!(payloads[i].len() <= mss, "member {i} longer than the first");
        assert_eq!(payloads[i - 1].len(), mss, "a short member {} is followed by more", i - 1);
        assert_eq!(prev[l.tcp_off + 13] & 0x08, 0, "member {} with PSH is followed by more", i - 1);
    }

    let head = frames[members[0]];
    let mut first = head.to_vec();
    // An MTU no frame can exceed: oversized lone frames (GSO at the MTU) are covered by unit tests.
    let vnet = finish(&mut first, run, 65_535);
    if run.count == 1 {
        assert_eq!(first, head, "a lone frame is written as it came");
        let want = if facts[0].1 {
            VnetHdr { flags: F_NEEDS_CSUM, csum_start: l.tcp_off as u16, csum_offset: 16, ..VnetHdr::default() }
        } else {
            VnetHdr { flags: F_DATA_VALID, gso_type: GSO_NONE, ..VnetHdr::default() }
        };
        assert_eq!(vnet, want);
        return;
    }
    // The merged frame gets one new IPv4 header checksum: a corrupt header among the members would
    // be laundered by it (the kernel's inet_gro_receive refuses to merge such a segment).
    for (i, &k) in members.iter().enumerate().filter(|_| !l.v6) {
        assert!(ipv4_csum_ok(frames[k]), "member {i} of a merged run has a bad IPv4 header checksum");
    }
    let want = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if l.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: hdr as u16,
        gso_size: mss as u16,
        csum_start: l.tcp_off as u16,
        csum_offset: 16,
    };
    assert_eq!(vnet, want, "GSO header");
    let merged: Vec<u8> = [&first[..hdr]].into_iter().chain(payloads.iter().copied()).flatten().copied().collect();
    assert!(merged.len() <= 65_535, "merged frame of {} bytes", merged.len());
    let tcp_bytes = merged.len() - l.tcp_off;
    assert_eq!(l.ip_tcp_bytes(&merged), Some(tcp_bytes), "IP length of the merged frame");
    if !l.v6 {
        assert!(ipv4_csum_ok(&merged), "IPv4 header checksum of the merged frame");
    }
    assert_eq!(be16(&merged, l.tcp_off + 16), ref_sum(&[], l.pseudo(&merged, tcp_bytes)), "NEEDS_CSUM field");

    // The kernel will cut the GSO frame up again (or deliver it whole, which is equivalent):
    // segment, standing in for it, must give back the members' bytes.
    let gso_size = vnet.gso_size as usize;
    let mut out = vec![0u8; merged.len().div_ceil(gso_size.max(1)) * (8 + hdr + gso_size)];
    let segs = match segment(&vnet, &merged, Framing::Ethernet, &vtepd::wire::vxlan::Vni::new(VNI).unwrap(), &mut out) {
        Err(SegmentError::BadSize) if gso_size < super::tso::MIN_GSO_SIZE => {
            // segment refuses gso_size < 8 (as a TAP read it is malformed); the kernel takes
            // any size on a TAP write, so coalescing such tiny segments is allowed.
            return;
        }
        other => other.expect("segment refused a coalesced frame"),
    };
    let seg = |i: usize| {
        let len = if i + 1 == segs.count { segs.last_len } else { segs.seg_len };
        &out[i * segs.seg_len + 8..i * segs.seg_len + len]
    };
    let resegmented: Vec<u8> = (0..segs.count).flat_map(|i| seg(i)[hdr..].to_vec()).collect();
    assert!(resegmented == payloads.concat(), "re-segmented payload differs from the members'");
    if gso_size != mss {
        return;
    }
    assert_eq!(segs.count, run.count, "re-segmented count");
    for (i, &k) in members.iter().enumerate() {
        let (f, d) = (frames[k], seg(i));
        assert_eq!(d.len(), f.len(), "length of member {i}");
        let rewritable = |j: usize| {
            // IPv4 id and header checksum
            (!l.v6 && ((18..20).contains(&j) || (24..26).contains(&j)))
                || (l.tcp_off + 14..l.tcp_off + 20).contains(&j) // window, checksum, urgent pointer
        };
        for j in (0..hdr).filter(|j| !rewritable(*j)) {
            assert_eq!(d[j], f[j], "member {i} of {}: header byte {j} changed by coalescing", run.count);
        }
    }
}

/// One record of the input.
pub fn record(ctrl: u8, bytes: &[u8]) -> Vec<u8> {
    [&[ctrl][..], &(bytes.len() as u16).to_le_bytes(), bytes].concat()
}

/// What `candidate_udp` must have checked, re-derived: the layout and whether the checksum is partial.
fn independent_udp_candidate(f: &[u8]) -> (RefUdp, bool) {
    let u = RefUdp::find(f).expect("a UDP candidate must be Ethernet/IP/UDP");
    assert!(u.v6 || (u.ip_len == 20 && ipv4_csum_ok(f)), "IPv4 options or a bad header checksum are not merged");
    let n = u.ip_udp_bytes(f).expect("IP length below the header");
    assert_eq!(u.udp_off() + n, f.len(), "trimmed to the IP length");
    assert!(n > 8 && be16(f, u.udp_off() + 4) as usize == n, "UDP length {} for {n} bytes", be16(f, u.udp_off() + 4));
    let field = be16(f, u.udp_off() + 6);
    assert_ne!(field, 0, "a datagram without checksum is not merged");
    let partial = field == ref_sum(&[], u.pseudo(f, n));
    assert!(partial || u.csum_ok(f, n), "UDP checksum of a candidate");
    (u, partial)
}

fn check_udp_run(run: &Run, members: &[usize], frames: &[&[u8]]) {
    assert_eq!(run.count, members.len());
    assert!(run.count <= MAX_SEGMENTS);
    let facts: Vec<(RefUdp, bool)> = members.iter().map(|&k| independent_udp_candidate(frames[k])).collect();
    let u = facts[0].0;
    let hdr = u.header_len();
    let payloads: Vec<&[u8]> = members.iter().map(|&k| &frames[k][hdr..]).collect();
    let size = payloads[0].len();
    for (i, &k) in members.iter().enumerate().skip(1) {
        let (f, head) = (frames[k], frames[members[0]]);
        assert_eq!(facts[i].0, u, "layout of member {i}");
        assert_eq!(f[..14], head[..14], "link header of member {i}");
        assert_eq!(f[u.udp_off()..u.udp_off() + 4], head[u.udp_off()..u.udp_off() + 4], "ports of member {i}");
        assert!(payloads[i].len() <= size, "member {i} longer than the first");
        assert_eq!(payloads[i - 1].len(), size, "a short member {} is followed by more", i - 1);
    }
    let head = frames[members[0]];
    let mut first = head.to_vec();
    let vnet = finish(&mut first, run, 65_535);
    if run.count == 1 {
        assert_eq!(first, head, "a lone datagram is written as it came");
        let want = if facts[0].1 {
            VnetHdr { flags: F_NEEDS_CSUM, csum_start: u.udp_off() as u16, csum_offset: 6, ..VnetHdr::default() }
        } else {
            VnetHdr { flags: F_DATA_VALID, gso_type: GSO_NONE, ..VnetHdr::default() }
        };
        assert_eq!(vnet, want);
        return;
    }
    let want = VnetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_UDP_L4, hdr_len: hdr as u16, gso_size: size as u16, csum_start: u.udp_off() as u16, csum_offset: 6 };
    assert_eq!(vnet, want, "USO header");
    let merged: Vec<u8> = [&first[..hdr]].into_iter().chain(payloads.iter().copied()).flatten().copied().collect();
    let n = merged.len() - u.udp_off();
    assert!(merged.len() <= 65_535, "merged frame of {} bytes", merged.len());
    assert_eq!(u.ip_udp_bytes(&merged), Some(n), "IP length of the merged frame");
    assert_eq!(be16(&merged, u.udp_off() + 4) as usize, n, "UDP length of the merged frame");
    if !u.v6 {
        assert!(ipv4_csum_ok(&merged), "IPv4 header checksum of the merged frame");
    }
    assert_eq!(be16(&merged, u.udp_off() + 6), ref_sum(&[], u.pseudo(&merged, n)), "NEEDS_CSUM field");
    let mut out = vec![0u8; run.count * (8 + hdr + size)];
    let segs = match segment(&vnet, &merged, Framing::Ethernet, &vtepd::wire::vxlan::Vni::new(VNI).unwrap(), &mut out) {
        Err(SegmentError::BadSize) if size < super::tso::MIN_GSO_SIZE => return, // as for TCP
        other => other.expect("segment refused a coalesced USO frame"),
    };
    assert_eq!(segs.count, run.count, "re-segmented count");
    for (i, &k) in members.iter().enumerate() {
        let (f, d) = (frames[k], &out[segs.range(i)][8..]);
        assert_eq!(d.len(), f.len(), "length of member {i}");
        let rewritable = |j: usize| {
            // IPv4 id and header checksum
            (!u.v6 && ((18..20).contains(&j) || (24..26).contains(&j)))
                || (facts[i].1 && (u.udp_off() + 6..u.udp_off() + 8).contains(&j)) // a partial UDP checksum, completed
        };
        for j in (0..f.len()).filter(|j| !rewritable(*j)) {
            assert_eq!(d[j], f[j], "member {i} of {}: byte {j} changed by coalescing", run.count);
        }
    }
}
