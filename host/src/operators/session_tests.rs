//! Session windows: merging, late records, closing, timestamps and
//! tombstones.

#![allow(clippy::unwrap_used)]

use super::testing::*;
use super::tests::stream;
use super::tests::{COUNT, SESSION};

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

/// Found by the parity check (tests/parity/session): Kafka Streams' session
/// store no longer returns a session once the stream time before a record
/// has reached its end + gap + grace (its retention), so a record within
/// `gap` of a closed session starts a session beside it instead of merging
/// into it (and is not late: its own session is open). gap 5 s, grace 2 s:
/// `d`@70000 closes at 77000; `d`@74000 after `e`@77000 starts
/// `d[74000,74000]`; `f`@80001 is still open at 87000, and `f`@84000 merges.
#[test]
fn a_record_next_to_a_closed_session_starts_its_own() {
    let window = "window = { type = \"session\", gap = \"5s\", grace = \"2s\" }";
    let recs = [
        rec("d", "x", 70_000),
        rec("e", "x", 77_000),
        rec("d", "x", 74_000),
        rec("f", "x", 80_001),
        rec("g", "x", 87_000),
        rec("f", "x", 84_000),
    ];
    for size in [1, 500] {
        let cfg = step(&format!("{COUNT}\n{window}"));
        let mut h = Harness::new(cfg, counter());
        let out = h.feed(&stream(&recs), size);
        // Record by record whatever the batch (caching off).
        let expected = [
            "d[70000,70000]=1@70000",
            "e[77000,77000]=1@77000",
            "d[74000,74000]=1@74000",
            "f[80001,80001]=1@80001",
            "g[87000,87000]=1@87000",
            "f[80001,80001]=null@80001",
            "f[80001,84000]=2@84000",
        ];
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            expected,
            "batch {size}"
        );
        assert_eq!(h.late, 0, "batch {size}");
        let cfg = step(&format!("{COUNT}\n{window}\nemit = \"close\""));
        let mut h = Harness::new(cfg, counter());
        let out = h.feed(&stream(&recs), size);
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            [
                "d[70000,70000]=1@70000",
                "d[74000,74000]=1@74000",
                "e[77000,77000]=1@77000"
            ],
            "batch {size}"
        );
    }
}

/// With its record cache on, Kafka Streams finds a closed session in the
/// cache (which does not check retention) and merges a record next to it
/// (tests/parity/session/update-cached): so does Weir with its state
/// cache, and the merged-away closed session gets no tombstone (Kafka
/// Streams' store no longer returns it, so its cache forwards none).
#[test]
fn with_the_cache_a_record_next_to_a_closed_session_merges_into_it() {
    let window = "window = { type = \"session\", gap = \"5s\", grace = \"2s\" }";
    let cfg = step(&format!("{COUNT}\n{window}"));
    let mut h = Harness::new(cfg, counter());
    h.op.defer_updates(true);
    let mut out = Vec::new();
    for r in [
        rec("d", "x", 70_000),
        rec("e", "x", 77_000),
        rec("d", "x", 74_000),
    ] {
        assert!(h.run_batch(&stream(&[r])).unwrap().is_empty());
        out.extend(h.commit_held().unwrap());
    }
    assert_eq!(
        out.iter().map(show).collect::<Vec<_>>(),
        [
            "d[70000,70000]=1@70000",
            "e[77000,77000]=1@77000",
            "d[70000,74000]=2@74000"
        ]
    );
    assert_eq!(h.late, 0);
}

