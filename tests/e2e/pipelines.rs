//! Pipelines on the embedded log: their test harness, word count against a
//! model the tests compute on their own, reset, crash recovery, dead
//! letters, pipeline-file mistakes, partitioning and the log's retention.
//! Windows, joins, processors and restarts are in pipelines_stateful.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::util::{assert_lines, guest, root, run, tempdir, weir};

/// A data directory and `weir` commands pointed at it.
pub(crate) struct Data {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

impl Data {
    pub(crate) fn new() -> Data {
        let dir = tempdir();
        let path = dir.path().join("data");
        Data { _dir: dir, path }
    }

    pub(crate) fn weir(&self) -> Command {
        let mut c = weir();
        c.env("WEIR_DATA", &self.path);
        c.env("WEIR_MODULE_PATH", guest("count").parent().unwrap());
        c
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let r = run(self.weir().args(args));
        assert!(r.status.success(), "weir {args:?} failed: {}", r.stderr);
        r.stdout
    }

    pub(crate) fn topic(&self, name: &str, partitions: u32) {
        self.ok(&[
            "topic",
            "create",
            name,
            "--partitions",
            &partitions.to_string(),
        ]);
    }

    pub(crate) fn produce(&self, topic: &str, lines: &[String]) {
        crate::util::feed(self.weir().args(["produce", topic]), lines);
    }

    pub(crate) fn run_pipeline(&self, file: &Path, extra: &[&str]) -> String {
        let r = run(self
            .weir()
            .arg("run")
            .arg(file)
            .args(["--until-caught-up", "--quiet"])
            .args(extra));
        assert!(r.status.success(), "weir run failed: {}", r.stderr);
        r.stderr
    }

    pub(crate) fn consume(&self, topic: &str) -> Vec<Value> {
        self.ok(&["consume", topic, "--from-beginning"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A JSON value as text with object keys sorted, to compare values that were
/// built with different key orders.
pub(crate) fn canon(v: &Value) -> String {
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

pub(crate) fn pipeline(name: &str) -> PathBuf {
    root().join("examples/pipelines").join(name)
}

/// The newest value per key (and window), as a compacted topic keeps it.
pub(crate) fn latest(records: &[Value]) -> BTreeMap<String, Value> {
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

pub(crate) fn words_of(line: &str) -> Vec<String> {
    line.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && *w != "the")
        .map(str::to_string)
        .collect()
}

pub(crate) fn text_lines(n: usize, seed: u64) -> Vec<String> {
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

pub(crate) fn model_counts(lines: &[String]) -> BTreeMap<String, Value> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for l in lines {
        for w in words_of(l) {
            *counts.entry(w).or_default() += 1;
        }
    }
    counts.into_iter().map(|(k, v)| (k, json!(v))).collect()
}

pub(crate) fn as_records(lines: &[String]) -> Vec<String> {
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

pub(crate) fn write_pipeline(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
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
            "name = \"p\"\ninput = \"in\"\n\n[[steps]]\nname = \"s\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"\n[steps.window]\ntype = \"hopping\"\nsize = \"10s\"\nadvance = \"5s\"\ngrace = \"2s\"\nretention = \"11s\"\n",
            "13: step s: `window.retention` (11000 ms) is shorter than the window's size plus its grace (12000 ms): a window would leave the state while records can still update it",
        ),
        (
            "name = \"p\"\ninput = \"in\"\n\n[[steps]]\nname = \"s\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"\nwindow = { type = \"session\", gap = \"5s\", retention = \"1h\" }\n",
            "8: step s: `window.retention` applies to tumbling, hopping and sliding windows; a session stays in the state as docs/pipeline.md says",
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
