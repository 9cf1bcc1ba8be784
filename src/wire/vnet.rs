//! `struct virtio_net_hdr` (virtio spec §5.1.6), the header a TAP/TUN opened with IFF_VNET_HDR puts
//! before every frame. vtepd sets its size to 12 bytes (`virtio_net_hdr_mrg_rxbuf`, with `num_buffers`
//! unused) so the header is 4-byte aligned and, on receive, the 8-byte VXLAN header fits in its tail:
//! decapsulation then writes the vnet header over the VXLAN header and hands the frame on in place.
//!
//! All fields are little-endian (the TAP is set to the host's byte order, which is LE on every
//! platform vtepd runs on).
use super::{Result, WireError};

pub const HEADER_LEN: usize = 12;
pub const F_NEEDS_CSUM: u8 = 1;
pub const F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Result<VnetHdr> {
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let le = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    pub fn emit(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&[0, 0]);
    }

    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = VnetHdr { flags: 1, gso_type: GSO_TCPV4, hdr_len: 66, gso_size: 1398, csum_start: 34, csum_offset: 16 };
        let mut b = [0u8; 12];
        h.emit(&mut b);
        assert_eq!(b, [1, 1, 66, 0, 0x76, 0x05, 34, 0, 16, 0, 0, 0]);
        assert_eq!(VnetHdr::parse(&b).unwrap(), h);
        assert!(h.is_gso() && h.needs_csum());
    }
}
