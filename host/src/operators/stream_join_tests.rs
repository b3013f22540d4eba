//! Joins with a window or a table: the cases from the issues that set
//! their rules, outer joins, keyless records, table-table results.

#![allow(clippy::unwrap_used)]

use super::testing::*;
use crate::record::Record;

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

pub(super) fn joined(join: &str, input: &[(bool, Record)], size: usize) -> Vec<String> {
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
/// had a value. With the state cache on, a deletion of a key its side does
/// not hold emits nothing (a cached Kafka Streams table forwards a change
/// only when its old or new value is there).
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
    // (join, cache, outputs)
    let cases: [(&str, bool, &[&str]); 6] = [
        ("inner", false, &["a=l1+r1@10", "b=null@2"]),
        ("inner", true, &["a=l1+r1@10"]),
        (
            "left",
            false,
            &["a=l1+r1@10", "b=null@2", "d=ld+-@3", "d=null@4"],
        ),
        ("left", true, &["a=l1+r1@10", "d=ld+-@3", "d=null@4"]),
        (
            "outer",
            false,
            &[
                "a=-+r1@10",
                "a=l1+r1@10",
                "b=-+rb@1",
                "b=-+rb@2",
                "d=ld+-@3",
                "d=null@4",
            ],
        ),
        (
            "outer",
            true,
            &[
                "a=-+r1@10",
                "a=l1+r1@10",
                "b=-+rb@1",
                "d=ld+-@3",
                "d=null@4",
            ],
        ),
    ];
    for (join, cache, want) in cases {
        for size in [1, 500] {
            let cfg = step(&format!(
                "name = \"j\"\nkind = \"join\"\nmodule = \"concat.wasm\"\nwith = \"right\"\nas_table = true\njoin = \"{join}\""
            ));
            let mut h = Harness::new(cfg, concat());
            h.op.defer_updates(cache);
            let got: Vec<String> = h.feed(&input, size).iter().map(show).collect();
            assert_eq!(got, want, "{join}, cache {cache}, batch {size}");
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
