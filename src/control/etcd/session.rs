//! The etcd thread of a joined node: watch the leases, keep our own alive, survive outages.
//!
//! One loop, one state: resync (a full read of `<prefix>/subnets/`), then watch from the revision
//! after it, renewing our lease on a timer. Whatever ends the watch — compaction, a reconnect, etcd
//! going away — leads to exactly one full resync, after a delay that grows while etcd stays
//! unreachable (never a hot retry loop). Meanwhile the supervisor keeps the last peer list it was
//! sent, so forwarding carries on with the last known state. Each change of connection state is
//! logged once.
use super::flannel::{subnet_key, Network};
use super::lease::{self, subnets_prefix, Acquired, LEASE_TTL_SECS};
use super::subnet_env::SubnetEnv;
use super::view::{Shared, View};
use super::watch::{LeaseMap, Local};
use super::{own_attrs, with_timeout, EtcdError, BACKOFF_CAP, BACKOFF_FIRST};
use crate::control::config::{Config, Etcd};
use crate::control::event::{Event, EventTx};
use crate::control::overlay::RemoteNode;
use etcd_client::{Client, EventType, WatchOptions};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Renew the 24 h lease every hour, as flanneld renews an hour before expiry: a long outage of
/// etcd must not cost the subnet.
const RENEW_EVERY: Duration = Duration::from_secs(3600);
/// Lease TTLs asked of etcd per batch of events, for `vtepd leases`; bounded so a resync of
/// thousands of leases does not turn into thousands of requests.
const TTL_QUERIES_PER_BATCH: usize = 64;

/// A node that has its lease; [`Joined::serve`] starts the etcd thread.
pub struct Joined {
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) client: Client,
    pub(super) etcd: Etcd,
    /// The config with the subnet and backend from etcd.
    pub cfg: Config,
    pub net: Network,
    pub own: Acquired,
    pub(super) local: Local,
    /// The leases read right after joining; the etcd thread starts from them.
    pub(super) leases: LeaseMap,
    /// The peers those leases name. The start-up sweep keeps their routes: what a killed run left
    /// on the underlay for them is still right, and deleting it would cut their pods off until
    /// the etcd thread's first resync put it back.
    pub peers: Vec<RemoteNode>,
}

/// The running etcd thread. Dropping it stops the thread and with it the renewals; the lease is
/// not revoked, so a restarted node finds it again (as flanneld does).
pub struct Session {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    view: View,
}

struct Ctx {
    client: Client,
    etcd: Etcd,
    cfg: Config,
    own: Acquired,
    /// What the other nodes' leases are judged against.
    local: Local,
    value: String,
    view: View,
    events: EventTx,
    sent: Option<Vec<RemoteNode>>,
    renew_at: tokio::time::Instant,
    /// When to try again to put our lost key back, after a try that failed while the watch held.
    repair_at: Option<tokio::time::Instant>,
}

/// Between tries to put our key back while etcd answers the watch but not the write.
const REPAIR_RETRY: Duration = Duration::from_secs(5);

impl Joined {
    /// Writes the subnet file (`mtu`: the MTU pods should use) and starts watching.
    pub fn serve(self, mtu: u32, events: EventTx) -> Result<Session, EtcdError> {
        let Joined { rt, client, etcd, cfg, net, own, local, leases, peers: _ } = self;
        SubnetEnv { network: net.network, subnet: own.subnet, mtu, ipmasq: false }.write(&etcd.subnet_file)?;
        let view = View::new(Shared {
            map: leases,
            unreachable_since: None,
            endpoints: etcd.endpoints.join(","),
            own_ip: cfg.node.public_ip,
            own_subnet: own.subnet,
            expiry: HashMap::new(),
        });
        let value = own_attrs(&cfg, &net).to_json();
        let renew_at = rt.block_on(async { tokio::time::Instant::now() + RENEW_EVERY });
        if let Some(id) = own.lease_id {
            view.lock().expiry.insert(id, Instant::now() + Duration::from_secs(LEASE_TTL_SECS as u64));
        }
        let ctx = Ctx { client, etcd, cfg, own, local, value, view: view.clone(), events, sent: None, renew_at, repair_at: None };
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("etcd".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = ctx.serve_forever() => {}
                    }
                })
            })
            .map_err(EtcdError::Runtime)?;
        Ok(Session { stop: Some(stop_tx), thread: Some(thread), view })
    }
}

impl Session {
    pub fn view(&self) -> View {
        self.view.clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the etcd thread panicked");
            }
        }
    }
}

/// How long a watch must have lasted for the next one to be set up without backing off.
const WATCH_HELD: Duration = Duration::from_secs(10);

/// Why a watch ended.
enum Lost {
    /// The supervisor is gone: vtepd is stopping.
    Stopping,
    Watch(String),
}

