//! What `vtepd fdb show` and the other control subcommands use to ask a running vtepd.
use super::proto::{Reply, Request, Response};
use super::netns::socket_dir;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longer than the server's own limits (its supervisor timeout), so its answer arrives first.
const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to vtepd's control socket {path}: {source}; is vtepd running? (start it with `vtepd run`, or pass --socket with the path it serves)")]
    Connect { path: PathBuf, source: io::Error },
    #[error("permission denied on {0}: vtepd's control socket is for the user it runs as (root, or the User= of its service); run this as that user, e.g. with sudo")]
    NoAccess(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("control socket {path} answered something that is not a vtepd response: {problem}")]
    BadResponse { path: PathBuf, problem: String },
    #[error("no vtepd control socket in {0} (this network namespace's); is vtepd running here? (start it with `vtepd run`, run this command in vtepd's namespace with `ip netns exec`, or pass --socket with the path it serves)")]
    NoSocket(PathBuf),
    #[error("several vtepd control sockets in {0} ({1}); pick one with --socket")]
    Several(PathBuf, String),
    /// vtepd understood the request and refused it.
    #[error("{0}")]
    Refused(String),
}

/// The socket to talk to: `explicit` if given, else the only one in this network namespace's
/// socket directory ([`socket_dir`]).
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ClientError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let dir = socket_dir();
    let mut found: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(d) => d.filter_map(Result::ok).filter(|e| e.file_type().is_ok_and(|t| t.is_socket())).map(|e| e.path()).collect(),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(ClientError::NoAccess(dir)),
        Err(_) => Vec::new(),
    };
    found.sort();
    match found.len() {
        0 => Err(ClientError::NoSocket(dir)),
        1 => Ok(found.remove(0)),
        _ => Err(ClientError::Several(dir, found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))),
    }
}

/// Sends one request and returns vtepd's answer.
pub fn call(path: &Path, req: &Request) -> Result<Reply, ClientError> {
    let io_err = |source| ClientError::Io { path: path.into(), source };
    let mut s = UnixStream::connect(path).map_err(|source| match source.kind() {
        io::ErrorKind::PermissionDenied => ClientError::NoAccess(path.into()),
        _ => ClientError::Connect { path: path.into(), source },
    })?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io_err)?;
    let sent = s.write_all((req.to_line() + "\n").as_bytes());
    let mut line = String::new();
    // A busy vtepd answers at once and closes without reading, so the write may fail with EPIPE
    // while its answer already waits to be read.
    let read = BufReader::new(&s).read_line(&mut line);
    if line.is_empty() {
        sent.map_err(io_err)?;
    }
    read.map_err(io_err)?;
    let bad = |problem: String| ClientError::BadResponse { path: path.into(), problem };
    if line.is_empty() {
        return Err(bad("the connection closed without an answer".into()));
    }
    match Response::from_line(&line).map_err(bad)? {
        Response::Ok(r) => Ok(r),
        Response::Error(e) => Err(ClientError::Refused(e)),
    }
}

/// The whole CLI step: find the socket, ask, and format the answer (`--json` or for humans).
pub fn ask(socket: Option<&Path>, req: &Request, json: bool) -> Result<String, ClientError> {
    let path = locate(socket)?;
    let reply = call(&path, req)?;
    Ok(if json { super::show::json(&reply) } else { super::show::human(&reply) })
}
