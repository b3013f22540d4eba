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

/// What one pending write costs besides its key and value (the map's node
/// and the two vectors' headers), for [`Txn::bytes`].
pub const ENTRY_OVERHEAD: usize = 64;

fn entry_bytes(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD
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
        self.bytes += entry_bytes(&key, value.as_deref());
        let klen = key.len();
        if let Some(old) = self.pending.insert(key, value) {
            self.bytes -= klen + old.map_or(0, |v| v.len()) + ENTRY_OVERHEAD;
        }
    }

    /// About how much memory the pending writes hold, in bytes: keys,
    /// values and a fixed overhead per entry.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries with `start <= key < end`, in key order, up to `limit`.
    pub fn range(
        &self,
        base: &dyn StateRead,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let pending = self.pending.range(start.to_vec()..end.to_vec());
        // Read enough committed entries to fill `limit` after deletions.
        let want = limit.saturating_add(pending.clone().count());
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = base
            .range(start, end, want)?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for (k, v) in pending {
            merged.insert(k.clone(), v.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(limit)
            .collect())
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
