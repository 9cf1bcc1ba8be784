//! VXLAN header (RFC 7348 §5).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! The RFC says reserved bits are ignored on receipt; like the Linux driver (which refuses flags it
//! does not understand, since GBP/GPE reuse them) we refuse them, so a peer speaking an extension we
//! don't implement is counted instead of misread.
use super::{Result, WireError};
use std::fmt;

pub const HEADER_LEN: usize = 8;
pub const FLAG_I: u8 = 0x08;
pub const IANA_PORT: u16 = 4789;

/// A 24-bit VXLAN Network Identifier; cannot hold an out-of-range value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Vni(u32);

impl Vni {
    pub const MAX: u32 = (1 << 24) - 1;

    pub fn new(v: u32) -> Option<Vni> {
        (v <= Self::MAX).then_some(Vni(v))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What is wrong with a VXLAN header, most basic first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFault {
    NoIFlag,
    ReservedBits,
}

#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buf: T) -> Result<Self> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buf })
    }

    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[0]
    }

    pub fn vni(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// Checks the flag byte and all reserved fields.
    pub fn fault(&self) -> Option<HeaderFault> {
        let b = self.buf.as_ref();
        if b[0] & FLAG_I == 0 {
            return Some(HeaderFault::NoIFlag);
        }
        if b[0] != FLAG_I || b[1] | b[2] | b[3] | b[7] != 0 {
            return Some(HeaderFault::ReservedBits);
        }
        None
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

/// Writes a VXLAN header with the I flag and `vni` into the first 8 bytes of `buf`.
#[inline]
pub fn emit(buf: &mut [u8], vni: Vni) {
    let v = vni.0.to_be_bytes();
    buf[..HEADER_LEN].copy_from_slice(&[FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const HDR: [u8; 8] = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0];

    #[test]
    fn parse() {
        let p = Packet::new_checked(&HDR[..]).unwrap();
        assert_eq!(p.vni(), 0x123456);
        assert_eq!(p.fault(), None);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn emit_matches_vector() {
        let mut b = [0xffu8; 8];
        emit(&mut b, Vni::new(0x123456).unwrap());
        assert_eq!(b, HDR);
    }

    #[test]
    fn faults() {
        let mut h = HDR;
        h[0] = 0;
        assert_eq!(Packet::new_checked(&h[..]).unwrap().fault(), Some(HeaderFault::NoIFlag));
        let mut h = HDR;
        h[0] = 0x88; // GBP bit
        assert_eq!(Packet::new_checked(&h[..]).unwrap().fault(), Some(HeaderFault::ReservedBits));
        let mut h = HDR;
        h[7] = 1;
        assert_eq!(Packet::new_checked(&h[..]).unwrap().fault(), Some(HeaderFault::ReservedBits));
    }

    #[test]
    fn vni_range() {
        assert!(Vni::new(Vni::MAX).is_some());
        assert!(Vni::new(Vni::MAX + 1).is_none());
    }
}
