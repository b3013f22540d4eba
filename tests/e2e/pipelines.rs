//! Pipelines on the embedded log: the seed's examples against models the
//! tests compute on their own, crash recovery, windows, joins, dead letters
//! and pipeline-file mistakes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::util::{assert_lines, guest, root, run, tempdir, weir};

/// A data directory and `weir` commands pointed at it.
struct Data {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Data {
    fn new() -> Data {
        let dir = tempdir();
        let path = dir.path().join("data");
        Data { _dir: dir, path }
    }

    fn weir(&self) -> Command {
        let mut c = weir();
        c.env("WEIR_DATA", &self.path);
        c.env("WEIR_MODULE_PATH", guest("count").parent().unwrap());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = run(self.weir().args(args));
        assert!(r.status.success(), "weir {args:?} failed: {}", r.stderr);
        r.stdout
    }

    fn topic(&self, name: &str, partitions: u32) {
        self.ok(&[
            "topic",
            "create",
            name,
            "--partitions",
            &partitions.to_string(),
        ]);
    }

    fn produce(&self, topic: &str, lines: &[String]) {
        crate::util::feed(self.weir().args(["produce", topic]), lines);
    }

    fn run_pipeline(&self, file: &Path, extra: &[&str]) -> String {
        let r = run(self
            .weir()
            .arg("run")
            .arg(file)
            .args(["--until-caught-up", "--quiet"])
            .args(extra));
        assert!(r.status.success(), "weir run failed: {}", r.stderr);
        r.stderr
    }

    fn consume(&self, topic: &str) -> Vec<Value> {
        self.ok(&["consume", topic, "--from-beginning"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A JSON value as text with object keys sorted, to compare values that were
/// built with different key orders.
fn canon(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut items: Vec<(&String, &Value)> = m.iter().collect();
            items.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = items
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canon(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canon).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

fn pipeline(name: &str) -> PathBuf {
    root().join("examples/pipelines").join(name)
}

/// The newest value per key (and window), as a compacted topic keeps it.
fn latest(records: &[Value]) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for r in records {
        let mut k = r["key"].as_str().unwrap().to_string();
        if let Some(h) = r.get("headers") {
            k = format!("{k}@{}", h["weir.window.start"].as_str().unwrap_or(""));
        }
        m.insert(k, r["value"].clone());
    }
    m
}

fn words_of(line: &str) -> Vec<String> {
    line.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && *w != "the")
        .map(str::to_string)
        .collect()
}

fn text_lines(n: usize, seed: u64) -> Vec<String> {
    let vocab = [
        "the",
        "kafka",
        "stream",
        "wasm",
        "state",
        "The",
        "window",
        "join",
        "Weir",
        "river",
        "log",
        "table",
        "offset",
        "partition",
    ];
    let mut x = seed;
    (0..n)
        .map(|i| {
            let mut words = Vec::new();
            for _ in 0..(3 + i % 5) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                words.push(vocab[(x >> 33) as usize % vocab.len()]);
            }
            words.join(if i % 3 == 0 { ", " } else { " " })
        })
        .collect()
}

fn model_counts(lines: &[String]) -> BTreeMap<String, Value> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for l in lines {
        for w in words_of(l) {
            *counts.entry(w).or_default() += 1;
        }
    }
    counts.into_iter().map(|(k, v)| (k, json!(v))).collect()
}

fn as_records(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({"key": format!("line-{i}"), "value": l, "timestamp": 1000 + i}).to_string()
        })
        .collect()
}

