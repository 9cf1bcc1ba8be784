//! RFC 6040 egress checks shared by the VXLAN and IPIP tests: which outer/inner ECN pairs are sent,
//! and what must arrive on the device.
use super::daemon::{ctl_json, Vtepd};

pub const NOT_ECT: u8 = 0;
pub const ECT1: u8 = 1;
pub const ECT0: u8 = 2;
pub const CE: u8 = 3;

/// (inner ECN, outer ECN, inner ECN delivered; `None`: dropped). Case `i` is sent from UDP source
/// port [`FIRST_PORT`] + i.
pub const EGRESS_CASES: [(u8, u8, Option<u8>); 5] =
    [(ECT0, CE, Some(CE)), (ECT0, ECT1, Some(ECT1)), (ECT1, ECT0, Some(ECT1)), (NOT_ECT, ECT0, Some(NOT_ECT)), (NOT_ECT, CE, None)];
pub const FIRST_PORT: u16 = 6000;

/// Packets vtepd has written to its TAP or TUN, summed over its workers (`vtepd stats`).
pub fn delivered(v: &Vtepd) -> u64 {
    let stats = ctl_json(v, "stats");
    stats["workers"].as_array().map_or(0, |w| w.iter().map(|w| w["rx_packets"].as_u64().unwrap_or(0)).sum())
}

/// Checks a capture on the device, decoded as `udp.srcport \t ip.dsfield.ecn` lines, after each
/// case was sent `n` times: every delivered case arrived `n` times with its ECN, the dropped one
/// never.
pub fn assert_egress(lines: &[String], n: u64) {
    for (i, (_, _, want)) in EGRESS_CASES.iter().enumerate() {
        let port = usize::from(FIRST_PORT) + i;
        let seen: Vec<&String> = lines.iter().filter(|l| l.starts_with(&format!("{port}\t"))).collect();
        match want {
            Some(ecn) => {
                assert_eq!(seen.len() as u64, n, "case {i}: {} of {n} delivered", seen.len());
                assert!(seen.iter().all(|l| **l == format!("{port}\t{ecn}")), "case {i}: inner ECN not {ecn}: {seen:?}");
            }
            None => assert!(seen.is_empty(), "case {i}: a mark over a not-ECT packet was delivered: {seen:?}"),
        }
    }
}
