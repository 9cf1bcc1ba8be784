//! `tso_segment`: an arbitrary virtio-net header and super-frame through `segment` (TSO and USO).
//!
//! Input: `vnet(12) | ctrl | grow(u16 le) | room(u16 le) | frame...`
//! - `ctrl & 1`: shape the frame into Ethernet / IPv4 (IPv6 if `ctrl & 2`) / TCP: pad it to the
//!   header length, set EtherType, version, protocol, clear fragment bits, data offset >= 5;
//! - `ctrl & 4`: gso_type := TCPV4 or TCPV6 to match the EtherType (the ECN bit is kept), or
//!   UDP_L4 with `ctrl & 32`;
//! - `ctrl & 32`: with `ctrl & 1`, shape UDP instead of TCP (protocol 17, room for its 8 bytes);
//! - `ctrl & 8`: grow the TCP payload to `grow` bytes by repeating it (super-frames are up to
//!   64 KB, far beyond what the fuzzer would write byte by byte);
//! - `ctrl & 16`: the output buffer has `room` bytes instead of the worker's 256 KiB.
//!
//! Checked: the result (or error) matches a reference of the rules; on success the datagrams fit
//! the output, there are ceil(payload / gso_size) of them, each starts with our VXLAN header and its
//! frame parses with etherparse with consistent IP lengths and correct IPv4 and TCP checksums, the
//! IPv4 id and TCP sequence advance per segment, FIN/PSH only on the last and CWR only on the first,
//! every other header byte is the super-frame's, and the payloads concatenate to the input payload.
//! For USO the same, with a UDP length and checksum (never 0, which means none) per datagram in
//! place of TCP's sequence number, flags and checksum.
use super::*;
use std::cell::RefCell;
use vtepd::dataplane::offload::Framing;
use vtepd::dataplane::offload::segment::{segment, SegmentError, Segments};
use vtepd::wire::vnet::VnetHdr;

/// As in src/io/worker.rs.
pub const SEGMENT_BUF: usize = 256 * 1024;
/// `segment::MIN_GSO_SIZE` (private there).
pub const MIN_GSO_SIZE: usize = 8;
/// 65535 - IPv4 20 - UDP 8.
pub const MAX_DATAGRAM: usize = 65_507;
const SENTINEL: u8 = 0xee;

thread_local! {
    static OUT: RefCell<Vec<u8>> = RefCell::new(vec![0; SEGMENT_BUF]);
}

pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let mut vnet = b.array::<12>();
    let (ctrl, grow, room) = (b.u8(), b.u16() as usize, b.u16() as usize);
    let mut frame = b.rest().to_vec();
    repair(&mut vnet, ctrl, grow, &mut frame);
    let hdr = VnetHdr::parse(&vnet).unwrap();
    OUT.with_borrow_mut(|out| {
        out.fill(SENTINEL);
        let out = if ctrl & 16 != 0 { &mut out[..room] } else { &mut out[..] };
        let got = segment(&hdr, &frame, Framing::Ethernet, &vtepd::wire::vxlan::Vni::new(VNI).unwrap(), out);
        let want = reference(&hdr, &frame, out.len());
        match (got, want) {
            (Ok(s), Ok(RefL4::Tcp(l))) => check_segments(&hdr, &frame, &l, &s, out),
            (Ok(s), Ok(RefL4::Udp(l))) => check_udp_segments(&hdr, &frame, &l, &s, out),
            (got, want) => assert_eq!(got.map(|_| ()), want.map(|_| ()), "segment result"),
        }
    });
}

