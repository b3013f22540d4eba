//! Kafka as a [`Backend`]: the same tasks and operators that run on the
//! embedded log run against a Kafka cluster.
//!
//! - **Reading.** Each source partition a task reads has its own consumer,
//!   assigned by hand (read_committed): a task asks for records from an
//!   offset and gets them, with the offset to go on from (past transaction
//!   markers and aborted records).
//! - **Sharing the work.** The pipeline's name is its application id: one
//!   consumer group of that name subscribes to every source topic (the input,
//!   repartition topics, join sides) with the range assignor, so partition N
//!   of all of them goes to one process; that consumer only keeps the
//!   membership (its partitions stay paused) and its assignment is the
//!   engine's [`Assignor`].
//! - **Committing.** Exactly-once: each task has a transactional producer,
//!   `APP-SEGMENT_PARTITION` (Kafka Streams' task ids); one commit is one
//!   transaction holding the outputs, the changelog records of every state
//!   change, and the input offsets (`send_offsets_to_transaction` with the
//!   group's metadata). A batch's records are sent as soon as it ran, in
//!   the task's open transaction ([`Backend::send_ahead`]); a task that
//!   throws its uncommitted batches away aborts it ([`Backend::abandon`]).
//!   A new owner of a task fences the old one, whose
//!   commit then fails with [`Fenced`]. At-least-once: outputs and changelog
//!   records are flushed, then offsets committed through the group.
//! - **State.** Every state key lives in a local RocksDB copy (the embedded
//!   log's store, in `DIR/kafka/APP`) and in a compacted changelog topic
//!   (`APP-STORE-changelog`, see [`keys::changelog`]). The local copy is
//!   written only after Kafka took the commit, with a checkpoint of every
//!   changelog partition written; a task that opens replays its changelogs
//!   from the checkpoint to their end first (all of them when the copy is
//!   new or was deleted), so a restart on the same machine replays little.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

mod restore;
mod txn;

use self::txn::TaskProducer;
use super::admin::{self, TopicSettings};
use super::{Connection, Ctx, Error, TIMEOUT, client_error};
use crate::backend::{
    Assignment, Assignor, Backend, Commit, StateRead, Stored, TaskId, TaskSpec, Topic, TopicConfig,
};
use crate::log::Log;
use crate::pipeline::config::Guarantee;
use crate::record::Packed;

/// How long a task keeps retrying while Kafka cannot be reached (a broker
/// restarting) before the run stops with the error.
const RETRY_WINDOW: Duration = Duration::from_secs(120);

/// How much a source partition's consumer fetches ahead (KiB).
const PREFETCH_KB: &str = "4096";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A pipeline's records, state and positions on Kafka.
pub struct KafkaBackend {
    conn: Connection,
    app: String,
    guarantee: Guarantee,
    /// Metadata, watermarks and the group's committed offsets (never joins).
    meta: BaseConsumer<Ctx>,
    local: Arc<Log>,
    topics: Mutex<Topics>,
    readers: Mutex<Readers>,
    producers: Mutex<HashMap<TaskId, Arc<TaskProducer>>>,
    group: Arc<Mutex<Option<Arc<BaseConsumer<Ctx>>>>>,
    /// Open tasks per partition (a partition's readers go when none is left).
    open: Mutex<HashMap<u32, usize>>,
}

#[derive(Default)]
struct Topics {
    by_name: HashMap<String, Topic>,
    names: Vec<String>,
}

/// Each source partition's reader, by (topic id, partition).
type Readers = HashMap<(u32, u32), Arc<Mutex<Reader>>>;

struct Reader {
    consumer: BaseConsumer<Ctx>,
    /// Where the consumer will deliver from next.
    next: Option<u64>,
}

fn packed_of(m: &BorrowedMessage<'_>) -> Vec<u8> {
    let mut headers: Vec<(&str, &[u8])> = Vec::new();
    if let Some(h) = m.headers() {
        for h in h.iter() {
            headers.push((h.key, h.value.unwrap_or_default()));
        }
    }
    Packed::new(
        m.offset(),
        m.timestamp().to_millis().unwrap_or(0),
        m.key(),
        m.payload(),
        headers.into_iter(),
    )
    .into_bytes()
}

