//! The IPIP backend (Calico's IPIP mode): a multi-queue TUN device carrying the node subnet's
//! network address as a /32 (as Calico's `tunl0` carries an address from the node's block), one
//! device route per peer subnet through it, vtepd's own LPM table to find each packet's remote
//! host, and raw-socket workers. With `ipip.direct_routing` (Calico's CrossSubnet), peers on the
//! underlay's own subnet get plain routes instead.
use super::{grant_offload, install, offload_masks, spawn_worker, DeviceSpec, DirectRoutes, Started, Underlay};
use crate::control::config::Config;
use crate::control::netlink::{Netlink, NetlinkError, Route};
use crate::control::claims::Claims;
use crate::control::overlay::{Installer, Overlay, RemoteNode};
use crate::control::run::{RunError, RunOptions};
use crate::dataplane::ipip::Tunnel;
use crate::io::ipip_worker::{IpipWorker, IpipWorkerConfig};
use crate::io::raw::{self, RawError};
use crate::io::steer;
use crate::io::tap::{self, Kind};
use crate::io::tun::TunQueue;
use crate::table::Tables;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The outer IPv4 header; no options.
pub const IPIP_OVERHEAD: u32 = 20;

/// An IPIP peer: its subnet in the route table, its address in the receive allow-list, and
/// `subnet dev <tun>` in the kernel — unless cross-subnet mode routes it directly.
pub struct IpipInstaller {
    ifindex: u32,
    tables: Arc<Tables>,
    direct: Option<DirectRoutes>,
}

impl IpipInstaller {
    fn direct_for(&self, n: &RemoteNode) -> Option<&DirectRoutes> {
        self.direct.as_ref().filter(|d| d.is_direct(n))
    }

    /// A device route: a TUN has no link layer, so a gateway would mean nothing.
    fn route(&self, n: &RemoteNode) -> Route {
        Route { dst: n.subnet.network(), prefix_len: n.subnet.prefix_len(), gateway: None, ifindex: self.ifindex, onlink: false }
    }
}

impl Installer for IpipInstaller {
    fn update_tables(&mut self, adding: &[RemoteNode], removing: &[RemoteNode]) {
        let tunnelled = |ns: &[RemoteNode]| ns.iter().filter(|n| self.direct_for(n).is_none()).copied().collect::<Vec<_>>();
        // Directly routed peers stay in the allow-list only (see the VXLAN installer).
        self.tables.forget_sources(&super::direct_sources(self.direct.as_ref(), removing));
        self.tables.allow_sources(&super::direct_sources(self.direct.as_ref(), adding));
        let (adding, removing) = (tunnelled(adding), tunnelled(removing));
        // Routes before the allow-list on the way out, after it on the way in, as VXLAN does.
        if !removing.is_empty() {
            self.tables.routes.update(|r| removing.iter().for_each(|n| _ = r.remove_if(n.subnet, &n.public_ip)));
            self.tables.peers.update(|m| removing.iter().for_each(|n| _ = m.remove(&n.public_ip)));
        }
        if !adding.is_empty() {
            self.tables.peers.update(|m| adding.iter().for_each(|n| _ = m.entry(n.public_ip).or_default()));
            self.tables.routes.update(|r| adding.iter().for_each(|n| _ = r.insert(n.subnet, n.public_ip)));
        }
    }

