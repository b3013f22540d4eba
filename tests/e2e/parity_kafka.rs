//! Parity with Kafka Streams on a real Kafka broker: every scenario of
//! `tests/parity/` run by `weir run` on the run's broker (exactly-once
//! transactions, changelogs, the consumer group, a join reading two
//! topics), compared with Kafka Streams' goldens as parity.rs compares the
//! embedded `weir run`; the compared stores after a second run on a fresh
//! data directory, which restores them from the changelogs.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde_json::{Value, json};

use crate::kafka::brokers;
use crate::parity::{
    OUT, asserted, compared, differs, modules, pipeline_name, scan_state, state_differs,
    state_golden,
};
use crate::util::{run, tempdir, weir};

/// Names no other test (or an earlier run on a kept broker) uses.
fn unique() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Delivery failures of the inputs' producer.
#[derive(Default)]
struct Refusals(std::sync::Mutex<Vec<String>>);

impl ClientContext for Refusals {}

impl ProducerContext for Refusals {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.0
                .lock()
                .unwrap()
                .push(format!("timestamp {:?}: {e}", m.timestamp()));
        }
    }
}

/// Writes an input file's records to `topic` (one partition), every field
/// as given. Not `weir produce`, which stamps a record at 0 with the current
/// time, as Kafka's clients do (README); a record at 0 goes without a
/// timestamp, which Weir reads as 0, as Weir's own pipeline writes do.
fn produce_kafka(topic: &str, file: &Path) {
    let producer: BaseProducer<Refusals> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create_with_context(Refusals::default())
        .unwrap();
    let text = std::fs::read_to_string(file).unwrap();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let r = weir::jsonl::parse_record(line, 0)
            .unwrap_or_else(|e| panic!("{}:{}: {e}", file.display(), n + 1));
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        let mut rec: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(topic)
            .partition(0)
            .headers(headers)
            .timestamp(if r.timestamp == 0 { -1 } else { r.timestamp });
        rec.key = r.key.as_deref();
        rec.payload = r.value.as_deref();
        producer
            .send(rec)
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("{}:{}: {e}", file.display(), n + 1));
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let refused = producer.context().0.lock().unwrap();
    assert!(
        refused.is_empty(),
        "{}: Kafka refused {refused:?}",
        file.display()
    );
}

/// `weir run VARIANT.toml --until-caught-up` on the run's Kafka broker
/// (exactly-once, its default batch and commit interval, the pipeline's own
/// cache setting), its name and topics made unique (`-SUFFIX`): the records
/// of `out`, read_committed; and (`scan`) what `weir state scan` shows of
/// its step `count` after a second run on a fresh data directory, whose
/// task restores its state from the changelog, by key and window start.
fn weir_run_kafka(
    dir: &Path,
    variant: &str,
    topics: &[String],
    scan: bool,
) -> (Vec<Value>, Vec<Value>) {
    let s = unique();
    let tmp = tempdir();
    let data = std::cell::RefCell::new(tmp.path().join("data"));
    let cmd = || {
        let mut c = weir();
        c.env("WEIR_DATA", &*data.borrow());
        c.env("WEIR_MODULE_PATH", modules());
        c.env("WEIR_BROKERS", brokers());
        c
    };
    // The pipeline's own name and topics, suffixed (step names and join
    // kinds stay).
    let text = std::fs::read_to_string(dir.join(format!("{variant}.toml"))).unwrap();
    let mut top = true;
    let file: String = text
        .lines()
        .map(|l| {
            top &= !l.starts_with('[');
            let field = l.split('=').next().unwrap_or("").trim();
            let renamed = (top && field == "name") || ["input", "output", "with"].contains(&field);
            // Every quoted name on the line (`input` may list several).
            match l.split_once('=') {
                Some((f, v)) if renamed => {
                    let parts: Vec<&str> = v.split('"').collect();
                    let v: Vec<String> = parts
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            if i % 2 == 1 {
                                format!("{p}-{s}")
                            } else {
                                p.to_string()
                            }
                        })
                        .collect();
                    format!("{f}={}\n", v.join("\""))
                }
                _ => format!("{l}\n"),
            }
        })
        .collect();
    assert!(file.contains(&format!("output = \"{OUT}-{s}\"")), "{file}");
    let path = tmp.path().join(format!("{variant}.toml"));
    std::fs::write(&path, file).unwrap();
    for t in topics {
        let topic = format!("{t}-{s}");
        let r = run(cmd().args(["topic", "create", &topic, "--partitions", "1"]));
        assert!(r.status.success(), "{}", r.stderr);
        produce_kafka(&topic, &dir.join(format!("{t}.jsonl")));
    }
    let r = run(cmd()
        .arg("run")
        .arg(&path)
        .args(["--until-caught-up", "--quiet"]));
    assert!(
        r.status.success(),
        "weir run {variant} on Kafka: {}",
        r.stderr
    );
    let r = run(cmd().args(["consume", &format!("{OUT}-{s}"), "--from-beginning"]));
    assert!(r.status.success(), "{}", r.stderr);
    let out = r
        .stdout
        .lines()
        .map(|l| {
            let mut v = compared(l);
            v["topic"] = json!(OUT);
            v
        })
        .collect();
    let mut state = Vec::new();
    if scan {
        *data.borrow_mut() = tmp.path().join("restored");
        let r = run(cmd()
            .arg("run")
            .arg(&path)
            .args(["--until-caught-up", "--quiet"]));
        assert!(r.status.success(), "weir run {variant} again: {}", r.stderr);
        let name = format!("{}-{s}", pipeline_name(dir, variant));
        state = scan_state(cmd(), &name);
    }
    (out, state)
}

