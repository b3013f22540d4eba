//! Operator unit tests: the in-memory backend, native stand-ins for guests.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::testing::*;
use crate::record::Record;

fn stream(recs: &[Record]) -> Vec<(bool, Record)> {
    recs.iter().map(|r| (false, r.clone())).collect()
}

const SESSION: &str = r#"name = "count"
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

#[test]
fn tumbling_windows_count_within_grace_and_drop_beyond() {
    let cfg = step(
        r#"name = "count"
kind = "aggregate"
module = "count.wasm"
window = { type = "tumbling", size = "10s", grace = "2s" }
emit = "close""#,
    );
    let recs = [
        rec("a", "x", 1_000),
        rec("a", "x", 9_000),
        rec("a", "x", 10_500),
        rec("a", "x", 5_000),  // late, within grace (stream time 10.5 s < 12 s)
        rec("b", "x", 12_000), // closes [0, 10 s)
        rec("a", "x", 7_000),  // beyond grace: dropped
        rec("z", "x", 40_000), // closes the rest
    ];
    // As Kafka Streams' `suppress(untilWindowCloses(..))`: a window comes
    // out when the stream time reaches its end + grace, windows closing
    // together by end, then key, each stamped with the largest timestamp of
    // its records (the last update's, which the suppression buffer keeps).
    for size in [1, 7, 500] {
        let mut h = Harness::new(cfg.clone(), counter());
        let out = h.feed(&stream(&recs), size);
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            [
                "a[0,10000]=3@9000",
                "a[10000,20000]=1@10500",
                "b[10000,20000]=1@12000"
            ],
            "batch {size}"
        );
        assert_eq!(h.late, 1);
    }
    // Emitted with the record that closes it, not before.
    let mut h = Harness::new(cfg, counter());
    let out: Vec<Vec<String>> = [
        rec("a", "x", 1_000),
        rec("b", "x", 11_999),
        rec("b", "x", 12_000),
    ]
    .iter()
    .map(|r| {
        h.feed(&stream(std::slice::from_ref(r)), 1)
            .iter()
            .map(show)
            .collect()
    })
    .collect();
    assert_eq!(out, [vec![], vec![], vec!["a[0,10000]=1@1000".to_string()]]);
}

/// Kafka Streams' `TimeWindows.windowsFor`: a record is in every window
/// `[start, start + size)` holding it with `start` a multiple of `advance`
/// and not before 0 (no window `[-3000, 7000)` here), and a record at a
/// window's start is in it; the advance need not divide the size.
#[test]
fn hopping_windows_start_at_0_or_later_and_hold_a_record_at_their_start() {
    let cfg = step(
        r#"name = "count"
kind = "aggregate"
module = "count.wasm"
window = { type = "hopping", size = "10s", advance = "3s" }"#,
    );
    let input = stream(&[rec("a", "x", 4_000), rec("a", "x", 12_000)]);
    let mut h = Harness::new(cfg.clone(), counter());
    let out: Vec<String> = h.feed(&input, 1).iter().map(show).collect();
    assert_eq!(
        out,
        [
            "a[0,10000]=1@4000",
            "a[3000,13000]=1@4000",
            "a[3000,13000]=2@12000",
            "a[6000,16000]=1@12000",
            "a[9000,19000]=1@12000",
            "a[12000,22000]=1@12000",
        ]
    );
    for size in [7, 500] {
        let mut h = Harness::new(cfg.clone(), counter());
        let out: Vec<String> = h.feed(&input, size).iter().map(show).collect();
        assert_eq!(
            out,
            [
                "a[0,10000]=1@4000",
                "a[3000,13000]=2@12000",
                "a[6000,16000]=1@12000",
                "a[9000,19000]=1@12000",
                "a[12000,22000]=1@12000",
            ],
            "batch {size}"
        );
        assert_eq!(h.late, 0);
    }
}

