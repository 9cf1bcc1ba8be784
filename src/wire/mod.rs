//! Zero-copy header views, in the manner of smoltcp's `wire` module.
//!
//! Each view wraps a byte slice; `new_checked` validates the length once so that no accessor can
//! panic afterwards. Setters exist only where the buffer is mutable. Nothing here allocates or does I/O,
//! so every parser can be fed arbitrary bytes (and is, by the fuzz targets).
pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod mac;
pub mod vnet;
pub mod vxlan;

pub use mac::MacAddr;

/// Why a header view refused a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("buffer too short for the header")]
    Truncated,
    #[error("header field is malformed")]
    Malformed,
}

pub type Result<T> = core::result::Result<T, WireError>;

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn put_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn put_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
