//! A task's cache of committed state, bounded by bytes.
//!
//! The operators read state through [`crate::backend::Txn`] (the changes
//! since the last commit, written back at commit) over a [`StateRead`] of
//! committed state; for a task, that `StateRead` is this cache in front of
//! the backend. A key read once stays in memory (unless it has no value)
//! and a commit writes its changes into the entries the cache holds
//! as well as into the backend, so a key updated again in a later commit
//! interval is not read from the backend again.
//!
//! A key the backend has to be read for is kept the second time it is read
//! (a doorkeeper: a key space much larger than the cache does not churn
//! it). It keeps two generations of entries, each up to a quarter of the bound:
//! new and re-used entries go into the young one; when that is full, the
//! old one is dropped and the young one becomes the old one. That is an
//! approximate least-recently-used eviction at O(1) per read, and the
//! committed entries it holds stay under half the bound; the task commits
//! early when its uncommitted changes pass the other half. Range reads go to
//! the backend (which every commit has reached first).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::StateRead;
use crate::backend::txn::heap_bytes;

/// What a cached entry costs besides its heap block: its slot in the set
/// (a pointer and a length) and the room a set keeps free. Measured under
/// jemalloc for 30,000 to 1,000,000 entries: 26 to 43 bytes.
const CACHED_ENTRY_OVERHEAD: usize = 40;

/// One cached key and its value in one heap block: the key's length (4
/// bytes, little-endian), the key, then 0 (no value) or 1 and the value.
/// Five eighths of the memory of a map of two vectors per entry (a word
/// count's state entry: 120 bytes against 192), so that a bound holds more
/// keys.
struct Entry(Box<[u8]>);

impl Entry {
    /// `None` for a key too long to say in 4 bytes (it is not cached).
    fn new(key: &[u8], value: Option<&[u8]>) -> Option<Entry> {
        let len = u32::try_from(key.len()).ok()?;
        let mut b = Vec::with_capacity(5 + key.len() + value.map_or(0, <[u8]>::len));
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(key);
        match value {
            Some(v) => {
                b.push(1);
                b.extend_from_slice(v);
            }
            None => b.push(0),
        }
        Some(Entry(b.into_boxed_slice()))
    }

    fn key(&self) -> &[u8] {
        let len = self
            .0
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_le_bytes) as usize;
        self.0.get(4..4 + len).unwrap_or_default()
    }

    fn value(&self) -> Option<&[u8]> {
        let at = 4 + self.key().len();
        match self.0.get(at) {
            Some(1) => self.0.get(at + 1..),
            _ => None,
        }
    }

    /// The memory it takes in a set.
    fn bytes(&self) -> usize {
        heap_bytes(self.0.len()) + CACHED_ENTRY_OVERHEAD
    }
}

