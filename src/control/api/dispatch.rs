//! Answers a [`Request`] from the supervisor's state. Runs on the supervisor thread, so it does
//! only table reads and snapshot swaps: nothing here waits on the client. The kernel is asked only
//! for `route show`: one netlink dump of vtepd's routes, and the underlay's name (getifaddrs).
//!
//! Manual entries (`vtepd fdb add`, `vtepd neigh add`) live in the same data-path tables as the
//! peers' entries. A MAC or IP that belongs to an installed peer (from the config file or the
//! datastore) is refused for add and del: the peer's source of truth owns it, and a manual change
//! would be silently undone at the next reload or lease update. Everything else is manual, and
//! since reloads and datastore updates only touch the peers they add or remove, manual entries stay
//! until deleted or until vtepd exits. (If a peer later claims a manual entry's MAC or IP, the
//! peer's entry replaces it, and it goes when the peer goes.)
use super::proto::*;
use crate::control::config::{Backend, Config};
use crate::control::event::{Datastore, Live};
use crate::control::overlay::RemoteNode;
use crate::dataplane::counters;
use crate::table::{coarse_now, Tables};
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// What a request may look at: the parts of [`Live`] without the kernel, so it can also be built
/// from in-memory tables (unit tests, the fuzz target).
pub struct View<'a> {
    pub cfg: &'a Config,
    pub tables: &'a Tables,
    pub peers: Vec<RemoteNode>,
    /// Wanted peers that are not installed, and why.
    pub not_installed: Vec<(RemoteNode, String)>,
    pub counters: Vec<(&'static str, u64)>,
    /// Per worker, in order.
    pub workers: Vec<WorkerLoad>,
    pub datastore: Option<&'a dyn Datastore>,
    /// For `route show`: the subnets whose route the kernel lacks right now; `None` when not asked
    /// or the kernel could not be asked.
    pub lost_routes: Option<HashSet<Ipv4Net>>,
}

pub fn dispatch(req: Request, live: &mut Live<'_>) -> Response {
    let lost_routes = matches!(req, Request::RouteShow).then(|| lost_routes(live)).flatten();
    let view = View {
        cfg: live.cfg,
        tables: live.overlay.tables(),
        peers: live.overlay.peers().copied().collect(),
        not_installed: live.overlay.not_installed().map(|(n, why)| (*n, why.to_string())).collect(),
        counters: counters::total(live.counters),
        workers: live.counters.iter().map(|c| c.packets()).map(|(rx_packets, tx_packets)| WorkerLoad { rx_packets, tx_packets }).collect(),
        datastore: live.datastore,
        lost_routes,
    };
    answer(req, &view)
}

fn lost_routes(live: &mut Live<'_>) -> Option<HashSet<Ipv4Net>> {
    match live.overlay.lost_routes() {
        Ok(lost) => Some(lost.iter().map(|n| n.subnet).collect()),
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "route show: cannot read the kernel's routes");
            None
        }
    }
}

pub fn answer(req: Request, v: &View<'_>) -> Response {
    match run(req, v) {
        Ok(r) => Response::Ok(r),
        Err(e) => Response::Error(e),
    }
}

fn run(req: Request, v: &View<'_>) -> Result<Reply, String> {
    Ok(match req {
        Request::FdbShow => Reply::Fdb(fdb_rows(v)),
        Request::NeighShow => Reply::Neigh(neigh_rows(v)),
        Request::RouteShow => Reply::Routes(route_rows(v)),
        Request::Peers => Reply::Peers(peers(v)),
        Request::Stats => Reply::Stats(stats(v)),
        Request::Leases => Reply::Leases(leases(v)?),
        Request::FdbAdd { mac, dst } => fdb_add(v, mac, dst)?,
        Request::FdbDel { mac } => fdb_del(v, mac)?,
        Request::NeighAdd { ip, mac } => neigh_add(v, ip, mac)?,
        Request::NeighDel { ip } => neigh_del(v, ip)?,
    })
}

/// The TAP or TUN device the tables feed ("-" for host-gw, which has none).
pub fn device(cfg: &Config) -> &str {
    match cfg.node.backend {
        Backend::Vxlan => &cfg.vxlan.device,
        Backend::Ipip => &cfg.ipip.device,
        Backend::HostGw => "-",
    }
}

fn mac_owner(v: &View<'_>, mac: MacAddr) -> Option<Ipv4Addr> {
    v.peers.iter().find(|p| p.vtep_mac == mac && encapsulated(v, p)).map(|p| p.public_ip)
}