impl KafkaBackend {
    /// Reaches the cluster (an error names the bootstrap servers) and opens
    /// the local state of application `app` under `dir`.
    pub fn open(
        conn: Connection,
        app: &str,
        guarantee: Guarantee,
        dir: &Path,
    ) -> anyhow::Result<Arc<KafkaBackend>> {
        // read_uncommitted: end offsets are high watermarks, which include
        // a committed transaction's records before its markers are written
        // (the last stable offset lags for a moment after a commit).
        let meta = conn
            .config(&[
                ("group.id", app),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_uncommitted"),
            ])
            .create_with_context(Ctx::default())
            .map_err(client_error(format!(
                "cannot make a Kafka consumer for {}",
                conn.brokers
            )))?;
        conn.probe(&meta, None)?;
        let local_dir = dir.join("kafka").join(app);
        let local = Log::open_state(&local_dir).with_context(|| {
            format!(
                "the local state of application {app} ({})",
                local_dir.display()
            )
        })?;
        Ok(Arc::new(KafkaBackend {
            conn,
            app: app.to_string(),
            guarantee,
            meta,
            local,
            topics: Mutex::new(Topics::default()),
            readers: Mutex::new(HashMap::new()),
            producers: Mutex::new(HashMap::new()),
            group: Arc::new(Mutex::new(None)),
            open: Mutex::new(HashMap::new()),
        }))
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.conn.brokers
    }

    /// The local copy of the application's state (what `weir state` reads).
    pub fn local(&self) -> &Arc<Log> {
        &self.local
    }

    fn name_of(&self, id: u32) -> anyhow::Result<String> {
        lock(&self.topics)
            .names
            .get(id as usize)
            .cloned()
            .with_context(|| format!("no topic with id {id}"))
    }

    fn remember(&self, name: &str, partitions: u32) -> Topic {
        let mut t = lock(&self.topics);
        if let Some(topic) = t.by_name.get(name) {
            return topic.clone();
        }
        let topic = Topic {
            name: name.to_string(),
            id: t.names.len() as u32,
            config: TopicConfig::partitions(partitions),
        };
        t.names.push(name.to_string());
        t.by_name.insert(name.to_string(), topic.clone());
        topic
    }

    fn watermarks(&self, topic: &str, partition: u32) -> anyhow::Result<(i64, i64)> {
        self.meta
            .fetch_watermarks(topic, partition as i32, TIMEOUT)
            .map_err(client_error(format!(
                "cannot read the offsets of partition {partition} of topic {topic} on Kafka at {}",
                self.conn.brokers
            )))
            .map_err(anyhow::Error::from)
    }

