//! Stateful pipelines on the embedded log: windows (late records, sessions,
//! the seed's stock statistics), joins (the seed's click enrichment, table-
//! table joins), processors with event-time and wall-clock timers, a
//! restart after Ctrl-C and one with a module of a new state format,
//! against models the tests compute on their own. The harness is in
//! pipelines.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::pipelines::{
    Data, as_records, canon, latest, model_counts, pipeline, text_lines, write_pipeline,
};
use crate::util::{assert_lines, guest, run};

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
window = { type = "tumbling", size = "10s", grace = "5s", retention = "1m" }
"#,
    );
    // (A minute's retention keeps both windows queryable below; by default
    // [0, 10 s) would leave the state at 15 s.)
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
    // [1 s, 1 s] closed at 16 s (end + gap + grace) and left the state, as
    // Kafka Streams' session store no longer returns it.
    assert_lines(
        "state",
        &r.stdout,
        r#"{"key":"k","window":{"start":10000,"end":20000},"value":3}"#,
    );
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
    // One key, looked up in each store and partition.
    let r = run(d
        .weir()
        .args(["state", "get"])
        .args(["bursts", "burst", "b"]));
    assert_lines(
        "state get",
        &r.stdout,
        r#"{"store":"counts","key":"b","value":1}"#,
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

/// A repartition topic keeps no record its reader committed past (as Kafka
/// Streams purges them): after a run its partitions are empty, their ends
/// kept, and a later run over more input goes on from there.
#[test]
fn a_repartition_topic_is_purged_behind_its_reader_and_a_later_run_goes_on() {
    let d = Data::new();
    d.topic("lines", 2);
    let first = text_lines(300, 21);
    let more = text_lines(200, 22);
    let words = |lines: &[String]| -> usize {
        lines
            .iter()
            .map(|l| crate::pipelines::words_of(l).len())
            .sum()
    };
    let describe = || d.ok(&["topic", "describe", "wordcount-count-repartition"]);
    let ends = |text: &str| -> Vec<(u64, u64)> {
        text.lines()
            .filter_map(|l| l.split_once(": start offset "))
            .map(|(_, rest)| {
                let (start, end) = rest.split_once(", end offset ").unwrap();
                (start.parse().unwrap(), end.trim().parse().unwrap())
            })
            .collect()
    };

    d.produce("lines", &as_records(&first));
    d.run_pipeline(&pipeline("wordcount.toml"), &[]);
    let after_first = ends(&describe());
    assert_eq!(after_first.len(), 2, "{}", describe());
    for (start, end) in &after_first {
        assert_eq!(start, end, "purged up to its end: {}", describe());
    }
    let through: u64 = after_first.iter().map(|(_, end)| end).sum();
    assert_eq!(through, words(&first) as u64);
    assert_eq!(
        d.ok(&["consume", "wordcount-count-repartition", "--from-beginning"]),
        ""
    );
    assert_eq!(latest(&d.consume("counts")), model_counts(&first));

    d.produce("lines", &as_records(&more));
    d.run_pipeline(&pipeline("wordcount.toml"), &[]);
    let after_more = ends(&describe());
    for (start, end) in &after_more {
        assert_eq!(start, end, "purged again: {}", describe());
    }
    let through: u64 = after_more.iter().map(|(_, end)| end).sum();
    assert_eq!(through, (words(&first) + words(&more)) as u64);
    let all: Vec<String> = first.iter().chain(&more).cloned().collect();
    assert_eq!(latest(&d.consume("counts")), model_counts(&all));
}
