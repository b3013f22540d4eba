//! Kafka Streams DSL parts beyond the seed's (sliding windows, global table
//! joins, versioned tables, aggregates over a table's rows) as a user meets
//! them beyond the parity scenarios: what `weir state` shows after a run,
//! a table grouped across partitions and runs, and the pipeline-file
//! mistakes of each, named by their line.

use serde_json::{Value, json};

use crate::live::Data;
use crate::pipelines::write_pipeline;
use crate::util::run;

#[test]
fn weir_state_shows_a_keys_sliding_windows_after_a_run() {
    let d = Data::new();
    d.ok(&["topic", "create", "events", "--partitions", "1"]);
    let recs: Vec<String> = [("a", 1_000), ("a", 7_000), ("a", 4_000), ("b", 6_000)]
        .iter()
        .map(|(k, ts)| json!({"key": k, "value": "x", "timestamp": ts}).to_string())
        .collect();
    d.produce("events", &recs);
    let file = write_pipeline(
        d.path.parent().unwrap(),
        r#"name = "sl"
input = "events"
output = "out"

[[steps]]
name = "count"
kind = "aggregate"
module = "count.wasm"
window = { type = "sliding", size = "5s", grace = "2s" }
"#,
    );
    d.run_caught_up(&file);
    // docs/pipeline.md's example: a's windows by start.
    assert_eq!(
        d.ok(&["state", "get", "sl", "count", "a"]),
        concat!(
            r#"{"key":"a","window":{"start":0,"end":5000},"value":2}"#,
            "\n",
            r#"{"key":"a","window":{"start":1001,"end":6001},"value":1}"#,
            "\n",
            r#"{"key":"a","window":{"start":2000,"end":7000},"value":2}"#,
            "\n",
            r#"{"key":"a","window":{"start":4001,"end":9001},"value":1}"#,
            "\n",
        )
    );
    assert_eq!(
        d.ok(&["state", "get", "sl", "count", "b"]),
        "{\"key\":\"b\",\"window\":{\"start\":1000,\"end\":6000},\"value\":1}\n"
    );
}

