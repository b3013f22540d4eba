//! Records to a Kafka topic, as `weir produce --brokers` writes them.
//!
//! Partitions are chosen here, not by librdkafka: a keyed record goes to
//! murmur2 of its key (the embedded log's [`partitioner`], which is Kafka's
//! Java default), so a key lands on the same partition number on both;
//! unkeyed records go round-robin. Every send's delivery report is checked:
//! a record the broker refuses (too large, stamped too far in the future,
//! ...) is reported with the tag the caller gave it, never lost silently.
//!
//! Kafka refuses a whole batch for one bad record (and librdkafka then
//! reports every record of it as failed), so the records of a refused batch
//! are sent again one at a time at the end: only those refused alone are
//! reported, and the others are appended after the rest of the input.
//!
//! [`partitioner`]: crate::log::partitioner

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::{Connection, Ctx, Error, TIMEOUT, client_error};
use crate::log::partitioner;
use crate::record::Record;

/// How long librdkafka keeps retrying one record before it reports it failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A record Kafka did not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The tag given to [`Producer::send`] (the CLI gives the input line).
    pub tag: usize,
    /// Why, as Kafka or librdkafka said it.
    pub reason: String,
}

/// What a producer did, once every record's fate is known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records the brokers acknowledged.
    pub delivered: u64,
    /// Records refused, by tag.
    pub refused: Vec<Refused>,
}

/// A record in flight, kept until its delivery report.
struct Pending {
    tag: usize,
    partition: u32,
    record: Record,
    /// Whether its timestamp was given (else Kafka's current time).
    stamped: bool,
}

struct Delivery {
    ctx: Ctx,
    delivered: AtomicU64,
    failed: Mutex<Vec<(Pending, String)>>,
}

/// librdkafka's description of the error (`Broker: Invalid timestamp`).
fn reason(e: &KafkaError) -> String {
    let Some(code) = e.rdkafka_error_code() else {
        return e.to_string();
    };
    // RDKafkaErrorCode prints as `Name (description)`.
    let text = code.to_string();
    match text.split_once(" (") {
        Some((_, rest)) if rest.ends_with(')') => rest[..rest.len() - 1].to_string(),
        _ => text,
    }
}

impl ClientContext for Delivery {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.ctx.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.ctx.error(error, reason);
    }
}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                if let Ok(mut f) = self.failed.lock() {
                    f.push((*pending, reason(e)));
                }
            }
        }
    }
}

/// A producer to one topic.
pub struct Producer {
    topic: String,
    partitions: u32,
    producer: BaseProducer<Delivery>,
    round_robin: u32,
    refused_locally: Vec<Refused>,
}

impl Producer {
    /// Reaches the cluster and finds `topic` (an error names the brokers, or
    /// the topics there are).
    pub fn open(conn: &Connection, topic: &str) -> Result<Producer, Error> {
        let consumer = conn.consumer(false)?;
        let partitions = conn.partitions(&consumer, topic)?;
        drop(consumer);
        let timeout = DELIVERY_TIMEOUT.as_millis().to_string();
        let producer = conn
            .config(&[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("linger.ms", "5"),
                ("message.timeout.ms", &timeout),
            ])
            .create_with_context(Delivery {
                ctx: Ctx::default(),
                delivered: AtomicU64::new(0),
                failed: Mutex::new(Vec::new()),
            })
            .map_err(client_error(format!(
                "cannot make a Kafka producer for {}",
                conn.brokers
            )))?;
        Ok(Producer {
            topic: topic.to_string(),
            partitions,
            producer,
            round_robin: 0,
            refused_locally: Vec::new(),
        })
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition a record goes to: `partition` if given, else by key,
    /// else the next in turn.
    pub fn partition_for(&mut self, partition: Option<u32>, key: Option<&[u8]>) -> u32 {
        match (partition, key) {
            (Some(p), _) => p,
            (None, Some(k)) => partitioner::partition_for_key(k, self.partitions),
            (None, None) => {
                self.round_robin = self.round_robin.wrapping_add(1);
                (self.round_robin - 1) % self.partitions
            }
        }
    }

    /// Queues a record for `partition`; `tag` names it in a refusal. A
    /// record not `stamped` (its line gave no timestamp) gets the current
    /// time, as Kafka's clients stamp it; one stamped 0 goes without a
    /// timestamp (-1: librdkafka would stamp a 0 with the current time),
    /// which Weir reads back as 0.
    pub fn send(
        &mut self,
        partition: u32,
        record: &Record,
        stamped: bool,
        tag: usize,
    ) -> Result<(), Error> {
        if partition >= self.partitions {
            return Err(Error::NoPartition {
                topic: self.topic.clone(),
                last: self.partitions - 1,
                partition,
            });
        }
        self.enqueue(Box::new(Pending {
            tag,
            partition,
            record: record.clone(),
            stamped,
        }));
        Ok(())
    }

    fn enqueue(&mut self, pending: Box<Pending>) {
        let mut headers = OwnedHeaders::new_with_capacity(pending.record.headers.len());
        for (name, value) in &pending.record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_slice()),
            });
        }
        // librdkafka copies key and value when it takes the record; the
        // pending copy goes along for a second try.
        let record = pending.record.clone();
        let (tag, partition, stamped) = (pending.tag, pending.partition, pending.stamped);
        let mut r: BaseRecord<'_, [u8], [u8], Box<Pending>> =
            BaseRecord::with_opaque_to(&self.topic, pending)
                .partition(partition as i32)
                .headers(headers);
        r.key = record.key.as_deref();
        r.payload = record.value.as_deref();
        match (stamped, record.timestamp) {
            (false, _) => {}
            (true, 0) => r = r.timestamp(-1),
            (true, t) => r = r.timestamp(t),
        }
        loop {
            match self.producer.send(r) {
                Ok(()) => {
                    self.producer.poll(Duration::ZERO);
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: serve delivery reports until
                    // there is room.
                    self.producer.poll(Duration::from_millis(100));
                    r = back;
                }
                Err((e, _)) => {
                    self.refused_locally.push(Refused {
                        tag,
                        reason: reason(&e),
                    });
                    return;
                }
            }
        }
    }

    /// Waits for every delivery report; returns the records refused since
    /// the last call.
    fn flush(&self) -> Result<Vec<(Pending, String)>, Error> {
        // Each record is delivered or refused within DELIVERY_TIMEOUT.
        self.producer
            .flush(DELIVERY_TIMEOUT + TIMEOUT)
            .map_err(client_error(format!(
                "records to topic {} were neither delivered nor refused in time",
                self.topic
            )))?;
        Ok(self
            .producer
            .context()
            .failed
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default())
    }

    /// Waits until every queued record is delivered or refused; sends the
    /// records of refused batches again one at a time.
    pub fn finish(mut self) -> Result<Summary, Error> {
        let failed = self.flush()?;
        let mut refused = Vec::new();
        for (pending, _) in failed {
            self.enqueue(Box::new(pending));
            for (alone, why) in self.flush()? {
                refused.push(Refused {
                    tag: alone.tag,
                    reason: why,
                });
            }
        }
        refused.append(&mut self.refused_locally);
        refused.sort_by_key(|r| r.tag);
        Ok(Summary {
            delivered: self.producer.context().delivered.load(Ordering::Relaxed),
            refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_librdkafka_describes_the_error() {
        assert_eq!(
            reason(&KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidTimestamp
            )),
            "Broker: Invalid timestamp"
        );
        assert_eq!(
            reason(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge
            )),
            "Broker: Message size too large"
        );
    }
}
