//! Per-backend set-up: each backend opens its devices and sockets, installs the configured peers
//! through its [`Installer`](super::overlay::Installer) and starts its workers, and hands `run` a
//! [`Started`] that knows how to undo it.
//!
//! What the backends share lives here: the underlay interface (found from `node.public_ip`), the
//! direct routes of host-gw and of cross-subnet mode, and the start/stop bookkeeping.
pub mod hostgw;
pub mod ipip;
pub mod vxlan;

use super::netlink::{Netlink, NetlinkError, Op, Route, RTPROT_VTEPD};
use super::config::ConfigError;
use super::overlay::{Overlay, RemoteNode};
use super::run::RunError;
use crate::dataplane::{counters, Counters};
use crate::io::ifaddr;
use crate::io::tap::{self, Kind, TapError, TapQueue};
use crate::io::mailbox::Postbox;
use crate::io::poll::ControlLine;
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running backend: its installed peers, its device and its worker threads.
pub struct Started {
    pub overlay: Overlay,
    /// How to rebuild the device if someone deletes it; `None` for host-gw, which has none.
    pub device: Option<DeviceSpec>,
    /// One per worker: how to wake it, and where a recreated device's queue is handed over.
    pub postboxes: Vec<Postbox>,
    /// Workers hand their queue back when they stop.
    pub threads: Vec<JoinHandle<TapQueue>>,
    pub counters: Vec<Arc<Counters>>,
}

impl Started {
    pub fn without_workers(overlay: Overlay) -> Started {
        Started { overlay, device: None, postboxes: Vec::new(), threads: Vec::new(), counters: Vec::new() }
    }

    /// Waits for the workers (the caller has set the stop flag), removes the peers' entries and
    /// returns the summed counters.
    pub fn finish(mut self) -> Vec<(&'static str, u64)> {
        // Workers sleep until there is traffic or mail: wake each to see the stop flag. They hand
        // their queues back; the device (and what the kernel holds on it) lives until they are
        // dropped, after our own entries are removed.
        for p in &self.postboxes {
            p.ring();
        }
        let mut queues = Vec::new();
        for t in self.threads {
            match t.join() {
                Ok(q) => queues.push(q),
                Err(_) => tracing::error!("a worker thread panicked"),
            }
        }
        self.overlay.uninstall();
        drop(queues);
        counters::total(&self.counters)
    }
}

/// The offload masks to try, best first: with and without USO, as the options allow.
pub fn offload_masks(opts: &super::run::RunOptions, uso: u32, tso: u32) -> Vec<u32> {
    match (opts.offload, opts.uso) {
        (false, _) => vec![],
        (true, true) => vec![uso, tso],
        (true, false) => vec![tso],
    }
}

/// Sets the first offload mask of `masks` (best first) that every queue accepts and returns it; 0
/// when none is. The mask is device-wide, so after a refusal the next one is set on all queues
/// again. Each refusal is logged: an older kernel lacks USO (6.2+), a very old one TSO on a TAP.
pub fn grant_offload(queues: &[TapQueue], masks: &[u32]) -> u32 {
    for &mask in masks {
        match queues.iter().try_for_each(|q| q.set_offload(mask)) {
            Ok(()) => return mask,
            Err(e) => tracing::info!(error = %e, mask = format_args!("{mask:#x}"), "device refuses this offload mask; trying less"),
        }
    }
    for q in queues {
        let _ = q.set_offload(0);
    }
    0
}

/// A backend's TAP or TUN device, described well enough to build it again exactly as it was.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub kind: Kind,
    pub name: String,
    pub mtu: u32,
    /// TAP only: the MAC peers' neighbour entries point at.
    pub mac: Option<[u8; 6]>,
    /// The /32 the device carries: the node subnet's network address, as flannel.1 and tunl0 do.
    pub addr: Ipv4Addr,
    /// TUN_F_* mask the queues were opened with.
    pub offload: u32,
    pub queues: usize,
}

impl DeviceSpec {
    /// Creates (or re-creates) the device's queues with the recorded offload mask.
    pub fn open(&self) -> Result<Vec<TapQueue>, TapError> {
        let queues = tap::open_kind(self.kind, &self.name, self.queues)?;
        for q in &queues {
            q.set_offload(self.offload).map_err(|source| TapError::Configure {
                kind: self.kind,
                device: self.name.clone(),
                what: "TUNSETOFFLOAD",
                source,
            })?;
        }
        Ok(queues)
    }

    /// Brings the device up with its MTU, MAC and /32 address; returns its index.
    pub fn configure(&self, nl: &mut Netlink) -> Result<u32, RunError> {
        let reason = "vanished right after creation";
        let ifindex = nl
            .link_index(&self.name)?
            .ok_or_else(|| TapError::BadName { kind: self.kind, device: self.name.clone(), reason })?;
        disable_ipv6(&self.name);
        nl.set_link(ifindex, true, Some(self.mtu), self.mac)?;
        nl.add_addr(ifindex, self.addr, 32)?;
        Ok(ifindex)
    }
}

