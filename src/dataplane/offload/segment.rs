//! TCP and UDP segmentation (software TSO and USO) of a TAP or TUN super-frame into encapsulated
//! packets.
//!
//! Each output packet is `outer header | [Ethernet] | IP | TCP or UDP | payload chunk` — the outer header
//! is VXLAN's 8 bytes for a TAP frame (an [`Outer`] for [`Vni`]) or RFC 2003's IPv4 header for a
//! TUN packet (`dataplane::ipip`) — written back to back so that all but the last have the same
//! length: exactly the layout one `sendmsg` with `UDP_SEGMENT` needs, and a fixed stride for
//! sendmmsg. Per segment, as a NIC's TSO engine would: IPv4 total length, identification
//! (+1 per segment) and header checksum; IPv6 payload length; TCP sequence number advanced by the
//! bytes before it; FIN and PSH only on the last segment, CWR only on the first; UDP length; a
//! complete TCP or UDP checksum, because the underlay carries no offload state to the peer.
use super::{Framing, L4Layout, L4};
use crate::wire::vnet::{VnetHdr, GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
use crate::wire::vxlan::{self, Vni};
use crate::wire::{be16, be32, checksum, put_be16, put_be32};

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
/// The kernel's smallest MSS is 88 bytes less headers; anything smaller is a malformed header
/// and would make one frame explode into thousands of datagrams.
const MIN_GSO_SIZE: usize = 8;

/// The encapsulation each segment gets in front of it.
pub trait Outer {
    /// Bytes in front of each segment.
    const LEN: usize;
    /// The largest segment, outer header included, the encapsulation can carry: a larger one would
    /// also overflow its own inner IPv4 total length / IPv6 payload length field.
    const MAX_PACKET: usize;
    /// Writes the outer header into `hdr[..LEN]`; `hdr[LEN..]` holds the finished inner headers of
    /// a segment whose inner packet (headers and payload) is `inner_len` bytes long.
    fn emit(&self, hdr: &mut [u8], inner_len: usize);
}

impl Outer for Vni {
    const LEN: usize = vxlan::HEADER_LEN;
    /// The largest UDP payload over IPv4 (65535 - 20 - 8).
    const MAX_PACKET: usize = 65_507;

    fn emit(&self, hdr: &mut [u8], _inner_len: usize) {
        vxlan::emit(hdr, *self);
    }
}

/// Nothing in front: segments for the local device, as the kernel's own USO would have cut them.
#[derive(Debug, Clone, Copy)]
pub struct Bare;

impl Outer for Bare {
    const LEN: usize = 0;
    /// An Ethernet header and the largest IPv4 packet.
    const MAX_PACKET: usize = 14 + 65_535;

    fn emit(&self, _hdr: &mut [u8], _inner_len: usize) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("GSO type is not TCP or UDP over IPv4/IPv6")]
    UnsupportedType,
    #[error("headers do not parse or disagree with the GSO type")]
    BadHeaders,
    #[error("segment size out of range")]
    BadSize,
    #[error("output buffer too small")]
    NoRoom,
}

/// Packets written back to back: `count` of them, each `seg_len` bytes but the last (`last_len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub count: usize,
    pub seg_len: usize,
    pub last_len: usize,
}

impl Segments {
    pub fn total_len(&self) -> usize {
        (self.count - 1) * self.seg_len + self.last_len
    }

    /// Where packet `i` lies in the output buffer.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let len = if i + 1 == self.count { self.last_len } else { self.seg_len };
        i * self.seg_len..i * self.seg_len + len
    }
}

/// How one super-frame is cut: its checked headers, and for each segment where its payload lies
/// in the frame. The segments' headers are written by [`Cut::emit_header`], wherever the driver
/// wants them: in front of a copy of the payload ([`segment`]), or in a buffer of their own
/// so that a gather send takes the payload straight from the frame (one copy less).
#[derive(Debug, Clone, Copy)]
pub struct Cut<'a> {
    frame: &'a [u8],
    layout: L4Layout,
    mss: usize,
    seq0: u32,
    id0: u16,
    flags0: u8,
    /// The datagrams it makes (outer header included).
    pub segs: Segments,
    /// Bytes of headers (outer and inner) in front of each segment's payload.
    pub header_len: usize,
}

