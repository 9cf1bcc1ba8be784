//! Work handed to the supervisor thread, which alone owns the [`Overlay`].
//!
//! The control plane has several sources of change — SIGHUP, a datastore watch, the control
//! socket — and one owner of the installed state. Rather than lock the overlay, each source sends
//! an [`Event`] on a channel and the supervisor applies them one at a time, between its health
//! checks. The data path never sees any of this: it only reads the tables' snapshots.
use super::config::Config;
use super::overlay::{Overlay, RemoteNode};
use crate::dataplane::Counters;
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// What the supervisor lends an [`Event::Call`]: everything a control request may read or change.
pub struct Live<'a> {
    pub cfg: &'a Config,
    pub overlay: &'a mut Overlay,
    /// One per worker; sum them with [`crate::dataplane::counters::total`].
    pub counters: &'a [Arc<Counters>],
    /// Where the peers come from when it is not the config file (etcd mode).
    pub datastore: Option<&'a dyn Datastore>,
}

/// A cluster datastore as the control API shows it (`vtepd leases`, `vtepd peers`).
pub trait Datastore: Send {
    /// One line for humans, e.g. "connected to http://192.0.2.1:2379" or "unreachable for 31 s".
    fn state(&self) -> String;
    /// Whether the datastore answered the last time it was asked (for alerting: a fixed series).
    fn reachable(&self) -> bool;
    /// Every subnet lease known, this node's own included.
    fn leases(&self) -> Vec<LeaseRow>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    /// As the lease names it ("vxlan", "host-gw", ...).
    pub backend: String,
    pub vtep_mac: Option<MacAddr>,
    /// `None` for a reservation (a key without an etcd lease).
    pub expires_in: Option<Duration>,
    /// This node's own lease.
    pub own: bool,
}

pub enum Event {
    /// The complete list of other nodes from a datastore (etcd); applied as a diff.
    Peers(Vec<RemoteNode>),
    /// Runs on the supervisor thread with its state; the sender replies through its own channel.
    Call(Box<dyn FnOnce(&mut Live<'_>) + Send>),
    /// SIGINT, SIGTERM or SIGHUP arrived: the stop or reload flag (which the signal handler sets)
    /// wants a look now, not at the next health check.
    Signal,
    /// The datastore says this node cannot go on as it is (its subnet is now another node's):
    /// vtepd stops, removing its routes, and exits 1, so that a service manager restarts it and it
    /// acquires a new subnet — as flanneld exits when its lease is gone.
    Lost(String),
}

pub type EventTx = crossbeam_channel::Sender<Event>;
pub type EventRx = crossbeam_channel::Receiver<Event>;

pub fn channel() -> (EventTx, EventRx) {
    crossbeam_channel::unbounded()
}

/// Sends [`Event::Signal`] for every SIGINT, SIGTERM and SIGHUP until the handle is closed, so the
/// supervisor can sleep until something happens instead of waking on a timer to look at its flags.
pub fn forward_signals(tx: EventTx) -> std::io::Result<signal_hook::iterator::Handle> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let handle = signals.handle();
    std::thread::Builder::new().name("vtepd-signals".into()).spawn(move || {
        for _ in signals.forever() {
            if tx.send(Event::Signal).is_err() {
                return;
            }
        }
    })?;
    Ok(handle)
}
