//! Apache Kafka through rdkafka (librdkafka, built from source by the crate):
//! what `weir topic`, `weir produce` and `weir consume` do when given
//! `--brokers` (or `WEIR_BROKERS`), in the same JSON-lines terms as on the
//! embedded log.
//!
//! - [`Connection`]: the bootstrap servers and any librdkafka property passed
//!   through (SASL, TLS, ...); [`Connection::probe`] reaches the cluster in
//!   bounded time or fails with [`Error::Unreachable`] naming the servers.
//! - [`admin`]: create, list, describe and delete topics.
//! - [`produce`]: records to a topic, partitioned by key with the embedded
//!   log's murmur2 (so a key lands on the same partition number on both);
//!   every delivery is checked, and a refused record is an error naming it.
//! - [`consume`]: a topic's records, read_committed by default, to the end of
//!   its partitions as they were at the start, or following new ones.
//!
//! - [`backend`]: a pipeline's source, sink and state on Kafka (consumer
//!   groups, transactions, changelogs) behind the engine's log-backend seam.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;

pub mod admin;
pub mod backend;
pub mod consume;
pub mod produce;

/// How long reaching the cluster (and each request after it) may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How long after a connection failure the other brokers may take to answer
/// before the cluster counts as unreachable.
const DOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a consumer whose prefetch queue is full waits before it fetches
/// again: librdkafka's default, 1 s, would hold back a reader that drains
/// the queue faster (a task, a changelog restore) for up to a second.
pub(crate) const FETCH_BACKOFF_MS: &str = "10";

/// What went wrong talking to Kafka, where a caller may branch on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No broker answered within [`TIMEOUT`], or every one refused.
    #[error("cannot reach Kafka at {brokers}: {reason}")]
    Unreachable {
        /// The bootstrap servers tried.
        brokers: String,
        /// What librdkafka said last.
        reason: String,
    },
    /// The topic is not on the cluster.
    #[error(
        "no topic named {topic} on Kafka at {brokers} (topics: {known}); create it with `weir topic create {topic} --partitions N --brokers {brokers}`"
    )]
    NoTopic {
        /// The topic asked for.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// The topics there are, comma-separated, or `none`.
        known: String,
    },
    /// A reset of an application one of whose instances runs.
    #[error(
        "pipeline {0} is running on Kafka (its consumer group has members): stop every instance before resetting it"
    )]
    Running(String),
    /// `weir topic create` of a topic that is there already.
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// A partition number past the topic's partitions.
    #[error("topic {topic} has partitions 0 to {last}; there is no partition {partition}")]
    NoPartition {
        /// The topic.
        topic: String,
        /// Its last partition.
        last: u32,
        /// The partition asked for.
        partition: u32,
    },
    /// Any other error from librdkafka, with what was being done.
    #[error("{what}: {error}")]
    Client {
        /// What Weir was doing.
        what: String,
        /// librdkafka's error (not a `source`: rdkafka's errors print their
        /// own cause, which the chain would print twice).
        error: KafkaError,
    },
}

/// Wraps a librdkafka error with what was being done.
pub(crate) fn client_error(what: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
    let what = what.into();
    move |error| Error::Client { what, error }
}

/// Where the cluster is and how to talk to it.
#[derive(Clone, Debug)]
pub struct Connection {
    /// `bootstrap.servers`: comma-separated `host:port`.
    pub brokers: String,
    /// Other librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*`,
    /// ...), set after Weir's own, so they win.
    pub properties: Vec<(String, String)>,
}

impl Connection {
    /// A connection to these bootstrap servers with no other properties.
    pub fn new(brokers: impl Into<String>) -> Self {
        Connection {
            brokers: brokers.into(),
            properties: Vec::new(),
        }
    }

