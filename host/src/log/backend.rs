//! The embedded log as a [`Backend`]: what a pipeline's tasks use.

use anyhow::Context;

use super::{Commit, Log, Stored, Topic, TopicConfig};
use crate::backend::{Backend, StateRead};

impl StateRead for Log {
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        self.db
            .get(key)
            .with_context(|| format!("cannot read state from {}", self.dir.display()))
    }

    fn get_many(&self, keys: &[&[u8]]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        // One batched read (RocksDB's MultiGet): the memtable and each
        // table file are searched once for all the keys.
        let Some(cf) = self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME) else {
            return keys.iter().map(|k| self.get(k)).collect();
        };
        self.db
            .batched_multi_get_cf(&cf, keys.iter().copied(), false)
            .into_iter()
            .map(|r| {
                r.map(|v| v.map(|v| v.to_vec()))
                    .with_context(|| format!("cannot read state from {}", self.dir.display()))
            })
            .collect()
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.range_raw(start, end, limit)
            .with_context(|| format!("cannot read state from {}", self.dir.display()))
    }
}

impl Backend for Log {
    fn describe(&self) -> String {
        format!("the data directory {}", self.dir.display())
    }

    fn topic(&self, name: &str) -> anyhow::Result<Option<Topic>> {
        Log::topic(self, name)
    }

    fn require_topic(&self, name: &str) -> anyhow::Result<Topic> {
        Log::require_topic(self, name)
    }

    fn create_topic(&self, name: &str, config: TopicConfig) -> anyhow::Result<Topic> {
        Log::create_topic(self, name, config)
    }

    fn read(
        &self,
        topic: &Topic,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<Vec<Stored>> {
        Log::read(self, topic, partition, from, max)
    }

    fn first_offset(&self, topic: &Topic, partition: u32) -> anyhow::Result<Option<u64>> {
        Log::first_offset(self, topic, partition)
    }

    fn end_offset(&self, topic: &Topic, partition: u32) -> anyhow::Result<u64> {
        Log::end_offset(self, topic, partition)
    }

    fn position(&self, group: &str, topic: &str, partition: u32) -> anyhow::Result<Option<u64>> {
        Log::position(self, group, topic, partition)
    }

    fn commit(&self, commit: Commit) -> anyhow::Result<()> {
        Log::commit(self, commit).map(|_| ())
    }

    fn data_version(&self) -> u64 {
        self.signal.version()
    }

    fn wait_for_data(&self, since: u64, timeout: std::time::Duration) -> u64 {
        self.signal.wait(since, timeout)
    }

    fn wake(&self) {
        self.signal.bump();
    }

    fn clean(&self, now_ms: i64) -> anyhow::Result<u64> {
        Log::clean(self, now_ms)
    }
}