/// Checks the super-frame `frame` (described by `vnet`) and works out how it is cut behind `O`.
pub fn cut<'a, O: Outer>(vnet: &VnetHdr, frame: &'a [u8], framing: Framing) -> Result<Cut<'a>, SegmentError> {
    // USO has one GSO type for both IP versions; the frame says which.
    let (l4, want_v6) = match vnet.gso_type & !GSO_ECN {
        GSO_TCPV4 => (L4::Tcp, Some(false)),
        GSO_TCPV6 => (L4::Tcp, Some(true)),
        GSO_UDP_L4 => (L4::Udp, None),
        _ => return Err(SegmentError::UnsupportedType),
    };
    // Rebuild the header length ourselves: the kernel's hdr_len is only a hint (OFFLOAD.md).
    let l = L4Layout::parse(frame, framing, l4)
        .filter(|l| want_v6.is_none_or(|v6| l.v6 == v6))
        .ok_or(SegmentError::BadHeaders)?;
    let mss = vnet.gso_size as usize;
    let hdr = l.header_len();
    let payload = frame.len() - hdr;
    if mss < MIN_GSO_SIZE || payload == 0 || O::LEN + hdr + mss.min(payload) > O::MAX_PACKET {
        return Err(SegmentError::BadSize);
    }
    let count = payload.div_ceil(mss);
    let header_len = O::LEN + hdr;
    let segs = Segments { count, seg_len: header_len + mss, last_len: header_len + (payload - (count - 1) * mss) };
    let tcp = l4 == L4::Tcp;
    Ok(Cut {
        frame,
        layout: l,
        mss,
        seq0: if tcp { be32(frame, l.l4_off + 4) } else { 0 },
        id0: if l.v6 { 0 } else { be16(frame, l.ip_off + 4) },
        flags0: if tcp { frame[l.l4_off + 13] } else { 0 },
        segs,
        header_len,
    })
}

impl<'a> Cut<'a> {
    /// Segment `i`'s payload, a slice of the super-frame.
    pub fn payload(&self, i: usize) -> &'a [u8] {
        let hdr = self.layout.header_len();
        let end = (hdr + (i + 1) * self.mss).min(self.frame.len());
        &self.frame[hdr + i * self.mss..end]
    }

    /// Writes segment `i`'s headers — outer, then the super-frame's inner headers fixed up as a
    /// NIC's TSO/USO engine would — into `dst` (exactly `header_len` bytes).
    pub fn emit_header<O: Outer>(&self, i: usize, outer: &O, dst: &mut [u8]) {
        let (l, hdr) = (&self.layout, self.layout.header_len());
        let payload = self.payload(i);
        let f = &mut dst[O::LEN..];
        f.copy_from_slice(&self.frame[..hdr]);
        let l4_bytes = l.l4_len + payload.len();
        if l.v6 {
            put_be16(f, l.ip_off + 4, l4_bytes as u16);
        } else {
            put_be16(f, l.ip_off + 2, (l.ip_len + l4_bytes) as u16);
            put_be16(f, l.ip_off + 4, self.id0.wrapping_add(i as u16));
            put_be16(f, l.ip_off + 10, 0);
            let c = checksum::finish(checksum::sum(&f[l.ip_off..l.ip_off + l.ip_len], 0));
            put_be16(f, l.ip_off + 10, c);
        }
        match l.l4 {
            L4::Tcp => self.fix_tcp(i, &mut f[l.l4_off..]),
            L4::Udp => put_be16(f, l.l4_off + 4, l4_bytes as u16),
        }
        let field = l.l4_off + l.l4.csum_offset();
        put_be16(f, field, 0);
        // The transport header is a multiple of 4 bytes long, so its sum and the payload's add.
        let head = checksum::sum(&f[l.l4_off..], l.pseudo_sum(f, l4_bytes));
        let sum = checksum::sum(payload, head);
        let c = match l.l4 {
            L4::Tcp => checksum::finish(sum),
            L4::Udp => checksum::finish_nonzero(sum),
        };
        put_be16(f, field, c);
        outer.emit(dst, hdr + payload.len());
    }

    /// Segment `i`'s sequence number, and FIN/PSH only on the last, CWR only on the first.
    fn fix_tcp(&self, i: usize, tcp: &mut [u8]) {
        let mut flags = self.flags0;
        if i + 1 != self.segs.count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        put_be32(tcp, 4, self.seq0.wrapping_add((i * self.mss) as u32));
        tcp[13] = flags;
    }
}

