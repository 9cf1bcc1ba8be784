//! IPv4 header (RFC 791), the parts a tunnel endpoint reads and rewrites.
//!
//! ```text
//!  0                   1                   2                   3
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |Type of Service|          Total Length         |
//! |         Identification        |Flags|      Fragment Offset    |
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
use super::{be16, checksum, put_be16, Result, WireError};
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Accepts only a version-4 header whose IHL and total length fit the buffer; the buffer may be
    /// longer than total length (Ethernet padding).
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let p = Packet { buf };
        if p.version() != 4 || p.header_len() < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        let total = p.total_len() as usize;
        if total < p.header_len() {
            return Err(WireError::Malformed);
        }
        if total > p.buf.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER_IHL] >> 4
    }

    pub fn header_len(&self) -> usize {
        ((self.buf.as_ref()[field::VER_IHL] & 0x0f) as usize) * 4
    }

    pub fn tos(&self) -> u8 {
        self.buf.as_ref()[field::TOS]
    }

    pub fn total_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::LENGTH)
    }

    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// True for any fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        let f = be16(self.buf.as_ref(), field::FLAGS_FRAG);
        f & FLAG_MF != 0 || f & FRAG_OFFSET_MASK != 0
    }

    /// More fragments follow this one.
    pub fn more_frags(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in 8-byte units; non-zero only for a non-initial fragment.
    pub fn frag_offset(&self) -> u16 {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & FRAG_OFFSET_MASK
    }

    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }

    pub fn src(&self) -> Ipv4Addr {
        addr_at(self.buf.as_ref(), field::SRC)
    }

    pub fn dst(&self) -> Ipv4Addr {
        addr_at(self.buf.as_ref(), field::DST)
    }

    pub fn header_checksum_ok(&self) -> bool {
        checksum::fold(checksum::sum(&self.buf.as_ref()[..self.header_len()], 0)) == 0xffff
    }

    /// The L4 payload, bounded by total length (not by the buffer, which may carry padding).
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {

    pub fn set_total_len(&mut self, v: u16) {
        put_be16(self.buf.as_mut(), field::LENGTH, v);
    }

    pub fn set_ident(&mut self, v: u16) {
        put_be16(self.buf.as_mut(), field::IDENT, v);
    }

    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        put_be16(self.buf.as_mut(), field::CHECKSUM, 0);
        let c = checksum::finish(checksum::sum(&self.buf.as_ref()[..hl], 0));
        put_be16(self.buf.as_mut(), field::CHECKSUM, c);
    }
}

fn addr_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// The fields of a header vtepd builds itself (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub payload_len: u16,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Repr {
    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// Writes a 20-byte header with a correct checksum into `buf[..20]`.
    pub fn emit(&self, buf: &mut [u8]) {
        let total = self.payload_len + MIN_HEADER_LEN as u16;
        let flags = if self.dont_frag { FLAG_DF } else { 0 };
        let h = &mut buf[..MIN_HEADER_LEN];
        h[0] = 0x45;
        h[1] = self.tos;
        put_be16(h, field::LENGTH, total);
        put_be16(h, field::IDENT, self.ident);
        put_be16(h, field::FLAGS_FRAG, flags);
        h[field::TTL] = self.ttl;
        h[field::PROTOCOL] = self.protocol;
        put_be16(h, field::CHECKSUM, 0);
        h[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
        h[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
        let c = checksum::finish(checksum::sum(h, 0));
        put_be16(h, field::CHECKSUM, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ICMP echo 10.244.1.0 -> 10.244.2.0 (checksum computed independently, and cross-checked below).
    pub(crate) const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x54, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0x05, 0x7c, 10, 244, 1, 0, 10, 244, 2, 0,
    ];

    fn with_payload() -> Vec<u8> {
        let mut v = HDR.to_vec();
        v.resize(0x54, 0);
        v
    }

    #[test]
    fn parse() {
        let v = with_payload();
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 84);
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.protocol(), PROTO_ICMP);
        assert_eq!(p.src(), Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 244, 2, 0));
        assert!(p.header_checksum_ok());
        assert_eq!(p.payload().len(), 64);
    }

    #[test]
    fn emit_matches_vector() {
        let r = Repr {
            src: Ipv4Addr::new(10, 244, 1, 0),
            dst: Ipv4Addr::new(10, 244, 2, 0),
            protocol: PROTO_ICMP,
            payload_len: 64,
            ttl: 64,
            tos: 0,
            ident: 0x1c46,
            dont_frag: true,
        };
        let mut b = [0u8; 20];
        r.emit(&mut b);
        assert_eq!(b, HDR);
    }

    #[test]
    fn cross_check_with_etherparse() {
        let v = with_payload();
        let (h, _) = etherparse::Ipv4Header::from_slice(&v).unwrap();
        assert_eq!(h.header_checksum, Packet::new_checked(&v[..]).unwrap().checksum());
        assert_eq!(h.calc_header_checksum(), 0x057c);
    }

    #[test]
    fn refuses_lies() {
        let mut v = with_payload();
        v[0] = 0x44; // IHL 16 bytes
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), WireError::Malformed);
        let mut v = with_payload();
        v[2] = 0x10; // total length beyond the buffer
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), WireError::Truncated);
        let mut v = with_payload();
        v[0] = 0x65;
        assert_eq!(Packet::new_checked(&v[..]).unwrap_err(), WireError::Malformed);
        assert_eq!(Packet::new_checked(&HDR[..19]).unwrap_err(), WireError::Truncated);
    }
}
