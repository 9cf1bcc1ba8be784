//! vtepd: a userspace VXLAN/IPIP overlay switch.
//!
//! The crate is split the way the data moves:
//! - [`wire`]: zero-copy header views (parse/emit), no I/O.
//! - [`table`]: FDB, neighbour and route tables, published as immutable snapshots.
//! - [`dataplane`]: the sans-IO forwarding core: a frame or datagram in, a verdict out.
//! - [`io`]: the thin drivers around the core (TAP/TUN, UDP sockets); all `unsafe` lives here.
//! - [`control`]: configuration, netlink reconciliation; talks to the tables only through their API.
pub mod control;
pub mod dataplane;
pub mod io;
pub mod table;
pub mod wire;

/// An error and all its sources on one line, `outer: inner: innermost`, for logs and exit messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