    fn reader(&self, topic: &Topic, partition: u32) -> anyhow::Result<Arc<Mutex<Reader>>> {
        let mut readers = lock(&self.readers);
        if let Some(r) = readers.get(&(topic.id, partition)) {
            return Ok(r.clone());
        }
        let group = format!("{}-reader", self.app);
        let consumer: BaseConsumer<Ctx> = self
            .conn
            .config(&[
                ("group.id", &group),
                ("isolation.level", "read_committed"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("queued.max.messages.kbytes", PREFETCH_KB),
                ("fetch.wait.max.ms", "100"),
                ("fetch.queue.backoff.ms", super::FETCH_BACKOFF_MS),
            ])
            .create_with_context(Ctx::default())
            .map_err(client_error(format!(
                "cannot make a Kafka consumer for {}",
                self.conn.brokers
            )))?;
        let r = Arc::new(Mutex::new(Reader {
            consumer,
            next: None,
        }));
        readers.insert((topic.id, partition), r.clone());
        Ok(r)
    }

    /// Creates a topic with more configuration (`extra`) and waits until
    /// every broker knows it.
    fn create_topic_with(
        &self,
        name: &str,
        config: TopicConfig,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Topic> {
        let settings = TopicSettings {
            partitions: config.partitions,
            compacted: config.compacted,
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
        };
        match admin::create_with(&self.conn, name, &settings, extra) {
            // Another instance of the application made it first.
            Ok(()) | Err(Error::TopicExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // A topic just made is not at once in every broker's metadata.
        let started = std::time::Instant::now();
        loop {
            let ready = self
                .meta
                .fetch_metadata(Some(name), TIMEOUT)
                .ok()
                .and_then(|md| {
                    md.topics().iter().find(|t| t.name() == name).map(|t| {
                        t.error().is_none()
                            && t.partitions().len() as u32 == config.partitions
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
                .unwrap_or(false);
            if ready {
                break;
            }
            if started.elapsed() > TIMEOUT {
                anyhow::bail!(
                    "topic {name} was created on Kafka at {} but its partitions did not come up within {} s",
                    self.conn.brokers,
                    TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(self.remember(name, config.partitions))
    }

    fn producer(&self, task: TaskId) -> anyhow::Result<Arc<TaskProducer>> {
        lock(&self.producers)
            .get(&task)
            .cloned()
            .with_context(|| format!("task {task} is not open on this process"))
    }

    fn group(&self) -> anyhow::Result<Arc<BaseConsumer<Ctx>>> {
        lock(&self.group).clone().with_context(|| {
            format!(
                "application {} has not joined its consumer group on Kafka",
                self.app
            )
        })
    }
}

impl StateRead for KafkaBackend {
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        self.local.get(key)
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.local.range(start, end, limit)
    }
}

impl Backend for KafkaBackend {
    fn describe(&self) -> String {
        format!("Kafka at {}", self.conn.brokers)
    }

    fn topic(&self, name: &str) -> anyhow::Result<Option<Topic>> {
        if let Some(t) = lock(&self.topics).by_name.get(name) {
            return Ok(Some(t.clone()));
        }
        match self.conn.partitions(&self.meta, name) {
            Ok(n) => Ok(Some(self.remember(name, n))),
            Err(Error::NoTopic { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn require_topic(&self, name: &str) -> anyhow::Result<Topic> {
        match self.topic(name)? {
            Some(t) => Ok(t),
            None => Err(self.conn.partitions(&self.meta, name).err().map_or_else(
                || anyhow::anyhow!("no topic named {name} on Kafka at {}", self.conn.brokers),
                anyhow::Error::from,
            )),
        }
    }

    fn create_topic(&self, name: &str, config: TopicConfig) -> anyhow::Result<Topic> {
        self.create_topic_with(name, config, &[])
    }

    fn ensure_internal_topic(&self, name: &str, partitions: u32) -> anyhow::Result<Topic> {
        match self.topic(name)? {
            Some(t) => Ok(t),
            None => self.create_topic_with(
                name,
                TopicConfig::partitions(partitions),
                &admin::INTERNAL_TOPIC,
            ),
        }
    }

    fn read(
        &self,
        topic: &Topic,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<Vec<Stored>> {
        self.read_from(topic, partition, from, max).map(|r| r.0)
    }

    fn read_from(
        &self,
        topic: &Topic,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<(Vec<Stored>, u64)> {
        let reader = self.reader(topic, partition)?;
        let mut r = lock(&reader);
        if r.next != Some(from) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic.name, partition as i32, Offset::Offset(from as i64))
                .map_err(client_error(format!("cannot read topic {}", topic.name)))?;
            r.consumer
                .assign(&tpl)
                .map_err(client_error(format!("cannot read topic {}", topic.name)))?;
            r.next = Some(from);
        }
        let mut out = Vec::new();
        let mut at_end = false;
        while out.len() < max {
            match r.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => out.push(Stored {
                    offset: m.offset() as u64,
                    bytes: packed_of(&m),
                }),
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    at_end = true;
                    break;
                }
                Some(Err(e)) => {
                    tracing::debug!(target: "weir::kafka", "reading {}: {e}", topic.name);
                    break;
                }
                None => break,
            }
        }
        let mut next = out.last().map_or(from, |s| s.offset + 1);
        if at_end
            && let Ok(pos) = r.consumer.position()
            && let Some(e) = pos.find_partition(&topic.name, partition as i32)
            && let Offset::Offset(o) = e.offset()
        {
            // At the end, past the markers the consumer skipped.
            next = next.max(o as u64);
        }
        r.next = Some(next);
        tracing::debug!(target: "weir::kafka", "read {} [{partition}] from {from}: {} records, next {next}, end {at_end}", topic.name, out.len());
        Ok((out, next))
    }

    fn first_offset(&self, topic: &Topic, partition: u32) -> anyhow::Result<Option<u64>> {
        let (low, high) = self.watermarks(&topic.name, partition)?;
        Ok((high > low).then_some(low as u64))
    }

    fn end_offset(&self, topic: &Topic, partition: u32) -> anyhow::Result<u64> {
        Ok(self.watermarks(&topic.name, partition)?.1.max(0) as u64)
    }

    fn position(&self, group: &str, topic: &str, partition: u32) -> anyhow::Result<Option<u64>> {
        let _ = group;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition as i32);
        let got = self
            .meta
            .committed_offsets(tpl, TIMEOUT)
            .map_err(client_error(format!(
                "cannot read the committed offsets of application {} on Kafka at {}",
                self.app, self.conn.brokers
            )))?;
        Ok(got
            .find_partition(topic, partition as i32)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o as u64),
                _ => None,
            }))
    }

    fn commit(&self, mut commit: Commit) -> anyhow::Result<()> {
        let Some(task) = commit.task else {
            anyhow::bail!("a commit to Kafka must come from a task");
        };
        let purges = std::mem::take(&mut commit.purges);
        match self.guarantee {
            Guarantee::ExactlyOnce => self.commit_exactly_once(task, commit)?,
            Guarantee::AtLeastOnce => self.commit_at_least_once(task, commit)?,
        }
        // Once the commit is in, as Kafka Streams purges repartition topics;
        // a purge that fails is tried again with the task's next one.
        if !purges.is_empty() {
            let mut before = Vec::new();
            for (topic, p, offsets) in purges {
                before.push((self.name_of(topic)?, p as i32, offsets.end as i64));
            }
            if let Err(e) = admin::delete_records(&self.conn, &before) {
                tracing::warn!("task {task}: {e}");
            }
        }
        Ok(())
    }

    fn send_ahead(
        &self,
        task: TaskId,
        appends: &mut Vec<(u32, u32, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        KafkaBackend::send_ahead(self, task, appends)
    }

    fn abandon(&self, task: TaskId) -> anyhow::Result<()> {
        KafkaBackend::abandon(self, task)
    }

    fn longest_commit_interval(&self) -> Duration {
        match self.guarantee {
            // Half the transaction timeout (Weir's, or the user's setting).
            Guarantee::ExactlyOnce => self.transaction_timeout() / 2,
            Guarantee::AtLeastOnce => Duration::MAX,
        }
    }

    fn retry_window(&self) -> Duration {
        RETRY_WINDOW
    }

    fn open_task(&self, spec: &TaskSpec) -> anyhow::Result<()> {
        // A broker that restarts is waited for, within the retry window.
        let started = std::time::Instant::now();
        let mut tries = 0u32;
        loop {
            match self.open_task_once(spec) {
                Ok(()) => {
                    *lock(&self.open).entry(spec.id.partition).or_default() += 1;
                    return Ok(());
                }
                Err(e) if started.elapsed() < RETRY_WINDOW => {
                    tries += 1;
                    tracing::warn!("task {} cannot start yet (try {tries}): {e:#}", spec.id);
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn close_task(&self, task: TaskId) {
        if let Some(tp) = lock(&self.producers).remove(&task) {
            tp.close();
        }
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&task.partition) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&task.partition);
                lock(&self.readers).retain(|(_, p), _| *p != task.partition);
            }
        }
    }

    fn assignor(
        &self,
        group: &str,
        sources: &[(String, u32)],
    ) -> anyhow::Result<Box<dyn Assignor>> {
        let _ = group;
        let (input, partitions) = sources
            .first()
            .cloned()
            .context("a pipeline reads at least one topic")?;
        let consumer: BaseConsumer<Ctx> = self
            .conn
            .config(&[
                ("group.id", &self.app),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("partition.assignment.strategy", "range"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "2000"),
                ("max.poll.interval.ms", "300000"),
            ])
            .create_with_context(Ctx::default())
            .map_err(client_error(format!(
                "cannot make a Kafka consumer for {}",
                self.conn.brokers
            )))?;
        let names: Vec<&str> = sources.iter().map(|(n, _)| n.as_str()).collect();
        consumer.subscribe(&names).map_err(client_error(format!(
            "cannot join consumer group {} on Kafka at {}",
            self.app, self.conn.brokers
        )))?;
        let consumer = Arc::new(consumer);
        *lock(&self.group) = Some(consumer.clone());
        Ok(Box::new(GroupAssignor {
            consumer,
            slot: self.group.clone(),
            current: None,
            published: self.local.dir().join(ASSIGNMENT_FILE),
            input,
            partitions,
            sources: sources.iter().cloned().collect(),
            steps: BTreeMap::new(),
        }))
    }
}

/// The file in an application's local state directory that says which
/// partitions this instance runs now, of how many:
/// `{"partitions": [0, 2], "of": 4}`, and for a step partitioned as another
/// source than the input, its own: `"steps": {"with-user": {"partitions":
/// [2], "of": 3}}`. A state query answers only for them:
/// the copy of a partition given away in a rebalance is stale. It goes when
/// the run stops (the copy is then the newest there is for one instance).
pub const ASSIGNMENT_FILE: &str = "assignment.json";

/// The consumer group's assignment, as the engine's [`Assignor`].
struct GroupAssignor {
    consumer: Arc<BaseConsumer<Ctx>>,
    /// The backend's handle on the same consumer (for the tasks' offset
    /// commits), emptied when the run ends.
    slot: Arc<Mutex<Option<Arc<BaseConsumer<Ctx>>>>>,
    current: Option<Assignment>,
    /// Where the assignment is published ([`ASSIGNMENT_FILE`]).
    published: std::path::PathBuf,
    /// The pipeline's input and its partition count (what is published).
    input: String,
    partitions: u32,
    /// Every source's partition count.
    sources: BTreeMap<String, u32>,
    /// The steps partitioned as another source (step, source).
    steps: BTreeMap<String, String>,
}

impl GroupAssignor {
    /// Writes the assignment for state queries (a failure is a warning:
    /// queries then answer from the whole local copy).
    fn publish(&self, assignment: &Assignment) {
        let mut steps = serde_json::Map::new();
        for (step, source) in &self.steps {
            let of = self.sources.get(source).copied().unwrap_or_default();
            steps.insert(
                step.clone(),
                serde_json::json!({"partitions": assignment.of(source), "of": of}),
            );
        }
        let text = serde_json::json!({
            "partitions": assignment.of(&self.input),
            "of": self.partitions,
            "steps": steps,
        })
        .to_string();
        let tmp = self.published.with_extension("json.tmp");
        let written =
            std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.published));
        if let Err(e) = written {
            tracing::warn!("cannot write {}: {e}", self.published.display());
        }
    }
}

impl Drop for GroupAssignor {
    /// The run is over: the last handle on the consumer goes with this one,
    /// and dropping it closes the consumer, which leaves the group at once
    /// (rather than when its session times out), so that a `weir reset` or
    /// another instance does not wait for it.
    fn drop(&mut self) {
        lock(&self.slot).take();
        let _ = std::fs::remove_file(&self.published);
    }
}

impl Assignor for GroupAssignor {
    fn poll(&mut self, wait: Duration) -> anyhow::Result<Option<Assignment>> {
        // Serves the group's rebalances; the partitions stay paused, so no
        // records come this way (the tasks' own consumers read them).
        if let Some(Err(e)) = self.consumer.poll(wait) {
            tracing::debug!(target: "weir::kafka", "consumer group: {e}");
        }
        let tpl = self
            .consumer
            .assignment()
            .map_err(client_error("cannot read the consumer group's assignment"))?;
        // The range assignor gives topics of the same partition count the
        // same partition numbers, so a task's sources are all here.
        let mut set = Assignment::default();
        for e in tpl.elements() {
            set.topics
                .entry(e.topic().to_string())
                .or_default()
                .insert(e.partition() as u32);
        }
        if self.current.as_ref() == Some(&set) {
            return Ok(None);
        }
        if tpl.count() > 0 {
            let _ = self.consumer.pause(&tpl);
        }
        self.publish(&set);
        self.current = Some(set.clone());
        Ok(Some(set))
    }

    fn steps_partitioned_by(&mut self, steps: BTreeMap<String, String>) {
        self.steps = steps;
        if let Some(set) = &self.current {
            self.publish(set);
        }
    }
}
