//! `encap`: an arbitrary virtio-net header and frame, as read from the TAP, through `dispatch_frame`.
//!
//! Input: `vnet(12) | ctrl | lie | frame...`
//! - `ctrl & 1`: destination MAC := a peer's VTEP MAC (`ctrl & 2` picks which), so the FDB hits;
//! - `ctrl & 4`: EtherType := IPv4 and, if the frame is long enough, version 4, IHL 5 at least, and
//!   total length = the frame's;
//! - `ctrl & 8`: a partial checksum as the kernel leaves it: NEEDS_CSUM, csum_start/offset at the
//!   TCP (`ctrl & 16`) or UDP checksum field, which holds the pseudo-header sum;
//! - `ctrl & 32`: gso_type := none;
//! - `lie & 0x80`: `frame_len` claims `lie & 0x7f` more bytes than the buffer holds.
//!
//! Checked against a reference of the send-side rules: the verdict and its drop reason; `Forward`
//! only for a unicast FDB hit within the MTU, with the VXLAN header for our VNI written in front,
//! the frame unchanged but for the two checksum bytes, which are the completed checksum (and which
//! etherparse verifies when the repair made a real TCP/UDP packet); `Segment` only for GSO frames,
//! buffer untouched; every drop leaves the buffer untouched.
use super::*;
use vtepd::dataplane::encap::{dispatch_frame, TxTables};
use vtepd::dataplane::{flow, DropReason, TxVerdict, FRAME_OFFSET, VXLAN_OFFSET};

pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let mut vnet = b.array::<12>();
    let (ctrl, lie) = (b.u8(), b.u8());
    let mut frame = b.rest().to_vec();
    repair(&mut vnet, ctrl, &mut frame);
    let mut buf = [&vnet[..], &frame].concat();
    let frame_len = frame.len() + if lie & 0x80 != 0 { (lie & 0x7f) as usize } else { 0 };
    let before = buf.clone();
    let (fdb, neigh) = (fdb(), neigh());

    let verdict = dispatch_frame(&vtep(), &TxTables { fdb: &fdb, neigh: &neigh }, &mut buf, frame_len);

    let expected = reference(&before, frame_len);
    match verdict {
        TxVerdict::Reply { .. } | TxVerdict::Drop(DropReason::TxArpOther | DropReason::TxArpUnknown) => {
            assert_eq!(expected, Expect::Arp, "{verdict:?}");
            super::arp::check_arp_verdict(verdict, &before, &buf, frame_len);
        }
        TxVerdict::Drop(r) => {
            assert_eq!(expected, Expect::Drop(r));
            assert!(buf == before, "a dropped frame's buffer was written");
        }
        TxVerdict::Segment { dst, flow_hash } => {
            assert_eq!(expected, Expect::Segment(dst));
            assert!(buf == before, "a super-frame is segmented later, from the untouched buffer");
            assert_eq!(flow_hash, flow::hash(&buf[FRAME_OFFSET..FRAME_OFFSET + frame_len]));
        }
        TxVerdict::Forward { dst, flow_hash } => {
            assert_eq!(expected, Expect::Forward(dst));
            check_forward(&before, &buf, frame_len);
            assert_eq!(flow_hash, flow::hash(&buf[FRAME_OFFSET..FRAME_OFFSET + frame_len]));
        }
    }
}