impl Hash for Entry {
    /// As its key hashes, so that the set is searched by key.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

type Map = rustc_hash::FxHashSet<Entry>;

#[derive(Default)]
struct Generations {
    young: Map,
    young_bytes: usize,
    old: Map,
    old_bytes: usize,
    /// Hashes of keys read from the backend once and not kept (see
    /// [`StateCache::get`]).
    seen: rustc_hash::FxHashSet<u64>,
}

impl Generations {
    fn insert(&mut self, limit: usize, key: &[u8], value: Option<&[u8]>) {
        if !self.old.is_empty()
            && let Some(e) = self.old.take(key)
        {
            self.old_bytes -= e.bytes();
        }
        let Some(entry) = Entry::new(key, value) else {
            return;
        };
        let add = entry.bytes();
        // A new key that would overfill the young generation starts the
        // next one (the young one becomes the old one).
        if self.young_bytes + add > limit && !self.young.contains(key) {
            self.old = std::mem::take(&mut self.young);
            self.old_bytes = std::mem::take(&mut self.young_bytes);
        }
        if let Some(e) = self.young.replace(entry) {
            self.young_bytes -= e.bytes();
        }
        self.young_bytes += add;
    }
}

/// Committed state through a bounded in-memory cache.
pub(crate) struct StateCache {
    backend: Arc<dyn StateRead>,
    /// Bytes per generation; 0: no cache.
    limit: usize,
    gens: Mutex<Generations>,
    /// Its size as last measured (for status).
    bytes: AtomicUsize,
}

impl StateCache {
    /// A cache of at most `max_bytes / 2` of committed entries in front of
    /// `backend` (none for 0).
    pub fn new(backend: Arc<dyn StateRead>, max_bytes: u64) -> Self {
        StateCache {
            backend,
            limit: usize::try_from(max_bytes / 4).unwrap_or(usize::MAX),
            gens: Mutex::new(Generations::default()),
            bytes: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        match self.gens.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Whether it caches anything.
    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Takes in what a commit wrote (after the backend has it): the keys
    /// it holds get their new values; others stay out until read.
    pub fn committed<'a>(&self, puts: impl Iterator<Item = (&'a [u8], &'a Option<Vec<u8>>)>) {
        if !self.enabled() {
            return;
        }
        let mut g = self.lock();
        let g = &mut *g;
        for (k, v) in puts {
            for (map, bytes) in [
                (&mut g.young, &mut g.young_bytes),
                (&mut g.old, &mut g.old_bytes),
            ] {
                if let Some(old) = map.take(k) {
                    *bytes -= old.bytes();
                    if let Some(e) = Entry::new(k, v.as_deref()) {
                        *bytes += e.bytes();
                        map.insert(e);
                    }
                    break;
                }
            }
        }
        self.bytes
            .store(g.young_bytes + g.old_bytes, Ordering::Relaxed);
    }

    /// Forgets everything (a batch failed: the task starts again from what
    /// the backend holds).
    pub fn clear(&self) {
        let mut g = self.lock();
        *g = Generations::default();
        self.bytes.store(0, Ordering::Relaxed);
    }

    /// The memory its entries hold, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Generations {
    /// The cached value of `key` (moved into the young generation if it
    /// was in the old one); `None`: not cached.
    fn lookup(&mut self, limit: usize, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if let Some(e) = self.young.get(key) {
            return Some(e.value().map(<[u8]>::to_vec));
        }
        if self.old.is_empty() {
            return None;
        }
        let e = self.old.take(key)?;
        self.old_bytes -= e.bytes();
        let v = e.value().map(<[u8]>::to_vec);
        self.insert(limit, key, v.as_deref());
        Some(v)
    }

    /// Takes in a value read from the backend. A key with no value is not
    /// kept: with a large key space most reads are of keys never written,
    /// which the commit that writes them would only have to update. A key
    /// read from the backend is kept the second time only, so that keys
    /// read once in a long while (a key space much larger than the cache)
    /// do not push out the ones read often.
    fn admit(&mut self, limit: usize, key: &[u8], value: &Option<Vec<u8>>) {
        if value.is_none() {
            return;
        }
        let h = std::hash::BuildHasher::hash_one(&rustc_hash::FxBuildHasher, key);
        if self.seen.insert(h) {
            if self.seen.len() > limit / 64 {
                self.seen.clear();
            }
            return;
        }
        self.seen.remove(&h);
        self.insert(limit, key, value.as_deref());
    }
}

impl StateRead for StateCache {
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        if !self.enabled() {
            return self.backend.get(key);
        }
        let mut g = self.lock();
        if let Some(v) = g.lookup(self.limit, key) {
            self.bytes
                .store(g.young_bytes + g.old_bytes, Ordering::Relaxed);
            return Ok(v);
        }
        let v = self.backend.get(key)?;
        g.admit(self.limit, key, &v);
        self.bytes
            .store(g.young_bytes + g.old_bytes, Ordering::Relaxed);
        Ok(v)
    }