    /// A librdkafka configuration: the bootstrap servers, `extra` (Weir's
    /// settings for one kind of client), then the user's properties.
    pub(crate) fn config(&self, extra: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // Fail a request, not the whole client, when the cluster is slow.
        c.set("socket.timeout.ms", TIMEOUT.as_millis().to_string());
        for (k, v) in extra {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A consumer that joins no group (partitions are assigned by hand), reading
    /// read_committed unless told otherwise, and reporting the end of each
    /// partition.
    pub(crate) fn consumer(&self, read_committed: bool) -> Result<BaseConsumer<Ctx>, Error> {
        let isolation = if read_committed {
            "read_committed"
        } else {
            "read_uncommitted"
        };
        self.config(&[
            ("isolation.level", isolation),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("fetch.queue.backoff.ms", FETCH_BACKOFF_MS),
            // librdkafka assigns partitions only within a group; this one
            // never joins, subscribes or commits.
            ("group.id", "weir-cli"),
        ])
        .create_with_context(Ctx::default())
        .map_err(client_error(format!(
            "cannot make a Kafka consumer for {}",
            self.brokers
        )))
    }

    /// Reaches the cluster with `consumer` and returns its metadata (one
    /// topic's, or every topic's): fails fast when every broker refuses the
    /// connection, and after [`TIMEOUT`] when none answers.
    pub(crate) fn probe(
        &self,
        consumer: &BaseConsumer<Ctx>,
        topic: Option<&str>,
    ) -> Result<Metadata, Error> {
        let start = Instant::now();
        loop {
            match consumer.fetch_metadata(topic, Duration::from_millis(250)) {
                Ok(md) if !md.brokers().is_empty() => {
                    consumer.context().answered();
                    return Ok(md);
                }
                Ok(_) => {}
                Err(e) => consumer.context().note(format!("{e}")),
            }
            // Serves librdkafka's error events (all brokers down, name
            // resolution, authentication) into the context.
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(50)) {
                consumer.context().note(format!("{e}"));
            }
            if let Some(down) = consumer.context().down() {
                // Every broker refused (or one failed and none answered
                // since): librdkafka would go on retrying; give up now.
                if down.all || down.at.elapsed() >= DOWN_GRACE {
                    return Err(self.unreachable(down.reason));
                }
            }
            if start.elapsed() >= TIMEOUT {
                let reason = consumer
                    .context()
                    .last()
                    .unwrap_or_else(|| "no broker answered".to_string());
                return Err(self.unreachable(format!(
                    "no answer within {} s ({reason})",
                    TIMEOUT.as_secs()
                )));
            }
        }
    }

    fn unreachable(&self, reason: String) -> Error {
        Error::Unreachable {
            brokers: self.brokers.clone(),
            reason,
        }
    }

    /// The number of partitions of `topic`, or [`Error::NoTopic`].
    pub(crate) fn partitions(
        &self,
        consumer: &BaseConsumer<Ctx>,
        topic: &str,
    ) -> Result<u32, Error> {
        let md = self.probe(consumer, Some(topic))?;
        match md.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len() as u32)
            }
            _ => {
                let all = self.probe(consumer, None)?;
                let mut names: Vec<&str> = all
                    .topics()
                    .iter()
                    .map(|t| t.name())
                    .filter(|n| !admin::is_internal(n))
                    .collect();
                names.sort_unstable();
                Err(Error::NoTopic {
                    topic: topic.to_string(),
                    brokers: self.brokers.clone(),
                    known: if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    },
                })
            }
        }
    }
}

/// The librdkafka client context of Weir's clients: it remembers the
/// client-wide errors librdkafka reports, so that a cluster that cannot be
/// reached is an error instead of a silent retry loop.
#[derive(Default)]
pub struct Ctx {
    errors: Mutex<Errors>,
}

#[derive(Default)]
struct Errors {
    last: Option<String>,
    /// The first connection failure since the cluster last answered.
    down: Option<Down>,
}

#[derive(Clone)]
struct Down {
    reason: String,
    /// librdkafka said every broker is down.
    all: bool,
    at: Instant,
}

/// librdkafka's reason without its trailing timing, `(after 0ms in state
/// CONNECT)`, so that the same failure reads the same every time.
fn plain_reason(reason: &str) -> String {
    match reason.rfind(" (after ") {
        Some(i) if reason.ends_with(')') => reason[..i].to_string(),
        _ => reason.to_string(),
    }
}

impl Ctx {
    fn note(&self, text: String) {
        if let Ok(mut e) = self.errors.lock() {
            e.last = Some(text);
        }
    }

    fn answered(&self) {
        if let Ok(mut e) = self.errors.lock() {
            e.down = None;
        }
    }

    /// The first connection failure since the cluster last answered.
    fn down(&self) -> Option<Down> {
        self.errors.lock().ok().and_then(|e| e.down.clone())
    }

    fn last(&self) -> Option<String> {
        self.errors.lock().ok().and_then(|e| e.last.clone())
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        // librdkafka's own log is for debugging; errors that matter reach
        // `error` below and are reported by what Weir was doing.
        tracing::debug!(target: "weir::kafka", "librdkafka {level:?} {fac}: {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "weir::kafka", "librdkafka: {error}: {reason}");
        use rdkafka::types::RDKafkaErrorCode as Code;
        let text = if reason.is_empty() {
            error.to_string()
        } else {
            plain_reason(reason)
        };
        if let Ok(mut e) = self.errors.lock() {
            match error.rdkafka_error_code() {
                Some(Code::AllBrokersDown) => {
                    e.down = Some(Down {
                        reason: text.clone(),
                        all: true,
                        at: Instant::now(),
                    });
                }
                Some(Code::BrokerTransportFailure | Code::Resolve | Code::Authentication)
                    if e.down.is_none() =>
                {
                    e.down = Some(Down {
                        reason: text.clone(),
                        all: false,
                        at: Instant::now(),
                    });
                }
                _ => {}
            }
            e.last = Some(text);
        }
    }
}

impl ConsumerContext for Ctx {}

/// Runs an admin future to its end on this thread (rdkafka's admin client
/// completes it from its own polling thread, which wakes this one).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_are_cut_from_librdkafka_reasons() {
        assert_eq!(
            plain_reason(
                "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)"
            ),
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
        );
        assert_eq!(
            plain_reason(
                "b:9/bootstrap: Connect to ipv4#10.0.0.1:9 failed: Connection refused (after 1ms in state CONNECT, 1 identical error(s) suppressed)"
            ),
            "b:9/bootstrap: Connect to ipv4#10.0.0.1:9 failed: Connection refused"
        );
        assert_eq!(plain_reason("1/1 brokers are down"), "1/1 brokers are down");
    }

    #[test]
    fn a_client_error_prints_what_was_done_then_why() {
        let e = anyhow::Error::from(Error::Client {
            what: "cannot read topic t".into(),
            error: KafkaError::Global(rdkafka::types::RDKafkaErrorCode::UnknownGroup),
        });
        assert_eq!(
            format!("{e:#}"),
            "cannot read topic t: Global error: UnknownGroup (Local: Unknown group)"
        );
    }
}
