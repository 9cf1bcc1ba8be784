//! TCP and UDP coalescing (software GRO) of decapsulated frames (TAP) or packets (TUN) into one
//! write.
//!
//! The driver walks received frames in order, asks [`candidate`] whether each could be merged,
//! and [`Run::accepts`] whether it continues the current run; at the end of a run [`finish`]
//! rewrites the first frame's headers so that `first frame + the payloads of the others` is a
//! valid GSO super-frame. Rules, as the kernel's `tcp_gro_receive` and wireguard-go apply them: same
//! Ethernet header (TAP) and IP addresses, ports, TOS/TTL/DF (traffic class, hop limit); IPv4 ids
//! counting up unless DF is set; same ACK number, window and identical TCP options; only ACK or
//! ACK|PSH segments, PSH ending a run; contiguous sequence numbers; all segments the size of the
//! first except a shorter last one. Every checksum is verified before merging — the merged frame
//! goes up with the checksum marked "to be done", so a corrupt segment merged into it would
//! otherwise be accepted. UDP datagrams of one flow (addresses,
//! ports, TOS/TTL/DF) merge when all are the first one's size but a shorter last, into one USO
//! frame the kernel cuts back into exactly those datagrams; only onto a device that took USO.
use super::{Framing, L4Layout, L4};
use crate::wire::vnet::{VnetHdr, F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
use crate::wire::{be16, be32, checksum, put_be16};

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
/// More segments than this per write gains nothing and risks the 64 KB IP length.
pub const MAX_SEGMENTS: usize = 64;
const MAX_FRAME: usize = 65_535;

/// One frame that may be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub layout: L4Layout,
    pub seq: u32,
    pub payload_len: usize,
    pub psh: bool,
    /// The checksum field held only the pseudo-header sum (a kernel peer on a veth underlay).
    pub partial: bool,
}

/// Returns the segment's facts if `frame` is an ACK or ACK|PSH TCP segment with data, no IPv4
/// options, a correct IPv4 header checksum, and a correct (or still partial) TCP checksum.
pub fn candidate(frame: &[u8], framing: Framing) -> Option<Segment> {
    let l = L4Layout::parse(frame, framing, L4::Tcp)?;
    let tcp_bytes = ip_payload_len(frame, &l)?;
    let flags = frame[l.l4_off + 13];
    if !ipv4_header_ok(frame, &l) || flags & !TCP_PSH != TCP_ACK || tcp_bytes <= l.l4_len {
        return None;
    }
    let partial = checksum_state(frame, &l, tcp_bytes)?;
    Some(Segment { layout: l, seq: be32(frame, l.l4_off + 4), payload_len: tcp_bytes - l.l4_len, psh: flags & TCP_PSH != 0, partial })
}

/// The same for a UDP datagram with data, whose UDP length agrees with IP's. A datagram without a
/// checksum (IPv4's 0) is not merged: it has nothing to verify, and the merged frame would get one.
pub fn candidate_udp(frame: &[u8], framing: Framing) -> Option<Segment> {
    let (l, udp_bytes) = udp_datagram(frame, framing)?;
    if !ipv4_header_ok(frame, &l) || udp_bytes <= l.l4_len || be16(frame, l.l4_off + 6) == 0 {
        return None;
    }
    let partial = checksum_state(frame, &l, udp_bytes)?;
    Some(Segment { layout: l, seq: 0, payload_len: udp_bytes - l.l4_len, psh: false, partial })
}

/// The UDP layout of `frame` and its UDP bytes, if the UDP length agrees with the IP header's (a
/// datagram whose two lengths disagree is not one the kernel could have cut or could cut again).
fn udp_datagram(frame: &[u8], framing: Framing) -> Option<(L4Layout, usize)> {
    let l = L4Layout::parse(frame, framing, L4::Udp)?;
    let udp_bytes = ip_payload_len(frame, &l)?;
    (be16(frame, l.l4_off + 4) as usize == udp_bytes).then_some((l, udp_bytes))
}

