//! `vtepd run --metrics ADDR`: the counters, table sizes and datastore state as Prometheus text,
//! served by a tiny HTTP/1.0 responder on a thread of its own.
//!
//! Any GET is answered with the metrics (Prometheus asks for /metrics; nothing else is served);
//! anything else gets 400. Each connection has a thread of its own and at most [`DEADLINE`]. Up to
//! [`MAX_OPEN`] are served at once; one more closes the oldest, so connections that never send a
//! request (an idle client, a port scan) cannot keep a scraper out: a real scraper asks within
//! moments of connecting and is rarely the oldest. The numbers come from the supervisor exactly as
//! `vtepd stats` gets them.
use super::accept::AcceptThread;
use super::proto::{Reply, Request, Response, StatsReply};
use super::server::answer_request;
use crate::control::event::EventTx;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(3);
const MAX_HEAD: usize = 8192;
/// Connections served at once.
const MAX_OPEN: usize = 16;
/// Threads alive at once, including closed connections' threads still waiting for the supervisor;
/// a connection beyond this is closed unanswered.
const MAX_THREADS: usize = 4 * MAX_OPEN;

#[derive(Debug, thiserror::Error)]
#[error("--metrics {addr}: cannot listen: {source}")]
pub struct MetricsError {
    addr: SocketAddr,
    source: io::Error,
}

/// A bound metrics listener; [`Metrics::serve`] starts answering.
pub struct Metrics {
    addr: SocketAddr,
    listener: TcpListener,
}

impl Metrics {
    pub fn bind(addr: SocketAddr) -> Result<Metrics, MetricsError> {
        let listener = TcpListener::bind(addr).map_err(|source| MetricsError { addr, source })?;
        let addr = listener.local_addr().map_err(|source| MetricsError { addr, source })?;
        Ok(Metrics { addr, listener })
    }

    pub fn serve(self, events: EventTx) -> io::Result<MetricsServer> {
        let listener = self.listener;
        let thread = AcceptThread::spawn("vtepd-metrics", move |stop| accept_loop(listener, &events, stop))?;
        tracing::info!(addr = %self.addr, "metrics endpoint ready");
        Ok(MetricsServer { addr: self.addr, thread })
    }
}

pub struct MetricsServer {
    addr: SocketAddr,
    thread: AcceptThread,
}

impl MetricsServer {
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let addr = self.addr;
        self.thread.stop(|| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok());
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A connection being served: a handle to close it by, and whether its thread has finished.
struct Open {
    conn: TcpStream,
    done: Arc<AtomicBool>,
}

fn accept_loop(listener: TcpListener, events: &EventTx, stop: &AtomicBool) {
    let mut open: VecDeque<Open> = VecDeque::with_capacity(MAX_OPEN);
    let threads = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(conn) = conn else { continue };
        if threads.load(Ordering::Acquire) >= MAX_THREADS {
            continue;
        }
        open.retain(|o| !o.done.load(Ordering::Acquire));
        if open.len() >= MAX_OPEN {
            if let Some(oldest) = open.pop_front() {
                // Its read or write fails at once; its thread ends (after the supervisor's answer,
                // if it was waiting for one).
                let _ = oldest.conn.shutdown(Shutdown::Both);
            }
        }
        if let Some(o) = serve_one(conn, events, &threads) {
            open.push_back(o);
        }
    }
}

