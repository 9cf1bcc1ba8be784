//! vtepd: a userspace VXLAN/IPIP overlay switch.
//!
//! The crate is split the way the data moves:
//! - [`wire`]: zero-copy header views (parse/emit), no I/O.
//! - [`table`]: FDB, neighbour and route tables, published as immutable snapshots.
//! - [`dataplane`]: the sans-IO forwarding core: a frame or datagram in, a verdict out.
//! - [`io`]: the thin drivers around the core (TAP/TUN, UDP sockets); all `unsafe` lives here but
//!   the call into the AVX2 checksum loop (`wire::checksum`).
//! - [`control`]: configuration, netlink reconciliation; talks to the tables only through their API.
pub mod control;
pub mod dataplane;
pub mod io;
pub mod table;
pub mod wire;

/// An error and all its sources on one line, `outer: inner: innermost`, for logs and exit messages.
///
/// Many of our errors already print their cause in their own message (`cannot read config {path}:
/// {source}`) and also return it from `source()`, so a cause whose text is already on the line is
/// skipped: each cause is printed once, whichever of the two styles an error uses.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot read {path}: {source}")]
        Inline { path: &'static str, source: std::io::Error },
        #[error("cannot read {path}")]
        Chained {
            path: &'static str,
            #[source]
            source: std::io::Error,
        },
        #[error("{0}")]
        Wrapped(#[source] Box<Outer>),
    }

    fn enoent() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::ENOENT)
    }

    #[test]
    fn each_cause_is_printed_once() {
        let inline = Outer::Inline { path: "/x", source: enoent() };
        let chained = Outer::Chained { path: "/x", source: enoent() };
        let want = format!("cannot read /x: {}", enoent());
        assert_eq!(error_chain(&inline), want);
        assert_eq!(error_chain(&chained), want);
        assert_eq!(error_chain(&Outer::Wrapped(Box::new(inline))), want);
        assert_eq!(error_chain(&Outer::Wrapped(Box::new(chained))), want);
    }
}
