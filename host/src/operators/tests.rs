//! Operator unit tests: the in-memory backend, native stand-ins for guests.
//! Here maps, results across batch sizes, and updates held back to the
//! commit; windows, sessions, joins and processors have files of their own.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::stream_join_tests::joined;
use super::testing::*;
use crate::record::Record;

pub(super) fn stream(recs: &[Record]) -> Vec<(bool, Record)> {
    recs.iter().map(|r| (false, r.clone())).collect()
}

pub(super) const SESSION: &str = r#"name = "count"
kind = "aggregate"
module = "count.wasm"
window = { type = "session", gap = "5s", grace = "10s" }"#;

#[test]
fn map_routes_outputs_and_dead_letters_what_fails() {
    let cfg = step(
        r#"name = "up"
kind = "map"
module = "up.wasm"
outputs = { rare = "rare-words" }"#,
    );
    let mut h = Harness::new(cfg, upper());
    let out = h.feed(
        &stream(&[rec("a", "hi", 1), rec("b", "xy", 2), rec("c", "bad", 3)]),
        10,
    );
    assert_eq!(out.iter().map(show).collect::<Vec<_>>(), ["a=HI@1"]);
    assert_eq!(h.emitted.len(), 1);
    assert_eq!(h.emitted[0].0, "rare-words");
    assert_eq!(show(&h.emitted[0].1), "b=XY@2");
    assert_eq!(h.dead.len(), 1);
    assert_eq!(
        (h.dead[0].0.as_str(), h.dead[0].1.as_str()),
        ("up", "bad value")
    );
}

/// Found by the parity check (tests/parity/wordcount): Kafka Streams' map
/// and flatMap forward the input record's headers, so an output that names
/// no headers keeps its input's; one that names some has only those.
#[test]
fn a_map_output_without_headers_keeps_its_inputs_and_one_with_headers_only_its_own() {
    let cfg = step(
        r#"name = "re"
kind = "map"
module = "up.wasm""#,
    );
    let mut h = Harness::new(cfg, reheader());
    let with = |key: &str, value: &str| {
        let mut r = rec(key, value, 1);
        r.headers = vec![("h".to_string(), b"v".to_vec())];
        r
    };
    let out = h.feed(
        &stream(&[with("a", "x"), with("b", "own"), rec("c", "x", 2)]),
        10,
    );
    let headers: Vec<Vec<(String, Vec<u8>)>> = out.iter().map(|r| r.headers.clone()).collect();
    assert_eq!(
        headers,
        [
            vec![("h".to_string(), b"v".to_vec())],
            vec![("mine".to_string(), b"1".to_vec())],
            vec![],
        ]
    );
}

#[test]
fn an_undeclared_output_is_a_dead_letter_naming_how_to_declare_it() {
    let cfg = step(
        r#"name = "up"
kind = "map"
module = "up.wasm""#,
    );
    let mut h = Harness::new(cfg, upper());
    let out = h.feed(&stream(&[rec("b", "xy", 2)]), 10);
    assert!(out.is_empty());
    assert_eq!(
        h.dead[0].1,
        "step up emitted to the output `rare`, which the pipeline does not declare (declared: []); add `outputs = { rare = \"TOPIC\" }` to the step"
    );
    assert_eq!(show(&h.dead[0].2), "b=xy@2");
}

/// A small pseudo-random generator (no dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Out-of-order input with late records: timestamps wander forward with
/// jumps back of up to `back` ms.
fn wandering(seed: u64, n: usize, keys: u64, back: u64) -> Vec<Record> {
    let mut g = Lcg(seed);
    let mut t = 100_000i64;
    (0..n)
        .map(|_| {
            t += g.next(3_000) as i64;
            let ts = t - g.next(back) as i64;
            rec(&format!("k{}", g.next(keys)), "x", ts)
        })
        .collect()
}

/// The final value per (key, window) of a run's outputs.
fn finals(out: &[Record]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for r in out {
        let s = show(r);
        let (head, _) = s.rsplit_once('@').unwrap();
        let (k, v) = head.split_once('=').unwrap();
        m.insert(k.to_string(), v.to_string());
    }
    m
}

