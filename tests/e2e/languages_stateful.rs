//! Stateful guests in JavaScript, Python, Go and C on the log: processors
//! with state and event-time timers across restarts, aggregators per key
//! and tumbling window, joiners, and state upgrades, exactly as the Rust
//! examples do. Stateless examples, errors and `weir new` are in
//! languages.rs.

use std::path::Path;

use crate::languages::{GO_AND_C, LANGS};
use crate::util::{assert_lines, guest, lang_guest, root, tempdir, weir};

/// Runs `weir` with `stdin` as its input; it must succeed.
fn weir_ok(args: &[&str], data: &Path, stdin: &str) -> String {
    use std::io::Write;
    let mut child = weir()
        .args(args)
        .arg("--data")
        .arg(data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "weir {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_counter_processor_counts_across_batches_and_restarts_in_js_and_python() {
    for lang in LANGS {
        counter_counts_across_batches_and_restarts(lang);
    }
}

#[test]
fn the_counter_processor_counts_across_batches_and_restarts_in_go_and_c() {
    for lang in GO_AND_C {
        counter_counts_across_batches_and_restarts(lang);
    }
}

fn counter_counts_across_batches_and_restarts(lang: &str) {
    let dir = tempdir();
    let data = dir.path().join("data");
    let pipeline = dir.path().join("counter.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"counter\"\ninput = \"in\"\noutput = \"out\"\n\n[[steps]]\nname = \"count\"\nkind = \"processor\"\nmodule = \"{}\"\nstores = [\"counts\"]\n",
            lang_guest(lang, "count-per-key").display()
        ),
    )
    .unwrap();
    let pipeline = pipeline.to_str().unwrap();
    weir_ok(&["topic", "create", "in"], &data, "");
    let records = |keys: &[&str]| -> String {
        keys.iter()
            .map(|k| format!("{{\"key\":\"{k}\",\"value\":\"x\"}}\n"))
            .collect()
    };
    weir_ok(&["produce", "in"], &data, &records(&["a", "b", "a"]));
    // Batches of 2: the count of `a` crosses a batch.
    weir_ok(
        &["run", pipeline, "--until-caught-up", "-q", "--batch", "2"],
        &data,
        "",
    );
    // A restart: the counts come back from the store.
    weir_ok(&["produce", "in"], &data, &records(&["a", "b", "c"]));
    weir_ok(&["run", pipeline, "--until-caught-up", "-q"], &data, "");
    let out = weir_ok(&["consume", "out", "--from-beginning"], &data, "");
    let values: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["value"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        values,
        ["a=1", "b=1", "a=2", "a=3", "b=2", "c=1"],
        "{lang}: {out}"
    );
}

#[test]
fn the_sum_aggregator_sums_per_key_and_tumbling_window_in_js_and_python() {
    for lang in LANGS {
        sum_per_key_and_tumbling_window(lang);
    }
}

#[test]
fn the_sum_aggregator_sums_per_key_and_tumbling_window_in_go_and_c() {
    for lang in GO_AND_C {
        sum_per_key_and_tumbling_window(lang);
    }
}

fn sum_per_key_and_tumbling_window(lang: &str) {
    let dir = tempdir();
    let data = dir.path().join("data");
    let pipeline = dir.path().join("sums.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"sums\"\ninput = \"in\"\noutput = \"out\"\ndead_letter = \"dlq\"\n\n[[steps]]\nname = \"sum\"\nkind = \"aggregate\"\nmodule = \"{}\"\nwindow = {{ type = \"tumbling\", size = \"10s\" }}\nemit = \"close\"\n",
            lang_guest(lang, "sum-per-key").display()
        ),
    )
    .unwrap();
    let pipeline = pipeline.to_str().unwrap();
    weir_ok(&["topic", "create", "in"], &data, "");
    let input: String = [
        ("a", "1", 1000),
        ("a", "2", 2000),
        ("b", "5", 3000),
        ("a", "x", 4000),
        ("a", "4", 12000),
        ("c", "1", 30000),
    ]
    .iter()
    .map(|(k, v, ts)| format!("{{\"key\":\"{k}\",\"value\":\"{v}\",\"timestamp\":{ts}}}\n"))
    .collect();
    weir_ok(&["produce", "in"], &data, &input);
    weir_ok(&["run", pipeline, "--until-caught-up", "-q"], &data, "");
    let out: Vec<String> = weir_ok(&["consume", "out", "--from-beginning"], &data, "")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{}@{}={}",
                v["key"].as_str().unwrap(),
                v["headers"]["weir.window.start"].as_str().unwrap(),
                v["value"]
            )
        })
        .collect();
    // Windows close when the stream time (30 s) passes their end; c's is still open.
    assert_eq!(out, ["a@0=3", "b@0=5", "a@10000=4"], "{lang}");
    let dlq = weir_ok(&["consume", "dlq", "--from-beginning"], &data, "");
    let dead: serde_json::Value = serde_json::from_str(dlq.trim()).unwrap();
    assert_eq!(dead["headers"]["weir.error"], "not a number: x", "{lang}");
    assert_eq!(dead["headers"]["weir.step"], "sum", "{lang}");
}

