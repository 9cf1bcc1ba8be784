//! The IPIP worker loop: one TUN queue, one raw send socket and a raw receive socket filtered to
//! this worker's share of the inner flows (`io::steer`; none beyond its cap), moved in batches.
//!
//! It has the shape of [`super::worker`] — poll both sides, drain up to `batch` packets from the
//! readable one, run the core over them with table snapshots loaded once per batch, flush counters
//! once per batch — with the TUN/raw-socket specifics: the TUN read starts at
//! [`TUN_OFFSET`] so that the outer header can be written in front of the packet, and raw sockets
//! need no source-port spreading (there are no ports), so one send socket per worker suffices.
//!
//! Offloads: with TSO on the TUN a read may be a 64 KB TCP super-packet; it is cut into MTU-sized
//! IPIP packets back to back and sent with sendmmsg (raw sockets have no GSO, OFFLOAD.md pitfall 9).
//! On receive, consecutive segments of one flow in a batch go up as one GSO write ([`Gro`]).
use super::gro::{FrameRef, Gro};
use super::poll::{self, ControlLine, Forwarder, Poller};
use super::tun::TunQueue;
use super::udp::{MmsgScratch, Received};
use super::Slots;
use crate::dataplane::decap::checksum_hint_ip;
use crate::dataplane::ipip::{dispatch_packet, fragment, process_packet, segment, Tunnel, INNER_OFFSET, OUTER_LEN, TUN_OFFSET};
use crate::dataplane::offload::segment::Segments;
use crate::dataplane::offload::Framing;
use crate::dataplane::{DropReason, IpipRxVerdict, IpipTxVerdict, LocalCounters};
use crate::table::Tables;
use crate::wire::vnet;
use socket2::Socket;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;

/// Room for the largest packet a TUN can hand us (or an IPv4 packet can be), plus headroom.
const SLOT_SIZE: usize = INNER_OFFSET + 65_536;
/// Room for the fragments of the largest packet at the smallest MTU (68: 48 data bytes and 40 of
/// headers per fragment, 1366 fragments), and for a segmented super-packet (64 KB of payload plus
/// a copy of the headers per segment; a tiny gso_size that needs more is refused as NoRoom).
const OUT_BUF_SIZE: usize = 256 * 1024;
/// sendmmsg at least this many at a time: a 64 KB super-packet at MSS 1428 is 46 segments.
const MIN_MMSG: usize = 64;

/// Everything an IPIP worker needs; built by the control side, moved into the thread.
pub struct IpipWorkerConfig {
    pub tunnel: Tunnel,
    pub batch: usize,
    pub tables: Arc<Tables>,
    /// Coalesce received TCP segments into GSO writes to the TUN.
    pub gro: bool,
    /// The TUN took USO: received UDP datagrams of one flow are coalesced too.
    pub uso: bool,
    pub line: ControlLine,
}

/// An encapsulated packet waiting for sendmmsg.
#[derive(Debug, Clone, Copy)]
struct Pending {
    slot: u32,
    len: u32,
    dst: Ipv4Addr,
}

pub struct IpipWorker {
    cfg: IpipWorkerConfig,
    tun: TunQueue,
    tx: Socket,
    /// The receive socket with this worker's share of the flows; `None` past `steer::MAX_RX_SOCKETS`.
    rx: Option<Socket>,
    tx_slots: Slots,
    rx_slots: Slots,
    scratch: MmsgScratch,
    pending: Vec<Pending>,
    /// Fragments of one oversized packet, or the segments of one super-packet, back to back.
    out_buf: Vec<u8>,
    received: Vec<Received>,
    gro: Gro,
    local: LocalCounters,
}

impl IpipWorker {
    pub fn new(cfg: IpipWorkerConfig, tun: TunQueue, tx: Socket, rx: Option<Socket>) -> IpipWorker {
        let b = cfg.batch.max(1);
        IpipWorker {
            tun,
            tx,
            rx_slots: Slots::new(if rx.is_some() { b } else { 0 }, SLOT_SIZE),
            rx,
            tx_slots: Slots::new(b, SLOT_SIZE),
            scratch: MmsgScratch::new(b.max(MIN_MMSG)),
            pending: Vec::with_capacity(b),
            out_buf: vec![0; OUT_BUF_SIZE],
            received: vec![Received::default(); b],
            gro: Gro::new(Framing::Ip, cfg.tunnel.mtu as usize, cfg.gro, cfg.uso),
            local: LocalCounters::default(),
            cfg,
        }
    }

    /// Runs until the stop flag is set. I/O errors on one packet are counted, never fatal.
    /// Returns the TUN queue rather than closing it: the device disappears with its last queue,
    /// and the control side still has routes on it to remove.
    pub fn run(mut self) -> TunQueue {
        let rx_fd = self.rx.as_ref().map_or(-1, |s| s.as_raw_fd());
        let poller = Poller::new(self.tun.as_fd().as_raw_fd(), rx_fd, &self.cfg.line);
        poll::drive(&mut self, poller);
        self.tun
    }

