//! The worker loop: one TAP queue and one set of underlay sockets, moved in batches.
//!
//! Each iteration waits for either side to be readable, then drains up to `batch` packets from it,
//! runs them through the core, and acts on the verdicts with as few syscalls as the kernel allows:
//! sendmmsg for ordinary frames, one UDP_SEGMENT sendmsg per TCP or UDP super-frame, and one TAP
//! writev per run of coalesced TCP segments or UDP datagrams. Table snapshots are loaded and
//! counters flushed once per batch.
use super::gro::{FrameRef, Gro};
use super::poll::{self, ControlLine, Forwarder, Poller};
use super::tap::TapQueue;
use super::udp::{MmsgScratch, Received, Underlay};
use super::Slots;
use crate::dataplane::decap::{apply_ecn, checksum_hint, is_one_datagram, validate};
use crate::dataplane::ecn;
use crate::dataplane::encap::{dispatch_frame, TxTables};
use crate::dataplane::offload::segment::{cut, segment};
use crate::dataplane::offload::Framing;
use crate::dataplane::{DropReason, LocalCounters, TxVerdict, Vtep, FRAME_OFFSET, VXLAN_OFFSET};
use crate::table::Tables;
use crate::wire::vnet::VnetHdr;
use crate::wire::vxlan;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;

/// Largest frame a TAP can hand us, plus the vnet header: room for 64 KB super-frames.
const SLOT_SIZE: usize = FRAME_OFFSET + 65_536;
/// A segmented super-frame: 64 KB of payload plus a copy of the headers per segment (without UDP
/// GSO; with it, only the headers are written here).
const SEGMENT_BUF: usize = 256 * 1024;
/// The kernel's limits for one UDP_SEGMENT send (UDP_MAX_SEGMENTS on older kernels; IPv4 max).
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 65_507;

/// Which offloads this worker may use; decided at start-up by probing the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Send segmented super-frames with UDP_SEGMENT.
    pub udp_gso: bool,
    /// Coalesce received TCP segments into GSO writes to the TAP.
    pub tap_gro: bool,
    /// The TAP took USO: coalesce received UDP datagrams of one flow as well.
    pub tap_uso: bool,
}

/// Everything a worker needs; built by the control side, moved into the thread.
pub struct WorkerConfig {
    pub vtep: Vtep,
    pub port: u16,
    pub batch: usize,
    pub offloads: Offloads,
    pub tables: Arc<Tables>,
    pub line: ControlLine,
}

/// Why a super-frame did not go out by UDP GSO.
enum SendError {
    /// The device refused UDP GSO before anything was sent: fall back to sendmmsg.
    Refused,
    /// The frame's virtio-net header or headers do not describe a TCP super-frame.
    Malformed,
}

/// What a failed UDP GSO send means. Only a refusal of the first send of a frame can fall back:
/// after it, part of the frame has left and resending all of it would duplicate segments.
#[derive(Debug, PartialEq, Eq)]
enum GsoRefusal {
    /// A segment is larger than the path MTU (an underlay narrower than the tunnel MTU, or a
    /// learned PMTU): GSO will not fragment, plain datagrams will. Only this frame: another
    /// peer's path may be wide enough. Linux says EMSGSIZE; kernels before the fix that made it
    /// so (6.x) said EINVAL, which our sends cannot otherwise provoke (we keep under the segment
    /// limit and never turn off UDP checksums).
    ThisFrame,
    /// The egress device cannot checksum-offload (EIO; OFFLOAD.md pitfall 1): stop trying for
    /// this worker's life.
    Device,
    /// Anything else, or too late to fall back: the datagrams are counted as lost.
    Lost,
}

fn gso_refusal(errno: Option<i32>, first_send: bool) -> GsoRefusal {
    match errno {
        Some(libc::EMSGSIZE | libc::EINVAL) if first_send => GsoRefusal::ThisFrame,
        Some(libc::EIO) if first_send => GsoRefusal::Device,
        _ => GsoRefusal::Lost,
    }
}

/// A datagram waiting for sendmmsg: where it is, where it goes, which send socket.
#[derive(Debug, Clone, Copy)]
struct Pending {
    slot: u32,
    len: u32,
    dst: Ipv4Addr,
    sock: u32,
    /// The outer header's TOS: the inner packet's ECN bits.
    tos: u8,
}

