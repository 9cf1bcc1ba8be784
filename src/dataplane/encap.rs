//! TAP → underlay: FDB lookup and VXLAN encapsulation in place.
use super::{arp, flow, DropReason, TxVerdict, Vtep, FRAME_OFFSET, VXLAN_OFFSET};
use crate::wire::ethernet::{self, Frame, ETHERTYPE_ARP};
use crate::wire::vnet::VnetHdr;
use crate::wire::{checksum, put_be16, vxlan, MacAddr};
use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;

/// The table snapshots one batch is processed against.
pub struct TxTables<'a> {
    pub fdb: &'a FxHashMap<MacAddr, Ipv4Addr>,
    pub neigh: &'a FxHashMap<Ipv4Addr, MacAddr>,
}

/// Decides what to do with the frame at `buf[FRAME_OFFSET..FRAME_OFFSET + frame_len]`, whose
/// virtio-net header is `buf[..FRAME_OFFSET]`. On `Forward` the VXLAN header has been written at
/// `VXLAN_OFFSET` and any partial checksum completed, so the datagram is ready to send.
pub fn dispatch_frame(vtep: &Vtep, t: &TxTables<'_>, buf: &mut [u8], frame_len: usize) -> TxVerdict {
    if frame_len < ethernet::HEADER_LEN || buf.len() < FRAME_OFFSET + frame_len {
        return TxVerdict::Drop(DropReason::TxRunt);
    }
    let Ok(vnet) = VnetHdr::parse(&buf[..FRAME_OFFSET]) else {
        return TxVerdict::Drop(DropReason::TxBadVnetHdr);
    };
    let frame = &buf[FRAME_OFFSET..FRAME_OFFSET + frame_len];
    let Ok(eth) = Frame::new_checked(frame) else {
        return TxVerdict::Drop(DropReason::TxRunt);
    };
    if eth.ethertype() == ETHERTYPE_ARP {
        return arp::process_request(t.neigh, buf, frame_len);
    }
    if frame_len > vtep.mtu as usize + ethernet::HEADER_LEN && !vnet.is_gso() {
        return TxVerdict::Drop(DropReason::TxTooBig);
    }
    let dst_mac = eth.dst();
    if dst_mac.is_multicast() {
        return TxVerdict::Drop(DropReason::TxFlood);
    }
    let Some(&dst) = t.fdb.get(&dst_mac) else {
        return TxVerdict::Drop(DropReason::TxUnknownDstMac);
    };
    let frame = &mut buf[FRAME_OFFSET..FRAME_OFFSET + frame_len];
    if vnet.is_gso() {
        // Segmentation writes every checksum itself; nothing to complete here.
        return TxVerdict::Segment { dst, flow_hash: flow::hash(frame) };
    }
    if vnet.needs_csum() && !complete_checksum(frame, vnet.csum_start, vnet.csum_offset) {
        return TxVerdict::Drop(DropReason::TxBadVnetHdr);
    }
    let flow_hash = flow::hash(frame);
    vxlan::emit(&mut buf[VXLAN_OFFSET..FRAME_OFFSET], vtep.vni);
    TxVerdict::Forward { dst, flow_hash }
}

