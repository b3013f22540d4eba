//! `weir test --expect` and `--state` (a pipeline's or a module's outputs
//! compared with an expected file, its final state printed) and `weir test
//! MODULE` for aggregators and processors (each key's fold, timers, what a
//! module test refuses). Whole pipelines in memory against the embedded
//! log are in testdriver.rs.

use std::path::Path;

use serde_json::{Value, json};

use crate::testdriver::{events, lcg, memory_run, modules, pipeline, test_cmd, write_lines};
use crate::util::{assert_lines, guest, run, tempdir, weir};

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