/// The merged frame gets one fresh IPv4 header checksum, which would make a corrupt header valid:
/// only an option-less header with a correct checksum is merged (IPv6 has none).
fn ipv4_header_ok(frame: &[u8], l: &L4Layout) -> bool {
    l.v6 || (l.ip_len == 20 && ipv4_checksum_ok(frame, l))
}

fn ipv4_checksum_ok(frame: &[u8], l: &L4Layout) -> bool {
    l.v6 || checksum::fold(checksum::sum(&frame[l.ip_off..l.ip_off + l.ip_len], 0)) == 0xffff
}

/// Whether the transport checksum over `l4_bytes` is still partial (`Some(true)`: the field holds
/// only the pseudo-header sum) or correct (`Some(false)`); `None` if it is wrong.
fn checksum_state(frame: &[u8], l: &L4Layout, l4_bytes: usize) -> Option<bool> {
    let pseudo = l.pseudo_sum(frame, l4_bytes);
    let partial = be16(frame, l.l4_off + l.l4.csum_offset()) == checksum::fold(pseudo);
    (partial || checksum::fold(checksum::sum(&frame[l.l4_off..l.l4_off + l4_bytes], pseudo)) == 0xffff).then_some(partial)
}

/// Transport header + payload length from the IP header, which must fit the frame (any bytes after
/// it, such as Ethernet padding, are then ignored).
fn ip_payload_len(frame: &[u8], l: &L4Layout) -> Option<usize> {
    let ip = &frame[l.ip_off..];
    let n = if l.v6 {
        u16::from_be_bytes([ip[4], ip[5]]) as usize
    } else {
        (u16::from_be_bytes([ip[2], ip[3]]) as usize).checked_sub(l.ip_len)?
    };
    (n >= l.l4_len && l.l4_off + n <= frame.len()).then_some(n)
}

/// A run of segments being merged; the first frame stays where it is and is rewritten at the end.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub first: Segment,
    pub count: usize,
    pub payload: usize,
    next_seq: u32,
    closed: bool,
}

impl Run {
    pub fn start(first: Segment) -> Run {
        Run {
            first,
            count: 1,
            payload: first.payload_len,
            next_seq: first.seq.wrapping_add(first.payload_len as u32),
            closed: first.psh,
        }
    }

    /// Whether `next` (frame `next_frame`) continues this run whose first frame is `first_frame`.
    pub fn accepts(&self, first_frame: &[u8], next_frame: &[u8], next: &Segment) -> bool {
        let (a, b) = (&self.first.layout, &next.layout);
        let tcp = a.l4 == L4::Tcp;
        !self.closed
            && self.count < MAX_SEGMENTS
            && a == b
            && (!tcp || next.seq == self.next_seq)
            && next.payload_len <= self.first.payload_len
            && a.header_len() + self.payload + next.payload_len <= MAX_FRAME
            && same_ip_identity(first_frame, next_frame, a)
            && ids_in_sequence(first_frame, next_frame, a, self.count)
            && if tcp { same_tcp_identity(first_frame, next_frame, a) } else { same_ports(first_frame, next_frame, a) }
    }

    /// Adds `next`, which `accepts` approved.
    pub fn push(&mut self, next: &Segment) {
        self.count += 1;
        self.payload += next.payload_len;
        self.next_seq = self.next_seq.wrapping_add(next.payload_len as u32);
        // A short segment or a PSH ends the run: nothing may follow either in one GSO frame.
        self.closed = next.psh || next.payload_len < self.first.payload_len;
        self.first.psh |= next.psh;
    }
}

/// The link header (MACs; the layouts already agree on the EtherType) and every IP field but
/// length, id and checksum (IPv4) or payload length (IPv6); the IPv4 flags are compared whole (DF
/// and the reserved bit: the kernel does not merge a segment with the reserved bit set).
fn same_ip_identity(x: &[u8], y: &[u8], l: &L4Layout) -> bool {
    let (p, q) = (&x[l.ip_off..], &y[l.ip_off..]);
    x[..l.ip_off] == y[..l.ip_off]
        && if l.v6 {
            p[..4] == q[..4] && p[6..40] == q[6..40]
        } else {
            p[..2] == q[..2] && (p[6] & 0xc0) == (q[6] & 0xc0) && p[8..10] == q[8..10] && p[12..20] == q[12..20]
        }
}