#[test]
fn word_count_matches_a_model_and_state_is_queryable() {
    let d = Data::new();
    d.topic("lines", 3);
    let lines = text_lines(400, 7);
    d.produce("lines", &as_records(&lines));
    let summary = d.run_pipeline(&pipeline("wordcount.toml"), &[]);
    assert!(summary.contains("wordcount: "), "{summary}");
    let counts = d.consume("counts");
    let model = model_counts(&lines);
    assert_eq!(latest(&counts), model);
    let r = run(d
        .weir()
        .args(["state", "get"])
        .args(["wordcount", "count", "kafka"]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "state get",
        &r.stdout,
        &format!(r#"{{"key":"kafka","value":{}}}"#, model["kafka"]),
    );
    let scan = run(d
        .weir()
        .args(["state", "scan"])
        .args(["wordcount", "count"]));
    assert_eq!(scan.stdout.lines().count(), model.len());
}

/// The seed's reprocessing by resetting (Kafka Streams' application reset
/// tool): `weir reset` makes the next run read the inputs from the start
/// with no state, so the counts come out again from 1, not doubled.
#[test]
fn reset_makes_the_next_run_reprocess_the_inputs_from_the_start_with_no_state() {
    let d = Data::new();
    d.topic("lines", 2);
    let lines = text_lines(200, 5);
    d.produce("lines", &as_records(&lines));
    d.run_pipeline(&pipeline("wordcount.toml"), &[]);
    let model = model_counts(&lines);
    let first = d.consume("counts");
    assert_eq!(latest(&first), model);
    let r = run(d.weir().args(["reset", "wordcount"]));
    assert!(r.status.success(), "{}", r.stderr);
    let m = r.stdout.trim();
    let entries: u64 = m
        .strip_prefix("reset pipeline wordcount: forgot its input positions and state (")
        .and_then(|x| x.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{m}"));
    // The positions of 2 partitions of 2 topics, 2 x 2 stream times, every
    // count and each partition's state format at least.
    assert!(entries > model.len() as u64, "{m}");
    assert_eq!(
        m,
        format!(
            "reset pipeline wordcount: forgot its input positions and state ({entries} entries) and deleted its repartition topic wordcount-count-repartition; its next run reads its inputs from the start. Its output topics are kept: delete them with `weir topic delete` to start them empty"
        )
    );
    let scan = run(d.weir().args(["state", "scan", "wordcount", "count"]));
    assert_eq!(scan.stdout, "");
    // The next run counts everything again from nothing: the same final
    // counts, and as many updates again as the first run emitted.
    d.run_pipeline(&pipeline("wordcount.toml"), &[]);
    let ends: BTreeMap<u64, u64> = first.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["partition"].as_u64().unwrap()).or_default() += 1;
        m
    });
    let second: Vec<Value> = d
        .consume("counts")
        .into_iter()
        .filter(|r| r["offset"].as_u64().unwrap() >= ends[&r["partition"].as_u64().unwrap()])
        .collect();
    assert_eq!(latest(&second), model);
    let scan = run(d.weir().args(["state", "scan", "wordcount", "count"]));
    assert_eq!(scan.stdout.lines().count(), model.len());
    // The pipeline file names it too.
    let r = run(d.weir().arg("reset").arg(pipeline("wordcount.toml")));
    assert!(
        r.status.success()
            && r.stdout
                .starts_with("reset pipeline wordcount: forgot its input positions and state ("),
        "{}{}",
        r.stdout,
        r.stderr
    );
    // Nothing to reset for a name with nothing.
    let r = run(d.weir().args(["reset", "wordcont"]));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr.trim(),
        format!(
            "pipeline wordcont has no positions, state or repartition topics in {} (is the name right? it is the pipeline file's `name`)",
            d.path.display()
        )
    );
}

/// Resetting pipeline `wordcount` leaves alone another pipeline whose name
/// starts with `wordcount-` (a second copy `wordcount-2`, or a daemon's
/// shadow `wordcount-shadow`): its repartition topic
/// `wordcount-2-count-repartition` also matches `wordcount-*-repartition`,
/// but its positions still point into it.
#[test]
fn reset_keeps_the_repartition_topics_of_a_pipeline_whose_name_starts_with_the_same_name() {
    let d = Data::new();
    d.topic("lines", 2);
    d.produce("lines", &as_records(&text_lines(50, 5)));
    let text = std::fs::read_to_string(pipeline("wordcount.toml"))
        .unwrap()
        .replace("name = \"wordcount\"", "name = \"wordcount-2\"")
        .replace("output = \"counts\"", "output = \"counts-2\"")
        .replace("wordcount-dlq", "wordcount-2-dlq");
    let second = d.path.parent().unwrap().join("wordcount-2.toml");
    std::fs::write(&second, text).unwrap();
    d.run_pipeline(&pipeline("wordcount.toml"), &[]);
    d.run_pipeline(&second, &[]);
    let r = run(d.weir().args(["reset", "wordcount"]));
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        r.stdout
            .contains(" and deleted its repartition topic wordcount-count-repartition;"),
        "{}",
        r.stdout
    );
    let topics = d.ok(&["topic", "list"]);
    assert!(topics.contains("wordcount-2-count-repartition"), "{topics}");
}

/// Downstream tasks start while upstream ones already write: repeated runs
/// catch a task that skips records it has not seen yet.
#[test]
fn word_count_is_exact_run_after_run() {
    let lines = text_lines(400, 7);
    let model = model_counts(&lines);
    for round in 0..15 {
        let d = Data::new();
        d.topic("lines", 3);
        d.produce("lines", &as_records(&lines));
        d.run_pipeline(&pipeline("wordcount.toml"), &[]);
        assert_eq!(latest(&d.consume("counts")), model, "round {round}");
    }
}