fn ip_owner(v: &View<'_>, ip: Ipv4Addr) -> Option<Ipv4Addr> {
    v.peers.iter().find(|p| p.vtep_ip() == ip && encapsulated(v, p)).map(|p| p.public_ip)
}

/// A peer whose traffic vtepd tunnels (rather than the kernel routing it directly).
fn encapsulated(v: &View<'_>, p: &RemoteNode) -> bool {
    v.tables.peers.load().contains_key(&p.public_ip)
}

fn origin(owner: Option<Ipv4Addr>) -> Origin {
    if owner.is_some() { Origin::Peer } else { Origin::Manual }
}

fn fdb_rows(v: &View<'_>) -> Vec<FdbRow> {
    let dev = device(v.cfg).to_string();
    v.tables
        .fdb
        .entries()
        .into_iter()
        .map(|(mac, dst)| FdbRow { mac: mac.to_string(), dst, dev: dev.clone(), origin: origin(mac_owner(v, mac)) })
        .collect()
}

fn neigh_rows(v: &View<'_>) -> Vec<NeighRow> {
    let dev = device(v.cfg).to_string();
    v.tables
        .neigh
        .entries()
        .into_iter()
        .map(|(ip, mac)| NeighRow { ip, lladdr: mac.to_string(), dev: dev.clone(), origin: origin(ip_owner(v, ip)) })
        .collect()
}

/// The routes to peers' subnets as vtepd installed them: through the device for a tunnelled peer
/// (via the VTEP address for VXLAN, as flannel does; via the data-path route table for IPIP), and
/// via the peer's underlay address for a directly routed one.
fn route_rows(v: &View<'_>) -> Vec<RouteRow> {
    let dev = device(v.cfg).to_string();
    let mut underlay = None;
    let mut rows: Vec<RouteRow> = v
        .peers
        .iter()
        .map(|p| {
            let in_kernel = v.lost_routes.as_ref().map(|lost| !lost.contains(&p.subnet));
            match (encapsulated(v, p), v.cfg.node.backend) {
                (true, Backend::Vxlan) => RouteRow { dst: p.subnet, via: p.vtep_ip(), dev: dev.clone(), onlink: true, in_kernel },
                (true, _) => RouteRow { dst: p.subnet, via: p.public_ip, dev: dev.clone(), onlink: true, in_kernel },
                (false, _) => {
                    let name = underlay.get_or_insert_with(|| {
                        crate::io::ifaddr::interface_of(v.cfg.node.public_ip).unwrap_or_else(|| "underlay".into())
                    });
                    RouteRow { dst: p.subnet, via: p.public_ip, dev: name.clone(), onlink: false, in_kernel }
                }
            }
        })
        .collect();
    rows.sort_by_key(|r| r.dst);
    rows
}

fn peers(v: &View<'_>) -> PeersReply {
    let now = coarse_now();
    let allow = v.tables.peers.load();
    let mut peers: Vec<PeerRow> = v
        .peers
        .iter()
        .map(|p| {
            let heard = allow.get(&p.public_ip);
            let mode = match (heard.is_some(), v.cfg.node.backend) {
                (true, b) => b.name(),
                (false, _) => "direct",
            };
            // The VXLAN and IPIP receive paths record arrivals; a directly routed peer's packets
            // never pass through vtepd: for those there is nothing to say.
            let vxlan = v.cfg.node.backend == Backend::Vxlan;
            let tunnelled = vxlan || v.cfg.node.backend == Backend::Ipip;
            let timed = heard.filter(|_| tunnelled);
            let ago = timed.and_then(|h| h.get()).map(|t| u64::from(now.saturating_sub(t)));
            PeerRow {
                public_ip: p.public_ip,
                subnet: p.subnet,
                mode: mode.into(),
                vtep_mac: timed.filter(|_| vxlan).map(|_| p.vtep_mac.to_string()),
                reachable: timed.map(|_| ago.is_some_and(|a| a <= REACHABLE_WITHIN)),
                last_heard_secs: ago,
                not_installed: None,
            }
        })
        .collect();
    peers.extend(v.not_installed.iter().map(|(n, why)| PeerRow {
        public_ip: n.public_ip,
        subnet: n.subnet,
        mode: v.cfg.node.backend.name().into(),
        vtep_mac: None,
        reachable: None,
        last_heard_secs: None,
        not_installed: Some(why.clone()),
    }));
    peers.sort_by_key(|p| p.public_ip);
    PeersReply { backend: v.cfg.node.backend.name().into(), peers, datastore: v.datastore.map(|d| d.state()) }
}