#[test]
fn sliding_window_global_join_history_grace_emit_after_and_from_table_mistakes_name_the_line_and_field()
 {
    let d = Data::new();
    let dir = d.path.parent().unwrap().to_path_buf();
    let step = "name = \"p\"\ninput = \"in\"\n\n[[steps]]\nname = \"s\"\n";
    let cases = [
        (
            "kind = \"aggregate\"\nmodule = \"count.wasm\"\nwindow = { type = \"sliding\", size = \"5s\", grace = \"2s\", retention = \"10s\" }\n",
            "8: step s: `window.retention` (10000 ms) is shorter than twice the window's size plus its grace (12000 ms): a window would leave the state while records can still update it",
        ),
        (
            "kind = \"aggregate\"\nmodule = \"count.wasm\"\nwindow = { type = \"sliding\", gap = \"5s\" }\n",
            "8: step s: a sliding window needs `size`",
        ),
        (
            "kind = \"aggregate\"\nmodule = \"count.wasm\"\nwindow = { type = \"slide\", size = \"5s\" }\n",
            "8: step s: unknown window type \"slide\"; valid: \"tumbling\", \"hopping\", \"sliding\", \"session\"",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\nwith_kind = \"global\"\njoin = \"outer\"\n",
            "10: step s: a global table join is \"inner\" or \"left\", as Kafka Streams' are",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\nwith_kind = \"global\"\nwindow = { before = \"1s\" }\n",
            "10: step s: a global table join takes no `window`: the table's newest value per key is always there",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\nlookup = \"/user\"\n",
            "9: step s: `lookup` applies to global table joins (`with_kind = \"global\"`); a table join looks up the record's key",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\nwith_kind = \"global\"\nlookup = \"user\"\n",
            "10: step s: `lookup` = \"user\" is not a JSON pointer into the left value: start it with `/`, as in \"/product_id\"",
        ),
        (
            "kind = \"map\"\nmodule = \"count.wasm\"\nlookup = \"/user\"\n",
            "8: step s: `lookup` applies to join steps, not to a map step",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\nwith_kind = \"global\"\nhistory = \"5s\"\n",
            "10: step s: `history` applies to stream-table and table-table joins (versioned tables, as Kafka Streams' versioned stores): leave out `foreign_key` and `with_kind`",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\nhistory = \"0s\"\n",
            "9: step s: `history` must be longer than 0",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\ngrace = \"2s\"\n",
            "9: step s: `grace` buffers the stream records of a stream-table join over a versioned table: give the join `history` too (Kafka Streams' Joined.withGracePeriod needs a versioned table)",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\nhistory = \"2s\"\ngrace = \"5s\"\n",
            "10: step s: `grace` (5000 ms) is longer than `history` (2000 ms): a buffered record could outlive the table versions it is to meet; make `history` at least the grace, as Kafka Streams requires",
        ),
        (
            "kind = \"join\"\nmodule = \"merge_json.wasm\"\nwith = \"t\"\nas_table = true\nhistory = \"5s\"\ngrace = \"1s\"\n",
            "11: step s: `grace` buffers the stream records of a stream-table join; a table-table join (`as_table`) has none",
        ),
        (
            "kind = \"map\"\nmodule = \"count.wasm\"\nemit_after = \"2s\"\n",
            "8: step s: `emit_after` applies to aggregate steps, not to a map step",
        ),
        (
            "kind = \"aggregate\"\nmodule = \"count.wasm\"\nwindow = { type = \"tumbling\", size = \"5s\" }\nemit = \"close\"\nemit_after = \"2s\"\n",
            "10: step s: `emit_after` holds results emitted on update; `emit = \"close\"` already emits each window once, when it closes",
        ),
        (
            "kind = \"aggregate\"\nmodule = \"count.wasm\"\nemit_after_max_records = 2\n",
            "8: step s: `emit_after_max_records` bounds what `emit_after` holds; set `emit_after` too (e.g. `emit_after = \"10s\"`)",
        ),
        (
            "kind = \"aggregate\"\nmodule = \"count.wasm\"\nemit_after = \"2s\"\nemit_after_when_full = \"stop\"\n",
            "9: step s: `emit_after_when_full` says what happens past a bound; set `emit_after_max_records` or `emit_after_max_bytes` too",
        ),
        (
            "kind = \"aggregate\"\nmodule = \"count.wasm\"\nemit_after = \"2s\"\nemit_after_max_records = 2\nemit_after_when_full = \"halt\"\n",
            "10: `emit_after_when_full`: unknown variant `halt`, expected `emit-early` or `stop`",
        ),
        (
            "kind = \"aggregate\"\nmodule = \"count.wasm\"\ngrace = \"2s\"\n",
            "8: step s: `grace` at a step's top level buffers a stream-table join's stream records; the grace of a window goes in the `window` table",
        ),
        (
            "kind = \"aggregate\"\nmodule = \"count.wasm\"\nfrom_table = true\n",
            "8: step s: a `from_table` aggregate groups the rows of the pipeline's input (a table) through one `map` step before it, its grouping (Kafka Streams' `groupBy` selector): make it the second step, after that map (maps with `as_table = true` may come first, to filter or map the table)",
        ),
        (
            "kind = \"map\"\nmodule = \"count.wasm\"\nfrom_table = true\n",
            "8: step s: `from_table` applies to aggregate steps, not to a map step",
        ),
        (
            "kind = \"aggregate\"\nmodule = \"count.wasm\"\nas_table = true\n",
            "8: step s: `as_table` applies to join and map steps, not to an aggregate step",
        ),
        (
            "kind = \"map\"\nmodule = \"select_key.wasm\"\nas_table = true\n\n[[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"\nfrom_table = true\n",
            "14: step count: the map step in front of a `from_table` aggregate picks each row's group, a new key, and `as_table = true` keeps keys: drop `as_table` on step s (the host already reads the pipeline's input as a table here)",
        ),
    ];
    for (text, want) in cases {
        refused(&d, &dir, &format!("{step}{text}"), want);
    }
}