/// Kafka Streams' `KStreamWindowAggregate` and `KStreamAggregate` stamp an
/// update with the largest timestamp of the window's (or key's) records so
/// far, kept in the store with the aggregate: a record older than one
/// before it does not move the result's timestamp back, whichever batch or
/// commit brought the newer one.
#[test]
fn an_update_carries_the_largest_timestamp_of_its_window_so_far() {
    let input = stream(&[
        rec("a", "x", 5_000),
        rec("a", "x", 3_000),
        rec("b", "x", 4_000),
        rec("a", "x", 6_000),
        rec("a", "x", 1_000),
    ]);
    let tumbling = step(&format!(
        "{COUNT}\nwindow = {{ type = \"tumbling\", size = \"10s\", grace = \"10s\" }}"
    ));
    let mut h = Harness::new(tumbling.clone(), counter());
    assert_eq!(
        h.feed(&input, 1).iter().map(show).collect::<Vec<_>>(),
        [
            "a[0,10000]=1@5000",
            "a[0,10000]=2@5000",
            "b[0,10000]=1@4000",
            "a[0,10000]=3@6000",
            "a[0,10000]=4@6000",
        ]
    );
    let mut h = Harness::new(step(COUNT), counter());
    assert_eq!(
        h.feed(&input, 1).iter().map(show).collect::<Vec<_>>(),
        ["a=1@5000", "a=2@5000", "b=1@4000", "a=3@6000", "a=4@6000"]
    );
    for size in [2, 7, 500] {
        let mut h = Harness::new(tumbling.clone(), counter());
        let out: Vec<String> = h.feed(&input, size).iter().map(show).collect();
        assert_eq!(
            out.iter().rfind(|s| s.starts_with('a')).map(String::as_str),
            Some("a[0,10000]=4@6000"),
            "batch {size}"
        );
    }
    // Held back to the commit (a state cache), over two commits.
    let mut h = Harness::new(tumbling, counter());
    h.op.defer_updates(true);
    h.run_batch(&input[..1]).unwrap();
    let out = h.commit_held().unwrap();
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        ["a[0,10000]=1@5000"]
    );
    h.run_batch(&input[1..3]).unwrap();
    let out = h.commit_held().unwrap();
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        ["a[0,10000]=2@5000", "b[0,10000]=1@4000"]
    );
}

/// Kafka Streams' suppression buffer evicts windows closing at the same
/// time in the byte order of their serialized windowed keys (the key's
/// bytes, then the window's): key "aa" before "b", whatever their lengths.
#[test]
fn windows_closing_together_come_out_in_key_byte_order() {
    let input = stream(&[
        rec("b", "x", 1_000),
        rec("aa", "x", 2_000),
        rec("ab", "x", 3_000),
        rec("a", "x", 4_000),
        rec("z", "x", 100_000),
    ]);
    for (window, expected) in [
        (
            "{ type = \"tumbling\", size = \"10s\" }",
            [
                "a[0,10000]=1@4000",
                "aa[0,10000]=1@2000",
                "ab[0,10000]=1@3000",
                "b[0,10000]=1@1000",
            ],
        ),
        (
            "{ type = \"session\", gap = \"1s\" }",
            [
                "b[1000,1000]=1@1000",
                "aa[2000,2000]=1@2000",
                "ab[3000,3000]=1@3000",
                "a[4000,4000]=1@4000",
            ],
        ),
    ] {
        let cfg = step(&format!("{COUNT}\nwindow = {window}\nemit = \"close\""));
        for size in [1, 7, 500] {
            let mut h = Harness::new(cfg.clone(), counter());
            let out = h.feed(&input, size);
            assert_eq!(
                out.iter().map(show).collect::<Vec<_>>(),
                expected,
                "{window}, batch {size}"
            );
        }
    }
}