/// Kafka Streams' rules for tumbling windows with grace, as a model: a
/// record counts in its window unless the stream time (including it) has
/// reached the window's end + grace.
fn tumbling_model(recs: &[Record], size: i64, grace: i64) -> BTreeMap<String, String> {
    let mut st = i64::MIN;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for r in recs {
        st = st.max(r.timestamp);
        let start = r.timestamp.div_euclid(size) * size;
        if start + size + grace <= st {
            continue;
        }
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap()).into_owned();
        *counts
            .entry(format!("{key}[{start},{}]", start + size))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

#[test]
fn results_do_not_depend_on_the_batch_size() {
    let ops = [
        (
            "tumbling close",
            "window = { type = \"tumbling\", size = \"10s\", grace = \"3s\" }\nemit = \"close\"",
        ),
        (
            "hopping update",
            "window = { type = \"hopping\", size = \"10s\", advance = \"5s\", grace = \"3s\" }",
        ),
        (
            "session close",
            "window = { type = \"session\", gap = \"4s\", grace = \"3s\" }\nemit = \"close\"",
        ),
        (
            "session update",
            "window = { type = \"session\", gap = \"4s\", grace = \"3s\" }",
        ),
    ];
    for seed in 1..=5u64 {
        let mut input = wandering(seed, 300, 4, 9_000);
        // A record far ahead closes every window.
        input.push(rec("end", "x", 10_000_000));
        for (name, window) in ops {
            let cfg = step(&format!(
                "name = \"count\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"\n{window}"
            ));
            let mut results = Vec::new();
            let mut shown = Vec::new();
            for size in [1, 7, 500] {
                let mut h = Harness::new(cfg.clone(), counter());
                let out = h.feed(&stream(&input), size);
                let mut f = finals(&out);
                if name.starts_with("session update") {
                    // Tombstoned sessions are gone.
                    f.retain(|_, v| v != "null");
                }
                results.push((size, f, h.late));
                // Timestamps too: each window's last output, and with
                // `emit = "close"` every output in order.
                let mut stamped: BTreeMap<String, String> = BTreeMap::new();
                for r in &out {
                    let s = show(r);
                    let (k, v) = s.split_once('=').unwrap();
                    stamped.insert(k.to_string(), v.to_string());
                }
                let all: Vec<String> = out.iter().map(show).collect();
                shown.push((
                    stamped,
                    if name.ends_with("close") {
                        all
                    } else {
                        Vec::new()
                    },
                ));
            }
            for (i, size) in [7, 500].iter().enumerate() {
                assert_eq!(
                    shown[i + 1],
                    shown[0],
                    "{name}, seed {seed}: batch {size} vs 1, with timestamps"
                );
            }
            for (size, f, late) in &results[1..] {
                assert_eq!(f, &results[0].1, "{name}, seed {seed}: batch {size} vs 1");
                assert_eq!(
                    *late, results[0].2,
                    "{name}, seed {seed}: late at batch {size}"
                );
            }
            if name == "tumbling close" {
                // The last record's window never closes.
                let mut model = tumbling_model(&input, 10_000, 3_000);
                model.retain(|k, _| !k.starts_with("end"));
                assert_eq!(results[0].1, model, "seed {seed}");
            }
        }
        // Joins: stream-stream (inner and left) and table-table.
        let mut g = Lcg(seed * 31);
        let both: Vec<(bool, Record)> = wandering(seed + 100, 300, 3, 6_000)
            .into_iter()
            .map(|mut r| {
                let side = g.next(2) == 0;
                if side && g.next(10) == 0 {
                    r.value = None;
                }
                (side, r)
            })
            .chain([(false, rec("end", "x", 10_000_000))])
            .collect();
        for join in ["inner", "left"] {
            let mut all = Vec::new();
            for size in [1, 7, 500] {
                let mut out = joined(join, &both, size);
                out.sort();
                all.push(out);
            }
            assert_eq!(all[0], all[1], "stream join {join}, seed {seed}, batch 7");
            assert_eq!(all[0], all[2], "stream join {join}, seed {seed}, batch 500");
        }
        let table = step(
            "name = \"j\"\nkind = \"join\"\nmodule = \"concat.wasm\"\nwith = \"right\"\nas_table = true\njoin = \"outer\"",
        );
        let mut all = Vec::new();
        for size in [1, 7, 500] {
            let mut h = Harness::new(table.clone(), concat());
            all.push(finals(&h.feed(&both, size)));
        }
        assert_eq!(all[0], all[1], "table join, seed {seed}");
        assert_eq!(all[0], all[2], "table join, seed {seed}");
    }
}

pub(super) const COUNT: &str = "name = \"count\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"";

#[test]
fn held_updates_are_emitted_once_per_key_per_commit_with_the_latest_value() {
    let mut h = Harness::new(step(COUNT), counter());
    h.op.defer_updates(true);
    // Two batches into one commit: nothing is emitted before it.
    let first = [rec("a", "x", 1), rec("b", "x", 2), rec("a", "x", 3)];
    assert!(h.run_batch(&stream(&first)).unwrap().is_empty());
    let second = [rec("c", "x", 4), rec("a", "x", 2), rec("a", "bad", 5)];
    assert!(h.run_batch(&stream(&second)).unwrap().is_empty());
    // One output per key, in the order of last update (as Kafka Streams'
    // record cache flushes), with the latest count and the largest
    // timestamp.
    let out = h.commit_held().unwrap();
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        ["b=1@2", "c=1@4", "a=3@3"]
    );
    let dead: Vec<&str> = h.dead.iter().map(|d| d.1.as_str()).collect();
    assert_eq!(dead, ["bad record"]);
    // The next commit emits only what changed since.
    assert!(
        h.run_batch(&stream(&[rec("b", "x", 6)]))
            .unwrap()
            .is_empty()
    );
    let out = h.commit_held().unwrap();
    assert_eq!(out.iter().map(show).collect::<Vec<_>>(), ["b=2@6"]);
    // Batches dropped before their commit (a failure) leave nothing behind.
    assert!(
        h.run_batch(&stream(&[rec("a", "x", 7)]))
            .unwrap()
            .is_empty()
    );
    h.discard();
    assert!(h.commit_held().unwrap().is_empty());
    assert!(
        h.run_batch(&stream(&[rec("a", "x", 8)]))
            .unwrap()
            .is_empty()
    );
    let out = h.commit_held().unwrap();
    assert_eq!(out.iter().map(show).collect::<Vec<_>>(), ["a=4@8"]);
}

