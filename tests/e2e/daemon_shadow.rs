//! The daemon: shadows of a pipeline beside it, their diff and promote (on
//! the embedded log and on Kafka); the harness is in daemon.rs.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::daemon::{Daemon, map_pipeline, tally_pipeline, until};
use crate::util::{assert_lines, guest, run};

#[test]
fn shadow_and_diff_report_exactly_the_changed_records_and_promote_moves_readers() {
    let d = Daemon::start(&["--swap-wait-ms", "200"]);
    assert_eq!(d.push(&guest("uppercase"), "case"), "case@1");
    assert_eq!(d.push(&guest("lowercase"), "case"), "case@2");
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    let live = d.file("live.toml", &map_pipeline("live", "case@1"));
    d.ok(&["deploy", &live]);
    // v2 lower-cases where v1 upper-cases: only values with letters differ.
    let inputs = [
        ("k1", "abc"),
        ("k2", "123-456"),
        ("k3", "Xy"),
        ("k4", "7!"),
        ("k5", "--"),
    ];
    let lines: Vec<String> = inputs
        .iter()
        .map(|(k, v)| format!("{{\"key\":\"{k}\",\"value\":\"{v}\"}}"))
        .collect();
    d.produce("in", &lines);
    until("the outputs", || d.records("out").len() == 5);

    assert_lines(
        "status",
        &d.ok(&["pipeline", "status", "live"]),
        "
        pipeline live: running (application id live)
          input in, outputs out
          step case: module case@1, in 5, out 5, dead letters 0, lag 0, state 0 entries (0 bytes), swaps 0 (last: none, pause 0 us)
        ",
    );
    assert_lines(
        "shadow",
        &d.ok(&["shadow", "live", "case", "case@2"]),
        "shadow of live started: step case on case@2, application id live-shadow, outputs out-shadow",
    );
    assert_lines(
        "diff",
        &d.ok(&["diff", "live"]),
        r#"
        live against its shadow (step case on case@2)
        equal     3
        changed   2
        only-old  0
        only-new  0
        changed   out k1: "ABC" -> "abc"
        changed   out k3: "XY" -> "xy"
        "#,
    );
    let json: Value = serde_json::from_str(&d.ok(&["diff", "live", "--json"])).unwrap();
    assert_eq!(
        (
            &json["equal"],
            &json["changed"],
            &json["only_old"],
            &json["only_new"]
        ),
        (&3.into(), &2.into(), &0.into(), &0.into())
    );
    assert_eq!(
        json["samples"]["changed"],
        serde_json::json!([
            {"topic": "out", "key": "k1", "old": "ABC", "new": "abc"},
            {"topic": "out", "key": "k3", "old": "XY", "new": "xy"},
        ])
    );
    // The original kept running beside it.
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@1  shadow case=case@2",
    );
    // A version a shadow runs is in use.
    let err = d.fails(&["module", "delete", "case@2"]);
    assert_lines(
        "delete",
        &err,
        "error: case@2 is in use by step case of the shadow of pipeline live: swap the step to another version (or delete the pipeline) first",
    );

    assert_lines(
        "promote",
        &d.ok(&["promote", "live"]),
        "
        promoted the shadow of live: step case runs case@2 (application id live-shadow)
        readers of out now read out-shadow
        deleted the positions and state of application live (its output topics stay)
        ",
    );
    // The original's positions are gone; its output topic stays.
    assert_lines(
        "reset",
        &d.fails(&["reset", "live"]),
        &format!(
            "pipeline live has no positions, state or repartition topics in {} (is the name right? it is the pipeline file's `name`)",
            d.data.display()
        ),
    );
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@2",
    );
    // New records go to the promoted pipeline's topic, in v2's form; the
    // old topic gets nothing more.
    d.produce("in", &["{\"key\":\"k6\",\"value\":\"New\"}".to_string()]);
    until("the new record", || d.records("out-shadow").len() == 6);
    let promoted = d.records("out-shadow");
    assert!(
        promoted.iter().any(|r| r.1 == "k6" && r.2 == "new"),
        "{promoted:?}"
    );
    assert_eq!(d.records("out").len(), 5);
    let st = d.status("live");
    assert_eq!(st["outputs"], serde_json::json!(["out-shadow"]));
    // The version the pipeline no longer runs can go.
    assert_lines(
        "delete",
        &d.ok(&["module", "delete", "case@1"]),
        "deleted case@1",
    );

    // A second shadow, discarded.
    d.ok(&["shadow", "live", "case", "case@2"]);
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@2  shadow case=case@2",
    );
    assert_lines(
        "discard",
        &d.ok(&["discard", "live"]),
        "discarded the shadow of live: deleted the positions and state of application live-shadow-shadow2 and the topics out-shadow-shadow2, live-dead-letters-shadow-shadow2",
    );
    // The promoted pipeline's topics and the original's outputs stay.
    assert_lines(
        "topics",
        &d.ok(&["topic", "list"]),
        "
        in	2 partitions
        live-dead-letters	2 partitions
        live-dead-letters-shadow	2 partitions
        out	2 partitions
        out-shadow	2 partitions
        ",
    );
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@2",
    );
    let err = d.fails(&["diff", "live"]);
    assert_lines(
        "diff",
        &err,
        "error: pipeline live has no running shadow: `weir shadow live STEP NAME@VERSION` starts one",
    );
}

