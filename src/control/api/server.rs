//! The control socket's server thread.
//!
//! Limits that keep a client from hurting anything: a request line is at most
//! [`proto::MAX_REQUEST`] bytes (a longer one gets an error and the connection is closed), a
//! connection lives at most [`CONNECTION_DEADLINE`] in total however slowly it dribbles, at most
//! [`MAX_CLIENTS`] are served at once (one more is told vtepd is busy), and the supervisor gets
//! [`SUPERVISOR_TIMEOUT`] to answer before the client is told so. Nothing a client sends reaches the
//! supervisor unless it parsed. A request is carried out only while someone waits for its answer:
//! not after the client was told it timed out, nor when its client has hung up (a request that sat
//! in the socket's backlog while vtepd was still joining etcd, its CLI long gone).
use super::accept::AcceptThread;
use super::dispatch::dispatch;
use super::proto::{self, Response};
use crate::control::event::{Event, EventTx};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
pub const SUPERVISOR_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_CLIENTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("control socket {path} belongs to a vtepd that is running; stop it, or give this one another path (--socket or control_socket)")]
    InUse { path: PathBuf },
    #[error("control socket path {path} exists and is not a socket; remove it or choose another path (--socket or control_socket)")]
    NotSocket { path: PathBuf },
    #[error("cannot create the control socket's directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot remove the stale control socket {path}: {source}")]
    Stale { path: PathBuf, source: io::Error },
    #[error("cannot bind the control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// A bound control socket, not yet served.
pub struct ControlSocket {
    path: PathBuf,
    /// Taken by [`ControlSocket::serve`]; if it is still here at drop, vtepd failed to start.
    listener: Option<UnixListener>,
    /// The socket file's inode as bound: what may be removed on the way out.
    inode: Option<u64>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = remove_own(&self.path, self.inode);
        }
    }
}

/// Removes the socket file only if it is still the one this vtepd bound: once unlinked (by an
/// operator, a service manager clearing /run/vtepd), the path may be another vtepd's socket.
fn remove_own(path: &Path, inode: Option<u64>) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let now = std::fs::symlink_metadata(path)?.ino();
    if inode != Some(now) {
        return Err(io::Error::other("the path now holds another socket; left alone"));
    }
    super::netns::remove_file(path)
}

impl ControlSocket {
    /// Binds `path` (mode 0600). A socket file left by a vtepd that died is removed; one that a
    /// live vtepd answers on is refused.
    pub fn bind(path: &Path) -> Result<ControlSocket, SocketError> {
        let p = || path.to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SocketError::Dir { path: dir.into(), source })?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(SocketError::NotSocket { path: p() });
            }
            if UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse { path: p() });
            }
            tracing::info!(path = %path.display(), "removing stale control socket");
            std::fs::remove_file(path).map_err(|source| SocketError::Stale { path: p(), source })?;
        }
        let listener = crate::io::unix::bind_private(path).map_err(|source| SocketError::Bind { path: p(), source })?;
        let inode = std::fs::symlink_metadata(path).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        Ok(ControlSocket { path: p(), listener: Some(listener), inode })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests on a thread of its own until the returned handle is shut down.
    pub fn serve(mut self, events: EventTx) -> io::Result<Server> {
        let (path, inode) = (self.path.clone(), self.inode);
        let Some(listener) = self.listener.take() else { return Err(io::ErrorKind::NotConnected.into()) };
        let waker = listener.try_clone();
        let thread = match AcceptThread::spawn("vtepd-control", move |stop| accept_loop(listener, &events, stop)) {
            Ok(t) => t,
            Err(e) => {
                let _ = remove_own(&path, inode);
                return Err(e);
            }
        };
        tracing::info!(path = %path.display(), "control socket ready");
        Ok(Server { path, inode, waker: waker.ok(), thread })
    }
}

/// The running server; [`Server::shutdown`] (or drop) stops it and removes the socket file.
pub struct Server {
    path: PathBuf,
    inode: Option<u64>,
    /// The listener itself (a second descriptor): shutting it down wakes the blocked accept() and
    /// refuses new connections, where a wake-up connection to the path could reach another vtepd
    /// bound there since, or (after --user) be refused by our own 0600 socket.
    waker: Option<UnixListener>,
    thread: AcceptThread,
}