/// An IPv4 datagram without DF may be fragmented on its way on, so its id matters: the `n`th
/// segment of a run must carry the first one's id + n, which is what the kernel gives each segment
/// when it cuts the merged frame again. With DF the id means nothing (RFC 6864) and is not compared.
fn ids_in_sequence(first: &[u8], next: &[u8], l: &L4Layout, n: usize) -> bool {
    let ip = l.ip_off;
    l.v6 || first[ip + 6] & 0x40 != 0 || be16(next, ip + 4) == be16(first, ip + 4).wrapping_add(n as u16)
}

/// Ports, ACK number, the data-offset byte (its reserved bits include AccECN's AE flag, which the
/// merged frame would otherwise take from the first segment only), window and options: the merged
/// frame carries the first segment's header, so a later segment's window update would be lost.
fn same_tcp_identity(x: &[u8], y: &[u8], l: &L4Layout) -> bool {
    let (p, q) = (&x[l.l4_off..], &y[l.l4_off..]);
    p[..4] == q[..4] && p[8..13] == q[8..13] && p[14..16] == q[14..16] && p[20..l.l4_len] == q[20..l.l4_len]
}

/// A UDP run is one flow: the same ports (addresses were compared with the IP header).
fn same_ports(x: &[u8], y: &[u8], l: &L4Layout) -> bool {
    x[l.l4_off..l.l4_off + 4] == y[l.l4_off..l.l4_off + 4]
}

/// Rewrites `first` (the run's first frame) to head the merged super-frame and returns the
/// virtio-net header to write before it. A run of one that fits the MTU is left as it is.
///
/// A run — even of one — carrying more than one MTU's worth of payload goes up as GSO with an
/// MTU-sized segment size: a kernel VXLAN peer on a veth underlay sends whole TSO super-frames
/// inside single datagrams, and written as a plain frame such a thing cannot be forwarded on to a
/// pod's 1450-byte link.
pub fn finish(first: &mut [u8], run: &Run, mtu: usize) -> VnetHdr {
    let l = run.first.layout;
    if l.l4 == L4::Udp {
        return finish_udp(first, run);
    }
    let mss = mss_for(&l, mtu);
    if run.count == 1 && run.payload <= mss {
        return single(&run.first);
    }
    let tcp_bytes = l.l4_len + run.payload;
    set_ip_len(first, &l, tcp_bytes);
    if run.first.psh {
        first[l.l4_off + 13] |= TCP_PSH;
    }
    gso_header(first, &l, tcp_bytes, run.first.payload_len.min(mss))
}

/// A UDP run becomes one USO frame cut at the first datagram's size, which gives the datagrams
/// back exactly: all but the last were that size, and the last no larger.
fn finish_udp(first: &mut [u8], run: &Run) -> VnetHdr {
    if run.count == 1 {
        return single(&run.first);
    }
    let l = run.first.layout;
    let udp_bytes = l.l4_len + run.payload;
    set_ip_len(first, &l, udp_bytes);
    put_be16(first, l.l4_off + 4, udp_bytes as u16);
    gso_header(first, &l, udp_bytes, run.first.payload_len)
}

/// IPv6 payload length, or IPv4 total length and a fresh header checksum, for `l4_bytes` of
/// transport header and payload.
fn set_ip_len(frame: &mut [u8], l: &L4Layout, l4_bytes: usize) {
    if l.v6 {
        put_be16(frame, l.ip_off + 4, l4_bytes as u16);
    } else {
        put_be16(frame, l.ip_off + 2, (l.ip_len + l4_bytes) as u16);
        put_be16(frame, l.ip_off + 10, 0);
        let c = checksum::finish(checksum::sum(&frame[l.ip_off..l.ip_off + l.ip_len], 0));
        put_be16(frame, l.ip_off + 10, c);
    }
}