/// Cuts the super-frame `frame` (described by `vnet`) into whole packets behind `outer` headers,
/// back to back in `out`: the layout sendmmsg (or a UDP_SEGMENT send of one buffer) needs.
pub fn segment<O: Outer>(vnet: &VnetHdr, frame: &[u8], framing: Framing, outer: &O, out: &mut [u8]) -> Result<Segments, SegmentError> {
    let c = cut::<O>(vnet, frame, framing)?;
    if out.len() < c.segs.total_len() {
        return Err(SegmentError::NoRoom);
    }
    for i in 0..c.segs.count {
        let (head, payload) = out[c.segs.range(i)].split_at_mut(c.header_len);
        payload.copy_from_slice(c.payload(i));
        c.emit_header(i, outer, head);
    }
    Ok(c.segs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vnet;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn vni() -> Vni {
        Vni::new(7).unwrap()
    }

    /// A super-frame as the TAP (or, with `Framing::Ip`, the TUN) hands it: one IP/TCP header over
    /// the whole payload.
    fn super_packet(framing: Framing, v6: bool, payload: &[u8], flags: (bool, bool), with_options: bool) -> Vec<u8> {
        let (src6, dst6) = ([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let ip = match (framing, v6) {
            (Framing::Ethernet, true) => etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv6(src6, dst6, 64),
            (Framing::Ethernet, false) => etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4([10, 244, 1, 2], [10, 244, 2, 2], 64),
            (Framing::Ip, true) => etherparse::PacketBuilder::ipv6(src6, dst6, 64),
            (Framing::Ip, false) => etherparse::PacketBuilder::ipv4([10, 244, 1, 2], [10, 244, 2, 2], 64),
        };
        let mut b = ip.tcp(40000, 5001, 0xffff_fff0, 500).ack(77);
        if flags.0 {
            b = b.psh();
        }
        if flags.1 {
            b = b.fin();
        }
        if with_options {
            b = b.options(&[etherparse::TcpOptionElement::Timestamp(1, 2)]).unwrap();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        let ip_off = if framing == Framing::Ethernet { 14 } else { 0 };
        if !v6 {
            out[ip_off + 4..ip_off + 6].copy_from_slice(&0x1234u16.to_be_bytes()); // a known IP id
        }
        out
    }

    fn super_frame(v6: bool, payload: &[u8], flags: (bool, bool), with_options: bool) -> Vec<u8> {
        super_packet(Framing::Ethernet, v6, payload, flags, with_options)
    }

    fn vnet(v6: bool, mss: u16) -> VnetHdr {
        VnetHdr { flags: 1, gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 }, gso_size: mss, hdr_len: 66, csum_start: 34, csum_offset: 16 }
    }

    /// Splits the output, checks every segment with etherparse (an independent parser and checksum).
    fn check(v6: bool, payload_len: usize, mss: u16, flags: (bool, bool), options: bool) {
        check_framed(Framing::Ethernet, v6, payload_len, mss, flags, options);
        check_framed(Framing::Ip, v6, payload_len, mss, flags, options);
    }

    fn check_framed(framing: Framing, v6: bool, payload_len: usize, mss: u16, flags: (bool, bool), options: bool) {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 31 + 7) as u8).collect();
        let frame = super_packet(framing, v6, &payload, flags, options);
        let mut out = vec![0u8; 200_000];
        let s = segment(&vnet(v6, mss), &frame, framing, &vni(), &mut out).unwrap();
        assert_eq!(s.count, payload_len.div_ceil(mss as usize));
        let mut rebuilt = Vec::new();
        for i in 0..s.count {
            let len = if i + 1 == s.count { s.last_len } else { s.seg_len };
            let d = &out[i * s.seg_len..i * s.seg_len + len];
            assert_eq!(&d[..8], &[0x08, 0, 0, 0, 0, 0, 7, 0]);
            let p = match framing {
                Framing::Ethernet => SlicedPacket::from_ethernet(&d[8..]).unwrap(),
                Framing::Ip => SlicedPacket::from_ip(&d[8..]).unwrap(),
            };
            let Some(TransportSlice::Tcp(tcp)) = p.transport else { panic!("no tcp") };
            let ipsum = match p.net.as_ref().unwrap() {
                NetSlice::Ipv4(ip) => {
                    let h = ip.header().to_header();
                    assert_eq!(h.identification, 0x1234u16.wrapping_add(i as u16));
                    assert_eq!(h.header_checksum, h.calc_header_checksum(), "ip checksum of segment {i}");
                    tcp.calc_checksum_ipv4(h.source, h.destination).unwrap()
                }
                NetSlice::Ipv6(ip) => {
                    let h = ip.header().to_header();
                    tcp.calc_checksum_ipv6(h.source, h.destination).unwrap()
                }
            };
            assert_eq!(tcp.checksum(), ipsum, "tcp checksum of segment {i}");
            assert_eq!(tcp.sequence_number(), 0xffff_fff0u32.wrapping_add(i as u32 * mss as u32));
            let last = i + 1 == s.count;
            assert_eq!(tcp.psh(), flags.0 && last);
            assert_eq!(tcp.fin(), flags.1 && last);
            assert!(tcp.ack());
            assert_eq!(tcp.options().len(), if options { 12 } else { 0 });
            rebuilt.extend_from_slice(tcp.payload());
        }
        assert_eq!(rebuilt, payload);
    }

    #[test]
    fn ipv4_even_and_short_last_segment() {
        check(false, 1398 * 4, 1398, (true, false), true);
        check(false, 1398 * 4 + 100, 1398, (true, false), true);
        check(false, 65_000, 1448, (false, true), false);
    }

    #[test]
    fn gathered_headers_and_payloads_make_the_same_datagrams() {
        for (framing, v6) in [(Framing::Ethernet, false), (Framing::Ethernet, true), (Framing::Ip, false)] {
            let payload: Vec<u8> = (0..10_001).map(|i| (i * 13 + 1) as u8).collect();
            let frame = super_packet(framing, v6, &payload, (true, false), true);
            let mut whole = vec![0u8; 20_000];
            let segs = segment(&vnet(v6, 1398), &frame, framing, &vni(), &mut whole).unwrap();
            let c = cut::<Vni>(&vnet(v6, 1398), &frame, framing).unwrap();
            assert_eq!(c.segs, segs);
            let mut gathered = Vec::new();
            for i in 0..c.segs.count {
                let mut h = vec![0u8; c.header_len];
                c.emit_header(i, &vni(), &mut h);
                gathered.extend_from_slice(&h);
                gathered.extend_from_slice(c.payload(i));
            }
            assert_eq!(gathered, whole[..segs.total_len()]);
        }
    }

    #[test]
    fn ipv6_segments() {
        check(true, 1378 * 3 + 1, 1378, (true, true), true);
    }

    #[test]
    fn single_segment_keeps_flags() {
        check(false, 500, 1398, (true, true), false);
    }

    #[test]
    fn refuses_a_segment_too_big_for_one_datagram() {
        // gso_size 65535 on a 64 KB super-frame: the segment would not fit a UDP datagram and its
        // IPv4 total length would wrap to a small number (found by the tso_segment fuzz target).
        let mut frame = super_frame(false, &[1; 100], (false, false), true);
        let hdr = frame.len() - 100;
        frame.resize(hdr + 65_500, 1);
        let mut out = vec![0u8; 200_000];
        assert_eq!(segment(&vnet(false, 65_535), &frame, Framing::Ethernet, &vni(), &mut out), Err(SegmentError::BadSize));
        let largest = Vni::MAX_PACKET - vxlan::HEADER_LEN - hdr;
        let s = segment(&vnet(false, largest as u16), &frame, Framing::Ethernet, &vni(), &mut out).unwrap();
        assert_eq!((s.count, s.seg_len), (2, Vni::MAX_PACKET));
        let ip = &out[vxlan::HEADER_LEN + 14..];
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, hdr - 14 + largest);
    }

    #[test]
    fn refuses_bad_input() {
        let frame = super_frame(false, &[1; 3000], (false, false), false);
        let mut out = vec![0u8; 10_000];
        let mut v = vnet(false, 1000);
        v.gso_type = vnet::GSO_UDP; // UFO: IP fragmentation, which no kernel hands a TAP any more
        assert_eq!(segment(&v, &frame, Framing::Ethernet, &vni(), &mut out), Err(SegmentError::UnsupportedType));
        v.gso_type = GSO_UDP_L4; // USO header on a TCP frame
        assert_eq!(segment(&v, &frame, Framing::Ethernet, &vni(), &mut out), Err(SegmentError::BadHeaders));
        assert_eq!(segment(&vnet(true, 1000), &frame, Framing::Ethernet, &vni(), &mut out), Err(SegmentError::BadHeaders));
        assert_eq!(segment(&vnet(false, 0), &frame, Framing::Ethernet, &vni(), &mut out), Err(SegmentError::BadSize));
        assert_eq!(segment(&vnet(false, 1000), &frame, Framing::Ethernet, &vni(), &mut out[..100]), Err(SegmentError::NoRoom));
        assert_eq!(segment(&vnet(false, 1000), &frame[..40], Framing::Ethernet, &vni(), &mut out), Err(SegmentError::BadHeaders));
    }

    /// A USO super-frame: one IP/UDP header over the payload of all the datagrams.
    fn udp_super_packet(framing: Framing, v6: bool, payload: &[u8]) -> Vec<u8> {
        let mut frame = super_packet(framing, v6, &[], (false, false), false);
        let ip_off = framing.link_len();
        let l = L4Layout::parse(&frame, framing, L4::Tcp).unwrap();
        // The TCP frame's link and IP headers (lengths are rewritten per datagram), UDP behind them.
        frame.truncate(l.l4_off);
        if v6 {
            frame[ip_off + 6] = 17;
        } else {
            frame[ip_off + 9] = 17;
        }
        frame.extend_from_slice(&[0x11, 0x51, 0x01, 0xbb, 0, 0, 0, 0]); // 4433 -> 443, length and checksum partial
        frame.extend_from_slice(payload);
        frame
    }

    fn uso(mss: u16) -> VnetHdr {
        VnetHdr { flags: 1, gso_type: GSO_UDP_L4, gso_size: mss, hdr_len: 42, csum_start: 34, csum_offset: 6 }
    }

    /// Every datagram parsed by etherparse: UDP length and checksum, IPv4 length/id/checksum, and
    /// the payloads in order.
    fn check_udp(framing: Framing, v6: bool, payload_len: usize, mss: u16) {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 29 + 3) as u8).collect();
        let frame = udp_super_packet(framing, v6, &payload);
        let mut out = vec![0u8; 200_000];
        let s = segment(&uso(mss), &frame, framing, &vni(), &mut out).unwrap();
        assert_eq!(s.count, payload_len.div_ceil(mss as usize));
        let mut rebuilt = Vec::new();
        for i in 0..s.count {
            let d = &out[s.range(i)];
            assert_eq!(&d[..8], &[0x08, 0, 0, 0, 0, 0, 7, 0]);
            let p = match framing {
                Framing::Ethernet => SlicedPacket::from_ethernet(&d[8..]).unwrap(),
                Framing::Ip => SlicedPacket::from_ip(&d[8..]).unwrap(),
            };
            let Some(TransportSlice::Udp(udp)) = p.transport else { panic!("no udp in segment {i}") };
            let chunk = &payload[i * mss as usize..payload_len.min((i + 1) * mss as usize)];
            assert_eq!(udp.length() as usize, 8 + chunk.len(), "udp length of segment {i}");
            let want = match p.net.as_ref().unwrap() {
                NetSlice::Ipv4(ip) => {
                    let h = ip.header().to_header();
                    assert_eq!(h.identification, 0x1234u16.wrapping_add(i as u16));
                    assert_eq!(h.header_checksum, h.calc_header_checksum(), "ip checksum of segment {i}");
                    assert_eq!(h.total_len as usize, 20 + 8 + chunk.len());
                    udp.to_header().calc_checksum_ipv4(&h, udp.payload()).unwrap()
                }
                NetSlice::Ipv6(ip) => udp.to_header().calc_checksum_ipv6(&ip.header().to_header(), udp.payload()).unwrap(),
            };
            assert_eq!(udp.checksum(), want, "udp checksum of segment {i}");
            assert_eq!(udp.source_port(), 4433);
            rebuilt.extend_from_slice(udp.payload());
        }
        assert_eq!(rebuilt, payload);
    }

    #[test]
    fn uso_ipv4_and_ipv6_with_a_short_last_datagram() {
        for framing in [Framing::Ethernet, Framing::Ip] {
            check_udp(framing, false, 1200 * 40, 1200);
            check_udp(framing, false, 1200 * 40 + 7, 1200);
            check_udp(framing, true, 1180 * 3 + 1, 1180);
            check_udp(framing, false, 300, 1200);
        }
    }

    #[test]
    fn uso_sends_a_zero_udp_checksum_as_all_ones() {
        // Make the last two payload bytes the checksum the datagram gets without them: the sum then
        // folds to 0xffff and the computed checksum is 0, which on the wire would mean "none".
        let mut payload = vec![0x5a; 100];
        payload[98..].copy_from_slice(&[0, 0]);
        let mut out = vec![0u8; 1000];
        let frame = udp_super_packet(Framing::Ethernet, false, &payload);
        let s = segment(&uso(1200), &frame, Framing::Ethernet, &vni(), &mut out).unwrap();
        let c = u16::from_be_bytes([out[8 + 34 + 6], out[8 + 34 + 7]]);
        payload[98..].copy_from_slice(&c.to_be_bytes());
        let frame = udp_super_packet(Framing::Ethernet, false, &payload);
        assert_eq!(segment(&uso(1200), &frame, Framing::Ethernet, &vni(), &mut out), Ok(s));
        assert_eq!(&out[8 + 34 + 6..8 + 34 + 8], &[0xff, 0xff]);
    }

    #[test]
    fn uso_refuses_a_udp_header_that_does_not_fit() {
        let frame = udp_super_packet(Framing::Ethernet, false, &[]);
        let mut out = vec![0u8; 1000];
        assert_eq!(segment(&uso(1200), &frame, Framing::Ethernet, &vni(), &mut out), Err(SegmentError::BadSize));
        assert_eq!(segment(&uso(1200), &frame[..38], Framing::Ethernet, &vni(), &mut out), Err(SegmentError::BadHeaders));
    }
}