/// Kafka Streams keeps a stream time per windowed aggregate: the largest
/// timestamp of the records that reached it. A later timestamp that another
/// step of the task saw (a join's other side, a record a processor
/// dropped; here the task's stream time set ahead) closes none of its
/// windows and makes none of its records late.
#[test]
fn a_windowed_aggregate_keeps_its_own_stream_time() {
    let input = stream(&[
        rec("a", "x", 1_000),
        rec("a", "x", 2_000),
        rec("b", "x", 20_000),
    ]);
    for (window, expected) in [
        (
            "{ type = \"tumbling\", size = \"10s\" }",
            "a[0,10000]=2@2000",
        ),
        (
            "{ type = \"hopping\", size = \"10s\", advance = \"10s\" }",
            "a[0,10000]=2@2000",
        ),
        (
            "{ type = \"session\", gap = \"1s\" }",
            "a[1000,2000]=2@2000",
        ),
    ] {
        let cfg = step(&format!("{COUNT}\nwindow = {window}\nemit = \"close\""));
        for size in [1, 7, 500] {
            let mut h = Harness::new(cfg.clone(), counter());
            h.stream_time = 100_000;
            let out = h.feed(&input, size);
            assert_eq!(
                out.iter().map(show).collect::<Vec<_>>(),
                [expected],
                "{window}, batch {size}"
            );
            assert_eq!(h.late, 0, "{window}, batch {size}");
        }
    }
}

#[test]
fn an_aggregate_dead_letters_a_rejected_or_trapping_record_and_counts_the_rest() {
    let cfg = step(
        r#"name = "count"
kind = "aggregate"
module = "count.wasm""#,
    );
    let mut h = Harness::new(cfg, counter());
    let out = h.feed(
        &stream(&[
            rec("a", "x", 1),
            rec("a", "bad", 2),
            rec("a", "trap", 3),
            rec("a", "x", 4),
        ]),
        10,
    );
    assert_eq!(out.iter().map(show).collect::<Vec<_>>(), ["a=2@4"]);
    let reasons: Vec<&str> = h.dead.iter().map(|d| d.1.as_str()).collect();
    assert_eq!(reasons, ["bad record", "trapped: unreachable"]);
}

/// As Kafka Streams' aggregations: a global aggregate skips a record with
/// no value (`groupByKey().count()` ignores it); a windowed one counts it
/// (`windowedBy(..).count()` passes it to the aggregator).
#[test]
fn a_global_aggregate_skips_a_record_with_no_value_and_a_windowed_one_counts_it() {
    let mut tombstone = rec("a", "", 2);
    tombstone.value = None;
    let input = [rec("a", "x", 1), tombstone, rec("a", "x", 3)];
    let global = step(
        r#"name = "count"
kind = "aggregate"
module = "count.wasm""#,
    );
    let windowed = step(
        r#"name = "count"
kind = "aggregate"
module = "count.wasm"
window = { type = "tumbling", size = "10s" }"#,
    );
    for size in [1, 10] {
        let mut h = Harness::new(global.clone(), counter());
        let out: Vec<String> = h.feed(&stream(&input), size).iter().map(show).collect();
        assert_eq!(
            out.last().map(String::as_str),
            Some("a=2@3"),
            "batch {size}"
        );
        assert!(h.dead.is_empty());
        let mut h = Harness::new(windowed.clone(), counter());
        let out: Vec<String> = h.feed(&stream(&input), size).iter().map(show).collect();
        assert_eq!(
            out.last().map(String::as_str),
            Some("a[0,10000]=3@3"),
            "batch {size}"
        );
    }
}

/// Issue 12, case a: session windows with emit = "close" emit each final
/// session once, and a late record that falls into a session still within
/// grace merges with it.
#[test]
fn a_session_windows_emit_on_close_and_merge_a_late_record_within_grace() {
    let cfg = step(&format!("{SESSION}\nemit = \"close\""));
    for size in [1, 2, 500] {
        let mut h = Harness::new(cfg.clone(), counter());
        let recs = [
            rec("a", "x", 10_000),
            rec("a", "x", 24_000),
            rec("a", "x", 8_000),
            rec("z", "x", 3_610_000),
        ];
        let out = h.feed(&stream(&recs), size);
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            ["a[8000,10000]=2@10000", "a[24000,24000]=1@24000"],
            "batch size {size}"
        );
        assert_eq!(h.late, 0);
    }
}

