//! The driver half of software GRO, shared by the VXLAN (TAP) and IPIP (TUN) workers: it walks a
//! receive batch's decapsulated frames in order, gathers runs (TCP, and UDP where the device took
//! USO) that `dataplane::offload::coalesce` accepts, and writes each run to the device as one GSO
//! frame with one writev — the head frame in full, then only the payloads of the others, so nothing
//! is copied together first.
use super::tap::TapQueue;
use super::Slots;
use crate::dataplane::offload::coalesce::{self, Run};
use crate::dataplane::offload::segment::{self, Bare};
use crate::dataplane::offload::Framing;
use crate::dataplane::{DropReason, LocalCounters};
use crate::wire::vnet::{self, VnetHdr};

/// A received frame by position: `slots[slot][start..start + len]`.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef {
    pub slot: u32,
    pub start: u32,
    pub len: u32,
    /// The segment size the socket reported for a datagram that carries a whole UDP_SEGMENT
    /// super-packet (see `decap::is_one_datagram`); 0 otherwise.
    pub udp_gso_size: u16,
}

pub struct Gro {
    framing: Framing,
    mtu: usize,
    /// Off: every frame is written on its own (offloads disabled).
    enabled: bool,
    /// Merge UDP datagrams too: only when the device took USO, the kernel that reads our USO
    /// frames being the one that offered it.
    udp: bool,
    /// The current run: its state and its frames (the first is the head).
    run: Option<Run>,
    frames: Vec<FrameRef>,
    iov: Vec<libc::iovec>,
    vnet_buf: [u8; vnet::HEADER_LEN],
    /// One datagram's headers while a UDP super-packet is cut here (see `write_cut`).
    hdr_buf: [u8; MAX_HEADERS],
}

/// Ethernet, the largest IPv4 or IPv6 header `L4Layout` takes, UDP: room to spare.
const MAX_HEADERS: usize = 256;

// SAFETY: `iov` holds raw pointers only while a writev is being prepared within one method call;
// between calls they are dangling-but-unused, and the Gro is moved to its thread before use.
unsafe impl Send for Gro {}

impl Gro {
    /// `mtu` is the device's (an IP MTU): a frame carrying more than that must go up as GSO.
    pub fn new(framing: Framing, mtu: usize, enabled: bool, udp: bool) -> Gro {
        Gro {
            framing,
            mtu,
            enabled,
            udp: enabled && udp,
            run: None,
            frames: Vec::with_capacity(coalesce::MAX_SEGMENTS),
            iov: Vec::with_capacity(coalesce::MAX_SEGMENTS + 1),
            vnet_buf: [0; vnet::HEADER_LEN],
            hdr_buf: [0; MAX_HEADERS],
        }
    }

    /// Adds the received frame `f` to the current run, or writes it on its own with the header
    /// `hint` gives for it (the backend's checksum rules for frames that are not merged).
    pub fn deliver(&mut self, slots: &mut Slots, f: FrameRef, dev: &TapQueue, local: &mut LocalCounters, hint: impl Fn(&[u8]) -> VnetHdr) {
        let seg = match (self.enabled, f.udp_gso_size) {
            (true, 0) => {
                let bytes = frame(slots, f);
                coalesce::candidate(bytes, self.framing).or_else(|| self.udp.then(|| coalesce::candidate_udp(bytes, self.framing)).flatten())
            }
            // A whole UDP_SEGMENT packet in one datagram is already what a run would make.
            _ => None,
        };
        let Some(seg) = seg else {
            self.flush(slots, dev, local);
            let frame = &mut slots.get_mut(f.slot as usize)[f.start as usize..(f.start + f.len) as usize];
            let big = frame.len() > self.framing.link_len() + self.mtu;
            let vnet = match (big, f.udp_gso_size) {
                (false, _) => None,
                (true, 0) => coalesce::oversized(frame, self.framing, self.mtu),
                (true, gso) => match coalesce::oversized_udp(frame, self.framing, gso as usize) {
                    Some(uso) if !self.udp => return self.write_cut(slots, &uso, f, dev, local),
                    v => v,
                },
            };
            let vnet = vnet.unwrap_or_else(|| hint(frame));
            return self.write(slots, &vnet, f, 1, dev, local);
        };
        // Without any trailing bytes (Ethernet padding): a run's payloads are gathered back to back.
        let f = FrameRef { len: (seg.layout.header_len() + seg.payload_len) as u32, ..f };
        if let (Some(run), Some(head)) = (&mut self.run, self.frames.first()) {
            if run.accepts(frame(slots, *head), frame(slots, f), &seg) {
                run.push(&seg);
                self.frames.push(f);
                return;
            }
        }
        self.flush(slots, dev, local);
        self.run = Some(Run::start(seg));
        self.frames.push(f);
    }

