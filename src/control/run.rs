//! `vtepd run`: build the device, tables and workers from a config, forward until told to stop,
//! then remove everything that was installed.
//!
//! The order matters for the error messages users see: every check that can fail for a reason
//! they can fix (address not on this host, port in use, no privilege) runs before anything is
//! installed, so a failed start leaves the host as it was.
use super::config::{Config, ConfigError};
use super::supervise::{DeviceSpec, Supervisor};
use super::netlink::{Netlink, NetlinkError};
use super::overlay::Overlay;
use crate::dataplane::{counters, Counters, Vtep};
use crate::io::tap::{self, TapError, TapQueue};
use crate::io::udp::{self, Underlay, UdpError};
use crate::io::worker::{Offloads, Worker, WorkerConfig};
use crate::io::ifaddr;
use crate::table::Tables;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// VXLAN over IPv4: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// Knobs that are not part of the network's configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub workers: usize,
    pub batch: usize,
    pub offload: bool,
    /// Send sockets (distinct UDP source ports) per worker.
    pub source_ports: usize,
    /// Switch to this user once devices and sockets exist.
    pub user: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Udp(#[from] UdpError),
    #[error("{0}")]
    Netlink(#[source] NetlinkError),
    #[error("configuring routes and devices needs CAP_NET_ADMIN ({0}): run vtepd as root or grant it the capability")]
    NoPermission(#[source] NetlinkError),
    #[error("node.public_ip {0} is not an address of this host: add it to the underlay interface (`ip addr add {0}/24 dev eth0`) or fix the config")]
    AddrNotHere(Ipv4Addr),
    #[error("cannot find the MTU of the underlay interface holding {0}; set vxlan.mtu in the config")]
    NoUnderlayMtu(Ipv4Addr),
    #[error(transparent)]
    Privilege(#[from] crate::io::privilege::PrivilegeError),
    #[error("cannot start worker thread: {0}")]
    Thread(#[source] std::io::Error),
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
    let mut nl = Netlink::open()?;
    if !nl.host_has_addr(cfg.node.public_ip)? {
        return Err(RunError::AddrNotHere(cfg.node.public_ip));
    }
    udp::probe_port(cfg.node.public_ip, cfg.vxlan.port)?;
    let mtu = overlay_mtu(cfg)?;
    let queues = tap::open(&cfg.vxlan.device, opts.workers)?;
    let underlays = (0..queues.len())
        .map(|_| Underlay::bind(cfg.node.public_ip, cfg.vxlan.port, opts.source_ports))
        .collect::<Result<Vec<_>, _>>()?;

    let mut overlay = configure_device(nl, cfg, mtu)?;
    let tables = overlay.tables().clone();
    tracing::info!(device = %cfg.vxlan.device, vni = %cfg.vxlan.vni, mtu, peers = cfg.peers.len(), workers = queues.len(), "forwarding");

    let vtep = Vtep { vni: cfg.vxlan.vni, mac: cfg.vxlan.mac, ip: cfg.node.vtep_ip(), mtu: mtu as u16 };
    let (offloads, tap_offload) = negotiate_offloads(opts.offload, &queues, &underlays);
    let device = DeviceSpec { mtu, offload: tap_offload, queues: queues.len() };
    if let Some(user) = &opts.user {
        // Before the workers exist: capabilities are per thread and new threads inherit ours.
        crate::io::privilege::drop_to(user)?;
        tracing::info!(%user, "running unprivileged with CAP_NET_ADMIN and CAP_NET_RAW");
    }
    let (threads, all_counters, tap_tx) = spawn_workers(vtep, cfg.vxlan.port, opts, offloads, &tables, queues, underlays, &stop)?;
    Supervisor { cfg: cfg.clone(), overlay: &mut overlay, device, tap_tx, reload: reload_config }.watch(&stop, &reload);
    tracing::info!("stopping");
    // Workers hand their TAP queues back; the device (and what the kernel holds on it) lives
    // until they are dropped, after our own entries are removed.
    let mut queues = Vec::new();
    for t in threads {
        match t.join() {
            Ok(q) => queues.push(q),
            Err(_) => tracing::error!("a worker thread panicked"),
        }
    }
    overlay.uninstall();
    drop(queues);
    Ok(counters::total(&all_counters))
}

fn overlay_mtu(cfg: &Config) -> Result<u32, RunError> {
    if let Some(m) = cfg.vxlan.mtu {
        return Ok(m as u32);
    }
    let ip = cfg.node.public_ip;
    let underlay = ifaddr::interface_of(ip).and_then(|n| ifaddr::mtu_of(&n)).ok_or(RunError::NoUnderlayMtu(ip))?;
    Ok(underlay.saturating_sub(VXLAN_OVERHEAD).max(68))
}

/// Brings the device up with its MTU, MAC and /32 VTEP address, as flannel.1 is; returns its index.
pub fn configure_link(nl: &mut Netlink, cfg: &Config, mtu: u32) -> Result<u32, RunError> {
    let dev = &cfg.vxlan.device;
    let ifindex = nl
        .link_index(dev)?
        .ok_or_else(|| RunError::Tap(TapError::BadName { device: dev.clone(), reason: "vanished right after creation" }))?;
    nl.set_link(ifindex, true, Some(mtu), Some(cfg.vxlan.mac.0))?;
    nl.add_addr(ifindex, cfg.node.vtep_ip(), 32)?;
    Ok(ifindex)
}

/// Configures the device and installs the configured peers.
fn configure_device(mut nl: Netlink, cfg: &Config, mtu: u32) -> Result<Overlay, RunError> {
    let ifindex = configure_link(&mut nl, cfg, mtu)?;
    let mut overlay = Overlay::new(nl, ifindex, Tables::new());
    overlay.set_peers(&cfg.peers)?;
    Ok(overlay)
}

/// Turns on what the kernel offers: TSO/checksum offload on the TAP (so it hands us 64 KB TCP
/// super-frames), UDP GSO on the send sockets and UDP GRO on the receive sockets. Each one that
/// is refused is logged and left off; forwarding works without any of them.
fn negotiate_offloads(wanted: bool, queues: &[TapQueue], underlays: &[Underlay]) -> (Offloads, u32) {
    let flags = tap::TUN_F_CSUM | tap::TUN_F_TSO4 | tap::TUN_F_TSO6;
    let mut tso = wanted;
    for q in queues {
        if let Err(e) = q.set_offload(if tso { flags } else { 0 }) {
            tracing::warn!(error = %e, "TAP refuses TSO/checksum offload; reading plain frames");
            tso = false;
            let _ = q.set_offload(0);
        }
    }
    let udp_gso = wanted && underlays.iter().all(|u| u.tx.iter().all(udp::gso_supported));
    let tap_gro = wanted && underlays.iter().all(|u| udp::enable_gro(&u.rx));
    tracing::info!(tap_tso = tso, udp_gso, udp_gro = tap_gro, "offloads");
    (Offloads { udp_gso, tap_gro }, if tso { flags } else { 0 })
}

type Spawned = (Vec<std::thread::JoinHandle<TapQueue>>, Vec<Arc<Counters>>, Vec<crossbeam_channel::Sender<TapQueue>>);

#[allow(clippy::too_many_arguments)]
fn spawn_workers(
    vtep: Vtep,
    port: u16,
    opts: &RunOptions,
    offloads: Offloads,
    tables: &Arc<Tables>,
    queues: Vec<TapQueue>,
    underlays: Vec<Underlay>,
    stop: &Arc<AtomicBool>,
) -> Result<Spawned, RunError> {
    let mut threads = Vec::new();
    let mut all = Vec::new();
    let mut tap_tx = Vec::new();
    for (i, (tap, udp)) in queues.into_iter().zip(underlays).enumerate() {
        let counters = Arc::new(Counters::default());
        all.push(counters.clone());
        let (tx, new_tap) = crossbeam_channel::bounded(1);
        tap_tx.push(tx);
        let cfg = WorkerConfig { vtep, port, batch: opts.batch, offloads, tables: tables.clone(), counters, stop: stop.clone(), new_tap };
        let w = Worker::new(cfg, tap, udp);
        let t = std::thread::Builder::new().name(format!("vtepd-w{i}")).spawn(move || w.run()).map_err(RunError::Thread)?;
        threads.push(t);
    }
    Ok((threads, all, tap_tx))
}
