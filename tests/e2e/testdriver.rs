//! `weir test PIPELINE.toml`: whole pipelines in memory, compared with
//! `weir run` on the embedded log for the same inputs; simulated wall-clock
//! timers; nothing written to disk. `--expect`, `--state` and module tests
//! are in testdriver_expect.rs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::util::{assert_lines, guest, root, run, tempdir, weir};

pub(crate) fn pipeline(name: &str) -> PathBuf {
    root().join("examples/pipelines").join(name)
}

pub(crate) fn modules() -> PathBuf {
    guest("count").parent().unwrap().to_path_buf()
}

pub(crate) fn test_cmd() -> Command {
    let mut c = weir();
    c.env("WEIR_MODULE_PATH", modules());
    c.env_remove("WEIR_DATA");
    c
}

pub(crate) fn write_lines(path: &Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// Runs `file` with `weir run` on a fresh embedded log, `partitions` per
/// input topic, and returns every record of `outputs` as `weir test` prints
/// them (topic, partition, offset, record), by topic, partition and offset.
pub(crate) fn embedded_run(
    file: &Path,
    partitions: u32,
    inputs: &[(&str, &[String])],
    outputs: &[&str],
    batch: &str,
) -> Vec<Value> {
    let dir = tempdir();
    let data = dir.path().join("data");
    let cmd = || {
        let mut c = weir();
        c.env("WEIR_DATA", &data);
        c.env("WEIR_MODULE_PATH", modules());
        c
    };
    for (topic, lines) in inputs {
        let r = run(cmd().args([
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ]));
        assert!(r.status.success(), "{}", r.stderr);
        let mut child = cmd()
            .args(["produce", topic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for l in *lines {
            writeln!(stdin, "{l}").unwrap();
        }
        drop(stdin);
        assert!(child.wait_with_output().unwrap().status.success());
    }
    let r =
        run(cmd()
            .arg("run")
            .arg(file)
            .args(["--until-caught-up", "--quiet", "--batch", batch]));
    assert!(r.status.success(), "weir run: {}", r.stderr);
    let mut sorted = outputs.to_vec();
    sorted.sort();
    let mut all = Vec::new();
    for topic in sorted {
        let r = run(cmd().args(["consume", topic, "--from-beginning"]));
        assert!(r.status.success(), "{}", r.stderr);
        let mut recs: Vec<Value> = r
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        recs.sort_by_key(|v| (v["partition"].as_u64(), v["offset"].as_u64()));
        for v in recs {
            let mut o = serde_json::Map::new();
            o.insert("topic".into(), json!(topic));
            o.extend(v.as_object().unwrap().clone());
            all.push(Value::Object(o));
        }
    }
    all
}

/// Runs `weir test` on the same inputs and returns its lines, parsed.
/// The lines of a sample file in examples/pipelines.
pub(crate) fn example_lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(root().join("examples/pipelines").join(name))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

pub(crate) fn memory_run(
    file: &Path,
    partitions: u32,
    inputs: &[(&str, &[String])],
    batch: &str,
) -> Vec<Value> {
    let dir = tempdir();
    let mut cmd = test_cmd();
    cmd.arg("test").arg(file);
    cmd.args(["--partitions", &partitions.to_string(), "--batch", batch]);
    for (topic, lines) in inputs {
        let p = dir.path().join(format!("{topic}.jsonl"));
        write_lines(&p, lines);
        cmd.arg("--input").arg(format!("{topic}={}", p.display()));
    }
    let r = run(&mut cmd);
    assert!(r.status.success(), "weir test: {}", r.stderr);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 33
}

#[test]
fn word_count_in_memory_gives_what_the_embedded_log_gives() {
    let vocab = [
        "the", "kafka", "stream", "Wasm", "state", "window", "join", "log",
    ];
    let mut x = 7;
    let lines: Vec<String> = (0..400)
        .map(|i| {
            let words: Vec<&str> = (0..(2 + i % 4))
                .map(|_| vocab[lcg(&mut x) as usize % vocab.len()])
                .collect();
            json!({"key": format!("line-{i}"), "value": words.join(" "), "timestamp": 1000 + i})
                .to_string()
        })
        .collect();
    // A malformed value goes to the dead letters in both.
    let mut lines = lines;
    lines.push(json!({"key": "bad", "value_b64": "/w==", "timestamp": 5000}).to_string());
    let file = pipeline("wordcount.toml");
    let inputs: &[(&str, &[String])] = &[("lines", &lines)];
    let want = embedded_run(&file, 1, inputs, &["counts", "wordcount-dlq"], "50");
    let got = memory_run(&file, 1, inputs, "50");
    // Which updates of a count come out depends on how the repartitioned
    // words were cut into batches, which on the log follows the threads'
    // timing: compare each word's last count, and the dead letters.
    let last = |recs: &[Value]| -> (BTreeMap<String, Value>, Vec<Value>) {
        let mut counts = BTreeMap::new();
        let mut dead = Vec::new();
        for r in recs {
            match r["topic"].as_str() {
                Some("counts") => {
                    counts.insert(r["key"].as_str().unwrap().to_string(), r["value"].clone());
                }
                _ => dead.push(r.clone()),
            }
        }
        (counts, dead)
    };
    let (want_counts, want_dead) = last(&want);
    assert_eq!(want_counts.len(), 7, "{want_counts:?}");
    assert_eq!(want_dead.len(), 1, "{want_dead:?}");
    assert_eq!(last(&got), (want_counts, want_dead));
    // In memory, the same run gives the same records every time.
    assert_eq!(memory_run(&file, 1, inputs, "50"), got);
}

#[test]
fn stock_statistics_in_memory_give_what_the_embedded_log_gives() {
    let tickers = ["ACME", "GLOB", "INIT"];
    let mut x = 99;
    let trades: Vec<String> = (0..300i64)
        .map(|i| {
            let t = tickers[lcg(&mut x) as usize % 3];
            let ask = 100.0 + (lcg(&mut x) % 400) as f64 * 0.25;
            let jitter = (lcg(&mut x) % 1500) as i64;
            json!({"key": t, "value": {"ask": ask}, "timestamp": 100_000 + i * 100 - jitter})
                .to_string()
        })
        .collect();
    let file = pipeline("stock-stats.toml");
    let inputs: &[(&str, &[String])] = &[("trades", &trades)];
    let want = embedded_run(
        &file,
        2,
        inputs,
        &["stock-stats", "stock-stats-dead-letters"],
        "20",
    );
    let got = memory_run(&file, 2, inputs, "20");
    assert!(want.len() > 50, "{want:?}");
    assert_eq!(got, want);
}

#[test]
fn clickstream_enrichment_in_memory_gives_what_the_embedded_log_gives() {
    let users = ["ann", "bob", "cid", "dee"];
    let (mut profiles, mut searches, mut clicks) = (Vec::new(), Vec::new(), Vec::new());
    let mut x = 5;
    for i in 0..200i64 {
        let u = users[lcg(&mut x) as usize % users.len()];
        let ts = 10_000 + i * 250;
        let rec = |v: Value| json!({"key": u, "value": v, "timestamp": ts}).to_string();
        match lcg(&mut x) % 4 {
            0 => profiles.push(rec(json!({"user": u, "tier": format!("tier-{}", i % 3)}))),
            1 => searches.push(rec(json!({"q": format!("query-{i}")}))),
            _ => clicks.push(rec(json!({"page": format!("/p/{i}")}))),
        }
    }
    for u in users {
        searches.push(
            json!({"key": u, "value": {"q": "closing"}, "timestamp": 10_000_000}).to_string(),
        );
    }
    let file = pipeline("clicks.toml");
    let inputs: &[(&str, &[String])] = &[
        ("profiles", &profiles),
        ("searches", &searches),
        ("clicks", &clicks),
    ];
    let want = embedded_run(
        &file,
        2,
        inputs,
        &["enriched-clicks", "clicks-dead-letters"],
        "30",
    );
    let got = memory_run(&file, 2, inputs, "30");
    assert!(want.len() > 50, "{want:?}");
    assert_eq!(got, want);
}

/// An outer stream-stream join (Kafka Streams' `outerJoin` with
/// `JoinWindows`), `examples/pipelines/payments.toml` on its sample inputs:
/// orders meet the payments of the 10 s after them; an order or a payment
/// that met nothing comes out alone once its window has closed.
#[test]
fn an_outer_stream_join_emits_matches_and_each_sides_unmatched_records_once_their_windows_close() {
    let file = pipeline("payments.toml");
    let (orders, payments) = (
        example_lines("payments.orders.jsonl"),
        example_lines("payments.payments.jsonl"),
    );
    let inputs: &[(&str, &[String])] = &[("orders", &orders), ("payments", &payments)];
    let show = |recs: &[Value]| -> Vec<String> {
        recs.iter()
            .map(|r| {
                format!(
                    "{}@{} {}",
                    r["key"].as_str().unwrap(),
                    r["timestamp"],
                    r["value"]
                )
            })
            .collect()
    };
    // a meets its payment; b's window closes at 12 s and d's (a payment
    // looks back 10 s, forward 0) at 6 s, both passed when c comes at 30 s;
    // e's window is still open at the end.
    let want = [
        r#"a@5000 {"item":"pen","payment":{"amt":3}}"#,
        r#"b@2000 {"item":"ink","payment":null}"#,
        r#"d@6000 {"payment":{"amt":9}}"#,
        r#"c@31000 {"item":"cap","payment":{"amt":1}}"#,
    ];
    for batch in ["1", "100"] {
        let got = memory_run(&file, 1, inputs, batch);
        assert_eq!(show(&got), want, "weir test, batch {batch}");
        let on_log = embedded_run(&file, 1, inputs, &["matched"], batch);
        assert_eq!(show(&on_log), want, "weir run, batch {batch}");
    }
}

pub(crate) fn events(lines: &[(&str, i64)]) -> Vec<String> {
    lines
        .iter()
        .map(|(k, ts)| json!({"key": k, "value": "x", "timestamp": ts}).to_string())
        .collect()
}

#[test]
fn a_processors_event_time_and_wall_clock_timers_fire_in_memory() {
    let dir = tempdir();
    let input = dir.path().join("events.jsonl");
    // Event time: c at 12000 passes a's timer (11000), not b's (13000).
    write_lines(
        &input,
        &events(&[("a", 1000), ("a", 2000), ("b", 3000), ("c", 12000)]),
    );
    let r = run(test_cmd()
        .arg("test")
        .arg(pipeline("bursts.toml"))
        .arg("--input")
        .arg(format!("events={}", input.display())));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "event-time timers",
        &r.stdout,
        r#"{"topic":"bursts","partition":0,"offset":0,"key":"a","value":2,"timestamp":11000}"#,
    );
    // Wall clock: the simulated clock starts at 0; timers are due at 11000
    // (a) and 13000 (b).
    let wall = dir.path().join("wall.toml");
    std::fs::write(
        &wall,
        format!(
            "name = \"bursts\"\ninput = \"events\"\noutput = \"bursts\"\n[[steps]]\nname = \"burst\"\nkind = \"processor\"\nmodule = \"{}\"\nstores = [\"counts\"]\nconfig = {{ clock = \"wall\" }}\n",
            guest("burst-count").display()
        ),
    )
    .unwrap();
    write_lines(&input, &events(&[("a", 1000), ("a", 2000), ("b", 3000)]));
    let wall_run = |advance: &str| {
        let r = run(test_cmd()
            .arg("test")
            .arg(&wall)
            .arg("--input")
            .arg(format!("events={}", input.display()))
            .args(["--advance-wall", advance]));
        assert!(r.status.success(), "{}", r.stderr);
        r.stdout
    };
    assert_lines("no time passes", &wall_run("0s"), "");
    assert_lines(
        "12 s pass",
        &wall_run("12s"),
        r#"{"topic":"bursts","partition":0,"offset":0,"key":"a","value":2,"timestamp":11000}"#,
    );
    assert_lines(
        "a minute passes",
        &wall_run("1m"),
        r#"
        {"topic":"bursts","partition":0,"offset":0,"key":"a","value":2,"timestamp":11000}
        {"topic":"bursts","partition":0,"offset":1,"key":"b","value":1,"timestamp":13000}
        "#,
    );
    // An advance_wall_ms line in the input: the records before it first.
    let mut lines = events(&[("a", 1000), ("a", 2000)]);
    lines.push(r#"{"advance_wall_ms": 11000}"#.to_string());
    lines.extend(events(&[("a", 3000), ("b", 3000)]));
    write_lines(&input, &lines);
    assert_lines(
        "advance_wall_ms in the input",
        &wall_run("0s"),
        r#"{"topic":"bursts","partition":0,"offset":0,"key":"a","value":2,"timestamp":11000}"#,
    );
}

#[test]
fn a_pipeline_test_writes_nothing_to_disk() {
    let dir = tempdir();
    let input = dir.path().join("lines.jsonl");
    write_lines(
        &input,
        &[json!({"value": "a b a", "timestamp": 5}).to_string()],
    );
    let cwd = dir.path().join("ro");
    std::fs::create_dir(&cwd).unwrap();
    let mut perms = std::fs::metadata(&cwd).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&cwd, perms).unwrap();
    let r = run(test_cmd()
        .current_dir(&cwd)
        .env("HOME", &cwd)
        .env("XDG_CACHE_HOME", &cwd)
        .env_remove("WEIR_CACHE")
        .arg("test")
        .arg(pipeline("wordcount.toml"))
        .arg("--input")
        .arg(format!("lines={}", input.display()))
        .arg("--no-cache"));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "outputs",
        &r.stdout,
        r#"
        {"topic":"counts","partition":0,"offset":0,"key":"b","value":1,"timestamp":5}
        {"topic":"counts","partition":0,"offset":1,"key":"a","value":2,"timestamp":5}
        "#,
    );
    let written: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();
    assert_eq!(written.len(), 0, "{written:?}");
    let left: BTreeMap<String, u64> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), 0)
        })
        .collect();
    assert_eq!(
        left.keys().cloned().collect::<Vec<_>>(),
        ["lines.jsonl", "ro"]
    );
}