/// `weir run` of the pipeline file `text` exits with 1 and the error
/// `FILE:want`.
fn refused(d: &Data, dir: &std::path::Path, text: &str, want: &str) {
    let file = write_pipeline(dir, text);
    let r = run(d.weir().arg("run").arg(&file).arg("--until-caught-up"));
    assert_eq!(r.status.code(), Some(1), "{want}");
    let expected = format!("error: {}:{want}", file.display());
    assert!(
        r.stderr.starts_with(&expected),
        "expected: {expected}\nactual: {}",
        r.stderr
    );
}

/// Users on two partitions counted per region over two runs: moves between
/// regions (so between tasks of the count), a deletion, and a rejected row
/// in the second run; the counts are the table's as it ends, in the output
/// topic's last record per region and in `weir state`.
#[test]
fn a_table_grouped_across_partitions_and_runs_counts_each_row_in_its_last_group() {
    let d = Data::new();
    d.ok(&["topic", "create", "users", "--partitions", "2"]);
    let user = |k: &str, region: Option<&str>| match region {
        Some(r) => json!({"key": k, "value": {"region": r}}).to_string(),
        None => json!({"key": k, "value": null}).to_string(),
    };
    d.produce(
        "users",
        &[
            user("u1", Some("eu")),
            user("u2", Some("us")),
            user("u3", Some("eu")),
            user("u4", Some("asia")),
            user("u5", Some("us")),
        ],
    );
    let file = write_pipeline(
        d.path.parent().unwrap(),
        r#"name = "regions"
input = "users"
output = "per-region"

[[steps]]
name = "by-region"
kind = "map"
module = "select_key.wasm"
config = { field = "/region" }

[[steps]]
name = "count"
kind = "aggregate"
module = "count.wasm"
from_table = true
"#,
    );
    let run_it = || d.run_caught_up(&file);
    run_it();
    d.produce(
        "users",
        &[
            user("u1", Some("us")),
            user("u2", None),
            user("u4", Some("eu")),
            json!({"key": "u5", "value": {"name": "no region"}}).to_string(),
        ],
    );
    run_it();
    let mut last = std::collections::BTreeMap::new();
    for l in d.ok(&["consume", "per-region", "--from-beginning"]).lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        last.insert(v["key"].as_str().unwrap().to_string(), v["value"].clone());
    }
    assert_eq!(
        last,
        std::collections::BTreeMap::from([
            ("asia".to_string(), json!(0)),
            ("eu".to_string(), json!(2)),
            ("us".to_string(), json!(1)),
        ])
    );
    assert_eq!(
        d.ok(&["state", "get", "regions", "count", "eu"]),
        "{\"key\":\"eu\",\"value\":2}\n"
    );
}

/// `input` as a list: a mistake in it is named by its line, and merged
/// inputs of another partition count are refused before anything runs.
#[test]
fn a_list_of_inputs_must_name_topics_once_each_of_one_partition_count() {
    let d = Data::new();
    let dir = d.path.parent().unwrap().to_path_buf();
    let steps = "\n[[steps]]\nname = \"s\"\nkind = \"map\"\nmodule = \"uppercase.wasm\"\n";
    for (input, want) in [
        (
            "[]",
            "2: `input` is a topic name, or a list of them (`input = [\"clicks-eu\", \"clicks-us\"]`), merged in timestamp order",
        ),
        (
            "[\"a\", 7]",
            "2: `input` is a topic name, or a list of them (`input = [\"clicks-eu\", \"clicks-us\"]`), merged in timestamp order",
        ),
        ("[\"a\", \"b\", \"a\"]", "2: `input` names \"a\" twice"),
        (
            "[\"a\", \"b c\"]",
            "2: `input` = \"b c\": use 1 to 200 of the characters A-Z a-z 0-9 . _ -",
        ),
    ] {
        refused(
            &d,
            &dir,
            &format!("name = \"p\"\ninput = {input}\n{steps}"),
            want,
        );
    }
    d.ok(&["topic", "create", "a", "--partitions", "2"]);
    d.ok(&["topic", "create", "b", "--partitions", "3"]);
    let file = write_pipeline(
        &dir,
        &format!("name = \"p\"\ninput = [\"a\", \"b\"]\n{steps}"),
    );
    let r = run(d.weir().arg("run").arg(&file).arg("--until-caught-up"));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr,
        "error: input b has 3 partitions but a has 2; merged inputs need the same partition count\n"
    );
}

