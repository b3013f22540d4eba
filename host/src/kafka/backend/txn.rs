//! The commit path on Kafka: each task's producer, a commit as one
//! transaction (or, at least once, a flush and an offset commit), and the
//! local state written after Kafka took it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::restore::checkpoint_key;
use super::{KafkaBackend, lock};
use crate::backend::{Commit, Fenced, TaskId};
use crate::kafka::{Ctx, TIMEOUT, client_error};
use crate::pipeline::config::Guarantee;
use crate::pipeline::keys;
use crate::record::Packed;

/// What a task's producer learnt from its delivery reports.
#[derive(Default)]
struct Delivered {
    /// The last offset written per changelog partition.
    changelog: HashMap<(String, i32), i64>,
    /// The first record refused, and why.
    failed: Option<String>,
}

pub(super) struct Deliveries {
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

pub(super) struct TaskProducer {
    producer: BaseProducer<Deliveries>,
    /// Whether records went out since the last commit (under exactly-once:
    /// the task's transaction is open). Its lock serializes the task's
    /// sends and commits.
    sending: Mutex<bool>,
    /// Whether it commits in transactions (exactly-once).
    transactional: bool,
}

impl TaskProducer {
    /// Aborts a transaction left open (a task that stopped on an error),
    /// so that readers of its topics need not wait for it to time out.
    pub(super) fn close(&self) {
        if std::mem::take(&mut *lock(&self.sending)) && self.transactional {
            let _ = self.producer.abort_transaction(TIMEOUT);
        }
    }
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

/// How long a task's transaction may stay open before the broker aborts it,
/// unless the pipeline's `[kafka]` section sets `transaction.timeout.ms`.
const TRANSACTION_TIMEOUT_MS: &str = "60000";

/// The name of a changelog topic.
pub(super) fn changelog_topic(app: &str, name: &str) -> String {
    format!("{app}-{name}-changelog")
}

impl KafkaBackend {
    pub(super) fn make_producer(&self, task: TaskId) -> anyhow::Result<TaskProducer> {
        let txn_id = format!("{}-{task}", self.app);
        let mut settings = vec![
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("compression.type", "none"),
        ];
        if self.guarantee == Guarantee::ExactlyOnce {
            settings.push(("transactional.id", &txn_id));
            settings.push(("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS));
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
            sending: Mutex::new(false),
            transactional: self.guarantee == Guarantee::ExactlyOnce,
        })
    }

    /// The transaction timeout its producers get: the user's
    /// `transaction.timeout.ms`, else Weir's.
    pub(super) fn transaction_timeout(&self) -> Duration {
        let ms = self
            .conn
            .properties
            .iter()
            .rev()
            .find(|(k, _)| k == "transaction.timeout.ms")
            .map_or(TRANSACTION_TIMEOUT_MS, |(_, v)| v.as_str());
        Duration::from_millis(ms.trim().parse().unwrap_or(60_000))
    }

    /// Starts what the task's next commit sends, unless started: fresh
    /// delivery tracking and, under exactly-once, the transaction.
    fn begin(
        &self,
        task: TaskId,
        producer: &BaseProducer<Deliveries>,
        sending: &mut bool,
    ) -> anyhow::Result<()> {
        if *sending {
            return Ok(());
        }
        *lock(&producer.context().delivered) = Delivered::default();
        if self.guarantee == Guarantee::ExactlyOnce {
            producer
                .begin_transaction()
                .map_err(|e| self.txn_failed(task, producer, e))?;
        }
        *sending = true;
        Ok(())
    }

    /// Sends records of the task's next commit now (see
    /// [`crate::backend::Backend::send_ahead`]).
    pub(super) fn send_ahead(
        &self,
        task: TaskId,
        appends: &mut Vec<(u32, u32, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        if appends.is_empty() {
            return Ok(());
        }
        let tp = self.producer(task)?;
        let mut sending = lock(&tp.sending);
        self.begin(task, &tp.producer, &mut sending)?;
        let sent = self.send_appends(&tp.producer, std::mem::take(appends));
        if sent.is_err() && self.guarantee == Guarantee::ExactlyOnce {
            let _ = tp.producer.abort_transaction(TIMEOUT);
            *sending = false;
        }
        // Serves delivery reports, so that they do not pile up until the
        // commit.
        tp.producer.poll(Duration::ZERO);
        sent
    }

    /// Throws away what the task sent since its last commit: under
    /// exactly-once its transaction is aborted (a producer that cannot
    /// abort is replaced by a new one, whose start aborts it).
    pub(super) fn abandon(&self, task: TaskId) -> anyhow::Result<()> {
        let Ok(tp) = self.producer(task) else {
            return Ok(());
        };
        let mut sending = lock(&tp.sending);
        if !std::mem::replace(&mut *sending, false) || self.guarantee != Guarantee::ExactlyOnce {
            return Ok(());
        }
        let Err(e) = tp.producer.abort_transaction(TIMEOUT) else {
            return Ok(());
        };
        if let Some(f) = Self::fenced(task, &e) {
            lock(&self.producers).remove(&task);
            return Err(f.into());
        }
        tracing::warn!("task {task}: cannot abort its transaction ({e}); starting a new producer");
        drop(sending);
        let fresh = self.make_producer(task)?;
        lock(&self.producers).insert(task, Arc::new(fresh));
        Ok(())
    }

    pub(super) fn send(
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

    /// Sends a commit's records (taking its appends) and the changelog
    /// records of its state changes; the local writes are made once Kafka
    /// took them.
    pub(super) fn send_all(
        &self,
        producer: &BaseProducer<Deliveries>,
        commit: &mut Commit,
    ) -> anyhow::Result<()> {
        self.send_appends(producer, std::mem::take(&mut commit.appends))?;
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

    /// Sends appended records (packed) to their topics.
    fn send_appends(
        &self,
        producer: &BaseProducer<Deliveries>,
        appends: Vec<(u32, u32, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        // Topic names by id, looked up once per topic.
        let mut names: Vec<(u32, String)> = Vec::new();
        for (topic, partition, bytes) in appends {
            let name = match names.iter().find(|(id, _)| *id == topic) {
                Some((_, n)) => n,
                None => {
                    names.push((topic, self.name_of(topic)?));
                    &names[names.len() - 1].1
                }
            };
            let rec = Packed::parse(bytes)
                .map_err(|e| anyhow::anyhow!("a record to {name} is not well formed: {e}"))?;
            let mut r: BaseRecord<'_, [u8], [u8], ()> =
                BaseRecord::to(name).partition(partition as i32);
            r.key = rec.key();
            r.payload = rec.value();
            let mut headers = rec.headers().peekable();
            if headers.peek().is_some() {
                let mut owned = OwnedHeaders::new();
                for (k, v) in headers {
                    owned = owned.insert(Header {
                        key: k,
                        value: Some(v),
                    });
                }
                r = r.headers(owned);
            }
            // librdkafka stamps a record given 0 with the current time: a
            // record at 0 goes as one without a timestamp (-1), which Weir
            // reads back as 0.
            match rec.timestamp() {
                0 => r = r.timestamp(-1),
                t if t > 0 => r = r.timestamp(t),
                _ => {}
            }
            self.send(producer, r)?;
        }
        Ok(())
    }

    pub(super) fn offsets(commit: &Commit) -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for p in &commit.positions {
            tpl.add_partition_offset(&p.topic, p.partition as i32, Offset::Offset(p.next as i64))
                .map_err(|e| anyhow::anyhow!("position of {} {}: {e}", p.topic, p.partition))?;
        }
        Ok(tpl)
    }

    pub(super) fn fenced(task: TaskId, e: &KafkaError) -> Option<Fenced> {
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
    pub(super) fn txn_failed(
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

    pub(super) fn commit_exactly_once(
        &self,
        task: TaskId,
        mut commit: Commit,
    ) -> anyhow::Result<()> {
        let tp = self.producer(task)?;
        let mut sending = lock(&tp.sending);
        self.begin(task, &tp.producer, &mut sending)?;
        // However it ends, the transaction is over: committed, or aborted
        // (a fenced producer is dropped).
        *sending = false;
        let producer = &tp.producer;
        let offsets = match self.send_all(producer, &mut commit).and_then(|()| {
            let cgm = self
                .meta
                .group_metadata()
                .context("no consumer group metadata")?;
            Ok((Self::offsets(&commit)?, cgm))
        }) {
            Ok(o) => o,
            Err(e) => {
                let _ = producer.abort_transaction(TIMEOUT);
                return Err(e);
            }
        };
        if !commit.positions.is_empty() {
            // The group's metadata without a member or generation: the
            // task's transactional id already fences an earlier owner, and
            // a rebalance in between does not fail the commit.
            let (tpl, cgm) = &offsets;
            producer
                .send_offsets_to_transaction(tpl, cgm, TIMEOUT)
                .map_err(|e| self.txn_failed(task, producer, e))?;
        }
        // Delivered first: rdkafka's own flush waits in 100 ms steps.
        flush(producer).map_err(|e| self.txn_failed(task, producer, e))?;
        producer
            .commit_transaction(TIMEOUT)
            .map_err(|e| self.txn_failed(task, producer, e))?;
        self.write_local(producer, commit.puts)
    }

    pub(super) fn commit_at_least_once(
        &self,
        task: TaskId,
        mut commit: Commit,
    ) -> anyhow::Result<()> {
        let tp = self.producer(task)?;
        let mut sending = lock(&tp.sending);
        self.begin(task, &tp.producer, &mut sending)?;
        *sending = false;
        let producer = &tp.producer;
        self.send_all(producer, &mut commit)?;
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

    /// Writes state changes to the local copy with the checkpoints of the
    /// changelog partitions the commit wrote.
    pub(super) fn write_local(
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