/// The burst counter in Go and C fires its event-time timers as the Rust
/// one does (tests/e2e/pipelines.rs runs the Rust one): state and a timer
/// per key, across a restart; the timer's output carries its time.
#[test]
fn the_burst_counter_fires_event_time_timers_across_restarts_in_go_and_c() {
    for lang in GO_AND_C {
        let dir = tempdir();
        let data = dir.path().join("data");
        let pipeline = dir.path().join("bursts.toml");
        std::fs::write(
            &pipeline,
            format!(
                "name = \"bursts\"\ninput = \"events\"\noutput = \"bursts\"\n\n[[steps]]\nname = \"burst\"\nkind = \"processor\"\nmodule = \"{}\"\nstores = [\"counts\"]\n",
                lang_guest(lang, "burst-count").display()
            ),
        )
        .unwrap();
        let pipeline = pipeline.to_str().unwrap();
        weir_ok(&["topic", "create", "events"], &data, "");
        let events = |evs: &[(&str, i64)]| -> String {
            evs.iter()
                .map(|(k, ts)| format!("{{\"key\":\"{k}\",\"value\":\"x\",\"timestamp\":{ts}}}\n"))
                .collect()
        };
        // First run: a's timer (at 11000) is set, not yet due.
        weir_ok(
            &["produce", "events"],
            &data,
            &events(&[("a", 1000), ("a", 2000), ("b", 3000), ("a", 5000)]),
        );
        weir_ok(
            &["run", pipeline, "--until-caught-up", "-q", "--batch", "1"],
            &data,
            "",
        );
        let state = weir_ok(&["state", "scan", "bursts", "burst"], &data, "");
        assert_eq!(
            state,
            "{\"store\":\"counts\",\"key\":\"a\",\"value\":3}\n{\"store\":\"counts\",\"key\":\"b\",\"value\":1}\n",
            "{lang}"
        );
        // After a restart the stream time passes a's and then b's timer.
        weir_ok(
            &["produce", "events"],
            &data,
            &events(&[("c", 12000), ("b", 20000)]),
        );
        weir_ok(
            &["run", pipeline, "--until-caught-up", "-q", "--batch", "1"],
            &data,
            "",
        );
        let out = weir_ok(&["consume", "bursts", "--from-beginning"], &data, "");
        let fired: Vec<String> = out
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{}={}@{}",
                    v["key"].as_str().unwrap(),
                    v["value"],
                    v["timestamp"]
                )
            })
            .collect();
        assert_eq!(fired, ["a=3@11000", "b=2@13000"], "{lang}: {out}");
        let state = weir_ok(&["state", "scan", "bursts", "burst"], &data, "");
        assert_eq!(
            state, "{\"store\":\"counts\",\"key\":\"c\",\"value\":1}\n",
            "{lang}"
        );
    }
}

