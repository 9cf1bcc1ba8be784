//! vtepd as a member of a Flannel network kept in etcd.
//!
//! [`join`] runs before any backend starts, since the subnet it leases decides the device's address:
//! it reads the network config (`<prefix>/config`), acquires this node's lease and returns the
//! config completed with what etcd decided. [`Joined::serve`] then writes Flannel's subnet file and
//! hands the etcd client to a thread of its own (a current-thread tokio runtime: the rest of vtepd
//! stays synchronous and tokio never comes near the data path), which watches the other nodes'
//! leases and feeds the supervisor [`Event::Peers`](super::event::Event::Peers), and keeps this
//! node's lease alive.
pub mod flannel;
pub mod lease;
pub mod session;
pub mod subnet_env;
pub mod view;
pub mod watch;

use super::config::{Config, Etcd};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use flannel::{FlannelError, LeaseAttrs, Network};
use ipnet::Ipv4Net;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use watch::{LeaseMap, Local};

pub use session::{Joined, Session};

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd: {0}")]
    Client(#[from] etcd_client::Error),
    #[error("etcd request timed out after {0:?}")]
    Timeout(Duration),
    #[error("etcd key {key}: {source}")]
    NetworkConfig { key: String, source: FlannelError },
    #[error("no free subnet left in network {network} (every subnet between SubnetMin and SubnetMax is leased or reserved)")]
    NoFreeSubnet { network: Ipv4Net },
    #[error("lost the race for a free subnet {tries} times in a row; giving up")]
    NoMoreTries { tries: usize },
    #[error("cannot read TLS file {key} {path}: {source}")]
    TlsFile { key: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot start the etcd client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    SubnetFile(#[from] subnet_env::SubnetFileError),
}

/// One unary etcd call may take this long before it counts as a failure (and is retried).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry delays grow from the first to the cap while etcd stays unreachable.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(200);
pub const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// The largest etcd response read (a prefix GET, a watch batch). tonic's default is 4 MiB, which a
/// few thousand leases (or a few large junk values) under the prefix exceed, and then every resync
/// would fail; flanneld's Go client allows about 2 GiB.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

pub async fn with_timeout<T>(f: impl std::future::Future<Output = Result<T, EtcdError>>) -> Result<T, EtcdError> {
    tokio::time::timeout(REQUEST_TIMEOUT, f).await.unwrap_or(Err(EtcdError::Timeout(REQUEST_TIMEOUT)))
}

/// Connects lazily: an unreachable etcd shows up as failing requests, not here.
pub async fn connect(cfg: &Etcd) -> Result<Client, EtcdError> {
    // No request timeout on the client: it would be sent to etcd as a gRPC deadline and end the
    // long-lived watch stream. Unary calls are bounded with `with_timeout` instead; HTTP/2 pings
    // notice a dead connection under the watch.
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(3), Duration::from_secs(3))
        .with_keep_alive_while_idle(true)
        // A member cut off from the quorum fails requests and cancels watches instead of serving a
        // silent, stale watch (flanneld asks for the same).
        .with_require_leader(true);
    if let Some(tls) = &cfg.tls {
        let read = |key, path: &PathBuf| std::fs::read(path).map_err(|source| EtcdError::TlsFile { key, path: path.clone(), source });
        let ca = Certificate::from_pem(read("etcd.ca", &tls.ca)?);
        let id = Identity::from_pem(read("etcd.cert", &tls.cert)?, read("etcd.key", &tls.key)?);
        opts = opts.with_tls(TlsOptions::new().ca_certificate(ca).identity(id));
    }
    Ok(Client::connect(&cfg.endpoints, Some(opts)).await?)
}

/// Every key under `prefix`, however large the answer (up to [`MAX_RESPONSE_BYTES`]).
pub async fn get_prefix(client: &Client, prefix: &str) -> Result<etcd_client::GetResponse, EtcdError> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
    Ok(kv.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())).await?)
}