    /// Writes the current run as one (GSO) frame. Called at the end of every receive batch: a run
    /// never waits for the next batch.
    pub fn flush(&mut self, slots: &mut Slots, dev: &TapQueue, local: &mut LocalCounters) {
        let Some(run) = self.run.take() else { return };
        let head = self.frames[0];
        let bytes = &mut slots.get_mut(head.slot as usize)[head.start as usize..(head.start + head.len) as usize];
        let vnet = coalesce::finish(bytes, &run, self.mtu);
        self.write(slots, &vnet, head, run.count, dev, local);
        self.frames.clear();
    }

    /// One writev: vnet header, `head`, and (for a run) the payloads of `frames[1..count]`.
    fn write(&mut self, slots: &Slots, vnet: &VnetHdr, head: FrameRef, count: usize, dev: &TapQueue, local: &mut LocalCounters) {
        vnet.emit(&mut self.vnet_buf);
        self.iov.clear();
        self.iov.push(iovec(&self.vnet_buf));
        let head_bytes = frame(slots, head);
        self.iov.push(iovec(head_bytes));
        let mut bytes = head_bytes.len();
        if count > 1 {
            let hdr = vnet.hdr_len as usize;
            for f in &self.frames[1..count] {
                let payload = &slots.get(f.slot as usize)[(f.start as usize + hdr)..(f.start + f.len) as usize];
                bytes += payload.len();
                self.iov.push(iovec(payload));
            }
        }
        match dev.send_iov(&self.iov) {
            Ok(true) => {
                local.rx_packets += count as u64;
                local.rx_bytes += bytes as u64;
            }
            Ok(false) | Err(_) => (0..count).for_each(|_| local.drop(DropReason::RxTapWrite)),
        }
        self.iov.clear();
    }

    /// A device without USO (kernels before 6.2 refuse a USO write) gets a whole UDP_SEGMENT
    /// packet as the application's datagrams, cut here: one writev each, headers from `hdr_buf`,
    /// payload straight from the frame.
    fn write_cut(&mut self, slots: &Slots, uso: &VnetHdr, f: FrameRef, dev: &TapQueue, local: &mut LocalCounters) {
        let bytes = frame(slots, f);
        let cut = match segment::cut::<Bare>(uso, bytes, self.framing) {
            Ok(c) if c.header_len <= MAX_HEADERS => c,
            _ => return local.drop(DropReason::RxBadGso),
        };
        // No F_DATA_VALID: the kernel checks each datagram's checksum, as it would a NIC's. This is
        // the fallback for old kernels; one more pass over the bytes buys an independent check.
        VnetHdr::default().emit(&mut self.vnet_buf);
        let mut sent = true;
        for i in 0..cut.segs.count {
            let hdr = &mut self.hdr_buf[..cut.header_len];
            cut.emit_header(i, &Bare, hdr);
            let iov = [iovec(&self.vnet_buf), iovec(hdr), iovec(cut.payload(i))];
            sent &= matches!(dev.send_iov(&iov), Ok(true));
        }
        if sent {
            local.rx_packets += 1;
            local.rx_bytes += bytes.len() as u64;
        } else {
            local.drop(DropReason::RxTapWrite);
        }
    }
}

fn frame(slots: &Slots, f: FrameRef) -> &[u8] {
    &slots.get(f.slot as usize)[f.start as usize..(f.start + f.len) as usize]
}

fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() }
}