/// Marks the TCP segment or UDP datagram `frame` (headers + `l4_bytes` of transport) for the
/// kernel to segment at `gso_size`: the checksum field gets the pseudo-header sum (NEEDS_CSUM), and
/// ECN's CWR, if set, is declared as the kernel requires.
fn gso_header(frame: &mut [u8], l: &L4Layout, l4_bytes: usize, gso_size: usize) -> VnetHdr {
    let pseudo = checksum::fold(l.pseudo_sum(frame, l4_bytes));
    put_be16(frame, l.l4_off + l.l4.csum_offset(), pseudo);
    let gso_type = match l.l4 {
        L4::Udp => GSO_UDP_L4,
        L4::Tcp if frame[l.l4_off + 13] & TCP_CWR != 0 => (if l.v6 { GSO_TCPV6 } else { GSO_TCPV4 }) | GSO_ECN,
        L4::Tcp => if l.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
    };
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: l.header_len() as u16,
        gso_size: gso_size as u16,
        csum_start: l.l4_off as u16,
        csum_offset: l.l4.csum_offset() as u16,
    }
}

/// The TCP payload one `mtu`-sized IP packet of this flow carries, but never less than Linux's own
/// floor (`tcp_min_snd_mss`, 48): with headers full of options over a tiny MTU the kernel would
/// otherwise be told to cut a 64 KB frame into tens of thousands of one-byte segments.
fn mss_for(l: &L4Layout, mtu: usize) -> usize {
    mtu.saturating_sub(l.ip_len + l.l4_len).max(MIN_MSS)
}

const MIN_MSS: usize = 48;

/// For a TCP frame that is not a coalescing candidate (FIN, SYN, URG...) but carries more than one
/// MTU of payload: the GSO header that lets the kernel forward it, if its checksum is correct or
/// still partial. `None` leaves the frame to the caller's plain path.
pub fn oversized(frame: &mut [u8], framing: Framing, mtu: usize) -> Option<VnetHdr> {
    let l = L4Layout::parse(frame, framing, L4::Tcp)?;
    let tcp_bytes = ip_payload_len(frame, &l)?;
    let mss = mss_for(&l, mtu);
    // Cut up (by the kernel or, without TSO on the device, by vtepd) every piece gets a fresh IPv4
    // header checksum: only a header that is correct now may be vouched for.
    if tcp_bytes - l.l4_len <= mss || !ipv4_checksum_ok(frame, &l) {
        return None;
    }
    checksum_state(frame, &l, tcp_bytes)?;
    Some(gso_header(frame, &l, tcp_bytes, mss))
}

/// For a UDP packet carrying more than one datagram's worth: a kernel VXLAN peer on a veth underlay
/// sends an application's UDP_SEGMENT super-packet whole inside one datagram, and the receiving
/// socket reports its segment size (`gso_size`). Written as a plain frame it would reach the
/// application as one giant datagram; with a USO header the kernel restores the application's
/// datagrams. The checksum must be correct or still partial; `None` leaves the frame as it is.
pub fn oversized_udp(frame: &mut [u8], framing: Framing, gso_size: usize) -> Option<VnetHdr> {
    let (l, udp_bytes) = udp_datagram(frame, framing)?;
    if udp_bytes - l.l4_len <= gso_size || !ipv4_checksum_ok(frame, &l) {
        return None;
    }
    // IPv4's "no checksum" has nothing to check; the datagrams get one when the kernel cuts them.
    if be16(frame, l.l4_off + 6) != 0 || l.v6 {
        checksum_state(frame, &l, udp_bytes)?;
    }
    Some(gso_header(frame, &l, udp_bytes, gso_size))
}

/// A lone verified segment, marked so (a TAP/TUN write ignores `DATA_VALID` today — only
/// virtio_net's receive path reads it — so the kernel checks it again; the flag costs nothing and
/// says what vtepd knows).
fn single(s: &Segment) -> VnetHdr {
    if s.partial {
        let l = &s.layout;
        VnetHdr { flags: F_NEEDS_CSUM, csum_start: l.l4_off as u16, csum_offset: l.l4.csum_offset() as u16, ..VnetHdr::default() }
    } else {
        VnetHdr { flags: F_DATA_VALID, ..VnetHdr::default() }
    }
}

#[cfg(test)]
mod tests;
