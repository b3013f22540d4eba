//! Tumbling and hopping windows and global aggregates: which windows a
//! record counts in, late records, result timestamps, emit on close.

#![allow(clippy::unwrap_used)]

use super::testing::*;
use super::tests::{COUNT, stream};

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

/// A record the function rejects is left out of its window: it does not
/// stamp the window's result, and alone in a batch it neither updates nor
/// emits it (found by writing guests from the docs: the result was emitted
/// again, stamped with the rejected record's time).
#[test]
fn a_rejected_record_neither_stamps_nor_updates_its_window() {
    let window = "window = { type = \"tumbling\", size = \"5s\" }";
    let recs = [
        rec("a", "x", 1000),
        rec("a", "x", 2000),
        rec("a", "bad", 4000),
        rec("b", "bad", 4500),
        rec("c", "x", 9000),
    ];
    for size in [1, 2, 500] {
        let mut h = Harness::new(step(&format!("{COUNT}\n{window}")), counter());
        let out = h.feed(&stream(&recs), size);
        let want: &[&str] = match size {
            1 => &[
                "a[0,5000]=1@1000",
                "a[0,5000]=2@2000",
                "c[5000,10000]=1@9000",
            ],
            2 => &["a[0,5000]=2@2000", "c[5000,10000]=1@9000"],
            _ => &["a[0,5000]=2@2000", "c[5000,10000]=1@9000"],
        };
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            want,
            "batch {size}"
        );
        let dead: Vec<&str> = h.dead.iter().map(|d| d.1.as_str()).collect();
        assert_eq!(dead, ["bad record", "bad record"], "batch {size}");
        let mut h = Harness::new(
            step(&format!("{COUNT}\n{window}\nemit = \"close\"")),
            counter(),
        );
        let out = h.feed(&stream(&recs), size);
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            ["a[0,5000]=2@2000"],
            "batch {size}"
        );
    }
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

