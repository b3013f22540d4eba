//! Join parity tests: each pins a rule of Kafka Streams' joins
//! (KStreamKTableJoinProcessor, KTableKTable*Join, KStreamKStreamJoin and
//! its window stores) with exact outputs, `key=left+right@ts` (`-` for a
//! missing side, `null` for a tombstone or a missing key).

#![allow(clippy::unwrap_used)]

use super::testing::*;
use crate::record::Record;

/// A record of the left (`false`) or right (`true`) side; `key` or `value`
/// "" for none.
fn side(is_right: bool, key: &str, value: &str, ts: i64) -> (bool, Record) {
    let mut r = rec(key, value, ts);
    if key.is_empty() {
        r.key = None;
    }
    if value.is_empty() {
        r.value = None;
    }
    (is_right, r)
}
fn l(key: &str, value: &str, ts: i64) -> (bool, Record) {
    side(false, key, value, ts)
}
fn r(key: &str, value: &str, ts: i64) -> (bool, Record) {
    side(true, key, value, ts)
}

/// Gives each side's records increasing offsets, as read from their topics.
fn with_offsets(input: &[(bool, Record)]) -> Vec<(bool, Record)> {
    let mut next = [0i64; 2];
    input
        .iter()
        .map(|(is_right, rec)| {
            let mut rec = rec.clone();
            rec.offset = next[usize::from(*is_right)];
            next[usize::from(*is_right)] += 1;
            (*is_right, rec)
        })
        .collect()
}

/// Runs `input` through a join step of `toml` (its `[[steps]]` fields after
/// the common ones) at batch sizes 1, 7 and 500; every size must give `want`.
fn check(toml: &str, input: &[(bool, Record)], want: &[&str]) {
    let input = with_offsets(input);
    for size in [1, 7, 500] {
        let cfg = step(&format!(
            "name = \"j\"\nkind = \"join\"\nmodule = \"concat.wasm\"\nwith = \"right\"\n{toml}"
        ));
        let mut h = Harness::new(cfg, concat());
        let got: Vec<String> = h.feed(&input, size).iter().map(show).collect();
        assert_eq!(got, want, "{toml}, batch {size}");
    }
}

/// Stream-table (KStreamKTableJoinProcessor, KTableSource): a stream record
/// with no value is dropped by both joins; a table record with no key is
/// dropped; a table tombstone removes the row (a left join then emits the
/// stream record alone); a result carries the stream record's timestamp;
/// the table is not versioned, so a stream record meets the newest row
/// whatever the timestamps (an older table update still replaces it).
#[test]
fn stream_table_joins_as_kafka_streams() {
    let input = [
        r("a", "A1", 1),
        r("", "X", 2), // a table record with no key: dropped
        l("a", "", 3), // a stream record with no value: dropped
        l("a", "s1", 4),
        r("a", "", 5), // deletes a's row
        l("a", "s2", 6),
        r("b", "B9", 9),
        l("b", "s3", 7), // behind the table's update: meets it all the same
        l("", "k", 8),   // no key: a left join emits it alone
        r("b", "B2", 2), // an older update replaces the row
        l("b", "s4", 10),
    ];
    check(
        "join = \"inner\"",
        &input,
        &["a=s1+A1@4", "b=s3+B9@7", "b=s4+B2@10"],
    );
    check(
        "join = \"left\"",
        &input,
        &[
            "a=s1+A1@4",
            "a=s2+-@6",
            "b=s3+B9@7",
            "null=k+-@8",
            "b=s4+B2@10",
        ],
    );
}