pub fn repair(vnet: &mut [u8; 12], ctrl: u8, grow: usize, frame: &mut Vec<u8>) {
    let (v6, udp) = (ctrl & 2 != 0, ctrl & 32 != 0);
    if ctrl & 1 != 0 {
        let ip_len = if v6 { 40 } else { frame.get(14).map_or(20, |b| ((b & 15) as usize * 4).max(20)) };
        let l4_len = if udp { 8 } else { frame.get(14 + ip_len + 12).map_or(20, |b| ((b >> 4) as usize * 4).max(20)) };
        if frame.len() < 14 + ip_len + l4_len {
            frame.resize(14 + ip_len + l4_len, 0);
        }
        let proto = if udp { 17 } else { 6 };
        if v6 {
            frame[12..14].copy_from_slice(&[0x86, 0xdd]);
            frame[14] = 0x60 | (frame[14] & 15);
            frame[14 + 6] = proto;
        } else {
            frame[12..14].copy_from_slice(&[0x08, 0x00]);
            frame[14] = 0x40 | (ip_len / 4) as u8;
            frame[14 + 9] = proto;
            frame[14 + 6] &= 0xc0;
            frame[14 + 7] = 0;
        }
        if !udp {
            frame[14 + ip_len + 12] = ((l4_len / 4) as u8 * 16) | (frame[14 + ip_len + 12] & 15);
        }
    }
    if ctrl & 4 != 0 {
        vnet[1] = (vnet[1] & 0x80) | if udp { 5 } else if v6 { 4 } else { 1 };
    }
    if ctrl & 8 != 0 {
        let hdr = if udp { RefUdp::find(frame).map(|l| l.header_len()) } else { RefTcp::find(frame).map(|l| l.header_len()) };
        if let Some(hdr) = hdr {
            let payload = frame.len() - hdr;
            if grow > payload {
                let seed = if payload == 0 { vec![0xab] } else { frame[hdr..].to_vec() };
                frame.extend(seed.iter().cycle().take(grow - payload));
            }
        }
    }
}

/// Where IP and UDP start in an Ethernet frame: IPv4 (unfragmented, IHL >= 5) or IPv6 (next header
/// UDP) with the 8-byte UDP header inside `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefUdp {
    pub v6: bool,
    pub ip_len: usize,
}

impl RefUdp {
    pub fn find(f: &[u8]) -> Option<RefUdp> {
        let (v6, ip_len) = match (f.get(12..14)?, f.get(14)? >> 4) {
            ([0x08, 0x00], 4) => {
                let ip = f.get(14..34)?;
                let ihl = (ip[0] & 15) as usize * 4;
                (ihl >= 20 && ip[9] == 17 && be16(ip, 6) & 0x3fff == 0).then_some((false, ihl))?
            }
            ([0x86, 0xdd], 6) => (*f.get(14 + 6)? == 17).then_some((true, 40))?,
            _ => return None,
        };
        (f.len() >= 14 + ip_len + 8).then_some(RefUdp { v6, ip_len })
    }

    pub fn header_len(&self) -> usize {
        14 + self.ip_len + 8
    }

    pub fn udp_off(&self) -> usize {
        14 + self.ip_len
    }

    /// The unfolded pseudo-header sum for `udp_bytes` of UDP.
    pub fn pseudo(&self, f: &[u8], udp_bytes: usize) -> u32 {
        if self.v6 {
            ref_pseudo_v6(&f[22..38], &f[38..54], 17, udp_bytes)
        } else {
            ref_pseudo_v4(f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap(), 17, udp_bytes)
        }
    }

    /// UDP bytes as the IP header claims them.
    pub fn ip_udp_bytes(&self, f: &[u8]) -> Option<usize> {
        if self.v6 { Some(be16(f, 18) as usize) } else { (be16(f, 16) as usize).checked_sub(self.ip_len) }
    }

    /// IP length field(s) and UDP length for `udp_bytes` of UDP.
    pub fn fill_lens(&self, f: &mut [u8], udp_bytes: usize) {
        if self.v6 {
            put16(f, 18, udp_bytes as u16);
        } else {
            put16(f, 16, (self.ip_len + udp_bytes) as u16);
        }
        put16(f, self.udp_off() + 4, udp_bytes as u16);
    }

    /// Whether the UDP checksum over `udp_bytes` verifies.
    pub fn csum_ok(&self, f: &[u8], udp_bytes: usize) -> bool {
        ref_sum(&f[self.udp_off()..self.udp_off() + udp_bytes], self.pseudo(f, udp_bytes)) == 0xffff
    }

    /// Writes a correct UDP checksum (0 sent as 0xffff).
    pub fn fill_csum(&self, f: &mut [u8], udp_bytes: usize) {
        put16(f, self.udp_off() + 6, 0);
        let c = !ref_sum(&f[self.udp_off()..self.udp_off() + udp_bytes], self.pseudo(f, udp_bytes));
        put16(f, self.udp_off() + 6, if c == 0 { 0xffff } else { c });
    }
}

/// The transport a reference layout found.
enum RefL4 {
    Tcp(RefTcp),
    Udp(RefUdp),
}

impl RefL4 {
    fn header_len(&self) -> usize {
        match self {
            RefL4::Tcp(l) => l.header_len(),
            RefL4::Udp(l) => l.header_len(),
        }
    }
}