/// Reads `<prefix>/config`; `Ok(None)` while it does not exist yet (flanneld waits for it too).
pub async fn read_network(client: &mut Client, prefix: &str) -> Result<Option<Network>, EtcdError> {
    let key = format!("{prefix}/config");
    let resp = client.get(key.as_str(), None).await?;
    let Some(kv) = resp.kvs().first() else { return Ok(None) };
    Network::parse(kv.value()).map(Some).map_err(|source| EtcdError::NetworkConfig { key, source })
}

/// The config with what etcd decided filled in: subnet, backend, VNI, port, direct routing and,
/// unless set locally, the MTU.
pub fn joined_config(cfg: &Config, net: &Network, subnet: Ipv4Net) -> Config {
    let mut c = cfg.clone();
    let b = &net.backend;
    c.node.subnet = subnet;
    c.node.backend = b.kind;
    c.vxlan.vni = b.vni;
    c.vxlan.port = b.port;
    c.vxlan.direct_routing = b.direct_routing;
    c.vxlan.mtu = c.vxlan.mtu.or(b.mtu);
    c.ipip.direct_routing = b.direct_routing;
    c.ipip.mtu = c.ipip.mtu.or(b.mtu);
    c
}

/// What this node writes into its lease.
pub fn own_attrs(cfg: &Config, net: &Network) -> LeaseAttrs {
    LeaseAttrs::ours(cfg.node.public_ip, &net.backend, cfg.vxlan.mac)
}

/// Joins the network: retries with backoff while etcd is unreachable or the network config is not
/// written yet (logging once per change of reason), fails on a config vtepd cannot honour.
/// `Ok(None)` if `stop` was set before it got anywhere.
pub fn join(cfg: &Config, stop: &AtomicBool) -> Result<Option<Joined>, EtcdError> {
    let Some(etcd) = cfg.etcd.as_ref() else { return Ok(None) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(EtcdError::Runtime)?;
    let hint = subnet_env::read_subnet(&etcd.subnet_file);
    let joined = rt.block_on(async {
        let mut client = connect(etcd).await?;
        let mut backoff = BACKOFF_FIRST;
        let mut said = String::new();
        while !stop.load(Ordering::Relaxed) {
            match try_join(&mut client, cfg, etcd, hint).await {
                Ok(Some(j)) => return Ok(Some((client, j))),
                Err(e @ (EtcdError::NetworkConfig { .. } | EtcdError::NoFreeSubnet { .. })) => return Err(e),
                Ok(None) => say_once(&mut said, format!("waiting for the network config at {}/config", etcd.prefix)),
                Err(e) => say_once(&mut said, format!("cannot join through etcd ({}); retrying", crate::error_chain(&e))),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
        Ok(None)
    })?;
    let Some((client, (net, got, read))) = joined else { return Ok(None) };
    let joined_cfg = joined_config(cfg, &net, got.subnet);
    tracing::info!(subnet = %got.subnet, backend = net.backend.kind.name(), reservation = got.lease_id.is_none(), "joined the network {}", net.network);
    let local = Local { public_ip: cfg.node.public_ip, subnet: got.subnet, network: net.network, backend: joined_cfg.node.backend };
    let mut leases = LeaseMap::default();
    session::load(&mut leases, &read, &lease::subnets_prefix(&etcd.prefix));
    let peers = leases.peers(&local);
    Ok(Some(Joined { rt, client, etcd: etcd.clone(), cfg: joined_cfg, net, own: got, local, leases, peers }))
}

async fn try_join(
    client: &mut Client,
    cfg: &Config,
    etcd: &Etcd,
    hint: Option<Ipv4Net>,
) -> Result<Option<(Network, lease::Acquired, etcd_client::GetResponse)>, EtcdError> {
    let Some(net) = with_timeout(read_network(client, &etcd.prefix)).await? else { return Ok(None) };
    let attrs = own_attrs(cfg, &net);
    let got = with_timeout(lease::acquire(client, &etcd.prefix, &net, &attrs, hint)).await?;
    // The other nodes' leases as of now: what the start-up sweep must keep (see `Joined::peers`).
    let leases = with_timeout(get_prefix(client, &lease::subnets_prefix(&etcd.prefix))).await?;
    Ok(Some((net, got, leases)))
}

fn say_once(said: &mut String, msg: String) {
    if *said != msg {
        tracing::warn!("{msg}");
        *said = msg;
    }
}