#[test]
fn word_count_killed_and_restarted_loses_and_repeats_nothing() {
    let d = Data::new();
    d.topic("lines", 2);
    let lines = text_lines(12000, 11);
    d.produce("lines", &as_records(&lines));
    let total_words: u64 = lines.iter().map(|l| words_of(l).len() as u64).sum();
    let repartition_end = || -> u64 {
        let out = run(d
            .weir()
            .args(["topic", "describe", "wordcount-count-repartition"]));
        out.stdout
            .lines()
            .filter_map(|l| l.split("end offset ").nth(1))
            .map(|n| n.trim().parse::<u64>().unwrap())
            .sum()
    };
    // Kill -9 at several points, each once the run has made some progress.
    let mut kills = 0;
    for threshold in [200u64, 3000, 9000] {
        let mut child = d
            .weir()
            .arg("run")
            .arg(pipeline("wordcount.toml"))
            .args(["--until-caught-up", "--quiet", "--batch", "20"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if d.path.join("db").exists() && repartition_end() >= threshold {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
                break;
            }
            std::thread::yield_now();
        }
        child.wait().unwrap();
    }
    assert_eq!(kills, 3, "the run finished before it could be killed");
    d.run_pipeline(&pipeline("wordcount.toml"), &[]);
    // Every word went through the repartition topic exactly once...
    assert_eq!(repartition_end(), total_words);
    // ...and the final counts (outputs and state) are the model's.
    let model = model_counts(&lines);
    assert_eq!(latest(&d.consume("counts")), model);
    let scan =
        run(d
            .weir()
            .args(["state", "scan"])
            .args(["wordcount", "count", "--max", "100000"]));
    let state: BTreeMap<String, Value> = scan
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["key"].as_str().unwrap().to_string(), v["value"].clone())
        })
        .collect();
    assert_eq!(state, model);
}

