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
//!   group's metadata). A new owner of a task fences the old one, whose
//!   commit then fails with [`Fenced`]. At-least-once: outputs and changelog
//!   records are flushed, then offsets committed through the group.
//! - **State.** Every state key lives in a local RocksDB copy (the embedded
//!   log's store, in `DIR/kafka/APP`) and in a compacted changelog topic
//!   (`APP-STORE-changelog`, see [`keys::changelog`]). The local copy is
//!   written only after Kafka took the commit, with a checkpoint of every
//!   changelog partition written; a task that opens replays its changelogs
//!   from the checkpoint to their end first (all of them when the copy is
//!   new or was deleted), so a restart on the same machine replays little.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::admin::{self, TopicSettings};
use super::{Connection, Ctx, Error, TIMEOUT, client_error};
use crate::backend::{
    Assignor, Backend, Commit, Fenced, StateRead, Stored, TaskId, TaskSpec, Topic, TopicConfig,
};
use crate::log::Log;
use crate::pipeline::config::Guarantee;
use crate::pipeline::keys;
use crate::record::Packed;

/// How long a task keeps retrying while Kafka cannot be reached (a broker
/// restarting) before the run stops with the error.
const RETRY_WINDOW: Duration = Duration::from_secs(120);

/// How much a source partition's consumer fetches ahead (KiB).
const PREFETCH_KB: &str = "8192";

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
    group: Mutex<Option<Arc<BaseConsumer<Ctx>>>>,
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

/// What a task's producer learnt from its delivery reports.
#[derive(Default)]
struct Delivered {
    /// The last offset written per changelog partition.
    changelog: HashMap<(String, i32), i64>,
    /// The first record refused, and why.
    failed: Option<String>,
}

struct Deliveries {
    ctx: Ctx,
    delivered: Mutex<Delivered>,
}

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.ctx.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.ctx.error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut d = lock(&self.delivered);
        match result {
            Ok(m) => {
                if m.topic().ends_with("-changelog") {
                    let e = d
                        .changelog
                        .entry((m.topic().to_string(), m.partition()))
                        .or_insert(-1);
                    *e = (*e).max(m.offset());
                }
            }
            Err((e, m)) => {
                if d.failed.is_none() {
                    d.failed = Some(format!(
                        "a record to topic {} partition {} was refused: {e}",
                        m.topic(),
                        m.partition()
                    ));
                }
            }
        }
    }
}

struct TaskProducer {
    producer: BaseProducer<Deliveries>,
    /// Serializes the task's commits (one transaction at a time).
    busy: Mutex<()>,
}

/// Waits until every record sent is delivered (or refused), serving
/// delivery reports as they come (rdkafka's `flush` polls in 100 ms steps,
/// which would bound a task to ten commits a second).
fn flush(producer: &BaseProducer<Deliveries>) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while producer.in_flight_count() > 0 {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        producer.poll(Duration::from_millis(1));
    }
    producer.poll(Duration::ZERO);
    Ok(())
}

/// The name of a changelog topic.
fn changelog_topic(app: &str, name: &str) -> String {
    format!("{app}-{name}-changelog")
}

