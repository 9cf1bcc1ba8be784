//! Route table: longest-prefix match from an inner (overlay) destination to the remote host's
//! underlay address, for the IPIP path, where the TUN device hands us packets without a next hop.
//!
//! The table is an [`Lpm`]: one hash map per prefix length that is in use, searched longest first.
//! A lookup costs one masked hash probe per distinct prefix length, and real overlays use one or two
//! lengths (flannel's /24s, Calico's /26 blocks plus the odd /32), so it is two or three probes in
//! practice; a trie would chase more pointers for the same answer. Like the other tables it is
//! published as an immutable snapshot: readers load it once per batch without a lock, the control
//! plane builds a changed copy and swaps it in.
use arc_swap::{ArcSwap, Guard};
use ipnet::Ipv4Net;
use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

/// An immutable longest-prefix-match table.
#[derive(Debug, Clone)]
pub struct Lpm<V> {
    /// Non-empty levels, longest prefix first.
    levels: Vec<Level<V>>,
}

#[derive(Debug, Clone)]
struct Level<V> {
    len: u8,
    mask: u32,
    /// Network address (host byte order) → value.
    entries: FxHashMap<u32, V>,
}

impl<V> Default for Lpm<V> {
    fn default() -> Self {
        Lpm { levels: Vec::new() }
    }
}

fn mask(len: u8) -> u32 {
    // A shift by 32 overflows, hence the checked form for /0.
    u32::MAX.checked_shl(32 - len as u32).unwrap_or(0)
}