fn write_pipeline(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn late_records_within_grace_count_and_beyond_grace_are_dropped() {
    let d = Data::new();
    d.topic("events", 1);
    let file = write_pipeline(
        d.path.parent().unwrap(),
        r#"
name = "late"
input = "events"
output = "out"

[[steps]]
name = "count"
kind = "aggregate"
module = "count.wasm"
window = { type = "tumbling", size = "10s", grace = "5s" }
"#,
    );
    let ev = |ts: i64| json!({"key": "k", "value": "x", "timestamp": ts}).to_string();
    d.produce(
        "events",
        &[ev(1000), ev(12000), ev(9000), ev(16000), ev(2000)],
    );
    // One emission per record: batches of one, each committed (no cache).
    let summary = d.run_pipeline(&file, &["--batch", "1", "--cache-max-bytes", "0"]);
    assert!(
        summary.contains("5 records in, 4 out, 0 dead letters, 1 late record dropped"),
        "{summary}"
    );
    let out: Vec<String> = d
        .consume("out")
        .iter()
        .map(|r| {
            format!(
                "{}@{}={}",
                r["key"].as_str().unwrap(),
                r["headers"]["weir.window.start"].as_str().unwrap(),
                r["value"]
            )
        })
        .collect();
    assert_eq!(out, ["k@0=1", "k@10000=1", "k@0=2", "k@10000=2"]);
    // Interactive query by key and window start.
    let r = run(d
        .weir()
        .args(["state", "get"])
        .args(["late", "count", "k", "--from", "5000"]));
    assert_lines(
        "state",
        &r.stdout,
        r#"{"key":"k","window":{"start":10000,"end":20000},"value":2}"#,
    );
    let r = run(d
        .weir()
        .args(["state", "get"])
        .args(["late", "count", "k", "--to", "5000"]));
    assert_lines(
        "state",
        &r.stdout,
        r#"{"key":"k","window":{"start":0,"end":10000},"value":2}"#,
    );
    let r = run(d
        .weir()
        .args(["state", "get"])
        .args(["late", "count", "nope"]));
    assert_eq!(r.status.code(), Some(1));
    assert_lines(
        "stderr",
        &r.stderr,
        r#"no state for key "nope" in step count of pipeline late"#,
    );
}

#[test]
fn session_windows_merge_when_a_record_bridges_them() {
    let d = Data::new();
    d.topic("events", 1);
    let file = write_pipeline(
        d.path.parent().unwrap(),
        r#"
name = "sessions"
input = "events"
output = "out"

[[steps]]
name = "count"
kind = "aggregate"
module = "count.wasm"
window = { type = "session", gap = "5s", grace = "10s" }
"#,
    );
    let ev = |ts: i64| json!({"key": "k", "value": "x", "timestamp": ts}).to_string();
    d.produce("events", &[ev(1000), ev(20000), ev(10000), ev(15000)]);
    // No cache: an update is emitted per record, as Kafka Streams does with
    // caching off (held back, what one commit merges depends on timing).
    d.run_pipeline(&file, &["--batch", "1", "--cache-max-bytes", "0"]);
    let out: Vec<String> = d
        .consume("out")
        .iter()
        .map(|r| {
            format!(
                "[{},{}]={}",
                r["headers"]["weir.window.start"].as_str().unwrap(),
                r["headers"]["weir.window.end"].as_str().unwrap(),
                r["value"]
            )
        })
        .collect();
    assert_eq!(
        out,
        [
            "[1000,1000]=1",
            "[20000,20000]=1",
            "[10000,10000]=1",
            "[10000,10000]=null",
            "[20000,20000]=null",
            "[10000,20000]=3"
        ]
    );
    let r = run(d
        .weir()
        .args(["state", "get"])
        .args(["sessions", "count", "k"]));
    assert_lines(
        "state",
        &r.stdout,
        r#"
        {"key":"k","window":{"start":1000,"end":1000},"value":1}
        {"key":"k","window":{"start":10000,"end":20000},"value":3}
        "#,
    );
}

#[test]
fn rejected_records_go_to_the_dead_letter_topic_and_the_rest_go_on() {
    let d = Data::new();
    d.topic("lines", 1);
    d.produce(
        "lines",
        &[
            json!({"key": "a", "value": "one two", "timestamp": 1}).to_string(),
            json!({"key": "b", "value": null, "timestamp": 2}).to_string(),
            json!({"key": "c", "value": "two", "timestamp": 3}).to_string(),
        ],
    );
    let summary = d.run_pipeline(&pipeline("wordcount.toml"), &[]);
    assert!(summary.contains("1 dead letter,"), "{summary}");
    assert_eq!(
        latest(&d.consume("counts")),
        BTreeMap::from([("one".into(), json!(1)), ("two".into(), json!(2))])
    );
    let dlq = d.ok(&["consume", "wordcount-dlq", "--from-beginning"]);
    assert_lines(
        "dead letters",
        &dlq,
        r#"{"partition":0,"offset":0,"key":"b","value":null,"headers":{"weir.error":"the record has no value (a tombstone)","weir.error.kind":"rejected","weir.step":"split","weir.topic":"lines","weir.partition":"0","weir.offset":"1"},"timestamp":2}"#,
    );
}

#[test]
fn a_pipeline_file_mistake_names_the_line_and_field() {
    let d = Data::new();
    let dir = d.path.parent().unwrap().to_path_buf();
    let cases = [
        (
            "name = \"p\"\ninput = \"in\"\n\n[[steps]]\nname = \"s\"\nkind = \"mapp\"\nmodule = \"count.wasm\"\n",
            "6: `kind`: unknown variant `mapp`, expected one of `map`, `aggregate`, `join`, `processor`",
        ),
        (
            "name = \"p\"\ninput = \"in\"\n\n[[steps]]\nname = \"s\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"\nwindow = { type = \"tumbling\", size = \"five seconds\" }\n",
            "8: `window.size` = \"five seconds\" is not a duration (expected number at 0); write e.g. \"500ms\", \"5s\", \"1m\"",
        ),
        (
            "name = \"p\"\ninput = \"in\"\n\n[[steps]]\nname = \"s\"\nkind = \"map\"\nmodule = \"nope.wasm\"\n",
            "7: step s: `module` = \"nope.wasm\": no such file",
        ),
        (
            "name = \"p\"\ninput = \"in\"\n\n[[steps]]\nname = \"s\"\nkind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\njoin = \"outer\"\n",
            "9: step s: a stream-table join is \"inner\" or \"left\"; an outer join joins two tables (add `as_table = true`) or two streams (`with_kind = \"stream\"` and a window)",
        ),
        (
            "name = \"p\"\ninput = \"in\"\nouput = \"x\"\n",
            "3: unknown field `ouput`, expected one of `name`, `input`, `output`, `dead_letter`, `commit_interval`, `cache_max_bytes`, `steps`",
        ),
    ];
    for (text, want) in cases {
        let file = write_pipeline(&dir, text);
        let r = run(d.weir().arg("run").arg(&file).arg("--until-caught-up"));
        assert_eq!(r.status.code(), Some(1));
        let expected = format!("error: {}:{want}", file.display());
        assert!(
            r.stderr.starts_with(&expected),
            "expected: {expected}\nactual: {}",
            r.stderr
        );
    }
}

#[test]
fn keys_land_on_the_partitions_kafka_would_choose() {
    let d = Data::new();
    d.topic("keys", 4);
    let keys = [
        "21",
        "foobar",
        "a-little-bit-long-string",
        "a-little-bit-longer-string",
        "abc",
    ];
    d.produce(
        "keys",
        &keys
            .iter()
            .map(|k| json!({"key": k, "value": 1}).to_string())
            .collect::<Vec<_>>(),
    );
    // Kafka: (murmur2(key) & 0x7fffffff) % 4, with murmur2 from its UtilsTest.
    let kafka = |h: i64| ((h & 0x7fff_ffff) % 4) as u64;
    let want: BTreeMap<&str, u64> = BTreeMap::from([
        ("21", kafka(-973932308)),
        ("foobar", kafka(-790332482)),
        ("a-little-bit-long-string", kafka(-985981536)),
        ("a-little-bit-longer-string", kafka(-1486304829)),
        ("abc", kafka(479470107)),
    ]);
    let got: BTreeMap<String, u64> = d
        .consume("keys")
        .iter()
        // "21" prints as the JSON number 21: bytes that are JSON print as JSON.
        .map(|r| {
            (
                r["key"]
                    .as_str()
                    .map_or_else(|| r["key"].to_string(), str::to_string),
                r["partition"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: BTreeMap<String, u64> = want.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(got, want);
}

/// Trades: (ticker, ask, timestamp), out of order by up to 1.5 s.
fn trades() -> Vec<(String, f64, i64)> {
    let tickers = ["ACME", "GLOB", "INIT"];
    let mut x: u64 = 99;
    let mut out = Vec::new();
    for i in 0..300i64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let t = tickers[(x >> 40) as usize % 3];
        // Multiples of 0.25: sums are exact in any order.
        let ask = 100.0 + ((x >> 20) % 400) as f64 * 0.25;
        let jitter = ((x >> 50) % 1500) as i64;
        out.push((t.to_string(), ask, 100_000 + i * 100 - jitter));
    }
    out
}

#[test]
fn stock_statistics_match_a_model_over_hopping_windows() {
    let d = Data::new();
    d.topic("trades", 2);
    let trades = trades();
    d.produce(
        "trades",
        &trades
            .iter()
            .map(|(t, a, ts)| json!({"key": t, "value": {"ask": a}, "timestamp": ts}).to_string())
            .collect::<Vec<_>>(),
    );
    d.run_pipeline(&pipeline("stock-stats.toml"), &[]);
    // The model: every 5 s window advancing by 1 s that holds a trade.
    let mut model: BTreeMap<String, (f64, u64, f64)> = BTreeMap::new();
    for (t, ask, ts) in &trades {
        let mut start = ts.div_euclid(1000) * 1000;
        while start > ts - 5000 {
            let e = model
                .entry(format!("{t}@{start}"))
                .or_insert((f64::MAX, 0, 0.0));
            e.0 = e.0.min(*ask);
            e.1 += 1;
            e.2 += ask;
            start -= 1000;
        }
    }
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let model: BTreeMap<String, Value> = model
        .into_iter()
        .map(|(k, (min, n, sum))| {
            (
                k,
                json!({"min_ask": round(min), "count": n, "avg_ask": round(sum / n as f64)}),
            )
        })
        .collect();
    // Closed windows were emitted once each; the still-open ones are in the state.
    let emitted = d.consume("stock-stats");
    let mut got = latest(&emitted);
    assert_eq!(got.len(), emitted.len(), "a window was emitted twice");
    let scan = run(d
        .weir()
        .args(["state", "scan"])
        .args(["stock-stats", "stats"]));
    for l in scan.stdout.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let k = format!("{}@{}", v["key"].as_str().unwrap(), v["window"]["start"]);
        let acc = &v["value"];
        let n = acc["count"].as_u64().unwrap();
        let avg = round(acc["sum_ask"].as_f64().unwrap() / n as f64);
        got.insert(
            k,
            json!({"min_ask": round(acc["min_ask"].as_f64().unwrap()), "count": n, "avg_ask": avg}),
        );
    }
    assert_eq!(got, model);
}

#[test]
fn clicks_are_enriched_with_profiles_and_recent_searches() {
    let d = Data::new();
    for t in ["clicks", "profiles", "searches"] {
        d.topic(t, 2);
    }
    let users = ["ann", "bob", "cid", "dee"];
    let mut profiles = Vec::new();
    let mut searches = Vec::new();
    let mut clicks = Vec::new();
    let mut x: u64 = 5;
    for i in 0..200i64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = users[(x >> 33) as usize % users.len()];
        let ts = 10_000 + i * 250;
        match (x >> 45) % 4 {
            0 => profiles.push((u, ts, json!({"user": u, "tier": format!("tier-{}", i % 3)}))),
            1 => searches.push((u, ts, json!({"q": format!("query-{i}")}))),
            _ => clicks.push((u, ts, json!({"page": format!("/p/{i}")}))),
        }
    }
    let recs = |v: &Vec<(&str, i64, Value)>| -> Vec<String> {
        v.iter()
            .map(|(u, ts, val)| json!({"key": u, "value": val, "timestamp": ts}).to_string())
            .collect()
    };
    d.produce("profiles", &recs(&profiles));
    // A search of every user far ahead closes the join windows, so that the
    // last clicks that met no search come out too (Kafka Streams emits an
    // unmatched left record when its window closes).
    let closing: Vec<(&str, i64, Value)> = users
        .iter()
        .map(|u| (*u, 10_000_000, json!({"q": "closing"})))
        .collect();
    let mut all_searches = searches.clone();
    all_searches.extend(closing);
    d.produce("searches", &recs(&all_searches));
    d.produce("clicks", &recs(&clicks));
    d.run_pipeline(&pipeline("clicks.toml"), &[]);
    // The model: the newest profile at or before the click; every search of
    // the same user in the second up to the click (or null).
    let mut model = Vec::new();
    for (u, ts, click) in &clicks {
        let profile = profiles
            .iter()
            .rfind(|(pu, pts, _)| pu == u && pts <= ts)
            .map_or(Value::Null, |(_, _, p)| p.clone());
        let mut with_profile = click.clone();
        with_profile["profile"] = profile;
        let recent: Vec<&Value> = searches
            .iter()
            .filter(|(su, sts, _)| su == u && *sts >= ts - 1000 && sts <= ts)
            .map(|(_, _, s)| s)
            .collect();
        if recent.is_empty() {
            let mut o = with_profile.clone();
            o["search"] = Value::Null;
            model.push((u.to_string(), *ts, canon(&o)));
        }
        for s in recent {
            let mut o = with_profile.clone();
            o["search"] = s.clone();
            model.push((u.to_string(), *ts, canon(&o)));
        }
    }
    let got: BTreeSet<(String, i64, String)> = d
        .consume("enriched-clicks")
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["timestamp"].as_i64().unwrap(),
                canon(&r["value"]),
            )
        })
        .collect();
    let want: BTreeSet<(String, i64, String)> = model.into_iter().collect();
    assert_eq!(got, want);
}