/// A global table join after a step that changes keys needs no
/// repartition topic (every task has all of the table), unlike a
/// stream-table join there.
#[test]
fn a_global_join_after_a_key_change_needs_no_repartition() {
    let d = Data::new();
    d.ok(&["topic", "create", "orders", "--partitions", "2"]);
    d.ok(&["topic", "create", "products", "--partitions", "3"]);
    d.produce(
        "products",
        &[
            json!({"key": "p1", "value": {"name": "pen"}}).to_string(),
            json!({"key": "p2", "value": {"name": "ink"}}).to_string(),
        ],
    );
    d.produce(
        "orders",
        &[
            json!({"key": "o1", "value": {"product": "p1"}}).to_string(),
            json!({"key": "o2", "value": {"product": "p2"}}).to_string(),
            json!({"key": "o3", "value": {"product": "p1"}}).to_string(),
        ],
    );
    let file = write_pipeline(
        d.path.parent().unwrap(),
        r#"name = "by-product"
input = "orders"
output = "out"

[[steps]]
name = "rekey"
kind = "map"
module = "select_key.wasm"
config = { field = "/product" }

[[steps]]
name = "enrich"
kind = "join"
module = "merge_json.wasm"
with = "products"
with_kind = "global"
"#,
    );
    d.run_caught_up(&file);
    let mut out: Vec<String> = d
        .ok(&["consume", "out", "--from-beginning"])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {}",
                v["key"].as_str().unwrap(),
                v["value"]["right"]["name"].as_str().unwrap()
            )
        })
        .collect();
    out.sort();
    assert_eq!(out, ["p1 pen", "p1 pen", "p2 ink"]);
    let topics = d.ok(&["topic", "list"]);
    assert!(!topics.contains("repartition"), "{topics}");
}