impl Ctx {
    async fn serve_forever(mut self) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            match with_timeout(self.resync()).await {
                Ok(rev) => {
                    self.set_reachable(None);
                    // Outside the resync's time budget: up to 64 sequential round trips for
                    // display only, which a distant etcd would otherwise turn into "unreachable".
                    // The watch starts at `rev` all the same, so nothing is missed meanwhile.
                    self.query_ttls().await;
                    let began = Instant::now();
                    match self.watch_from(rev + 1).await {
                        Lost::Stopping => return,
                        Lost::Watch(why) => tracing::info!(reason = %why, "etcd watch lost; one full resync follows"),
                    }
                    // Only a watch that held a while earns a quick retry: one that fails as soon
                    // as it is set up (a proxy that cannot carry it) would otherwise cost a full
                    // read of every lease a few times a second.
                    if began.elapsed() >= WATCH_HELD {
                        backoff = BACKOFF_FIRST;
                    }
                }
                Err(e) => self.set_reachable(Some(e)),
            }
            // Renewal is the watch loop's; without a watch our lease must not run out either.
            if tokio::time::Instant::now() >= self.renew_at {
                self.renew().await;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }

    fn set_reachable(&mut self, err: Option<EtcdError>) {
        let mut v = self.view.lock();
        match (err, v.unreachable_since) {
            (None, Some(since)) => {
                v.unreachable_since = None;
                tracing::info!(after_s = since.elapsed().as_secs(), leases = v.map.entries.len(), "etcd reachable again; resynced");
            }
            (Some(e), None) => {
                v.unreachable_since = Some(Instant::now());
                tracing::warn!(error = %crate::error_chain(&e), "etcd unreachable; forwarding continues with the last known peers, retrying with backoff");
            }
            _ => {}
        }
    }

    /// Reads every lease, replaces the map, sends the peer list; returns the revision read at.
    async fn resync(&mut self) -> Result<i64, EtcdError> {
        let base = subnets_prefix(&self.etcd.prefix);
        let resp = super::get_prefix(&self.client, &base).await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        {
            let mut v = self.view.lock();
            load(&mut v.map, &resp, &base);
            let Shared { map, expiry, .. } = &mut *v;
            expiry.retain(|id, _| map.entries.values().any(|e| e.lease == *id));
        }
        self.publish();
        self.ensure_own_lease().await?;
        Ok(rev)
    }

    /// Sends the peer list if it changed since the last one sent.
    fn publish(&mut self) -> bool {
        let peers = self.view.lock().map.peers(&self.local);
        if self.sent.as_ref() == Some(&peers) {
            return true;
        }
        self.sent = Some(peers.clone());
        self.events.send(Event::Peers(peers)).is_ok()
    }

