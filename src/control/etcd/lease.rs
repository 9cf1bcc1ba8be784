//! Acquiring this node's subnet lease, as flanneld does (flannel's pkg/subnet/etcd `tryAcquireLease`):
//!
//! 1. a lease that already holds this node's `PublicIP` (a restart, or an operator's reservation),
//!    once those the network no longer hands out are deleted (flanneld's `isSubnetConfigCompat`);
//! 2. else the subnet named in the subnet file of a previous run, if no one holds it;
//! 3. else a free subnet in `[SubnetMin, SubnetMax]`, picked at random among the first free ones so
//!    that nodes starting together rarely reach for the same one.
//!
//! Every claim is an etcd transaction that writes only if the key is absent (`CreateRevision == 0`),
//! so two racing nodes can never both win a subnet; the loser reads the table again and retries.
//! A key stored without an etcd lease is a reservation: it is never handed to another node, and the
//! node it names keeps it as a reservation (nothing to renew).
use super::flannel::{parse_subnet_key, subnet_key, LeaseAttrs, Network};
use super::EtcdError;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use ipnet::Ipv4Net;

/// Flannel's subnet lease TTL (`subnetTTL`): 24 hours.
pub const LEASE_TTL_SECS: i64 = 24 * 3600;
/// Claim attempts before giving up; each lost race costs one.
const MAX_TRIES: usize = 20;
/// Flannel picks at random among this many free subnets.
const PICK_AMONG: usize = 100;

/// This node's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub subnet: Ipv4Net,
    /// `None`: a reservation (a key without an etcd lease), kept as it is and never renewed.
    pub lease_id: Option<i64>,
}

/// A key under `<prefix>/subnets/` as read from etcd.
struct Existing {
    /// The key's last part as stored: `10.244.3.0-24`, or a dual-stack `10.244.3.0-24&<v6>-<len>`.
    name: String,
    subnet: Ipv4Net,
    attrs: Option<LeaseAttrs>,
    lease: i64,
    mod_revision: i64,
}

impl Existing {
    /// Its full key, as stored (a dual-stack one included).
    fn key(&self, prefix: &str) -> String {
        format!("{}{}", subnets_prefix(prefix), self.name)
    }
}

pub fn subnets_prefix(prefix: &str) -> String {
    format!("{prefix}/subnets/")
}

pub fn lease_key(prefix: &str, subnet: Ipv4Net) -> String {
    format!("{}{}", subnets_prefix(prefix), subnet_key(subnet))
}

/// Finds or claims this node's subnet; see the module docs for the order.
pub async fn acquire(
    client: &mut Client,
    prefix: &str,
    net: &Network,
    attrs: &LeaseAttrs,
    hint: Option<Ipv4Net>,
) -> Result<Acquired, EtcdError> {
    let value = attrs.to_json();
    for _ in 0..MAX_TRIES {
        let existing = read_all(client, prefix).await?;
        let ours: Vec<&Existing> = existing.iter().filter(|e| e.attrs.as_ref().is_some_and(|a| a.public_ip == attrs.public_ip)).collect();
        if drop_unleasable(client, prefix, net, &ours).await? {
            // Read again: those subnets are free now.
            continue;
        }
        if let Some(mine) = ours.iter().find(|e| net.leasable(e.subnet)) {
            if let Some(got) = reclaim(client, prefix, mine, &value).await? {
                return Ok(got);
            }
            continue;
        }
        let taken: Vec<Ipv4Net> = existing.iter().map(|e| e.subnet).collect();
        let free = |s: &Ipv4Net| !taken.iter().any(|t| t.contains(&s.network()) || s.contains(&t.network()));
        let wanted = match hint.filter(|h| net.leasable(*h) && free(h)) {
            Some(h) => h,
            None => pick_free(net, free).ok_or(EtcdError::NoFreeSubnet { network: net.network })?,
        };
        if let Some(id) = create(client, prefix, wanted, &value).await? {
            return Ok(Acquired { subnet: wanted, lease_id: Some(id) });
        }
        tracing::debug!(subnet = %wanted, "lost the race for a subnet; trying again");
    }
    Err(EtcdError::NoMoreTries { tries: MAX_TRIES })
}

