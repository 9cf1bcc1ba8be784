//! Spreading received IPIP packets over the workers.
//!
//! Raw sockets have no SO_REUSEPORT: every raw socket of protocol 4 gets its own copy of each
//! packet. So each worker's receive socket carries a classic BPF filter that keeps only its share:
//! a hash of the inner flow — addresses, and TCP/UDP ports unless the inner packet is a fragment —
//! modulo the number of sockets. A flow always lands on one worker, so it is never reordered and
//! its segments can still be coalesced. A packet too short to hash goes to socket 0, whose worker
//! counts it under its drop reason: nothing is dropped unseen. The kernel clones each packet once
//! per socket before the filters run, which is why the number of sockets is capped.
//!
//! The filter runs with the packet starting at the outer IPv4 header (raw_rcv pushes it back).
use std::io;

/// Beyond this many receive sockets the per-packet clones cost more than another worker gains.
pub const MAX_RX_SOCKETS: usize = 8;

const LD: u16 = libc::BPF_LD as u16;
const LDX: u16 = libc::BPF_LDX as u16;
const ST: u16 = libc::BPF_ST as u16;
const ALU: u16 = libc::BPF_ALU as u16;
const JMP: u16 = libc::BPF_JMP as u16;
const RET: u16 = libc::BPF_RET as u16;
const MISC: u16 = libc::BPF_MISC as u16;
const W: u16 = libc::BPF_W as u16;
const H: u16 = libc::BPF_H as u16;
const B: u16 = libc::BPF_B as u16;
const K: u16 = libc::BPF_K as u16;
const X: u16 = libc::BPF_X as u16;
const IMM: u16 = libc::BPF_IMM as u16;
const IND: u16 = libc::BPF_IND as u16;
const MEM: u16 = libc::BPF_MEM as u16;
const LEN: u16 = libc::BPF_LEN as u16;
const MSH: u16 = libc::BPF_MSH as u16;

/// MurmurHash3's 32-bit finaliser constants: every input bit reaches every output bit, so flows
/// that differ only in a few port bits still spread evenly.
const FMIX1: u32 = 0x85eb_ca6b;
const FMIX2: u32 = 0xc2b2_ae35;