/// A record of a merged input that a step rejects is a dead letter naming
/// that input, its partition and offset.
#[test]
fn a_dead_letter_from_a_merged_input_names_its_topic() {
    let d = Data::new();
    d.ok(&["topic", "create", "a", "--partitions", "1"]);
    d.ok(&["topic", "create", "b", "--partitions", "1"]);
    let line = |v: Value, ts: i64| json!({"key": "k", "value": v, "timestamp": ts}).to_string();
    d.produce("a", &[line(json!("one two"), 1), line(json!("two"), 3)]);
    d.produce(
        "b",
        &[
            line(json!("three"), 2),
            line(json!("four"), 4),
            line(Value::Null, 5),
        ],
    );
    let file = write_pipeline(
        d.path.parent().unwrap(),
        "name = \"p\"\ninput = [\"a\", \"b\"]\noutput = \"words\"\n\n[[steps]]\nname = \"split\"\nkind = \"map\"\nmodule = \"split_words.wasm\"\n",
    );
    d.run_caught_up(&file);
    let words: Vec<String> = d
        .ok(&["consume", "words", "--from-beginning"])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["value"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(words, ["one", "two", "three", "two", "four"]);
    let dead: Value = serde_json::from_str(
        d.ok(&["consume", "p-dead-letters", "--from-beginning"])
            .trim(),
    )
    .unwrap();
    assert_eq!(dead["headers"]["weir.topic"], "b");
    assert_eq!(dead["headers"]["weir.partition"], "0");
    assert_eq!(dead["headers"]["weir.offset"], "2");
    assert_eq!(dead["timestamp"], 5);
}

/// A map step with `as_table = true` (Kafka Streams' `KTable.filter` /
/// `mapValues`) on `weir run`: each row keeps its key, a dropped row is its
/// key's deletion, a deletion passes on, a keyless record is skipped; a
/// function that changes a row's key, returns several outputs for it or
/// rejects it sends the row to the dead letters with the reason and emits
/// nothing for it, and the run goes on.
#[test]
fn a_table_map_keeps_keys_and_dead_letters_a_row_whose_function_breaks_that() {
    let d = Data::new();
    d.ok(&["topic", "create", "users", "--partitions", "1"]);
    let row = |k: Option<&str>, v: Value, ts: i64| {
        json!({"key": k, "value": v, "timestamp": ts}).to_string()
    };
    d.produce(
        "users",
        &[
            row(
                Some("u1"),
                json!({"email": "ann@example.com", "region": "eu"}),
                1,
            ),
            row(Some("u2"), json!({"region": "us"}), 2),
            row(None, json!({"email": "x@example.com", "region": "eu"}), 3),
            row(Some("u1"), Value::Null, 4),
            row(Some("u3"), json!("two words"), 5),
            row(Some("u4"), json!({"email": "dee@example.com"}), 6),
        ],
    );
    let dir = d.path.parent().unwrap();
    let pipeline = |name: &str, module: &str, config: &str| {
        write_pipeline(
            dir,
            &format!(
                "name = \"{name}\"\ninput = \"users\"\noutput = \"{name}-out\"\n\n[[steps]]\nname = \"t\"\nkind = \"map\"\nmodule = \"{module}\"\nconfig = {{ {config} }}\nas_table = true\n"
            ),
        )
    };
    let records = |topic: &str| -> Vec<Value> {
        d.ok(&["consume", topic, "--from-beginning"])
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let reason = &v["headers"]["weir.error"];
                if reason.is_null() {
                    json!([v["key"], v["value"], v["timestamp"]])
                } else {
                    json!([v["key"], v["timestamp"], reason])
                }
            })
            .collect()
    };
    for (name, module, config) in [
        ("emails", "pick_field.wasm", "field = \"/email\""),
        ("regions", "select_key.wasm", "field = \"/region\""),
        ("words", "split_words.wasm", ""),
    ] {
        let file = pipeline(name, module, config);
        d.run_caught_up(&file);
    }
    // pick_field: u2 has no email (a deletion), the keyless record is
    // skipped, u1's deletion passes on, u3's value is not JSON.
    assert_eq!(
        records("emails-out"),
        [
            json!(["u1", "ann@example.com", 1]),
            json!(["u2", null, 2]),
            json!(["u1", null, 4]),
            json!(["u4", "dee@example.com", 6]),
        ]
    );
    assert_eq!(
        records("emails-dead-letters"),
        [json!([
            "u3",
            5,
            "the value is not JSON, so \"/email\" cannot be read from it"
        ])]
    );
    // select_key changes keys: each row it keys anew is a dead letter.
    let changed = |from: &str, to: &str| {
        format!(
            "step t: a table's map keeps each row's key (`as_table = true`, Kafka Streams' KTable.mapValues), and the function changed the key \"{from}\" to \"{to}\"; drop `as_table` to map a stream"
        )
    };
    assert_eq!(records("regions-out"), [json!(["u1", null, 4])]);
    assert_eq!(
        records("regions-dead-letters"),
        [
            json!(["u1", 1, changed("u1", "eu")]),
            json!(["u2", 2, changed("u2", "us")]),
            json!([
                "u3",
                5,
                "the value is not JSON, so \"/region\" cannot be read from it"
            ]),
            json!(["u4", 6, "the value has no \"/region\""]),
        ]
    );
    // split_words gives each row as many outputs as it has words.
    let several = |k: &str, n: usize| {
        format!(
            "step t: a table's map gives each row one value or none (`as_table = true`), and the function returned {n} outputs for the row \"{k}\""
        )
    };
    assert_eq!(records("words-out"), [json!(["u1", null, 4])]);
    assert_eq!(
        records("words-dead-letters"),
        [
            json!(["u1", 1, several("u1", 6)]),
            json!(["u2", 2, several("u2", 2)]),
            json!(["u3", 5, several("u3", 2)]),
            json!(["u4", 6, several("u4", 4)]),
        ]
    );
}