/// A stream-table join over a versioned table with `grace` (Kafka Streams'
/// `Joined.withGracePeriod`): a stream record waits until the buffer's time
/// (its newest record's) is `grace` past it, then meets the table as of its
/// timestamp, records of one time in key order; a record already `grace`
/// behind joins at once; the last record stays buffered. A keyless record
/// of a left join is emitted at once, alone (Kafka Streams 4.4 fails on it
/// with a NullPointerException in its buffer).
#[test]
fn a_graced_stream_table_join_holds_stream_records_until_grace_past_them() {
    let input = [
        r("a", "A1", 1),
        l("a", "s1", 5),
        r("a", "A4", 4), // late, but before s1 joins: s1 meets it
        l("b", "s2", 5),
        l("", "k", 6),
        l("a", "s3", 7), // the buffer at 7: s1 and s2 (at 5) join, a before b
        l("a", "s0", 2), // 5 behind the buffer: joins at once, with A1
        l("a", "s4", 9), // s3 joins; s4 stays buffered
    ];
    let graced = "history = \"10ms\"\ngrace = \"2ms\"\n";
    check(
        &format!("{graced}join = \"inner\""),
        &input,
        &["a=s1+A4@5", "a=s0+A1@2", "a=s3+A4@7"],
    );
    check(
        &format!("{graced}join = \"left\""),
        &input,
        &[
            "null=k+-@6",
            "a=s1+A4@5",
            "b=s2+-@5",
            "a=s0+A1@2",
            "a=s3+A4@7",
        ],
    );
}

const TABLES: &str = "as_table = true";

/// Table-table (KTableKTable{Inner,Left,Outer,Right}Join): an update to the
/// value a key already has emits the result again (Kafka Streams forwards
/// every table update, equal or not); deleting a key that neither side has
/// emits nothing in any join; both sides updating at one timestamp emit one
/// result each, in the order they come, at that timestamp.
#[test]
fn table_table_joins_emit_equal_updates_and_nothing_for_absent_deletes() {
    let input = [
        l("a", "l1", 1),
        r("a", "r1", 2),
        l("a", "l1", 3), // the same value again
        r("a", "r1", 4), // the same value again
        l("z", "", 5),   // z never existed on either side
        r("z", "", 6),
        r("y", "ry", 7),
        l("y", "ly", 7),
    ];
    check(
        &format!("{TABLES}\njoin = \"inner\""),
        &input,
        &["a=l1+r1@2", "a=l1+r1@3", "a=l1+r1@4", "y=ly+ry@7"],
    );
    check(
        &format!("{TABLES}\njoin = \"left\""),
        &input,
        &[
            "a=l1+-@1",
            "a=l1+r1@2",
            "a=l1+r1@3",
            "a=l1+r1@4",
            "y=ly+ry@7",
        ],
    );
    check(
        &format!("{TABLES}\njoin = \"outer\""),
        &input,
        &[
            "a=l1+-@1",
            "a=l1+r1@2",
            "a=l1+r1@3",
            "a=l1+r1@4",
            "y=-+ry@7",
            "y=ly+ry@7",
        ],
    );
}

/// Window bounds (KStreamKStreamJoin's fetch from `t - before` to `t +
/// after` for a left record, `t - after` to `t + before` for a right one,
/// both ends included): with before 2 s and after 1 s, a left record at 10 s
/// meets right records at 8 s and 11 s but not at 7.999 s or 11.001 s; a
/// right record at 20 s meets left records at 19 s and 22 s but not at
/// 18.999 s or 22.001 s. Several matches come out in the other side's
/// timestamp order.
#[test]
fn a_stream_join_window_includes_both_bounds_on_each_side() {
    let input = [
        r("k", "R7999", 7_999),
        r("k", "R11000", 11_000),
        r("k", "R8000", 8_000),
        r("k", "R11001", 11_001),
        l("k", "L", 10_000),
        l("m", "L18999", 18_999),
        l("m", "L22000", 22_000),
        l("m", "L19000", 19_000),
        l("m", "L22001", 22_001),
        r("m", "R", 20_000),
    ];
    check(
        "with_kind = \"stream\"\nwindow = { before = \"2s\", after = \"1s\", grace = \"5s\" }",
        &input,
        &[
            "k=L+R8000@10000",
            "k=L+R11000@11000",
            "m=L19000+R@20000",
            "m=L22000+R@22000",
        ],
    );
}