impl<V: Copy> Lpm<V> {
    /// The value of the longest prefix that contains `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<V> {
        let a = u32::from(addr);
        self.levels.iter().find_map(|l| l.entries.get(&(a & l.mask)).copied())
    }

    /// Like [`Lpm::lookup`], with the prefix that matched.
    pub fn lookup_prefix(&self, addr: Ipv4Addr) -> Option<(Ipv4Net, V)> {
        let a = u32::from(addr);
        self.levels.iter().find_map(|l| {
            let net = a & l.mask;
            let v = l.entries.get(&net)?;
            Some((Ipv4Net::new(Ipv4Addr::from(net), l.len).ok()?, *v))
        })
    }

    /// Adds or replaces the route for `net` (host bits are ignored); returns the old value.
    pub fn insert(&mut self, net: Ipv4Net, v: V) -> Option<V> {
        let len = net.prefix_len();
        let at = match self.levels.binary_search_by(|l| len.cmp(&l.len)) {
            Ok(i) => i,
            Err(i) => {
                self.levels.insert(i, Level { len, mask: mask(len), entries: FxHashMap::default() });
                i
            }
        };
        let level = &mut self.levels[at];
        level.entries.insert(u32::from(net.network()) & level.mask, v)
    }

    /// Removes the route for exactly `net`; returns its value.
    pub fn remove(&mut self, net: Ipv4Net) -> Option<V> {
        let len = net.prefix_len();
        let at = self.levels.binary_search_by(|l| len.cmp(&l.len)).ok()?;
        let level = &mut self.levels[at];
        let old = level.entries.remove(&(u32::from(net.network()) & level.mask));
        if level.entries.is_empty() {
            // An empty level would still cost a probe on every lookup.
            self.levels.remove(at);
        }
        old
    }

    /// Removes the route for exactly `net` if it still leads to `v`: a route another peer has since
    /// taken over (a subnet whose lease moved to a new address) is that peer's to remove.
    pub fn remove_if(&mut self, net: Ipv4Net, v: &V) -> bool
    where
        V: PartialEq,
    {
        let len = net.prefix_len();
        let Ok(at) = self.levels.binary_search_by(|l| len.cmp(&l.len)) else { return false };
        let key = u32::from(net.network()) & self.levels[at].mask;
        if self.levels[at].entries.get(&key) != Some(v) {
            return false;
        }
        self.remove(net).is_some()
    }

    pub fn len(&self) -> usize {
        self.levels.iter().map(|l| l.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Every route, sorted by prefix, for display.
    pub fn entries(&self) -> Vec<(Ipv4Net, V)> {
        let mut v: Vec<(Ipv4Net, V)> = self
            .levels
            .iter()
            .flat_map(|l| l.entries.iter().filter_map(|(n, v)| Some((Ipv4Net::new(Ipv4Addr::from(*n), l.len).ok()?, *v))))
            .collect();
        v.sort_by_key(|(n, _)| *n);
        v
    }
}

/// An [`Lpm`] published as snapshots: lock-free reads, copy-on-write updates serialised by a mutex
/// that readers never touch (the same contract as [`super::SnapshotMap`]).
#[derive(Debug)]
pub struct RouteTable<V = Ipv4Addr> {
    current: ArcSwap<Lpm<V>>,
    writer: Mutex<()>,
}

impl<V> Default for RouteTable<V> {
    fn default() -> Self {
        RouteTable { current: ArcSwap::from_pointee(Lpm::default()), writer: Mutex::new(()) }
    }
}

impl<V: Copy> RouteTable<V> {
    /// The current snapshot; hold it for a batch.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Lpm<V>>> {
        self.current.load()
    }

    /// Applies `f` to a private copy and publishes the result in one step.
    pub fn update<R>(&self, f: impl FnOnce(&mut Lpm<V>) -> R) -> R {
        // Poisoning only means another writer panicked before publishing; the snapshot is whole.
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Lpm::clone(&self.current.load());
        let r = f(&mut next);
        self.current.store(Arc::new(next));
        r
    }

    pub fn insert(&self, net: Ipv4Net, v: V) -> Option<V> {
        self.update(|t| t.insert(net, v))
    }

    pub fn remove(&self, net: Ipv4Net) -> Option<V> {
        self.update(|t| t.remove(net))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_if_leaves_a_route_that_leads_elsewhere_now() {
        let mut t = Lpm::default();
        let net: Ipv4Net = "10.244.2.0/24".parse().unwrap();
        t.insert(net, 9u8);
        assert!(!t.remove_if(net, &2));
        assert!(!t.remove_if("10.244.2.0/25".parse().unwrap(), &9));
        assert_eq!(t.lookup("10.244.2.1".parse().unwrap()), Some(9));
        assert!(t.remove_if(net, &9));
        assert!(t.is_empty());
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = Lpm::default();
        t.insert(net("10.244.0.0/16"), 1);
        t.insert(net("10.244.2.0/24"), 2);
        t.insert(net("10.244.2.64/26"), 3);
        assert_eq!(t.lookup(ip("10.244.9.9")), Some(1));
        assert_eq!(t.lookup(ip("10.244.2.1")), Some(2));
        assert_eq!(t.lookup(ip("10.244.2.64")), Some(3));
        assert_eq!(t.lookup(ip("10.244.2.127")), Some(3));
        assert_eq!(t.lookup(ip("10.244.2.128")), Some(2));
        assert_eq!(t.lookup(ip("10.245.0.1")), None);
        assert_eq!(t.lookup_prefix(ip("10.244.2.70")), Some((net("10.244.2.64/26"), 3)));
    }

    #[test]
    fn host_route_and_default_route() {
        let mut t = Lpm::default();
        t.insert(net("0.0.0.0/0"), 0);
        t.insert(net("10.244.2.7/32"), 32);
        assert_eq!(t.lookup(ip("10.244.2.7")), Some(32));
        assert_eq!(t.lookup(ip("10.244.2.8")), Some(0));
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(0));
        assert_eq!(t.lookup(ip("0.0.0.0")), Some(0));
        assert_eq!(t.remove(net("0.0.0.0/0")), Some(0));
        assert_eq!(t.lookup(ip("10.244.2.8")), None);
    }

    #[test]
    fn insert_replaces_and_remove_cleans_levels() {
        let mut t = Lpm::default();
        assert_eq!(t.insert(net("10.244.2.0/24"), 1), None);
        assert_eq!(t.insert(net("10.244.2.0/24"), 2), Some(1));
        t.insert(net("10.244.3.0/26"), 3);
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(net("10.244.3.0/26")), Some(3));
        assert_eq!(t.remove(net("10.244.3.0/26")), None);
        assert_eq!(t.levels.len(), 1, "an emptied level is dropped");
        assert_eq!(t.entries(), vec![(net("10.244.2.0/24"), 2)]);
    }

    #[test]
    fn lookups_see_whole_snapshots_while_routes_change() {
        let table: Arc<RouteTable<u32>> = Arc::default();
        table.insert(net("10.244.0.0/16"), 16);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = {
            let (table, stop, reads) = (table.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let mut seen = [0u64; 2];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let t = table.load();
                    // Within one snapshot the /26 and the /24 come and go together.
                    let a = t.lookup(ip("10.244.2.65"));
                    let b = t.lookup(ip("10.244.2.1"));
                    match (a, b) {
                        (Some(26), Some(24)) => seen[1] += 1,
                        (Some(16), Some(16)) => seen[0] += 1,
                        other => panic!("torn snapshot: {other:?}"),
                    }
                }
                seen
            })
        };
        // On a loaded machine the reader may not run at all unless the writer waits for it.
        let wait_for_reads = |n: u64| {
            while reads.load(std::sync::atomic::Ordering::Relaxed) < n {
                std::thread::yield_now();
            }
        };
        wait_for_reads(1);
        for _ in 0..2000 {
            table.update(|t| {
                t.insert(net("10.244.2.0/24"), 24);
                t.insert(net("10.244.2.64/26"), 26);
            });
            table.update(|t| {
                t.remove(net("10.244.2.64/26"));
                t.remove(net("10.244.2.0/24"));
            });
        }
        let before = reads.load(std::sync::atomic::Ordering::Relaxed);
        wait_for_reads(before + 2);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = reader.join().unwrap();
        assert!(seen[0] + seen[1] > 0);
    }
}