/// Both devices carry IPv4 only: vtepd routes IPv4 subnets to them, and a dual-stack network
/// would have a device of its own (as Flannel has flannel-v6.1). With IPv6 on, the kernel sends
/// MLD reports, neighbour solicitations for its own link-local address and, for as long as the
/// device is up, router solicitations into it — on a TAP each one a `tx_flood` drop, on a TUN a
/// `tx_not_ipv4` drop — so an idle node's drop counters would grow with the kernel's chatter and
/// hide real drops. (flannel.1 has IPv6 on; the kernel's VXLAN driver drops the same frames as
/// `tx_dropped`.) Best effort: a kernel without IPv6 has no such file and sends nothing anyway.
fn disable_ipv6(dev: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
    if let Err(e) = std::fs::write(&path, "1") {
        tracing::debug!(%path, error = %e, "cannot disable IPv6 on the device");
    }
}

/// Installs `peers`; on failure removes what was installed, so a failed start leaves no routes
/// behind (routes through the underlay would outlive vtepd's own devices).
pub fn install(mut overlay: Overlay, peers: &[RemoteNode]) -> Result<Overlay, RunError> {
    // On failure the dropped overlay removes what went in before the error.
    overlay.set_peers(peers)?;
    Ok(overlay)
}

/// The interface that holds `node.public_ip`.
#[derive(Debug, Clone)]
pub struct Underlay {
    /// `node.public_ip`, by which the interface is found (again, when it changes).
    pub public_ip: Ipv4Addr,
    pub name: String,
    pub ifindex: u32,
    /// As it was at start: the default tunnel MTU is derived from it once.
    pub mtu: u32,
    /// Its connected subnets: a peer inside one is on-link.
    pub subnets: Vec<Ipv4Net>,
}

impl Underlay {
    pub fn find(nl: &mut Netlink, public_ip: Ipv4Addr) -> Result<Underlay, RunError> {
        let name = ifaddr::interface_of(public_ip).ok_or(RunError::AddrNotHere(public_ip))?;
        let link = nl.link(&name)?.ok_or(RunError::AddrNotHere(public_ip))?;
        Ok(Underlay { public_ip, subnets: ifaddr::connected_subnets(&name), name, ifindex: link.index, mtu: link.mtu })
    }

    /// The underlay as it is now, if it changed: the address moved to another interface (a
    /// bridge or bond made anew, with a new index) or the interface's subnets changed. `None`
    /// while it is unchanged, or while the address is on no interface at all (nothing to follow
    /// until it is back). The start-up MTU stays.
    pub fn changed(&self, nl: &mut Netlink) -> Option<Underlay> {
        let now = Underlay::find(nl, self.public_ip).ok()?;
        (now.ifindex != self.ifindex || now.subnets != self.subnets).then_some(Underlay { mtu: self.mtu, ..now })
    }

    /// The tunnel device's MTU: `configured`, or the underlay's less the encapsulation `overhead`.
    /// A configured MTU the underlay cannot carry whole is allowed (the operator may know better,
    /// e.g. a jumbo path beyond the first hop) but warned about: RFC 7348 wants no fragmented
    /// VXLAN, and every large packet would go out as fragments.
    pub fn tunnel_mtu(&self, key: &'static str, configured: Option<u16>, overhead: u32) -> u32 {
        let Some(m) = configured.map(u32::from) else {
            return derived_mtu(self.mtu, overhead);
        };
        let fits = self.mtu.saturating_sub(overhead);
        if m > fits {
            tracing::warn!(key, mtu = m, underlay = %self.name, fits, "the underlay cannot carry this MTU unfragmented; large packets will leave as fragments");
        }
        m
    }

    /// Reads the interface's connected subnets again.
    pub fn refresh_subnets(&mut self) {
        self.subnets = ifaddr::connected_subnets(&self.name);
    }

    pub fn is_on_link(&self, ip: Ipv4Addr) -> bool {
        self.subnets.iter().any(|n| n.contains(&ip))
    }