/// The clickstream pipeline (a left table join, then a left windowed stream
/// join) with `module` in both steps, on the embedded log: what it wrote to
/// the output and the dead letters, as `weir consume` prints them.
fn clicks_on_the_log(module: &Path) -> (String, String) {
    let dir = tempdir();
    let data = dir.path().join("data");
    let text = std::fs::read_to_string(root().join("examples/pipelines/clicks.toml")).unwrap();
    let pipeline = dir.path().join("clicks.toml");
    std::fs::write(
        &pipeline,
        text.replace(
            "module = \"merge_json.wasm\"",
            &format!("module = {:?}", module.display().to_string()),
        ),
    )
    .unwrap();
    let produce = |topic: &str, lines: &[&str]| {
        weir_ok(&["topic", "create", topic], &data, "");
        weir_ok(&["produce", topic], &data, &(lines.join("\n") + "\n"));
    };
    produce(
        "profiles",
        &[
            r#"{"key": "ann", "value": {"tier": "gold"}, "timestamp": 1000}"#,
            r#"{"key": "bob", "value": "not json", "timestamp": 1000}"#,
        ],
    );
    produce(
        "searches",
        &[
            r#"{"key": "ann", "value": {"q": "shoes"}, "timestamp": 1500}"#,
            r#"{"key": "cid", "value": {"q": "hats\n"}, "timestamp": 3500}"#,
            r#"{"key": "ann", "value": {"q": "late"}, "timestamp": 10000000}"#,
            r#"{"key": "bob", "value": {"q": "late"}, "timestamp": 10000000}"#,
        ],
    );
    produce(
        "clicks",
        &[
            r#"{"key": "ann", "value": {"page": "/a"}, "timestamp": 2000}"#,
            r#"{"key": "bob", "value": {"page": "/b"}, "timestamp": 3000}"#,
            r#"{"key": "cid", "value": {"page": "/c"}, "timestamp": 4000}"#,
            r#"{"key": "dee", "value": "oops", "timestamp": 5000}"#,
        ],
    );
    let p = pipeline.to_str().unwrap();
    weir_ok(&["run", p, "--until-caught-up", "-q"], &data, "");
    let out = weir_ok(
        &["consume", "enriched-clicks", "--from-beginning"],
        &data,
        "",
    );
    let dead = weir_ok(
        &["consume", "clicks-dead-letters", "--from-beginning"],
        &data,
        "",
    );
    (out, dead)
}

#[test]
fn the_merge_json_joiner_joins_on_the_log_in_rust_go_and_c() {
    // bob's click meets no search; it comes out unmatched once cid's search
    // (3500) moves the join's stream time past its window.
    let want_out = r#"
        {"partition":0,"offset":0,"key":"ann","value":{"page":"/a","profile":{"tier":"gold"},"search":{"q":"shoes"}},"timestamp":2000}
        {"partition":0,"offset":1,"key":"bob","value":{"page":"/b","profile":"not json","search":null},"timestamp":3000}
        {"partition":0,"offset":2,"key":"cid","value":{"page":"/c","profile":null,"search":{"q":"hats\n"}},"timestamp":4000}
    "#;
    let want_dead = r#"{"partition":0,"offset":0,"key":"dee","value":"oops","headers":{"weir.error":"the left side is not a JSON object","weir.error.kind":"rejected","weir.step":"profile","weir.topic":"clicks","weir.partition":"0","weir.offset":"3"},"timestamp":5000}"#;
    for (lang, module) in [
        ("rust", guest("merge-json")),
        ("go", lang_guest("go", "merge-json")),
        ("c", lang_guest("c", "merge-json")),
    ] {
        let (out, dead) = clicks_on_the_log(&module);
        assert_lines(&format!("{lang} joined"), &out, want_out);
        assert_lines(&format!("{lang} dead letters"), &dead, want_dead);
    }
}

#[test]
fn a_js_and_a_python_aggregate_upgrade_the_counts_examples_count_left() {
    for lang in LANGS {
        upgrades_the_counts_of_examples_count(lang);
    }
}

#[test]
fn a_go_and_a_c_aggregate_upgrade_the_counts_examples_count_left() {
    for lang in GO_AND_C {
        upgrades_the_counts_of_examples_count(lang);
    }
}