/// `emit_after` with a bound (Kafka Streams' `BufferConfig.maxRecords` /
/// `maxBytes`): with `emit_after_when_full = "stop"` a third held result
/// stops the run before its batch commits, so nothing is emitted or lost;
/// the same input with the default (emit early) lets the oldest held
/// result out as the third comes in, and time lets the rest out. A bound
/// in bytes that fits two results does the same.
#[test]
fn emit_after_with_a_bound_emits_the_oldest_early_or_stops_the_run_losing_nothing() {
    let d = Data::new();
    d.ok(&["topic", "create", "ev", "--partitions", "1"]);
    let ev = |k: &str, ts: i64| json!({"key": k, "value": "x", "timestamp": ts}).to_string();
    d.produce("ev", &[ev("a", 1000), ev("b", 2000), ev("c", 3000)]);
    let dir = d.path.parent().unwrap().to_path_buf();
    let pipeline = |name: &str, bound: &str| {
        write_pipeline(
            &dir,
            &format!(
                "name = \"{name}\"\ninput = \"ev\"\noutput = \"{name}-out\"\ncache_max_bytes = 0\n\n[[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"\nemit_after = \"1h\"\n{bound}"
            ),
        )
    };
    let outputs = |topic: &str| -> Vec<(String, String, i64)> {
        d.ok(&["consume", topic, "--from-beginning"])
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let key = v["key"].as_str().unwrap().to_string();
                (
                    key,
                    v["value"].to_string(),
                    v["timestamp"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let run_once = |file: &std::path::Path| {
        run(d
            .weir()
            .args(["run", "--until-caught-up", "--quiet"])
            .arg(file))
    };

    // Stopped at the third: each held result takes 47 bytes (its key, the
    // packed record of key `a`, value `1` and no headers, and 16).
    let file = pipeline(
        "p",
        "emit_after_max_records = 2\nemit_after_when_full = \"stop\"\n",
    );
    let r = run_once(&file);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("step count: `emit_after` holds 3 results (141 bytes), over its bound (emit_after_max_records = 2); `emit_after_when_full = \"stop\"` stops the run here, before the batch commits. Raise the bound, or drop `emit_after_when_full` to emit the oldest results early"),
        "{}",
        r.stderr
    );
    assert_eq!(outputs("p-out"), []);

    // The same input again, emitting early: `a`, held first, leaves.
    let file = pipeline("p", "emit_after_max_records = 2\n");
    let r = run_once(&file);
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    let a = ("a".to_string(), "1".to_string(), 1000);
    assert_eq!(outputs("p-out"), std::slice::from_ref(&a));

    // An hour after `b` and `c`: both leave by time, in held order; `d`
    // stays held.
    d.produce("ev", &[ev("d", 3_603_000)]);
    let r = run_once(&file);
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    let b = ("b".to_string(), "1".to_string(), 2000);
    let c = ("c".to_string(), "1".to_string(), 3000);
    assert_eq!(outputs("p-out"), [a.clone(), b.clone(), c.clone()]);

    // 100 bytes hold two results of 47, not three.
    let file = pipeline("q", "emit_after_max_bytes = 100\n");
    let r = run_once(&file);
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert_eq!(outputs("q-out"), [a, b, c]);
}
