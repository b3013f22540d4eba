//! `weir test PIPELINE.toml`: whole pipelines in memory, compared with
//! `weir run` on the embedded log for the same inputs; simulated wall-clock
//! timers; nothing written to disk.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::util::{assert_lines, guest, root, run, tempdir, weir};

fn pipeline(name: &str) -> PathBuf {
    root().join("examples/pipelines").join(name)
}

fn modules() -> PathBuf {
    guest("count").parent().unwrap().to_path_buf()
}

fn test_cmd() -> Command {
    let mut c = weir();
    c.env("WEIR_MODULE_PATH", modules());
    c.env_remove("WEIR_DATA");
    c
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// Runs `file` with `weir run` on a fresh embedded log, `partitions` per
/// input topic, and returns every record of `outputs` as `weir test` prints
/// them (topic, partition, offset, record), by topic, partition and offset.
fn embedded_run(
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
fn memory_run(
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

fn lcg(x: &mut u64) -> u64 {
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
    let read = |name: &str| -> Vec<String> {
        std::fs::read_to_string(root().join("examples/pipelines").join(name))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let (orders, payments) = (
        read("payments.orders.jsonl"),
        read("payments.payments.jsonl"),
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

fn events(lines: &[(&str, i64)]) -> Vec<String> {
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

/// `weir test` on the sample word count input, with extra arguments.
fn sample_run(extra: &[&str]) -> crate::util::Run {
    let dir = pipeline("");
    run(test_cmd()
        .current_dir(&dir)
        .args([
            "test",
            "wordcount.toml",
            "--input",
            "lines=wordcount.input.jsonl",
        ])
        .args(extra))
}

#[test]
fn expect_passes_on_the_sample_expected_file() {
    let r = sample_run(&["--expect", "wordcount.expected.jsonl"]);
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        "wordcount.expected.jsonl: 5 records, as expected",
    );
    let r = sample_run(&["--expect", "wordcount.expected.jsonl", "--ignore-order"]);
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
}

#[test]
fn expect_fails_with_missing_unexpected_and_changed_records() {
    let dir = tempdir();
    let wrong = dir.path().join("wrong.jsonl");
    write_lines(
        &wrong,
        &[
            r#"{"topic": "counts", "key": "river", "value": 3}"#.into(),
            r#"{"topic": "counts", "key": "log", "value": 2}"#.into(),
            r#"{"topic": "counts", "key": "and", "value": 1, "timestamp": 1000}"#.into(),
            r#"{"topic": "counts", "key": "of", "value": 1, "headers": {"h": "v"}}"#.into(),
            r#"{"topic": "counts", "key": "the", "value": 2}"#.into(),
        ],
    );
    let w = wrong.display().to_string();
    let r = sample_run(&["--expect", &w]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!(
            r#"{w}:1: changed: {{"topic": "counts", "key": "river", "value": 3}}
    value: expected 3, got 2
{w}:3: out of order: {{"topic": "counts", "key": "and", "value": 1, "timestamp": 1000}}
{w}:4: changed: {{"topic": "counts", "key": "of", "value": 1, "headers": {{"h": "v"}}}}
    headers: expected {{"h":"v"}}, got {{}}
{w}:5: missing: {{"topic": "counts", "key": "the", "value": 2}}
unexpected: {{"topic":"counts","partition":0,"offset":1,"key":"a","value":1,"timestamp":2000}}
{w}: 1 missing, 1 unexpected, 2 changed, 1 out of order (5 expected, 5 output)
"#
        )
    );
    // As multisets, the order no longer matters.
    let r = sample_run(&["--expect", &w, "--ignore-order"]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!(
            r#"{w}:1: changed: {{"topic": "counts", "key": "river", "value": 3}}
    value: expected 3, got 2
{w}:4: changed: {{"topic": "counts", "key": "of", "value": 1, "headers": {{"h": "v"}}}}
    headers: expected {{"h":"v"}}, got {{}}
{w}:5: missing: {{"topic": "counts", "key": "the", "value": 2}}
unexpected: {{"topic":"counts","partition":0,"offset":1,"key":"a","value":1,"timestamp":2000}}
{w}: 1 missing, 1 unexpected, 2 changed, 0 out of order (5 expected, 5 output)
"#
        )
    );
}

#[test]
fn a_mistake_in_the_expected_file_names_its_line() {
    let dir = tempdir();
    let bad = dir.path().join("bad.jsonl");
    write_lines(
        &bad,
        &["".into(), r#"{"topic": "counts", "vaule": 1}"#.into()],
    );
    let r = sample_run(&["--expect", &bad.display().to_string()]);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr.trim(),
        format!(
            "error: {}:2: unknown field `vaule`; an expected record has some of the fields topic, partition, offset, output, key, key_b64, value, value_b64, headers, timestamp",
            bad.display()
        )
    );
}

#[test]
fn state_prints_every_steps_final_state_as_weir_state_does() {
    let r = sample_run(&["--state"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "outputs, then the state",
        &r.stdout,
        r#"
        {"topic":"counts","partition":0,"offset":0,"key":"and","value":1,"timestamp":1000}
        {"topic":"counts","partition":0,"offset":1,"key":"a","value":1,"timestamp":2000}
        {"topic":"counts","partition":0,"offset":2,"key":"log","value":2,"timestamp":2000}
        {"topic":"counts","partition":0,"offset":3,"key":"of","value":1,"timestamp":2000}
        {"topic":"counts","partition":0,"offset":4,"key":"river","value":2,"timestamp":2000}
        # state of step count
        {"key":"a","value":1}
        {"key":"of","value":1}
        {"key":"and","value":1}
        {"key":"log","value":2}
        {"key":"river","value":2}
        "#,
    );
    let r = sample_run(&["--state", "--json", "--expect", "wordcount.expected.jsonl"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "as JSON",
        &r.stdout,
        r#"
        {"expect":"wordcount.expected.jsonl","equal":true,"missing":0,"unexpected":0,"changed":0,"out_of_order":0,"expected":5,"output":5}
        {"step":"count","key":"a","value":1}
        {"step":"count","key":"of","value":1}
        {"step":"count","key":"and","value":1}
        {"step":"count","key":"log","value":2}
        {"step":"count","key":"river","value":2}
        "#,
    );
    // A processor's stores and a windowed aggregate: what `weir state scan`
    // says after `weir run` on the embedded log.
    let events = events(&[("a", 1000), ("a", 2000), ("b", 3000)]);
    let trades: Vec<String> = [
        ("ACME", 1.5, 1000),
        ("GLOB", 2.0, 1500),
        ("ACME", 3.0, 2500),
    ]
    .iter()
    .map(|(k, a, ts)| json!({"key": k, "value": {"ask": a}, "timestamp": ts}).to_string())
    .collect();
    for (file, topic, step, lines) in [
        ("bursts.toml", "events", "burst", &events),
        ("stock-stats.toml", "trades", "stats", &trades),
    ] {
        let dir = tempdir();
        let data = dir.path().join("data");
        let input = dir.path().join("in.jsonl");
        write_lines(&input, lines);
        let cmd = || {
            let mut c = weir();
            c.env("WEIR_DATA", &data);
            c.env("WEIR_MODULE_PATH", modules());
            c
        };
        assert!(run(cmd().args(["topic", "create", topic])).status.success());
        assert!(
            run(cmd().args(["produce", topic, "--input"]).arg(&input))
                .status
                .success()
        );
        assert!(
            run(cmd()
                .arg("run")
                .arg(pipeline(file))
                .args(["--until-caught-up", "--quiet"]))
            .status
            .success()
        );
        let name = file.trim_end_matches(".toml");
        let scan = run(cmd().args(["state", "scan", name, step]));
        assert!(scan.stdout.lines().count() >= 2, "{}", scan.stdout);
        let r = run(test_cmd()
            .arg("test")
            .arg(pipeline(file))
            .arg("--input")
            .arg(format!("{topic}={}", input.display()))
            .arg("--state"));
        assert!(r.status.success(), "{}", r.stderr);
        let state: Vec<&str> = r
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("# state of step"))
            .collect();
        assert_eq!(state[0], format!("# state of step {step}"));
        assert_eq!(state[1..].join("\n"), scan.stdout.trim_end());
    }
}

#[test]
fn an_aggregator_module_folds_each_keys_records_and_prints_its_value_at_the_end() {
    let dir = tempdir();
    let input = dir.path().join("trades.jsonl");
    write_lines(
        &input,
        &[
            r#"{"key": "ACME", "value": {"ask": 1.5}, "timestamp": 1000}"#.into(),
            r#"{"key": "GLOB", "value": {"ask": 2}, "timestamp": 900000}"#.into(),
            r#"{"key": "ACME", "value": {"ask": 3.5}, "timestamp": 5000000}"#.into(),
            r#"{"key": "ACME", "value": "oops", "timestamp": 2000}"#.into(),
        ],
    );
    let r = run(weir()
        .arg("test")
        .arg(guest("stock-stats"))
        .arg("--input")
        .arg(&input));
    assert!(r.status.success(), "{}", r.stderr);
    // One group per key, however far apart the timestamps.
    assert_lines(
        "per key",
        &r.stdout,
        r#"
        {"key":"ACME","value":{"avg_ask":2.5,"count":2,"min_ask":1.5}}
        {"key":"GLOB","value":{"avg_ask":2.0,"count":1,"min_ask":2.0}}
        "#,
    );
    assert_lines(
        "dead letters",
        &r.stderr,
        r#"{"key":"ACME","value":"oops","headers":{"weir.error":"not a trade: expected a JSON object with a numeric \"ask\"","weir.error.kind":"rejected","weir.step":"aggregate","weir.topic":"input","weir.partition":"0","weir.offset":"3"},"timestamp":2000}"#,
    );
    let r = run(weir()
        .arg("test")
        .arg(guest("count"))
        .arg("--input")
        .arg(&input)
        .args(["--batch", "1"]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "counts",
        &r.stdout,
        r#"
        {"key":"ACME","value":3}
        {"key":"GLOB","value":1}
        "#,
    );
}

#[test]
fn pipeline_options_given_to_a_module_test_are_refused() {
    let module = guest("uppercase");
    let r = run(weir()
        .arg("test")
        .arg(&module)
        .args(["--input", "in.jsonl", "--state"]));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr.trim(),
        format!(
            "error: --state is for pipeline tests (weir test PIPELINE.toml --input TOPIC=FILE.jsonl ...); {} is a module",
            module.display()
        )
    );
    let r = run(test_cmd()
        .arg("test")
        .arg(pipeline("wordcount.toml"))
        .args(["--input", "lines.jsonl"]));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr.trim(),
        "error: --input \"lines.jsonl\": a pipeline test takes --input TOPIC=FILE.jsonl (for example --input lines=input.jsonl)"
    );
}

/// `weir test PROCESSOR.wasm` over `lines` with `--batch batch`: its
/// outputs without the `"output"` field, which is null for all of them.
fn processor_module_run(module: &Path, lines: &[String], batch: &str) -> Vec<Value> {
    let dir = tempdir();
    let input = dir.path().join("events.jsonl");
    write_lines(&input, lines);
    let r = run(weir()
        .arg("test")
        .arg(module)
        .arg("--input")
        .arg(&input)
        .args(["--batch", batch]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stderr, "");
    r.stdout
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            assert_eq!(o.remove("output"), Some(Value::Null), "{l}");
            v
        })
        .collect()
}

/// A pipeline test's outputs as a module test prints them: no topic,
/// partition or offset.
fn without_position(recs: Vec<Value>) -> Vec<Value> {
    recs.into_iter()
        .map(|mut v| {
            let o = v.as_object_mut().unwrap();
            for f in ["topic", "partition", "offset"] {
                o.remove(f);
            }
            v
        })
        .collect()
}

#[test]
fn a_processor_module_fires_its_timers_as_a_one_step_pipeline_does_and_at_the_end() {
    let module = guest("burst-count");
    // The documented example: c at 12000 passes a's timer (11000); b's
    // (13000) and c's (22000) fire at the end of the input.
    let lines = events(&[("a", 1000), ("a", 2000), ("b", 3000), ("c", 12000)]);
    let dir = tempdir();
    let input = dir.path().join("events.jsonl");
    write_lines(&input, &lines);
    let r = run(weir().arg("test").arg(&module).arg("--input").arg(&input));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "burst count",
        &r.stdout,
        r#"
        {"output":null,"key":"a","value":2,"timestamp":11000}
        {"output":null,"key":"b","value":1,"timestamp":13000}
        {"output":null,"key":"c","value":1,"timestamp":22000}
        "#,
    );

    // Out-of-order events over many keys: up to the end of the input, what
    // bursts.toml gives in memory; the rest is what the pipeline gives once
    // a record far later (of another key) moves its stream time past every
    // timer.
    let mut x = 11;
    let mut lines = Vec::new();
    for i in 0..300i64 {
        let key = format!("k{}", lcg(&mut x) % 9);
        let ts = i * 700 + (lcg(&mut x) % 5000) as i64;
        lines.push(json!({"key": key, "value": "x", "timestamp": ts}).to_string());
    }
    let mut later = lines.clone();
    later.push(json!({"key": "zz", "value": "x", "timestamp": 1_000_000_000}).to_string());
    let file = pipeline("bursts.toml");
    for batch in ["1", "7", "100"] {
        let module_out = processor_module_run(&module, &lines, batch);
        let until_end = without_position(memory_run(&file, 1, &[("events", &lines)], batch));
        let flushed = without_position(memory_run(&file, 1, &[("events", &later)], batch));
        assert!(until_end.len() > 20, "batch {batch}: {until_end:?}");
        // With 100 records a batch, the last batch spans more than 10 s and
        // every timer fires after it; smaller batches leave some to the end.
        if batch != "100" {
            assert!(flushed.len() > until_end.len(), "batch {batch}");
        }
        assert_eq!(
            module_out[..until_end.len()],
            until_end[..],
            "batch {batch}"
        );
        assert_eq!(module_out, flushed, "batch {batch}");
    }
}

#[test]
fn expect_compares_a_modules_outputs() {
    let dir = tempdir();
    let input = dir.path().join("events.jsonl");
    write_lines(
        &input,
        &events(&[("a", 1000), ("a", 2000), ("b", 3000), ("c", 12000)]),
    );
    let good = dir.path().join("good.jsonl");
    write_lines(
        &good,
        &[
            r#"{"output": null, "key": "a", "value": 2, "timestamp": 11000}"#.into(),
            r#"{"key": "b", "value": 1}"#.into(),
            r#"{"key": "c", "value": 1, "timestamp": 22000}"#.into(),
        ],
    );
    let test = |expect: &Path, extra: &[&str]| {
        run(weir()
            .arg("test")
            .arg(guest("burst-count"))
            .arg("--input")
            .arg(&input)
            .arg("--expect")
            .arg(expect)
            .args(extra))
    };
    let r = test(&good, &[]);
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!("{}: 3 records, as expected\n", good.display())
    );
    let wrong = dir.path().join("wrong.jsonl");
    write_lines(
        &wrong,
        &[
            r#"{"key": "b", "value": 1}"#.into(),
            r#"{"key": "a", "value": 3}"#.into(),
            r#"{"output": "alerts", "key": "c", "value": 1}"#.into(),
        ],
    );
    let w = wrong.display().to_string();
    let r = test(&wrong, &[]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!(
            r#"{w}:2: changed: {{"key": "a", "value": 3}}
    value: expected 3, got 2
{w}:3: missing: {{"output": "alerts", "key": "c", "value": 1}}
unexpected: {{"output":null,"key":"c","value":1,"timestamp":22000}}
{w}: 1 missing, 1 unexpected, 1 changed, 0 out of order (3 expected, 3 output)
"#
        )
    );
    // The aggregator's per-key values, as JSON.
    let counts = dir.path().join("counts.jsonl");
    write_lines(
        &counts,
        &[
            r#"{"key": "a", "value": 2}"#.into(),
            r#"{"key": "b", "value": 1}"#.into(),
            r#"{"key": "c", "value": 1}"#.into(),
        ],
    );
    let r = run(weir()
        .arg("test")
        .arg(guest("count"))
        .arg("--input")
        .arg(&input)
        .arg("--expect")
        .arg(&counts)
        .arg("--json"));
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert_eq!(
        r.stdout.trim(),
        json!({"expect": counts.display().to_string(), "equal": true, "missing": 0,
            "unexpected": 0, "changed": 0, "out_of_order": 0, "expected": 3, "output": 3})
        .to_string()
    );
}
