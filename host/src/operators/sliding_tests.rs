//! Sliding windows: the windows a record makes and updates, in Kafka
//! Streams' order (tests/parity/sliding compares them with Kafka Streams
//! itself), with and without the state cache, and bad timestamps.

#![allow(clippy::unwrap_used)]

use super::testing::*;
use super::tests::stream;

const SLIDING: &str = r#"name = "count"
kind = "aggregate"
module = "count.wasm"
window = { type = "sliding", size = "5s", grace = "2s" }"#;

/// docs/pipeline.md's example, then a record that fills both its
/// neighbours' windows: every update comes out, in the same order, at any
/// batch size.
#[test]
fn a_record_makes_its_left_and_right_windows_and_updates_those_it_falls_in() {
    let input = stream(&[
        rec("a", "x", 1_000),
        rec("a", "x", 7_000),
        rec("a", "x", 4_000),
        rec("a", "x", 6_999),
        rec("b", "x", 6_000),
    ]);
    let want = [
        "a[0,5000]=1@1000",
        "a[2000,7000]=1@7000",
        // a@4 s: the window it falls in, its right window (a copy of what
        // 7 s is in), the right window of 1 s, then [0, 5 s].
        "a[2000,7000]=2@7000",
        "a[4001,9001]=1@7000",
        "a[1001,6001]=1@4000",
        "a[0,5000]=2@4000",
        // a@6.999 s: the windows it falls in (newest first), its left
        // window from [1.001 s, 6.001 s] (which holds 4 s) and its right
        // window, a copy of [4.001 s, 9.001 s] before this record.
        "a[4001,9001]=2@7000",
        "a[2000,7000]=3@7000",
        "a[1999,6999]=2@6999",
        "a[7000,12000]=1@7000",
        "b[1000,6000]=1@6000",
    ];
    for size in [1, 2, 500] {
        let mut h = Harness::new(step(SLIDING), counter());
        let out: Vec<String> = h.feed(&input, size).iter().map(show).collect();
        assert_eq!(out, want, "batch {size}");
        assert_eq!(h.late, 0);
    }
}

/// With the state cache, each window updated between two commits comes
/// out once, with its latest count, in the order of its last update.
#[test]
fn with_the_cache_a_window_is_emitted_once_per_commit() {
    let input = stream(&[
        rec("a", "x", 1_000),
        rec("a", "x", 7_000),
        rec("a", "x", 4_000),
        rec("a", "x", 6_999),
    ]);
    let mut h = Harness::new(step(SLIDING), counter());
    h.op.defer_updates(true);
    assert!(h.run_batch(&input).unwrap().is_empty());
    let out: Vec<String> = h.commit_held().unwrap().iter().map(show).collect();
    assert_eq!(
        out,
        [
            "a[1001,6001]=1@4000",
            "a[0,5000]=2@4000",
            "a[4001,9001]=2@7000",
            "a[2000,7000]=3@7000",
            "a[1999,6999]=2@6999",
            "a[7000,12000]=1@7000",
        ]
    );
}

/// A record whose right window would have closed is late; a window whose
/// end is before the stream time minus grace takes no record; a record
/// before time 0 that is not late is a dead letter, the rest go on.
#[test]
fn late_records_are_dropped_and_negative_times_are_dead_letters() {
    let mut h = Harness::new(step(SLIDING), counter());
    let out = h.feed(
        &stream(&[
            rec("a", "x", -10),
            rec("a", "x", 20_000),
            // 12 s + 1 ms + 5 s is 17.001 s, before 20 s - 2 s: late.
            rec("a", "x", 12_000),
            // In time for its right window only: [13.001 s, 18.001 s]
            // would be a copy of nothing, and [8 s, 13 s] has closed.
            rec("a", "x", 13_000),
        ]),
        1,
    );
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        ["a[15000,20000]=1@20000"]
    );
    assert_eq!(h.late, 1);
    assert_eq!(h.dead.len(), 1);
    assert_eq!(
        h.dead[0].1,
        "step count: sliding windows start at time 0, and this record's timestamp is -10"
    );
}
