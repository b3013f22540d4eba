//! A newcomer's first runs: numbers as the guest wrote them, JSON that is
//! not JSON, what `weir state` shows under each emit mode, and what a run
//! with dead letters or failing records says. The guides themselves are
//! walked in first_hour.rs.

use crate::util::{assert_lines, run, target_dir, tempdir};

#[test]
fn numbers_print_as_the_guest_wrote_them_in_weir_test_and_weir_consume() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"key\":\"a\",\"value\":{\"amount\":110.00000000000001,\"n\":[0.30000000000000004,5]}}\n",
    )
    .unwrap();
    let r = run(crate::util::weir()
        .arg("test")
        .arg(crate::util::guest("uppercase"))
        .arg("--input")
        .arg(&input));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "weir test",
        &r.stdout,
        r#"{"output":null,"key":"a","value":{"AMOUNT":110.00000000000001,"N":[0.30000000000000004,5]},"timestamp":0}"#,
    );
    let data = dir.path().join("data");
    let weir = |args: &[&str]| {
        let r = run(crate::util::weir().args(args).arg("--data").arg(&data));
        assert!(r.status.success(), "weir {args:?}: {}", r.stderr);
        r.stdout
    };
    weir(&["topic", "create", "in"]);
    weir(&["produce", "in", "--input", input.to_str().unwrap()]);
    assert_lines(
        "weir consume",
        &weir(&["consume", "in", "--from-beginning"]),
        r#"{"partition":0,"offset":0,"key":"a","value":{"amount":110.00000000000001,"n":[0.30000000000000004,5]},"timestamp":0}"#,
    );
}

/// Runs the count example as an aggregate with `settings` over keyed records
/// (key, timestamp) in one batch; returns the values of the output topic
/// (`key@window start=value`) and a function giving `weir state get` of a key.
fn count_with(
    settings: &str,
    records: &[(&str, i64)],
) -> (Vec<String>, impl Fn(&str) -> crate::util::Run) {
    let dir = tempdir();
    let data = dir.path().join("data");
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"c\"\ninput = \"in\"\noutput = \"out\"\n\n[[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = \"{}\"\n{settings}\n",
            crate::util::guest("count").display()
        ),
    )
    .unwrap();
    let weir = |args: &[&str]| {
        let r = run(crate::util::weir().args(args).arg("--data").arg(&data));
        assert!(r.status.success(), "weir {args:?}: {}", r.stderr);
        r.stdout
    };
    weir(&["topic", "create", "in"]);
    let input = dir.path().join("in.jsonl");
    let lines: String = records
        .iter()
        .map(|(k, ts)| format!("{{\"key\":\"{k}\",\"value\":\"x\",\"timestamp\":{ts}}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    weir(&["produce", "in", "--input", input.to_str().unwrap()]);
    weir(&["run", file.to_str().unwrap(), "--until-caught-up", "-q"]);
    let out = weir(&["consume", "out", "--from-beginning"])
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let start = v["headers"]["weir.window.start"]
                .as_str()
                .unwrap_or("-")
                .to_string();
            format!("{}@{start}={}", v["key"].as_str().unwrap(), v["value"])
        })
        .collect();
    let state = move |key: &str| {
        let _keep = &dir;
        run(crate::util::weir()
            .args(["state", "get", "--data"])
            .arg(&data)
            .args(["c", "count", key]))
    };
    (out, state)
}

const RECORDS: [(&str, i64); 4] = [("a", 1000), ("a", 2000), ("a", 12000), ("b", 25000)];

/// As a Kafka Streams window store: a window stays in the state until the
/// stream time reaches its start + retention (by default its size plus
/// grace: as long as a record can update it).
#[test]
fn with_emit_update_a_window_stays_queryable_for_its_retention() {
    let (out, state) = count_with(
        "window = { type = \"tumbling\", size = \"10s\" }\nemit = \"update\"",
        &RECORDS,
    );
    assert_eq!(out, ["a@0=2", "a@10000=1", "b@20000=1"]);
    // Stream time 25 s: a's windows ended at 10 s and 20 s.
    let a = state("a");
    assert_eq!(a.status.code(), Some(1));
    assert_lines(
        "state of a",
        &a.stderr,
        r#"no state for key "a" in step count of pipeline c"#,
    );
    let b = state("b");
    assert!(b.status.success(), "{}", b.stderr);
    assert_lines(
        "state of b",
        &b.stdout,
        r#"{"key":"b","window":{"start":20000,"end":30000},"value":1}"#,
    );
    // Kept for 20 s: a's second window is still there.
    let (out, state) = count_with(
        "window = { type = \"tumbling\", size = \"10s\", retention = \"20s\" }\nemit = \"update\"",
        &RECORDS,
    );
    assert_eq!(out, ["a@0=2", "a@10000=1", "b@20000=1"]);
    let a = state("a");
    assert!(a.status.success(), "{}", a.stderr);
    assert_lines(
        "state of a",
        &a.stdout,
        r#"{"key":"a","window":{"start":10000,"end":20000},"value":1}"#,
    );
}