const STREAMS: &str =
    "with_kind = \"stream\"\nwindow = { before = \"2s\", after = \"2s\", grace = \"5s\" }";

/// Retention (the join window store keeps `before + after + grace`, here
/// 9 s, behind the largest timestamp its side has kept: it returns records
/// from `observed - 9 s + 1 ms` on): with the left side at 8.999 s a left
/// record at 0 still meets a late right one; at 9 s it no longer does.
#[test]
fn a_stream_join_side_retains_exactly_its_retention() {
    let kept = [l("k", "L0", 0), l("x", "X", 8_999), r("k", "R1", 1_000)];
    check(
        &format!("{STREAMS}\njoin = \"inner\""),
        &kept,
        &["k=L0+R1@1000"],
    );
    let gone = [l("k", "L0", 0), l("x", "X", 9_000), r("k", "R1", 1_000)];
    check(&format!("{STREAMS}\njoin = \"inner\""), &gone, &[]);
}

/// A record late beyond its own side's retention is still joined against
/// the other side's buffer (KStreamKStreamJoin fetches the other store
/// whatever its own store keeps), but is not kept for later records of the
/// other side; in an outer join, one that meets nothing and whose window
/// has ended comes out alone at once.
#[test]
fn a_record_late_beyond_its_own_retention_still_meets_the_other_side() {
    let input = [
        r("k", "R15", 1_500),
        l("a", "A", 20_000),  // the left side now keeps nothing before 11.001 s
        l("k", "K10", 1_000), // late: meets R15, is not kept
        r("k", "R12", 1_200), // K10 is not kept: meets nothing
        l("k", "K5", 500),    // meets R12 then R15 (by their timestamps)
    ];
    let both = ["k=K10+R15@1500", "k=K5+R12@1200", "k=K5+R15@1500"];
    check(&format!("{STREAMS}\njoin = \"inner\""), &input, &both);
    check(&format!("{STREAMS}\njoin = \"left\""), &input, &both);
    check(
        &format!("{STREAMS}\njoin = \"outer\""),
        &input,
        &[
            "k=-+R15@1500", // held until the stream time passed 8.5 s
            "k=K10+R15@1500",
            "k=-+R12@1200",
            "k=K5+R12@1200",
            "k=K5+R15@1500",
        ],
    );
}

/// Several records of one key and timestamp on a side all pair up, each
/// pair once (by the later of its two records): a record meeting several
/// comes out with them by their timestamp, then in the order they came
/// (the window store's key, timestamp, sequence number order).
#[test]
fn records_of_one_key_and_timestamp_all_pair_once_in_arrival_order() {
    let input = [
        r("k", "Ra", 5_000),
        r("k", "Rb", 5_000),
        r("k", "Rc", 4_000),
        l("k", "L", 5_000),
        r("k", "Rd", 5_000),
        l("k", "L2", 5_000),
    ];
    check(
        &format!("{STREAMS}\njoin = \"inner\""),
        &input,
        &[
            "k=L+Rc@5000",
            "k=L+Ra@5000",
            "k=L+Rb@5000",
            "k=L+Rd@5000",
            "k=L2+Rc@5000",
            "k=L2+Ra@5000",
            "k=L2+Rb@5000",
            "k=L2+Rd@5000",
        ],
    );
}

/// A left-join record that met nothing comes out alone at once when its
/// window had ended before it came (`t + after` before the stream time),
/// and is held when it ends exactly at the stream time; held ones come out
/// once the stream time passes `t + after + grace`, not when it reaches it.
#[test]
fn an_unmatched_left_record_is_held_up_to_its_window_end_and_released_past_grace() {
    let input = [
        l("k", "K", 0),
        r("x", "X", 2_000),
        l("m", "M", 0), // ends at 2 s, the stream time: held
        r("y", "Y", 2_001),
        l("p", "P", 0),     // ended before the stream time: at once
        r("w", "W", 7_000), // K and M close at 7 s: not yet
        r("z", "Z", 7_001),
    ];
    check(
        &format!("{STREAMS}\njoin = \"left\""),
        &input,
        &["p=P+-@0", "k=K+-@0", "m=M+-@0"],
    );
}