/// The rules `segment` promises, in its order.
fn reference(vnet: &VnetHdr, frame: &[u8], room: usize) -> Result<RefL4, SegmentError> {
    let l = match vnet.gso_type & 0x7f {
        1 => RefTcp::find(frame).filter(|l| !l.v6).map(RefL4::Tcp),
        4 => RefTcp::find(frame).filter(|l| l.v6).map(RefL4::Tcp),
        5 => RefUdp::find(frame).map(RefL4::Udp),
        _ => return Err(SegmentError::UnsupportedType),
    }
    .ok_or(SegmentError::BadHeaders)?;
    let (mss, hdr) = (vnet.gso_size as usize, l.header_len());
    let payload = frame.len() - hdr;
    // Every datagram must fit in one UDP datagram over IPv4 (which also keeps the IP length fields
    // from overflowing).
    if mss < MIN_GSO_SIZE || payload == 0 || 8 + hdr + mss.min(payload) > MAX_DATAGRAM {
        return Err(SegmentError::BadSize);
    }
    let count = payload.div_ceil(mss);
    if (count - 1) * (8 + hdr + mss) + 8 + hdr + payload - (count - 1) * mss > room {
        return Err(SegmentError::NoRoom);
    }
    Ok(l)
}

fn check_segments(vnet: &VnetHdr, frame: &[u8], l: &RefTcp, s: &Segments, out: &[u8]) {
    let (mss, hdr) = (vnet.gso_size as usize, l.header_len());
    check_layout(s, out, hdr, mss, frame.len() - hdr);

    let ip = &frame[14..14 + l.ip_len];
    let tcp = &frame[l.tcp_off..hdr];
    let (seq0, id0, flags0) = (be32(tcp, 4), be16(ip, 4), tcp[13]);
    for i in 0..s.count {
        let (f, _) = datagram(s, out, frame, i, hdr, mss);

        let p = etherparse::SlicedPacket::from_ethernet(f).unwrap_or_else(|e| panic!("segment {i} of {}: {e}", s.count));
        let Some(etherparse::TransportSlice::Tcp(t)) = &p.transport else { panic!("segment {i}: no TCP") };
        let (sip, stcp) = (&f[14..14 + l.ip_len], &f[l.tcp_off..hdr]);
        match &p.net {
            Some(etherparse::NetSlice::Ipv4(v4)) => {
                let h = v4.header();
                assert_eq!(h.total_len() as usize, f.len() - 14, "IPv4 total length of segment {i}");
                assert!(ipv4_csum_ok(f), "IPv4 header checksum of segment {i}");
                assert_eq!(h.identification(), id0.wrapping_add(i as u16), "IPv4 id of segment {i}");
                assert_eq!((&sip[..2], &sip[6..10], &sip[12..]), (&ip[..2], &ip[6..10], &ip[12..]), "IPv4 header of segment {i}");
                assert_eq!(t.checksum(), t.calc_checksum_ipv4(h.source(), h.destination()).unwrap(), "TCP checksum of segment {i}");
            }
            Some(etherparse::NetSlice::Ipv6(v6)) => {
                let h = v6.header();
                assert_eq!(h.payload_length() as usize, f.len() - 54, "IPv6 payload length of segment {i}");
                assert_eq!((&sip[..4], &sip[6..]), (&ip[..4], &ip[6..]), "IPv6 header of segment {i}");
                assert_eq!(t.checksum(), t.calc_checksum_ipv6(h.source(), h.destination()).unwrap(), "TCP checksum of segment {i}");
            }
            other => panic!("segment {i}: {other:?}"),
        }
        assert!(l.tcp_csum_ok(f, f.len() - l.tcp_off), "TCP checksum of segment {i} (reference sum)");
        assert_eq!(be32(stcp, 4), seq0.wrapping_add((i * mss) as u32), "sequence number of segment {i}");
        let (first, last) = (i == 0, i + 1 == s.count);
        let mut flags = flags0;
        if !last {
            flags &= !0x09; // FIN, PSH
        }
        if !first {
            flags &= !0x80; // CWR
        }
        assert_eq!(stcp[13], flags, "TCP flags of segment {i}");
        assert_eq!((&stcp[..4], &stcp[8..13], &stcp[14..16], &stcp[18..]), (&tcp[..4], &tcp[8..13], &tcp[14..16], &tcp[18..]), "TCP header of segment {i}");
    }
}