/// However long a windowed aggregate runs, its state holds only the windows
/// within retention: ten minutes of one record a second, in 10 s windows,
/// leave one window in the state; a session every hour for 60 hours, those
/// of the last day (with the state cache on, a closed session stays a day
/// of stream time past its end, since records in time could stretch a
/// later session of its key back to it).
#[test]
fn a_long_windowed_run_keeps_only_the_windows_within_retention() {
    let records: Vec<(&str, i64)> = (0..600).map(|i| ("a", i * 1000)).collect();
    let (out, state) = count_with(
        "window = { type = \"tumbling\", size = \"10s\" }\nemit = \"update\"",
        &records,
    );
    assert_eq!(out.len(), 60);
    assert_eq!(out.last().map(String::as_str), Some("a@590000=10"));
    let a = state("a");
    assert!(a.status.success(), "{}", a.stderr);
    assert_lines(
        "state of a",
        &a.stdout,
        r#"{"key":"a","window":{"start":590000,"end":600000},"value":10}"#,
    );
    // Sessions: a record every hour with a gap of 5 s makes a session each;
    // at 59 h, those that ended by 35 h are a day old.
    const HOUR: i64 = 3_600_000;
    let records: Vec<(&str, i64)> = (0..60).map(|i| ("a", i * HOUR)).collect();
    let (out, state) = count_with(
        "window = { type = \"session\", gap = \"5s\" }\nemit = \"update\"",
        &records,
    );
    assert_eq!(out.len(), 60);
    let a = state("a");
    assert!(a.status.success(), "{}", a.stderr);
    let kept: String = (35..60)
        .map(|i| {
            let t = i * HOUR;
            format!("{{\"key\":\"a\",\"window\":{{\"start\":{t},\"end\":{t}}},\"value\":1}}\n")
        })
        .collect();
    assert_lines("state of a", &a.stdout, &kept);
}

#[test]
fn with_emit_close_a_window_is_removed_from_the_state_when_it_closes() {
    let (out, state) = count_with(
        "window = { type = \"tumbling\", size = \"10s\" }\nemit = \"close\"",
        &RECORDS,
    );
    // Stream time 25 s closed a's two windows; b's is open.
    assert_eq!(out, ["a@0=2", "a@10000=1"]);
    let a = state("a");
    assert_eq!(a.status.code(), Some(1));
    assert_lines(
        "state of a",
        &a.stderr,
        r#"no state for key "a" in step count of pipeline c"#,
    );
    let b = state("b");
    assert!(b.status.success(), "{}", b.stderr);
    assert_lines(
        "state of b",
        &b.stdout,
        r#"{"key":"b","window":{"start":20000,"end":30000},"value":1}"#,
    );
}

#[test]
fn emit_close_without_a_window_never_emits_and_sessions_close_after_their_gap() {
    // As docs/pipeline.md says: an unwindowed aggregate never closes (its
    // state stays queryable); a session closes when the stream time reaches
    // its end + gap + grace, and is then emitted; with the state cache on
    // (the default here), it stays in the state a day of stream time past
    // its end, as records in time could still stretch a later session of
    // its key back to it.
    let (out, state) = count_with("emit = \"close\"", &RECORDS);
    assert_eq!(out, Vec::<String>::new());
    assert_lines("unwindowed", &state("a").stdout, r#"{"key":"a","value":3}"#);
    let (out, state) = count_with(
        "window = { type = \"session\", gap = \"5s\" }\nemit = \"close\"",
        &RECORDS,
    );
    assert_eq!(out, ["a@1000=2", "a@12000=1"]);
    // At 25 s both sessions of a are closed, and kept.
    assert_lines(
        "sessions of a",
        &state("a").stdout,
        r#"{"key":"a","window":{"start":1000,"end":2000},"value":2}
        {"key":"a","window":{"start":12000,"end":12000},"value":1}"#,
    );

    assert_lines(
        "session of b",
        &state("b").stdout,
        r#"{"key":"b","window":{"start":25000,"end":25000},"value":1}"#,
    );
}

#[test]
fn json_rejects_what_is_not_json_alike_in_js_and_python() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"value\":\"{oops\"}\n{\"value\":{\"a\":110.00000000000001}}\n{\"value\":\"[1,\"}\n",
    )
    .unwrap();
    let dead = |offset: u32, value: &str, detail: &str| {
        format!(
            r#"{{"offset":{offset},"key":null,"value":"{value}","headers":{{"weir.error":"the value is not valid JSON: {detail}","weir.error.kind":"rejected"}},"timestamp":0}}"#
        )
    };
    for (lang, details) in [
        (
            "js",
            [
                "Expected property name or '}' in JSON at position 1 (line 1 column 2)",
                "Unexpected end of JSON input",
            ],
        ),
        (
            "python",
            [
                "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
                "Expecting value: line 1 column 4 (char 3)",
            ],
        ),
    ] {
        let module = target_dir().join(format!("guests/{lang}/throws.wasm"));
        let r = run(crate::util::weir()
            .arg("test")
            .arg(&module)
            .arg("--input")
            .arg(&input));
        assert!(r.status.success(), "{lang}: {}", r.stderr);
        assert_lines(
            &format!("{lang} stdout"),
            &r.stdout,
            r#"{"output":null,"key":null,"value":{"a":110.00000000000001},"timestamp":0}"#,
        );
        assert_lines(
            &format!("{lang} stderr"),
            &r.stderr,
            &[dead(0, "{oops", details[0]), dead(2, "[1,", details[1])].join("\n"),
        );
    }
}

