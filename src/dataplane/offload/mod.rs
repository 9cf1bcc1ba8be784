//! Software TSO and GRO for an Ethernet (TAP) device.
//!
//! With offloads on, the TAP hands vtepd TCP super-frames of up to 64 KB (a virtio-net header with
//! a GSO type and segment size) and accepts the same in return. Nothing in the kernel or in any
//! crate segments or coalesces at L2 for a TAP (OFFLOAD.md: tun-rs's code assumes L3 offsets), so:
//! - [`segment`] cuts a super-frame into MTU-sized VXLAN datagrams, laid back to back so one
//!   `sendmsg` with `UDP_SEGMENT` carries them all;
//! - [`coalesce`] recognises consecutive segments of one TCP flow among received frames so the
//!   driver can write them to the TAP as one GSO frame.
//! Both are pure functions over byte slices, tested byte-for-byte and fuzzed.
pub mod coalesce;
pub mod segment;

use crate::wire::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::{be16, checksum};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Where the IP and TCP headers of a frame are, and what the TCP checksum's pseudo-header is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLayout {
    pub ip_off: usize,
    pub ip_len: usize,
    pub tcp_off: usize,
    pub tcp_len: usize,
    pub v6: bool,
}

impl TcpLayout {
    /// Bytes before the TCP payload.
    pub fn header_len(&self) -> usize {
        self.tcp_off + self.tcp_len
    }

    /// Finds the TCP header of an Ethernet frame carrying IPv4 (no fragment) or IPv6 (no extension
    /// headers). `None` for anything else or for any length that does not fit.
    pub fn parse(frame: &[u8]) -> Option<TcpLayout> {
        let ip_off = ethernet::HEADER_LEN;
        let (ip_len, v6) = match be16(frame.get(..ip_off)?, 12) {
            ETHERTYPE_IPV4 => {
                let ip = frame.get(ip_off..ip_off + 20)?;
                let ihl = ((ip[0] & 0x0f) as usize) * 4;
                let frag = be16(ip, 6) & 0x3fff;
                if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 6 || frag != 0 {
                    return None;
                }
                (ihl, false)
            }
            ETHERTYPE_IPV6 => {
                let ip = frame.get(ip_off..ip_off + 40)?;
                if ip[0] >> 4 != 6 || ip[6] != 6 {
                    return None;
                }
                (40, true)
            }
            _ => return None,
        };
        let tcp_off = ip_off + ip_len;
        let doff = ((frame.get(tcp_off + 12)? >> 4) as usize) * 4;
        if doff < 20 || frame.len() < tcp_off + doff {
            return None;
        }
        Some(TcpLayout { ip_off, ip_len, tcp_off, tcp_len: doff, v6 })
    }

    /// The pseudo-header sum for a TCP segment of `tcp_bytes` (header + payload).
    pub fn pseudo_sum(&self, frame: &[u8], tcp_bytes: usize) -> u64 {
        let ip = &frame[self.ip_off..];
        if self.v6 {
            let src = addr16(&ip[8..24]);
            let dst = addr16(&ip[24..40]);
            pseudo_header_v6(src, dst, 6, tcp_bytes as u32)
        } else {
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            checksum::pseudo_header_v4(src, dst, 6, tcp_bytes as u16)
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
