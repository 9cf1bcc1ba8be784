//! Keeps a running vtepd in line with the system and the operator while workers forward.
//!
//! It sleeps until an event (a signal, a datastore update, a control request) or its next health
//! check. Every second it checks that the backend's TAP or TUN device (if it has one) still exists
//! and is up, and the underlay address is still there; every few seconds that the kernel still has
//! every peer's route (setting a device down flushes them; so can an operator), retries the peers
//! that could not be installed (a route in the way, a kernel error) and moves host-gw and direct
//! routes with the underlay (its address on another interface; in cross-subnet mode, peers between
//! tunnel and direct route as its subnets change); on SIGHUP it
//! re-reads the config. Each change of state is logged once, and recovery happens without a
//! restart: a deleted device is recreated and its queues handed to the workers, a returned underlay
//! address simply works again (the sockets stay bound to it), and a reloaded peer list is applied as
//! a diff so flows to unchanged peers never notice.
use super::backend::DeviceSpec;
use super::config::{Config, ConfigError};
use super::event::{Datastore, Event, EventRx, Live};
use super::netlink::Netlink;
use super::overlay::Overlay;
use super::run::RunError;
use crate::dataplane::Counters;
use crate::io::tap::TapQueue;
use crate::io::mailbox::Postbox;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// How often the kernel's routes are compared with the installed peers (one route dump).
const REPAIR_EVERY: Duration = Duration::from_secs(5);

pub struct Supervisor<'a> {
    pub cfg: Config,
    pub overlay: &'a mut Overlay,
    /// `None` for a backend without a device (host-gw).
    pub device: Option<DeviceSpec>,
    /// One per worker: a replacement TAP/TUN queue after the device was recreated.
    pub postboxes: Vec<Postbox>,
    pub reload: Box<dyn Fn() -> Result<Config, ConfigError> + 'a>,
    /// Datastore updates and control requests; see [`super::event`].
    pub events: EventRx,
    pub counters: Vec<Arc<Counters>>,
    pub datastore: Option<Box<dyn Datastore>>,
    /// The worker threads, watched for one that ends while nobody asked it to.
    pub workers: &'a [JoinHandle<TapQueue>],
}

