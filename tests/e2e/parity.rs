//! Parity with Kafka Streams: every scenario of `tests/parity/` (a Weir
//! pipeline per variant, its input topics, and what Kafka Streams 4.4's
//! TopologyTestDriver output for the equivalent topology, committed as
//! `VARIANT.kafka-streams.jsonl` by `tests/parity/regen.sh`) run through the
//! real `weir`, whose outputs must equal Kafka Streams' exactly.
//!
//! - `weir test` with `--batch 1` and `cache_max_bytes = 0` (each pipeline
//!   file says so) is TopologyTestDriver's record-at-a-time run with its
//!   record cache off: the records of the topic `out` (key, value, headers
//!   with the window's bounds, timestamp) must be Kafka Streams' in order.
//!   Dead letters are Weir's own (a null-keyed record at an aggregate, a
//!   null line at split_words): Kafka Streams drops those records, so the
//!   dead-letter topic is not compared (docs/design.md, known limits).
//! - Variants named `*-cached` leave `cache_max_bytes` at its default (the
//!   state cache on), and Kafka Streams ran them with its record cache on
//!   (TopologyTestDriver flushes it after every record, as `weir test`
//!   commits after every batch).
//! - `weir run` on the embedded log (batches of 500, commits by time):
//!   updates merge, so an aggregate or a table-table join is compared by its
//!   final value per key (and window; for sessions, the sessions left), which
//!   must be Kafka Streams' final values; the other joins must give the same
//!   records. For time windows without the cache and unwindowed counts,
//!   what `weir state scan` then shows must be what Kafka Streams' store
//!   held at the end (`VARIANT.kafka-streams-state.jsonl`; for windows,
//!   those within retention).
//! - `parity_kafka::parity_on_kafka_*` (parity_kafka.rs): the same `weir
//!   run` on the run's real Kafka broker (exactly-once transactions,
//!   changelogs, the consumer group, a join reading two topics), compared
//!   as on the embedded log; the stores are compared after a second run on
//!   a fresh data directory, which restores them from the changelogs.
//!
//! The `random-*` scenarios run the same windows and joins over 300 (200 +
//! 200) generated records with out-of-order times, null keys and values and
//! headers (tests/parity/gen_random.py wrote them).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::{Value, json};
use weir::backend::memory::MemoryBackend;
use weir::backend::{Backend, Commit, TopicConfig};
use weir::pipeline::RunOptions;
use weir::runtime::{Runtime, RuntimeOptions};

use crate::util::{guest, root, run, shared_cache, tempdir, weir};

pub(crate) const OUT: &str = "out";

pub(crate) fn modules() -> PathBuf {
    guest("count").parent().unwrap().to_path_buf()
}

/// A scenario's variants (its `.toml` files, sorted) and input topics (its
/// `.jsonl` files that are not goldens).
fn scenario(name: &str) -> (PathBuf, Vec<String>, Vec<String>) {
    let dir = root().join("tests/parity").join(name);
    let mut variants = Vec::new();
    let mut topics = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let f = e.unwrap().file_name().into_string().unwrap();
        if let Some(v) = f.strip_suffix(".toml") {
            variants.push(v.to_string());
        } else if let Some(t) = f.strip_suffix(".jsonl")
            && !t.contains(".kafka-streams")
        {
            topics.push(t.to_string());
        }
    }
    variants.sort();
    topics.sort();
    assert!(!variants.is_empty(), "{}: no pipeline", dir.display());
    (dir, variants, topics)
}

/// A record as compared: topic, key, value, headers (when any), timestamp.
pub(crate) fn compared(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    let mut o = serde_json::Map::new();
    for f in ["topic", "key", "value", "headers", "timestamp"] {
        match v.get(f) {
            Some(Value::Object(h)) if f == "headers" && h.is_empty() => {}
            Some(x) => {
                o.insert(f.into(), x.clone());
            }
            None if f == "key" || f == "value" => {
                o.insert(f.into(), Value::Null);
            }
            None => {}
        }
    }
    Value::Object(o)
}

