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
            // A whole UDP_SEGMENT packet is cut back into its datagrams even when it fits the MTU
            // (two 600-byte QUIC packets in one send): written plain, the application would get
            // one datagram where it sent two.
            let uso = match f.udp_gso_size {
                0 => None,
                gso => coalesce::oversized_udp(frame, self.framing, gso as usize),
            };
            let vnet = match uso {
                Some(uso) if !self.udp => return self.write_cut(slots, &uso, f, dev, local),
                Some(uso) => Some(uso),
                None if big => coalesce::oversized(frame, self.framing, self.mtu),
                None => None,
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
                // Counted as received, headers and all, so rx_bytes agrees with the sender's tx_bytes.
                bytes += f.len as usize;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vnet::{GSO_NONE, GSO_UDP_L4};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// A UDP_SEGMENT packet of ten 100-byte datagrams (1042 bytes: under the MTU), as a kernel
    /// VXLAN peer sends it whole, in slot 0 at offset 12.
    fn small_uso_frame(slots: &mut Slots) -> FrameRef {
        let payload: Vec<u8> = (0..1000).map(|i| i as u8).collect();
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
            .ipv4([10, 244, 2, 2], [10, 244, 1, 2], 64)
            .udp(4433, 443)
            .write(&mut frame, &payload)
            .unwrap();
        slots.get_mut(0)[12..12 + frame.len()].copy_from_slice(&frame);
        FrameRef { slot: 0, start: 12, len: frame.len() as u32, udp_gso_size: 100 }
    }

    /// A datagram socket pair: one end stands in for the device, the other shows what was written.
    fn device() -> (TapQueue, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors socketpair writes.
        assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned by nothing else.
        unsafe { (TapQueue::from_fd(OwnedFd::from_raw_fd(fds[0])), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Every write made to the device: frame length and virtio-net header.
    fn written(peer: &OwnedFd) -> Vec<(usize, VnetHdr)> {
        let mut writes = Vec::new();
        let mut b = [0u8; 65_536];
        loop {
            // SAFETY: `b` is writable for its length.
            let n = unsafe { libc::recv(peer.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
            if n <= 0 {
                break writes;
            }
            writes.push((n as usize - vnet::HEADER_LEN, VnetHdr::parse(&b[..vnet::HEADER_LEN]).unwrap()));
        }
    }

    fn delivered(uso_device: bool) -> (Vec<(usize, VnetHdr)>, LocalCounters) {
        let (dev, peer) = device();
        let mut slots = Slots::new(1, 4096);
        let f = small_uso_frame(&mut slots);
        let mut local = LocalCounters::default();
        let mut gro = Gro::new(Framing::Ethernet, 1450, true, uso_device);
        gro.deliver(&mut slots, f, &dev, &mut local, |_| VnetHdr::default());
        gro.flush(&mut slots, &dev, &mut local);
        (written(&peer), local)
    }

    #[test]
    fn merged_frames_count_their_own_bytes() {
        let mut slots = Slots::new(3, 4096);
        let mut frames = Vec::new();
        for i in 0..3u32 {
            let mut f = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
                .ipv4([10, 244, 2, 2], [10, 244, 1, 2], 64)
                .tcp(5201, 40000, 1000 + i * 1000, 64000)
                .ack(1)
                .write(&mut f, &[i as u8; 1000])
                .unwrap();
            slots.get_mut(i as usize)[..f.len()].copy_from_slice(&f);
            frames.push(FrameRef { slot: i, start: 0, len: f.len() as u32, udp_gso_size: 0 });
        }
        let (dev, peer) = device();
        let mut local = LocalCounters::default();
        let mut gro = Gro::new(Framing::Ethernet, 1450, true, false);
        frames.iter().for_each(|f| gro.deliver(&mut slots, *f, &dev, &mut local, |_| VnetHdr::default()));
        gro.flush(&mut slots, &dev, &mut local);
        let writes = written(&peer);
        assert_eq!(writes.len(), 1, "merged into one write: {writes:?}");
        assert_eq!(local.rx_packets, 3);
        assert_eq!(local.rx_bytes, frames.iter().map(|f| f.len as u64).sum::<u64>());
    }

    #[test]
    fn small_uso_packet_goes_up_as_its_datagrams_with_uso() {
        let (writes, local) = delivered(true);
        assert_eq!(writes.len(), 1, "{writes:?}");
        let (len, vnet) = writes[0];
        assert_eq!((len, vnet.gso_type, vnet.gso_size), (1042, GSO_UDP_L4, 100), "{vnet:?}");
        assert_eq!(local.rx_packets, 1);
    }

    #[test]
    fn small_uso_packet_goes_up_cut_without_uso() {
        let (writes, _) = delivered(false);
        assert_eq!(writes.len(), 10, "{writes:?}");
        assert!(writes.iter().all(|(len, v)| *len == 14 + 20 + 8 + 100 && v.gso_type == GSO_NONE), "{writes:?}");
    }
}