impl Server {
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let (path, waker) = (&self.path, &self.waker);
        let was_serving = self.thread.stop(|| match waker {
            Some(l) => shutdown_listener(l),
            // No second descriptor: a connection of our own wakes it.
            None => UnixStream::connect(path).is_ok(),
        });
        if !was_serving {
            return;
        }
        if let Err(e) = remove_own(&self.path, self.inode) {
            // With --user the daemon may no longer own the directory; the next start removes it.
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove control socket");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// `shutdown(2)` on a listening Unix socket: a thread blocked in accept() returns EINVAL.
fn shutdown_listener(l: &UnixListener) -> bool {
    socket2::SockRef::from(l).shutdown(std::net::Shutdown::Both).is_ok()
}

fn accept_loop(listener: UnixListener, events: &EventTx, stop: &AtomicBool) {
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: pause rather than spin on a listener that stays readable.
                tracing::warn!(error = %e, "control socket accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::Relaxed) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::Relaxed);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = writeln!(stream, "{}", Response::Error(format!("vtepd is busy ({MAX_CLIENTS} clients); try again")).to_line());
            continue;
        }
        let (events, busy2) = (events.clone(), busy.clone());
        let spawned = std::thread::Builder::new().name("vtepd-client".into()).spawn(move || {
            serve_client(stream, &events);
            busy2.fetch_sub(1, Ordering::Relaxed);
        });
        if let Err(e) = spawned {
            busy.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot start a control client thread");
        }
    }
}

/// Answers request lines until the client closes, errs, sends an oversized line, or runs out of time.
fn serve_client(mut stream: UnixStream, events: &EventTx) {
    let deadline = Instant::now() + CONNECTION_DEADLINE;
    let mut buf = vec![0u8; proto::MAX_REQUEST + 1];
    let mut have = 0;
    loop {
        if let Some(nl) = buf[..have].iter().position(|b| *b == b'\n') {
            // Pipelined requests are answered from the buffer: the deadline holds for them too.
            if Instant::now() >= deadline || crate::io::unix::hung_up(&stream) {
                return;
            }
            let resp = answer(&buf[..nl], events);
            if write_line(&mut stream, &resp, deadline).is_err() {
                return;
            }
            buf.copy_within(nl + 1..have, 0);
            have -= nl + 1;
            continue;
        }
        if have > proto::MAX_REQUEST {
            let _ = write_line(&mut stream, &Response::Error(proto::ProtoError::TooLong { len: have }.to_string()), deadline);
            return;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { return };
        if stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf[have..]) {
            Ok(0) => {
                // A last request without a newline still deserves its answer.
                if have > 0 && !crate::io::unix::hung_up(&stream) {
                    let _ = write_line(&mut stream, &answer(&buf[..have], events), deadline);
                }
                return;
            }
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn write_line(stream: &mut UnixStream, resp: &Response, deadline: Instant) -> io::Result<()> {
    let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).unwrap_or(Duration::from_millis(1));
    stream.set_write_timeout(Some(left))?;
    stream.write_all((resp.to_line() + "\n").as_bytes())
}

/// Parses one line and, if it is a request, has the supervisor answer it.
pub fn answer(line: &[u8], events: &EventTx) -> Response {
    match proto::parse_request(line) {
        Ok(req) => answer_request(req, events),
        Err(e) => {
            tracing::debug!(error = %e, "bad control request");
            Response::Error(e.to_string())
        }
    }
}

/// A queued request's fate, decided once: the supervisor takes it, or the waiting side gives it up.
const PENDING: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// Has the supervisor answer a parsed request, waiting at most [`SUPERVISOR_TIMEOUT`] for it to be
/// taken up. A request given up on is never carried out later, so "did not answer" means not done.
pub fn answer_request(req: proto::Request, events: &EventTx) -> Response {
    answer_within(req, events, SUPERVISOR_TIMEOUT)
}

fn answer_within(req: proto::Request, events: &EventTx, timeout: Duration) -> Response {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let fate = Arc::new(AtomicU8::new(PENDING));
    let taken = fate.clone();
    let call = Event::Call(Box::new(move |live| {
        if taken.compare_exchange(PENDING, TAKEN, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let _ = tx.send(dispatch(req, live));
        }
    }));
    if events.send(call).is_err() {
        return Response::Error("vtepd is stopping".into());
    }
    if let Ok(resp) = rx.recv_timeout(timeout) {
        return resp;
    }
    if fate.compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        return Response::Error(format!(
            "vtepd's supervisor did not take the request up within {} s; it was not carried out",
            timeout.as_secs_f32()
        ));
    }
    // Taken just now: it is being carried out, and its answer follows.
    rx.recv().unwrap_or_else(|_| Response::Error("vtepd's supervisor failed while carrying the request out".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_not_taken_up_in_time_is_reported_as_not_carried_out() {
        let (tx, rx) = crate::control::event::channel();
        let resp = answer_within(proto::Request::Stats, &tx, Duration::from_millis(20));
        assert_eq!(resp, Response::Error("vtepd's supervisor did not take the request up within 0.02 s; it was not carried out".into()));
        // Still queued; the supervisor that reaches it finds it given up and leaves it (that needs a
        // running overlay to show, see tests/etcd_outage.rs for the backlog case).
        assert!(matches!(rx.try_recv(), Ok(Event::Call(_))));
    }
}
