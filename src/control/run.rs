//! `vtepd run`: start the configured backend, forward until told to stop, then remove everything
//! that was installed and return the counters.
//!
//! The order matters for the error messages users see: every check that can fail for a reason
//! they can fix (address not on this host, port in use, no privilege, peer not on-link) runs
//! before anything is installed, so a failed start leaves the host as it was. The backends
//! themselves live in [`super::backend`].
use super::backend::{self, Started};
use super::claims::{self, ClaimError, Claims};
use super::config::{Backend, Config, ConfigError};
use super::netlink::{Netlink, NetlinkError};
use super::overlay::RemoteNode;
use super::api::metrics::Metrics;
use super::api::server::ControlSocket;
use super::supervise::Supervisor;
use crate::io::raw::RawError;
use crate::io::tap::TapError;
use crate::io::udp::UdpError;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use super::backend::vxlan::VXLAN_OVERHEAD;

/// Knobs that are not part of the network's configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub workers: usize,
    pub batch: usize,
    pub offload: bool,
    /// Ask the device for USO too (`--no-uso` clears it); only with `offload`.
    pub uso: bool,
    /// Send sockets (distinct UDP source ports), shared by the workers.
    pub source_ports: usize,
    /// Switch to this user once devices and sockets exist.
    pub user: Option<String>,
    /// VXLAN workers spin this long after each packet before sleeping (zero: off).
    pub busy_poll: std::time::Duration,
    /// The control socket (`--socket`); overrides the config's `control_socket`.
    pub socket: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics on this address (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Udp(#[from] UdpError),
    #[error(transparent)]
    Raw(#[from] RawError),
    #[error("{0}")]
    Netlink(#[source] NetlinkError),
    #[error("configuring routes and devices needs CAP_NET_ADMIN ({0}): run vtepd as root or grant it the capability")]
    NoPermission(#[source] NetlinkError),
    #[error("configuring routes and devices needs CAP_NET_ADMIN, which this process lacks: run vtepd as root or grant it the capability")]
    NoCapNetAdmin,
    #[error("node.public_ip {0} is not an address of this host: add it to the underlay interface (`ip addr add {0}/24 dev eth0`) or fix the config")]
    AddrNotHere(Ipv4Addr),
    #[error(transparent)]
    PeerNotOnLink(ConfigError),
    #[error(transparent)]
    Privilege(#[from] crate::io::privilege::PrivilegeError),
    #[error(transparent)]
    Etcd(#[from] super::etcd::EtcdError),
    #[error(transparent)]
    Socket(#[from] super::api::server::SocketError),
    #[error(transparent)]
    Metrics(#[from] super::api::metrics::MetricsError),
    #[error("cannot start the {what} thread ({source}): the process may be at its thread limit (`ulimit -u`, or pids.max of its cgroup)")]
    Thread { what: &'static str, source: std::io::Error },
    #[error("worker thread vtepd-w{index} died (a bug: its panic message is above); vtepd stopped and removed its routes so that a service manager can restart it")]
    WorkerDied { index: usize },
    #[error("{0}; vtepd stopped and removed its routes so that a service manager can restart it (a restart acquires a new subnet)")]
    Lost(String),
    #[error("another vtepd instance named {name} runs in this network namespace (it holds the lock on {}): stop it first, or give this one a device of its own (vxlan.device, ipip.device; for host-gw, another node.public_ip)", path.display())]
    InstanceRunning { name: String, path: std::path::PathBuf },
    #[error("cannot create a worker's wake-up eventfd ({0}): the process may be at its open-file limit (`ulimit -n`)")]
    Mailbox(#[source] std::io::Error),
}

impl RunError {
    pub(crate) fn thread(what: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
        move |source| RunError::Thread { what, source }
    }
}

impl From<NetlinkError> for RunError {
    fn from(e: NetlinkError) -> Self {
        if e.errno() == Some(libc::EPERM) { RunError::NoPermission(e) } else { RunError::Netlink(e) }
    }
}

/// Runs until `stop` is set, then tears down and returns the final counters.
/// On `reload`, re-reads the config with `reload_config` and applies its peer list.
pub fn run(
    cfg: &Config,
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    reload_config: Box<dyn Fn() -> Result<Config, ConfigError> + '_>,
) -> Result<Vec<(&'static str, u64)>, RunError> {
    crate::io::release_free_memory();
    require_net_admin()?;
    // Bound first: a socket another vtepd is serving is a reason not to start, found before
    // anything is installed (or leased).
    let socket_path = opts.socket.clone().unwrap_or_else(|| super::api::socket_path(cfg));
    let socket = ControlSocket::bind(&socket_path)?;
    let metrics = opts.metrics.map(Metrics::bind).transpose()?;
    // In etcd mode the node joins first: the subnet it leases is the device's address. A lease for
    // an address this host does not have would mislead every other node, so that is checked first.
    if cfg.etcd.is_some() && !Netlink::open()?.host_has_addr(cfg.node.public_ip)? {
        return Err(RunError::AddrNotHere(cfg.node.public_ip));
    }
    let joined = super::etcd::join(cfg, &stop)?;
    if cfg.etcd.is_some() && joined.is_none() {
        return Ok(Vec::new());
    }
    let cfg = joined.as_ref().map_or(cfg, |j| &j.cfg).clone();
    // Senders go to the event sources (signals, etcd, the control socket). This one is held until
    // the supervisor returns: with every sender gone its wait would return at once.
    let (events_tx, events) = super::event::channel();
    // In etcd mode the peers come later, from the etcd thread; the leases read at joining say
    // which of a killed run's routes are still wanted.
    let keep = joined.as_ref().map_or(&cfg.peers, |j| &j.peers);
    let mut started = start(&cfg, keep, opts, &stop)?;
    let session = match joined.map(|j| j.serve(pod_mtu(&cfg, &mut started), events_tx.clone())).transpose() {
        Ok(s) => s,
        Err(e) => {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            started.finish();
            return Err(e.into());
        }
    };
    let running = Running { cfg: cfg.clone(), socket: opts.socket.is_none().then_some(socket_path) };
    let reload_config = Box::new(move || reload_config().and_then(|new| running.vet_reload(new)));
    // Threads start after `start` has dropped privileges: capabilities are per thread.
    let signals = super::event::forward_signals(events_tx.clone()).map_err(RunError::thread("signal"))?;
    let server = socket.serve(events_tx.clone()).map_err(RunError::thread("control socket"))?;
    let metrics = metrics.map(|m| m.serve(events_tx.clone())).transpose().map_err(RunError::thread("metrics"))?;
    let watched = Supervisor {
        cfg: cfg.clone(),
        device: started.device.clone(),
        postboxes: started.postboxes.clone(),
        overlay: &mut started.overlay,
        reload: reload_config,
        events,
        counters: started.counters.clone(),
        datastore: session.as_ref().map(|s| Box::new(s.view()) as Box<dyn super::event::Datastore>),
        workers: &started.threads,
    }
    .watch(&stop, &reload);
    // Stops renewing; the lease stays in etcd so a restart gets the same subnet.
    drop(session);
    signals.close();
    server.shutdown();
    if let Some(m) = metrics {
        m.shutdown();
    }
    drop(events_tx);
    tracing::info!("stopping");
    let counters = started.finish();
    watched.map(|()| counters)
}

/// What a reloaded config is checked against: what cannot change without a restart.
struct Running {
    /// As started (in etcd mode, with the leased subnet and the network's backend).
    cfg: Config,
    /// The control socket served, if it came from the config (not `--socket`).
    socket: Option<std::path::PathBuf>,
}

impl Running {
    /// Rejects, before anything is touched, a reload that would make the supervisor re-install every
    /// peer for another backend (a route flap) or, switching to etcd mode, remove them all; says that
    /// a changed control socket waits for a restart. The supervisor does the rest.
    fn vet_reload(&self, new: Config) -> Result<Config, ConfigError> {
        let restart = |key: &str, problem: String| ConfigError::Invalid { key: key.into(), problem: format!("{problem}; that needs a restart") };
        let etcd = self.cfg.etcd.is_some();
        if !etcd && new.etcd.is_some() {
            return Err(restart("etcd", "switches to etcd mode".into()));
        }
        let backend = self.cfg.node.backend;
        if !etcd && new.node.backend != backend {
            return Err(restart("node.backend", format!("\"{}\" differs from the running \"{}\"", new.node.backend.name(), backend.name())));
        }
        if !etcd {
            self.check_peers_fit(&new)?;
            self.check_on_link(&new)?;
        }
        if let Some((served, wanted)) = self.socket_change(&new) {
            tracing::warn!(served = %served.display(), wanted = %wanted.display(), "config reload: a changed control_socket needs a restart; the running vtepd keeps serving the old one");
        }
        Ok(new)
    }

    /// Only the peers of a reload are applied: checked against the file's own `[node]` they may still
    /// clash with the running one (a peer on the running subnet, whose route would shadow the local
    /// pods', or with its public_ip).
    fn check_peers_fit(&self, new: &Config) -> Result<(), ConfigError> {
        let moved = new.node != self.cfg.node || new.vxlan != self.cfg.vxlan;
        match self.cfg.with_peers(new.peers.clone()) {
            Err(ConfigError::Invalid { key, problem }) if moved => Err(ConfigError::Invalid {
                key,
                problem: format!("{problem} (the running one: changes to [node] and [vxlan] need a restart)"),
            }),
            checked => checked.map(drop),
        }
    }

    /// host-gw reaches only on-link peers; one behind a router is refused as it is at start. The
    /// underlay's subnets are read now: they may have changed since. Without the underlay address
    /// there is nothing to check against; the overlay then logs each peer that fails.
    fn check_on_link(&self, new: &Config) -> Result<(), ConfigError> {
        if self.cfg.node.backend != Backend::HostGw {
            return Ok(());
        }
        let underlay = Netlink::open().map_err(RunError::from).and_then(|mut nl| backend::Underlay::find(&mut nl, self.cfg.node.public_ip));
        underlay.map_or(Ok(()), |u| u.check_on_link(&new.peers))
    }

    /// (served, wanted) when the new config names another control socket than the one served.
    fn socket_change(&self, new: &Config) -> Option<(&std::path::Path, std::path::PathBuf)> {
        let wanted = super::api::socket_path(new);
        self.socket.as_deref().filter(|served| *served != wanted).map(|served| (served, wanted))
    }
}

/// Without CAP_NET_ADMIN nothing below can work, and the first step to fail would name only a
/// symptom (no right to create /run/vtepd): the missing privilege is named first.
fn require_net_admin() -> Result<(), RunError> {
    use caps::{CapSet, Capability};
    match caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN) {
        Ok(false) => Err(RunError::NoCapNetAdmin),
        // Unknown: the steps that need it will say what fails.
        Ok(true) | Err(_) => Ok(()),
    }
}

/// The MTU pods should use (Flannel's FLANNEL_MTU): the device's, or the underlay's for host-gw.
fn pod_mtu(cfg: &Config, started: &mut Started) -> u32 {
    if let Some(d) = &started.device {
        return d.mtu;
    }
    let underlay = crate::io::ifaddr::interface_of(cfg.node.public_ip);
    underlay.and_then(|n| started.overlay.netlink().link(&n).ok().flatten()).map_or(1500, |l| l.mtu)
}

/// Starts the configured backend; nothing is left installed if it fails. Of the routes an earlier
/// run left through the underlay, those to `keep` stay, as do those another running instance holds.
pub fn start(cfg: &Config, keep: &[RemoteNode], opts: &RunOptions, stop: &Arc<AtomicBool>) -> Result<Started, RunError> {
    let mut nl = Netlink::open()?;
    if !nl.host_has_addr(cfg.node.public_ip)? {
        return Err(RunError::AddrNotHere(cfg.node.public_ip));
    }
    let underlay = backend::Underlay::find(&mut nl, cfg.node.public_ip)?;
    let (dir, name) = (super::api::netns::socket_dir(), cfg.instance_name());
    let held = claims::held_by_others(&dir, &name);
    let claims = match Claims::open(&dir, &name, underlay.ifindex) {
        Ok(c) => Some(c),
        // Before the sweep: it would take the live instance's routes, and this one its device.
        Err(ClaimError::Held { path }) => return Err(RunError::InstanceRunning { name, path }),
        Err(e) => {
            tracing::warn!(error = %e, "this instance's underlay routes go unrecorded; another vtepd starting on this host may remove them until the next route check");
            None
        }
    };
    backend::sweep_stale_routes(&mut nl, &underlay, if cfg.direct_routing() { keep } else { &[] }, &held)?;
    match cfg.node.backend {
        Backend::Vxlan => backend::vxlan::start(nl, underlay, cfg, opts, stop, claims),
        Backend::Ipip => backend::ipip::start(nl, underlay, cfg, opts, stop, claims),
        Backend::HostGw => backend::hostgw::start(nl, underlay, cfg, opts, claims),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const VXLAN: &str = "[node]\npublic_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\"\n[[peer]]\npublic_ip = \"192.0.2.2\"\nsubnet = \"10.244.2.0/24\"\nvtep_mac = \"02:00:00:00:00:02\"\n";
    const IPIP: &str = "[node]\npublic_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\"\nbackend = \"ipip\"\n[[peer]]\npublic_ip = \"192.0.2.2\"\nsubnet = \"10.244.2.0/24\"\n";
    const ETCD: &str = "[node]\npublic_ip = \"192.0.2.1\"\n[etcd]\nendpoints = [\"http://192.0.2.254:2379\"]\n";

    fn running(text: &str, socket_flag: bool) -> Running {
        let cfg = Config::parse(text).unwrap();
        let socket = (!socket_flag).then(|| super::super::api::socket_path(&cfg));
        Running { cfg, socket }
    }

    fn vet(running: &Running, text: &str) -> Result<Config, String> {
        running.vet_reload(Config::parse(text).unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_reload_for_another_backend_or_mode_is_rejected() {
        let ipip = running(IPIP, false);
        assert_eq!(vet(&ipip, VXLAN).unwrap_err(), "config key node.backend: \"vxlan\" differs from the running \"ipip\"; that needs a restart");
        assert_eq!(vet(&ipip, ETCD).unwrap_err(), "config key etcd: switches to etcd mode; that needs a restart");
        assert!(vet(&ipip, &IPIP.replace("10.244.2.0/24", "10.244.3.0/24")).is_ok());
        // In etcd mode the backend comes from etcd; the file's placeholder is no change.
        let mut joined = Config::parse(ETCD).unwrap();
        joined.node.backend = Backend::Ipip;
        let etcd = Running { cfg: joined, socket: None };
        assert!(vet(&etcd, ETCD).is_ok());
    }

    #[test]
    fn reloaded_peers_must_fit_the_running_node() {
        let running = running(VXLAN, false);
        // Valid against its own moved node.subnet, but the peer takes the running one.
        let moved = VXLAN.replace("10.244.1.0/24", "10.244.9.0/24").replace("10.244.2.0/24", "10.244.1.0/24");
        assert!(Config::parse(&moved).is_ok());
        assert_eq!(
            vet(&running, &moved).unwrap_err(),
            "config key peer[0].subnet: 10.244.1.0/24 overlaps node.subnet 10.244.1.0/24 (the running one: changes to [node] and [vxlan] need a restart)"
        );
        let moved_ip = VXLAN.replacen("192.0.2.1", "192.0.2.9", 1).replace("192.0.2.2", "192.0.2.1");
        assert_eq!(
            vet(&running, &moved_ip).unwrap_err(),
            "config key peer[0].public_ip: 192.0.2.1 is this node's own node.public_ip (the running one: changes to [node] and [vxlan] need a restart)"
        );
        let mac = VXLAN.replace("vtep_mac = \"02:00:00:00:00:02\"", "vtep_mac = \"02:00:00:00:00:02\"\n[vxlan]\nmac = \"02:00:00:00:00:07\"");
        assert!(vet(&running, &mac).is_ok(), "a moved [vxlan] alone is only warned about");
    }

    #[test]
    fn a_changed_control_socket_is_noticed_unless_set_by_flag() {
        let moved = format!("control_socket = \"/run/x/a.sock\"\n{VXLAN}");
        let from_config = running(VXLAN, false);
        let (served, wanted) = from_config.socket_change(&Config::parse(&moved).unwrap()).expect("change noticed");
        // The default's directory depends on the network namespace the test runs in.
        assert_eq!((served.file_name(), wanted), (Some("vtep0.sock".as_ref()), PathBuf::from("/run/x/a.sock")));
        assert!(from_config.socket_change(&Config::parse(VXLAN).unwrap()).is_none());
        assert!(running(VXLAN, true).socket_change(&Config::parse(&moved).unwrap()).is_none());
    }
}