/// Kafka Streams' record cache flushes its dirty entries in the order of
/// their last update (a key updated again moves to the end), so what a
/// commit emits is Kafka Streams' uncached output with the superseded
/// updates left out; the same holds for one batch's updates with
/// `cache_max_bytes = 0`, and for sessions. A record's hopping windows come
/// out by start.
#[test]
fn updates_come_out_in_the_order_of_their_last_change() {
    let input = stream(&[
        rec("a", "x", 1_000),
        rec("b", "x", 2_000),
        rec("c", "x", 3_000),
        rec("a", "x", 4_000),
        rec("b", "x", 5_000),
    ]);
    let hopping = step(&format!(
        "{COUNT}\nwindow = {{ type = \"hopping\", size = \"10s\", advance = \"5s\" }}"
    ));
    let session = step(&format!(
        "{COUNT}\nwindow = {{ type = \"session\", gap = \"3s\" }}"
    ));
    let expect_hopping = [
        "c[0,10000]=1@3000",
        "a[0,10000]=2@4000",
        "b[0,10000]=2@5000",
        "b[5000,15000]=1@5000",
    ];
    let expect_global = ["c=1@3000", "a=2@4000", "b=2@5000"];
    let expect_session = [
        "c[3000,3000]=1@3000",
        "a[1000,4000]=2@4000",
        "b[2000,5000]=2@5000",
    ];
    for (cfg, expected) in [
        (step(COUNT), &expect_global[..]),
        (hopping, &expect_hopping[..]),
        (session, &expect_session[..]),
    ] {
        // Held to the commit.
        let mut h = Harness::new(cfg.clone(), counter());
        h.op.defer_updates(true);
        h.run_batch(&input[..2]).unwrap();
        h.run_batch(&input[2..]).unwrap();
        let out = h.commit_held().unwrap();
        assert_eq!(out.iter().map(show).collect::<Vec<_>>(), expected);
        // One batch, emitted at its end (sessions: record by record).
        if cfg.window != session_window() {
            let mut h = Harness::new(cfg, counter());
            let out = h.feed(&input, 500);
            assert_eq!(out.iter().map(show).collect::<Vec<_>>(), expected);
        }
    }
}