/// Issue 12, case b: with emit = "update", the last value per surviving
/// session.
#[test]
fn b_session_update_merges_a_late_record_into_the_session_it_reaches() {
    let cfg = step(SESSION);
    let mut h = Harness::new(cfg, counter());
    let recs = [
        rec("a", "x", 10_000),
        rec("a", "x", 24_000),
        rec("a", "x", 8_000),
    ];
    let out = h.feed(&stream(&recs), 1);
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        [
            "a[10000,10000]=1@10000",
            "a[24000,24000]=1@24000",
            "a[10000,10000]=null@10000",
            "a[8000,10000]=2@10000"
        ]
    );
}

/// Kafka Streams' `KStreamSessionWindowAggregate` (caching off): a record
/// that merges sessions, or falls into one, removes every session it
/// touches and emits a tombstone for each (stamped with that session's
/// end), then the merged session (stamped with its end), even when the
/// merged session has the bounds of an old one. A lone record's session is
/// `[t, t]`; a record exactly `gap` after a session's end joins it.
#[test]
fn session_updates_and_tombstones_carry_the_session_end_as_kafka_streams() {
    let recs = [
        rec("a", "x", 10_000),
        rec("a", "x", 20_000),
        rec("a", "x", 15_000), // bridges both (10 s + gap = 15 s)
        rec("a", "x", 12_000), // inside [10 s, 20 s]
        rec("a", "x", 24_000), // grows it
    ];
    let expected = [
        "a[10000,10000]=1@10000",
        "a[20000,20000]=1@20000",
        "a[10000,10000]=null@10000",
        "a[20000,20000]=null@20000",
        "a[10000,20000]=3@20000",
        "a[10000,20000]=null@20000",
        "a[10000,20000]=4@20000",
        "a[10000,20000]=null@20000",
        "a[10000,24000]=5@24000",
    ];
    for size in [1, 7, 500] {
        let mut h = Harness::new(step(SESSION), counter());
        let out = h.feed(&stream(&recs), size);
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            expected,
            "batch {size}"
        );
    }
}

/// As Kafka Streams' suppression of session windows (gap + grace): session
/// `[10 s, 10 s]` with gap 5 s and grace 10 s comes out once the stream
/// time reaches 25 s, not at 24.999 s.
#[test]
fn a_session_closes_when_the_stream_time_reaches_its_end_plus_gap_and_grace() {
    let cfg = step(&format!("{SESSION}\nemit = \"close\""));
    let mut h = Harness::new(cfg, counter());
    let out: Vec<Vec<String>> = [
        rec("a", "x", 10_000),
        rec("z", "x", 24_999),
        rec("y", "x", 25_000),
    ]
    .iter()
    .map(|r| {
        h.feed(&stream(std::slice::from_ref(r)), 1)
            .iter()
            .map(show)
            .collect()
    })
    .collect();
    assert_eq!(
        out,
        [vec![], vec![], vec!["a[10000,10000]=1@10000".to_string()]]
    );
}

/// Kafka Streams drops a session record as late only when its merged
/// session ends before stream time - gap - grace (here 40 - 5 - 10 = 25 s):
/// a session ending exactly then still counts.
#[test]
fn a_session_ending_exactly_at_stream_time_minus_gap_and_grace_still_counts() {
    let recs = [
        rec("z", "x", 40_000),
        rec("b", "x", 25_000),
        rec("c", "x", 24_999),
    ];
    for size in [1, 7, 500] {
        let mut h = Harness::new(step(SESSION), counter());
        let out = h.feed(&stream(&recs), size);
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            ["z[40000,40000]=1@40000", "b[25000,25000]=1@25000"],
            "batch {size}"
        );
        assert_eq!(h.late, 1);
    }
}

#[test]
fn a_session_drops_a_record_whose_merged_session_is_beyond_grace() {
    let cfg = step(SESSION);
    let mut h = Harness::new(cfg, counter());
    let recs = [
        rec("a", "x", 10_000),
        rec("a", "x", 40_000),
        rec("a", "x", 12_000),
    ];
    let out = h.feed(&stream(&recs), 1);
    assert_eq!(out.len(), 2);
    assert_eq!(h.late, 1);
}

