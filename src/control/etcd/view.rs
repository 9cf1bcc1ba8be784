//! What the control API sees of etcd ([`Datastore`]): the connection state and every lease. Shared
//! with the etcd thread under a mutex; only the control plane takes it, never the data path.
use super::watch::LeaseMap;
use crate::control::event::{Datastore, LeaseRow};
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct Shared {
    pub map: LeaseMap,
    /// `None` while connected; since when etcd is unreachable otherwise.
    pub unreachable_since: Option<Instant>,
    pub endpoints: String,
    pub own_ip: Ipv4Addr,
    pub own_subnet: Ipv4Net,
    /// When each etcd lease seen so far expires, as etcd last said.
    pub expiry: HashMap<i64, Instant>,
}

#[derive(Clone)]
pub struct View(pub Arc<Mutex<Shared>>);

impl View {
    pub fn new(shared: Shared) -> View {
        View(Arc::new(Mutex::new(shared)))
    }

    /// A panic elsewhere while holding the lock leaves plain data behind; keep using it.
    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Datastore for View {
    fn state(&self) -> String {
        let s = self.lock();
        match s.unreachable_since {
            None => format!("connected to {}", s.endpoints),
            Some(t) => format!("etcd unreachable for {} s ({}); forwarding with the last known leases", t.elapsed().as_secs(), s.endpoints),
        }
    }

    fn leases(&self) -> Vec<LeaseRow> {
        let s = self.lock();
        let now = Instant::now();
        s.map
            .entries
            .iter()
            .map(|(subnet, e)| LeaseRow {
                subnet: *subnet,
                public_ip: e.attrs.public_ip,
                backend: e.attrs.backend_type.clone(),
                vtep_mac: e.attrs.backend_data.map(|d| d.vtep_mac),
                expires_in: match e.lease {
                    0 => None,
                    // Not asked yet: at most Flannel's full TTL.
                    id => Some(s.expiry.get(&id).map_or(Duration::from_secs(super::lease::LEASE_TTL_SECS as u64), |t| t.saturating_duration_since(now))),
                },
                own: *subnet == s.own_subnet,
            })
            .collect()
    }
}