pub(super) fn session_window() -> Option<crate::pipeline::config::Window> {
    step(&format!(
        "{COUNT}\nwindow = {{ type = \"session\", gap = \"3s\" }}"
    ))
    .window
}

#[test]
fn held_sessions_are_emitted_once_per_commit_and_tombstoned_only_if_committed() {
    // A grace long enough that a@1000 is still open when a@4000 bridges it
    // to a@6000 (with none it would have closed at 4000, and Kafka Streams
    // merges no closed session).
    let cfg = step(&format!(
        "{COUNT}\nwindow = {{ type = \"session\", gap = \"3s\", grace = \"3s\" }}"
    ));
    let mut h = Harness::new(cfg, counter());
    h.op.defer_updates(true);
    // Two sessions of "a" that merge, and one of "b", in one commit: no
    // tombstone for the sessions that came and went before it.
    let first = [
        rec("a", "x", 1000),
        rec("b", "x", 1500),
        rec("a", "x", 6000),
    ];
    assert!(h.run_batch(&stream(&first)).unwrap().is_empty());
    assert!(
        h.run_batch(&stream(&[rec("a", "x", 4000)]))
            .unwrap()
            .is_empty()
    );
    let out = h.commit_held().unwrap();
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        ["b[1500,1500]=1@1500", "a[1000,6000]=3@6000"]
    );
    // Growing a committed session tombstones it and emits the new one.
    assert!(
        h.run_batch(&stream(&[rec("a", "x", 7000)]))
            .unwrap()
            .is_empty()
    );
    let out = h.commit_held().unwrap();
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        ["a[1000,6000]=null@6000", "a[1000,7000]=4@7000"]
    );
}