    /// Fails naming the first peer that is not on-link (host-gw cannot reach it): at start and
    /// when a reload brings it, so a config accepted at runtime is one a restart accepts too.
    pub fn check_on_link(&self, peers: &[RemoteNode]) -> Result<(), ConfigError> {
        match peers.iter().enumerate().find(|(_, p)| !self.is_on_link(p.public_ip)) {
            None => Ok(()),
            Some((i, p)) => Err(ConfigError::Invalid {
                key: format!("peer[{i}].public_ip"),
                problem: format!(
                    "{} (subnet {}) is not on-link: it is in none of the subnets of the underlay interface {} ({}); host-gw needs every peer on the same link (use backend ipip or vxlan with direct_routing = true across subnets)",
                    p.public_ip,
                    p.subnet,
                    self.name,
                    self.subnets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    }
}

/// Plain kernel routes to peers' subnets through the underlay: host-gw, and cross-subnet mode's
/// on-link peers.
#[derive(Debug, Clone)]
pub struct DirectRoutes {
    pub underlay: Underlay,
}

impl DirectRoutes {
    /// `subnet via public_ip dev <underlay>`: the kernel resolves the gateway by ARP on the link.
    pub fn route(&self, n: &RemoteNode) -> Route {
        Route {
            dst: n.subnet.network(),
            prefix_len: n.subnet.prefix_len(),
            gateway: Some(n.public_ip),
            ifindex: self.underlay.ifindex,
            onlink: false,
        }
    }

    pub fn is_direct(&self, n: &RemoteNode) -> bool {
        self.underlay.is_on_link(n.public_ip)
    }

    /// Whether `n`'s entries differ with the underlay `now`: its plain route changes interface,
    /// or (cross-subnet mode, where not `every_peer` is routed plainly) it changes class.
    pub fn moves(&self, n: &RemoteNode, now: &Underlay, every_peer: bool) -> bool {
        let direct = every_peer || self.is_direct(n);
        let direct_now = every_peer || now.is_on_link(n.public_ip);
        direct != direct_now || (direct && self.underlay.ifindex != now.ifindex)
    }

    /// Installs the route. A peer that is not on-link (one added by a reload, say; the start-up
    /// check covers the configured ones) is refused here with that reason rather than with the
    /// kernel's bare ENETUNREACH.
    pub fn add(&self, nl: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError> {
        let route = self.route(n);
        if !self.is_direct(n) {
            let reason = "the gateway (the peer's public_ip) is on no subnet of the underlay interface";
            return Err(NetlinkError::Invalid { op: Op::AddRoute(route), reason });
        }
        nl.add_route(&route)
    }

    pub fn remove(&self, nl: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError> {
        nl.del_route(&self.route(n))
    }
}

/// The underlay addresses of the peers in `ns` that cross-subnet mode (`direct`) routes plainly.
fn direct_sources(direct: Option<&DirectRoutes>, ns: &[RemoteNode]) -> Vec<Ipv4Addr> {
    direct.map_or_else(Vec::new, |d| ns.iter().filter(|n| d.is_direct(n)).map(|n| n.public_ip).collect())
}

/// Removes the routes through the underlay that a previous run left behind — after SIGKILL nothing
/// else would: host-gw and direct routes outlive the process, unlike those on its own device. A
/// route is ours if it carries [`RTPROT_VTEPD`] and goes out of our underlay interface; those that
/// `keep` would install again stay, so traffic through them never blinks across a restart, and so
/// do those another running instance holds (`held`, by instance: see `control::claims`).
pub fn sweep_stale_routes(
    nl: &mut Netlink,
    underlay: &Underlay,
    keep: &[RemoteNode],
    held: &HashMap<Route, String>,
) -> Result<(), NetlinkError> {
    let direct = DirectRoutes { underlay: underlay.clone() };
    let wanted: Vec<Route> = keep.iter().filter(|n| direct.is_direct(n)).map(|n| direct.route(n)).collect();
    for r in nl.routes_by_protocol(RTPROT_VTEPD)? {
        if r.ifindex != underlay.ifindex || wanted.contains(&r) {
            continue;
        }
        if let Some(instance) = held.get(&r) {
            tracing::info!(route = %r, %instance, "left a route another running vtepd instance holds");
            continue;
        }
        nl.del_route(&r)?;
        tracing::info!(route = %r, device = %underlay.name, "removed a stale route left by an earlier run");
    }
    Ok(())
}

/// Switches to `opts.user`, if given, keeping CAP_NET_ADMIN and CAP_NET_RAW. Called once devices
/// and sockets exist and before the workers do: capabilities are per thread and new threads
/// inherit ours.
pub fn drop_privileges(opts: &super::run::RunOptions) -> Result<(), RunError> {
    if let Some(user) = &opts.user {
        crate::io::privilege::drop_to(user)?;
        tracing::info!(%user, "running unprivileged with CAP_NET_ADMIN and CAP_NET_RAW");
    }
    Ok(())
}

/// Spawns worker `index` of `started`: a named thread on a fresh [`ControlLine`] — counting into
/// fresh [`Counters`], getting its mail (a replacement queue, a wake-up to stop) from the postbox
/// kept in `started`.
pub fn spawn_worker(
    started: &mut Started,
    index: usize,
    stop: &Arc<AtomicBool>,
    busy_poll: Duration,
    body: impl FnOnce(ControlLine) -> TapQueue + Send + 'static,
) -> Result<(), RunError> {
    let counters = Arc::new(Counters::default());
    let (postbox, mailbox) = crate::io::mailbox::pair().map_err(RunError::Mailbox)?;
    let line = ControlLine { stop: stop.clone(), mailbox, counters: counters.clone(), busy_poll };
    let t = std::thread::Builder::new()
        .name(format!("vtepd-w{index}"))
        .spawn(move || body(line))
        .map_err(RunError::thread("worker"))?;
    started.threads.push(t);
    started.counters.push(counters);
    started.postboxes.push(postbox);
    Ok(())
}

/// The underlay's MTU less the encapsulation, within what `*.mtu` accepts in the config (68 to
/// 65,000): a 64 KB underlay (loopback, dummy) must not make a tunnel MTU whose packets plus outer
/// header no longer fit an IPv4 length.
fn derived_mtu(underlay_mtu: u32, overhead: u32) -> u32 {
    underlay_mtu.saturating_sub(overhead).clamp(68, 65_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn underlay() -> Underlay {
        Underlay { public_ip: [192, 0, 2, 1].into(), name: "ul0".into(), ifindex: 7, mtu: 1500, subnets: vec!["192.0.2.0/24".parse().unwrap()] }
    }

    fn node(ip: &str, subnet: &str) -> RemoteNode {
        RemoteNode { public_ip: ip.parse().unwrap(), subnet: subnet.parse().unwrap(), vtep_mac: Default::default() }
    }

    #[test]
    fn derived_mtu_stays_within_what_the_config_accepts() {
        assert_eq!(derived_mtu(1500, 50), 1450);
        assert_eq!(derived_mtu(1500, 20), 1480);
        // A 64 KB underlay: 65,516 + a 20-byte outer header would wrap the IPv4 total length.
        assert_eq!(derived_mtu(65_536, 20), 65_000);
        assert_eq!(derived_mtu(100, 50), 68);
    }

    #[test]
    fn on_link_check_names_the_first_far_peer() {
        let u = underlay();
        let peers = [node("192.0.2.2", "10.244.2.0/26"), node("198.51.100.3", "10.244.3.0/26")];
        assert!(u.check_on_link(&peers[..1]).is_ok());
        let e = u.check_on_link(&peers).unwrap_err().to_string();
        for want in ["peer[1]", "198.51.100.3", "10.244.3.0/26", "not on-link", "ul0", "192.0.2.0/24"] {
            assert!(e.contains(want), "{want} missing from: {e}");
        }
    }

    #[test]
    fn direct_route_is_via_the_peer_on_the_underlay() {
        let d = DirectRoutes { underlay: underlay() };
        let n = node("192.0.2.2", "10.244.2.64/26");
        let r = d.route(&n);
        assert_eq!(r.to_string(), "10.244.2.64/26 via 192.0.2.2 dev 7");
        assert!(d.is_direct(&n));
        // A far peer is refused before the kernel is asked.
        let mut nl = Netlink::open().unwrap();
        let e = d.add(&mut nl, &node("198.51.100.3", "10.244.3.0/24")).unwrap_err();
        assert!(matches!(e, NetlinkError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("198.51.100.3"), "{e}");
    }

    /// Cross-subnet mode: a peer moves when it changes class, or when its plain route would go
    /// out of another interface; a tunnelled peer does not care which interface holds the address.
    /// host-gw's peers move with the interface only.
    #[test]
    fn a_peer_moves_with_its_class_or_its_routes_interface() {
        let d = DirectRoutes { underlay: underlay() };
        let (near, far) = (node("192.0.2.2", "10.244.2.0/24"), node("198.51.100.3", "10.244.3.0/24"));
        let other_index = Underlay { ifindex: 8, ..underlay() };
        assert!(d.moves(&near, &other_index, false) && !d.moves(&far, &other_index, false));
        let far_subnet_too = Underlay { subnets: vec!["192.0.2.0/24".parse().unwrap(), "198.51.100.0/24".parse().unwrap()], ..underlay() };
        assert!(!d.moves(&near, &far_subnet_too, false) && d.moves(&far, &far_subnet_too, false));
        let readdressed = Underlay { subnets: vec!["198.51.100.0/24".parse().unwrap()], ..underlay() };
        assert!(d.moves(&near, &readdressed, false) && d.moves(&far, &readdressed, false));
        assert!(!d.moves(&near, &underlay(), false) && !d.moves(&far, &underlay(), false));
        // host-gw: every peer has a plain route, so only another interface moves it.
        assert!(d.moves(&far, &other_index, true) && !d.moves(&near, &readdressed, true));
    }
}