pub struct Worker {
    cfg: WorkerConfig,
    tap: TapQueue,
    udp: Underlay,
    tx_slots: Slots,
    rx_slots: Slots,
    segments: Vec<u8>,
    scratch: MmsgScratch,
    pending: Vec<Pending>,
    received: Vec<Received>,
    gro: Gro,
    local: LocalCounters,
    /// Whether an over-MTU UDP GSO send has been logged (once per worker; it is a setting).
    warned_gso_mtu: bool,
}

impl Worker {
    pub fn new(cfg: WorkerConfig, tap: TapQueue, udp: Underlay) -> Worker {
        let b = cfg.batch.max(1);
        Worker {
            tap,
            udp,
            tx_slots: Slots::new(b, SLOT_SIZE),
            rx_slots: Slots::new(b, SLOT_SIZE),
            segments: vec![0; SEGMENT_BUF],
            scratch: MmsgScratch::new(b.max(GSO_MAX_SEGMENTS)),
            pending: Vec::with_capacity(b),
            received: vec![Received::default(); b],
            gro: Gro::new(Framing::Ethernet, cfg.vtep.mtu as usize, cfg.offloads.tap_gro, cfg.offloads.tap_uso),
            local: LocalCounters::default(),
            warned_gso_mtu: false,
            cfg,
        }
    }

    /// Runs until the stop flag is set. I/O errors on one packet are counted, never fatal.
    /// Returns the TAP queue rather than closing it: the device disappears with its last queue,
    /// and the control side still has routes on it to remove.
    pub fn run(mut self) -> TapQueue {
        let poller = Poller::new(self.tap.as_fd().as_raw_fd(), self.udp.rx.as_raw_fd(), &self.cfg.line);
        poll::drive(&mut self, poller);
        self.tap
    }