/// Answers `conn` on a thread of its own; None if no thread could be had (the connection closes).
fn serve_one(conn: TcpStream, events: &EventTx, threads: &Arc<AtomicUsize>) -> Option<Open> {
    let handle = conn.try_clone().ok()?;
    let done = Arc::new(AtomicBool::new(false));
    let (finished, events, live) = (done.clone(), events.clone(), threads.clone());
    live.fetch_add(1, Ordering::AcqRel);
    let spawned = std::thread::Builder::new().name("vtepd-scrape".into()).spawn(move || {
        let _ = scrape(&conn, &events);
        // The accept loop's handle is a second descriptor: closing ours would not end the
        // connection, a shutdown does.
        let _ = conn.shutdown(Shutdown::Both);
        finished.store(true, Ordering::Release);
        live.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        threads.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(Open { conn: handle, done })
}

fn scrape(mut c: &TcpStream, events: &EventTx) -> io::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    c.set_write_timeout(Some(DEADLINE))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or(io::ErrorKind::TimedOut)?;
        c.set_read_timeout(Some(left))?;
        let n = c.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_HEAD {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"GET ") {
        return c.write_all(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nonly GET is served\n");
    }
    let (status, body) = match answer_request(Request::Stats, events) {
        Response::Ok(Reply::Stats(s)) => ("200 OK", prometheus(&s)),
        Response::Ok(_) => ("500 Internal Server Error", "unexpected answer\n".to_string()),
        Response::Error(e) => ("503 Service Unavailable", e + "\n"),
    };
    let hdr = format!("HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n", body.len());
    c.write_all(hdr.as_bytes())?;
    c.write_all(body.as_bytes())
}

/// The Prometheus text exposition of `vtepd stats`.
pub fn prometheus(s: &StatsReply) -> String {
    let mut out = String::new();
    let mut drops = Vec::new();
    for (name, v) in &s.counters {
        match name.strip_prefix("drop_") {
            Some(reason) => drops.push((reason, *v)),
            None => out += &format!("# TYPE vtepd_{name}_total counter\nvtepd_{name}_total {v}\n"),
        }
    }
    out += "# HELP vtepd_drops_total Packets dropped, by reason (see the README's counter table).\n# TYPE vtepd_drops_total counter\n";
    for (reason, v) in drops {
        out += &format!("vtepd_drops_total{{reason=\"{reason}\"}} {v}\n");
    }
    out += "# TYPE vtepd_table_entries gauge\n";
    for (table, v) in &s.tables {
        out += &format!("vtepd_table_entries{{table=\"{table}\"}} {v}\n");
    }
    if !s.workers.is_empty() {
        out += &worker_series("rx", s.workers.iter().map(|w| w.rx_packets));
        out += &worker_series("tx", s.workers.iter().map(|w| w.tx_packets));
    }
    // A number, not the state line as a label: that line counts the seconds of an outage, and each
    // new label value would be a new series.
    if let Some(up) = s.datastore_reachable {
        out += &format!(
            "# HELP vtepd_datastore_up 1 while etcd answers, 0 while vtepd forwards with the last known leases.\n\
             # TYPE vtepd_datastore_up gauge\nvtepd_datastore_up {}\n",
            u8::from(up)
        );
    }
    out
}

/// One counter per worker, labelled with its index.
fn worker_series(dir: &str, values: impl Iterator<Item = u64>) -> String {
    let mut out = format!("# TYPE vtepd_worker_{dir}_packets_total counter\n");
    for (i, v) in values.enumerate() {
        out += &format!("vtepd_worker_{dir}_packets_total{{worker=\"{i}\"}} {v}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::proto::WorkerLoad;

    #[test]
    fn exposition_format() {
        let s = StatsReply {
            counters: vec![("rx_packets".into(), 5), ("drop_rx_wrong_vni".into(), 2)],
            tables: vec![("fdb".into(), 1)],
            datastore: Some("connected to \"etcd\"".into()),
            datastore_reachable: Some(false),
            workers: vec![WorkerLoad { rx_packets: 3, tx_packets: 4 }],
        };
        assert_eq!(
            prometheus(&s),
            "# TYPE vtepd_rx_packets_total counter\nvtepd_rx_packets_total 5\n\
             # HELP vtepd_drops_total Packets dropped, by reason (see the README's counter table).\n\
             # TYPE vtepd_drops_total counter\nvtepd_drops_total{reason=\"rx_wrong_vni\"} 2\n\
             # TYPE vtepd_table_entries gauge\nvtepd_table_entries{table=\"fdb\"} 1\n\
             # TYPE vtepd_worker_rx_packets_total counter\nvtepd_worker_rx_packets_total{worker=\"0\"} 3\n\
             # TYPE vtepd_worker_tx_packets_total counter\nvtepd_worker_tx_packets_total{worker=\"0\"} 4\n\
             # HELP vtepd_datastore_up 1 while etcd answers, 0 while vtepd forwards with the last known leases.\n\
             # TYPE vtepd_datastore_up gauge\nvtepd_datastore_up 0\n"
        );
    }
}