fn repair(vnet: &mut [u8; 12], ctrl: u8, frame: &mut [u8]) {
    if ctrl & 1 != 0 && frame.len() >= 6 {
        frame[..6].copy_from_slice(&PEER_MACS[(ctrl >> 1 & 1) as usize].0);
    }
    let ihl = frame.get(14).map_or(20, |b| ((b & 15) as usize * 4).max(20));
    if ctrl & 4 != 0 && frame.len() >= 14 {
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        if frame.len() >= 14 + ihl {
            frame[14] = 0x40 | (ihl / 4) as u8;
            put16(frame, 16, (frame.len() - 14) as u16);
        }
    }
    if ctrl & 8 != 0 {
        let (proto, off) = if ctrl & 16 != 0 { (6, 16) } else { (17, 6) };
        let start = 14 + ihl;
        vnet[0] |= 1;
        vnet[6..8].copy_from_slice(&(start as u16).to_le_bytes());
        vnet[8..10].copy_from_slice(&(off as u16).to_le_bytes());
        if frame.len() >= start + off + 2 {
            frame[14 + 9] = proto;
            let l4 = frame.len() - start;
            let pseudo = ref_sum(&[], ref_pseudo_v4(frame[26..30].try_into().unwrap(), frame[30..34].try_into().unwrap(), proto, l4));
            put16(frame, start + off, pseudo);
        }
    }
    if ctrl & 32 != 0 {
        vnet[1] = 0;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Drop(DropReason),
    Arp,
    Segment(Ipv4Addr),
    Forward(Ipv4Addr),
}

/// The send-side rules, in vtepd's order, written from its documentation.
fn reference(buf: &[u8], frame_len: usize) -> Expect {
    if frame_len < 14 || buf.len() < FRAME_OFFSET + frame_len {
        return Expect::Drop(DropReason::TxRunt);
    }
    let (vnet, f) = (&buf[..FRAME_OFFSET], &buf[FRAME_OFFSET..FRAME_OFFSET + frame_len]);
    let gso = vnet[1] & 0x7f != 0;
    if f[12..14] == [0x08, 0x06] {
        return Expect::Arp;
    }
    if frame_len > MTU as usize + 14 && !gso {
        return Expect::Drop(DropReason::TxTooBig);
    }
    if f[0] & 1 != 0 {
        return Expect::Drop(DropReason::TxFlood);
    }
    let Some(i) = PEER_MACS.iter().position(|m| m.0 == f[..6]) else {
        return Expect::Drop(DropReason::TxUnknownDstMac);
    };
    if gso {
        return Expect::Segment(PEER_IPS[i]);
    }
    let field = u16::from_le_bytes([vnet[6], vnet[7]]) as usize + u16::from_le_bytes([vnet[8], vnet[9]]) as usize;
    if vnet[0] & 1 != 0 && field + 2 > frame_len {
        return Expect::Drop(DropReason::TxBadVnetHdr);
    }
    Expect::Forward(PEER_IPS[i])
}

fn check_forward(before: &[u8], after: &[u8], frame_len: usize) {
    assert_eq!(after[..VXLAN_OFFSET], before[..VXLAN_OFFSET], "slack before the VXLAN header");
    assert_eq!(after[VXLAN_OFFSET..FRAME_OFFSET], [0x08, 0, 0, 0, 0, 0, VNI as u8, 0], "VXLAN header");
    assert_eq!(after[FRAME_OFFSET + frame_len..], before[FRAME_OFFSET + frame_len..], "bytes after the frame");
    let (old, new) = (&before[FRAME_OFFSET..FRAME_OFFSET + frame_len], &after[FRAME_OFFSET..FRAME_OFFSET + frame_len]);
    if before[0] & 1 == 0 {
        assert_eq!(old, new, "frame changed without NEEDS_CSUM");
        return;
    }
    let start = u16::from_le_bytes([before[6], before[7]]) as usize;
    let field = start + u16::from_le_bytes([before[8], before[9]]) as usize;
    for i in (0..frame_len).filter(|i| !(field..field + 2).contains(i)) {
        assert_eq!(old[i], new[i], "byte {i} changed; only the checksum at {field} may");
    }
    // NEEDS_CSUM semantics (virtio spec 5.1.6.2): the one's-complement sum from csum_start to the end,
    // with the field holding the pseudo-header sum, complemented, is the checksum to store; like
    // the kernel's skb_checksum_help, a 0 is stored as 0xffff (for UDP, 0 would mean "no checksum").
    let want = match !ref_sum(&old[start..], 0) {
        0 => 0xffff,
        c => c,
    };
    assert_eq!(be16(new, field), want, "completed checksum");
    // Where the repair built a real partial TCP/UDP packet, an independent parser must agree.
    if let Ok(p) = etherparse::SlicedPacket::from_ethernet(new) {
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { return };
        let h = ip.header();
        // Only when the field held what NEEDS_CSUM promises: the pseudo-header sum of this packet.
        let l4 = frame_len - start;
        let pseudo = ref_sum(&[], ref_pseudo_v4(h.source(), h.destination(), h.protocol().0, l4));
        let exact = h.total_len() as usize == frame_len - 14
            && start == 14 + h.slice().len()
            && !ip.is_payload_fragmented()
            && be16(old, field) == pseudo;
        match &p.transport {
            Some(etherparse::TransportSlice::Tcp(t)) if exact && field == start + 16 => {
                let want = t.calc_checksum_ipv4(h.source(), h.destination()).unwrap();
                assert!(same_ones_complement(t.checksum(), want), "TCP checksum {:#x}, want {want:#x}", t.checksum());
            }
            Some(etherparse::TransportSlice::Udp(u)) if exact && field == start + 6 && u.length() as usize == l4 => {
                let want = u.to_header().calc_checksum_ipv4_raw(h.source(), h.destination(), u.payload()).unwrap();
                assert_eq!(u.checksum(), want, "UDP checksum");
            }
            _ => {}
        }
    }
}

/// 0x0000 and 0xffff are the same number in one's complement (both verify); etherparse computes 0
/// where vtepd, like the kernel, stores 0xffff.
fn same_ones_complement(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

/// An input for `run`: the given vnet header and frame, no repairs.
pub fn encode(vnet: [u8; 12], ctrl: u8, frame: &[u8]) -> Vec<u8> {
    [&vnet[..], &[ctrl, 0], frame].concat()
}
