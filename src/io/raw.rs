//! Raw IPv4 sockets for IP-in-IP (protocol 4), batched with recvmmsg/sendmmsg.
//!
//! Sending uses an `IPPROTO_RAW` socket, which implies IP_HDRINCL: the data path builds the whole
//! outer header itself (`dataplane::ipip`). That is chosen over letting the kernel build it
//! because RFC 2003 wants DF and TOS copied from each inner packet, and a kernel-built header takes
//! both from socket options (one socket per DF/TOS combination, or a cmsg per packet); with
//! HDRINCL the header is one 20-byte write per packet that unit tests check byte for byte. The
//! kernel still fills in what only it knows: the identification when we leave it 0 on a packet
//! that may be fragmented, and the header checksum. It never fragments a HDRINCL packet: one
//! larger than the device MTU fails with EMSGSIZE (counted as a send error), which is why the core
//! checks the MTU first and answers with ICMP. An `IPPROTO_RAW` socket is send-only (raw(7)), so
//! the per-worker send sockets never queue copies of incoming packets.
//!
//! Receiving uses `IPPROTO_IPIP` sockets bound to the node's underlay address: the kernel hands
//! them every protocol-4 packet for that address, whole outer header included, after reassembling
//! fragments. Raw sockets have no SO_REUSEPORT spreading — every raw socket of a protocol gets its
//! own copy of each packet — so each worker's receive socket carries a BPF filter that keeps only
//! its share of the inner flows (`io::steer`).
//! Raw sockets have no GSO/GRO either (OFFLOAD.md pitfall 9): batching is all there is.
use super::udp::force_buffers;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("opening a raw IP socket needs CAP_NET_RAW: run vtepd as root or grant it the capability (setcap cap_net_raw,cap_net_admin+ep)")]
    NoPermission,
    #[error("{ip} is not an address of this host: fix node.public_ip")]
    AddrNotHere { ip: Ipv4Addr },
    #[error("cannot set up raw IP socket ({what}): {source}")]
    Socket { what: &'static str, source: io::Error },
}

fn raw_socket(protocol: i32, what: &'static str) -> Result<Socket, RawError> {
    let s = Socket::new(Domain::IPV4, Type::RAW.nonblocking().cloexec(), Some(Protocol::from(protocol))).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => RawError::NoPermission,
            _ => RawError::Socket { what, source: e },
        }
    })?;
    // Same reasoning as the UDP sockets: 64-packet bursts overrun default buffers.
    force_buffers(&s, 8 << 20);
    Ok(s)
}

/// The receive socket: every IPIP packet addressed to `local`.
pub fn open_rx(local: Ipv4Addr) -> Result<Socket, RawError> {
    let s = raw_socket(libc::IPPROTO_IPIP, "IPPROTO_IPIP receive socket")?;
    s.bind(&SockAddr::from(SocketAddrV4::new(local, 0))).map_err(|e| match e.raw_os_error() {
        Some(libc::EADDRNOTAVAIL) => RawError::AddrNotHere { ip: local },
        _ => RawError::Socket { what: "bind IPPROTO_IPIP socket", source: e },
    })?;
    Ok(s)
}

/// A send socket: packets go out exactly as built, outer header included.
pub fn open_tx() -> Result<Socket, RawError> {
    raw_socket(libc::IPPROTO_RAW, "IPPROTO_RAW send socket")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::udp::{MmsgScratch, Received};
    use crate::io::Slots;

    /// Needs CAP_NET_RAW (the test suite runs as root, like the netlink tests). Sends IPIP packets
    /// to 127.0.0.1 in a batch and receives them with their outer header.
    #[test]
    fn mmsg_round_trip_on_loopback() {
        let lo = Ipv4Addr::LOCALHOST;
        let rx = open_rx(lo).unwrap();
        let tx = open_tx().unwrap();
        let mut scratch = MmsgScratch::new(8);
        let packets: Vec<Vec<u8>> = (0..4u8).map(|i| ipip_packet(lo, 40 + i as usize, i)).collect();
        assert_eq!(scratch.send(&tx, packets.iter().map(|p| (&p[..], lo, 0)), 0).0, 4);
        // Other tests may send IPIP to 127.0.0.1 too; ours carry a marker byte after the headers.
        let (mut mine, mut others) = (Vec::new(), 0);
        let mut slots = Slots::new(8, 256);
        let mut out = [Received::default(); 8];
        for _ in 0..100 {
            let n = scratch.recv(&rx, &mut slots, 0, 0, &mut out).unwrap();
            for (i, r) in out[..n].iter().enumerate() {
                match slots.get(i)[40] {
                    0xa5 => mine.push((r.len, r.src, slots.get(i)[9])),
                    _ => others += 1,
                }
            }
            if mine.len() >= 4 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(mine.len(), 4, "{others} packets of other senders arrived besides");
        for (n, got) in mine.into_iter().enumerate() {
            assert_eq!(got, (20 + 40 + n, lo, 4), "whole outer packet, source is the outer source, protocol 4");
        }
    }

    /// Outer 20 + inner IPv4 header 20 + marker + `payload - 20` bytes of `fill`.
    fn ipip_packet(lo: Ipv4Addr, inner_len: usize, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; 20 + inner_len];
        let outer = crate::wire::ipv4::Repr {
            src: lo,
            dst: lo,
            protocol: 4,
            payload_len: inner_len as u16,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
        };
        outer.emit(&mut p[..20]);
        let inner = crate::wire::ipv4::Repr { protocol: 17, payload_len: inner_len as u16 - 20, ..outer };
        inner.emit(&mut p[20..40]);
        p[40] = 0xa5;
        p
    }
}
