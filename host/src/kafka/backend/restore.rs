//! State on Kafka: a task's changelogs replayed into the local copy, from
//! its checkpoints, before the task runs.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::txn::changelog_topic;
use super::{KafkaBackend, lock};
use crate::backend::{Backend, Commit, StateRead, TaskSpec, TopicConfig};
use crate::kafka::client_error;

/// The local key of a changelog partition's checkpoint (the next offset to
/// replay from).
pub(super) fn checkpoint_key(topic: &str, partition: u32) -> Vec<u8> {
    let mut k = b"C".to_vec();
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

impl KafkaBackend {
    /// Replays partition `partition` of changelog `topic` into the local
    /// state, from its checkpoint to its end.
    pub(super) fn restore(&self, topic: &str, partition: u32) -> anyhow::Result<u64> {
        let ckey = checkpoint_key(topic, partition);
        let from = match self.local.get(&ckey)? {
            Some(b) if b.len() == 8 => u64::from_be_bytes(b.as_slice().try_into()?),
            Some(b) => anyhow::bail!(
                "the local checkpoint of {topic} partition {partition} is corrupt ({} bytes)",
                b.len()
            ),
            None => 0,
        };
        let (low, high) = self.watermarks(topic, partition)?;
        if high <= from as i64 || high <= low {
            return Ok(0);
        }
        let start = (from as i64).max(low);
        let consumer = self.conn.consumer(true)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(start))
            .map_err(client_error(format!("cannot restore from {topic}")))?;
        consumer
            .assign(&tpl)
            .map_err(client_error(format!("cannot restore from {topic}")))?;
        let mut restored = 0u64;
        let mut puts = Vec::new();
        let mut next = start as u64;
        let mut quiet = std::time::Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    quiet = std::time::Instant::now();
                    if let Some(k) = m.key() {
                        puts.push((k.to_vec(), m.payload().map(<[u8]>::to_vec)));
                    }
                    next = m.offset() as u64 + 1;
                    restored += 1;
                    if puts.len() >= 10_000 {
                        self.apply(std::mem::take(&mut puts), &ckey, next)?;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => tracing::debug!(target: "weir::kafka", "restoring {topic}: {e}"),
                None => {}
            }
            if quiet.elapsed() > Duration::from_secs(30) {
                anyhow::bail!(
                    "restoring partition {partition} of {topic} from Kafka at {} stalled at offset {next}",
                    self.conn.brokers
                );
            }
        }
        // Past transaction markers: where the consumer stands at the end.
        if let Ok(pos) = consumer.position()
            && let Some(e) = pos.find_partition(topic, partition as i32)
            && let Offset::Offset(o) = e.offset()
        {
            next = next.max(o as u64);
        }
        self.apply(puts, &ckey, next)?;
        Ok(restored)
    }

    pub(super) fn apply(
        &self,
        puts: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        ckey: &[u8],
        next: u64,
    ) -> anyhow::Result<()> {
        let mut c = Commit {
            puts,
            ..Commit::default()
        };
        c.put(ckey.to_vec(), Some(next.to_be_bytes().to_vec()));
        self.local.commit(c).map(|_| ())
    }

    /// Fences the task's earlier owner and restores its state.
    pub(super) fn open_task_once(&self, spec: &TaskSpec) -> anyhow::Result<()> {
        let producer = self.make_producer(spec.id)?;
        lock(&self.producers).insert(spec.id, Arc::new(producer));
        for name in &spec.changelogs {
            let topic = changelog_topic(&self.app, name);
            if self.topic(&topic)?.is_none() {
                let mut config = TopicConfig::partitions(spec.partitions);
                config.compacted = true;
                self.create_topic(&topic, config)?;
            }
            let n = self.restore(&topic, spec.id.partition)?;
            if n > 0 {
                tracing::info!(
                    "task {}: restored {n} record{} of {topic} partition {}",
                    spec.id,
                    if n == 1 { "" } else { "s" },
                    spec.id.partition
                );
            }
        }
        Ok(())
    }
}
