//! A topic's records from Kafka, as `weir consume --brokers` prints them.
//!
//! No consumer group: partitions are assigned by hand and nothing is
//! committed. Without `follow`, each partition is read in turn, from its
//! start (or its end) to its end as it was when reading began — under
//! read_committed that end is the last stable offset, so an open
//! transaction's records are not waited for — which prints the same order
//! as the embedded log. With `follow`, every partition is read together
//! until the caller's stop flag is set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{Connection, Ctx, Error, TIMEOUT, client_error};
use crate::record::Record;

/// What to read.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// From each partition's first record kept (else: only new records).
    pub from_beginning: bool,
    /// Only this partition.
    pub partition: Option<u32>,
    /// At most this many records.
    pub max: Option<usize>,
    /// Keep reading new records until the stop flag is set.
    pub follow: bool,
    /// Records of transactions not (yet) committed too.
    pub read_uncommitted: bool,
}

/// How long a partition known to hold more records may give none before the
/// read fails (the broker went away).
const STALL: Duration = Duration::from_secs(30);

fn record_of(m: &BorrowedMessage<'_>) -> Record {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    Record {
        offset: m.offset(),
        timestamp: m.timestamp().to_millis().unwrap_or(0),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    }
}

fn assign(consumer: &BaseConsumer<Ctx>, topic: &str, from: &[(u32, i64)]) -> Result<(), Error> {
    let mut tpl = TopicPartitionList::new();
    for (p, offset) in from {
        tpl.add_partition_offset(topic, *p as i32, Offset::Offset(*offset))
            .map_err(client_error(format!(
                "cannot read partition {p} of topic {topic}"
            )))?;
    }
    consumer
        .assign(&tpl)
        .map_err(client_error(format!("cannot read topic {topic}")))
}

/// Reads `topic` and calls `each(partition, record)` for every record (the
/// record's `offset` is its Kafka offset), in order within a partition.
pub fn read<E: From<Error>>(
    conn: &Connection,
    topic: &str,
    opts: &ReadOptions,
    stop: &AtomicBool,
    mut each: impl FnMut(u32, Record) -> Result<(), E>,
) -> Result<(), E> {
    let consumer = conn.consumer(!opts.read_uncommitted)?;
    let partitions = conn.partitions(&consumer, topic)?;
    let parts: Vec<u32> = match opts.partition {
        Some(p) if p < partitions => vec![p],
        Some(p) => {
            return Err(Error::NoPartition {
                topic: topic.to_string(),
                last: partitions - 1,
                partition: p,
            }
            .into());
        }
        None => (0..partitions).collect(),
    };
    // (partition, first offset to read, end offset as of now)
    let mut ranges = Vec::with_capacity(parts.len());
    for p in parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, p as i32, TIMEOUT)
            .map_err(client_error(format!(
                "cannot read the offsets of partition {p} of topic {topic}"
            )))?;
        ranges.push((p, if opts.from_beginning { low } else { high }, high));
    }
    let mut left = opts.max.unwrap_or(usize::MAX);
    if left == 0 {
        return Ok(());
    }

    if opts.follow {
        let from: Vec<(u32, i64)> = ranges.iter().map(|(p, start, _)| (*p, *start)).collect();
        assign(&consumer, topic, &from)?;
        while !stop.load(Ordering::SeqCst) {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    each(m.partition() as u32, record_of(&m))?;
                    left -= 1;
                    if left == 0 {
                        return Ok(());
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => {
                    tracing::debug!(target: "weir::kafka", "while following {topic}: {e}")
                }
            }
        }
        return Ok(());
    }

    for (p, start, end) in ranges {
        if start >= end {
            continue;
        }
        assign(&consumer, topic, &[(p, start)])?;
        let mut progress = Instant::now();
        let mut last_error = None;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.partition() as u32 == p => {
                    progress = Instant::now();
                    let offset = m.offset();
                    each(p, record_of(&m))?;
                    left -= 1;
                    if left == 0 {
                        return Ok(());
                    }
                    if offset + 1 >= end {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                // The end: under read_committed, aborted records and
                // transaction markers before `end` are skipped to it.
                Some(Err(KafkaError::PartitionEOF(eof))) if eof as u32 == p => break,
                Some(Err(e)) => last_error = Some(e.to_string()),
                None => {}
            }
            if progress.elapsed() > STALL {
                return Err(Error::Unreachable {
                    brokers: conn.brokers.clone(),
                    reason: format!(
                        "partition {p} of topic {topic} gave no records for {} s (last error: {})",
                        STALL.as_secs(),
                        last_error.as_deref().unwrap_or("none")
                    ),
                }
                .into());
            }
        }
    }
    Ok(())
}
