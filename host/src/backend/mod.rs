//! The log-backend seam: everything a task needs from where its records and
//! state live, and nothing else.
//!
//! A task reads batches of packed records from its source partitions
//! ([`Backend::read`]), reads committed state ([`StateRead`]), and commits a
//! batch atomically ([`Backend::commit`]: outputs, state changes, timers,
//! stream time and input positions together). Which partitions a process
//! runs comes from an [`Assignor`]: the embedded log assigns every partition
//! once; Kafka's consumer group changes the assignment on a rebalance, so
//! the engine creates and drops tasks while it runs.
//!
//! Implementations: the embedded log ([`crate::log::Log`], RocksDB; the only
//! module that touches RocksDB) and [`memory::MemoryBackend`] (unit tests and
//! in-memory runs). A storage error is an `Err` that fails the batch: it is
//! never handed to a guest as something it could turn into a dead letter.

pub mod memory;
pub mod txn;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::record::Record;

pub use self::txn::Txn;

/// A topic's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Number of partitions.
    pub partitions: u32,
    /// Keep only the newest record per key (a table's changelog).
    #[serde(default)]
    pub compacted: bool,
    /// Delete records older than this many milliseconds (by timestamp).
    #[serde(default)]
    pub retention_ms: Option<i64>,
    /// Delete the oldest records of a partition past this many bytes.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
}

impl TopicConfig {
    /// A plain topic with `partitions` partitions.
    pub fn partitions(partitions: u32) -> Self {
        TopicConfig {
            partitions,
            compacted: false,
            retention_ms: None,
            retention_bytes: None,
        }
    }
}

/// A topic: its name, id and settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Its name.
    pub name: String,
    /// Its id inside the backend.
    pub id: u32,
    /// Its settings.
    #[serde(flatten)]
    pub config: TopicConfig,
}

/// A record read from a backend, still in the packed layout of
/// `wit/functions.wit` (which the embedded log stores as it is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Its offset.
    pub offset: u64,
    /// The packed record (which also holds the offset).
    pub bytes: Vec<u8>,
}

impl Stored {
    /// The record, decoded.
    pub fn record(&self) -> anyhow::Result<Record> {
        use anyhow::Context;
        codec::Reader::new(&self.bytes)
            .record()
            .with_context(|| format!("record at offset {} is corrupt", self.offset))
    }

    /// Its timestamp, read without decoding the rest.
    pub fn timestamp(&self) -> i64 {
        let mut a = [0u8; 8];
        if let Some(b) = self.bytes.get(8..16) {
            a.copy_from_slice(b);
        }
        i64::from_le_bytes(a)
    }
}

/// Where a consumer (a pipeline) is in one source partition: the next offset
/// it will read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The consumer: the pipeline's application id.
    pub group: String,
    /// The source topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset to read.
    pub next: u64,
}

/// One task of a pipeline: a segment (a run of steps sharing a source) and
/// a partition. Kafka names transactional ids after it (`APP-0_1`), as
/// Kafka Streams names its tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// The segment's index in the pipeline.
    pub segment: u32,
    /// The partition.
    pub partition: u32,
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.segment, self.partition)
    }
}

/// What a backend needs to know of a task before it runs it.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// Which task.
    pub id: TaskId,
    /// The changelogs its state goes to (as [`crate::pipeline::keys::changelog`]
    /// names them, without the application id).
    pub changelogs: Vec<String>,
    /// Partitions of the pipeline's input (and of every changelog).
    pub partitions: u32,
}

/// The task's commit was refused because another process now runs the task
/// (Kafka fenced its transactional id): the task must stop without retrying;
/// its uncommitted batch is the new owner's to process.
#[derive(Debug, thiserror::Error)]
#[error("task {task} now runs in another process: {reason}")]
pub struct Fenced {
    /// The task.
    pub task: TaskId,
    /// What the backend said.
    pub reason: String,
}

/// Everything one commit writes, atomically: appended records, state
/// changes (timers and stream time are state keys too) and input positions.
#[derive(Default, Debug)]
pub struct Commit {
    /// The task that commits (`None`: a tool, not a task).
    pub task: Option<TaskId>,
    /// (topic id, partition, packed record); offsets are assigned at commit.
    pub appends: Vec<(u32, u32, Vec<u8>)>,
    /// State keys set (`Some`) or deleted (`None`).
    pub puts: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Input positions.
    pub positions: Vec<Position>,
    /// Records of internal topics that the commit's positions leave behind,
    /// deleted with it: (topic id, partition, offsets). Backends that keep
    /// records in memory ignore it.
    pub purges: Vec<(u32, u32, std::ops::Range<u64>)>,
}