#[test]
fn a_processor_keeps_state_and_fires_event_time_timers_across_restarts() {
    let d = Data::new();
    d.topic("events", 1);
    let ev = |k: &str, ts: i64| json!({"key": k, "value": "x", "timestamp": ts}).to_string();
    // First run: a's timer (at 11000) is set, not yet due.
    d.produce(
        "events",
        &[ev("a", 1000), ev("a", 2000), ev("b", 3000), ev("a", 5000)],
    );
    d.run_pipeline(&pipeline("bursts.toml"), &["--batch", "1"]);
    assert_eq!(d.consume("bursts"), Vec::<Value>::new());
    let r = run(d.weir().args(["state", "scan"]).args(["bursts", "burst"]));
    assert_lines(
        "state after the first run",
        &r.stdout,
        r#"
        {"store":"counts","key":"a","value":3}
        {"store":"counts","key":"b","value":1}
        "#,
    );
    // Second run, after a restart: stream time passes a's and then b's timer.
    d.produce("events", &[ev("c", 12000), ev("b", 20000)]);
    d.run_pipeline(&pipeline("bursts.toml"), &["--batch", "1"]);
    let out: Vec<String> = d
        .consume("bursts")
        .iter()
        .map(|r| {
            format!(
                "{}={}@{}",
                r["key"].as_str().unwrap(),
                r["value"],
                r["timestamp"]
            )
        })
        .collect();
    assert_eq!(out, ["a=3@11000", "b=2@13000"]);
    let r = run(d.weir().args(["state", "scan"]).args(["bursts", "burst"]));
    assert_lines(
        "state at the end",
        &r.stdout,
        r#"{"store":"counts","key":"c","value":1}"#,
    );
}

