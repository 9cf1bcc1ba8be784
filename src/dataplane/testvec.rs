//! Test frames, built with etherparse so the core is checked against an independent encoder.
#![cfg(test)]
use super::{Vtep, FRAME_OFFSET};
use crate::wire::{vxlan::Vni, MacAddr};
use std::net::Ipv4Addr;

pub const OUR_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
pub const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
pub const OUR_VTEP_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 0);
pub const PEER_VTEP_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 0);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

pub fn vtep() -> Vtep {
    Vtep { vni: Vni::new(1).unwrap(), mac: OUR_MAC, ip: OUR_VTEP_IP, mtu: 1450 }
}

/// A zeroed vnet header followed by `frame`, with room to spare.
pub fn tap_buffer(frame: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; FRAME_OFFSET + frame.len() + 64];
    b[FRAME_OFFSET..FRAME_OFFSET + frame.len()].copy_from_slice(frame);
    b
}

pub fn icmp_frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4([10, 244, 1, 0], [10, 244, 2, 0], 64)
        .icmpv4_echo_request(7, 1);
    let payload = [0x5au8; 56];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

pub fn udp_frame(dst: MacAddr, src: MacAddr, payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4([10, 244, 1, 2], [10, 244, 2, 2], 64)
        .udp(40000, 5001);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

pub fn tcp_frame(dst: MacAddr, src: MacAddr, payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4([10, 244, 1, 2], [10, 244, 2, 2], 64)
        .tcp(40000, 5001, 1000, 64000)
        .ack(1)
        .psh();
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// The folded pseudo-header sum of a UDP-in-IPv4 frame: what a partial checksum field holds.
pub fn udp_pseudo_fold(frame: &[u8]) -> u16 {
    pseudo_fold(frame, crate::wire::ipv4::PROTO_UDP)
}

pub fn pseudo_fold(frame: &[u8], proto: u8) -> u16 {
    let ip = crate::wire::ipv4::Packet::new_checked(&frame[14..]).unwrap();
    let l4 = ip.total_len() - ip.header_len() as u16;
    crate::wire::checksum::fold(crate::wire::checksum::pseudo_header_v4(ip.src(), ip.dst(), proto, l4))
}

pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    f[..6].copy_from_slice(&MacAddr::BROADCAST.0);
    f[6..12].copy_from_slice(&OUR_MAC.0);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    crate::wire::arp::Repr {
        operation: crate::wire::arp::OP_REQUEST,
        sender_mac: OUR_MAC,
        sender_ip: OUR_VTEP_IP,
        target_mac: MacAddr::default(),
        target_ip: target,
    }
    .emit(&mut f[14..]);
    f
}

/// A UDP payload as a peer sends it: VXLAN header (VNI 1) + `frame`, placed at the receive offset.
pub fn datagram_buffer(vxlan_hdr: [u8; 8], frame: &[u8]) -> (Vec<u8>, usize) {
    let mut b = vec![0u8; super::VXLAN_OFFSET];
    b.extend_from_slice(&vxlan_hdr);
    b.extend_from_slice(frame);
    let len = b.len() - super::VXLAN_OFFSET;
    b.resize(b.len() + 64, 0);
    (b, len)
}