    /// TAP → underlay.
    fn dispatch_tap_batch(&mut self) {
        let tables = self.cfg.tables.clone();
        let (fdb, neigh) = (tables.fdb.load(), tables.neigh.load());
        let tables = TxTables { fdb: &fdb, neigh: &neigh };
        self.pending.clear();
        for slot in 0..self.tx_slots.count() {
            let buf = self.tx_slots.get_mut(slot);
            let len = match self.tap.recv(buf) {
                Ok(Some(n)) if n >= FRAME_OFFSET => n - FRAME_OFFSET,
                Ok(Some(_)) => {
                    self.local.drop(DropReason::TxRunt);
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "TAP read failed");
                    break;
                }
            };
            match dispatch_frame(&self.cfg.vtep, &tables, buf, len) {
                TxVerdict::Forward { dst, flow_hash } => {
                    // After the verdict: only then is the frame known to fit the slot.
                    let tos = ecn::of_ethernet(&buf[FRAME_OFFSET..FRAME_OFFSET + len]);
                    let sock = self.udp.tx_index(flow_hash) as u32;
                    let len = (len + FRAME_OFFSET - VXLAN_OFFSET) as u32;
                    self.pending.push(Pending { slot: slot as u32, len, dst, sock, tos });
                }
                TxVerdict::Segment { dst, flow_hash } => {
                    // Keep the flow's order: everything read before this frame leaves first.
                    self.send_pending();
                    self.send_segmented(slot, len, dst, flow_hash);
                }
                TxVerdict::Reply { len } => match self.tap.send(&buf[..FRAME_OFFSET + len]) {
                    Ok(true) => self.local.arp_replies += 1,
                    _ => self.local.drop(DropReason::RxTapWrite),
                },
                TxVerdict::Drop(r) => self.local.drop(r),
            }
        }
        self.send_pending();
    }

    /// Sends pending datagrams, one sendmmsg per send socket. A flow always hashes to the same
    /// socket, so grouping by socket (read order kept within each, as `slot` counts up) keeps every
    /// flow in order, where runs of consecutive items cost a syscall per datagram once several
    /// flows interleave in a batch.
    fn send_pending(&mut self) {
        self.pending.sort_unstable_by_key(|p| (p.sock, p.slot));
        let mut i = 0;
        while i < self.pending.len() {
            let sock = self.pending[i].sock;
            let end = i + self.pending[i..].iter().take_while(|p| p.sock == sock).count();
            let group = &self.pending[i..end];
            let slots = &self.tx_slots;
            let items = group.iter().map(|p| (&slots.get(p.slot as usize)[VXLAN_OFFSET..VXLAN_OFFSET + p.len as usize], p.dst, p.tos));
            let (sent, bytes) = self.scratch.send(&self.udp.tx[sock as usize], items, self.cfg.port);
            self.local.sent(sent, bytes);
            self.local.drop_n(DropReason::TxSendError, group.len() - sent);
            i = end;
        }
        self.pending.clear();
    }

    /// Segments the TCP super-frame in `slot` and sends the datagrams: with UDP GSO, each
    /// segment's headers are written to a buffer of their own and the kernel gathers them with the
    /// payload straight from the frame; without, whole datagrams are built for sendmmsg.
    fn send_segmented(&mut self, slot: usize, len: usize, dst: Ipv4Addr, flow_hash: u32) {
        let sock = self.udp.tx_index(flow_hash);
        if self.cfg.offloads.udp_gso {
            match self.send_gathered(slot, len, sock, dst) {
                Ok(()) => return,
                Err(SendError::Refused) => {}
                Err(SendError::Malformed) => return self.local.drop(DropReason::TxBadGso),
            }
        }
        let buf = self.tx_slots.get(slot);
        let Ok(vnet) = VnetHdr::parse(&buf[..FRAME_OFFSET]) else { return };
        let frame = &buf[FRAME_OFFSET..FRAME_OFFSET + len];
        let tos = ecn::of_ethernet(frame);
        let segs = match segment(&vnet, frame, Framing::Ethernet, &self.cfg.vtep.vni, &mut self.segments) {
            Ok(s) => s,
            Err(e) => {
                tracing::trace!(error = %e, "super-frame not segmented");
                return self.local.drop(DropReason::TxBadGso);
            }
        };
        // A small MSS makes more segments than one sendmmsg takes: send_laid_out chunks them.
        let (sent, bytes) = self.scratch.send_laid_out(&self.udp.tx[sock], &self.segments, &segs, dst, tos, self.cfg.port);
        self.local.sent(sent, bytes);
        self.local.drop_n(DropReason::TxSendError, segs.count - sent);
    }

    /// The UDP GSO path: one gathered sendmsg per (at most) 64 segments.
    fn send_gathered(&mut self, slot: usize, len: usize, sock: usize, dst: Ipv4Addr) -> Result<(), SendError> {
        let Worker { cfg, udp, tx_slots, segments, scratch, local, warned_gso_mtu, .. } = self;
        let buf = tx_slots.get(slot);
        let vnet = VnetHdr::parse(&buf[..FRAME_OFFSET]).map_err(|_| SendError::Malformed)?;
        let c = cut::<vxlan::Vni>(&vnet, &buf[FRAME_OFFSET..FRAME_OFFSET + len], Framing::Ethernet).map_err(|e| {
            tracing::trace!(error = %e, "super-frame not segmented");
            SendError::Malformed
        })?;
        let tos = ecn::of_ethernet(&buf[FRAME_OFFSET..FRAME_OFFSET + len]);
        let h = c.header_len;
        if c.segs.count * h > segments.len() {
            // Only a hostile segment size (a few bytes) gets here; the sendmmsg path refuses it too.
            return Err(SendError::Malformed);
        }
        for i in 0..c.segs.count {
            c.emit_header(i, &cfg.vtep.vni, &mut segments[i * h..(i + 1) * h]);
        }
        let per_send = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / c.segs.seg_len).max(1);
        let mut first = 0;
        while first < c.segs.count {
            let n = per_send.min(c.segs.count - first);
            // One sendmsg; for a single segment the kernel sends a plain datagram.
            let parts = (first..first + n).flat_map(|i| [&segments[i * h..(i + 1) * h], c.payload(i)]);
            match scratch.send_gso(&udp.tx[sock], parts, c.segs.seg_len as u16, dst, tos, cfg.port) {
                Ok(()) => local.sent(n, (first..first + n).map(|i| c.segs.range(i).len()).sum()),
                Err(e) => match gso_refusal(e.raw_os_error(), first == 0) {
                    GsoRefusal::ThisFrame => {
                        if !std::mem::replace(warned_gso_mtu, true) {
                            tracing::warn!(error = %e, "UDP GSO segments exceed the underlay's path MTU; such frames leave as plain, fragmented datagrams");
                        }
                        return Err(SendError::Refused);
                    }
                    GsoRefusal::Device => {
                        tracing::warn!(error = %e, "UDP GSO refused by the underlay device; falling back to sendmmsg");
                        cfg.offloads.udp_gso = false;
                        return Err(SendError::Refused);
                    }
                    GsoRefusal::Lost => {
                        tracing::debug!(error = %e, "UDP GSO send failed");
                        local.drop_n(DropReason::TxSendError, n);
                    }
                },
            }
            first += n;
        }
        Ok(())
    }


    /// Underlay → TAP.
    fn process_udp_batch(&mut self) {
        let got = match self.scratch.recv(&self.udp.rx, &mut self.rx_slots, 0, VXLAN_OFFSET, &mut self.received) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                return;
            }
        };
        let tables = self.cfg.tables.clone();
        let peers = tables.peers.load();
        let now = crate::table::coarse_now();
        for i in 0..got {
            let r = self.received[i];
            if r.len == 0 {
                // An empty datagram has nothing to split; validating it still checks the source
                // first, so a stranger's is counted as one and a peer's as truncated.
                self.local.drop(validate(&self.cfg.vtep, &peers, r.src, &[], now).err().unwrap_or(DropReason::RxTruncated));
                continue;
            }
            let (seg, udp_gso_size) = split_size(&r, &self.rx_slots.get(i)[VXLAN_OFFSET..VXLAN_OFFSET + r.len]);
            let mut off = 0;
            while off < r.len {
                let dlen = seg.min(r.len - off);
                let start = VXLAN_OFFSET + off;
                let dgram = &self.rx_slots.get(i)[start..start + dlen];
                let frame = start + vxlan::HEADER_LEN..start + dlen;
                let checked = validate(&self.cfg.vtep, &peers, r.src, dgram, now)
                    .and_then(|()| apply_ecn(&mut self.rx_slots.get_mut(i)[frame], r.tos));
                match checked {
                    Ok(()) => {
                        let f = FrameRef { slot: i as u32, start: (start + vxlan::HEADER_LEN) as u32, len: (dlen - vxlan::HEADER_LEN) as u32, udp_gso_size };
                        self.gro.deliver(&mut self.rx_slots, f, &self.tap, &mut self.local, checksum_hint);
                    }
                    Err(reason) => self.local.drop(reason),
                }
                off += dlen;
            }
        }
        self.gro.flush(&mut self.rx_slots, &self.tap, &mut self.local);
    }
}

