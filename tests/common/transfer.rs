//! Checksummed TCP transfers (run to the end, or held open across a fault) and a background ping.
use super::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Deterministic pseudo-random bytes (xorshift64), so both ends can be checked without storing 50 MB.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Sends `nbytes` of xorshift data over TCP from namespace `tx_ns` (bound to `tx_src` if given) to a
/// listener on `rx_addr:port` in namespace `rx_ns`; asserts both ends saw the same byte count and SHA-256.
pub fn tcp_transfer(
    tx_ns: &Netns,
    tx_src: Option<Ipv4Addr>,
    rx_ns: &Netns,
    rx_addr: Ipv4Addr,
    port: u16,
    nbytes: usize,
) {
    let plan = TransferPlan { nbytes, rate: None, hold: 0 };
    Transfer::spawn(tx_ns, tx_src, rx_ns, rx_addr, port, plan, IO_TIMEOUT).finish(nbytes);
}

/// How a [`Transfer`] sends.
#[derive(Clone, Copy, Debug)]
pub struct TransferPlan {
    pub nbytes: usize,
    /// Upper bound on the send rate in bytes per second (None: as fast as TCP goes). Pacing only
    /// ever slows the sender, so a loaded machine cannot make a transfer end sooner than planned.
    pub rate: Option<u64>,
    /// The last `hold` bytes are sent only after [`Transfer::release`]: the transfer is
    /// guaranteed to be open across whatever the test does in between.
    pub hold: usize,
}

/// What one end of a [`Transfer`] ends with: bytes and their SHA-256, or what went wrong.
type EndResult = Result<(usize, Vec<u8>), String>;

/// A checksummed TCP transfer running in the background, with progress, so a test can do
/// something to the path while it is in flight ([`tcp_transfer`] is one run to the end).
pub struct Transfer {
    what: String,
    sent: Arc<AtomicUsize>,
    gate: Arc<AtomicBool>,
    sender: Option<JoinHandle<EndResult>>,
    receiver: Option<JoinHandle<EndResult>>,
}

/// Read/write timeout of a [`Transfer`]: longer than any fault plus recovery, so a connection that
/// rides out an outage is not declared dead, yet a stalled one fails instead of hanging. Not a
/// speed assertion.
const HELD_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Read/write timeout of a plain [`tcp_transfer`]: nothing is done to its path, so a stall is a
/// failure to report soon. Not a speed assertion.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

impl Transfer {
    pub fn start(
        tx_ns: &Netns,
        tx_src: Ipv4Addr,
        rx_ns: &Netns,
        rx_addr: Ipv4Addr,
        port: u16,
        plan: TransferPlan,
    ) -> Transfer {
        Transfer::spawn(tx_ns, Some(tx_src), rx_ns, rx_addr, port, plan, HELD_IO_TIMEOUT)
    }

    /// The sender binds to `tx_src` if given, else the kernel picks its source address; a read or
    /// write that waits longer than `io_timeout` fails the transfer.
    fn spawn(
        tx_ns: &Netns,
        tx_src: Option<Ipv4Addr>,
        rx_ns: &Netns,
        rx_addr: Ipv4Addr,
        port: u16,
        plan: TransferPlan,
        io_timeout: Duration,
    ) -> Transfer {
        let what = format!(
            "TCP {} ({tx_src:?}) -> {}:{rx_addr}:{port}, {} bytes",
            tx_ns.name(),
            rx_ns.name(),
            plan.nbytes
        );
        let rx = SocketAddrV4::new(rx_addr, port);
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let receiver = spawn_in_netns(rx_ns.name(), move || receive(rx, io_timeout, ready_tx));
        if ready_rx.recv_timeout(READY_TIMEOUT).is_err() {
            let r = receiver.join();
            panic!("{what}: receiver did not start listening: {r:?}");
        }
        let sent = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(AtomicBool::new(false));
        let (progress, open) = (Arc::clone(&sent), Arc::clone(&gate));
        let seed = 0x5eed_0000 ^ u64::from(port) ^ (plan.nbytes as u64);
        let sender = spawn_in_netns(tx_ns.name(), move || {
            let stream = connect(tx_src, rx, io_timeout)?;
            send(stream, plan, seed, io_timeout, &progress, &open)
        });
        Transfer {
            what,
            sent,
            gate,
            sender: Some(sender),
            receiver: Some(receiver),
        }
    }

    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until the sender has written at least `bytes`.
    pub fn wait_sent(&self, bytes: usize) {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        while self.sent() < bytes {
            if self.sender.as_ref().is_some_and(|s| s.is_finished()) {
                panic!(
                    "{}: sender ended after {} bytes, before {bytes}",
                    self.what,
                    self.sent()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: only {} of {bytes} bytes sent after {RECOVERY_TIMEOUT:?}",
                    self.what,
                    self.sent()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets the held last bytes go.
    pub fn release(&self) {
        self.gate.store(true, Ordering::Relaxed);
    }

    /// Releases, waits for both ends and asserts byte count and SHA-256 match.
    pub fn finish(mut self, nbytes: usize) {
        self.release();
        let sent = self
            .sender
            .take()
            .unwrap()
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        let received = self
            .receiver
            .take()
            .unwrap()
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        let what = &self.what;
        let (sent_n, sent_h) =
            sent.unwrap_or_else(|e| panic!("{what}: sender failed: {e} (receiver: {received:?})"));
        let (recv_n, recv_h) = received.unwrap_or_else(|e| panic!("{what}: receiver failed: {e}"));
        assert_eq!(sent_n, nbytes, "{what}: sender wrote {sent_n} bytes");
        assert_eq!(recv_n, nbytes, "{what}: receiver got {recv_n} bytes");
        assert_eq!(
            hex(&sent_h),
            hex(&recv_h),
            "{what}: SHA-256 differs between sender and receiver"
        );
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        // A failed test must not leave the sender waiting on the gate for a minute.
        self.release();
    }
}

/// Pings `dst` from `src` in `ns` once every 200 ms on a background thread until dropped or
/// [`PingLoop::stop`]ped; counts answers. Used to keep traffic flowing across a fault.
pub struct PingLoop {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(u32, u32)>>,
}

impl PingLoop {
    pub fn start(ns: &Netns, src: &str, dst: &str) -> PingLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ns, src, dst) = (ns.name().to_string(), src.to_string(), dst.to_string());
        let handle = thread::spawn(move || {
            let (mut ok, mut lost) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                let out = run(
                    "ip",
                    &[
                        "netns", "exec", &ns, "ping", "-c", "1", "-W", "1", "-I", &src, &dst,
                    ],
                );
                if out.status.success() {
                    ok += 1;
                } else {
                    lost += 1;
                }
                thread::sleep(Duration::from_millis(200));
            }
            (ok, lost)
        });
        PingLoop {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops and returns (answered, unanswered).
    pub fn stop(mut self) -> (u32, u32) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .unwrap()
            .join()
            .expect("ping loop thread")
    }
}

impl Drop for PingLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Reads `stream` to its end; returns the byte count and the SHA-256 of what arrived.
fn read_and_hash(stream: &mut impl Read) -> Result<(usize, Vec<u8>), String> {
    let mut hasher = Sha256::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {total} bytes: {e}")),
        }
    }
    Ok((total, hasher.finalize().to_vec()))
}

