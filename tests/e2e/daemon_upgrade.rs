//! The daemon: hot swaps to a module of a new state format, with its
//! upgrade (and their rollback); the harness is in daemon.rs.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::daemon::{Daemon, until};
use crate::util::{assert_lines, guest};

/// Word count with `split` and a `count` step of the given module, and
/// the count step's settings.
fn word_count_pipeline(count: &str, settings: &str) -> String {
    format!(
        "name = \"wc\"\ninput = \"lines\"\noutput = \"counts\"\n\n[[steps]]\nname = \"split\"\nkind = \"map\"\nmodule = \"split@1\"\n\n[[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = \"{count}\"\n{settings}"
    )
}

/// A line for `weir produce`.
fn text(line: &str) -> Vec<String> {
    vec![serde_json::json!({"key": "l", "value": line}).to_string()]
}

/// The outputs of word count from the `from`th on, as "KEY VALUE".
fn counts_from(d: &Daemon, from: usize) -> Vec<String> {
    d.records("counts")[from..]
        .iter()
        .map(|(_, k, v)| format!("{k} {v}"))
        .collect()
}

/// The newest count per word.
fn newest(d: &Daemon) -> BTreeMap<String, Value> {
    d.records("counts")
        .into_iter()
        .map(|(_, k, v)| (k, v))
        .collect()
}

#[test]
fn a_swap_to_a_module_of_a_new_state_format_upgrades_the_counts_and_one_without_an_upgrade_is_refused()
 {
    let d = Daemon::start(&["--swap-wait-ms", "60000"]);
    assert_eq!(d.push(&guest("split-words"), "split"), "split@1");
    assert_eq!(d.push(&guest("count"), "tally"), "tally@1");
    assert_eq!(d.push(&guest("count-v3"), "tally"), "tally@2");
    assert_eq!(d.push(&guest("count-v2"), "tally"), "tally@3");
    d.ok(&["topic", "create", "lines", "--partitions", "1"]);
    d.ok(&[
        "deploy",
        &d.file("wc.toml", &word_count_pipeline("tally@1", "")),
    ]);
    d.produce("lines", &text("the river and the log"));
    d.produce("lines", &text("a log of the river"));
    let before: BTreeMap<String, Value> =
        [("a", 1), ("and", 1), ("log", 2), ("of", 1), ("river", 2)]
            .into_iter()
            .map(|(k, n)| (k.to_string(), Value::from(n)))
            .collect();
    until("the first counts", || newest(&d) == before);
    let seen = d.records("counts").len();

    // count-v3 keeps {"count": N} (format 1) and upgrades the numbers of
    // examples/count (format 0) at the switch: the counts go on.
    let out = std::thread::scope(|s| {
        let swap = s.spawn(|| d.ok(&["swap", "wc", "count", "tally@2"]));
        until("the swap to be pending", || {
            d.status("wc")["steps"][1]["last_swap"] == "pending"
        });
        d.produce("lines", &text("the log and the sea"));
        swap.join().unwrap()
    });
    assert!(
        out.starts_with("step count of wc: tally@1 -> tally@2 (its first batch committed"),
        "{out}"
    );
    until("the counts after the swap", || {
        d.records("counts").len() == seen + 3
    });
    assert_eq!(
        counts_from(&d, seen),
        [
            r#"log {"count":3}"#,
            r#"and {"count":2}"#,
            r#"sea {"count":1}"#
        ]
    );
    // A word the batch did not touch was upgraded too.
    let (code, body) = d.http(
        "GET",
        "/pipelines/wc/steps/count/state?key=river",
        d.token().as_deref(),
        b"",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!([{"key": "river", "value": {"count": 2}}])
    );

    // count-v2 writes format 0 and exports no upgrade: refused, rolled back.
    let err = d.fails(&["swap", "wc", "count", "tally@3"]);
    assert_lines(
        "swap to v2",
        &err,
        "error: the swap of step count of wc to tally@3 was rolled back: step count's state is in format 1; tally@3 writes format 0 and exports no upgrade; step count runs tally@2 again, and nothing of the failed batch was committed",
    );
    // So is a rollback to examples/count.
    let err = d.fails(&["rollback", "wc", "count"]);
    assert_lines(
        "rollback",
        &err,
        "error: the swap of step count of wc to tally@1 was rolled back: step count's state is in format 1; tally@1 writes format 0 and exports no upgrade; step count runs tally@2 again, and nothing of the failed batch was committed",
    );

    // Nothing lost: count-v3 goes on.
    let seen = d.records("counts").len();
    d.produce("lines", &text("a river"));
    until("the last counts", || d.records("counts").len() == seen + 2);
    assert_eq!(
        counts_from(&d, seen),
        [r#"a {"count":2}"#, r#"river {"count":3}"#]
    );
    let st = d.status("wc");
    assert_eq!(st["steps"][1]["module"], "tally@2");
    assert_eq!(st["steps"][1]["dead_letters"], 0);
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "wc  running  count=tally@2 split=split@1",
    );
}

#[test]
fn an_upgrade_that_rejects_an_entry_rolls_the_swap_back_in_every_partition_and_loses_nothing() {
    let d = Daemon::start(&["--swap-wait-ms", "60000"]);
    assert_eq!(d.push(&guest("split-words"), "split"), "split@1");
    assert_eq!(d.push(&guest("count"), "tally"), "tally@1");
    assert_eq!(d.push(&guest("count-v3"), "tally"), "tally@2");
    d.ok(&["topic", "create", "lines", "--partitions", "2"]);
    d.ok(&[
        "deploy",
        &d.file(
            "wc.toml",
            &word_count_pipeline("tally@1", "config = { refuse_upgrade = \"banana\" }\n"),
        ),
    ]);
    let words = [
        "apple", "banana", "cherry", "date", "fig", "grape", "kiwi", "lemon",
    ];
    d.produce("lines", &text(&words.join(" ")));
    let counts = |n: u64| -> BTreeMap<String, Value> {
        words
            .iter()
            .map(|w| (w.to_string(), Value::from(n)))
            .collect()
    };
    until("the first counts", || newest(&d) == counts(1));
    // The words are counted in both partitions: one of them upgrades
    // nothing it may commit while the other rejects banana's count.
    let parts: BTreeSet<u64> = d.records("counts").iter().map(|r| r.0).collect();
    assert_eq!(parts, BTreeSet::from([0, 1]));
    let seen = d.records("counts").len();
    let err = d.fails(&["swap", "wc", "count", "tally@2"]);
    assert_lines(
        "swap",
        &err,
        "error: the swap of step count of wc to tally@2 was rolled back: tally@2 cannot upgrade step count's state from format 0: refused by the setting refuse_upgrade (key \"banana\"); step count runs tally@1 again, and nothing of the failed batch was committed",
    );
    d.produce("lines", &text(&words.join(" ")));
    until("the counts after", || {
        d.records("counts").len() == seen + words.len()
    });
    // (Each partition's records in order, one partition after the other.)
    let mut all = counts_from(&d, 0);
    all.sort();
    let mut want: Vec<String> = words
        .iter()
        .flat_map(|w| [format!("{w} 1"), format!("{w} 2")])
        .collect();
    want.sort();
    assert_eq!(all, want, "every count goes on in examples/count's form");
    let st = d.status("wc");
    assert_eq!(st["steps"][1]["module"], "tally@1");
    assert_eq!(st["steps"][1]["dead_letters"], 0);
    assert!(d.records("wc-dead-letters").is_empty());
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "wc  running  count=tally@1 split=split@1",
    );
}