const STREAM_JOIN: &str = r#"name = "j"
kind = "join"
module = "concat.wasm"
with = "right"
with_kind = "stream"
window = { before = "2s", after = "2s", grace = "5s" }"#;

fn left(key: &str, v: &str, ts: i64) -> (bool, Record) {
    (false, rec(key, v, ts))
}
fn right(key: &str, v: &str, ts: i64) -> (bool, Record) {
    (true, rec(key, v, ts))
}

fn joined(join: &str, input: &[(bool, Record)], size: usize) -> Vec<String> {
    let cfg = step(&format!("{STREAM_JOIN}\njoin = \"{join}\""));
    let mut h = Harness::new(cfg, concat());
    h.feed(input, size).iter().map(show).collect()
}

/// Issue 12, case g: a right record past its window but inside grace joins.
#[test]
fn g_a_late_right_record_within_retention_joins() {
    let input = [
        left("g", "L0", 0),
        right("g", "R8", 8_000),
        right("g", "R2", 2_000),
    ];
    for size in [1, 7, 500] {
        assert_eq!(
            joined("inner", &input, size),
            ["g=L0+R2@2000"],
            "batch {size}"
        );
    }
}

/// Issue 12, case q: a left record its side no longer retains joins nothing.
#[test]
fn q_a_record_beyond_the_other_sides_retention_joins_nothing() {
    let input = [
        left("q", "L0", 0),
        left("q", "L10", 10_000),
        right("q", "R11", 11_000),
        right("q", "R1", 1_000),
    ];
    for size in [1, 7, 500] {
        assert_eq!(
            joined("inner", &input, size),
            ["q=L10+R11@11000"],
            "batch {size}"
        );
    }
}

/// Issue 12, case p: retention is measured against the retaining side's
/// own stream time.
#[test]
fn p_retention_follows_each_sides_own_stream_time() {
    let input = [
        left("p", "L0", 0),
        right("p", "R30", 30_000),
        right("p", "R1", 1_000),
    ];
    for size in [1, 7, 500] {
        assert_eq!(
            joined("inner", &input, size),
            ["p=L0+R1@1000"],
            "batch {size}"
        );
    }
}

#[test]
fn a_left_join_emits_an_unmatched_record_when_its_window_closes() {
    let input = [
        left("k", "L0", 0),
        right("k", "R1", 1_000),   // meets L0
        left("k", "L5", 5_000),    // meets nothing yet
        right("k", "R6", 6_000),   // meets L5
        left("k", "L10", 10_000),  // meets nothing, ever
        right("x", "X20", 20_000), // the join's stream time passes 10 + 2 + 5
    ];
    for size in [1, 7, 500] {
        assert_eq!(
            joined("left", &input, size),
            ["k=L0+R1@1000", "k=L5+R6@6000", "k=L10+-@10000"],
            "batch {size}"
        );
    }
}

fn keyless(is_right: bool, v: &str, ts: i64) -> (bool, Record) {
    let mut r = rec("", v, ts);
    r.key = None;
    (is_right, r)
}

