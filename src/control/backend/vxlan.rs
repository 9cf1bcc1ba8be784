//! The VXLAN backend: a TAP device set up as flanneld sets up `flannel.1`, UDP workers with the
//! offloads the kernel grants, and (with `vxlan.direct_routing`) plain routes to peers on the
//! underlay's own subnet.
use super::{grant_offload, install, offload_masks, spawn_worker, DeviceSpec, DirectRoutes, Started, Underlay};
use crate::control::config::Config;
use crate::control::netlink::{Netlink, NetlinkError, Route};
use crate::control::claims::Claims;
use crate::control::overlay::{Installer, Overlay, RemoteNode};
use crate::control::run::{RunError, RunOptions};
use crate::dataplane::Vtep;
use crate::io::tap::{self, Kind, TapQueue};
use crate::io::udp::{self, Underlay as UdpUnderlay};
use crate::io::worker::{Offloads, Worker, WorkerConfig};
use crate::table::{Peer, Tables};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// VXLAN over IPv4: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// A VXLAN peer: FDB + neighbour + allow-list entries in the tables, and the `ip neigh` /
/// `ip route ... onlink` entries flanneld installs for flannel.1 — unless cross-subnet mode routes
/// it directly.
pub struct VxlanInstaller {
    ifindex: u32,
    tables: Arc<Tables>,
    direct: Option<DirectRoutes>,
}

impl VxlanInstaller {
    pub fn new(ifindex: u32, tables: Arc<Tables>, direct: Option<DirectRoutes>) -> VxlanInstaller {
        VxlanInstaller { ifindex, tables, direct }
    }

    fn direct_for(&self, n: &RemoteNode) -> Option<&DirectRoutes> {
        self.direct.as_ref().filter(|d| d.is_direct(n))
    }

    fn route(&self, n: &RemoteNode) -> Route {
        Route {
            dst: n.subnet.network(),
            prefix_len: n.subnet.prefix_len(),
            gateway: Some(n.subnet.network()),
            ifindex: self.ifindex,
            onlink: true,
        }
    }
}

fn peer(n: &RemoteNode) -> Peer {
    Peer { underlay_ip: n.public_ip, vtep_mac: n.vtep_mac, vtep_ip: n.subnet.network() }
}

impl Installer for VxlanInstaller {
    fn update_tables(&mut self, adding: &[RemoteNode], removing: &[RemoteNode]) {
        let tunnelled = |ns: &[RemoteNode]| ns.iter().filter(|n| self.direct_for(n).is_none()).map(peer).collect::<Vec<_>>();
        // A directly routed peer may still tunnel to us (it sees the link otherwise, or has not
        // moved yet), as a kernel VXLAN device would accept: it stays in the allow-list only.
        self.tables.remove_peers(&tunnelled(removing));
        self.tables.forget_sources(&super::direct_sources(self.direct.as_ref(), removing));
        self.tables.allow_sources(&super::direct_sources(self.direct.as_ref(), adding));
        self.tables.add_peers(&tunnelled(adding));
    }

    fn add(&mut self, nl: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError> {
        if let Some(d) = self.direct_for(n) {
            return d.add(nl, n);
        }
        nl.add_neigh(self.ifindex, n.subnet.network(), n.vtep_mac.0)?;
        let added = nl.add_route(&self.route(n));
        if added.is_err() {
            // Not installed after all: no neighbour entry left behind for it.
            let _ = nl.del_neigh(self.ifindex, n.subnet.network());
        }
        added
    }

    fn kernel_route(&self, n: &RemoteNode) -> Route {
        self.direct_for(n).map_or_else(|| self.route(n), |d| d.route(n))
    }

    fn remove(&mut self, nl: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError> {
        if let Some(d) = self.direct_for(n) {
            return d.remove(nl, n);
        }
        nl.del_route(&self.route(n))?;
        nl.del_neigh(self.ifindex, n.subnet.network())
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
    udp::probe_port(cfg.node.public_ip, cfg.vxlan.port)?;
    let mtu = underlay.tunnel_mtu("vxlan.mtu", cfg.vxlan.mtu, VXLAN_OVERHEAD);
    let queues = tap::open(&cfg.vxlan.device, opts.workers)?;
    let send_pool = udp::send_pool(cfg.node.public_ip, opts.source_ports)?;
    let sockets = (0..queues.len())
        .map(|_| UdpUnderlay::bind(cfg.node.public_ip, cfg.vxlan.port, send_pool.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let (offloads, offload) = negotiate_offloads(opts, &queues, &sockets);
    let device = DeviceSpec {
        kind: Kind::Tap,
        name: cfg.vxlan.device.clone(),
        mtu,
        mac: Some(cfg.vxlan.mac.0),
        addr: cfg.node.vtep_ip(),
        offload,
        queues: queues.len(),
    };
    let ifindex = device.configure(&mut nl)?;
    let tables = Tables::new();
    let direct = cfg.vxlan.direct_routing.then_some(DirectRoutes { underlay });
    let installer = VxlanInstaller::new(ifindex, tables.clone(), direct);
    // Before anything is installed, so a failure leaves nothing behind; CAP_NET_ADMIN stays for
    // the peers, reloads and the teardown.
    super::drop_privileges(opts)?;
    let overlay = install(Overlay::with_installer(nl, tables.clone(), Box::new(installer)).with_claims(claims), &cfg.peers)?;
    tracing::info!(device = %device.name, vni = %cfg.vxlan.vni, mtu, peers = cfg.peers.len(), workers = queues.len(), "forwarding");

    let vtep = Vtep { vni: cfg.vxlan.vni, mac: cfg.vxlan.mac, ip: cfg.node.vtep_ip(), mtu: mtu as u16 };
    let mut started = Started::without_workers(overlay);
    started.device = Some(device);
    for (i, (tap, udp)) in queues.into_iter().zip(sockets).enumerate() {
        let (tables, port, batch) = (tables.clone(), cfg.vxlan.port, opts.batch);
        spawn_worker(&mut started, i, stop, opts.busy_poll, move |line| {
            let wc = WorkerConfig { vtep, port, batch, offloads, tables, line };
            Worker::new(wc, tap, udp).run()
        })?;
    }
    Ok(started)
}

/// Turns on what the kernel offers: TSO, USO and checksum offload on the TAP (so it hands us 64 KB
/// TCP and UDP super-frames), UDP GSO on the send sockets and UDP GRO on the receive sockets. Each
/// one that is refused is logged and left off; forwarding works without any of them.
fn negotiate_offloads(opts: &RunOptions, queues: &[TapQueue], underlays: &[UdpUnderlay]) -> (Offloads, u32) {
    let wanted = opts.offload;
    let tso = tap::TUN_F_CSUM | tap::TUN_F_TSO4 | tap::TUN_F_TSO6;
    let uso = tso | tap::TUN_F_USO4 | tap::TUN_F_USO6;
    let mask = grant_offload(queues, &offload_masks(opts, uso, tso));
    let udp_gso = wanted && underlays.iter().all(|u| u.tx.iter().all(udp::gso_supported));
    let tap_gro = wanted && underlays.iter().all(|u| udp::enable_gro(&u.rx));
    if wanted && mask == 0 {
        tracing::warn!("TAP refuses TSO/checksum offload; reading plain frames");
    }
    tracing::info!(tap_tso = mask != 0, tap_uso = mask == uso, udp_gso, udp_gro = tap_gro, "offloads");
    (Offloads { udp_gso, tap_gro, tap_uso: mask == uso }, mask)
}