impl Supervisor<'_> {
    /// Returns when `stop` is set, or with an error when a worker died: its share of the traffic
    /// would otherwise be lost without a word, so vtepd stops (removing its routes) and lets a
    /// service manager restart it.
    pub fn watch(&mut self, stop: &AtomicBool, reload: &AtomicBool) -> Result<(), RunError> {
        let mut underlay_ok = true;
        let mut link_ok = true;
        // Resolved once while the address is surely there; the name outlives address changes.
        let underlay_if = crate::io::ifaddr::interface_of(self.cfg.node.public_ip);
        let mut device_ok = true;
        let (mut device_up, mut repair_ok) = (true, true);
        let (mut last, mut last_repair) = (Instant::now(), Instant::now());
        while !stop.load(Ordering::Relaxed) {
            // Events wake us at once (signals arrive as events too); the timeout is the next health
            // check.
            if let Ok(ev) = self.events.recv_timeout(HEALTH_EVERY.saturating_sub(last.elapsed())) {
                if let Some(why) = self.handle(ev) {
                    stop.store(true, Ordering::Relaxed);
                    return Err(RunError::Lost(why));
                }
            }
            if reload.swap(false, Ordering::Relaxed) {
                self.reload_config();
            }
            if last.elapsed() >= HEALTH_EVERY {
                last = Instant::now();
                // Read after the workers': one that ended because of a stop is no death.
                if let Some(index) = dead_worker(self.workers).filter(|_| !stop.load(Ordering::Relaxed)) {
                    stop.store(true, Ordering::Relaxed);
                    return Err(RunError::WorkerDied { index });
                }
                underlay_ok = self.check_underlay(underlay_ok);
                if let Some(name) = &underlay_if {
                    link_ok = check_link(self.overlay.netlink(), name, link_ok);
                }
                device_ok = self.check_device(device_ok);
                let was_up = device_up;
                device_up = self.check_device_up(device_up);
                // Setting a device down flushes its routes and neighbours: put them back as soon
                // as it is up again, and look for routes lost otherwise every few seconds.
                // Not while the device is missing: every peer's route would look lost, and each
                // re-add fail (and withdraw its table entries again) until it is recreated, which
                // puts them all back anyway.
                if device_ok && device_up && (!was_up || last_repair.elapsed() >= REPAIR_EVERY) {
                    last_repair = Instant::now();
                    if underlay_ok {
                        self.overlay.follow_underlay();
                    }
                    repair_ok = self.repair_routes(repair_ok);
                }
            }
        }
        Ok(())
    }

    /// Applies one event; `Some(why)` when vtepd must stop.
    fn handle(&mut self, ev: Event) -> Option<String> {
        match ev {
            Event::Peers(peers) => match self.overlay.set_peers(&peers) {
                Ok(()) => tracing::debug!(peers = peers.len(), "peers updated"),
                Err(e) => tracing::error!(error = %crate::error_chain(&e), "peer update only partly applied; the rest is retried every few seconds"),
            },
            Event::Signal => {}
            Event::Call(f) => f(&mut Live {
                cfg: &self.cfg,
                overlay: self.overlay,
                counters: &self.counters,
                datastore: self.datastore.as_deref(),
            }),
            Event::Lost(why) => return Some(why),
        }
        None
    }

    fn reload_config(&mut self) {
        let new = match (self.reload)() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "config reload rejected; the running config stays");
                return;
            }
        };
        if self.cfg.etcd.is_some() {
            tracing::info!("config reload: peers come from etcd in etcd mode; nothing to apply (other changes need a restart)");
            return;
        }
        if new.node != self.cfg.node || new.vxlan != self.cfg.vxlan || new.ipip != self.cfg.ipip {
            tracing::warn!("config reload: changes to [node], [vxlan] or [ipip] need a restart; applying [[peer]] changes only");
        }
        // New peers are classed (cross-subnet mode) by the underlay as it is now, as a restart would.
        self.overlay.follow_underlay();
        match self.overlay.set_peers(&new.peers) {
            Ok(()) => tracing::info!(peers = new.peers.len(), "config reloaded"),
            Err(e) => tracing::error!(error = %crate::error_chain(&e), "config reload only partly applied; the rest is retried every few seconds"),
        }
        self.cfg.peers = new.peers;
        crate::io::release_free_memory();
    }

    /// The sockets stay bound to the address while it is gone; sends fail (and are counted) until
    /// it returns, so there is nothing to redo, only to say.
    fn check_underlay(&mut self, was_ok: bool) -> bool {
        let ip = self.cfg.node.public_ip;
        let ok = self.overlay.netlink().host_has_addr(ip).unwrap_or(was_ok);
        if ok != was_ok {
            if ok {
                tracing::info!(%ip, "underlay address is back; forwarding resumes");
            } else {
                tracing::warn!(%ip, "underlay address is gone; tunnelled traffic is dropped until it returns");
            }
        }
        ok
    }

    fn check_device(&mut self, was_ok: bool) -> bool {
        let Some(dev) = self.device.as_ref().map(|d| d.name.clone()) else { return true };
        // A failed query says nothing about the device: recreating it then would tear down a
        // working one.
        let Ok(index) = self.overlay.netlink().link_index(&dev) else { return was_ok };
        // By index, not name: a device deleted and made again under the same name between two
        // checks (by hand, or by a network manager) is not the one our queues and routes are on.
        let ours = self.overlay.device_index();
        let present = index.is_some() && (ours.is_none() || index == ours);
        if present && was_ok {
            return true;
        }
        if was_ok {
            tracing::warn!(device = %dev, "device deleted under vtepd; recreating it");
        }
        match self.recreate_device() {
            Ok(()) => {
                tracing::info!(device = %dev, "device recreated; forwarding resumes");
                true
            }
            Err(e) => {
                if was_ok {
                    tracing::error!(device = %dev, error = %e, "cannot recreate device; retrying every second");
                }
                false
            }
        }
    }

    /// Whether the device is up; only said, as setting it down is the operator's to do (its routes
    /// go with it, and come back with it in [`Self::repair_routes`]).
    fn check_device_up(&mut self, was_up: bool) -> bool {
        let Some(dev) = self.device.as_ref().map(|d| &d.name) else { return true };
        link_state(self.overlay.netlink(), dev, was_up, "device is up again; putting its routes back",
            "device was set down; the kernel flushed its routes and neighbours until it is up again")
    }

    /// Said once per failing stretch: while the underlay link is down, say, every attempt fails.
    fn repair_routes(&mut self, was_ok: bool) -> bool {
        match self.overlay.repair() {
            Ok(0) => true,
            Ok(n) => {
                tracing::info!(peers = n, "peers put back in the kernel or installed after failing");
                true
            }
            Err(e) => {
                if was_ok {
                    tracing::warn!(error = %crate::error_chain(&e), "kernel route repair failed; retrying every few seconds");
                }
                false
            }
        }
    }

    fn recreate_device(&mut self) -> Result<(), String> {
        let Some(spec) = self.device.as_ref() else { return Ok(()) };
        let queues = spec.open().map_err(|e| crate::error_chain(&e))?;
        let ifindex = spec.configure(self.overlay.netlink()).map_err(|e| crate::error_chain(&e))?;
        self.overlay.reinstall(ifindex);
        for (p, q) in self.postboxes.iter().zip(queues) {
            p.post(q);
        }
        Ok(())
    }
}

/// The first worker that has ended. Workers run until told to stop, so one that ended panicked.
fn dead_worker<T>(workers: &[JoinHandle<T>]) -> Option<usize> {
    workers.iter().position(JoinHandle::is_finished)
}

/// The underlay link's operational state; sockets survive it going down, so this is only said.
fn check_link(nl: &mut Netlink, name: &str, was_up: bool) -> bool {
    link_state(nl, name, was_up, "underlay link is up again; forwarding resumes",
        "underlay link is down; tunnelled traffic is dropped until it comes back")
}

/// A link's state, said when it changed; a failed read keeps the last one.
fn link_state(nl: &mut Netlink, name: &str, was_up: bool, on_up: &str, on_down: &str) -> bool {
    let up = nl.link(name).ok().flatten().map_or(was_up, |l| l.up);
    match (was_up, up) {
        (false, true) => tracing::info!(link = %name, "{on_up}"),
        (true, false) => tracing::warn!(link = %name, "{on_down}"),
        _ => {}
    }
    up
}

#[cfg(test)]
mod tests {
    use super::dead_worker;

    #[test]
    fn a_worker_that_ended_is_found() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut workers = vec![std::thread::spawn(move || rx.recv().is_ok())];
        assert_eq!(dead_worker(&workers), None);
        workers.push(std::thread::spawn(|| -> bool { panic!("a worker's bug") }));
        while !workers[1].is_finished() {
            std::thread::yield_now();
        }
        assert_eq!(dead_worker(&workers), Some(1));
        drop(tx);
        let ends: Vec<bool> = workers.into_iter().map(|w| w.join().is_ok()).collect();
        assert_eq!(ends, [true, false]);
    }
}