// ------------------------------------------------------------------ failures surface

/// Runs a one-step pipeline over `lines` (JSON records) until caught up;
/// returns what `weir run` printed on stderr and its exit code.
fn run_one_step(step: &str, lines: &[&str]) -> (String, Option<i32>) {
    let dir = tempdir();
    let data = dir.path().join("data");
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        format!("name = \"p\"\ninput = \"in\"\noutput = \"out\"\n\n[[steps]]\n{step}\n"),
    )
    .unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let mut create = crate::util::weir();
    create
        .args(["topic", "create", "in"])
        .arg("--data")
        .arg(&data);
    assert!(run(&mut create).status.success());
    let mut produce = crate::util::weir();
    produce
        .args(["produce", "in", "--input"])
        .arg(&input)
        .arg("--data")
        .arg(&data);
    assert!(run(&mut produce).status.success());
    let mut r = crate::util::weir();
    r.arg("run")
        .arg(&file)
        .args(["--until-caught-up", "-q", "--data"])
        .arg(&data);
    let r = run(&mut r);
    (r.stderr, r.status.code())
}

#[test]
fn a_run_with_dead_letters_prints_the_first_reason_per_step() {
    let (stderr, code) = run_one_step(
        &format!(
            "name = \"route\"\nkind = \"map\"\nmodule = \"{}\"\noutputs = {{ high = \"high\", low = \"low\" }}",
            crate::util::guest("filter-errors").display()
        ),
        &[
            r#"{"key":"a","value":"{\"level\":\"ERROR\"}"}"#,
            r#"{"key":"b","value":"not json"}"#,
            r#"{"key":"c","value":"nor this"}"#,
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_lines(
        "stderr",
        &stderr,
        r#"
        p: 3 records in, 1 out, 2 dead letters, 0 late records dropped
        step route: 2 records went to the dead-letter topic p-dead-letters; the first because: not a JSON log line: expected an object such as {"level":"ERROR",...}
        "#,
    );
}

#[test]
fn a_run_whose_every_record_fails_for_an_undeclared_output_or_store_exits_non_zero() {
    let (stderr, code) = run_one_step(
        &format!(
            "name = \"route\"\nkind = \"map\"\nmodule = \"{}\"",
            crate::util::guest("filter-errors").display()
        ),
        &[
            r#"{"key":"a","value":"{\"level\":\"ERROR\"}"}"#,
            r#"{"key":"b","value":"{}"}"#,
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_lines(
        "stderr",
        &stderr,
        r#"
        p: 2 records in, 0 out, 2 dead letters, 0 late records dropped
        step route: 2 records went to the dead-letter topic p-dead-letters; the first because: step route emitted to the output `high`, which the pipeline does not declare (declared: []); add `outputs = { high = "TOPIC" }` to the step
        error: every record of step route went to the dead letters: step route emitted to the output `high`, which the pipeline does not declare (declared: []); add `outputs = { high = "TOPIC" }` to the step
        "#,
    );
    let (stderr, code) = run_one_step(
        &format!(
            "name = \"bursts\"\nkind = \"processor\"\nmodule = \"{}\"\nstores = [\"other\"]",
            crate::util::guest("burst-count").display()
        ),
        &[r#"{"key":"a","value":"x","timestamp":1}"#],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_lines(
        "stderr",
        &stderr,
        r#"
        p: 1 record in, 0 out, 1 dead letter, 0 late records dropped
        step bursts: 1 record went to the dead-letter topic p-dead-letters; the first because: no state store named `counts`: declare it in the pipeline file
        error: every record of step bursts went to the dead letters: step bursts uses the state store `counts`, which the pipeline does not declare; add `stores = ["counts"]` to the step
        "#,
    );
}
