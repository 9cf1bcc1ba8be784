//! Fuzz target bodies: decode the fuzzer's bytes into a call of vtepd's core, then check what came
//! back against invariants computed independently (by hand-written reference code or etherparse),
//! not just "it did not panic".
//!
//! Inputs start with a few control bytes and then raw packet bytes. Control bits can *repair* the
//! raw bytes (put a known MAC or neighbour IP in place, fix a length or a checksum): random bytes
//! almost never pass a checksum or hit a hash-table key, so without these the fuzzer would spend its
//! time on the first `return Drop(..)`. Every repair is optional, so the unrepaired field is fuzzed
//! too. Each module documents its input layout and has an `encode` used to write the seeds.
//!
//! This file is compiled twice: as the `vtepd_fuzz` library (for `fuzz_targets/`) and as a module
//! of `tests/fuzz_regressions.rs`. It may therefore use only `vtepd` and crates that are both
//! dependencies here and (dev-)dependencies of vtepd: etherparse, ipnet, rustc-hash.
#![allow(dead_code)]

pub mod arp;
pub mod config;
pub mod control;
pub mod decap;
pub mod encap;
pub mod gro;
pub mod ipip;
pub mod seeds;
pub mod tso;

use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;
use vtepd::dataplane::Vtep;
use vtepd::wire::vxlan::Vni;
use vtepd::wire::MacAddr;

/// A target's body: runs one input, panics on a broken invariant.
pub type Body = fn(&[u8]);

/// Every target: its cargo-fuzz name and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("vxlan_decap", decap::run),
    ("arp", arp::run),
    ("encap", encap::run),
    ("tso_segment", tso::run),
    ("gro_coalesce", gro::run),
    ("ipip_decap", ipip::run),
    ("config", config::run),
    ("control_request", control::run),
];

// The node under test and its two peers, as in src/dataplane/testvec.rs.
pub const OUR_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
pub const OUR_VTEP_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 0);
pub const PEER_MACS: [MacAddr; 2] = [MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 3])];
pub const PEER_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3)];
pub const PEER_VTEP_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 244, 2, 0), Ipv4Addr::new(10, 244, 3, 0)];
pub const STRANGER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
pub const VNI: u32 = 1;
pub const MTU: u16 = 1450;

pub fn vtep() -> Vtep {
    Vtep { vni: Vni::new(VNI).unwrap(), mac: OUR_MAC, ip: OUR_VTEP_IP, mtu: MTU }
}

pub fn peers() -> vtepd::table::PeerSet {
    PEER_IPS.iter().map(|ip| (*ip, Default::default())).collect()
}

pub fn fdb() -> FxHashMap<MacAddr, Ipv4Addr> {
    PEER_MACS.iter().copied().zip(PEER_IPS).collect()
}

pub fn neigh() -> FxHashMap<Ipv4Addr, MacAddr> {
    PEER_VTEP_IPS.iter().copied().zip(PEER_MACS).collect()
}

/// Reads the fuzzer's bytes front to back; past the end every read yields zeros, so any input is
/// a valid input.
pub struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Bytes(b)
    }

    pub fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.iter_mut().for_each(|b| *b = self.u8());
        a
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }
}

// An Internet checksum written the slow, obvious way (RFC 1071), to check vtepd's 8-bytes-at-a-time one.

/// Sum of big-endian 16-bit words, the odd byte padded with zero; folded, not complemented.
pub fn ref_sum(data: &[u8], initial: u32) -> u16 {
    let mut acc = initial as u64;
    for pair in data.chunks(2) {
        acc += u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]) as u64;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// IPv4 pseudo-header (RFC 793 §3.1), unfolded.
pub fn ref_pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    let w = |b: [u8; 4]| u16::from_be_bytes([b[0], b[1]]) as u32 + u16::from_be_bytes([b[2], b[3]]) as u32;
    w(src) + w(dst) + proto as u32 + len as u32
}

