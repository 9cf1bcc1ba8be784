//! A read-mostly hash map published as immutable snapshots.
use arc_swap::{ArcSwap, Guard};
use rustc_hash::FxHashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Lock-free reads, copy-on-write updates.
///
/// Writers are serialised by a mutex that readers never touch, so two control-plane updates cannot
/// lose each other's changes. An update copies the map: O(n) per write, which is what makes the read
/// path a single atomic load. Bulk changes go through [`SnapshotMap::update`] to copy once.
#[derive(Debug)]
pub struct SnapshotMap<K, V> {
    current: ArcSwap<FxHashMap<K, V>>,
    writer: Mutex<()>,
}

impl<K, V> Default for SnapshotMap<K, V> {
    fn default() -> Self {
        SnapshotMap { current: ArcSwap::from_pointee(FxHashMap::default()), writer: Mutex::new(()) }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SnapshotMap<K, V> {
    /// The current snapshot; hold it for a batch, not forever (it pins the old map in memory).
    #[inline]
    pub fn load(&self) -> Guard<Arc<FxHashMap<K, V>>> {
        self.current.load()
    }

    /// Applies `f` to a private copy and publishes the result in one step.
    pub fn update<R>(&self, f: impl FnOnce(&mut FxHashMap<K, V>) -> R) -> R {
        // A poisoned writer lock only means another writer panicked mid-copy; the published
        // snapshot is still whole, so carry on from it.
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = FxHashMap::clone(&self.current.load());
        let r = f(&mut next);
        self.current.store(Arc::new(next));
        r
    }

    pub fn insert(&self, k: K, v: V) -> Option<V> {
        self.update(|m| m.insert(k, v))
    }

    pub fn remove(&self, k: &K) -> Option<V> {
        self.update(|m| m.remove(k))
    }

    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A sorted copy of every entry, for display.
    pub fn entries(&self) -> Vec<(K, V)>
    where
        K: Ord,
    {
        let mut v: Vec<(K, V)> = self.current.load().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_keeps_its_snapshot_while_writer_publishes() {
        let m: SnapshotMap<u32, u32> = SnapshotMap::default();
        m.insert(1, 10);
        let before = m.load();
        m.insert(2, 20);
        m.remove(&1);
        assert_eq!(before.get(&1), Some(&10));
        assert_eq!(before.get(&2), None);
        let after = m.load();
        assert_eq!(after.get(&1), None);
        assert_eq!(after.get(&2), Some(&20));
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let m: Arc<SnapshotMap<u32, u32>> = Arc::new(SnapshotMap::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        m.insert(t * 1000 + i, i);
                    }
                })
            })
            .collect();
        let reader = {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..10_000 {
                    let n = m.load().len();
                    assert!(n >= last, "a snapshot went backwards");
                    last = n;
                }
            })
        };
        for t in threads {
            t.join().unwrap();
        }
        reader.join().unwrap();
        assert_eq!(m.len(), 800);
    }
}