/// Word count with the Rust `examples/count` (a count is a number, state
/// format 0), then with `count-v3` in `lang` (`{"count": N}`, format 1): the
/// counts go on from their upgraded values, once.
fn upgrades_the_counts_of_examples_count(lang: &str) {
    let dir = tempdir();
    let data = dir.path().join("data");
    let pipeline = dir.path().join("wc.toml");
    let write = |count: &Path| {
        std::fs::write(
            &pipeline,
            format!(
                "name = \"wc\"\ninput = \"lines\"\noutput = \"counts\"\n\n[[steps]]\nname = \"split\"\nkind = \"map\"\nmodule = \"{}\"\n\n[[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = \"{}\"\n",
                guest("split-words").display(),
                count.display()
            ),
        )
        .unwrap();
    };
    let file = pipeline.to_str().unwrap();
    let line = |l: &str| format!("{{\"key\":\"l\",\"value\":\"{l}\"}}\n");
    let counts = |from: usize| -> Vec<String> {
        weir_ok(&["consume", "counts", "--from-beginning"], &data, "")
            .lines()
            .skip(from)
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {}", v["key"].as_str().unwrap(), v["value"])
            })
            .collect()
    };
    weir_ok(&["topic", "create", "lines"], &data, "");
    weir_ok(&["produce", "lines"], &data, &line("the river and the log"));
    write(&guest("count"));
    weir_ok(&["run", file, "--until-caught-up", "-q"], &data, "");
    assert_eq!(counts(0), ["river 1", "and 1", "log 1"], "{lang}");

    write(&lang_guest(lang, "count-v3"));
    weir_ok(&["produce", "lines"], &data, &line("the log and the sea"));
    weir_ok(&["run", file, "--until-caught-up", "-q"], &data, "");
    assert_eq!(
        counts(3),
        [
            r#"log {"count":2}"#,
            r#"and {"count":2}"#,
            r#"sea {"count":1}"#
        ],
        "{lang}"
    );
    // The C SDK stores an accumulator as its bytes in memory (a u64).
    let stored = if lang == "c" {
        r#""\u0001\u0000\u0000\u0000\u0000\u0000\u0000\u0000""#
    } else {
        r#"{"count":1}"#
    };
    assert_lines(
        &format!("{lang} state get"),
        &weir_ok(&["state", "get", "wc", "count", "river"], &data, ""),
        &format!(r#"{{"key":"river","value":{stored}}}"#),
    );
    // Once: count-v3 upgrades only from format 0.
    weir_ok(&["produce", "lines"], &data, &line("a river"));
    weir_ok(&["run", file, "--until-caught-up", "-q"], &data, "");
    assert_eq!(
        counts(6),
        [r#"a {"count":1}"#, r#"river {"count":2}"#],
        "{lang}"
    );
}

/// A processor's stores upgraded: `examples/js/count-per-key` keeps a count
/// per key as a number (format 0); its second version keeps `{"seen": N}`
/// (format 1) and upgrades the numbers when the pipeline restarts with it.
#[test]
fn a_js_processor_upgrades_its_store_on_a_restart_with_a_new_version() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let pipeline = dir.path().join("counter.toml");
    let write = |module: &str| {
        std::fs::write(
            &pipeline,
            format!(
                "name = \"counter\"\ninput = \"in\"\noutput = \"out\"\n\n[[steps]]\nname = \"count\"\nkind = \"processor\"\nmodule = \"{}\"\nstores = [\"counts\"]\n",
                lang_guest("js", module).display()
            ),
        )
        .unwrap();
    };
    let file = pipeline.to_str().unwrap();
    let records = |keys: &[&str]| -> String {
        keys.iter()
            .map(|k| format!("{{\"key\":\"{k}\",\"value\":\"x\"}}\n"))
            .collect()
    };
    weir_ok(&["topic", "create", "in"], &data, "");
    weir_ok(&["produce", "in"], &data, &records(&["a", "b", "a"]));
    write("count-per-key");
    weir_ok(&["run", file, "--until-caught-up", "-q"], &data, "");
    write("count-per-key-v2");
    weir_ok(&["produce", "in"], &data, &records(&["a", "c"]));
    weir_ok(&["run", file, "--until-caught-up", "-q"], &data, "");
    let out = weir_ok(&["consume", "out", "--from-beginning"], &data, "");
    let values: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["value"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(values, ["a=1", "b=1", "a=2", "a=3", "c=1"], "{out}");
    assert_lines(
        "state of b",
        &weir_ok(&["state", "get", "counter", "count", "b"], &data, ""),
        r#"{"store":"counts","key":"b","value":{"seen":1}}"#,
    );
}
