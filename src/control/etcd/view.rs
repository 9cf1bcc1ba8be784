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

    fn reachable(&self) -> bool {
        self.lock().unreachable_since.is_none()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_state_for_the_control_api() {
        let mut map = LeaseMap::default();
        map.put("10.244.1.0-24", br#"{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}"#, 5, 1, 1);
        map.put("10.244.2.0-24", br#"{"PublicIP":"192.0.2.2","PublicIPv6":null,"BackendType":"host-gw"}"#, 0, 2, 2);
        let view = View::new(Shared {
            map,
            unreachable_since: None,
            endpoints: "http://192.0.2.254:2379".into(),
            own_ip: Ipv4Addr::new(192, 0, 2, 1),
            own_subnet: "10.244.1.0/24".parse().unwrap(),
            expiry: HashMap::from([(5, Instant::now() + Duration::from_secs(100))]),
        });
        assert_eq!(view.state(), "connected to http://192.0.2.254:2379");
        let rows = view.leases();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].own && rows[0].expires_in.is_some_and(|d| d <= Duration::from_secs(100)));
        assert_eq!(rows[0].vtep_mac.map(|m| m.to_string()).as_deref(), Some("02:00:00:00:00:01"));
        assert!(!rows[1].own && rows[1].expires_in.is_none() && rows[1].backend == "host-gw");
        view.lock().unreachable_since = Some(Instant::now());
        assert!(view.state().starts_with("etcd unreachable for 0 s"));
    }
}
