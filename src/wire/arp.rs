//! ARP for IPv4 over Ethernet (RFC 826): the only form a VTEP answers.
//!
//! ```text
//! htype(2)=1 ptype(2)=0x0800 hlen(1)=6 plen(1)=4 oper(2)
//! sha(6) spa(4) tha(6) tpa(4)
//! ```
use super::ethernet::mac_at;
use super::{be16, put_be16, MacAddr, Result, WireError};
use std::net::Ipv4Addr;

pub const PACKET_LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Accepts only Ethernet/IPv4 ARP (the fixed 28-byte form).
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if be16(b, 0) != 1 || be16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(WireError::Malformed);
        }
        Ok(Packet { buf })
    }

    pub fn operation(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }

    pub fn sender_mac(&self) -> MacAddr {
        mac_at(self.buf.as_ref(), 8)
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        ip_at(self.buf.as_ref(), 14)
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        ip_at(self.buf.as_ref(), 24)
    }
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// An ARP message to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub operation: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl Repr {
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..PACKET_LEN];
        put_be16(b, 0, 1);
        put_be16(b, 2, 0x0800);
        b[4] = 6;
        b[5] = 4;
        put_be16(b, 6, self.operation);
        b[8..14].copy_from_slice(&self.sender_mac.0);
        b[14..18].copy_from_slice(&self.sender_ip.octets());
        b[18..24].copy_from_slice(&self.target_mac.0);
        b[24..28].copy_from_slice(&self.target_ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: [u8; 28] = [
        0, 1, 8, 0, 6, 4, 0, 1, // htype ptype hlen plen op=request
        2, 0, 0, 0, 0, 1, 10, 244, 1, 0, // sha spa
        0, 0, 0, 0, 0, 0, 10, 244, 2, 0, // tha tpa
    ];

    #[test]
    fn parse() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_mac(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.sender_ip(), Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(p.target_ip(), Ipv4Addr::new(10, 244, 2, 0));
    }

    #[test]
    fn emit_matches_vector() {
        let r = Repr {
            operation: OP_REQUEST,
            sender_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            sender_ip: Ipv4Addr::new(10, 244, 1, 0),
            target_mac: MacAddr::default(),
            target_ip: Ipv4Addr::new(10, 244, 2, 0),
        };
        let mut b = [0xffu8; 28];
        r.emit(&mut b);
        assert_eq!(b, REQUEST);
    }

    #[test]
    fn refuses_other_hardware() {
        let mut v = REQUEST;
        v[5] = 16; // IPv6-sized protocol address
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), WireError::Malformed);
        assert_eq!(Packet::new_checked(&REQUEST[..27]).unwrap_err(), WireError::Truncated);
    }
}