    fn add(&mut self, nl: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError> {
        if let Some(d) = self.direct_for(n) {
            return d.add(nl, n);
        }
        nl.add_route(&self.route(n))
    }

    fn kernel_route(&self, n: &RemoteNode) -> Route {
        self.direct_for(n).map_or_else(|| self.route(n), |d| d.route(n))
    }

    fn remove(&mut self, nl: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError> {
        if let Some(d) = self.direct_for(n) {
            return d.remove(nl, n);
        }
        nl.del_route(&self.route(n))
    }

    fn set_device(&mut self, ifindex: u32) {
        self.ifindex = ifindex;
    }

    fn direct_routes(&mut self) -> Option<&mut DirectRoutes> {
        self.direct.as_mut()
    }

    fn device(&self) -> Option<u32> {
        Some(self.ifindex)
    }
}

pub fn start(mut nl: Netlink, underlay: Underlay, cfg: &Config, opts: &RunOptions, stop: &Arc<AtomicBool>, claims: Option<Claims>) -> Result<Started, RunError> {
    let mtu = underlay.tunnel_mtu("ipip.mtu", cfg.ipip.mtu, IPIP_OVERHEAD);
    // Sockets before the device: a missing capability fails before anything is created.
    let rx = rx_sockets(cfg.node.public_ip, opts.workers.max(1))?;
    let tx = (0..opts.workers.max(1)).map(|_| raw::open_tx()).collect::<Result<Vec<_>, _>>()?;
    let mut device = DeviceSpec {
        kind: Kind::Tun,
        name: cfg.ipip.device.clone(),
        mtu,
        mac: None,
        addr: cfg.node.vtep_ip(),
        offload: 0,
        queues: opts.workers.max(1),
    };
    let queues = device.open()?;
    // Recorded in the spec so a device re-created after a deletion gets the same mask.
    device.offload = tun_offload(opts, &queues);
    let ifindex = device.configure(&mut nl)?;
    let tables = Tables::new();
    let direct = cfg.ipip.direct_routing.then_some(DirectRoutes { underlay });
    let installer = IpipInstaller { ifindex, tables: tables.clone(), direct };
    // Before anything is installed, so a failure leaves nothing behind; CAP_NET_ADMIN stays for
    // the peers, reloads and the teardown.
    super::drop_privileges(opts)?;
    let overlay = install(Overlay::with_installer(nl, tables.clone(), Box::new(installer)).with_claims(claims), &cfg.peers)?;
    tracing::info!(device = %device.name, mtu, ttl = cfg.ipip.ttl, peers = cfg.peers.len(), workers = queues.len(), "forwarding (ipip)");

    let opts_offload = opts.offload;
    let uso = device.offload & tap::TUN_F_USO4 != 0;
    let tunnel = Tunnel { local: cfg.node.public_ip, subnet: cfg.node.subnet, mtu: mtu as u16, ttl: cfg.ipip.ttl };
    let mut rx = rx.into_iter();
    let mut started = Started::without_workers(overlay);
    started.device = Some(device);
    for (i, (queue, tx)) in queues.into_iter().zip(tx).enumerate() {
        let (tables, batch, rx) = (tables.clone(), opts.batch, rx.next());
        spawn_worker(&mut started, i, stop, opts.busy_poll, move |line| {
            let wc = IpipWorkerConfig { tunnel, batch, tables, gro: opts_offload, uso, line };
            IpipWorker::new(wc, queue, tx, rx).run()
        })?;
    }
    Ok(started)
}

/// One receive socket per worker, up to `steer::MAX_RX_SOCKETS`, each filtered to its share of the
/// inner flows (raw sockets would otherwise each get every packet); workers beyond that only send.
/// A kernel that refuses the filter (one without classic BPF's MOD and XOR, before 3.7) gets one
/// unfiltered socket, as before spreading existed, and says so.
fn rx_sockets(local: std::net::Ipv4Addr, workers: usize) -> Result<Vec<socket2::Socket>, RawError> {
    let count = workers.min(steer::MAX_RX_SOCKETS);
    let mut sockets = Vec::with_capacity(count);
    for i in 0..count {
        let s = raw::open_rx(local)?;
        if let Err(e) = steer::attach(&s, i, count) {
            tracing::warn!(error = %e, "kernel refuses the receive-steering BPF filter; one worker receives all IPIP");
            return Ok(vec![raw::open_rx(local)?]);
        }
        sockets.push(s);
    }
    tracing::info!(rx_sockets = count, "IPIP receive sockets, flows spread by a BPF hash");
    Ok(sockets)
}

/// TSO, USO and checksum offload on the TUN (TSO4 only: the device carries IPv4, IPv6 is disabled
/// on it; USO comes as USO4|USO6 or not at all), so the kernel hands the workers 64 KB TCP and UDP
/// super-packets and partial checksums, which they segment and complete. A kernel that refuses is
/// logged and the device stays at plain packets; `--no-offload` asks for nothing.
fn tun_offload(opts: &RunOptions, queues: &[TunQueue]) -> u32 {
    let wanted = opts.offload;
    let tso = tap::TUN_F_CSUM | tap::TUN_F_TSO4;
    let uso = tso | tap::TUN_F_USO4 | tap::TUN_F_USO6;
    let mask = grant_offload(queues, &offload_masks(opts, uso, tso));
    if wanted && mask == 0 {
        tracing::warn!("TUN refuses TSO/checksum offload; reading plain packets");
    }
    tracing::info!(tun_tso = mask != 0, tun_uso = mask == uso, tun_gro = wanted, "offloads");
    mask
}