#[test]
fn an_aggregate_and_its_shadow_are_compared_by_their_final_results() {
    let d = Daemon::start(&[]);
    assert_eq!(d.push(&guest("count"), "tally"), "tally@1");
    assert_eq!(d.push(&guest("count-v2"), "tally"), "tally@2");
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    d.ok(&["deploy", &d.file("tally.toml", &tally_pipeline("tally@1"))]);
    // Three produces, each taken in its own batches: the live run emits
    // more intermediate counts than a reprocessing of the whole history.
    for round in 1..=3 {
        d.produce(
            "in",
            &[
                "{\"key\":\"a\",\"value\":\"x\"}".to_string(),
                "{\"key\":\"b\",\"value\":\"y\"}".to_string(),
            ],
        );
        until("the counts", || d.records("tallies").len() == 2 * round);
    }
    assert_lines(
        "shadow",
        &d.ok(&["shadow", "tally", "count", "tally@1"]),
        "shadow of tally started: step count on tally@1, application id tally-shadow, outputs tallies-shadow",
    );
    assert_lines(
        "diff",
        &d.ok(&["diff", "tally"]),
        "tally against its shadow (step count on tally@1)\nequal     2\nchanged   0\nonly-old  0\nonly-new  0",
    );
    // Discarded, the shadow's state, positions and topics go.
    assert_lines(
        "discard",
        &d.ok(&["discard", "tally"]),
        "discarded the shadow of tally: deleted the positions and state of application tally-shadow and the topics tallies-shadow, tally-dead-letters-shadow",
    );
    assert_lines(
        "reset",
        &d.fails(&["reset", "tally-shadow"]),
        &format!(
            "pipeline tally-shadow has no positions, state or repartition topics in {} (is the name right? it is the pipeline file's `name`)",
            d.data.display()
        ),
    );
    // A later shadow gets an application id and topics of its own.
    assert_lines(
        "shadow",
        &d.ok(&["shadow", "tally", "count", "tally@2"]),
        "shadow of tally started: step count on tally@2, application id tally-shadow2, outputs tallies-shadow2",
    );
    assert_lines(
        "diff",
        &d.ok(&["diff", "tally"]),
        r#"
        tally against its shadow (step count on tally@2)
        equal     0
        changed   2
        only-old  0
        only-new  0
        changed   tallies a: "3" -> "3 records"
        changed   tallies b: "3" -> "3 records"
        "#,
    );
    // Reprocessing by resetting: refused while the daemon runs the
    // pipeline; once stopped, reset, and started again, it counts the
    // history again from nothing (3, not 6).
    let r = run(d.weir().args(["reset", "tally"]));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr.trim(),
        format!(
            "error: pipeline tally runs in the weir process that owns {}: stop it first (`weir pipeline stop tally` when the daemon runs it)",
            d.data.display()
        )
    );
    let r = run(d.weir().args(["pipeline", "reset", "tally"]));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr.trim(),
        "error: pipeline tally runs: stop it first (`weir pipeline stop tally`)"
    );
    d.ok(&["pipeline", "stop", "tally"]);
    // Stopped, its shadow's state goes through the daemon's socket.
    let out = d.ok(&["reset", "tally-shadow2"]);
    assert!(
        out.starts_with("reset pipeline tally-shadow2: forgot its input positions and state ("),
        "{out}"
    );
    let out = d.ok(&["pipeline", "reset", "tally"]);
    assert!(
        out.starts_with("reset tally: forgot ")
            && out.trim_end().ends_with(" entries of positions and state; `weir pipeline start tally` reprocesses its inputs from the start"),
        "{out}"
    );
    d.ok(&["pipeline", "start", "tally"]);
    // Each key reaches 3 a second time (not 6).
    let threes = |key: &str| {
        d.records("tallies")
            .iter()
            .filter(|(_, k, v)| k == key && v.as_u64() == Some(3))
            .count()
    };
    until("the counts again", || threes("a") == 2 && threes("b") == 2);
    let values: BTreeSet<String> = d
        .records("tallies")
        .into_iter()
        .map(|(_, _, v)| v.to_string())
        .collect();
    assert_eq!(
        values,
        ["1", "2", "3"].map(String::from).into(),
        "a count went past 3"
    );
}

