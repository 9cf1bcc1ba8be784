//! Local ARP answers for peers' VTEP addresses (proxy ARP from the neighbour table).
//!
//! Flannel relies on permanent kernel neighbour entries; if they are flushed, the kernel ARPs on the
//! device and nobody would answer. vtepd answers from its own table instead, so the overlay heals
//! itself. Requests for anything else are dropped: there is no flooding to ask the remote side.
use super::{DropReason, TxVerdict, FRAME_OFFSET};
use crate::wire::arp::{self, OP_REPLY, OP_REQUEST};
use crate::wire::ethernet::{self, Frame};
use crate::wire::vnet::VnetHdr;
use crate::wire::MacAddr;
use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;

/// Answers an ARP request found at `buf[FRAME_OFFSET..]` by rewriting the buffer into the reply.
pub fn process_request(neigh: &FxHashMap<Ipv4Addr, MacAddr>, buf: &mut [u8], frame_len: usize) -> TxVerdict {
    let frame = &buf[FRAME_OFFSET..FRAME_OFFSET + frame_len];
    let Ok(req) = arp::Packet::new_checked(&frame[ethernet::HEADER_LEN..]) else {
        return TxVerdict::Drop(DropReason::TxArpOther);
    };
    if req.operation() != OP_REQUEST {
        return TxVerdict::Drop(DropReason::TxArpOther);
    }
    let Some(&answer) = neigh.get(&req.target_ip()) else {
        return TxVerdict::Drop(DropReason::TxArpUnknown);
    };
    let reply = arp::Repr {
        operation: OP_REPLY,
        sender_mac: answer,
        sender_ip: req.target_ip(),
        target_mac: req.sender_mac(),
        target_ip: req.sender_ip(),
    };
    let len = ethernet::HEADER_LEN + arp::PACKET_LEN;
    VnetHdr::default().emit(&mut buf[..FRAME_OFFSET]);
    let frame = &mut buf[FRAME_OFFSET..FRAME_OFFSET + len];
    reply.emit(&mut frame[ethernet::HEADER_LEN..]);
    // `new_checked` cannot fail: the slice is 42 bytes.
    if let Ok(mut eth) = Frame::new_checked(frame) {
        eth.set_dst(reply.target_mac);
        eth.set_src(answer);
        eth.set_ethertype(ethernet::ETHERTYPE_ARP);
    }
    TxVerdict::Reply { len }
}