/// Runs every variant of a scenario with `weir run` on the real Kafka
/// broker (transactions, changelogs, the consumer group, two-sided joins
/// reading two topics) and asserts Kafka Streams' outputs as the embedded
/// `weir run` is held to them.
fn check_kafka(name: &str) {
    let (dir, variants, topics) = asserted(name);
    let mut failures = String::new();
    for (v, want) in &variants {
        let want_state = state_golden(&dir, v);
        let (got, state) = weir_run_kafka(&dir, v, &topics, want_state.is_some());
        failures += &differs(&dir, name, v, "weir run on Kafka", &got, want);
        let how = "a restore from the changelog on Kafka";
        failures += &state_differs(name, v, how, want_state.as_deref(), &state);
    }
    assert!(failures.is_empty(), "{failures}");
}

/// Every scenario above with `weir run` on Kafka.
#[test]
fn parity_on_kafka_word_count() {
    check_kafka("wordcount");
}

#[test]
fn parity_on_kafka_word_count_over_merged_inputs() {
    check_kafka("merged-inputs");
}

#[test]
fn parity_on_kafka_tumbling_windows_update_and_close() {
    check_kafka("tumbling");
}

#[test]
fn parity_on_kafka_hopping_windows() {
    check_kafka("hopping");
}

#[test]
fn parity_on_kafka_sliding_windows_update_and_close() {
    check_kafka("sliding");
}

#[test]
fn parity_on_kafka_session_windows_update_and_close() {
    check_kafka("session");
}

#[test]
fn parity_on_kafka_session_bridging_a_closed_session() {
    check_kafka("session-bridge");
}

#[test]
fn parity_on_kafka_session_stretched_back_to_a_closed_session() {
    check_kafka("session-stretch");
}

#[test]
fn parity_on_kafka_global_table_joins() {
    check_kafka("global-table");
}

#[test]
fn parity_on_kafka_versioned_table_joins() {
    check_kafka("versioned-table");
}

#[test]
fn parity_on_kafka_versioned_table_joins_with_grace() {
    check_kafka("versioned-grace");
}

#[test]
fn parity_on_kafka_versioned_table_table_joins() {
    check_kafka("versioned-tables");
}

#[test]
fn parity_on_kafka_grouped_table_counts() {
    check_kafka("grouped-table");
}

#[test]
fn parity_on_kafka_table_filtered_then_grouped() {
    check_kafka("table-map-grouped");
}

#[test]
fn parity_on_kafka_table_filtered_then_foreign_key_joined() {
    check_kafka("table-map-fk");
}

#[test]
fn parity_on_kafka_table_filter_and_map_values() {
    check_kafka("table-map");
}

#[test]
fn parity_on_kafka_table_filter_and_map_values_before_a_join() {
    check_kafka("table-map-join");
}

#[test]
fn parity_on_kafka_stream_table_joins() {
    check_kafka("stream-table");
}

#[test]
fn parity_on_kafka_table_table_joins() {
    check_kafka("table-table");
}

#[test]
fn parity_on_kafka_foreign_key_joins() {
    check_kafka("fk-join");
}

#[test]
fn parity_on_kafka_random_foreign_key_joins() {
    check_kafka("random-fk-join");
}

#[test]
fn parity_on_kafka_joins_whose_joiner_gives_no_value() {
    check_kafka("no-value-joins");
}

#[test]
fn parity_on_kafka_stream_stream_joins() {
    check_kafka("stream-stream");
}

#[test]
fn parity_on_kafka_stream_stream_joins_at_the_edges() {
    check_kafka("stream-stream-edges");
}

#[test]
fn parity_on_kafka_random_windowed_counts() {
    check_kafka("random-aggregates");
}

#[test]
fn parity_on_kafka_random_joins() {
    check_kafka("random-joins");
}