/// Outer stream-stream joins hold the unmatched records of both sides until
/// their window closes (left: t + after + grace; right: t + before +
/// grace), then emit them by timestamp, right before left at the same one.
#[test]
fn an_outer_join_emits_the_unmatched_records_of_both_sides_when_their_windows_close() {
    let input = [
        left("k", "L0", 0),
        right("k", "R1", 1_000),   // meets L0
        right("k", "R3", 3_000),   // meets nothing yet: held
        left("k", "L4", 4_000),    // meets R3, which is no longer held
        left("p", "P5", 5_000),    // held until 12000
        left("n", "N6", 6_000),    // held until 13000
        right("m", "M6", 6_000),   // held until 13000; before N6 when both close
        right("x", "X20", 20_000), // closes P5, M6, N6; held itself
        // Late: the right side (at 20000, retention 9000) keeps nothing
        // before 11001, so neither meets the other; both windows ended
        // before they came, so each comes out alone at once.
        right("z", "Z1", 1_000),
        left("z", "Z2", 2_000),
    ];
    for size in [1, 3, 500] {
        assert_eq!(
            joined("outer", &input, size),
            [
                "k=L0+R1@1000",
                "k=L4+R3@4000",
                "p=P5+-@5000",
                "m=-+M6@6000",
                "n=N6+-@6000",
                "z=-+Z1@1000",
                "z=Z2+-@2000",
            ],
            "batch {size}"
        );
    }
    // A left join holds and emits only left records.
    for size in [1, 500] {
        assert_eq!(
            joined("left", &input, size),
            [
                "k=L0+R1@1000",
                "k=L4+R3@4000",
                "p=P5+-@5000",
                "n=N6+-@6000",
                "z=Z2+-@2000",
            ],
            "batch {size}"
        );
    }
}

/// A record with no key joins nothing: a left join emits a left one alone
/// at once, an outer join one of either side; otherwise, and for a record
/// with no value, it is skipped. Either way it moves the stream time.
#[test]
fn a_keyless_record_comes_out_alone_in_a_left_or_outer_join_and_moves_the_stream_time() {
    let mut no_value = rec("k", "", 1_500);
    no_value.value = None;
    let input = [
        left("k", "L0", 0),
        keyless(false, "NL", 500),
        keyless(true, "NR", 600),
        (true, no_value),
        keyless(true, "T", 30_000), // moves the stream time past L0's window
        right("y", "Y", 1_000),     // keyed, behind the stream time: emits nothing held
        right("y", "Y", 30_000),    // keyed, at the stream time: L0 comes out
    ];
    let cases: [(&str, &[&str]); 3] = [
        ("inner", &[]),
        ("left", &["null=NL+-@500", "k=L0+-@0"]),
        (
            "outer",
            &[
                "null=NL+-@500",
                "null=-+NR@600",
                "null=-+T@30000",
                "y=-+Y@1000",
                "k=L0+-@0",
            ],
        ),
    ];
    for (join, want) in cases {
        for size in [1, 500] {
            assert_eq!(joined(join, &input, size), want, "{join}, batch {size}");
        }
    }
}

#[test]
fn table_table_joins_follow_both_sides_and_delete_results() {
    let cfg = step(
        r#"name = "j"
kind = "join"
module = "concat.wasm"
with = "right"
as_table = true
join = "inner""#,
    );
    let mut h = Harness::new(cfg, concat());
    let mut gone = rec("a", "", 4);
    gone.value = None;
    let out = h.feed(
        &[
            left("a", "l1", 1),
            right("a", "r1", 2),
            left("a", "l2", 3),
            (true, gone),
        ],
        1,
    );
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        ["a=l1+r1@2", "a=l2+r1@3", "a=null@4"]
    );
}

/// Table-table joins as Kafka Streams': a result carries the larger of the
/// two sides' timestamps; a deletion emits a tombstone in an inner join when
/// the other side is present, on the left of a left join when the right is
/// present or the left had a value, in an outer join when the deleted side
/// had a value.
#[test]
fn table_table_results_take_the_later_timestamp_and_deletions_follow_kafka_streams() {
    let del = |is_right: bool, key: &str, ts: i64| {
        let mut r = rec(key, "", ts);
        r.value = None;
        (is_right, r)
    };
    let input = [
        right("a", "r1", 10),
        left("a", "l1", 5), // out of order: the result is at 10
        right("b", "rb", 1),
        del(false, "b", 2), // b never had a left value
        left("d", "ld", 3),
        del(false, "d", 4),
        del(true, "e", 5), // e never had a right value
    ];
    let cases: [(&str, &[&str]); 3] = [
        ("inner", &["a=l1+r1@10", "b=null@2"]),
        ("left", &["a=l1+r1@10", "b=null@2", "d=ld+-@3", "d=null@4"]),
        (
            "outer",
            &[
                "a=-+r1@10",
                "a=l1+r1@10",
                "b=-+rb@1",
                "b=-+rb@2",
                "d=ld+-@3",
                "d=null@4",
            ],
        ),
    ];
    for (join, want) in cases {
        for size in [1, 500] {
            let cfg = step(&format!(
                "name = \"j\"\nkind = \"join\"\nmodule = \"concat.wasm\"\nwith = \"right\"\nas_table = true\njoin = \"{join}\""
            ));
            let mut h = Harness::new(cfg, concat());
            let got: Vec<String> = h.feed(&input, size).iter().map(show).collect();
            assert_eq!(got, want, "{join}, batch {size}");
        }
    }
}