/// With `emit = "close"` and the cache on, Kafka Streams' record cache still
/// holds a session its suppression has emitted, and a record within the gap
/// merges into it; the merged session is emitted when it closes in turn
/// (tests/parity/session/close-cached). Weir keeps a closed session for a
/// day of stream time past its end (records in time can stretch a later
/// session of its key back to it), then forgets it. gap 5 s, grace 2 s.
#[test]
fn with_the_cache_a_closed_session_is_kept_for_merging_then_forgotten() {
    use crate::backend::StateRead;
    use crate::pipeline::keys;

    let window = "window = { type = \"session\", gap = \"5s\", grace = \"2s\" }";
    let cfg = step(&format!("{COUNT}\n{window}\nemit = \"close\""));
    let mut h = Harness::new(cfg, counter());
    h.op.defer_updates(true);
    let stored = |h: &Harness, key: &str, start: i64| {
        h.backend
            .get(&keys::agg("p", "count", 0, key.as_bytes(), start))
            .unwrap()
            .is_some()
    };
    let feed = |h: &mut Harness, key: &str, ts: i64| {
        let mut out = h.run_batch(&stream(&[rec(key, "x", ts)])).unwrap();
        out.extend(h.commit_held().unwrap());
        out.iter().map(show).collect::<Vec<_>>()
    };
    assert!(feed(&mut h, "d", 70_000).is_empty());
    // d[70 s, 70 s] closes at 77 s; it is kept.
    assert_eq!(feed(&mut h, "e", 77_000), ["d[70000,70000]=1@70000"]);
    assert!(stored(&h, "d", 70_000));
    // d@74 s merges into it (74 s is not before 77 s - gap - grace).
    assert!(feed(&mut h, "d", 74_000).is_empty());
    // d[70 s, 74 s] closes at 81 s.
    assert_eq!(feed(&mut h, "x", 81_000), ["d[70000,74000]=2@74000"]);
    // Kept while a record could still merge into it, directly or through a
    // later session of its key stretched back to it record by record: a
    // day of stream time past its end (e[77 s, 77 s] closes at 84 s
    // meanwhile).
    assert_eq!(feed(&mut h, "x", 86_000), ["e[77000,77000]=1@77000"]);
    assert!(feed(&mut h, "w", 91_001).is_empty());
    assert!(stored(&h, "d", 70_000));
    assert!(stored(&h, "e", 77_000));
    assert_eq!(h.late, 0);
    // A day past 74 s, d's session is forgotten; e's a day past 77 s.
    assert_eq!(
        feed(&mut h, "y", 74_000 + DAY + 1),
        ["x[81000,86000]=2@86000", "w[91001,91001]=1@91001"]
    );
    assert!(!stored(&h, "d", 70_000));
    assert!(stored(&h, "e", 77_000));
    assert!(feed(&mut h, "z", 77_000 + DAY + 1).is_empty());
    assert!(!stored(&h, "e", 77_000));
    assert!(stored(&h, "x", 81_000));
}

/// A day of stream time: how long the cache keeps a closed session.
const DAY: i64 = 24 * 60 * 60 * 1000;

/// With `emit = "update"`, a session leaves the state as Kafka Streams'
/// session store stops returning it: at its end + gap + grace without the
/// cache (a record next to it starts a session of its own by then); with
/// the cache, a day of stream time past its end (a later session of its
/// key could be stretched back to it until then), after the commit has
/// emitted it. gap 5 s, grace 2 s.
#[test]
fn emitted_on_update_a_session_leaves_the_state_when_it_can_no_longer_grow() {
    use crate::backend::StateRead;
    use crate::pipeline::keys;

    let window = "window = { type = \"session\", gap = \"5s\", grace = \"2s\" }";
    let cfg = step(&format!("{COUNT}\n{window}\nemit = \"update\""));
    let stored = |h: &Harness, key: &str, start: i64| {
        h.backend
            .get(&keys::agg("p", "count", 0, key.as_bytes(), start))
            .unwrap()
            .is_some()
    };
    let feed = |h: &mut Harness, key: &str, ts: i64| {
        let mut out = h.run_batch(&stream(&[rec(key, "x", ts)])).unwrap();
        out.extend(h.commit_held().unwrap());
        out.iter().map(show).collect::<Vec<_>>()
    };
    // Without the cache.
    let mut h = Harness::new(cfg.clone(), counter());
    assert_eq!(feed(&mut h, "a", 70_000), ["a[70000,70000]=1@70000"]);
    assert_eq!(feed(&mut h, "b", 76_999), ["b[76999,76999]=1@76999"]);
    assert!(stored(&h, "a", 70_000));
    assert_eq!(
        feed(&mut h, "b", 77_000),
        ["b[76999,76999]=null@76999", "b[76999,77000]=2@77000"]
    );
    assert!(!stored(&h, "a", 70_000));
    // a@74 s starts a session of its own, as it would have before.
    assert_eq!(feed(&mut h, "a", 74_000), ["a[74000,74000]=1@74000"]);
    // With the cache: a@74 s merges into a[70 s, 70 s] (kept while a
    // record could still reach it in time: until 70 s + 15 s + 2 s).
    let mut h = Harness::new(cfg, counter());
    h.op.defer_updates(true);
    assert_eq!(feed(&mut h, "a", 70_000), ["a[70000,70000]=1@70000"]);
    assert_eq!(feed(&mut h, "b", 77_000), ["b[77000,77000]=1@77000"]);
    assert!(stored(&h, "a", 70_000));
    assert_eq!(feed(&mut h, "a", 74_000), ["a[70000,74000]=2@74000"]);
    assert_eq!(feed(&mut h, "b", 86_000), ["b[86000,86000]=1@86000"]);
    assert!(stored(&h, "a", 70_000));
    assert_eq!(feed(&mut h, "c", 87_000), ["c[87000,87000]=1@87000"]);
    // a[70 s, 74 s]: kept a day past its end (a later session of `a`
    // could still be stretched back to it).
    assert_eq!(feed(&mut h, "d", 91_001), ["d[91001,91001]=1@91001"]);
    assert!(stored(&h, "a", 70_000));
    assert_eq!(
        feed(&mut h, "d", 74_000 + DAY + 1),
        ["d[86474001,86474001]=1@86474001"]
    );
    assert!(!stored(&h, "a", 70_000));
    assert!(stored(&h, "b", 77_000));
    assert_eq!(h.late, 0);
}