fn golden(dir: &Path, variant: &str) -> Vec<Value> {
    let path = dir.join(format!("{variant}.kafka-streams.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (bash tests/parity/regen.sh --update)",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(compared)
        .collect()
}

/// What Kafka Streams' store held at the end of the run (as an interactive
/// query reads it: for windows, those within their retention), for the
/// variants whose store regen.sh compares (time windows without the record
/// cache, unwindowed counts), by key and window start.
pub(crate) fn state_golden(dir: &Path, variant: &str) -> Option<Vec<Value>> {
    let path = dir.join(format!("{variant}.kafka-streams-state.jsonl"));
    let text = std::fs::read_to_string(path).ok()?;
    let mut state: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    state.sort_by_key(stored_at);
    Some(state)
}

/// A stored entry's key and window start, to sort by.
fn stored_at(v: &Value) -> (String, Option<i64>) {
    (v["key"].to_string(), v["window"]["start"].as_i64())
}

fn show(recs: &[Value]) -> String {
    recs.iter()
        .map(|r| format!("  {r}\n"))
        .collect::<Vec<_>>()
        .join("")
}

/// `weir test VARIANT.toml --batch 1`: the records of `out`.
fn weir_test(dir: &Path, variant: &str, topics: &[String]) -> Vec<Value> {
    let mut cmd = weir();
    cmd.env("WEIR_MODULE_PATH", modules());
    cmd.env_remove("WEIR_DATA");
    cmd.arg("test").arg(dir.join(format!("{variant}.toml")));
    cmd.args(["--batch", "1"]);
    for t in topics {
        cmd.arg("--input")
            .arg(format!("{t}={}", dir.join(format!("{t}.jsonl")).display()));
    }
    let r = run(&mut cmd);
    assert!(r.status.success(), "weir test {variant}: {}", r.stderr);
    r.stdout
        .lines()
        .map(compared)
        .filter(|v| v["topic"] == OUT)
        .collect()
}

/// `weir run VARIANT.toml` on a fresh embedded log (its default batch and
/// commit interval; the pipeline's own cache setting): the records of `out`,
/// and (`scan`) what `weir state scan` then shows of its step `count`, by
/// key and window start.
fn weir_run_log(
    dir: &Path,
    variant: &str,
    topics: &[String],
    scan: bool,
) -> (Vec<Value>, Vec<Value>) {
    let tmp = tempdir();
    let data = tmp.path().join("data");
    let cmd = || {
        let mut c = weir();
        c.env("WEIR_DATA", &data);
        c.env("WEIR_MODULE_PATH", modules());
        c
    };
    for t in topics {
        let r = run(cmd().args(["topic", "create", t, "--partitions", "1"]));
        assert!(r.status.success(), "{}", r.stderr);
        let input = File::open(dir.join(format!("{t}.jsonl"))).unwrap();
        let out = cmd()
            .args(["produce", t])
            .stdin(Stdio::from(input))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "produce {t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = run(cmd()
        .arg("run")
        .arg(dir.join(format!("{variant}.toml")))
        .args(["--until-caught-up", "--quiet"]));
    assert!(r.status.success(), "weir run {variant}: {}", r.stderr);
    let r = run(cmd().args(["consume", OUT, "--from-beginning"]));
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
    let state = if scan {
        scan_state(cmd(), &pipeline_name(dir, variant))
    } else {
        Vec::new()
    };
    (out, state)
}

/// The `name` of VARIANT.toml.
pub(crate) fn pipeline_name(dir: &Path, variant: &str) -> String {
    let toml = std::fs::read_to_string(dir.join(format!("{variant}.toml"))).unwrap();
    toml.lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_string()
}

/// `weir state scan NAME count` (with `cmd`'s data directory and
/// brokers), by key and window start.
pub(crate) fn scan_state(mut cmd: std::process::Command, name: &str) -> Vec<Value> {
    let r = run(cmd.args(["state", "scan", name, "count", "--max", "100000"]));
    assert!(r.status.success(), "weir state scan {name}: {}", r.stderr);
    let mut state: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    state.sort_by_key(stored_at);
    state
}

/// `pipeline::run` of VARIANT.toml on a memory backend whose reads deliver
/// at most `n` records each (as a Kafka consumer delivers part of a topic
/// while its fetch is on its way): the records of `out`.
fn run_partial_reads(dir: &Path, variant: &str, topics: &[String], n: usize) -> Vec<Value> {
    let tmp = tempdir();
    let text = std::fs::read_to_string(dir.join(format!("{variant}.toml"))).unwrap();
    let text = text.replace(
        "module = \"",
        &format!("module = \"{}/", modules().display()),
    );
    let file = tmp.path().join(format!("{variant}.toml"));
    std::fs::write(&file, text).unwrap();
    let pipeline = weir::pipeline::config::load(&file).unwrap();
    let memory = MemoryBackend::new();
    for t in topics {
        let topic = memory.create_topic(t, TopicConfig::partitions(1)).unwrap();
        let path = dir.join(format!("{t}.jsonl"));
        let mut c = Commit::default();
        for (i, line) in std::fs::read_to_string(&path).unwrap().lines().enumerate() {
            let r = weir::jsonl::parse_record(line, 0)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
            c.append(&topic, 0, &r);
        }
        memory.commit(c).unwrap();
    }
    memory.deliver_at_most(Some(n));
    let backend: Arc<dyn Backend> = Arc::new(memory.clone());
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(shared_cache()),
        ..RuntimeOptions::default()
    })
    .unwrap();
    let options = RunOptions {
        until_caught_up: true,
        ..RunOptions::default()
    };
    weir::pipeline::run(
        backend,
        &pipeline,
        &runtime,
        &options,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    memory
        .records(OUT, 0)
        .iter()
        .map(|r| {
            let mut v = compared(&Value::Object(weir::jsonl::record_json(r)).to_string());
            v["topic"] = json!(OUT);
            v
        })
        .collect()
}

/// The last value per key and window (a session: per key and bounds),
/// leaving out keys and windows whose last value is a tombstone, and
/// sessions inside a larger one of their key: merged away (Kafka Streams
/// with its cache does not tombstone a closed session it merges, and Weir
/// never emits one that came and went within a commit).
fn finals(recs: &[Value]) -> BTreeMap<String, Value> {
    let bound = |r: &Value, h: &str| -> Option<i64> {
        r["headers"][h].as_str().and_then(|t| t.parse().ok())
    };
    let mut m: BTreeMap<(String, Option<i64>, Option<i64>), Value> = BTreeMap::new();
    for r in recs {
        let at = (
            r["key"].to_string(),
            bound(r, "weir.window.start"),
            bound(r, "weir.window.end"),
        );
        m.insert(at, r["value"].clone());
    }
    m.retain(|_, v| !v.is_null());
    let inside = |(k, s, e): &(String, Option<i64>, Option<i64>)| {
        m.keys()
            .any(|(k2, s2, e2)| k2 == k && (s2, e2) != (s, e) && s2 <= s && e <= e2 && s.is_some())
    };
    m.iter()
        .filter(|(at, _)| !inside(at))
        .map(|((k, s, e), v)| (format!("{k} {s:?} {e:?}"), v.clone()))
        .collect()
}

/// A scenario's directory, its asserted variants with their goldens, and
/// its input topics.
type Asserted = (PathBuf, Vec<(String, Vec<Value>)>, Vec<String>);

/// The variants of a scenario (every one is asserted), with their goldens.
pub(crate) fn asserted(name: &str) -> Asserted {
    let (dir, variants, topics) = scenario(name);
    let mut out = Vec::new();
    for v in variants {
        let want = golden(&dir, &v);
        assert!(
            !want.is_empty(),
            "{name}/{v}: an empty golden proves nothing"
        );
        out.push((v, want));
    }
    (dir, out, topics)
}

/// Compares a `weir run` (batches of 500, commits by time) with Kafka
/// Streams: updates merge, so an aggregate or a table-table join is
/// compared by its final values; the other joins must give the same
/// records. Returns the difference, if any.
pub(crate) fn differs(
    dir: &Path,
    name: &str,
    v: &str,
    how: &str,
    got: &[Value],
    want: &[Value],
) -> String {
    let pipeline = std::fs::read_to_string(dir.join(format!("{v}.toml"))).unwrap();
    if pipeline.contains("emit_after") {
        // Which results are still held when the input ends depends on which
        // updates reached the buffer (one per key per batch or commit here,
        // one per commit in Kafka Streams with its cache): there are no
        // final values to compare, only the aggregate's store (compared
        // beside this) and `weir test --batch 1`'s records.
        return String::new();
    }
    if pipeline.contains("kind = \"aggregate\"")
        || pipeline.contains("as_table = true")
        || pipeline.contains("foreign_key")
    {
        if finals(got) != finals(want) {
            return format!(
                "{name}/{v}: {how}'s final values differ from Kafka Streams'\n--- Kafka Streams\n{:#?}\n--- {how}\n{:#?}\n",
                finals(want),
                finals(got)
            );
        }
    } else if got != want {
        return format!(
            "{name}/{v}: {how} differs from Kafka Streams\n--- Kafka Streams ({} records)\n{}--- {how} ({} records)\n{}",
            want.len(),
            show(want),
            got.len(),
            show(got)
        );
    }
    String::new()
}

/// Runs every variant of a scenario both ways on the embedded log and
/// asserts Kafka Streams' outputs.
fn check(name: &str) {
    let (dir, variants, topics) = asserted(name);
    let mut failures = String::new();
    for (v, want) in &variants {
        let got = weir_test(&dir, v, &topics);
        if got != *want {
            failures += &format!(
                "{name}/{v}: weir test --batch 1 differs from Kafka Streams\n--- Kafka Streams ({} records)\n{}--- weir ({} records)\n{}",
                want.len(),
                show(want),
                got.len(),
                show(&got)
            );
        }
        let want_state = state_golden(&dir, v);
        let (cached, state) = weir_run_log(&dir, v, &topics, want_state.is_some());
        failures += &differs(&dir, name, v, "weir run", &cached, want);
        failures += &state_differs(name, v, "weir run", want_state.as_deref(), &state);
    }
    assert!(failures.is_empty(), "{failures}");
}

/// Compares what `weir state scan` showed after `how` with Kafka Streams'
/// store at the end, when regen.sh compares the variant's store.
pub(crate) fn state_differs(
    name: &str,
    v: &str,
    how: &str,
    want: Option<&[Value]>,
    got: &[Value],
) -> String {
    match want {
        Some(want) if want != got => format!(
            "{name}/{v}: weir state scan after {how} differs from Kafka Streams' store\n--- Kafka Streams ({} entries)\n{}--- weir ({} entries)\n{}",
            want.len(),
            show(want),
            got.len(),
            show(got)
        ),
        _ => String::new(),
    }
}

/// split_words + count: a repartition, out-of-order lines, a null key, a
/// null value, headers kept through the map (as Kafka Streams' flatMap
/// keeps them) to the counts.
#[test]
fn parity_word_count() {
    check("wordcount");
}

/// Word count over two input topics (`input = ["lines", "more-lines"]`),
/// merged in timestamp order as Kafka Streams' `stream(List.of(..))`.
#[test]
fn parity_word_count_over_merged_inputs() {
    check("merged-inputs");
}

/// Tumbling windows with grace, emit update and close (`suppress`): late
/// records dropped, a null value counted, a null key dropped.
#[test]
fn parity_tumbling_windows_update_and_close() {
    check("tumbling");
}

/// Hopping windows (size 10 s, advance 3 s, grace 2 s), emit update and
/// close.
#[test]
fn parity_hopping_windows() {
    check("hopping");
}

/// Session windows (gap 5 s, grace 2 s), update (tombstones for merged
/// sessions) and close; a record next to a closed session starts its own.
#[test]
fn parity_session_windows_update_and_close() {
    check("session");
}

/// A record that bridges a closed session to the key's next one: with the
/// record cache, Kafka Streams merges all three (its cache still holds the
/// closed session); without it, the closed one is out of reach.
#[test]
fn parity_session_bridging_a_closed_session() {
    check("session-bridge");
}

/// Closed sessions reached again, with the state cache, by records that
/// stretch a later session of their key back to them (Kafka Streams' record
/// cache keeps them while the key's last session can still grow).
#[test]
fn parity_session_stretched_back_to_a_closed_session() {
    check("session-stretch");
}

/// Sliding windows (time difference 5 s, grace 2 s), update and close:
/// records before the first 5 s sharing `[0, 5 s]`, out-of-order records
/// that make left and right windows of their neighbours, equal timestamps,
/// late records dropped, a null key and a null value skipped.
#[test]
fn parity_sliding_windows_update_and_close() {
    check("sliding");
}

/// Stream-global table joins, inner and left, looking up the user a value
/// names and the record's own key: the table (read whole before the
/// stream) deleted, updated, with a record timed after every order, a
/// numeric user, records without a key, a value or a user.
#[test]
fn parity_global_table_joins() {
    check("global-table");
}

/// Stream-table joins over a versioned table (`history = "5s"`, Kafka
/// Streams' versioned stores): stream records meet the value their key had
/// at their time, out of order on either side, tombstones, table records
/// past the history dropped, stream records past it meeting only the
/// newest value.
#[test]
fn parity_versioned_table_joins() {
    check("versioned-table");
}

/// Stream-table joins over a versioned table whose stream records wait
/// `grace` for late table records (Kafka Streams' `Joined.withGracePeriod`):
/// they join in timestamp order (then key, then arrival) once the buffer's
/// time is `grace` past theirs, late ones join at once, and what is still
/// buffered at the end is not emitted.
#[test]
fn parity_versioned_table_joins_with_grace() {
    check("versioned-grace");
}

/// Table-table joins of two versioned tables (`as_table` with `history`,
/// Kafka Streams' KIP-914): an update older than its key's newest on its
/// side, or than the side's history, joins nothing; tombstones, keyless
/// records and equal timestamps as without versions.
#[test]
fn parity_versioned_table_table_joins() {
    check("versioned-tables");
}

/// A table's rows counted per group (`from_table = true` after a grouping
/// map, Kafka Streams' `table.groupBy(..).count()`): a row that moves
/// leaves its old group's count, a deleted row and a row its map rejects
/// leave theirs, a row that stays in its group counts once.
#[test]
fn parity_grouped_table_counts() {
    check("grouped-table");
}

/// A table's rows filtered and mapped (`as_table = true` on a map step,
/// Kafka Streams' `KTable.filter` + `mapValues`): rows the function drops
/// become deletions, deletions pass on, keyless records are skipped, out
/// of order too.
#[test]
fn parity_table_filter_and_map_values() {
    check("table-map");
}

/// The same in front of table-table inner, left and outer joins: a row
/// that loses its profile leaves the join as a deletion does.
#[test]
fn parity_table_filter_and_map_values_before_a_join() {
    check("table-map-join");
}

/// A table filtered (`as_table = true` with pick_field's `only_if`) and
/// then grouped and counted (`from_table`): a row that turns inactive
/// leaves its group as a deleted row does.
#[test]
fn parity_table_filtered_then_grouped() {
    check("table-map-grouped");
}

/// Open orders (a table filtered with `as_table`) in foreign-key inner and
/// left joins: an order that closes unsubscribes as a deleted one does.
#[test]
fn parity_table_filtered_then_foreign_key_joined() {
    check("table-map-fk");
}

/// Stream-table inner and left joins: the table updated and deleted
/// between stream records, null keys and values on both sides.
#[test]
fn parity_stream_table_joins() {
    check("stream-table");
}

/// Table-table inner, left and outer joins with tombstones on both sides
/// (and deletions of keys a side does not hold).
#[test]
fn parity_table_table_joins() {
    check("table-table");
}

/// Windowed stream-stream inner, left and outer joins (before 2 s, after
/// 3 s, grace 1 s) with out-of-order and late records.
#[test]
fn parity_stream_stream_joins() {
    check("stream-stream");
}

/// Foreign-key table-table joins, inner and left, with and without the
/// cache: orders keyed by order id meet the user their value names; an
/// order moves to another user, to none and back; users change, are deleted
/// (also ones no order names, and ones never there); numbers as foreign keys,
/// null keys on both sides, headers of either side.
#[test]
fn parity_foreign_key_joins() {
    check("fk-join");
}

/// Foreign-key joins (inner, left; with and without the cache) over 200 +
/// 200 random records: orders of 6 keys naming 5 users (or none), out of
/// order by up to 8 s.
#[test]
fn parity_random_foreign_key_joins() {
    check("random-fk-join");
}

/// Every join kind with a joiner that gives no value for some pairs
/// (merge_json's `none_if`): Kafka Streams forwards its joiner's null, a
/// record without a value (a tombstone in the table joins).
#[test]
fn parity_joins_whose_joiner_gives_no_value() {
    check("no-value-joins");
}

/// Windowed stream-stream joins at their edges (before 1 s, after 2 s, grace
/// 500 ms): equal timestamps on both sides, records at the window's exact
/// bounds, out-of-order and expired records, headers of either side.
#[test]
fn parity_stream_stream_joins_at_the_edges() {
    check("stream-stream-edges");
}

/// An unwindowed count and every windowed count above (tumbling, hopping,
/// sliding, session; update and close) over 300 random records of 6 keys, out of
/// order by up to 8 s.
#[test]
fn parity_random_windowed_counts() {
    check("random-aggregates");
}

/// Every join above (stream-table, table-table, stream-stream; each kind)
/// over 200 + 200 random records of 6 keys, out of order by up to 8 s.
#[test]
fn parity_random_joins() {
    check("random-joins");
}

/// Joins reading two topics whose reads deliver one or a few records at a
/// time (a Kafka fetch on its way) still take records in timestamp order
/// across them: a source that runs dry while holding more ends the batch.
/// Every join of the parity scenarios gives Kafka Streams' records (final
/// values for table-table joins), as `weir run` on the embedded log does.
#[test]
fn parity_of_joins_whose_reads_deliver_part_of_a_topic() {
    let mut failures = String::new();
    for name in [
        "stream-table",
        "table-table",
        "stream-stream",
        "stream-stream-edges",
        "random-joins",
        "fk-join",
        "random-fk-join",
        "global-table",
        "versioned-table",
        "versioned-grace",
        "versioned-tables",
        "merged-inputs",
    ] {
        let (dir, variants, topics) = asserted(name);
        for (v, want) in &variants {
            for n in [1, 3] {
                let got = run_partial_reads(&dir, v, &topics, n);
                let how = format!("a run whose reads deliver at most {n}");
                failures += &differs(&dir, name, v, &how, &got, want);
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}
