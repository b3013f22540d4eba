//! A task's uncommitted state changes over the committed state: reads see
//! the task's own writes, and the whole set goes into the batch's commit.

use std::collections::BTreeMap;

use super::StateRead;

/// Pending writes over committed state.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What the pending writes hold, in bytes (see [`Txn::bytes`]).
    bytes: usize,
}

/// What one entry of a map of byte vectors costs besides the heap blocks
/// of its key and value: its slot (the two vectors' headers) and the room a
/// map keeps free. Measured for a million entries under the `weir` binary's
/// allocator (jemalloc): 107 bytes in a `BTreeMap`, 103 to 117 in a hash
/// map (which doubles when it grows).
pub const ENTRY_OVERHEAD: usize = 112;

/// What the allocator takes for a vector of `len` bytes: jemalloc's size
/// class for it (the `weir` binary's allocator): 8, then multiples of 16
/// up to 128, then four classes per doubling (160, 192, 224, 256, 320, ...).
pub fn heap_bytes(len: usize) -> usize {
    match len {
        0 => 0,
        1..=8 => 8,
        9..=128 => len.div_ceil(16) * 16,
        _ => {
            let step = 1usize << ((len - 1).ilog2() - 2);
            len.div_ceil(step) * step
        }
    }
}

/// The memory an entry of `key` and `value` holds in a map: its key's and
/// value's heap blocks and [`ENTRY_OVERHEAD`] (within a few percent of what
/// the process's memory grows by, for a million entries).
pub fn entry_bytes(key: &[u8], value: Option<&[u8]>) -> usize {
    heap_bytes(key.len()) + value.map_or(0, |v| heap_bytes(v.len())) + ENTRY_OVERHEAD
}

impl Txn {
    /// The value of `key`: pending if written since the last commit, else
    /// committed in `base`.
    pub fn get(&self, base: &dyn StateRead, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        base.get(key)
    }

