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

/// The ECN field of the IP packet in an Ethernet frame (0 for anything else): what the outer
/// header carries at ingress, RFC 6040's normal mode (a CE mark is copied too; the kernel's
/// `INET_ECN_encapsulate` sends ECT(0) for it, which a decapsulator treats alike), so that a router
/// on the underlay marks congestion instead of dropping.
pub fn of_ethernet(frame: &[u8]) -> u8 {
    match (frame.get(12..14), frame.get(14..16)) {
        (Some([0x08, 0x00]), Some(&[v, tos])) if v >> 4 == 4 => tos & MASK,
        (Some([0x86, 0xdd]), Some(&[v, tc])) if v >> 4 == 6 => (tc >> 4) & MASK,
        _ => NOT_ECT,
    }
}

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

/// Applies [`decapsulate`] to the inner IPv4 header `h` (version and length already checked, at
/// least 20 bytes); `false`: drop the packet.
pub fn egress_ipv4(h: &mut [u8], outer: u8) -> bool {
    match decapsulate(outer, h[1]) {
        None => false,
        Some(ecn) => {
            if ecn != h[1] & MASK {
                set_ipv4(h, ecn);
            }
            true
        }
    }
}

/// [`egress_ipv4`] for an IPv6 header (at least 2 bytes): the ECN bits are the low two of the
/// traffic class, which straddles the first two bytes; there is no header checksum.
pub fn egress_ipv6(h: &mut [u8], outer: u8) -> bool {
    match decapsulate(outer, h[1] >> 4) {
        None => false,
        Some(ecn) => {
            h[1] = (h[1] & !(MASK << 4)) | (ecn << 4);
            true
        }
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
    fn ingress_copies_the_inner_ecn_field() {
        let mut f = [0u8; 16];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14..16].copy_from_slice(&[0x45, 0x2a]);
        assert_eq!(of_ethernet(&f), ECT0);
        f[12..16].copy_from_slice(&[0x86, 0xdd, 0x62, 0xb1]);
        assert_eq!(of_ethernet(&f), CE);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(of_ethernet(&f), NOT_ECT);
        assert_eq!(of_ethernet(&f[..15]), NOT_ECT);
    }

    #[test]
    fn ipv6_traffic_class_is_marked_in_place() {
        // Version 6, traffic class 0x2a (DSCP 10, ECT(0)), flow label 0x12345.
        let mut h = [0x62, 0xa1, 0x23, 0x45];
        assert!(egress_ipv6(&mut h, CE));
        assert_eq!(h, [0x62, 0xb1, 0x23, 0x45]);
        let mut not_ect = [0x60, 0x01, 0x23, 0x45];
        assert!(!egress_ipv6(&mut not_ect, CE));
        assert!(egress_ipv6(&mut not_ect, ECT0));
        assert_eq!(not_ect, [0x60, 0x01, 0x23, 0x45]);
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