    fn get_many(&self, keys: &[&[u8]]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        if !self.enabled() {
            return self.backend.get_many(keys);
        }
        let mut out = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        let mut g = self.lock();
        for k in keys {
            match g.lookup(self.limit, k) {
                Some(v) => out.push(v),
                None => {
                    missing.push((out.len(), *k));
                    out.push(None);
                }
            }
        }
        if !missing.is_empty() {
            // The backend is read without the lock (only status reads the
            // cache from another thread).
            drop(g);
            let read: Vec<&[u8]> = missing.iter().map(|(_, k)| *k).collect();
            let values = self.backend.get_many(&read)?;
            g = self.lock();
            for ((i, k), v) in missing.into_iter().zip(values) {
                g.admit(self.limit, k, &v);
                if let Some(slot) = out.get_mut(i) {
                    *slot = v;
                }
            }
        }
        self.bytes
            .store(g.young_bytes + g.old_bytes, Ordering::Relaxed);
        Ok(out)
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.backend.range(start, end, limit)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::{Backend, Commit};

    #[test]
    fn reads_go_to_the_backend_once_and_the_size_stays_under_half_the_bound() {
        let backend = MemoryBackend::new();
        let mut c = Commit::default();
        for i in 0..1000u32 {
            c.put(format!("k{i:04}").into_bytes(), Some(vec![b'v'; 36]));
        }
        backend.commit(c).unwrap();
        // 1,000 entries of 48 + 40 bytes (the heap block of the 5-byte key
        // and 36-byte value with their 5 bytes of framing, and the set's); a
        // bound of 40,000 keeps at most 20,000 bytes of them.
        let cache = StateCache::new(Arc::new(backend.clone()), 40_000);
        // A key read once is not kept; read again, it is.
        assert_eq!(cache.get(b"k0000").unwrap(), Some(vec![b'v'; 36]));
        assert_eq!(cache.bytes(), 0);
        assert_eq!(cache.get(b"k0000").unwrap(), Some(vec![b'v'; 36]));
        assert_eq!(cache.bytes(), 88);
        for i in 0..1000u32 {
            for _ in 0..2 {
                let v = cache.get(format!("k{i:04}").as_bytes()).unwrap();
                assert_eq!(v, Some(vec![b'v'; 36]));
            }
            assert!(cache.bytes() <= 20_000, "{} bytes", cache.bytes());
        }
        assert!(cache.bytes() > 10_000, "{} bytes", cache.bytes());
        // A key still cached is answered from memory: delete it behind the
        // cache's back and it is still seen.
        let mut c = Commit::default();
        c.put(b"k0999".to_vec(), None);
        backend.commit(c).unwrap();
        assert_eq!(
            cache.get(b"k0999").unwrap(),
            Some(vec![b'v'; 36]),
            "answered from the cache"
        );
        // What a commit wrote replaces the cached value.
        cache.committed([(&b"k0999"[..], &None)].into_iter());
        assert_eq!(cache.get(b"k0999").unwrap(), None);
        // An evicted key is read from the backend again.
        assert_eq!(cache.get(b"k0000").unwrap(), Some(vec![b'v'; 36]));
        cache.clear();
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn reads_together_answer_as_reads_one_by_one_and_fill_the_cache_alike() {
        let backend = MemoryBackend::new();
        let mut c = Commit::default();
        c.put(b"a".to_vec(), Some(b"1".to_vec()));
        c.put(b"b".to_vec(), Some(b"2".to_vec()));
        backend.commit(c).unwrap();
        let cache = StateCache::new(Arc::new(backend.clone()), 40_000);
        let keys: [&[u8]; 4] = [b"a", b"x", b"b", b"a"];
        let want = vec![
            Some(b"1".to_vec()),
            None,
            Some(b"2".to_vec()),
            Some(b"1".to_vec()),
        ];
        // The first read of "a" is let through, its second (in the same
        // call) keeps it; "b" is kept on its next read.
        assert_eq!(cache.get_many(&keys).unwrap(), want);
        // One entry: an 8-byte heap block (7 bytes) and the set's 40.
        assert_eq!(cache.bytes(), 8 + 40);
        assert_eq!(cache.get_many(&keys).unwrap(), want);
        assert_eq!(cache.bytes(), 2 * (8 + 40));
        // Pending writes in a transaction come before the cache.
        let mut txn = crate::backend::txn::Txn::default();
        txn.put(b"b".to_vec(), b"3".to_vec());
        txn.delete(b"a".to_vec());
        assert_eq!(
            txn.get_many(&cache, &keys).unwrap(),
            vec![None, None, Some(b"3".to_vec()), None]
        );
    }

    #[test]
    fn an_entry_gives_back_its_key_and_value() {
        let cases: [(&[u8], Option<&[u8]>); 4] = [
            (b"k", Some(b"v1")),
            (b"k", Some(b"")),
            (b"k", None),
            (b"", Some(b"v")),
        ];
        for (k, v) in cases {
            let e = Entry::new(k, v).unwrap();
            assert_eq!((e.key(), e.value()), (k, v));
        }
        // 4 + 1 + 1 + 2 bytes: an 8-byte block, and the set's 40.
        assert_eq!(Entry::new(b"k", Some(b"v1")).unwrap().bytes(), 48);
    }

    #[test]
    fn a_bound_of_zero_caches_nothing() {
        let backend = MemoryBackend::new();
        let cache = StateCache::new(Arc::new(backend.clone()), 0);
        assert_eq!(cache.get(b"a").unwrap(), None);
        let mut c = Commit::default();
        c.put(b"a".to_vec(), Some(b"1".to_vec()));
        backend.commit(c).unwrap();
        assert_eq!(cache.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(cache.bytes(), 0);
    }
}