    /// The values of `keys`, in their order: pending if written since the
    /// last commit, else committed in `base` (read together).
    pub fn get_many(
        &self,
        base: &dyn StateRead,
        keys: &[&[u8]],
    ) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        let mut at = Vec::new();
        for k in keys {
            match self.pending.get(*k) {
                Some(v) => out.push(v.clone()),
                None => {
                    at.push(out.len());
                    missing.push(*k);
                    out.push(None);
                }
            }
        }
        if !missing.is_empty() {
            for (i, v) in at.into_iter().zip(base.get_many(&missing)?) {
                if let Some(slot) = out.get_mut(i) {
                    *slot = v;
                }
            }
        }
        Ok(out)
    }

    /// The pending value of `key`: `Some(None)` if deleted, `None` if not
    /// written since the last commit.
    pub fn pending(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.pending.get(key).map(Option::as_deref)
    }

    /// Sets `key`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.set(key, Some(value));
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.set(key, None);
    }

    fn set(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let add = entry_bytes(&key, value.as_deref());
        let key_heap = heap_bytes(key.len());
        if let Some(old) = self.pending.insert(key, value) {
            self.bytes -= key_heap + old.map_or(0, |v| heap_bytes(v.len())) + ENTRY_OVERHEAD;
        }
        self.bytes += add;
    }

    /// About how much memory the pending writes hold, in bytes (see
    /// [`entry_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries with `start <= key < end`, in key order, up to `limit`:
    /// the pending writes merged over committed entries read a page at a
    /// time, so that a small `limit` costs little however many writes are
    /// pending in the range.
    pub fn range(
        &self,
        base: &dyn StateRead,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        use std::ops::Bound;
        let mut out = Vec::new();
        if start >= end || limit == 0 {
            return Ok(out);
        }
        let mut pending = self
            .pending
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .peekable();
        let page_size = limit.saturating_add(16).min(1024);
        let mut page = std::collections::VecDeque::new();
        let mut from = start.to_vec();
        let mut base_done = false;
        while out.len() < limit {
            if page.is_empty() && !base_done {
                let got = base.range(&from, end, page_size)?;
                base_done = got.len() < page_size;
                if let Some((k, _)) = got.last() {
                    from.clone_from(k);
                    from.push(0);
                }
                page.extend(got);
            }
            let pending_first = match (page.front(), pending.peek()) {
                (None, None) => break,
                (Some((bk, _)), Some((pk, _))) => pk.as_slice() <= bk.as_slice(),
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            if pending_first {
                let Some((pk, pv)) = pending.next() else {
                    break;
                };
                // A pending write replaces the committed entry of its key.
                if page.front().is_some_and(|(bk, _)| bk == pk) {
                    page.pop_front();
                }
                if let Some(v) = pv {
                    out.push((pk.clone(), v.clone()));
                }
            } else if let Some(entry) = page.pop_front() {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Moves every pending write of `other` over this one's.
    pub fn absorb(&mut self, other: Txn) {
        if self.pending.is_empty() {
            self.pending = other.pending;
            self.bytes = other.bytes;
        } else {
            for (k, v) in other.pending {
                self.set(k, v);
            }
        }
    }

    /// Takes the pending writes, leaving it empty.
    pub fn take(&mut self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.bytes = 0;
        std::mem::take(&mut self.pending)
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Drops the pending writes.
    pub fn clear(&mut self) {
        self.pending.clear();
        self.bytes = 0;
    }
}

/// Committed state that holds nothing (state that lives only as long as a
/// run in memory).
pub struct NoState;

impl StateRead for NoState {
    fn get(&self, _: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn range(&self, _: &[u8], _: &[u8], _: usize) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::{Backend, Commit};

    #[test]
    fn heap_bytes_are_jemallocs_size_classes() {
        let classes: Vec<usize> = [0, 1, 8, 9, 30, 128, 129, 160, 161, 256, 257, 4097]
            .into_iter()
            .map(heap_bytes)
            .collect();
        assert_eq!(
            classes,
            vec![0, 8, 8, 16, 32, 128, 160, 160, 192, 256, 320, 5120]
        );
    }

    /// Pending puts and deletions merge over committed entries in key
    /// order, across pages of committed entries, at every limit.
    #[test]
    fn a_range_merges_pending_writes_over_committed_entries_at_every_limit() {
        let backend = MemoryBackend::new();
        let mut c = Commit::default();
        // Committed: k0000..k2999, every third one.
        for i in (0..3000u32).step_by(3) {
            c.put(format!("k{i:04}").into_bytes(), Some(b"old".to_vec()));
        }
        backend.commit(c).unwrap();
        let mut txn = Txn::default();
        let mut want = std::collections::BTreeMap::new();
        for i in (0..3000u32).step_by(3) {
            want.insert(format!("k{i:04}"), "old".to_string());
        }
        for i in 0..3000u32 {
            let k = format!("k{i:04}");
            match i % 5 {
                // Deletes, of committed keys or not.
                0 => {
                    txn.delete(k.clone().into_bytes());
                    want.remove(&k);
                }
                // Puts over committed keys or new ones.
                1 | 2 => {
                    txn.put(k.clone().into_bytes(), b"new".to_vec());
                    want.insert(k, "new".to_string());
                }
                _ => {}
            }
        }
        let want: Vec<(String, String)> = want
            .into_iter()
            .filter(|(k, _)| k.as_str() >= "k0100" && k.as_str() < "k2900")
            .collect();
        for limit in [1, 2, 17, 1000, 1040, usize::MAX] {
            let got: Vec<(String, String)> = txn
                .range(&backend, b"k0100", b"k2900", limit)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
                .collect();
            let n = limit.min(want.len());
            assert_eq!(got, want[..n], "limit {limit}");
        }
        assert!(txn.range(&backend, b"k2", b"k1", 10).unwrap().is_empty());
    }
}