/// KStreamKStreamJoin looks at its held (unmatched) records only when the
/// earliest time it noted for them, plus the window's reach on the side of
/// the record being processed (`after` for a left record, `before` for a
/// right one) and the grace, is behind the stream time; a look notes the
/// timestamp of the last held record it went over (in a left join, the
/// newest held), and holding a record lowers it to that record's. So a held
/// record can stay held past its window's close: here `b` (closes at 3 s)
/// waits until the look at 3.6 s, after the inner result at 3.1 s.
#[test]
fn held_records_come_out_when_kafka_streams_looks_at_them() {
    let win = "with_kind = \"stream\"\nwindow = { before = \"2s\", after = \"2s\" }";
    let input = [
        l("a", "A", 0),
        l("b", "B", 1_000),
        l("d", "D", 1_500),
        l("c", "C", 2_500), // a look: A out; B and D open, the last one 1.5 s
        l("e", "E", 3_100), // 1.5 + 2 >= 3.1: no look
        r("e", "Z", 3_100), // meets E; 1.5 + 2 >= 3.1: no look
        l("f", "F", 3_600), // a look: B and D out
    ];
    check(
        &format!("{win}\njoin = \"left\""),
        &input,
        &["a=A+-@0", "e=E+Z@3100", "b=B+-@1000", "d=D+-@1500"],
    );
    check(
        &format!("{win}\njoin = \"left\""),
        &input[..5],
        &["a=A+-@0"],
    );
    // A right record looks with `before`: with before 5 s and after 0, a
    // left record at 0 closes at once, but a right record at 3 s does not
    // look (0 + 5 >= 3); the next left record does.
    let win = "with_kind = \"stream\"\nwindow = { before = \"5s\", after = \"0s\" }";
    let input = [l("k", "K", 0), r("x", "X", 3_000), l("y", "Y", 3_000)];
    for join in ["left", "outer"] {
        check(&format!("{win}\njoin = \"{join}\""), &input[..2], &[]);
        check(&format!("{win}\njoin = \"{join}\""), &input, &["k=K+-@0"]);
    }
}

fn with_header(mut rec: (bool, Record), h: &str) -> (bool, Record) {
    rec.1.headers.push(("h".to_string(), h.as_bytes().to_vec()));
    rec
}

/// Runs `input` through a join step at batch sizes 1, 7 and 500; every size
/// must give `want`, each output with the value of its header `h`.
fn check_headers(toml: &str, input: &[(bool, Record)], want: &[(&str, Option<&str>)]) {
    let input = with_offsets(input);
    for size in [1, 7, 500] {
        let cfg = step(&format!(
            "name = \"j\"\nkind = \"join\"\nmodule = \"concat.wasm\"\nwith = \"right\"\n{toml}"
        ));
        let mut h = Harness::new(cfg, concat());
        let got: Vec<(String, Option<String>)> = h
            .feed(&input, size)
            .iter()
            .map(|o| {
                let h = o
                    .headers
                    .iter()
                    .find(|(n, _)| n == "h")
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
                (show(o), h)
            })
            .collect();
        let want: Vec<(String, Option<String>)> = want
            .iter()
            .map(|(s, h)| (s.to_string(), h.map(str::to_string)))
            .collect();
        assert_eq!(got, want, "{toml}, batch {size}");
    }
}