/// The local key of a changelog partition's checkpoint (the next offset to
/// replay from).
fn checkpoint_key(topic: &str, partition: u32) -> Vec<u8> {
    let mut k = b"C".to_vec();
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
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
        let local = Log::open(&local_dir).with_context(|| {
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
            group: Mutex::new(None),
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

    fn producer(&self, task: TaskId) -> anyhow::Result<Arc<TaskProducer>> {
        lock(&self.producers)
            .get(&task)
            .cloned()
            .with_context(|| format!("task {task} is not open on this process"))
    }

    fn make_producer(&self, task: TaskId) -> anyhow::Result<TaskProducer> {
        let txn_id = format!("{}-{task}", self.app);
        let mut settings = vec![
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("compression.type", "none"),
        ];
        if self.guarantee == Guarantee::ExactlyOnce {
            settings.push(("transactional.id", &txn_id));
            settings.push(("transaction.timeout.ms", "60000"));
        }
        let producer: BaseProducer<Deliveries> = self
            .conn
            .config(&settings)
            .create_with_context(Deliveries {
                ctx: Ctx::default(),
                delivered: Mutex::new(Delivered::default()),
            })
            .map_err(client_error(format!(
                "cannot make a Kafka producer for {}",
                self.conn.brokers
            )))?;
        if self.guarantee == Guarantee::ExactlyOnce {
            // Fences an earlier owner of the task and aborts its open
            // transaction, if any.
            producer
                .init_transactions(TIMEOUT)
                .map_err(client_error(format!(
                    "cannot start transactions as {txn_id} on Kafka at {}",
                    self.conn.brokers
                )))?;
        }
        Ok(TaskProducer {
            producer,
            busy: Mutex::new(()),
        })
    }

    /// Replays partition `partition` of changelog `topic` into the local
    /// state, from its checkpoint to its end.
    fn restore(&self, topic: &str, partition: u32) -> anyhow::Result<u64> {
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

    fn apply(
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

    fn send(
        &self,
        producer: &BaseProducer<Deliveries>,
        mut record: BaseRecord<'_, [u8], [u8], ()>,
    ) -> anyhow::Result<()> {
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((e, back)) => {
                    return Err(anyhow::anyhow!(
                        "cannot send a record to topic {} on Kafka at {}: {e}",
                        back.topic,
                        self.conn.brokers
                    ));
                }
            }
        }
    }

    /// Sends a commit's records; returns the local writes to make once
    /// Kafka took them.
    fn send_all(&self, producer: &BaseProducer<Deliveries>, commit: &Commit) -> anyhow::Result<()> {
        for (topic, partition, bytes) in &commit.appends {
            let name = self.name_of(*topic)?;
            let rec = Packed::parse(bytes.clone())
                .map_err(|e| anyhow::anyhow!("a record to {name} is not well formed: {e}"))?;
            let mut headers = OwnedHeaders::new();
            for (k, v) in rec.headers() {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut r: BaseRecord<'_, [u8], [u8], ()> =
                BaseRecord::to(&name).partition(*partition as i32);
            r.key = rec.key();
            r.payload = rec.value();
            r = r.headers(headers);
            if rec.timestamp() >= 0 {
                r = r.timestamp(rec.timestamp());
            }
            self.send(producer, r)?;
        }
        for (key, value) in &commit.puts {
            let Some((name, p)) = keys::changelog(key) else {
                continue;
            };
            let topic = changelog_topic(&self.app, &name);
            let mut r: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(&topic)
                .partition(p as i32)
                .key(key.as_slice());
            r.payload = value.as_deref();
            self.send(producer, r)?;
        }
        Ok(())
    }

    fn offsets(commit: &Commit) -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for p in &commit.positions {
            tpl.add_partition_offset(&p.topic, p.partition as i32, Offset::Offset(p.next as i64))
                .map_err(|e| anyhow::anyhow!("position of {} {}: {e}", p.topic, p.partition))?;
        }
        Ok(tpl)
    }

    fn group(&self) -> anyhow::Result<Arc<BaseConsumer<Ctx>>> {
        lock(&self.group).clone().with_context(|| {
            format!(
                "application {} has not joined its consumer group on Kafka",
                self.app
            )
        })
    }

    fn fenced(task: TaskId, e: &KafkaError) -> Option<Fenced> {
        let fatal = match e {
            KafkaError::Transaction(t) => t.is_fatal(),
            _ => false,
        };
        let code = e.rdkafka_error_code();
        let fenced_code = matches!(
            code,
            Some(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::FencedInstanceId
                    | RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::UnknownMemberId
                    | RDKafkaErrorCode::RebalanceInProgress
            )
        );
        (fatal || fenced_code).then(|| Fenced {
            task,
            reason: e.to_string(),
        })
    }

    /// A failed transactional call: a fenced producer is dropped (the task
    /// now runs elsewhere); anything else aborts the transaction.
    fn txn_failed(
        &self,
        task: TaskId,
        producer: &BaseProducer<Deliveries>,
        e: KafkaError,
    ) -> anyhow::Error {
        if let Some(f) = Self::fenced(task, &e) {
            lock(&self.producers).remove(&task);
            return f.into();
        }
        let _ = producer.abort_transaction(TIMEOUT);
        anyhow::anyhow!(
            "task {task}: the commit to Kafka at {} failed, and nothing of it is kept: {e}",
            self.conn.brokers
        )
    }

    fn commit_exactly_once(&self, task: TaskId, commit: Commit) -> anyhow::Result<()> {
        let tp = self.producer(task)?;
        let _busy = lock(&tp.busy);
        let producer = &tp.producer;
        *lock(&producer.context().delivered) = Delivered::default();
        producer
            .begin_transaction()
            .map_err(|e| self.txn_failed(task, producer, e))?;
        if let Err(e) = self.send_all(producer, &commit) {
            let _ = producer.abort_transaction(TIMEOUT);
            return Err(e);
        }
        if !commit.positions.is_empty() {
            let tpl = Self::offsets(&commit)?;
            // The group's metadata without a member or generation: the
            // task's transactional id already fences an earlier owner, and
            // a rebalance in between does not fail the commit.
            let cgm = self
                .meta
                .group_metadata()
                .context("no consumer group metadata")?;
            producer
                .send_offsets_to_transaction(&tpl, &cgm, TIMEOUT)
                .map_err(|e| self.txn_failed(task, producer, e))?;
        }
        // Delivered first: rdkafka's own flush waits in 100 ms steps.
        flush(producer).map_err(|e| self.txn_failed(task, producer, e))?;
        producer
            .commit_transaction(TIMEOUT)
            .map_err(|e| self.txn_failed(task, producer, e))?;
        self.write_local(producer, commit.puts)
    }

    fn commit_at_least_once(&self, task: TaskId, commit: Commit) -> anyhow::Result<()> {
        let tp = self.producer(task)?;
        let _busy = lock(&tp.busy);
        let producer = &tp.producer;
        *lock(&producer.context().delivered) = Delivered::default();
        self.send_all(producer, &commit)?;
        flush(producer).map_err(client_error(format!(
            "task {task}: records to Kafka at {} were not delivered in time",
            self.conn.brokers
        )))?;
        if let Some(why) = lock(&producer.context().delivered).failed.take() {
            anyhow::bail!("task {task}: {why}");
        }
        if !commit.positions.is_empty() {
            let tpl = Self::offsets(&commit)?;
            let group = self.group()?;
            if let Err(e) = group.commit(&tpl, CommitMode::Sync) {
                if let Some(f) = Self::fenced(task, &e) {
                    return Err(f.into());
                }
                return Err(client_error(format!(
                    "task {task}: cannot commit offsets to Kafka at {}",
                    self.conn.brokers
                ))(e)
                .into());
            }
        }
        self.write_local(producer, commit.puts)
    }

    /// Fences the task's earlier owner and restores its state.
    fn open_task_once(&self, spec: &TaskSpec) -> anyhow::Result<()> {
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
                    "task {}: restored {n} records of {topic} partition {}",
                    spec.id,
                    spec.id.partition
                );
            }
        }
        Ok(())
    }

    /// Writes state changes to the local copy with the checkpoints of the
    /// changelog partitions the commit wrote.
    fn write_local(
        &self,
        producer: &BaseProducer<Deliveries>,
        puts: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> anyhow::Result<()> {
        producer.poll(Duration::ZERO);
        let written = std::mem::take(&mut lock(&producer.context().delivered).changelog);
        let mut c = Commit {
            puts,
            ..Commit::default()
        };
        for ((topic, p), last) in written {
            c.put(
                checkpoint_key(&topic, p as u32),
                Some(((last + 1) as u64).to_be_bytes().to_vec()),
            );
        }
        if c.puts.is_empty() {
            return Ok(());
        }
        self.local.commit(c).map(|_| ())
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
        let settings = TopicSettings {
            partitions: config.partitions,
            compacted: config.compacted,
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
        };
        match admin::create(&self.conn, name, &settings) {
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

    fn commit(&self, commit: Commit) -> anyhow::Result<()> {
        let Some(task) = commit.task else {
            anyhow::bail!("a commit to Kafka must come from a task");
        };
        match self.guarantee {
            Guarantee::ExactlyOnce => self.commit_exactly_once(task, commit),
            Guarantee::AtLeastOnce => self.commit_at_least_once(task, commit),
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
        lock(&self.producers).remove(&task);
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
        topics: &[String],
        partitions: u32,
    ) -> anyhow::Result<Box<dyn Assignor>> {
        let _ = (group, partitions);
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
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(client_error(format!(
            "cannot join consumer group {} on Kafka at {}",
            self.app, self.conn.brokers
        )))?;
        let consumer = Arc::new(consumer);
        *lock(&self.group) = Some(consumer.clone());
        Ok(Box::new(GroupAssignor {
            consumer,
            current: None,
        }))
    }
}

/// The consumer group's assignment, as the engine's [`Assignor`].
struct GroupAssignor {
    consumer: Arc<BaseConsumer<Ctx>>,
    current: Option<BTreeSet<u32>>,
}

impl Assignor for GroupAssignor {
    fn poll(&mut self, wait: Duration) -> anyhow::Result<Option<BTreeSet<u32>>> {
        // Serves the group's rebalances; the partitions stay paused, so no
        // records come this way (the tasks' own consumers read them).
        if let Some(Err(e)) = self.consumer.poll(wait) {
            tracing::debug!(target: "weir::kafka", "consumer group: {e}");
        }
        let tpl = self
            .consumer
            .assignment()
            .map_err(client_error("cannot read the consumer group's assignment"))?;
        let set: BTreeSet<u32> = tpl
            .elements()
            .iter()
            .map(|e| e.partition() as u32)
            .collect();
        if self.current.as_ref() == Some(&set) {
            return Ok(None);
        }
        if tpl.count() > 0 {
            let _ = self.consumer.pause(&tpl);
        }
        self.current = Some(set.clone());
        Ok(Some(set))
    }
}