#[test]
fn compaction_keeps_the_newest_record_per_key_and_retention_drops_old_ones() {
    let d = Data::new();
    d.ok(&[
        "topic",
        "create",
        "profiles",
        "--partitions",
        "1",
        "--compacted",
    ]);
    d.ok(&[
        "topic",
        "create",
        "events",
        "--partitions",
        "1",
        "--retention",
        "1day",
    ]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    d.produce(
        "profiles",
        &[
            json!({"key": "k1", "value": "a", "timestamp": 1}).to_string(),
            json!({"key": "k2", "value": "b", "timestamp": 2}).to_string(),
            json!({"key": "k1", "value": "c", "timestamp": 3}).to_string(),
        ],
    );
    d.produce(
        "events",
        &[
            json!({"value": "old", "timestamp": 1000}).to_string(),
            json!({"value": "new", "timestamp": now}).to_string(),
        ],
    );
    assert_eq!(d.ok(&["topic", "clean"]), "deleted 2 records\n");
    assert_lines(
        "profiles",
        &d.ok(&["consume", "profiles", "--from-beginning"]),
        r#"
        {"partition":0,"offset":1,"key":"k2","value":"b","timestamp":2}
        {"partition":0,"offset":2,"key":"k1","value":"c","timestamp":3}
        "#,
    );
    let events = d.consume("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["value"], "new");
    assert_eq!(events[0]["offset"], 1);
    // Offsets never go back: the next record gets offset 2.
    d.produce(
        "events",
        &[json!({"value": "next", "timestamp": now}).to_string()],
    );
    assert_eq!(d.consume("events")[1]["offset"], 2);
}

#[test]
fn a_table_table_left_join_follows_updates_on_both_sides() {
    table_table("left", &[], &[]);
}

#[test]
fn a_table_table_outer_join_also_emits_rows_only_the_right_side_has() {
    table_table(
        "outer",
        &[r#"u1@1={"plan":{"plan":"free"}}"#],
        &[r#"u3@7={"plan":{"plan":"team"}}"#, r#"u3@8=null"#],
    );
}

/// Plans and accounts of three users; `first` and `more` are what the join
/// type adds before and after what every join type emits.
fn table_table(join: &str, first: &[&str], more: &[&str]) {
    let d = Data::new();
    d.topic("accounts", 1);
    d.topic("plans", 1);
    let file = write_pipeline(
        d.path.parent().unwrap(),
        r#"
name = "accounts-plans"
input = "accounts"
output = "out"

[[steps]]
name = "plan"
kind = "join"
module = "merge_json.wasm"
with = "plans"
with_kind = "table"
as_table = true
join = "JOIN"
config = { field = "plan" }
"#
        .replace("JOIN", join)
        .as_str(),
    );
    let rec =
        |k: &str, v: Value, ts: i64| json!({"key": k, "value": v, "timestamp": ts}).to_string();
    d.produce(
        "plans",
        &[
            rec("u1", json!({"plan": "free"}), 1),
            rec("u1", json!({"plan": "pro"}), 3),
            rec("u1", Value::Null, 5),
            rec("u3", json!({"plan": "team"}), 7),
            rec("u3", Value::Null, 8),
        ],
    );
    d.produce(
        "accounts",
        &[
            rec("u1", json!({"name": "ann"}), 2),
            rec("u2", json!({"name": "bob"}), 4),
            rec("u1", Value::Null, 6),
        ],
    );
    d.run_pipeline(&file, &[]);
    let out: Vec<String> = d
        .consume("out")
        .iter()
        .map(|r| {
            format!(
                "{}@{}={}",
                r["key"].as_str().unwrap(),
                r["timestamp"],
                canon(&r["value"])
            )
        })
        .collect();
    let mut want = first.to_vec();
    want.extend_from_slice(&[
        r#"u1@2={"name":"ann","plan":{"plan":"free"}}"#,
        r#"u1@3={"name":"ann","plan":{"plan":"pro"}}"#,
        r#"u2@4={"name":"bob","plan":null}"#,
        r#"u1@5={"name":"ann","plan":null}"#,
        r#"u1@6=null"#,
    ]);
    want.extend_from_slice(more);
    assert_eq!(out, want, "{join} join");
}

#[test]
fn ctrl_c_stops_a_run_cleanly_and_a_restart_resumes() {
    let d = Data::new();
    d.topic("lines", 2);
    let lines = text_lines(3000, 3);
    d.produce("lines", &as_records(&lines));
    let child = d
        .weir()
        .arg("run")
        .arg(pipeline("wordcount.toml"))
        .args(["--quiet", "--batch", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run has started (it creates its output topic), then
    // interrupt it.
    while !(d.path.join("db").exists()
        && run(d.weir().args(["topic", "describe", "counts"]))
            .status
            .success())
    {
        std::thread::yield_now();
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("wordcount: "));
    d.run_pipeline(&pipeline("wordcount.toml"), &[]);
    assert_eq!(latest(&d.consume("counts")), model_counts(&lines));
}

#[test]
fn the_demo_runs_word_count_and_stock_statistics() {
    let r = run(weir()
        .arg("demo")
        .env("WEIR_MODULE_PATH", guest("count").parent().unwrap()));
    assert!(r.status.success(), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[1],
        "== word count: 6 lines -> split (map) -> repartition by word -> count (aggregate)"
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["word", "count"]
    );
    assert_eq!(lines[3].split_whitespace().collect::<Vec<_>>(), ["a", "5"]);
    assert!(r.stdout.contains(
        "\n== stock statistics: 600 trades (out of order) -> 5 s windows every 1 s, per ticker; "
    ));
    let tickers: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| ["ACME", "GLOB", "INIT"].contains(w))
        .collect();
    assert_eq!(tickers, ["ACME", "GLOB", "INIT"]);
}

#[test]
fn a_guest_that_panics_or_loops_in_a_pipeline_dead_letters_that_record_only() {
    let d = Data::new();
    d.topic("in", 1);
    let file = write_pipeline(
        d.path.parent().unwrap(),
        r#"
name = "faulty"
input = "in"
output = "out"
dead_letter = "dlq"

[[steps]]
name = "echo"
kind = "map"
module = "faulty.wasm"
config = { suffix = "!" }
"#,
    );
    let rec =
        |i: usize, v: &str| json!({"key": format!("k{i}"), "value": v, "timestamp": i}).to_string();
    d.produce("in", &[rec(0, "a")]);
    d.run_pipeline(&file, &[]);
    // The second run's batch starts at offset 1: the guest sees real offsets.
    d.produce(
        "in",
        &[rec(1, "panic"), rec(2, "b"), rec(3, "loop"), rec(4, "c")],
    );
    let summary = d.run_pipeline(&file, &["--deadline-ms", "200"]);
    assert!(
        summary.contains("4 records in, 2 out, 2 dead letters"),
        "{summary}"
    );
    let out: Vec<String> = d
        .consume("out")
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(out, ["a!", "b!", "c!"]);
    let dead: Vec<String> = d
        .consume("dlq")
        .iter()
        .map(|r| {
            format!(
                "{}: {}",
                r["value"].as_str().unwrap(),
                r["headers"]["weir.error"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        dead,
        [
            "panic: panicked at tests/guests/faulty/src/lib.rs:11:20: boom at offset 1",
            "loop: deadline exceeded: the call ran longer than 200 ms",
        ]
    );
}

#[test]
fn a_wall_clock_timer_fires_when_the_clock_passes_it() {
    let d = Data::new();
    d.topic("events", 1);
    let file = write_pipeline(
        d.path.parent().unwrap(),
        r#"
name = "wall"
input = "events"
output = "bursts"

[[steps]]
name = "burst"
kind = "processor"
module = "burst_count.wasm"
stores = ["counts"]
config = { clock = "wall", window_ms = 1000 }
"#,
    );
    // Timestamps long past: the wall clock has passed every timer.
    let ev = |k: &str, ts: i64| json!({"key": k, "value": "x", "timestamp": ts}).to_string();
    d.produce("events", &[ev("a", 1000), ev("a", 1500), ev("b", 2000)]);
    d.run_pipeline(&file, &[]);
    let out: Vec<String> = d
        .consume("bursts")
        .iter()
        .map(|r| {
            format!(
                "{}={}@{}",
                r["key"].as_str().unwrap(),
                r["value"],
                r["timestamp"]
            )
        })
        .collect();
    assert_eq!(out, ["a=2@2000", "b=1@3000"]);
}

#[test]
fn consume_follow_prints_records_as_they_arrive() {
    use std::io::BufRead;
    let d = Data::new();
    d.topic("t", 1);
    d.produce("t", &[json!({"value": "first"}).to_string()]);
    let mut child = d
        .weir()
        .args(["consume", "t", "--from-beginning", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Lines arrive through a channel, so that a missing one fails the test
    // after a minute instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next_line = |child: &mut std::process::Child| match rx
        .recv_timeout(std::time::Duration::from_secs(60))
    {
        Ok(l) => l,
        Err(e) => {
            let _ = child.kill();
            panic!("consume --follow printed nothing more: {e}");
        }
    };
    let first = next_line(&mut child);
    assert_eq!(
        first,
        r#"{"partition":0,"offset":0,"key":null,"value":"first","timestamp":0}"#
    );
    d.produce("t", &[json!({"value": "second"}).to_string()]);
    let second = next_line(&mut child);
    assert_eq!(
        second,
        r#"{"partition":0,"offset":1,"key":null,"value":"second","timestamp":0}"#
    );
    let pid = child.id();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
}

/// Word count run with `examples/count` (a count is a plain number, state
/// format 0), stopped, its file changed to `count-v3` (a count is
/// `{"count": N}`, format 1, with an upgrade from 0), run again: the state
/// is upgraded once, the counts go on from where they were, a third run does
/// not upgrade again, and going back to `examples/count` is refused.
#[test]
fn a_restart_with_a_module_of_a_new_state_format_upgrades_the_state_once() {
    let d = Data::new();
    let dir = d.path.parent().unwrap().to_path_buf();
    d.topic("lines", 1);
    let file = |module: &str| {
        write_pipeline(
            &dir,
            &format!(
                "name = \"wc\"\ninput = \"lines\"\noutput = \"counts\"\n\n[[steps]]\nname = \"split\"\nkind = \"map\"\nmodule = \"split_words.wasm\"\n\n[[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = \"{module}\"\n"
            ),
        )
    };
    let line = |l: &str| vec![json!({"key": "l", "value": l}).to_string()];
    let outputs = |d: &Data, from: usize| -> Vec<String> {
        d.consume("counts")[from..]
            .iter()
            .map(|r| format!("{} {}", r["key"].as_str().unwrap(), r["value"]))
            .collect()
    };

    d.produce("lines", &line("the river and the log"));
    d.produce("lines", &line("a log of the river"));
    d.run_pipeline(&file("count.wasm"), &[]);
    let first = d.consume("counts");
    assert_eq!(
        latest(&first),
        BTreeMap::from([
            ("a".to_string(), json!(1)),
            ("and".to_string(), json!(1)),
            ("log".to_string(), json!(2)),
            ("of".to_string(), json!(1)),
            ("river".to_string(), json!(2)),
        ])
    );

    // The new format: each key's count goes on from its upgraded value.
    d.produce("lines", &line("the log and the sea"));
    d.run_pipeline(&file("count_v3.wasm"), &[]);
    assert_eq!(
        outputs(&d, first.len()),
        [
            r#"log {"count":3}"#,
            r#"and {"count":2}"#,
            r#"sea {"count":1}"#
        ]
    );
    // A key the run did not touch was upgraded too.
    assert_lines(
        "state get",
        &d.ok(&["state", "get", "wc", "count", "river"]),
        r#"{"key":"river","value":{"count":2}}"#,
    );

    // Once: count-v3 upgrades only from format 0 (from 1 it would fail).
    let seen = d.consume("counts").len();
    d.produce("lines", &line("a river"));
    d.run_pipeline(&file("count_v3.wasm"), &[]);
    assert_eq!(
        outputs(&d, seen),
        [r#"a {"count":2}"#, r#"river {"count":3}"#]
    );

    // Back to examples/count: it cannot read format 1 and has no upgrade.
    let seen = d.consume("counts").len();
    d.produce("lines", &line("the sea"));
    let r = run(d
        .weir()
        .arg("run")
        .arg(file("count.wasm"))
        .args(["--until-caught-up", "--quiet"]));
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    let module = guest("count");
    assert_lines(
        "refused",
        &r.stderr,
        &format!(
            "error: task 1-0: step count's state is in format 1; {} writes format 0 and exports no upgrade",
            module.display()
        ),
    );
    assert_eq!(d.consume("counts").len(), seen, "nothing was written");
    d.run_pipeline(&file("count_v3.wasm"), &[]);
    assert_eq!(outputs(&d, seen), [r#"sea {"count":2}"#]);
}