    async fn watch_from(&mut self, rev: i64) -> Lost {
        let base = subnets_prefix(&self.etcd.prefix);
        let opts = WatchOptions::new().with_prefix().with_start_revision(rev);
        let mut watcher = self.client.watch_client().max_decoding_message_size(super::MAX_RESPONSE_BYTES);
        let mut stream = match with_timeout(async { Ok(watcher.watch(base.as_str(), Some(opts)).await?) }).await {
            Ok(s) => s,
            Err(e) => return Lost::Watch(crate::error_chain(&e)),
        };
        loop {
            let repair_at = self.repair_at.unwrap_or(self.renew_at);
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tokio::time::sleep_until(self.renew_at) => {
                    self.renew().await;
                    continue;
                }
                _ = tokio::time::sleep_until(repair_at), if self.repair_at.is_some() => {
                    self.put_own_back().await;
                    continue;
                }
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => return Lost::Watch("stream closed".into()),
                Err(e) => return Lost::Watch(crate::error_chain(&e)),
            };
            if resp.canceled() {
                return Lost::Watch(format!("canceled (compacted to revision {}): {}", resp.compact_revision(), resp.cancel_reason()));
            }
            if resp.events().is_empty() {
                continue;
            }
            let own_deleted = self.apply(resp.events(), &base);
            if let Some(holder) = self.own_key_holder() {
                // Overwritten, not deleted: the key names another node now.
                return self.subnet_lost(&format!("leased by {holder}"));
            }
            if !self.publish() {
                return Lost::Stopping;
            }
            if own_deleted {
                self.put_own_back().await;
            }
            self.query_ttls().await;
        }
    }

    /// Applies one watch response; says whether our own key was deleted.
    fn apply(&mut self, events: &[etcd_client::Event], base: &str) -> bool {
        let own_name = subnet_key(self.own.subnet);
        let mut own_deleted = false;
        let mut v = self.view.lock();
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            let Some(name) = std::str::from_utf8(kv.key()).ok().and_then(|k| k.strip_prefix(base)) else { continue };
            match ev.event_type() {
                EventType::Put => v.map.put(name, kv.value(), kv.lease(), kv.create_revision(), kv.mod_revision()),
                EventType::Delete => {
                    v.map.delete(name);
                    own_deleted |= name == own_name;
                }
            }
        }
        own_deleted
    }

    /// Our key must exist: after an expiry (a long outage) or someone deleting it, write it again,
    /// on the same subnet — the device already carries its address.
    async fn ensure_own_lease(&mut self) -> Result<(), EtcdError> {
        let present = self.view.lock().map.entries.get(&self.own.subnet).is_some_and(|e| e.attrs.public_ip == self.cfg.node.public_ip);
        if present {
            return Ok(());
        }
        match lease::create(&mut self.client, &self.etcd.prefix, self.own.subnet, &self.value).await? {
            Some(id) => {
                tracing::warn!(subnet = %self.own.subnet, "this node's lease was gone from etcd; written again");
                self.own.lease_id = Some(id);
                self.view.lock().expiry.insert(id, Instant::now() + Duration::from_secs(LEASE_TTL_SECS as u64));
            }
            None => {
                let holder = self.own_key_holder().map_or_else(|| "another node".to_string(), |ip| ip.to_string());
                self.subnet_lost(&format!("leased by {holder}"));
            }
        }
        Ok(())
    }

    /// The node our key names, if that is no longer us.
    fn own_key_holder(&self) -> Option<Ipv4Addr> {
        let v = self.view.lock();
        v.map.entries.get(&self.own.subnet).map(|e| e.attrs.public_ip).filter(|ip| *ip != self.cfg.node.public_ip)
    }

    /// Our subnet went to another node (our lease expired during a long partition and a new node
    /// took it, or an operator gave it away). Every node now routes it there, so going on with it
    /// would blackhole our pods: the supervisor stops vtepd instead.
    fn subnet_lost(&mut self, how: &str) -> Lost {
        let why = format!("this node's subnet {} is now {how} in etcd", self.own.subnet);
        tracing::error!("{why}");
        let _ = self.events.send(Event::Lost(why));
        Lost::Stopping
    }

    /// [`Self::ensure_own_lease`] now, and again every [`REPAIR_RETRY`] until it succeeds: a write
    /// can fail while the watch holds (a leader election), and no other event would bring it back.
    async fn put_own_back(&mut self) {
        match with_timeout(self.ensure_own_lease()).await {
            Ok(()) => self.repair_at = None,
            Err(e) => {
                if self.repair_at.is_none() {
                    tracing::warn!(error = %crate::error_chain(&e), "cannot put this node's lease back yet; retrying every few seconds");
                }
                self.repair_at = Some(tokio::time::Instant::now() + REPAIR_RETRY);
            }
        }
    }

    async fn renew(&mut self) {
        self.renew_at = tokio::time::Instant::now() + RENEW_EVERY;
        let Some(id) = self.own.lease_id else { return };
        match with_timeout(keep_alive(&mut self.client, id)).await {
            Ok(ttl) if ttl > 0 => {
                self.view.lock().expiry.insert(id, Instant::now() + Duration::from_secs(ttl as u64));
                tracing::debug!(ttl, "lease renewed");
            }
            Ok(_) => {
                // Expired or revoked: its key is gone (the watch saw the delete, or will); write it again.
                self.view.lock().map.entries.remove(&self.own.subnet);
                self.put_own_back().await;
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "lease renewal failed; retrying in a minute");
                self.renew_at = tokio::time::Instant::now() + Duration::from_secs(60);
            }
        }
    }

    /// Fills in expiry times for leases not asked about yet (display only).
    async fn query_ttls(&mut self) {
        let unknown: Vec<i64> = {
            let v = self.view.lock();
            let mut ids: Vec<i64> = v.map.entries.values().map(|e| e.lease).filter(|id| *id != 0 && !v.expiry.contains_key(id)).collect();
            ids.dedup();
            ids.truncate(TTL_QUERIES_PER_BATCH);
            ids
        };
        for id in unknown {
            let Ok(Ok(r)) = tokio::time::timeout(super::REQUEST_TIMEOUT, self.client.lease_time_to_live(id, None)).await else { return };
            if r.ttl() > 0 {
                self.view.lock().expiry.insert(id, Instant::now() + Duration::from_secs(r.ttl() as u64));
            }
        }
    }
}

/// Replaces the map's leases with those of a full read of `base` (`<prefix>/subnets/`).
pub(super) fn load(map: &mut LeaseMap, resp: &etcd_client::GetResponse, base: &str) {
    map.entries.clear();
    for kv in resp.kvs() {
        if let Some(name) = std::str::from_utf8(kv.key()).ok().and_then(|k| k.strip_prefix(base)) {
            map.put(name, kv.value(), kv.lease(), kv.create_revision(), kv.mod_revision());
        }
    }
}

/// One keep-alive round trip; the TTL etcd gives back (0 or less: the lease is gone).
async fn keep_alive(client: &mut Client, id: i64) -> Result<i64, EtcdError> {
    let (mut keeper, mut stream) = match client.lease_keep_alive(id).await {
        Ok(k) => k,
        // etcd-client turns etcd's TTL of -1 for an unknown lease into this error; it is an answer,
        // not a failure to retry.
        Err(etcd_client::Error::LeaseKeepAliveError(m)) if m == "lease not found" => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    keeper.keep_alive().await?;
    Ok(stream.message().await?.map_or(0, |r| r.ttl()))
}