/// Finishes a checksum the kernel left partial (NEEDS_CSUM: the field holds the pseudo-header sum):
/// the underlay has no offload state, so a peer would otherwise see a wrong checksum.
/// Returns false if the offsets do not fit the frame.
pub fn complete_checksum(frame: &mut [u8], csum_start: u16, csum_offset: u16) -> bool {
    let start = csum_start as usize;
    let field = start + csum_offset as usize;
    if field + 2 > frame.len() {
        return false;
    }
    // The field may be UDP's, whose 0 would tell the receiver to skip the check.
    put_be16(frame, field, checksum::finish_nonzero(checksum::sum(&frame[start..], 0)));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::testvec;

    fn tables() -> (FxHashMap<MacAddr, Ipv4Addr>, FxHashMap<Ipv4Addr, MacAddr>) {
        let mut fdb = FxHashMap::default();
        fdb.insert(testvec::PEER_MAC, testvec::PEER_IP);
        let mut neigh = FxHashMap::default();
        neigh.insert(testvec::PEER_VTEP_IP, testvec::PEER_MAC);
        (fdb, neigh)
    }

    fn run(buf: &mut [u8], len: usize) -> TxVerdict {
        let (fdb, neigh) = tables();
        dispatch_frame(&testvec::vtep(), &TxTables { fdb: &fdb, neigh: &neigh }, buf, len)
    }

    #[test]
    fn encapsulates_known_mac_byte_exact() {
        let frame = testvec::icmp_frame(testvec::PEER_MAC, testvec::OUR_MAC);
        let mut buf = testvec::tap_buffer(&frame);
        let v = run(&mut buf, frame.len());
        assert!(matches!(v, TxVerdict::Forward { dst, .. } if dst == testvec::PEER_IP));
        assert_eq!(&buf[VXLAN_OFFSET..FRAME_OFFSET], &[0x08, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(&buf[FRAME_OFFSET..FRAME_OFFSET + frame.len()], &frame[..]);
    }

    #[test]
    fn drops_with_reasons() {
        let unknown = testvec::icmp_frame(MacAddr([2, 0, 0, 0, 0, 0x99]), testvec::OUR_MAC);
        let mut buf = testvec::tap_buffer(&unknown);
        assert_eq!(run(&mut buf, unknown.len()), TxVerdict::Drop(DropReason::TxUnknownDstMac));

        let bcast = testvec::icmp_frame(MacAddr::BROADCAST, testvec::OUR_MAC);
        let mut buf = testvec::tap_buffer(&bcast);
        assert_eq!(run(&mut buf, bcast.len()), TxVerdict::Drop(DropReason::TxFlood));

        let mut buf = testvec::tap_buffer(&bcast[..10]);
        assert_eq!(run(&mut buf, 10), TxVerdict::Drop(DropReason::TxRunt));

        let mut big = testvec::icmp_frame(testvec::PEER_MAC, testvec::OUR_MAC);
        big.resize(14 + 1451, 0);
        let mut buf = testvec::tap_buffer(&big);
        assert_eq!(run(&mut buf, big.len()), TxVerdict::Drop(DropReason::TxTooBig));
    }

    #[test]
    fn answers_arp_for_peer_vtep_ip() {
        let req = testvec::arp_request(testvec::PEER_VTEP_IP);
        let mut buf = testvec::tap_buffer(&req);
        let TxVerdict::Reply { len } = run(&mut buf, req.len()) else { panic!("no reply") };
        let reply = &buf[FRAME_OFFSET..FRAME_OFFSET + len];
        let eth = Frame::new_checked(reply).unwrap();
        assert_eq!(eth.dst(), testvec::OUR_MAC);
        assert_eq!(eth.src(), testvec::PEER_MAC);
        let a = crate::wire::arp::Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(a.operation(), crate::wire::arp::OP_REPLY);
        assert_eq!(a.sender_mac(), testvec::PEER_MAC);
        assert_eq!(a.sender_ip(), testvec::PEER_VTEP_IP);
        assert_eq!(a.target_ip(), testvec::OUR_VTEP_IP);

        let other = testvec::arp_request(Ipv4Addr::new(10, 244, 9, 0));
        let mut buf = testvec::tap_buffer(&other);
        assert_eq!(run(&mut buf, other.len()), TxVerdict::Drop(DropReason::TxArpUnknown));
    }

    #[test]
    fn completed_checksum_of_zero_is_sent_as_ffff() {
        // A UDP checksum that computes to 0 must go out as 0xffff: 0 means "no checksum" (RFC 768).
        let mut f = testvec::udp_frame(testvec::PEER_MAC, testvec::OUR_MAC, b"hello vxlan!");
        let pseudo = testvec::udp_pseudo_fold(&f);
        f[40..42].copy_from_slice(&pseudo.to_be_bytes());
        f[42..44].copy_from_slice(&[0, 0]);
        let rest = checksum::fold(checksum::sum(&f[34..], 0));
        f[42..44].copy_from_slice(&(0xffff - rest).to_be_bytes()); // now everything sums to 0xffff
        let mut buf = testvec::tap_buffer(&f);
        VnetHdr { flags: 1, csum_start: 34, csum_offset: 6, ..Default::default() }.emit(&mut buf[..12]);
        assert!(matches!(run(&mut buf, f.len()), TxVerdict::Forward { .. }));
        assert_eq!(&buf[FRAME_OFFSET + 40..FRAME_OFFSET + 42], &[0xff, 0xff]);
    }

    #[test]
    fn completes_partial_checksum_from_tap() {
        let good = testvec::udp_frame(testvec::PEER_MAC, testvec::OUR_MAC, b"hello vxlan");
        let mut partial = good.clone();
        let pseudo = testvec::udp_pseudo_fold(&partial);
        partial[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let mut buf = testvec::tap_buffer(&partial);
        VnetHdr { flags: 1, csum_start: 34, csum_offset: 6, ..Default::default() }.emit(&mut buf[..12]);
        assert!(matches!(run(&mut buf, partial.len()), TxVerdict::Forward { .. }));
        assert_eq!(&buf[FRAME_OFFSET..FRAME_OFFSET + good.len()], &good[..]);
    }
}