/// IPv6 pseudo-header (RFC 8200 §8.1), unfolded.
pub fn ref_pseudo_v6(src: &[u8], dst: &[u8], next: u8, len: usize) -> u32 {
    ref_sum(src, 0) as u32 + ref_sum(dst, 0) as u32 + (len >> 16) as u32 + (len & 0xffff) as u32 + next as u32
}

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Where IP and TCP start in an Ethernet frame, found without vtepd's `L4Layout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefTcp {
    pub v6: bool,
    pub ip_len: usize,
    pub tcp_off: usize,
    pub tcp_len: usize,
}

impl RefTcp {
    pub const IP_OFF: usize = 14;

    /// IPv4 (unfragmented, IHL >= 5) or IPv6 (next header TCP) carrying TCP with a data offset >= 5
    /// whose header fits `f`.
    pub fn find(f: &[u8]) -> Option<RefTcp> {
        let (v6, ip_len) = match (f.get(12..14)?, f.get(14)? >> 4) {
            ([0x08, 0x00], 4) => {
                let ip = f.get(14..34)?;
                let unfragmented = be16(ip, 6) & 0x3fff == 0;
                let ihl = (ip[0] & 15) as usize * 4;
                (ihl >= 20 && ip[9] == 6 && unfragmented).then_some((false, ihl))?
            }
            ([0x86, 0xdd], 6) => (*f.get(14 + 6)? == 6).then_some((true, 40))?,
            _ => return None,
        };
        let tcp_off = 14 + ip_len;
        let tcp_len = (*f.get(tcp_off + 12)? >> 4) as usize * 4;
        (tcp_len >= 20 && f.len() >= tcp_off + tcp_len).then_some(RefTcp { v6, ip_len, tcp_off, tcp_len })
    }

    pub fn header_len(&self) -> usize {
        self.tcp_off + self.tcp_len
    }

    /// The unfolded pseudo-header sum for `tcp_bytes` of TCP.
    pub fn pseudo(&self, f: &[u8], tcp_bytes: usize) -> u32 {
        if self.v6 {
            ref_pseudo_v6(&f[22..38], &f[38..54], 6, tcp_bytes)
        } else {
            ref_pseudo_v4(f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap(), 6, tcp_bytes)
        }
    }

    /// Whether the TCP checksum over `f[tcp_off..tcp_off + tcp_bytes]` verifies.
    pub fn tcp_csum_ok(&self, f: &[u8], tcp_bytes: usize) -> bool {
        ref_sum(&f[self.tcp_off..self.tcp_off + tcp_bytes], self.pseudo(f, tcp_bytes)) == 0xffff
    }

    /// Writes a correct TCP checksum over `f[tcp_off..tcp_off + tcp_bytes]`.
    pub fn fill_tcp_csum(&self, f: &mut [u8], tcp_bytes: usize) {
        put16(f, self.tcp_off + 16, 0);
        let c = !ref_sum(&f[self.tcp_off..self.tcp_off + tcp_bytes], self.pseudo(f, tcp_bytes));
        put16(f, self.tcp_off + 16, c);
    }

    /// The IP length field(s) of a packet of `tcp_bytes` of TCP.
    pub fn fill_ip_len(&self, f: &mut [u8], tcp_bytes: usize) {
        if self.v6 {
            put16(f, 14 + 4, tcp_bytes as u16);
        } else {
            put16(f, 14 + 2, (self.ip_len + tcp_bytes) as u16);
        }
    }

    /// TCP bytes as the IP header claims them.
    pub fn ip_tcp_bytes(&self, f: &[u8]) -> Option<usize> {
        if self.v6 {
            Some(be16(f, 18) as usize)
        } else {
            (be16(f, 16) as usize).checked_sub(self.ip_len)
        }
    }
}

/// Writes a correct IPv4 header checksum (no-op for anything shorter than the IHL says).
pub fn fill_ipv4_csum(f: &mut [u8]) {
    let ihl = (f[14] & 15) as usize * 4;
    if f.len() < 14 + ihl || ihl < 20 {
        return;
    }
    put16(f, 24, 0);
    let c = !ref_sum(&f[14..14 + ihl], 0);
    put16(f, 24, c);
}

pub fn ipv4_csum_ok(f: &[u8]) -> bool {
    let ihl = (f[14] & 15) as usize * 4;
    ref_sum(&f[14..14 + ihl], 0) == 0xffff
}
