//! ECN at tunnel egress, as RFC 6040 §4.2 has it (the kernel's `INET_ECN_decapsulate` does the same
//! for its IPIP and VXLAN devices): a router on the underlay that marked the outer header
//! "congestion experienced" instead of dropping the packet has told the receiver something, and
//! the mark must reach the inner packet or the signal is lost and the sender never slows down.

/// The two ECN bits of a TOS / traffic-class byte.
pub const MASK: u8 = 0b11;
pub const NOT_ECT: u8 = 0b00;
pub const ECT1: u8 = 0b01;
pub const ECT0: u8 = 0b10;
pub const CE: u8 = 0b11;

/// The inner packet's ECN field after decapsulation, from the outer and inner fields; `None`: drop
/// it, as a congestion mark on a packet whose sender did not ask for ECN cannot be passed on (a
/// router would have dropped it instead of marking).
pub fn decapsulate(outer: u8, inner: u8) -> Option<u8> {
    let (outer, inner) = (outer & MASK, inner & MASK);
    match (inner, outer) {
        (NOT_ECT, CE) => None,
        (NOT_ECT, _) => Some(NOT_ECT),
        (_, CE) => Some(CE),
        (ECT0, ECT1) => Some(ECT1),
        _ => Some(inner),
    }
}

/// Puts `ecn` into the TOS byte of the IPv4 header `h` (at least 20 bytes, checksum correct) and
/// updates the checksum incrementally (RFC 1624): the header is not summed again.
pub fn set_ipv4(h: &mut [u8], ecn: u8) {
    let old_word = u16::from_be_bytes([h[0], h[1]]);
    h[1] = (h[1] & !MASK) | (ecn & MASK);
    let new_word = u16::from_be_bytes([h[0], h[1]]);
    let old_sum = u16::from_be_bytes([h[10], h[11]]);
    // HC' = ~(~HC + ~m + m')
    let mut s = u32::from(!old_sum) + u32::from(!old_word) + u32::from(new_word);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    h[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;

    #[test]
    fn rfc_6040_table() {
        // Rows: inner Not-ECT, ECT(0), ECT(1), CE; columns: outer the same order (RFC 6040
        // Figure 4). None is a drop.
        let rows = [
            [Some(NOT_ECT), Some(NOT_ECT), Some(NOT_ECT), None],
            [Some(ECT0), Some(ECT0), Some(ECT1), Some(CE)],
            [Some(ECT1), Some(ECT1), Some(ECT1), Some(CE)],
            [Some(CE), Some(CE), Some(CE), Some(CE)],
        ];
        let order = [NOT_ECT, ECT0, ECT1, CE];
        for (inner, row) in order.iter().zip(rows) {
            for (outer, want) in order.iter().zip(row) {
                // The DSCP bits around them change nothing.
                assert_eq!(decapsulate(0xb8 | outer, 0x28 | inner), want, "inner {inner:02b} outer {outer:02b}");
            }
        }
    }

    #[test]
    fn marking_keeps_the_header_checksum_right() {
        for tos in [0x00u8, 0x02, 0xfe, 0x29] {
            let mut h = [0x45, tos, 0, 84, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 244, 2, 2, 10, 244, 1, 2];
            let c = checksum::finish(checksum::sum(&h, 0));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            set_ipv4(&mut h, CE);
            assert_eq!(h[1], tos | CE);
            assert_eq!(checksum::fold(checksum::sum(&h, 0)), 0xffff, "tos {tos:#x}");
        }
    }
}
