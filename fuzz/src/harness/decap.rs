//! `vxlan_decap`: an arbitrary UDP payload from an arbitrary source through `process_datagram`.
//!
//! Input: `sel | lie | tail | [src(4)] | datagram...`
//! - `sel & 3`: the source is peer 0, peer 1, a stranger, or (3) the next four bytes.
//! - `lie & 0x80`: the driver passes `len` = datagram length + `lie & 0x7f` (longer than received).
//! - `tail % 64`: spare bytes after the datagram in the buffer (a slot is bigger than a datagram).
//!
//! Checked: the verdict equals a reference re-implementation of RFC 7348 receive checks (so every
//! fault maps to its own drop reason); a drop leaves the buffer untouched; a delivery points inside
//! the buffer at the unchanged inner frame, with a virtio-net header that is all zeros or a
//! NEEDS_CSUM hint exactly where etherparse finds a TCP/UDP checksum field holding the
//! pseudo-header sum.
use super::*;
use vtepd::dataplane::decap::process_datagram;
use vtepd::dataplane::{DropReason, RxVerdict, FRAME_OFFSET, VXLAN_OFFSET};

const SLACK_FILL: u8 = 0xa5;

pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let (sel, lie, tail) = (b.u8(), b.u8(), (b.u8() % 64) as usize);
    let src = match sel & 3 {
        0 => PEER_IPS[0],
        1 => PEER_IPS[1],
        2 => STRANGER,
        _ => Ipv4Addr::from(b.array::<4>()),
    };
    let dgram = b.rest();
    let mut buf = vec![SLACK_FILL; VXLAN_OFFSET + dgram.len() + tail];
    buf[VXLAN_OFFSET..VXLAN_OFFSET + dgram.len()].copy_from_slice(dgram);
    let len = dgram.len() + if lie & 0x80 != 0 { (lie & 0x7f) as usize } else { 0 };
    let before = buf.clone();

    let verdict = process_datagram(&vtep(), &peers(), src, &mut buf, len, 1);

    let expected = reference(src, &before, len);
    match verdict {
        RxVerdict::Drop(r) => {
            assert_eq!(Err(r), expected, "drop reason");
            assert!(buf == before, "a dropped datagram's buffer was written");
        }
        RxVerdict::Deliver { frame_len } => {
            assert_eq!(Ok(()), expected, "delivered");
            assert_eq!(frame_len, len - 8);
            assert!(FRAME_OFFSET + frame_len <= buf.len(), "frame range out of the buffer");
            assert!(frame_len >= 14);
            let frame = &buf[FRAME_OFFSET..FRAME_OFFSET + frame_len];
            assert_eq!(frame, &before[FRAME_OFFSET..FRAME_OFFSET + frame_len], "inner frame modified");
            assert_eq!(&buf[FRAME_OFFSET + frame_len..], &before[FRAME_OFFSET + frame_len..], "bytes after the frame");
            assert_eq!(buf[..FRAME_OFFSET], expected_vnet(frame), "vnet header for {frame:02x?}");
        }
    }
}

/// RFC 7348 receive rules as vtepd applies them, written independently of `decap::validate`.
fn reference(src: Ipv4Addr, buf: &[u8], len: usize) -> Result<(), DropReason> {
    let Some(d) = buf.get(VXLAN_OFFSET..VXLAN_OFFSET + len) else { return Err(DropReason::RxTruncated) };
    if !PEER_IPS.contains(&src) {
        return Err(DropReason::RxUnknownSource);
    }
    if d.len() < 8 {
        return Err(DropReason::RxTruncated);
    }
    if d[0] & 0x08 == 0 {
        return Err(DropReason::RxNoIFlag);
    }
    if d[0] != 0x08 || d[1..4] != [0, 0, 0] || d[7] != 0 {
        return Err(DropReason::RxReservedBits);
    }
    if be32(d, 4) >> 8 != VNI {
        return Err(DropReason::RxWrongVni);
    }
    if d.len() < 8 + 14 {
        return Err(DropReason::RxInnerRunt);
    }
    if d[8..14] != OUR_MAC.0 && d[8] & 1 == 0 {
        return Err(DropReason::RxNotForUs);
    }
    if d[14..20] == OUR_MAC.0 {
        return Err(DropReason::RxOwnSourceMac);
    }
    Ok(())
}

/// The 12-byte virtio-net header vtepd should write before `frame`: a NEEDS_CSUM hint iff the frame
/// is unfragmented IPv4 TCP/UDP whose checksum field holds exactly the pseudo-header sum (and, for
/// UDP, is not 0, "no checksum").
fn expected_vnet(frame: &[u8]) -> [u8; 12] {
    let none = [0u8; 12];
    if frame[12..14] != [0x08, 0x00] {
        return none;
    }
    // etherparse's strict slice refuses what vtepd's `ipv4::Packet::new_checked` refuses: a version
    // other than 4, IHL < 5, total length below the IHL or beyond the buffer.
    let Ok(ip) = etherparse::Ipv4Slice::from_slice(&frame[14..]) else { return none };
    let h = ip.header();
    let (proto, off) = match h.protocol() {
        etherparse::IpNumber::TCP => (6, 16),
        etherparse::IpNumber::UDP => (17, 6),
        _ => return none,
    };
    let l4 = ip.payload().payload;
    if h.more_fragments() || h.fragments_offset().value() != 0 || l4.len() < off + 2 {
        return none;
    }
    let field = be16(l4, off);
    let pseudo = ref_sum(&[], ref_pseudo_v4(h.source(), h.destination(), proto, l4.len()));
    if field != pseudo || (proto == 17 && field == 0) {
        return none;
    }
    let start = (14 + h.slice().len()) as u16;
    let mut v = none;
    v[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    v[6..8].copy_from_slice(&start.to_le_bytes());
    v[8..10].copy_from_slice(&(off as u16).to_le_bytes());
    v
}

/// An input for `run`: source selector, the datagram, no lies.
pub fn encode(src: Ipv4Addr, dgram: &[u8]) -> Vec<u8> {
    let mut v = match PEER_IPS.iter().position(|p| *p == src) {
        Some(i) => vec![i as u8, 0, 0],
        None if src == STRANGER => vec![2, 0, 0],
        None => [&[3u8, 0, 0][..], &src.octets()].concat(),
    };
    v.extend_from_slice(dgram);
    v
}
