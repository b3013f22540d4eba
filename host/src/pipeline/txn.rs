//! A task's uncommitted state changes over the committed database: reads see
//! the task's own writes, and the whole set goes into the batch's commit.

use std::collections::BTreeMap;

use rocksdb::{DB, ReadOptions};

/// Pending writes over a database.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Txn {
    /// The value of `key`: pending if written in this batch, else committed.
    pub fn get(&self, db: &DB, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        self.get_in(Some(db), key)
    }

    /// As [`Txn::get`], over no database at all when `db` is `None` (state
    /// that lives only as long as a `weir test` run).
    pub fn get_in(&self, db: Option<&DB>, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        match db {
            Some(db) => Ok(db.get(key)?),
            None => Ok(None),
        }
    }

    /// Sets `key`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.pending.insert(key, Some(value));
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }

    /// Entries with `start <= key < end`, in key order, up to `limit`.
    pub fn range(
        &self,
        db: &DB,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.range_in(Some(db), start, end, limit)
    }

    /// As [`Txn::range`], over no database when `db` is `None`.
    pub fn range_in(
        &self,
        db: Option<&DB>,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        if let Some(db) = db {
            let mut opts = ReadOptions::default();
            opts.set_iterate_upper_bound(end.to_vec());
            let mut it = db.raw_iterator_opt(opts);
            it.seek(start);
            // Read enough committed entries to fill `limit` after deletions.
            let pending_in_range = self.pending.range(start.to_vec()..end.to_vec()).count();
            let want = limit.saturating_add(pending_in_range);
            let mut n = 0;
            while it.valid() && n < want {
                if let (Some(k), Some(v)) = (it.key(), it.value()) {
                    merged.insert(k.to_vec(), Some(v.to_vec()));
                }
                n += 1;
                it.next();
            }
            it.status()?;
        }
        for (k, v) in self.pending.range(start.to_vec()..end.to_vec()) {
            merged.insert(k.clone(), v.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(limit)
            .collect())
    }

    /// Takes the pending writes, leaving it empty.
    pub fn take(&mut self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        std::mem::take(&mut self.pending)
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Drops the pending writes.
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}
