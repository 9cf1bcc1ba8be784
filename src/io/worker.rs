//! The worker loop: one TAP queue and one set of underlay sockets, moved in batches.
//!
//! Each iteration waits for either side to be readable, then drains up to `batch` packets from it,
//! runs them through the core, and acts on the verdicts with as few syscalls as the kernel allows.
//! Table snapshots are loaded once per batch; counters are flushed once per batch.
use super::tap::TapQueue;
use super::udp::{MmsgScratch, TxItem, Underlay};
use super::Slots;
use crate::dataplane::decap::process_datagram;
use crate::dataplane::encap::{dispatch_frame, TxTables};
use crate::dataplane::{Counters, DropReason, LocalCounters, RxVerdict, TxVerdict, Vtep, FRAME_OFFSET, VXLAN_OFFSET};
use crate::table::Tables;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Largest frame a TAP can hand us, plus the vnet header: room for 64 KB super-frames.
const SLOT_SIZE: usize = FRAME_OFFSET + 65_536;
/// How long a worker sleeps in poll before it looks at the stop flag again.
const POLL_TIMEOUT_MS: i32 = 200;

/// Everything a worker needs; built by the control side, moved into the thread.
pub struct WorkerConfig {
    pub vtep: Vtep,
    pub port: u16,
    pub batch: usize,
    pub tables: Arc<Tables>,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
}

pub struct Worker {
    cfg: WorkerConfig,
    tap: TapQueue,
    udp: Underlay,
    tx_slots: Slots,
    rx_slots: Slots,
    scratch: MmsgScratch,
    pending: Vec<TxItem>,
    /// Send-socket index of each pending item, parallel to `pending`.
    pending_sock: Vec<u32>,
    group: Vec<TxItem>,
    received: Vec<(usize, Ipv4Addr)>,
    local: LocalCounters,
}

impl Worker {
    pub fn new(cfg: WorkerConfig, tap: TapQueue, udp: Underlay) -> Worker {
        let b = cfg.batch.max(1);
        Worker {
            tap,
            udp,
            tx_slots: Slots::new(b, SLOT_SIZE),
            rx_slots: Slots::new(b, SLOT_SIZE),
            scratch: MmsgScratch::new(b),
            pending: Vec::with_capacity(b),
            pending_sock: Vec::with_capacity(b),
            group: Vec::with_capacity(b),
            received: vec![(0, Ipv4Addr::UNSPECIFIED); b],
            local: LocalCounters::default(),
            cfg,
        }
    }

    /// Runs until the stop flag is set. I/O errors on one packet are counted, never fatal.
    pub fn run(mut self) {
        let mut fds = [
            libc::pollfd { fd: self.tap.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.udp.rx.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        while !self.cfg.stop.load(Ordering::Relaxed) {
            // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, POLL_TIMEOUT_MS) };
            if n <= 0 {
                continue;
            }
            if fds[0].revents != 0 {
                self.dispatch_tap_batch();
            }
            if fds[1].revents != 0 {
                self.process_udp_batch();
            }
            self.cfg.counters.flush(&mut self.local);
        }
        self.cfg.counters.flush(&mut self.local);
    }

    /// TAP → underlay.
    fn dispatch_tap_batch(&mut self) {
        let fdb = self.cfg.tables.fdb.load();
        let neigh = self.cfg.tables.neigh.load();
        let tables = TxTables { fdb: &fdb, neigh: &neigh };
        self.pending.clear();
        self.pending_sock.clear();
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
                    self.pending.push(TxItem { slot: slot as u32, len: (len + FRAME_OFFSET - VXLAN_OFFSET) as u32, dst });
                    self.pending_sock.push(flow_hash % self.udp.tx.len() as u32);
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

    /// Sends pending datagrams, one sendmmsg per run of items that share a send socket.
    fn send_pending(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            let sock = self.pending_sock[i];
            self.group.clear();
            while i < self.pending.len() && self.pending_sock[i] == sock {
                self.group.push(self.pending[i]);
                i += 1;
            }
            let s = &self.udp.tx[sock as usize];
            let sent = self.scratch.send(s, &self.tx_slots, VXLAN_OFFSET, &self.group, self.cfg.port);
            let bytes: u64 = self.group[..sent].iter().map(|t| t.len as u64).sum();
            self.local.tx_packets += sent as u64;
            self.local.tx_bytes += bytes;
            for _ in sent..self.group.len() {
                self.local.drop(DropReason::TxSendError);
            }
        }
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
        let peers = self.cfg.tables.peers.load();
        for i in 0..got {
            let (len, src) = self.received[i];
            let buf = self.rx_slots.get_mut(i);
            match process_datagram(&self.cfg.vtep, &peers, src, buf, len) {
                RxVerdict::Deliver { frame_len } => match self.tap.send(&buf[..FRAME_OFFSET + frame_len]) {
                    Ok(true) => {
                        self.local.rx_packets += 1;
                        self.local.rx_bytes += frame_len as u64;
                    }
                    Ok(false) | Err(_) => self.local.drop(DropReason::RxTapWrite),
                },
                RxVerdict::Drop(r) => self.local.drop(r),
            }
        }
    }
}