/// A result carries the headers of the record being processed when it is
/// forwarded, as Kafka Streams' joins forward `record.withValue(..)`: a
/// table-table tombstone the deleting record's; a held stream-join record
/// that comes out later those of the record whose look emitted it (Kafka
/// Streams forwards the processed record with the held key, value and
/// timestamp).
#[test]
fn join_results_carry_the_headers_of_the_record_being_processed() {
    let input = [
        with_header(l("a", "l1", 1), "l1"),
        with_header(r("a", "r1", 2), "r1"),
        with_header(l("a", "", 3), "del"),
    ];
    check_headers(
        &format!("{TABLES}\njoin = \"inner\""),
        &input,
        &[("a=l1+r1@2", Some("r1")), ("a=null@3", Some("del"))],
    );
    let input = [
        with_header(l("k", "K", 0), "k"),
        with_header(r("x", "X", 10_000), "x"),
    ];
    check_headers(
        "with_kind = \"stream\"\nwindow = { before = \"1s\", after = \"1s\" }\njoin = \"left\"",
        &input,
        &[("k=K+-@0", Some("x"))],
    );
}

/// A record with no key reaching an aggregate (a map before it gave it
/// none) is a dead letter, counted nowhere: the outputs are Kafka Streams',
/// which drops it at the repartition or in the aggregation. It does not
/// move a windowed aggregate's time either (Kafka Streams never sees it
/// there): the window [0, 10 s) still takes the record at 5 s after one
/// without a key at 20 s.
#[test]
fn a_keyless_record_at_an_aggregate_is_a_dead_letter_and_changes_nothing() {
    let keyless = |ts: i64| {
        let mut r = rec("", "x", ts);
        r.key = None;
        (false, r)
    };
    let input = [
        (false, rec("a", "x", 1)),
        keyless(20_000),
        (false, rec("a", "x", 5_000)),
    ];
    for size in [1, 7, 500] {
        let mut h = Harness::new(
            step(
                "name = \"count\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"\nwindow = { type = \"tumbling\", size = \"10s\" }",
            ),
            counter(),
        );
        let out: Vec<String> = h.feed(&input, size).iter().map(show).collect();
        let want: &[&str] = if size == 1 {
            &["a[0,10000]=1@1", "a[0,10000]=2@5000"]
        } else {
            &["a[0,10000]=2@5000"]
        };
        assert_eq!(out, want, "batch {size}");
        let dead: Vec<&str> = h.dead.iter().map(|(_, m, _)| m.as_str()).collect();
        assert_eq!(
            dead,
            ["step count: an aggregate groups by key, and this record has none"],
            "batch {size}"
        );
    }
}

/// Randomized left and outer joins with uneven windows and late records:
/// every batch size gives the same outputs, and every look notes the time
/// that going over all held records gives (checked inside the operator in
/// test builds).
#[test]
fn held_record_looks_match_going_over_every_held_record() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..12 {
        let (before, after, grace) = (next(4) * 500, next(4) * 500, next(3) * 500);
        let join = if round % 2 == 0 { "outer" } else { "left" };
        let mut t = 10_000i64;
        let input: Vec<(bool, Record)> = (0..150)
            .map(|i| {
                t += next(700) as i64;
                let ts = t - next(3_000) as i64;
                let key = format!("k{}", next(6));
                let v = format!("v{i}");
                if next(2) == 0 {
                    l(&key, &v, ts)
                } else {
                    r(&key, &v, ts)
                }
            })
            .collect();
        let toml = format!(
            "with_kind = \"stream\"\nwindow = {{ before = \"{before}ms\", after = \"{after}ms\", grace = \"{grace}ms\" }}\njoin = \"{join}\""
        );
        let input = with_offsets(&input);
        let mut outs = Vec::new();
        for size in [1, 7, 500] {
            let cfg = step(&format!(
                "name = \"j\"\nkind = \"join\"\nmodule = \"concat.wasm\"\nwith = \"right\"\n{toml}"
            ));
            let mut h = Harness::new(cfg, concat());
            outs.push(h.feed(&input, size).iter().map(show).collect::<Vec<_>>());
        }
        assert_eq!(outs[0], outs[1], "{toml}: batch 1 vs 7");
        assert_eq!(outs[0], outs[2], "{toml}: batch 1 vs 500");
    }
}