    /// TUN → underlay.
    fn dispatch_tun_batch(&mut self) {
        let routes = self.cfg.tables.routes.load();
        self.pending.clear();
        for slot in 0..self.tx_slots.count() {
            let buf = self.tx_slots.get_mut(slot);
            let len = match self.tun.recv(&mut buf[TUN_OFFSET..]) {
                Ok(Some(n)) if n >= vnet::HEADER_LEN => n - vnet::HEADER_LEN,
                Ok(Some(_)) => {
                    self.local.drop(DropReason::TxRunt);
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "TUN read failed");
                    break;
                }
            };
            match dispatch_packet(&self.cfg.tunnel, &routes, buf, len) {
                IpipTxVerdict::Forward { dst, len } => self.pending.push(Pending { slot: slot as u32, len: len as u32, dst }),
                IpipTxVerdict::Reply { start, len } => {
                    // The packet is dropped either way; the reason says an ICMP error was attempted.
                    if !matches!(self.tun.send(&buf[start..start + len]), Ok(true)) {
                        tracing::debug!("TUN refused an ICMP fragmentation-needed");
                    }
                    self.local.drop(DropReason::TxFragNeeded);
                }
                IpipTxVerdict::Fragment { dst, len } => {
                    let Some(frags) = fragment(&self.cfg.tunnel, dst, &buf[INNER_OFFSET..INNER_OFFSET + len], &mut self.out_buf) else {
                        self.local.drop(DropReason::TxTooBig);
                        continue;
                    };
                    // What was read before goes first, so a flow is never reordered.
                    self.send_pending();
                    self.send_back_to_back(frags, dst);
                }
                IpipTxVerdict::Segment { dst, len } => match segment(&self.cfg.tunnel, dst, buf, len, &mut self.out_buf) {
                    Ok(segs) => {
                        self.send_pending();
                        self.send_back_to_back(segs, dst);
                    }
                    Err(r) => {
                        tracing::trace!(reason = r.name(), "super-packet not segmented");
                        self.local.drop(r);
                    }
                },
                IpipTxVerdict::Drop(r) => self.local.drop(r),
            }
        }
        self.send_pending();
    }

    /// Sends the encapsulated packets collected so far; the whole batch is one sendmmsg run, since
    /// raw sockets have no ports to choose.
    fn send_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let slots = &self.tx_slots;
        // The outer header, TOS and all, is in the packet (IP_HDRINCL): no TOS cmsg.
        let items = self.pending.iter().map(|p| (&slots.get(p.slot as usize)[..p.len as usize], p.dst, 0));
        let (sent, bytes) = self.scratch.send(&self.tx, items, 0);
        self.local.sent(sent, bytes - sent * OUTER_LEN);
        self.local.drop_n(DropReason::TxSendError, self.pending.len() - sent);
        self.pending.clear();
    }

    /// Sends the packets laid out in `out_buf` (fragments or segments), as many per sendmmsg as
    /// the scratch arrays hold.
    fn send_back_to_back(&mut self, frags: Segments, dst: Ipv4Addr) {
        let (sent, bytes) = self.scratch.send_laid_out(&self.tx, &self.out_buf, &frags, dst, 0, 0);
        // Counted as the inner packets' bytes, like every other send of this worker.
        self.local.sent(sent, bytes - sent * OUTER_LEN);
        self.local.drop_n(DropReason::TxSendError, frags.count - sent);
    }

    /// Underlay → TUN.
    fn process_raw_batch(&mut self) {
        let Some(rx) = self.rx.as_ref() else { return };
        let got = match self.scratch.recv(rx, &mut self.rx_slots, 0, 0, &mut self.received) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "raw receive failed");
                return;
            }
        };
        let peers = self.cfg.tables.peers.load();
        let now = crate::table::coarse_now();
        for i in 0..got {
            // Raw sockets have no GRO: one packet per buffer, `seg_size == len`.
            let Received { len, src, .. } = self.received[i];
            match process_packet(&self.cfg.tunnel, &peers, src, self.rx_slots.get_mut(i), len, now) {
                IpipRxVerdict::Deliver { start, len } => {
                    // The core wrote a vnet header in front; the coalescer writes its own, the same
                    // checksum hint for a packet it does not merge.
                    let f = FrameRef { slot: i as u32, start: (start + vnet::HEADER_LEN) as u32, len: (len - vnet::HEADER_LEN) as u32, udp_gso_size: 0 };
                    self.gro.deliver(&mut self.rx_slots, f, &self.tun, &mut self.local, checksum_hint_ip);
                }
                IpipRxVerdict::Drop(r) => {
                    tracing::trace!(%src, reason = r.name(), "IPIP packet dropped");
                    self.local.drop(r);
                }
            }
        }
        self.gro.flush(&mut self.rx_slots, &self.tun, &mut self.local);
    }
}

impl Forwarder for IpipWorker {
    fn line(&self) -> &ControlLine {
        &self.cfg.line
    }

    fn set_device(&mut self, queue: TunQueue) -> RawFd {
        self.tun = queue;
        self.tun.as_fd().as_raw_fd()
    }

    fn device_batch(&mut self) {
        self.dispatch_tun_batch();
    }

    fn underlay_batch(&mut self) {
        self.process_raw_batch();
    }

    fn flush_counters(&mut self) {
        self.cfg.line.counters.flush(&mut self.local);
    }
}
