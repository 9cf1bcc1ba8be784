//! `arp`: an arbitrary frame with the ARP EtherType through `dispatch_frame` (as read from the TAP).
//!
//! Input: `vnet(12) | ctrl | lie | frame...` (the frame is zero-padded to 14 bytes and gets
//! EtherType 0x0806).
//! - `ctrl & 1`: write the Ethernet/IPv4 ARP preamble (htype 1, ptype 0x0800, hlen 6, plen 4);
//! - `ctrl & 2`: operation := request;
//! - `ctrl & 4`: target IP := a neighbour-table IP (`ctrl & 8` picks which);
//! - `lie & 0x80`: `frame_len` claims `lie & 0x7f` more bytes than the buffer holds.
//!
//! Checked: the verdict matches RFC 826 as vtepd answers it (reply only to a request for an IP in
//! the neighbour table, else `TxArpUnknown` / `TxArpOther`), and a reply, parsed by hand at fixed
//! offsets, is a well-formed Ethernet/IPv4 ARP reply from the neighbour's MAC to the asker.
use super::*;
use vtepd::dataplane::encap::{dispatch_frame, TxTables};
use vtepd::dataplane::{DropReason, TxVerdict, FRAME_OFFSET};

pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let vnet = b.array::<12>();
    let (ctrl, lie) = (b.u8(), b.u8());
    let mut frame = b.rest().to_vec();
    if frame.len() < 14 {
        frame.resize(14, 0);
    }
    frame[12..14].copy_from_slice(&[0x08, 0x06]);
    if ctrl & 1 != 0 && frame.len() >= 14 + 6 {
        frame[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
    }
    if ctrl & 2 != 0 && frame.len() >= 14 + 8 {
        frame[20..22].copy_from_slice(&[0, 1]);
    }
    if ctrl & 4 != 0 && frame.len() >= 14 + 28 {
        frame[38..42].copy_from_slice(&PEER_VTEP_IPS[(ctrl >> 3 & 1) as usize].octets());
    }
    let mut buf = [&vnet[..], &frame].concat();
    let frame_len = frame.len() + if lie & 0x80 != 0 { (lie & 0x7f) as usize } else { 0 };
    let before = buf.clone();
    let (fdb, neigh) = (fdb(), neigh());

    let verdict = dispatch_frame(&vtep(), &TxTables { fdb: &fdb, neigh: &neigh }, &mut buf, frame_len);

    if FRAME_OFFSET + frame_len > buf.len() {
        assert_eq!(verdict, TxVerdict::Drop(DropReason::TxRunt), "length beyond the buffer");
        assert!(buf == before);
        return;
    }
    check_arp_verdict(verdict, &before, &buf, frame_len);
}

/// Checks the verdict on an ARP frame `before[FRAME_OFFSET..][..frame_len]` (shared with `encap`).
pub fn check_arp_verdict(verdict: TxVerdict, before: &[u8], after: &[u8], frame_len: usize) {
    let req = &before[FRAME_OFFSET..FRAME_OFFSET + frame_len];
    let expected = if req.len() < 14 + 28 || req[14..20] != [0, 1, 8, 0, 6, 4] || req[20..22] != [0, 1] {
        Err(DropReason::TxArpOther)
    } else {
        let target = Ipv4Addr::new(req[38], req[39], req[40], req[41]);
        neigh().get(&target).copied().ok_or(DropReason::TxArpUnknown)
    };
    match verdict {
        TxVerdict::Drop(r) => {
            assert_eq!(Err(r), expected.map(|_| ()), "ARP drop reason");
            assert!(after == before, "a dropped ARP frame's buffer was written");
        }
        TxVerdict::Reply { len } => {
            let Ok(answer) = expected else { panic!("replied to {req:02x?}, expected {expected:?}") };
            assert_eq!(len, 42, "an Ethernet/IPv4 ARP reply is 42 bytes");
            assert_eq!(after[..FRAME_OFFSET], [0u8; 12], "a reply carries no offload flags");
            let r = &after[FRAME_OFFSET..FRAME_OFFSET + len];
            assert_eq!(r[0..6], req[22..28], "Ethernet destination = the asker's hardware address");
            assert_eq!(r[6..12], answer.0, "Ethernet source = the neighbour's MAC");
            assert_eq!(r[12..14], [0x08, 0x06]);
            assert_eq!(r[14..22], [0, 1, 8, 0, 6, 4, 0, 2], "ARP preamble, operation reply");
            assert_eq!(r[22..28], answer.0, "sender hardware address");
            assert_eq!(r[28..32], req[38..42], "sender protocol address = the asked-for IP");
            assert!(PEER_VTEP_IPS.contains(&Ipv4Addr::new(r[28], r[29], r[30], r[31])));
            assert_eq!(r[32..38], req[22..28], "target hardware address = the asker's");
            assert_eq!(r[38..42], req[28..32], "target protocol address = the asker's");
            assert_eq!(after[FRAME_OFFSET + len..], before[FRAME_OFFSET + len..], "bytes past the reply");
        }
        other => panic!("{other:?} for an ARP frame"),
    }
}

/// An input for `run`: zero vnet header, no repairs, the frame as given.
pub fn encode(ctrl: u8, frame: &[u8]) -> Vec<u8> {
    [&[0u8; 12][..], &[ctrl, 0], frame].concat()
}