fn stats(v: &View<'_>) -> StatsReply {
    let t = v.tables;
    let tables = [("fdb", t.fdb.len()), ("neigh", t.neigh.len()), ("peers", t.peers.len()), ("routes", t.routes.load().len())];
    StatsReply {
        counters: v.counters.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
        tables: tables.iter().map(|(n, c)| (n.to_string(), *c as u64)).collect(),
        datastore: v.datastore.map(|d| d.state()),
        datastore_reachable: v.datastore.map(|d| d.reachable()),
        workers: v.workers.clone(),
    }
}

fn leases(v: &View<'_>) -> Result<Vec<LeaseJson>, String> {
    let Some(ds) = v.datastore else {
        return Err("not in etcd mode: this vtepd takes its peers from its config file ([[peer]]); `vtepd peers` shows them".into());
    };
    Ok(ds
        .leases()
        .into_iter()
        .map(|l| LeaseJson {
            subnet: l.subnet,
            public_ip: l.public_ip,
            backend: l.backend,
            vtep_mac: l.vtep_mac.map(|m| m.to_string()),
            expires_in_secs: l.expires_in.map(|d| d.as_secs()),
            own: l.own,
        })
        .collect())
}

fn needs_vxlan(v: &View<'_>, what: &str) -> Result<(), String> {
    if v.cfg.node.backend == Backend::Vxlan {
        return Ok(());
    }
    Err(format!("{what} entries exist only with the vxlan backend (this vtepd runs {})", v.cfg.node.backend.name()))
}

fn fdb_add(v: &View<'_>, mac: MacAddr, dst: Ipv4Addr) -> Result<Reply, String> {
    needs_vxlan(v, "fdb")?;
    if let Some(p) = mac_owner(v, mac) {
        return Err(format!("{mac} is peer {p}'s VTEP MAC; change the peer in the config or datastore instead"));
    }
    if mac == v.cfg.vxlan.mac {
        return Err(format!("{mac} is this node's own vxlan.mac"));
    }
    check_fdb_dst(v, dst)?;
    v.tables.fdb.insert(mac, dst);
    tracing::info!(%mac, %dst, "manual fdb entry added");
    if !v.tables.peers.load().contains_key(&dst) {
        // Allowed (the entry may be for a peer about to be added), but one-way until then.
        return Ok(Reply::Done(format!(
            "fdb {mac} dst {dst} added; note: {dst} is not a peer, so VXLAN from it is dropped (drop_rx_unknown_source) until it is one"
        )));
    }
    Ok(Reply::Done(format!("fdb {mac} dst {dst} added")))
}

/// An FDB destination is a remote VTEP's underlay address: not this node (the frames would come
/// straight back), not an overlay address (VXLAN inside VXLAN); the protocol layer has already
/// refused a group, broadcast or loopback address (`proto::unicast_ip`).
fn check_fdb_dst(v: &View<'_>, dst: Ipv4Addr) -> Result<(), String> {
    if dst == v.cfg.node.public_ip {
        return Err(format!("dst {dst} is this node's own public_ip; give the remote VTEP's underlay address"));
    }
    let overlay = std::iter::once(v.cfg.node.subnet).chain(v.peers.iter().map(|p| p.subnet));
    if let Some(net) = overlay.into_iter().find(|n| n.contains(&dst)) {
        return Err(format!("dst {dst} is an overlay address (in {net}); give the remote VTEP's underlay address"));
    }
    Ok(())
}

fn fdb_del(v: &View<'_>, mac: MacAddr) -> Result<Reply, String> {
    needs_vxlan(v, "fdb")?;
    if let Some(p) = mac_owner(v, mac) {
        return Err(format!("{mac} is peer {p}'s VTEP MAC; remove the peer in the config or datastore instead"));
    }
    match v.tables.fdb.remove(&mac) {
        Some(dst) => {
            tracing::info!(%mac, %dst, "manual fdb entry deleted");
            Ok(Reply::Done(format!("fdb {mac} dst {dst} deleted")))
        }
        None => Err(format!("no fdb entry for {mac}")),
    }
}