#[test]
fn a_rejected_join_pair_is_a_dead_letter() {
    let cfg = step(
        r#"name = "j"
kind = "join"
module = "concat.wasm"
with = "right"
join = "left""#,
    );
    let mut h = Harness::new(cfg, concat());
    let out = h.feed(
        &[
            right("a", "r", 1),
            left("a", "reject", 2),
            left("a", "ok", 3),
        ],
        10,
    );
    assert_eq!(out.iter().map(show).collect::<Vec<_>>(), ["a=ok+r@3"]);
    assert_eq!(h.dead[0].1, "rejected pair");
}

const PROCESSOR: &str = r#"name = "proc"
kind = "processor"
module = "proc.wasm"
stores = ["n"]"#;

#[test]
fn a_processor_keeps_state_and_fires_event_time_timers_in_order() {
    let mut h = Harness::new(step(PROCESSOR), counting_processor());
    let out = h.feed(
        &stream(&[
            rec("a", "x", 0),
            rec("b", "x", 5),
            rec("c", "x", 8),
            rec("c", "x", 9), // moves c's timer to 19
            rec("d", "x", 30),
        ]),
        1,
    );
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        [
            "a=1@0",
            "b=1@5",
            "c=1@8",
            "c=2@9",
            "d=1@30",
            "a=timer:a@10",
            "b=timer:b@15",
            "c=timer:c@19"
        ]
    );
}

/// An event-time timer fires once the stream time reaches its time (equal
/// is enough, as a Kafka Streams punctuation at `t` fires when the stream
/// time reaches `t`). One set and due within the same batch fires after
/// that batch: with batches of 1 right after the record that makes it due,
/// as Kafka Streams punctuates after each record; with a larger batch after
/// the batch's later records (docs/design.md, known limits).
#[test]
fn an_event_time_timer_fires_when_the_stream_time_reaches_it_after_that_batch() {
    let input = stream(&[rec("a", "x", 0), rec("b", "x", 10), rec("c", "x", 11)]);
    let mut h = Harness::new(step(PROCESSOR), counting_processor());
    assert_eq!(
        h.feed(&input[..2], 1).iter().map(show).collect::<Vec<_>>(),
        ["a=1@0", "b=1@10", "a=timer:a@10"]
    );
    for (size, expected) in [
        (1, ["a=1@0", "b=1@10", "a=timer:a@10", "c=1@11"]),
        (7, ["a=1@0", "b=1@10", "c=1@11", "a=timer:a@10"]),
    ] {
        let mut h = Harness::new(step(PROCESSOR), counting_processor());
        let out = h.feed(&input, size);
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            expected,
            "batch {size}"
        );
    }
}

/// A timer set in an earlier batch fires right after the record that brings
/// the stream time to it, whatever the batch size (the batch is cut there,
/// as Kafka Streams punctuates after that record).
#[test]
fn a_timer_set_in_an_earlier_batch_fires_right_after_the_record_that_makes_it_due() {
    for size in [2, 7, 500] {
        let mut h = Harness::new(step(PROCESSOR), counting_processor());
        assert_eq!(
            h.feed(&stream(&[rec("a", "x", 0)]), 1)
                .iter()
                .map(show)
                .collect::<Vec<_>>(),
            ["a=1@0"]
        );
        let out = h.feed(
            &stream(&[
                rec("b", "x", 5),
                rec("c", "x", 10),
                rec("d", "x", 11),
                rec("e", "x", 30),
            ]),
            size,
        );
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            [
                "b=1@5",
                "c=1@10",
                "a=timer:a@10",
                "d=1@11",
                "e=1@30",
                "b=timer:b@15",
                "c=timer:c@20",
                "d=timer:d@21"
            ],
            "batch {size}"
        );
    }
}

