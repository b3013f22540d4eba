//! Processors: state stores, event-time and wall-clock timers, failures.

#![allow(clippy::unwrap_used)]

use super::testing::*;
use super::tests::stream;

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
/// time reaches `t`), right after the record that brings the stream time to
/// it, whatever the batch size: one set and due within the same batch too
/// (the chunk that ran past it runs again, cut there), and one set at a time
/// already reached fires right after the record that set it. Its callback
/// sees the state as that record left it.
#[test]
fn an_event_time_timer_fires_right_after_the_record_that_makes_it_due_at_any_batch_size() {
    let input = stream(&[
        rec("n-a", "x", 0),   // timer at 10
        rec("b", "x", 10),    // timer n-a@10 due; b's at 20
        rec("n-a", "x", 11),  // n-a's timer again, at 21
        rec("c", "past", 12), // a timer at 7, due at once
        rec("d", "x", 21),    // b@20 and n-a@21 due
        rec("e", "x", 22),
    ]);
    let want = [
        "n-a=1@0",
        "b=1@10",
        "n-a=timer:n-a=1@10",
        "n-a=2@11",
        "c=1@12",
        "c=timer:c@7",
        "d=1@21",
        "b=timer:b@20",
        "n-a=timer:n-a=2@21",
        "e=1@22",
    ];
    for size in [1, 2, 3, 4, 7, 500] {
        let mut h = Harness::new(step(PROCESSOR), counting_processor());
        let out = h.feed(&input, size);
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            want,
            "batch {size}"
        );
        // The state is the same too: each count once, whatever ran twice.
        assert_eq!(
            h.feed(&stream(&[rec("n-a", "x", 30)]), 1)
                .iter()
                .map(show)
                .collect::<Vec<_>>(),
            ["n-a=3@30"],
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

/// In a segment where an earlier step (another processor, an aggregate)
/// has observed the whole batch before the processor runs, the task's
/// stream time is past the batch already: a timer from an earlier batch
/// still fires right after the record that brings the time to it, not
/// after the batch's first record (and b's timer, set in the batch, not
/// before c and d).
#[test]
fn a_timer_fires_after_its_record_when_an_earlier_step_moved_the_stream_time_past_the_batch() {
    for size in [1, 2, 7] {
        let mut h = Harness::new(step(PROCESSOR), counting_processor());
        assert_eq!(
            h.feed(&stream(&[rec("a", "x", 0)]), 1)
                .iter()
                .map(show)
                .collect::<Vec<_>>(),
            ["a=1@0"]
        );
        let input = stream(&[
            rec("b", "x", 5),
            rec("c", "x", 10),
            rec("d", "x", 11),
            rec("e", "x", 30),
        ]);
        let mut out = Vec::new();
        for chunk in input.chunks(size) {
            h.ahead = chunk.iter().map(|(_, r)| r.timestamp).max();
            out.extend(h.batch(chunk).unwrap());
        }
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

/// A chunk that runs again, cut at a timer it set, leaves nothing of its
/// first run behind: a record that traps in it is dead-lettered once, a
/// wall-clock timer set in it is set once (it fires once), and the counts
/// are those of one run, at every batch size.
#[test]
fn a_chunk_run_again_leaves_no_dead_letter_or_timer_of_its_first_run() {
    let input = stream(&[
        rec("n-a", "x", 0), // timer at 10
        rec("t", "trap", 4),
        rec("w", "wall", 5), // wall-clock timer at 105
        rec("b", "x", 10),   // n-a@10 due
        rec("n-a", "x", 12), // timer at 22
        rec("c", "x", 30),   // b@20 and n-a@22 due
    ]);
    let want = [
        "n-a=1@0",
        "w=1@5",
        "b=1@10",
        "n-a=timer:n-a=1@10",
        "n-a=2@12",
        "c=1@30",
        "b=timer:b@20",
        "n-a=timer:n-a=2@22",
    ];
    for size in [1, 2, 3, 4, 6, 500] {
        let mut h = Harness::new(step(PROCESSOR), counting_processor());
        let out = h.feed(&input, size);
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            want,
            "batch {size}"
        );
        let dead: Vec<(&str, &str)> = h
            .dead
            .iter()
            .map(|(step, reason, _)| (step.as_str(), reason.as_str()))
            .collect();
        assert_eq!(dead, [("proc", "trapped: boom")], "batch {size}");
        h.now_ms = 105;
        assert_eq!(
            h.tick().unwrap().iter().map(show).collect::<Vec<_>>(),
            ["w=timer:w@105"],
            "batch {size}"
        );
        assert!(h.tick().unwrap().is_empty(), "batch {size}");
        // The trapped record changed nothing; each count is of one run
        // (c's timer, at 40, fires after the first record at 40).
        assert_eq!(
            h.feed(&stream(&[rec("t", "x", 40), rec("n-a", "x", 40)]), 2)
                .iter()
                .map(show)
                .collect::<Vec<_>>(),
            ["t=1@40", "c=timer:c@40", "n-a=3@40"],
            "batch {size}"
        );
    }
}

/// A processor that sets an event-time timer at ts + 10 for its key, or
/// cancels the key's timer for the value "cancel"; a timer emits
/// "timer:<key>".
fn cancelling_processor() -> Box<dyn crate::runtime::Guest> {
    use crate::codec::Reader;
    use crate::record::Record;
    use crate::runtime::{Call, Clock, GuestState, NativeGuest, World};
    Box::new(NativeGuest::new(
        "proc",
        World::Processor,
        |call, state: Option<&mut dyn GuestState>| {
            let state = state.ok_or("no state")?;
            let mut res = Results::new();
            match call {
                Call::Export("process", input) => {
                    let mut r = Reader::new(input);
                    let n = r.u32("n").unwrap();
                    for i in 0..n {
                        let x = r.record().unwrap();
                        let key = x.key.clone().unwrap_or_default();
                        if x.value.as_deref() == Some(b"cancel") {
                            state.cancel(Clock::EventTime, key);
                        } else {
                            state.schedule(Clock::EventTime, x.timestamp + 10, key);
                        }
                        res.output(i, None, &x);
                    }
                }
                Call::Timer(time, tag) => {
                    let o = Record {
                        timestamp: time,
                        key: Some(tag.to_vec()),
                        value: Some(format!("timer:{}", String::from_utf8_lossy(tag)).into_bytes()),
                        ..Record::default()
                    };
                    res.output(0, None, &o);
                }
                other => return Err(format!("unexpected call {other:?}")),
            }
            Ok(res.finish())
        },
    ))
}

/// A timer cancelled before it is due never fires, also when the chunk
/// that cancels it runs again (cut at a timer another record set), and a
/// timer cancelled in a first run that is dropped still fires when the run
/// kept does not cancel it before it is due.
#[test]
fn a_cancelled_timer_does_not_fire_whatever_ran_twice() {
    let input = stream(&[
        rec("a", "x", 0),       // a@10
        rec("b", "x", 1),       // b@11
        rec("a", "cancel", 5),  // a's timer gone
        rec("c", "x", 11),      // b@11 due; c@21
        rec("b", "cancel", 12), // b fired already: nothing to cancel
        rec("d", "x", 21),      // c@21 due
        rec("c", "cancel", 22), // c fired already
    ]);
    let want = [
        "a=x@0",
        "b=x@1",
        "a=cancel@5",
        "c=x@11",
        "b=timer:b@11",
        "b=cancel@12",
        "d=x@21",
        "c=timer:c@21",
        "c=cancel@22",
    ];
    for size in [1, 2, 3, 5, 7, 500] {
        let mut h = Harness::new(step(PROCESSOR), cancelling_processor());
        let out = h.feed(&input, size);
        assert_eq!(
            out.iter().map(show).collect::<Vec<_>>(),
            want,
            "batch {size}"
        );
        // Only d's timer is left.
        assert_eq!(
            h.feed(&stream(&[rec("e", "cancel", 100)]), 1)
                .iter()
                .map(show)
                .collect::<Vec<_>>(),
            ["e=cancel@100", "d=timer:d@31"],
            "batch {size}"
        );
    }
}
