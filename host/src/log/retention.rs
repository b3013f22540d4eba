//! Retention and compaction of the embedded log's topics (`weir topic
//! clean`, and a running pipeline's cleaner): records past a topic's
//! `retention_ms` or `retention_bytes` are deleted, and in a compacted topic
//! every record a newer one of its key replaces.

use std::collections::HashMap;

use rocksdb::WriteBatch;

use super::{Log, Topic, end_marker, record_key};

impl Log {
    /// Applies retention and compaction to every topic: deletes records older
    /// than `retention_ms` (relative to `now_ms`), the oldest records of a
    /// partition past `retention_bytes`, and in compacted topics every record
    /// that a newer one with the same key replaces. Returns how many records
    /// it deleted.
    pub fn clean(&self, now_ms: i64) -> anyhow::Result<u64> {
        let mut deleted = 0;
        for topic in self.topics()? {
            let c = &topic.config;
            if c.retention_ms.is_none() && c.retention_bytes.is_none() && !c.compacted {
                continue;
            }
            for p in 0..c.partitions {
                deleted += self.clean_partition(&topic, p, now_ms)?;
            }
        }
        Ok(deleted)
    }

    fn clean_partition(&self, topic: &Topic, partition: u32, now_ms: i64) -> anyhow::Result<u64> {
        let c = &topic.config;
        let records = self.read(topic, partition, 0, usize::MAX)?;
        let total: u64 = records.iter().map(|r| r.bytes.len() as u64).sum();
        let mut doomed = vec![false; records.len()];
        if let Some(ms) = c.retention_ms {
            for (i, r) in records.iter().enumerate() {
                if r.timestamp() < now_ms - ms {
                    doomed[i] = true;
                }
            }
        }
        if let Some(limit) = c.retention_bytes {
            let mut size = total;
            for (i, r) in records.iter().enumerate() {
                if size <= limit {
                    break;
                }
                size -= r.bytes.len() as u64;
                doomed[i] = true;
            }
        }
        if c.compacted {
            let mut newest: HashMap<Vec<u8>, usize> = HashMap::new();
            for (i, r) in records.iter().enumerate() {
                let key = r.record()?.key.unwrap_or_default();
                if let Some(old) = newest.insert(key, i) {
                    doomed[old] = true;
                }
            }
        }
        let n = doomed.iter().filter(|d| **d).count() as u64;
        if n == 0 {
            return Ok(0);
        }
        let heads = self.lock_heads();
        let mut batch = WriteBatch::default();
        let family = self.rcf()?;
        for (r, d) in records.iter().zip(&doomed) {
            if *d {
                batch.delete_cf(&family, record_key(topic.id, partition, r.offset));
            }
        }
        if let Some(last) = records.last() {
            batch.put(
                end_marker(topic.id, partition),
                (last.offset + 1).to_be_bytes(),
            );
        }
        self.db.write(batch)?;
        drop(heads);
        Ok(n)
    }
}