#[test]
fn a_pipeline_on_kafka_is_hot_swapped_with_every_record_once_and_shadowed() {
    let kafka = crate::kafka::brokers();
    let d = Daemon::start(&["--swap-wait-ms", "30000"]);
    assert_eq!(d.push(&guest("uppercase"), "case"), "case@1");
    assert_eq!(d.push(&guest("lowercase"), "case"), "case@2");
    let n = std::process::id();
    let (input, output) = (format!("kin-{n}"), format!("kout-{n}"));
    let app = format!("kcase-{n}");
    let k = |args: &[&str]| {
        let mut c = d.weir();
        c.args(args).args(["--brokers", kafka]);
        c
    };
    let ok = |c: &mut Command| {
        let r = run(c);
        assert!(r.status.success(), "{c:?}: {}", r.stderr);
        r.stdout
    };
    ok(&mut k(&["topic", "create", &input, "--partitions", "2"]));
    let text = map_pipeline(&app, "case@1")
        .replace("input = \"in\"", &format!("input = \"{input}\""))
        .replace("output = \"out\"", &format!("output = \"{output}\""))
        + &format!("\n[kafka]\n\"bootstrap.servers\" = \"{kafka}\"\n");
    let file = d.file("kafka.toml", &text);
    d.ok(&["deploy", &file]);
    let produce = |from: u64, to: u64| {
        let mut child = k(&["produce", &input])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines: String = (from..to)
            .map(|i| format!("{{\"key\":\"k{i}\",\"value\":\"Rec-{i}\"}}\n"))
            .collect();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    let values = || -> Vec<String> {
        let r = run(&mut k(&["consume", &output, "--from-beginning"]));
        r.stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["value"].as_str().unwrap().to_string()
            })
            .collect()
    };
    produce(0, 300);
    until("v1's outputs on Kafka", || values().len() >= 300);
    let status = d.ok(&["pipeline", "status", &app]);
    assert!(
        status.contains(&format!("  on Kafka at {kafka}, partitions [0, 1]\n")),
        "{status}"
    );
    d.ok(&["swap", &app, "case", "case@2"]);
    produce(300, 600);
    until("v2's outputs on Kafka", || values().len() >= 600);
    let mut got = values();
    got.sort_by_key(|v| v[4..].parse::<u64>().unwrap());
    let want: Vec<String> = (0..600)
        .map(|i| {
            if i < 300 {
                format!("REC-{i}")
            } else {
                format!("rec-{i}")
            }
        })
        .collect();
    assert_eq!(
        got, want,
        "each record once: v1's form before the swap, v2's after"
    );
    // A shadow of v1 reprocesses the same history on Kafka; the diff shows
    // that every record differs by case.
    d.ok(&["shadow", &app, "case", "case@1"]);
    until("the shadow to catch up", || {
        run(d.weir().args(["diff", &app, "--json"]))
            .status
            .success()
    });
    let diff: Value = serde_json::from_str(&d.ok(&["diff", &app, "--json"])).unwrap();
    assert_eq!(diff["changed"], 300, "{diff}");
    assert_eq!(diff["equal"], 300, "{diff}");
    // Discarded, the shadow's consumer group and topics leave the cluster.
    assert_lines(
        "discard",
        &d.ok(&["discard", &app]),
        &format!(
            "discarded the shadow of {app}: deleted the positions and state of application {app}-shadow and the topics {app}-shadow-segment-0-changelog, {output}-shadow, {app}-dead-letters-shadow"
        ),
    );
    let listed = ok(&mut k(&["topic", "list"]));
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|t| t.starts_with(&app) || t.starts_with(&input) || t.starts_with(&output))
        .collect();
    assert_eq!(
        names,
        [
            format!("{app}-dead-letters"),
            format!("{app}-segment-0-changelog"),
            input.clone(),
            output.clone()
        ],
        "{listed}"
    );
}