fn op(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter for receive socket `index` of `count`: accept (whole) what [`socket_for`] gives it.
pub fn program(index: u32, count: u32) -> Vec<libc::sock_filter> {
    const MIX: usize = 25;
    const SHORT: usize = 45;
    let accept = u32::MAX;
    let p = vec![
        op(LDX | B | MSH, 0), // 0: X = outer header length
        op(LD | W | LEN, 0),
        op(ALU | libc::BPF_SUB as u16 | K, 20),
        jump(JMP | libc::BPF_JGE as u16 | X, 0, 0, (SHORT - 4) as u8), // 3: an inner IPv4 header's room?
        op(LD | W | IND, 12), // inner source
        op(ST, 0),
        op(LD | W | IND, 16), // inner destination
        op(ST, 1),
        op(LD | IMM, 0), // 8: ports, 0 unless TCP/UDP and not a fragment
        op(ST, 2),
        op(LD | H | IND, 6),
        jump(JMP | libc::BPF_JSET as u16 | K, 0x3fff, (MIX - 12) as u8, 0), // 11: MF or an offset
        op(LD | B | IND, 9),
        jump(JMP | libc::BPF_JEQ as u16 | K, libc::IPPROTO_TCP as u32, 1, 0),
        jump(JMP | libc::BPF_JEQ as u16 | K, libc::IPPROTO_UDP as u32, 0, (MIX - 15) as u8),
        op(LD | B | IND, 0), // 15: X = inner transport header offset
        op(ALU | libc::BPF_AND as u16 | K, 0x0f),
        op(ALU | libc::BPF_LSH as u16 | K, 2),
        op(ALU | libc::BPF_ADD as u16 | X, 0),
        op(MISC | libc::BPF_TAX as u16, 0),
        op(LD | W | LEN, 0),
        op(ALU | libc::BPF_SUB as u16 | K, 4),
        jump(JMP | libc::BPF_JGE as u16 | X, 0, 0, (MIX - 23) as u8), // 22: both ports there?
        op(LD | W | IND, 0),
        op(ST, 2),
        op(LD | MEM, 0), // 25 (MIX): source ^ destination ^ ports, through MurmurHash3's fmix32
        op(LDX | W | MEM, 1),
        op(ALU | libc::BPF_XOR as u16 | X, 0),
        op(LDX | W | MEM, 2),
        op(ALU | libc::BPF_XOR as u16 | X, 0),
        op(MISC | libc::BPF_TAX as u16, 0),
        op(ALU | libc::BPF_RSH as u16 | K, 16),
        op(ALU | libc::BPF_XOR as u16 | X, 0),
        op(ALU | libc::BPF_MUL as u16 | K, FMIX1),
        op(MISC | libc::BPF_TAX as u16, 0),
        op(ALU | libc::BPF_RSH as u16 | K, 13),
        op(ALU | libc::BPF_XOR as u16 | X, 0),
        op(ALU | libc::BPF_MUL as u16 | K, FMIX2),
        op(MISC | libc::BPF_TAX as u16, 0),
        op(ALU | libc::BPF_RSH as u16 | K, 16),
        op(ALU | libc::BPF_XOR as u16 | X, 0),
        op(ALU | libc::BPF_MOD as u16 | K, count),
        jump(JMP | libc::BPF_JEQ as u16 | K, index, 0, 1),
        op(RET | K, accept),
        op(RET | K, 0),
        op(RET | K, if index == 0 { accept } else { 0 }), // 45 (SHORT)
    ];
    debug_assert_eq!((p.len(), p[MIX].code, p[SHORT].code), (SHORT + 1, LD | MEM, RET | K));
    p
}

/// Attaches socket `index`'s share of `count` to `socket`; with one socket there is nothing to share.
pub fn attach(socket: &socket2::Socket, index: usize, count: usize) -> io::Result<()> {
    if count <= 1 {
        return Ok(());
    }
    socket.attach_filter(&program(index as u32, count as u32))
}

/// Which of `count` sockets the filters give `packet` (outer IPv4 header first): the same
/// computation in Rust, for the tests that check the kernel runs the program as meant.
#[cfg(test)]
pub fn socket_for(packet: &[u8], count: u32) -> u32 {
    use crate::wire::{be16, be32};
    let outer = ((packet[0] & 0x0f) as usize) * 4;
    if packet.len() < outer + 20 {
        return 0;
    }
    let inner = &packet[outer..];
    let mut ports = 0;
    let fragment = be16(inner, 6) & 0x3fff != 0;
    if !fragment && matches!(inner[9] as i32, libc::IPPROTO_TCP | libc::IPPROTO_UDP) {
        let l4 = ((inner[0] & 0x0f) as usize) * 4;
        if inner.len() >= l4 + 4 {
            ports = be32(inner, l4);
        }
    }
    let mut h = be32(inner, 12) ^ be32(inner, 16) ^ ports;
    h = (h ^ (h >> 16)).wrapping_mul(FMIX1);
    h = (h ^ (h >> 13)).wrapping_mul(FMIX2);
    (h ^ (h >> 16)) % count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::raw::{open_rx, open_tx};
    use crate::io::udp::{MmsgScratch, Received};
    use crate::io::Slots;
    use crate::wire::ipv4::Repr;
    use std::net::Ipv4Addr;

    const COUNT: usize = 3;
    /// A loopback address of this test's own, so IPIP other tests send to 127.0.0.1 never arrives.
    const DST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 44);

    /// Outer IPv4, then an inner IPv4 packet of `proto` whose first 8 payload bytes are `l4`.
    fn packet(src: u8, proto: u8, frag: u16, l4: [u8; 8], marker: u16) -> Vec<u8> {
        let inner = Repr {
            src: Ipv4Addr::new(10, 244, 1, src),
            dst: Ipv4Addr::new(10, 244, 2, 7),
            protocol: proto,
            payload_len: 10,
            ttl: 64,
            tos: 0,
            ident: marker,
            dont_frag: false,
        };
        let outer = Repr { src: Ipv4Addr::LOCALHOST, dst: DST, protocol: 4, payload_len: 30, ident: 0, ..inner };
        let mut p = vec![0; 50];
        outer.emit(&mut p[..20]);
        inner.emit(&mut p[20..40]);
        p[26..28].copy_from_slice(&frag.to_be_bytes());
        p[40..48].copy_from_slice(&l4);
        p[48..50].copy_from_slice(&marker.to_be_bytes());
        p
    }

    /// Flows of TCP, UDP and ICMP, fragments (no ports), and packets too short to hash: the
    /// kernel running the filters must deliver each to exactly the socket `socket_for` names,
    /// and the flows must spread over all of them.
    #[test]
    fn kernel_delivers_each_packet_to_exactly_its_socket() {
        let rx: Vec<_> = (0..COUNT).map(|i| {
            let s = open_rx(DST).unwrap();
            attach(&s, i, COUNT).unwrap();
            s
        }).collect();
        let tx = open_tx().unwrap();
        let mut sent = Vec::new();
        for n in 0..120u16 {
            let (proto, frag) = [(6, 0), (17, 0), (1, 0), (6, 0x2000), (17, 0x0010)][n as usize % 5];
            let port = (40_000 + n).to_be_bytes();
            sent.push(packet((n % 7) as u8, proto, frag, [port[0], port[1], 0x13, 0x89, 0, 0, 0, 0], n));
        }
        let mut short = packet(1, 6, 0, [0; 8], 999);
        short.truncate(30);
        short[2..4].copy_from_slice(&30u16.to_be_bytes());
        sent.push(short);

        let mut scratch = MmsgScratch::new(sent.len());
        assert_eq!(scratch.send(&tx, sent.iter().map(|p| (&p[..], DST, 0)), 0).0, sent.len());
        let mut got = vec![Vec::new(); COUNT];
        let mut slots = Slots::new(sent.len(), 256);
        let mut out = vec![Received::default(); sent.len()];
        for _ in 0..100 {
            for (i, s) in rx.iter().enumerate() {
                let n = scratch.recv(s, &mut slots, 0, 0, &mut out).unwrap_or(0);
                got[i].extend((0..n).map(|j| slots.get(j)[..out[j].len].to_vec()));
            }
            if got.iter().map(Vec::len).sum::<usize>() >= sent.len() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for p in &sent {
            let want = socket_for(p, COUNT as u32) as usize;
            let at: Vec<usize> = (0..COUNT).filter(|&i| got[i].iter().any(|g| g[20..] == p[20..])).collect();
            assert_eq!(at, vec![want], "packet {:02x?} went to sockets {at:?}, expected {want}", &p[20..]);
        }
        assert_eq!(socket_for(sent.last().unwrap(), COUNT as u32), 0, "too short to hash: socket 0");
        for (i, g) in got.iter().enumerate() {
            assert!(g.len() >= 10, "socket {i} got only {} of {} packets: flows do not spread", g.len(), sent.len());
        }
    }
}