/// An input for `run`: the given header and super-frame, no repairs, the worker's output buffer.
pub fn encode(vnet: &VnetHdr, ctrl: u8, grow: u16, frame: &[u8]) -> Vec<u8> {
    let mut v = [0u8; 12];
    vnet.emit(&mut v);
    [&v[..], &[ctrl], &grow.to_le_bytes(), &[0, 0], frame].concat()
}

/// What every cut must look like: ceil(payload / mss) datagrams of `8 + hdr + mss` bytes but a
/// shorter or equal last, all inside `out` and nothing written past them.
fn check_layout(s: &Segments, out: &[u8], hdr: usize, mss: usize, payload: usize) {
    assert_eq!(s.count, payload.div_ceil(mss), "segment count");
    assert_eq!(s.seg_len, 8 + hdr + mss);
    assert!(s.last_len > 8 + hdr && s.last_len <= s.seg_len, "{s:?}");
    let total = s.total_len();
    assert!(total <= out.len(), "total_len {total} beyond the output ({})", out.len());
    assert_eq!(total, s.count * (8 + hdr) + payload);
    let tail = &out[total..out.len().min(total + 4096)];
    assert!(tail.iter().all(|b| *b == SENTINEL), "written past total_len");
}

/// Datagram `i` behind its VXLAN header, checked for our VNI, its length, its payload chunk and the
/// super-frame's Ethernet header; returns the inner frame and the chunk.
fn datagram<'a>(s: &Segments, out: &'a [u8], frame: &'a [u8], i: usize, hdr: usize, mss: usize) -> (&'a [u8], &'a [u8]) {
    let d = &out[s.range(i)];
    assert_eq!(d[..8], [0x08, 0, 0, 0, 0, 0, VNI as u8, 0], "VXLAN header of segment {i}");
    let f = &d[8..];
    let payload = &frame[hdr..];
    let chunk = &payload[i * mss..payload.len().min((i + 1) * mss)];
    assert_eq!(f.len(), hdr + chunk.len(), "length of segment {i}");
    assert_eq!(&f[hdr..], chunk, "payload of segment {i}");
    assert_eq!(f[..14], frame[..14], "Ethernet header of segment {i}");
    (f, chunk)
}

fn check_udp_segments(vnet: &VnetHdr, frame: &[u8], l: &RefUdp, s: &Segments, out: &[u8]) {
    let (mss, hdr) = (vnet.gso_size as usize, l.header_len());
    check_layout(s, out, hdr, mss, frame.len() - hdr);
    let (ip, udp) = (&frame[14..14 + l.ip_len], &frame[hdr - 8..hdr]);
    for i in 0..s.count {
        let (f, chunk) = datagram(s, out, frame, i, hdr, mss);
        let (sip, sudp) = (&f[14..14 + l.ip_len], &f[hdr - 8..hdr]);
        let udp_bytes = 8 + chunk.len();
        assert_eq!(be16(sudp, 4) as usize, udp_bytes, "UDP length of segment {i}");
        assert_eq!(sudp[..4], udp[..4], "ports of segment {i}");
        let pseudo = if l.v6 {
            assert_eq!(be16(sip, 4) as usize, udp_bytes, "IPv6 payload length of segment {i}");
            assert_eq!((&sip[..4], &sip[6..]), (&ip[..4], &ip[6..]), "IPv6 header of segment {i}");
            ref_pseudo_v6(&sip[8..24], &sip[24..40], 17, udp_bytes)
        } else {
            assert_eq!(be16(sip, 2) as usize, l.ip_len + udp_bytes, "IPv4 total length of segment {i}");
            assert!(ipv4_csum_ok(f), "IPv4 header checksum of segment {i}");
            assert_eq!(be16(sip, 4), be16(ip, 4).wrapping_add(i as u16), "IPv4 id of segment {i}");
            assert_eq!((&sip[..2], &sip[6..10], &sip[12..]), (&ip[..2], &ip[6..10], &ip[12..]), "IPv4 header of segment {i}");
            ref_pseudo_v4(sip[12..16].try_into().unwrap(), sip[16..20].try_into().unwrap(), 17, udp_bytes)
        };
        assert_ne!(be16(sudp, 6), 0, "UDP checksum 0 (none) in segment {i}");
        assert_eq!(ref_sum(&f[hdr - 8..], pseudo), 0xffff, "UDP checksum of segment {i}");
    }
}