/// With the cache, a session past its own reach stays while a record could
/// still bridge it to the key's next session in time, as Kafka Streams'
/// record cache keeps it (found by a randomized comparison with Kafka
/// Streams). gap 5 s, grace 2 s: a[10 s, 13 s] and a[20 s, 22 s]; at stream
/// time 26 s a record at 13 s + gap would be late, but a@17 s bridges both
/// sessions, and the merged session ends at 22 s, in time.
#[test]
fn with_the_cache_a_record_bridging_to_a_later_session_merges_an_old_one() {
    let window = "window = { type = \"session\", gap = \"5s\", grace = \"2s\" }";
    for emit in ["update", "close"] {
        let cfg = step(&format!("{COUNT}\n{window}\nemit = \"{emit}\""));
        let feed = |h: &mut Harness, key: &str, ts: i64| {
            let mut out = h.run_batch(&stream(&[rec(key, "x", ts)])).unwrap();
            out.extend(h.commit_held().unwrap());
            out.iter().map(show).collect::<Vec<_>>()
        };
        let run = |cached: bool| {
            let mut h = Harness::new(cfg.clone(), counter());
            h.op.defer_updates(cached);
            for (key, ts) in [("a", 10_000), ("a", 13_000), ("a", 20_000), ("a", 22_000)] {
                feed(&mut h, key, ts);
            }
            feed(&mut h, "x", 26_000);
            let bridged = feed(&mut h, "a", 17_000);
            // Closes everything.
            let closed = feed(&mut h, "y", 100_000);
            (bridged, closed, h.late)
        };
        let (bridged, closed, late) = run(true);
        assert_eq!(late, 0, "{emit}");
        if emit == "update" {
            assert_eq!(
                bridged,
                // No tombstone for the closed one: Kafka Streams' store
                // no longer returns it, so its cache forwards no removal.
                ["a[20000,22000]=null@22000", "a[10000,22000]=5@22000"],
                "{emit}"
            );
        } else {
            assert_eq!(
                closed,
                ["a[10000,22000]=5@22000", "x[26000,26000]=1@26000"],
                "{emit}"
            );
        }
        // Without the cache, a[10 s, 13 s] is closed and out of reach.
        let (bridged, closed, _) = run(false);
        if emit == "update" {
            assert_eq!(
                bridged,
                ["a[20000,22000]=null@22000", "a[17000,22000]=3@22000"],
                "{emit}"
            );
        } else {
            assert_eq!(
                closed,
                ["a[17000,22000]=3@22000", "x[26000,26000]=1@26000"],
                "{emit}"
            );
        }
    }
}

/// A record reads only the sessions of its key that can touch it, those
/// starting within the step's longest session plus the gap before it: a
/// record 5 s after a session 100 s long merges into it, and so it does in
/// state written before the longest length was kept (found by reading
/// every session once). gap 5 s.
#[test]
fn a_record_after_a_long_session_merges_into_it_with_or_without_its_kept_length() {
    use crate::backend::StateRead;
    use crate::pipeline::keys;

    let window = "window = { type = \"session\", gap = \"5s\" }";
    let cfg = step(&format!("{COUNT}\n{window}\nemit = \"update\""));
    let mut longest_key = keys::step_time("p", "count", 0);
    longest_key.push(b'L');
    // Kept from the first session on, even one of a single record (else
    // every record would read all sessions to find it).
    let mut h = Harness::new(cfg.clone(), counter());
    h.batch(&stream(&[rec("z", "x", 1)])).unwrap();
    assert_eq!(
        h.backend.get(&longest_key).unwrap(),
        Some(0i64.to_be_bytes().to_vec())
    );
    for forget in [false, true] {
        let mut h = Harness::new(cfg.clone(), counter());
        let records: Vec<_> = (0..=25).map(|i| rec("a", "x", i * 4_000)).collect();
        h.batch(&stream(&records)).unwrap();
        h.batch(&stream(&[rec("b", "x", 100_000)])).unwrap();
        assert_eq!(
            h.backend.get(&longest_key).unwrap(),
            Some(100_000i64.to_be_bytes().to_vec())
        );
        if forget {
            h.delete_state(longest_key.clone());
            h.batch(&[]).unwrap();
        }
        let out = h.batch(&stream(&[rec("a", "x", 105_000)])).unwrap();
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            ["a[0,100000]=null@100000", "a[0,105000]=27@105000"],
            "forget: {forget}"
        );
    }
}