#[test]
fn held_updates_give_the_same_final_values_as_per_batch_emission() {
    let hopping =
        "window = { type = \"hopping\", size = \"10s\", advance = \"5s\", grace = \"3s\" }";
    let session = "window = { type = \"session\", gap = \"2s\", grace = \"3s\" }";
    // The sessions still there at the end, with their values (a session
    // merged away ends as a tombstone, "null"; held back, one that came and
    // went between two commits is never emitted at all, and one closed when
    // merged away is not tombstoned, as Kafka Streams' cache does not: left
    // out, as inside a larger session of its key).
    let bounds = |k: &str| -> Option<(String, i64, i64)> {
        let (key, w) = k.split_once('[')?;
        let (s, e) = w.trim_end_matches(']').split_once(',')?;
        Some((key.to_string(), s.parse().ok()?, e.parse().ok()?))
    };
    let live = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        let alive: Vec<&String> = m
            .iter()
            .filter(|(_, v)| *v != "null")
            .map(|(k, _)| k)
            .collect();
        let inside = |k: &String| {
            let Some((key, s, e)) = bounds(k) else {
                return false;
            };
            alive.iter().any(|o| {
                *o != k && bounds(o).is_some_and(|(k2, s2, e2)| k2 == key && s2 <= s && e <= e2)
            })
        };
        alive
            .iter()
            .filter(|k| !inside(k))
            .map(|k| ((*k).clone(), m[*k].clone()))
            .collect()
    };
    // With the state cache, a record next to a closed session merges into
    // it (as Kafka Streams' cache finds it), without it not: held sessions
    // are compared with held ones committed after every batch.
    let held = |cfg: &crate::pipeline::config::Step,
                input: &[Record],
                per_commit: usize|
     -> (Vec<Record>, BTreeMap<(usize, String), u32>, u64) {
        let mut h = Harness::new(cfg.clone(), counter());
        h.op.defer_updates(true);
        let mut out = Vec::new();
        let mut per_key_commit = BTreeMap::new();
        for (i, chunk) in input.chunks(7).enumerate() {
            assert!(h.run_batch(&stream(chunk)).unwrap().is_empty());
            if (i + 1) % per_commit == 0 {
                let held = h.commit_held().unwrap();
                for r in &held {
                    let s = show(r);
                    let k = s.split_once('=').unwrap().0.to_string();
                    *per_key_commit.entry((i, k)).or_insert(0) += 1;
                }
                out.extend(held);
            }
        }
        out.extend(h.commit_held().unwrap());
        (out, per_key_commit, h.late)
    };
    for seed in 1..=3u64 {
        let input = wandering(seed, 400, 6, 9_000);
        for window in ["", hopping, session] {
            let cfg = step(&format!("{COUNT}\n{window}"));
            // Emission per batch, committed after each (sessions: held,
            // committed after each batch).
            let (expected, late) = if window == session {
                let (out, _, late) = held(&cfg, &input, 1);
                (finals(&out), late)
            } else {
                let mut plain = Harness::new(cfg.clone(), counter());
                (finals(&plain.feed(&stream(&input), 7)), plain.late)
            };
            // Held back over commits of 1, 3 and 50 batches.
            for per_commit in [1, 3, 50] {
                let (out, per_key_commit, held_late) = held(&cfg, &input, per_commit);
                assert!(
                    per_key_commit.values().all(|n| *n == 1),
                    "seed {seed}, {window:?}, {per_commit} batches a commit: a key twice in one commit"
                );
                let got = finals(&out);
                assert_eq!(
                    live(&got),
                    live(&expected),
                    "seed {seed}, {window:?}, {per_commit} batches a commit"
                );
                for (k, v) in &got {
                    assert!(
                        v != "null" || expected.get(k).is_some_and(|e| e == "null"),
                        "seed {seed}, {window:?}, {per_commit} batches a commit: {k} tombstoned"
                    );
                }
                if window != session {
                    assert_eq!(got, expected, "seed {seed}, {window:?}");
                }
                assert_eq!(held_late, late);
            }
        }
    }
}

/// A buffer written before `emit_after` counted what it holds (a time key
/// of 16 bytes, held times of 8) is counted at the next result put in, so
/// that a bound set since holds for what it already held: here a third
/// result lets the first out.
#[test]
fn emit_after_counts_a_buffer_written_before_it_counted_and_bounds_it() {
    let cfg = step(
        r#"name = "count"
kind = "aggregate"
module = "count.wasm"
emit_after = "1h"
emit_after_max_records = 2"#,
    );
    let mut h = Harness::new(cfg, counter());
    let out = h
        .batch(&stream(&[rec("a", "x", 1), rec("b", "x", 2)]))
        .unwrap();
    assert!(out.is_empty());
    let prefix = crate::pipeline::keys::step("p", b'u', "count", 0);
    let mut old = 0;
    for (k, v) in h.backend.state() {
        match k.strip_prefix(prefix.as_slice()).and_then(|r| r.first()) {
            Some(b'T') => h.put_state(k, v[..16].to_vec()),
            Some(b'i') => h.put_state(k, v[..8].to_vec()),
            _ => continue,
        }
        old += 1;
    }
    assert_eq!(old, 3);
    assert!(h.batch(&[]).unwrap().is_empty());
    let out = h.batch(&stream(&[rec("c", "x", 3)])).unwrap();
    assert_eq!(out.iter().map(show).collect::<Vec<_>>(), ["a=1@1"]);
    let out = h.batch(&stream(&[rec("d", "x", 3_600_003)])).unwrap();
    assert_eq!(out.iter().map(show).collect::<Vec<_>>(), ["b=1@2", "c=1@3"]);
}