fn neigh_add(v: &View<'_>, ip: Ipv4Addr, mac: MacAddr) -> Result<Reply, String> {
    needs_vxlan(v, "neigh")?;
    if let Some(p) = ip_owner(v, ip) {
        return Err(format!("{ip} is peer {p}'s VTEP address; change the peer in the config or datastore instead"));
    }
    if v.cfg.node.subnet.contains(&ip) {
        return Err(format!("{ip} is in this node's own subnet {}; vtepd answers ARP only for remote addresses", v.cfg.node.subnet));
    }
    v.tables.neigh.insert(ip, mac);
    tracing::info!(%ip, %mac, "manual neighbour entry added");
    Ok(Reply::Done(format!("neigh {ip} lladdr {mac} added")))
}

fn neigh_del(v: &View<'_>, ip: Ipv4Addr) -> Result<Reply, String> {
    needs_vxlan(v, "neigh")?;
    if let Some(p) = ip_owner(v, ip) {
        return Err(format!("{ip} is peer {p}'s VTEP address; remove the peer in the config or datastore instead"));
    }
    match v.tables.neigh.remove(&ip) {
        Some(mac) => {
            tracing::info!(%ip, %mac, "manual neighbour entry deleted");
            Ok(Reply::Done(format!("neigh {ip} lladdr {mac} deleted")))
        }
        None => Err(format!("no neighbour entry for {ip}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Peer;

    const CFG: &str = "[node]\npublic_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\"\n\n[vxlan]\nmac = \"02:00:00:00:00:01\"\n\n\
        [[peer]]\npublic_ip = \"192.0.2.2\"\nsubnet = \"10.244.2.0/24\"\nvtep_mac = \"02:00:00:00:00:02\"\n";

    fn with_view(f: impl FnOnce(&View<'_>)) {
        let cfg = Config::parse(CFG).unwrap();
        let tables = Tables::default();
        let p = cfg.peers[0];
        tables.add_peer(&Peer { underlay_ip: p.public_ip, vtep_mac: p.vtep_mac, vtep_ip: p.vtep_ip() });
        let v = View { cfg: &cfg, tables: &tables, peers: cfg.peers.clone(), not_installed: vec![], counters: vec![("rx_packets", 3)], workers: vec![], datastore: None, lost_routes: None };
        f(&v)
    }

    fn ok(r: Response) -> Reply {
        match r {
            Response::Ok(r) => r,
            Response::Error(e) => panic!("refused: {e}"),
        }
    }

    fn refused(r: Response) -> String {
        match r {
            Response::Error(e) => e,
            Response::Ok(r) => panic!("accepted: {r:?}"),
        }
    }

    #[test]
    fn manual_entries_are_marked_and_peer_entries_protected() {
        with_view(|v| {
            let m9 = MacAddr([2, 0, 0, 0, 0, 9]);
            let peer_mac = MacAddr([2, 0, 0, 0, 0, 2]);
            let dst = Ipv4Addr::new(192, 0, 2, 2);
            ok(answer(Request::FdbAdd { mac: m9, dst }, v));
            let Reply::Fdb(rows) = ok(answer(Request::FdbShow, v)) else { panic!() };
            let origins: Vec<(String, Origin)> = rows.into_iter().map(|r| (r.mac, r.origin)).collect();
            assert_eq!(origins, [("02:00:00:00:00:02".into(), Origin::Peer), ("02:00:00:00:00:09".into(), Origin::Manual)]);
            assert!(refused(answer(Request::FdbAdd { mac: peer_mac, dst }, v)).contains("peer 192.0.2.2"));
            assert!(refused(answer(Request::FdbDel { mac: peer_mac }, v)).contains("peer 192.0.2.2"));
            assert!(refused(answer(Request::FdbAdd { mac: MacAddr([2, 0, 0, 0, 0, 1]), dst }, v)).contains("own vxlan.mac"));
            for (bad, why) in [((192, 0, 2, 1), "own public_ip"), ((10, 244, 2, 5), "overlay address (in 10.244.2.0/24)"), ((10, 244, 1, 9), "overlay address")] {
                let dst = Ipv4Addr::new(bad.0, bad.1, bad.2, bad.3);
                assert!(refused(answer(Request::FdbAdd { mac: m9, dst }, v)).contains(why), "{dst}");
            }
            let Reply::Done(note) = ok(answer(Request::FdbAdd { mac: m9, dst: Ipv4Addr::new(192, 0, 2, 77) }, v)) else { panic!() };
            assert!(note.contains("not a peer"), "{note}");
            ok(answer(Request::FdbDel { mac: m9 }, v));
            ok(answer(Request::FdbAdd { mac: m9, dst }, v));
            ok(answer(Request::FdbDel { mac: m9 }, v));
            assert_eq!(refused(answer(Request::FdbDel { mac: m9 }, v)), "no fdb entry for 02:00:00:00:00:09");
            assert_eq!(v.tables.fdb.len(), 1, "the peer's entry stays");

            let ip9 = Ipv4Addr::new(10, 244, 9, 0);
            ok(answer(Request::NeighAdd { ip: ip9, mac: m9 }, v));
            assert!(refused(answer(Request::NeighDel { ip: Ipv4Addr::new(10, 244, 2, 0) }, v)).contains("peer 192.0.2.2"));
            assert!(refused(answer(Request::NeighAdd { ip: Ipv4Addr::new(10, 244, 1, 7), mac: m9 }, v)).contains("own subnet"));
            ok(answer(Request::NeighDel { ip: ip9 }, v));
        })
    }

    #[test]
    fn routed_peers_are_not_timed_tunnelled_ones_are() {
        let text = "[node]\npublic_ip = \"192.0.2.1\"\nsubnet = \"10.244.1.0/24\"\nbackend = \"ipip\"\n\n\
            [[peer]]\npublic_ip = \"192.0.2.2\"\nsubnet = \"10.244.2.0/24\"\n[[peer]]\npublic_ip = \"192.0.2.3\"\nsubnet = \"10.244.3.0/24\"\n";
        let cfg = Config::parse(text).unwrap();
        let tables = Tables::default();
        // The IPIP installer allow-lists a tunnelled peer; a directly routed one is not in the tables.
        tables.peers.insert(cfg.peers[0].public_ip, Default::default());
        let v = View { cfg: &cfg, tables: &tables, peers: cfg.peers.clone(), not_installed: vec![], counters: vec![], workers: vec![], datastore: None, lost_routes: None };
        let Reply::Peers(p) = ok(answer(Request::Peers, &v)) else { panic!() };
        let rows: Vec<(&str, Option<bool>)> = p.peers.iter().map(|r| (r.mode.as_str(), r.reachable)).collect();
        assert_eq!(rows, [("ipip", Some(false)), ("direct", None)], "the IPIP peer not heard yet: silent");
        assert_eq!(p.peers[0].vtep_mac, None, "IPIP has no VTEP MAC");
        let Reply::Routes(r) = ok(answer(Request::RouteShow, &v)) else { panic!() };
        assert_eq!(r[0].dev, "ipip0");
        assert_eq!((r[1].via, r[1].onlink), (Ipv4Addr::new(192, 0, 2, 3), false));
        assert_eq!((r[0].in_kernel, r[1].in_kernel), (None, None), "not asked: unknown");
        let v = View { lost_routes: Some([cfg.peers[1].subnet].into_iter().collect()), ..v };
        let Reply::Routes(r) = ok(answer(Request::RouteShow, &v)) else { panic!() };
        assert_eq!((r[0].in_kernel, r[1].in_kernel), (Some(true), Some(false)), "the direct route was lost");
        assert!(refused(answer(Request::FdbAdd { mac: MacAddr([2, 0, 0, 0, 0, 9]), dst: Ipv4Addr::new(192, 0, 2, 2) }, &v)).contains("only with the vxlan backend"));
    }

    #[test]
    fn reads_answer_from_the_tables() {
        with_view(|v| {
            let Reply::Routes(r) = ok(answer(Request::RouteShow, v)) else { panic!() };
            assert_eq!(r, [RouteRow { dst: "10.244.2.0/24".parse().unwrap(), via: Ipv4Addr::new(10, 244, 2, 0), dev: "vtep0".into(), onlink: true, in_kernel: None }]);
            let Reply::Peers(p) = ok(answer(Request::Peers, v)) else { panic!() };
            assert_eq!((p.peers[0].mode.as_str(), p.peers[0].reachable, p.peers[0].last_heard_secs), ("vxlan", Some(false), None));
            v.tables.peers.load()[&Ipv4Addr::new(192, 0, 2, 2)].note(coarse_now());
            let Reply::Peers(p) = ok(answer(Request::Peers, v)) else { panic!() };
            assert_eq!((p.peers[0].reachable, p.peers[0].last_heard_secs), (Some(true), Some(0)));
            let Reply::Stats(s) = ok(answer(Request::Stats, v)) else { panic!() };
            assert_eq!(s.counters, [("rx_packets".to_string(), 3)]);
            assert_eq!(s.tables[..3], [("fdb".to_string(), 1), ("neigh".to_string(), 1), ("peers".to_string(), 1)]);
            assert!(refused(answer(Request::Leases, v)).starts_with("not in etcd mode"));
        })
    }
}