#[test]
fn a_wall_clock_timer_fires_when_the_clock_passes_it_with_no_input() {
    let mut h = Harness::new(step(PROCESSOR), counting_processor());
    h.now_ms = 50;
    let out = h.feed(&stream(&[rec("w", "wall", 0)]), 1);
    assert_eq!(out.iter().map(show).collect::<Vec<_>>(), ["w=1@0"]);
    assert!(h.tick().unwrap().is_empty(), "not due at 50 ms");
    h.now_ms = 100;
    let fired: Vec<String> = h.tick().unwrap().iter().map(show).collect();
    assert_eq!(fired, ["w=timer:w@100"]);
    assert!(h.tick().unwrap().is_empty(), "a timer fires once");
}

#[test]
fn a_trapping_processor_record_leaves_no_state_change_behind() {
    let mut h = Harness::new(step(PROCESSOR), counting_processor());
    let out = h.feed(
        &stream(&[rec("a", "x", 0), rec("a", "trap", 1), rec("a", "x", 2)]),
        10,
    );
    assert_eq!(out.iter().map(show).collect::<Vec<_>>(), ["a=1@0", "a=2@2"]);
    assert_eq!(h.dead.len(), 1);
    assert_eq!(h.dead[0].1, "trapped: boom");
}

#[test]
fn an_undeclared_store_fails_only_that_record() {
    let cfg = step(
        r#"name = "proc"
kind = "processor"
module = "proc.wasm"
stores = ["other"]"#,
    );
    let mut h = Harness::new(cfg, counting_processor());
    let out = h.feed(&stream(&[rec("a", "x", 0)]), 1);
    assert!(out.is_empty());
    assert_eq!(h.dead[0].1, "StateError::NoSuchStore(\"n\")");
}

#[test]
fn a_storage_error_fails_the_batch_and_dead_letters_nothing() {
    let mut h = Harness::new(step(PROCESSOR), counting_processor());
    h.feed(&stream(&[rec("a", "x", 0)]), 1);
    h.backend.fail_next_get("disk on fire");
    let err = h.batch(&stream(&[rec("a", "x", 1)])).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "step proc: reading state: the in-memory backend: disk on fire"
    );
    assert!(h.dead.is_empty());
    // Nothing of the failed batch stayed: the retry counts from 1.
    let out = h.feed(&stream(&[rec("a", "x", 1)]), 1);
    assert_eq!(out.iter().map(show).collect::<Vec<_>>(), ["a=2@1"]);
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

const COUNT: &str = "name = \"count\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"";

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
        ["b=1@2", "c=1@4", "a=3@5"]
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

fn session_window() -> Option<crate::pipeline::config::Window> {
    step(&format!(
        "{COUNT}\nwindow = {{ type = \"session\", gap = \"3s\" }}"
    ))
    .window
}

#[test]
fn held_sessions_are_emitted_once_per_commit_and_tombstoned_only_if_committed() {
    let cfg = step(&format!(
        "{COUNT}\nwindow = {{ type = \"session\", gap = \"3s\" }}"
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
    // went between two commits is never emitted at all).
    let live = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|(_, v)| *v != "null")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    for seed in 1..=3u64 {
        let input = wandering(seed, 400, 6, 9_000);
        for window in ["", hopping, session] {
            let cfg = step(&format!("{COUNT}\n{window}"));
            // Emission per batch, committed after each.
            let mut plain = Harness::new(cfg.clone(), counter());
            let expected = finals(&plain.feed(&stream(&input), 7));
            // Held back over commits of 1, 3 and 50 batches.
            for per_commit in [1, 3, 50] {
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
                assert_eq!(h.late, plain.late);
            }
        }
    }
}
