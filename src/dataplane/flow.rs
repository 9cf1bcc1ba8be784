//! Inner-flow hashing, for the UDP source port (RFC 7348 §5: "a hash of fields from the inner
//! packet"), so that the underlay's ECMP and the receiver's SO_REUSEPORT keep one flow on one path
//! and one worker, and spread different flows.
use crate::wire::ethernet::{self, ETHERTYPE_IPV4};
use crate::wire::ipv4::{PROTO_TCP, PROTO_UDP};

/// Hashes addresses, protocol and (for unfragmented TCP/UDP) ports of an inner IPv4 packet; other
/// frames hash on their MAC addresses and EtherType. Never fails: a short frame hashes what it has.
#[inline]
pub fn hash(frame: &[u8]) -> u32 {
    let Some(l3) = frame.get(ethernet::HEADER_LEN..) else { return 0 };
    let ethertype = frame.get(12..14).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    if ethertype == ETHERTYPE_IPV4 && l3.len() >= 20 {
        let addrs = u64::from_be_bytes([l3[12], l3[13], l3[14], l3[15], l3[16], l3[17], l3[18], l3[19]]);
        let proto = l3[9];
        let ihl = ((l3[0] & 0x0f) as usize) * 4;
        let unfragmented = u16::from_be_bytes([l3[6], l3[7]]) & 0x3fff == 0;
        let ports = match (proto, unfragmented, l3.get(ihl..ihl + 4)) {
            (PROTO_TCP | PROTO_UDP, true, Some(p)) => u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
            _ => 0,
        };
        return mix(addrs ^ ((proto as u64) << 32 | ports as u64));
    }
    let mut macs = [0u8; 8];
    let n = frame.len().min(8);
    macs[..n].copy_from_slice(&frame[..n]);
    mix(u64::from_be_bytes(macs) ^ ethertype as u64)
}

/// A 64→32-bit finaliser (from SplitMix64): cheap, and every input bit moves the output.
#[inline]
fn mix(mut x: u64) -> u32 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(sport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = PROTO_TCP;
        f[14 + 12..14 + 20].copy_from_slice(&[10, 244, 1, 2, 10, 244, 2, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&5001u16.to_be_bytes());
        f
    }

    #[test]
    fn same_flow_same_hash_other_flow_other_hash() {
        assert_eq!(hash(&tcp_frame(40000)), hash(&tcp_frame(40000)));
        assert_ne!(hash(&tcp_frame(40000)), hash(&tcp_frame(40001)));
    }

    #[test]
    fn short_frames_do_not_panic() {
        for n in 0..60 {
            let _ = hash(&tcp_frame(1)[..n.min(54)]);
        }
    }
}