/// Found by the parity check (tests/parity/tumbling, hopping): Kafka
/// Streams forwards a tumbling, hopping or unwindowed aggregate's update
/// with the headers of the record that caused it, and its suppression
/// buffer emits a closing window with those of the window's last update;
/// a session aggregate forwards new records, without them.
#[test]
fn an_aggregate_result_carries_the_headers_of_its_last_record_but_a_sessions_does_not() {
    let with = |key: &str, ts: i64, h: &str| {
        let mut r = rec(key, "x", ts);
        r.headers = vec![("h".to_string(), h.as_bytes().to_vec())];
        r
    };
    let input = stream(&[
        with("a", 1_000, "one"),
        rec("a", "x", 2_000),
        with("a", 3_000, "three"),
    ]);
    let headers = |r: &crate::record::Record| -> Vec<String> {
        r.headers
            .iter()
            .filter(|(n, _)| n == "h")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    for (window, emit, expected) in [
        ("", "update", vec![vec!["one"], vec![], vec!["three"]]),
        (
            "window = { type = \"tumbling\", size = \"10s\" }",
            "update",
            vec![vec!["one"], vec![], vec!["three"]],
        ),
        (
            "window = { type = \"tumbling\", size = \"10s\" }",
            "close",
            vec![vec!["three"]],
        ),
        (
            "window = { type = \"session\", gap = \"5s\" }",
            "update",
            vec![vec![]; 5],
        ),
    ] {
        for size in [1, 500] {
            let cfg = step(&format!("{COUNT}\n{window}\nemit = \"{emit}\""));
            let mut h = Harness::new(cfg, counter());
            let mut input = input.clone();
            if emit == "close" {
                input.extend(stream(&[rec("z", "x", 20_000)]));
            }
            let out = h.feed(&input, size);
            let got: Vec<Vec<String>> = out
                .iter()
                .filter(|r| r.key.as_deref() == Some(b"a"))
                .map(headers)
                .collect();
            let expected = if size == 500 && emit == "update" && window.contains("tumbling")
                || size == 500 && window.is_empty()
            {
                vec![expected[2].clone()]
            } else {
                expected.clone()
            };
            let expected: Vec<Vec<String>> = expected
                .iter()
                .map(|v| v.iter().map(|s| s.to_string()).collect())
                .collect();
            assert_eq!(got, expected, "{window} {emit}, batch {size}");
        }
    }
}

/// The windows of `key` stored for the step, by start (committed state).
fn stored_windows(h: &Harness, key: &str) -> Vec<i64> {
    use crate::backend::StateRead;
    use crate::pipeline::keys;

    let mut prefix = keys::step("p", b'a', "count", 0);
    keys::push_key(&mut prefix, key.as_bytes());
    h.backend
        .range(&prefix, &keys::prefix_end(&prefix), usize::MAX)
        .unwrap()
        .iter()
        .map(|(k, _)| keys::take_i64(&k[prefix.len()..]).unwrap().0)
        .collect()
}

/// As a Kafka Streams window store (whose retention is its size plus grace
/// unless set longer): a window emitted on update leaves the state once the
/// start of the last window the stream time is in reaches its start +
/// retention; its updates are emitted as before, with the state cache on or
/// off, at every batch size.
#[test]
fn a_window_emitted_on_update_leaves_the_state_at_its_start_plus_retention() {
    let tumbling = "window = { type = \"tumbling\", size = \"10s\", grace = \"2s\" }";
    let recs = [
        rec("a", "x", 1_000),
        rec("a", "x", 9_000),
        rec("b", "x", 11_999),
        rec("a", "x", 5_000),  // late (11.999 s is not before 10 s + 2 s)
        rec("b", "x", 12_000), // closes a[0, 10 s), which stays: 12 s > 10 s
        rec("a", "x", 8_000),  // late, beyond grace: dropped
    ];
    let want = [
        "a[0,10000]=1@1000",
        "a[0,10000]=2@9000",
        "b[10000,20000]=1@11999",
        "a[0,10000]=3@9000",
        "b[10000,20000]=2@12000",
    ];
    for defer in [false, true] {
        for size in [1, 3, 6] {
            let mut h = Harness::new(step(&format!("{COUNT}\n{tumbling}")), counter());
            h.op.defer_updates(defer);
            let out = h.feed(&stream(&recs[..4]), size);
            let mut out: Vec<String> = out.iter().map(show).collect();
            if size == 1 {
                assert_eq!(out, want[..4], "defer {defer}, batch {size}");
            }
            assert_eq!(stored_windows(&h, "a"), [0], "defer {defer}, batch {size}");
            out.extend(h.feed(&stream(&recs[4..]), size).iter().map(show));
            if size == 1 {
                assert_eq!(out, want, "defer {defer}, batch {size}");
            }
            assert_eq!(stored_windows(&h, "a"), [0], "defer {defer}");
            // The last window of 19.999 s starts at 10 s: a's stays; at
            // 20 s it leaves.
            h.feed(&stream(&[rec("c", "x", 19_999)]), 1);
            assert_eq!(stored_windows(&h, "a"), [0], "defer {defer}");
            h.feed(&stream(&[rec("c", "x", 20_000)]), 1);
            assert!(stored_windows(&h, "a").is_empty(), "defer {defer}");
            assert_eq!(stored_windows(&h, "b"), [10_000], "defer {defer}");
            assert_eq!(h.late, 1, "defer {defer}, batch {size}");
        }
    }
    // With `retention = "30s"`, a's window stays until 30 s.
    let cfg = step(&format!(
        "{COUNT}\n[steps.window]\ntype = \"tumbling\"\nsize = \"10s\"\ngrace = \"2s\"\nretention = \"30s\""
    ));
    let mut h = Harness::new(cfg, counter());
    h.feed(&stream(&recs), 1);
    assert_eq!(stored_windows(&h, "a"), [0]);
    h.feed(&stream(&[rec("c", "x", 29_999)]), 1);
    assert_eq!(stored_windows(&h, "a"), [0]);
    assert_eq!(stored_windows(&h, "b"), [10_000]);
    h.feed(&stream(&[rec("c", "x", 30_000)]), 1);
    assert!(stored_windows(&h, "a").is_empty());
    assert_eq!(stored_windows(&h, "b"), [10_000]);
    // Hopping windows leave one by one.
    let hopping = "window = { type = \"hopping\", size = \"10s\", advance = \"5s\" }";
    let mut h = Harness::new(step(&format!("{COUNT}\n{hopping}")), counter());
    h.feed(&stream(&[rec("a", "x", 7_000)]), 1);
    assert_eq!(stored_windows(&h, "a"), [0, 5_000]);
    h.feed(&stream(&[rec("b", "x", 10_000)]), 1);
    assert_eq!(stored_windows(&h, "a"), [5_000]);
    h.feed(&stream(&[rec("b", "x", 15_000)]), 1);
    assert!(stored_windows(&h, "a").is_empty());
}

/// With emit on close, a window leaves the state as it closes when its
/// retention is its size (no grace); a longer retention keeps it
/// (queryable) until the start of the last window the stream time is in
/// reaches its start + retention, and a late record for it is still
/// dropped.
#[test]
fn with_a_longer_retention_a_closed_window_stays_until_its_start_plus_retention() {
    let cfg = step(&format!(
        "{COUNT}\nemit = \"close\"\n[steps.window]\ntype = \"tumbling\"\nsize = \"10s\"\nretention = \"25s\""
    ));
    let mut h = Harness::new(cfg, counter());
    let out = h.feed(&stream(&[rec("a", "x", 1_000), rec("b", "x", 10_000)]), 1);
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        ["a[0,10000]=1@1000"]
    );
    assert_eq!(stored_windows(&h, "a"), [0]);
    let out = h.feed(&stream(&[rec("a", "x", 2_000), rec("b", "x", 24_999)]), 1);
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        ["b[10000,20000]=1@10000"]
    );
    assert_eq!(h.late, 1);
    assert_eq!(stored_windows(&h, "a"), [0]);
    h.feed(&stream(&[rec("c", "x", 29_999)]), 1);
    assert_eq!(stored_windows(&h, "a"), [0]);
    h.feed(&stream(&[rec("c", "x", 30_000)]), 1);
    assert!(stored_windows(&h, "a").is_empty());
    assert_eq!(stored_windows(&h, "b"), [10_000, 20_000]);
    // The default: gone as it closes.
    let cfg = step(&format!(
        "{COUNT}\nemit = \"close\"\nwindow = {{ type = \"tumbling\", size = \"10s\" }}"
    ));
    let mut h = Harness::new(cfg, counter());
    h.feed(&stream(&[rec("a", "x", 1_000), rec("b", "x", 10_000)]), 1);
    assert!(stored_windows(&h, "a").is_empty());
}

/// A window updated and then gone from the state in the same commit
/// interval is still emitted at the commit, also when a trapping record
/// made the batch go record by record (its accumulator is read back before
/// the window leaves).
#[test]
fn a_window_that_leaves_before_the_commit_is_still_emitted_at_it() {
    let tumbling = "window = { type = \"tumbling\", size = \"10s\" }";
    let mut h = Harness::new(step(&format!("{COUNT}\n{tumbling}")), counter());
    h.op.defer_updates(true);
    let ran = h
        .run_batch(&stream(&[
            rec("a", "x", 1_000),
            rec("a", "trap", 2_000),
            rec("b", "x", 30_000),
        ]))
        .unwrap();
    assert!(ran.is_empty());
    let out = h.commit_held().unwrap();
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        ["a[0,10000]=1@1000", "b[30000,40000]=1@30000"]
    );
    assert!(stored_windows(&h, "a").is_empty());
    assert_eq!(stored_windows(&h, "b"), [30_000]);
    let reasons: Vec<&str> = h.dead.iter().map(|d| d.1.as_str()).collect();
    assert_eq!(reasons, ["trapped: unreachable"]);
}