impl Commit {
    /// Appends a record to a topic partition (its offset is assigned at commit).
    pub fn append(&mut self, topic: &Topic, partition: u32, record: &Record) {
        let mut buf = Vec::with_capacity(64);
        codec::encode_record(&mut buf, record);
        self.appends.push((topic.id, partition, buf));
    }

    /// Appends a record already in the packed layout.
    pub fn append_packed(&mut self, topic: &Topic, partition: u32, packed: Vec<u8>) {
        self.appends.push((topic.id, partition, packed));
    }

    /// Sets (`Some`) or deletes (`None`) a state key.
    pub fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.puts.push((key, value));
    }

    /// Records where a consumer is in a source partition.
    pub fn position(&mut self, group: &str, topic: &str, partition: u32, next: u64) {
        self.positions.push(Position {
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
            next,
        });
    }

    /// Deletes the records at `offsets` of an internal topic's partition
    /// with the commit (a repartition topic's records its reader is past).
    pub fn purge(&mut self, topic: &Topic, partition: u32, offsets: std::ops::Range<u64>) {
        self.purges.push((topic.id, partition, offsets));
    }

    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.puts.is_empty()
            && self.positions.is_empty()
            && self.purges.is_empty()
    }
}

/// Reads of committed state.
pub trait StateRead: Send + Sync {
    /// The committed value of `key`.
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>>;

    /// The committed values of `keys`, in their order (one read of each by
    /// default; a backend may read them together).
    fn get_many(&self, keys: &[&[u8]]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Committed entries with `start <= key < end`, in key order, up to `limit`.
    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// Which partitions of each source topic a process runs. Topics read
/// together (a join's two sides) have the same partition count and are
/// assigned the same partition numbers; a segment whose source has another
/// count (a foreign-key join's subscriptions, partitioned as its right
/// table) gets numbers of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Source topic -> the partitions of it this process runs.
    pub topics: BTreeMap<String, BTreeSet<u32>>,
}

impl Assignment {
    /// Partitions `numbers` of every source (`(name, partition count)`),
    /// those it has.
    pub fn numbered(sources: &[(String, u32)], numbers: &BTreeSet<u32>) -> Self {
        let topics = sources
            .iter()
            .map(|(name, count)| {
                let mine = numbers.iter().copied().filter(|p| p < count).collect();
                (name.clone(), mine)
            })
            .collect();
        Assignment { topics }
    }

    /// Every partition of every source.
    pub fn all(sources: &[(String, u32)]) -> Self {
        let most = sources.iter().map(|(_, c)| *c).max().unwrap_or(0);
        Self::numbered(sources, &(0..most).collect())
    }

    /// The partitions of `topic` this process runs.
    pub fn of(&self, topic: &str) -> BTreeSet<u32> {
        self.topics.get(topic).cloned().unwrap_or_default()
    }
}

/// Which partitions of its sources a process runs, as it changes.
pub trait Assignor: Send {
    /// Waits up to `wait` for the assignment to change; returns the whole new
    /// assignment when it did (the first call returns the initial one).
    fn poll(&mut self, wait: Duration) -> anyhow::Result<Option<Assignment>>;

    /// Names the steps whose state is partitioned as another source than
    /// the input (step name, source topic): a foreign-key join's middle
    /// part, partitioned as its right table. An assignor that tells state
    /// queries which partitions this process runs (Kafka's) tells them
    /// those steps' partitions too.
    fn steps_partitioned_by(&mut self, steps: BTreeMap<String, String>) {
        let _ = steps;
    }
}

/// An assignor that assigns every partition once and never changes.
pub struct AllPartitions {
    sources: Vec<(String, u32)>,
    given: bool,
}

impl AllPartitions {
    /// Every partition of every source (`(name, partition count)`).
    pub fn new(sources: &[(String, u32)]) -> Self {
        AllPartitions {
            sources: sources.to_vec(),
            given: false,
        }
    }
}

impl Assignor for AllPartitions {
    fn poll(&mut self, wait: Duration) -> anyhow::Result<Option<Assignment>> {
        if self.given {
            std::thread::park_timeout(wait);
            return Ok(None);
        }
        self.given = true;
        Ok(Some(Assignment::all(&self.sources)))
    }
}

/// A counter of appends that threads can wait on: a commit that appends
/// bumps it and wakes every waiter. Backends in this process use it to make
/// idle tasks sleep until records arrive ([`Backend::wait_for_data`]).
#[derive(Default)]
pub struct DataSignal {
    version: Mutex<u64>,
    changed: Condvar,
}

impl DataSignal {
    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.version.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        *self.lock()
    }

