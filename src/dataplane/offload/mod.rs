//! Software TSO/USO and GRO for a TAP (Ethernet) or TUN (bare IP) device.
//!
//! With offloads on, the device hands vtepd TCP (TSO) and UDP (USO) super-frames of up to 64 KB (a
//! virtio-net header with a GSO type and segment size) and accepts the same in return. Nothing in
//! the kernel or in any crate segments or coalesces at L2 for a TAP (OFFLOAD.md: tun-rs's code
//! assumes L3 offsets), so vtepd has its own, written once for both kinds: the only difference is
//! where the IP header starts ([`Framing`]).
//! - [`segment`] cuts a super-frame into MTU-sized packets, each behind its outer header (VXLAN
//!   or RFC 2003 IPv4), laid back to back for one `UDP_SEGMENT` sendmsg or one sendmmsg;
//! - [`coalesce`] recognises consecutive segments of one TCP flow (or datagrams of one UDP flow)
//!   among received frames so the driver can write them to the device as one GSO frame.
//!
//! Both are pure functions over byte slices, tested byte-for-byte and fuzzed.
pub mod coalesce;
pub mod segment;

use crate::wire::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::{be16, checksum};
use std::net::{Ipv4Addr, Ipv6Addr};

/// What comes before the IP header in the frames a device exchanges with vtepd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A TAP: an Ethernet header (no VLAN tag; vtepd's TAP is untagged).
    Ethernet,
    /// A TUN opened with IFF_NO_PI: the IP header comes first, its version nibble says which.
    Ip,
}

impl Framing {
    /// Bytes before the IP header.
    pub fn link_len(self) -> usize {
        match self {
            Framing::Ethernet => ethernet::HEADER_LEN,
            Framing::Ip => 0,
        }
    }
}

/// The transport a super-frame is cut or merged by: TCP (TSO, GRO) or UDP (USO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    /// The IP protocol number (IPv4 protocol, IPv6 next header).
    pub fn protocol(self) -> u8 {
        match self {
            L4::Tcp => 6,
            L4::Udp => 17,
        }
    }

    /// Where the checksum field sits in the transport header.
    pub fn csum_offset(self) -> usize {
        match self {
            L4::Tcp => 16,
            L4::Udp => 6,
        }
    }
}

/// Where the IP and transport headers of a frame are, and what the transport checksum's
/// pseudo-header is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4Layout {
    pub ip_off: usize,
    pub ip_len: usize,
    pub l4_off: usize,
    /// The TCP header with options, or UDP's 8 bytes.
    pub l4_len: usize,
    pub v6: bool,
    pub l4: L4,
}

impl L4Layout {
    /// Bytes before the transport payload.
    pub fn header_len(&self) -> usize {
        self.l4_off + self.l4_len
    }

    /// Finds the `l4` header of a frame carrying IPv4 (no fragment) or IPv6 (no extension
    /// headers). `None` for anything else or for any length that does not fit.
    pub fn parse(frame: &[u8], framing: Framing, l4: L4) -> Option<L4Layout> {
        let (ip_off, v6) = match framing {
            Framing::Ethernet => match be16(frame.get(..ethernet::HEADER_LEN)?, 12) {
                ETHERTYPE_IPV4 => (framing.link_len(), false),
                ETHERTYPE_IPV6 => (framing.link_len(), true),
                _ => return None,
            },
            Framing::Ip => (framing.link_len(), frame.first()? >> 4 == 6),
        };
        let ip_len = if v6 {
            let ip = frame.get(ip_off..ip_off + 40)?;
            if ip[0] >> 4 != 6 || ip[6] != l4.protocol() {
                return None;
            }
            40
        } else {
            let ip = frame.get(ip_off..ip_off + 20)?;
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            let frag = be16(ip, 6) & 0x3fff;
            if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != l4.protocol() || frag != 0 {
                return None;
            }
            ihl
        };
        let l4_off = ip_off + ip_len;
        let l4_len = match l4 {
            L4::Tcp => ((frame.get(l4_off + 12)? >> 4) as usize) * 4,
            L4::Udp => 8,
        };
        if (l4 == L4::Tcp && l4_len < 20) || frame.len() < l4_off + l4_len {
            return None;
        }
        Some(L4Layout { ip_off, ip_len, l4_off, l4_len, v6, l4 })
    }

    /// The pseudo-header sum for a transport segment of `l4_bytes` (header + payload).
    pub fn pseudo_sum(&self, frame: &[u8], l4_bytes: usize) -> u64 {
        let ip = &frame[self.ip_off..];
        let proto = self.l4.protocol();
        if self.v6 {
            let src = addr16(&ip[8..24]);
            let dst = addr16(&ip[24..40]);
            pseudo_header_v6(src, dst, proto, l4_bytes as u32)
        } else {
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            checksum::pseudo_header_v4(src, dst, proto, l4_bytes as u16)
        }
    }
}

fn addr16(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u64 {
    let s = checksum::sum(&src.octets(), 0);
    // Folded first: the unfolded sum may sit just below u64::MAX (all-ones addresses), where a
    // plain `+` would drop the end-around carry.
    let s = checksum::fold(checksum::sum(&dst.octets(), s)) as u64;
    s + (len >> 16) as u64 + (len & 0xffff) as u64 + next_header as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_header_v6_keeps_the_carry_of_all_ones_addresses() {
        // 16 words of 0xffff fold to 0xffff, the one's-complement zero: what is left is the length
        // and next header. The unfolded sum sat at u64::MAX, and adding to it overflowed (found by
        // the tso_segment fuzz target).
        let ones = Ipv6Addr::from([0xff; 16]);
        assert_eq!(checksum::fold(pseudo_header_v6(ones, ones, 6, 1000)), 1006);
    }
}