/// The receiving end: listens on `at` (says so on `ready`), accepts one connection within twice
/// the ready timeout and reads it to the end.
fn receive(at: SocketAddrV4, io_timeout: Duration, ready: mpsc::Sender<()>) -> EndResult {
    let listener = TcpListener::bind(at).map_err(|e| format!("bind: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _ = ready.send(());
    let deadline = Instant::now() + READY_TIMEOUT + READY_TIMEOUT;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(io_timeout)).map_err(|e| e.to_string())?;
    read_and_hash(&mut stream)
}

/// Connects to `to` (from `src` if given), retrying until the ready timeout: the path may still
/// be coming up.
fn connect(src: Option<Ipv4Addr>, to: SocketAddrV4, io_timeout: Duration) -> Result<TcpStream, String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let stream = loop {
        let attempt = (|| -> std::io::Result<TcpStream> {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            if let Some(src) = src {
                sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
            }
            sock.connect_timeout(&SocketAddr::V4(to).into(), Duration::from_secs(3))?;
            Ok(sock.into())
        })();
        match attempt {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => return Err(format!("connect: {e}")),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    };
    stream.set_write_timeout(Some(io_timeout)).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// The sending end: writes `plan.nbytes` of xorshift data from `seed` (paced, and the last `plan.hold` bytes
/// only once `open` is set), publishing progress, then half-closes and waits for the peer's close.
fn send(
    mut stream: TcpStream,
    plan: TransferPlan,
    seed: u64,
    io_timeout: Duration,
    progress: &AtomicUsize,
    open: &AtomicBool,
) -> EndResult {
    let mut rng = XorShift::new(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_sent = 0usize;
    let start = Instant::now();
    let held_from = plan.nbytes.saturating_sub(plan.hold);
    while n_sent < plan.nbytes {
        if n_sent >= held_from && !open.load(Ordering::Relaxed) {
            let until = Instant::now() + io_timeout;
            while !open.load(Ordering::Relaxed) {
                if Instant::now() >= until {
                    return Err(format!("never released after {n_sent} bytes"));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        let limit = if n_sent < held_from { held_from } else { plan.nbytes };
        let n = buf.len().min(limit - n_sent);
        rng.fill(&mut buf[..n]);
        stream.write_all(&buf[..n]).map_err(|e| format!("write after {n_sent} bytes: {e}"))?;
        hasher.update(&buf[..n]);
        n_sent += n;
        progress.store(n_sent, Ordering::Relaxed);
        if let Some(rate) = plan.rate {
            let due = Duration::from_secs_f64(n_sent as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                thread::sleep(ahead);
            }
        }
    }
    stream.shutdown(std::net::Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
    stream.set_read_timeout(Some(io_timeout)).map_err(|e| e.to_string())?;
    let mut sink = [0u8; 64];
    let _ = stream.read(&mut sink);
    Ok((n_sent, hasher.finalize().to_vec()))
}