    /// Bumps the version and wakes every waiter.
    pub fn bump(&self) {
        *self.lock() += 1;
        self.changed.notify_all();
    }

    /// Waits until the version differs from `since` or `timeout` passed;
    /// returns the version then.
    pub fn wait(&self, since: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut v = self.lock();
        while *v == since {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            v = self
                .changed
                .wait_timeout(v, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *v
    }
}

/// Where a pipeline's records, state and positions live.
pub trait Backend: StateRead {
    /// What it is, for messages ("the data directory .weir").
    fn describe(&self) -> String;

    /// The topic called `name`, if it exists.
    fn topic(&self, name: &str) -> anyhow::Result<Option<Topic>>;

    /// The topic called `name`, or an error saying how to create it.
    fn require_topic(&self, name: &str) -> anyhow::Result<Topic> {
        self.topic(name)?.ok_or_else(|| {
            anyhow::anyhow!(
                "no topic named {name} in {}; create it with `weir topic create {name} --partitions N`",
                self.describe()
            )
        })
    }

    /// Creates a topic.
    fn create_topic(&self, name: &str, config: TopicConfig) -> anyhow::Result<Topic>;

    /// The topic called `name`, created with `partitions` if it does not exist.
    fn ensure_topic(&self, name: &str, partitions: u32) -> anyhow::Result<Topic> {
        match self.topic(name)? {
            Some(t) => Ok(t),
            None => self.create_topic(name, TopicConfig::partitions(partitions)),
        }
    }

    /// Like [`Backend::ensure_topic`], for a pipeline's internal topic (a
    /// repartition topic), whose records the pipeline deletes once it read
    /// them (see [`Commit::purge`]): Kafka creates it as Kafka Streams
    /// does, kept until purged and in small segments, so that a purge
    /// frees the disk.
    fn ensure_internal_topic(&self, name: &str, partitions: u32) -> anyhow::Result<Topic> {
        self.ensure_topic(name, partitions)
    }

    /// Up to `max` records of a partition from offset `from` on.
    fn read(
        &self,
        topic: &Topic,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<Vec<Stored>>;

    /// Like [`Backend::read`], and the offset to read from next: past the
    /// last record returned, and past offsets that hold no record for a
    /// reader (Kafka's transaction markers and aborted records).
    fn read_from(
        &self,
        topic: &Topic,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<(Vec<Stored>, u64)> {
        let records = self.read(topic, partition, from, max)?;
        let next = records.last().map_or(from, |r| r.offset + 1);
        Ok((records, next))
    }

    /// Called before a task starts (and before it reads its positions or
    /// state): Kafka fences the task's earlier owner and restores its state
    /// from the changelogs here.
    fn open_task(&self, spec: &TaskSpec) -> anyhow::Result<()> {
        let _ = spec;
        Ok(())
    }

    /// How long a task keeps retrying a batch that fails on a storage error
    /// (after 3 tries) before it stops with the error: zero for local
    /// storage; Kafka gives a restarting broker time to come back.
    fn retry_window(&self) -> Duration {
        Duration::ZERO
    }

    /// Called when a task stops (its partition revoked, or the run ended).
    fn close_task(&self, task: TaskId) {
        let _ = task;
    }

    /// The offset of the first record still kept, if the partition has any.
    fn first_offset(&self, topic: &Topic, partition: u32) -> anyhow::Result<Option<u64>>;

    /// The offset the next record appended will get.
    fn end_offset(&self, topic: &Topic, partition: u32) -> anyhow::Result<u64>;

    /// The committed position of `group` in a partition, if it has one. A
    /// position that cannot be read is an error naming it, never 0.
    fn position(&self, group: &str, topic: &str, partition: u32) -> anyhow::Result<Option<u64>>;

    /// Writes a commit atomically.
    fn commit(&self, commit: Commit) -> anyhow::Result<()>;

    /// Sends records of `task`'s next commit ahead of it, taking them out
    /// of `appends`, where that lets the commit overlap the batches before
    /// it (Kafka: inside the task's open transaction, as Kafka Streams
    /// sends). The commit still decides whether they count: under
    /// exactly-once readers see them only once it committed, and
    /// [`Backend::abandon`] throws them away. Backends that write a commit
    /// at once (the embedded log) leave them for the commit.
    fn send_ahead(
        &self,
        task: TaskId,
        appends: &mut Vec<(u32, u32, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let _ = (task, appends);
        Ok(())
    }

    /// The longest a task may run batches before it commits, whatever its
    /// `commit_interval` says: Kafka under exactly-once keeps a task's
    /// transaction open from its first batch to the commit, which must come
    /// well before the transaction times out.
    fn longest_commit_interval(&self) -> Duration {
        Duration::MAX
    }

    /// Throws away what [`Backend::send_ahead`] sent for `task` since its
    /// last commit (its batches are replayed): Kafka aborts the task's open
    /// transaction; at least once, the records sent stay (a replay may
    /// repeat them, which at-least-once allows).
    fn abandon(&self, task: TaskId) -> anyhow::Result<()> {
        let _ = task;
        Ok(())
    }

    /// Which partitions of its sources (`(name, partition count)`; the
    /// first is the pipeline's input) this process runs for `group`.
    fn assignor(
        &self,
        group: &str,
        sources: &[(String, u32)],
    ) -> anyhow::Result<Box<dyn Assignor>> {
        let _ = group;
        Ok(Box::new(AllPartitions::new(sources)))
    }

    /// A number that changes whenever records are appended (to any
    /// partition). Read it before reading, then [`Backend::wait_for_data`]
    /// with it when nothing was there: no append is missed in between.
    fn data_version(&self) -> u64 {
        0
    }

    /// Sleeps until the data version differs from `since`, `timeout` passed,
    /// or [`Backend::wake`] was called; returns the version then. Backends
    /// that cannot be told of appends sleep briefly (at most 10 ms) and
    /// return, so that callers poll.
    fn wait_for_data(&self, since: u64, timeout: Duration) -> u64 {
        std::thread::sleep(timeout.min(Duration::from_millis(10)));
        since
    }

    /// Wakes every thread in [`Backend::wait_for_data`] (a stop request).
    fn wake(&self) {}

    /// Applies retention and compaction now (`now_ms` is the wall clock);
    /// returns how many records it deleted. Backends without either do nothing.
    fn clean(&self, now_ms: i64) -> anyhow::Result<u64> {
        let _ = now_ms;
        Ok(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiter_wakes_on_an_append_and_times_out_without_one() {
        let signal = Arc::new(DataSignal::default());
        let v = signal.version();
        // Nothing appended: the wait lasts its timeout and reports no change.
        let started = Instant::now();
        assert_eq!(signal.wait(v, Duration::from_millis(30)), v);
        assert!(started.elapsed() >= Duration::from_millis(30));
        // An append from another thread ends a long wait at once.
        let s = signal.clone();
        let bumper = std::thread::spawn(move || s.bump());
        let started = Instant::now();
        assert_eq!(signal.wait(v, Duration::from_secs(20)), v + 1);
        assert!(started.elapsed() < Duration::from_secs(20));
        bumper.join().unwrap();
        // A version already past `since` returns without waiting.
        assert_eq!(signal.wait(v, Duration::from_secs(20)), v + 1);
    }

    #[test]
    fn the_memory_backend_signals_commits_that_append() {
        let b = memory::MemoryBackend::new();
        let t = b.create_topic("in", TopicConfig::partitions(1)).unwrap();
        let v = b.data_version();
        let mut c = Commit::default();
        c.put(b"k".to_vec(), Some(b"v".to_vec()));
        b.commit(c).unwrap();
        assert_eq!(b.data_version(), v, "a commit without appends");
        let mut c = Commit::default();
        c.append(&t, 0, &Record::default());
        b.commit(c).unwrap();
        assert_eq!(b.wait_for_data(v, Duration::from_secs(20)), v + 1);
    }
}