async fn read_all(client: &mut Client, prefix: &str) -> Result<Vec<Existing>, EtcdError> {
    let base = subnets_prefix(prefix);
    let resp = super::get_prefix(client, &base).await?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let name = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&base)?;
            let subnet = parse_subnet_key(name)?;
            // An unreadable value still occupies its subnet.
            let attrs = LeaseAttrs::parse(name, kv.value()).ok();
            Some(Existing { name: name.to_string(), subnet, attrs, lease: kv.lease(), mod_revision: kv.mod_revision() })
        })
        .collect())
}

/// Deletes the leases naming this node that the network no longer hands out (another SubnetLen,
/// or outside SubnetMin..SubnetMax since the config changed), as flanneld does: left in place they
/// would keep routing that subnet to us, and push us onto a new subnet at every restart. Each goes
/// only if unchanged since it was read. Reservations (no etcd lease) are the operator's and stay.
/// Returns whether any went.
async fn drop_unleasable(client: &mut Client, prefix: &str, net: &Network, ours: &[&Existing]) -> Result<bool, EtcdError> {
    let mut dropped = false;
    for e in ours.iter().filter(|e| !net.leasable(e.subnet)) {
        if e.lease == 0 {
            tracing::warn!(key = %e.name, "a reservation names this node's address but is outside the network's subnet range; leaving it");
            continue;
        }
        let key = e.key(prefix);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, e.mod_revision)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        if client.txn(txn).await?.succeeded() {
            tracing::info!(key = %e.name, "deleted a lease of this node's address that the network no longer hands out, as flanneld does");
            dropped = true;
        }
    }
    Ok(dropped)
}

/// Takes back a key that already names this node, if it is unchanged since it was read. A lease
/// gets a fresh etcd lease (the old one may be close to expiry, or gone with a previous etcd); a
/// reservation stays a reservation. A dual-stack key (a flanneld node's from before the network
/// went IPv4-only) becomes the plain IPv4 one, in the same transaction.
async fn reclaim(client: &mut Client, prefix: &str, mine: &Existing, value: &str) -> Result<Option<Acquired>, EtcdError> {
    let key = lease_key(prefix, mine.subnet);
    let stored = mine.key(prefix);
    let (lease_id, opts) = if mine.lease == 0 {
        (None, None)
    } else {
        let id = client.lease_grant(LEASE_TTL_SECS, None).await?.id();
        (Some(id), Some(PutOptions::new().with_lease(id)))
    };
    let mut when = vec![Compare::mod_revision(stored.as_str(), CompareOp::Equal, mine.mod_revision)];
    let mut then = vec![TxnOp::put(key.as_str(), value, opts)];
    if stored != key {
        when.push(Compare::create_revision(key.as_str(), CompareOp::Equal, 0));
        then.insert(0, TxnOp::delete(stored.as_str(), None));
    }
    let txn = Txn::new().when(when).and_then(then);
    let won = client.txn(txn).await?.succeeded();
    if let (false, Some(id)) = (won, lease_id) {
        // As in `create`: nothing is attached to it.
        let _ = client.lease_revoke(id).await;
    }
    Ok(won.then_some(Acquired { subnet: mine.subnet, lease_id }))
}

/// Writes `key` on a new etcd lease only if no key is there; `None` if someone was first.
pub async fn create(client: &mut Client, prefix: &str, subnet: Ipv4Net, value: &str) -> Result<Option<i64>, EtcdError> {
    let key = lease_key(prefix, subnet);
    let id = client.lease_grant(LEASE_TTL_SECS, None).await?.id();
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.as_str(), value, Some(PutOptions::new().with_lease(id)))]);
    if client.txn(txn).await?.succeeded() {
        return Ok(Some(id));
    }
    // Nothing is attached to it; revoking now rather than in 24 h keeps etcd's lease list short.
    let _ = client.lease_revoke(id).await;
    Ok(None)
}

fn pick_free(net: &Network, free: impl Fn(&Ipv4Net) -> bool) -> Option<Ipv4Net> {
    let candidates: Vec<Ipv4Net> = net.subnets().filter(|s| free(s)).take(PICK_AMONG).collect();
    if candidates.is_empty() {
        return None;
    }
    Some(candidates[random_below(candidates.len())])
}

/// Good enough to spread racing nodes; nothing here needs to be unpredictable.
fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    (h.finish() % n as u64) as usize
}