/// How to split a received buffer: into datagrams of the reported size, or — for one datagram
/// carrying a whole UDP_SEGMENT packet — not at all, keeping the reported size for the USO write.
fn split_size(r: &Received, buf: &[u8]) -> (usize, u16) {
    let seg = r.seg_size.max(1);
    if seg < r.len && is_one_datagram(buf) {
        (r.len, seg.min(u16::MAX as usize) as u16)
    } else {
        (seg, 0)
    }
}

impl Forwarder for Worker {
    fn line(&self) -> &ControlLine {
        &self.cfg.line
    }

    fn set_device(&mut self, queue: TapQueue) -> RawFd {
        self.tap = queue;
        self.tap.as_fd().as_raw_fd()
    }

    fn device_batch(&mut self) {
        self.dispatch_tap_batch();
    }

    fn underlay_batch(&mut self) {
        self.process_udp_batch();
    }

    fn flush_counters(&mut self) {
        self.cfg.line.counters.flush(&mut self.local);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gso_send_over_the_path_mtu_falls_back_for_its_frame_on_old_and_new_kernels() {
        // EINVAL is what kernels before 6.x said for a segment over the MTU: one frame's problem,
        // not the device's — GSO must stay on for the next frame.
        for errno in [libc::EMSGSIZE, libc::EINVAL] {
            assert_eq!(gso_refusal(Some(errno), true), GsoRefusal::ThisFrame);
        }
        assert_eq!(gso_refusal(Some(libc::EIO), true), GsoRefusal::Device);
        // Part of the frame has left: resending the rest whole would duplicate segments.
        for errno in [libc::EMSGSIZE, libc::EINVAL, libc::EIO, libc::ENOBUFS] {
            assert_eq!(gso_refusal(Some(errno), false), GsoRefusal::Lost);
        }
        assert_eq!(gso_refusal(Some(libc::EHOSTUNREACH), true), GsoRefusal::Lost);
        assert_eq!(gso_refusal(None, true), GsoRefusal::Lost);
    }
}
