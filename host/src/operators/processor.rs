//! Processors: a guest with state stores and timers (the Processor API). Its
//! state calls read and write the task's pending changes through
//! [`ProcessorState`], one layer per call, so that a call that traps leaves
//! nothing behind; due timers fire earliest first: event-time timers right
//! after the record that brings the stream time to them (the batch is cut
//! there, as Kafka Streams punctuates after a record; a chunk that set a
//! timer due before its last record runs again, cut there), wall-clock
//! timers after each batch and while no records arrive, when the clock
//! passes them.

use std::any::Any;
use std::sync::Arc;

use anyhow::Context;

use super::map::route;
use super::{Ctx, Item, Operator};
use crate::backend::{StateRead, Txn};
use crate::pipeline::config::Step as StepConfig;
use crate::pipeline::keys;
use crate::record::{Failure, Packed, Record};
use crate::runtime::guest::{fire_timer, process_batch};
use crate::runtime::{Clock, Guest, GuestState, StateError};

/// How many timers one round may fire (a timer that reschedules itself at a
/// time already due would otherwise loop forever).
const MAX_FIRES: usize = 1_000_000;
/// Due timers read at once.
const CHUNK: usize = 1024;

/// A processor step.
pub struct Processor {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
    /// Per clock (event time, wall clock), a time no timer is set before,
    /// once known: scans start there, past the deletions of the timers
    /// that fired (`None`: from the first possible key).
    floor: [Option<i64>; 2],
}

impl Processor {
    /// A processor step running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        Processor {
            cfg,
            guest,
            floor: [None, None],
        }
    }

    fn state(&self, cx: &mut Ctx<'_>) -> Box<dyn GuestState> {
        Box::new(ProcessorState {
            txn: std::mem::take(cx.txn),
            chunk: Txn::default(),
            layer: Txn::default(),
            call_times: Vec::new(),
            chunk_times: Vec::new(),
            lowest: [None, None],
            base: cx.base.clone(),
            pipeline: cx.pipeline.to_string(),
            step: self.cfg.name.clone(),
            partition: cx.partition,
            stores: self.cfg.stores.clone(),
            error: None,
            undeclared: None,
        })
    }

    /// Runs `chunk` through the guest's `process`. Its state changes are
    /// held apart in the returned state, which [`settle`] keeps or drops;
    /// the caller routes the outcomes of a chunk it keeps.
    fn attempt(
        &mut self,
        cx: &mut Ctx<'_>,
        chunk: &[Item],
    ) -> anyhow::Result<(Vec<(usize, crate::runtime::guest::Emitted)>, ProcessorState)> {
        let inputs: Vec<&Packed> = chunk.iter().map(|it| &it.rec).collect();
        let state = self.state(cx);
        let (outcomes, state) = process_batch(self.guest.as_mut(), &inputs, Some(state))?;
        Ok((outcomes, take_state(state)?))
    }

    /// The keys of `clock`'s timers, and where a scan of them starts (see
    /// `floor`).
    fn timer_keys(&self, cx: &Ctx<'_>, clock: u8) -> (Vec<u8>, Vec<u8>) {
        let prefix = keys::timers(cx.pipeline, &self.cfg.name, cx.partition, clock);
        let mut start = prefix.clone();
        if let Some(t) = self.floor[usize::from(clock)] {
            start.extend_from_slice(&keys::ord_i64(t));
        }
        (prefix, start)
    }

    /// The time of the earliest event-time timer set, if any.
    fn next_event_timer(&self, cx: &Ctx<'_>) -> anyhow::Result<Option<i64>> {
        let (prefix, start) = self.timer_keys(cx, 0);
        let first = cx.range(&start, &keys::prefix_end(&prefix), 1)?;
        first
            .first()
            .map(|(k, _)| {
                keys::take_i64(&k[prefix.len()..])
                    .map(|(t, _)| t)
                    .context("a timer key is corrupt")
            })
            .transpose()
    }

    /// Calls `on-timer` for every timer due (event-time ones at
    /// `event_time`), earliest first, and returns the outputs for the flow.
    fn fire_timers(
        &mut self,
        cx: &mut Ctx<'_>,
        seq: u64,
        event_time: i64,
    ) -> anyhow::Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut fired = 0usize;
        for (clock, due) in [(0u8, event_time), (1u8, cx.now_ms)] {
            let (prefix, mut start) = self.timer_keys(cx, clock);
            let mut end = prefix.clone();
            end.extend_from_slice(&keys::ord_i64(due.saturating_add(1)));
            // Walk forward from a cursor; when it finds nothing, look once
            // more from the start for timers a callback set in the past.
            let mut cursor = start.clone();
            loop {
                let chunk = cx.range(&cursor, &end, CHUNK)?;
                let Some((last, _)) = chunk.last() else {
                    let from = self.timer_keys(cx, clock).1;
                    if cursor == start && from == start {
                        break;
                    }
                    start = from;
                    cursor = start.clone();
                    continue;
                };
                cursor = last.clone();
                cursor.push(0);
                for (k, _) in chunk {
                    // An earlier callback may have cancelled or moved it.
                    if cx.txn.pending(&k) == Some(None) {
                        continue;
                    }
                    if fired >= MAX_FIRES {
                        tracing::warn!(step = %self.cfg.name, "{MAX_FIRES} timers fired in one round; the rest fire after the next batch");
                        return Ok(out);
                    }
                    fired += 1;
                    let (time, tag) =
                        keys::take_i64(&k[prefix.len()..]).context("a timer key is corrupt")?;
                    let tag = tag.to_vec();
                    cx.txn.delete(k);
                    cx.txn.delete(keys::timer_index(
                        cx.pipeline,
                        &self.cfg.name,
                        cx.partition,
                        clock,
                        &tag,
                    ));
                    let state = self.state(cx);
                    let (result, state) = fire_timer(self.guest.as_mut(), time, &tag, state)?;
                    restore(cx, state, &mut self.floor)?;
                    match result {
                        Ok(outputs) => {
                            for (to, rec) in outputs {
                                match to {
                                    None => out.push(Item { seq, rec }),
                                    Some(to) => {
                                        let input = rec.clone();
                                        cx.out.named(&self.cfg, &to, rec, &input)
                                    }
                                }
                            }
                        }
                        Err(reason) => cx.out.dead(
                            &self.cfg.name,
                            Record {
                                timestamp: time,
                                key: Some(tag),
                                ..Record::default()
                            },
                            Failure::Trapped(format!("on-timer at {time}: {reason}")),
                        ),
                    }
                }
            }
            // Every timer of this clock up to `due` has fired.
            let f = &mut self.floor[usize::from(clock)];
            *f = Some(f.map_or(i64::MIN, |f| f).max(due.saturating_add(1)));
        }
        Ok(out)
    }
}

/// The state a call had, back from the guest.
fn take_state(state: Option<Box<dyn GuestState>>) -> anyhow::Result<ProcessorState> {
    let Some(state) = state else {
        anyhow::bail!("a processor call lost its state");
    };
    let any: Box<dyn Any> = state;
    let st = any
        .downcast::<ProcessorState>()
        .map_err(|_| anyhow::anyhow!("a processor call came back with another kind of state"))?;
    Ok(*st)
}

/// Takes the task's pending changes back from the state a call had, and
/// fails the batch if the storage failed during the call.
fn restore(
    cx: &mut Ctx<'_>,
    state: Option<Box<dyn GuestState>>,
    floor: &mut [Option<i64>; 2],
) -> anyhow::Result<()> {
    settle(cx, take_state(state)?, true, floor)
}

/// Gives the task its pending changes back from the state of a call (with
/// the call's own changes when `keep`, else without them), lowers the
/// floors below the timers it set, and fails the batch if the storage
/// failed during the call.
fn settle(
    cx: &mut Ctx<'_>,
    st: ProcessorState,
    keep: bool,
    floor: &mut [Option<i64>; 2],
) -> anyhow::Result<()> {
    for (f, low) in floor.iter_mut().zip(st.lowest) {
        if let (Some(f), Some(low)) = (f.as_mut(), low) {
            *f = (*f).min(low);
        }
    }
    let mut txn = st.txn;
    if keep {
        txn.absorb(st.chunk);
    }
    *cx.txn = txn;
    if let Some(store) = st.undeclared {
        cx.out.config.push((
            st.step.clone(),
            format!(
                "step {} uses the state store `{store}`, which the pipeline does not declare; add `stores = [\"{store}\"]` to the step",
                st.step
            ),
        ));
    }
    match st.error {
        Some(e) => Err(e.context(format!("step {}: reading state", st.step))),
        None => Ok(()),
    }
}

impl Operator for Processor {
    fn config(&self) -> &StepConfig {
        &self.cfg
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        _side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        if flow.is_empty() {
            let time = *cx.stream_time;
            return self.fire_timers(cx, 0, time);
        }
        // As Kafka Streams punctuates after the record that moves the stream
        // time past a punctuation, due event-time timers fire right after
        // the record that makes them due: the batch is cut there, so that
        // the outputs do not depend on the batch size. The time counts from
        // before the batch: an earlier step of the segment may have moved
        // the task's stream time past the whole batch already.
        //
        // A timer set within a chunk and due before its last record is
        // found after the call: the chunk's changes and outputs are dropped
        // and it runs again up to the first record whose time reaches the
        // timer; the times of the timers it set mark where later chunks
        // end. A timer set at a time its chunk's first record had already
        // reached could have been set by any of its records: those run one
        // at a time.
        let times: Vec<i64> = flow
            .iter()
            .scan(cx.batch_time, |t, it| {
                *t = (*t).max(it.rec.timestamp());
                Some(*t)
            })
            .collect();
        // The first record at or after `from` whose time reaches `t`.
        let reach = |from: usize, t: i64| (from..times.len()).find(|&j| times[j] >= t);
        let last = flow.len() - 1;
        let mut next = Vec::new();
        let mut due = self.next_event_timer(cx)?;
        let mut marks: Vec<i64> = Vec::new();
        let mut singles_to: Option<usize> = None;
        let mut start = 0;
        while start <= last {
            let end = if singles_to.is_some_and(|s| start <= s) {
                start
            } else {
                due.iter()
                    .chain(marks.first())
                    .filter_map(|&t| reach(start, t))
                    .min()
                    .unwrap_or(last)
            };
            let chunk = &flow[start..=end];
            let (outcomes, st) = self.attempt(cx, chunk)?;
            if end > start
                && let Some(t) = st.chunk_times.iter().min().copied()
                && t <= times[end - 1]
            {
                if t <= times[start] {
                    singles_to = Some(end);
                } else {
                    marks = st.chunk_times.clone();
                    marks.retain(|&m| m > times[start]);
                    marks.sort_unstable();
                }
                settle(cx, st, false, &mut self.floor)?;
                continue;
            }
            settle(cx, st, true, &mut self.floor)?;
            for it in chunk {
                cx.observe(it.rec.timestamp());
            }
            next.extend(route(&self.cfg, cx.out, chunk, outcomes));
            let seq = chunk.iter().map(|it| it.seq).max().unwrap_or(0);
            // After the last record, every timer the task's stream time
            // reached (earlier steps may have seen later times).
            let fire_at = if end == last {
                *cx.stream_time
            } else {
                times[end]
            };
            next.extend(self.fire_timers(cx, seq, fire_at)?);
            marks.retain(|&m| m > times[end]);
            start = end + 1;
            if start <= last {
                due = self.next_event_timer(cx)?;
            }
        }
        Ok(next)
    }

    fn discard(&mut self) {
        // What the dropped batches fired may come back.
        self.floor = [None, None];
    }

    fn tick(&mut self, cx: &mut Ctx<'_>, seq: u64) -> anyhow::Result<Vec<Item>> {
        let time = *cx.stream_time;
        self.fire_timers(cx, seq, time)
    }

    fn ticks(&self) -> bool {
        true
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}

/// Pending changes over committed state, as one reader.
struct Over<'a> {
    txn: &'a Txn,
    base: &'a dyn StateRead,
}

impl StateRead for Over<'_> {
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        self.txn.get(self.base, key)
    }
    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.txn.range(self.base, start, end, limit)
    }
}

/// A processor's state during one call: the call's own changes (`layer`)
/// over the task's pending changes (`txn`) over committed state (`base`).
pub struct ProcessorState {
    txn: Txn,
    /// The changes of the calls kept since the state was made (one chunk
    /// of records), over `txn`.
    chunk: Txn,
    layer: Txn,
    /// The event-time timers the call sets, and those of the calls kept.
    call_times: Vec<i64>,
    chunk_times: Vec<i64>,
    /// Per clock, the earliest time any call set a timer at.
    lowest: [Option<i64>; 2],
    base: Arc<dyn StateRead>,
    pipeline: String,
    step: String,
    partition: u32,
    /// The stores the step declares (empty: any name, as in `weir test`).
    stores: Vec<String>,
    /// A storage error met during the call: it fails the batch.
    error: Option<anyhow::Error>,
    /// A store the call used that the step does not declare.
    undeclared: Option<String>,
}

impl ProcessorState {
    /// State for a processor outside a pipeline (`weir test`): `txn` holds
    /// everything, over no committed state.
    pub fn detached(step: &str, txn: Txn) -> Self {
        ProcessorState {
            txn,
            chunk: Txn::default(),
            layer: Txn::default(),
            call_times: Vec::new(),
            chunk_times: Vec::new(),
            lowest: [None, None],
            base: Arc::new(crate::backend::txn::NoState),
            pipeline: "test".into(),
            step: step.to_string(),
            partition: 0,
            stores: Vec::new(),
            error: None,
            undeclared: None,
        }
    }

    /// The pending changes it holds.
    pub fn into_txn(mut self) -> Txn {
        self.txn.absorb(self.chunk);
        self.txn
    }

    fn check(&mut self, store: &str) -> Result<(), StateError> {
        if self.stores.is_empty() || self.stores.iter().any(|s| s == store) {
            Ok(())
        } else {
            self.undeclared.get_or_insert_with(|| store.to_string());
            Err(StateError::NoSuchStore(store.to_string()))
        }
    }

    fn key(&self, store: &str, key: &[u8]) -> Vec<u8> {
        keys::store(&self.pipeline, &self.step, store, self.partition, key)
    }

    fn failed(&mut self, e: anyhow::Error) -> StateError {
        let message = format!("{e:#}");
        self.error.get_or_insert(e);
        StateError::Io(message)
    }

    fn read(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let below = Over {
            txn: &self.txn,
            base: self.base.as_ref(),
        };
        let over = Over {
            txn: &self.chunk,
            base: &below,
        };
        match self.layer.get(&over, key) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed(e)),
        }
    }

    fn unset_timer(&mut self, c: u8, tag: &[u8]) {
        let index = keys::timer_index(&self.pipeline, &self.step, self.partition, c, tag);
        if let Ok(Some(old)) = self.read(&index)
            && old.len() == 8
        {
            let old_time = keys::from_ord_i64(&old);
            let k = keys::timer(&self.pipeline, &self.step, self.partition, c, old_time, tag);
            self.layer.delete(k);
            self.layer.delete(index);
        }
    }
}

fn clock_byte(c: Clock) -> u8 {
    match c {
        Clock::EventTime => 0,
        Clock::WallClock => 1,
    }
}

impl GuestState for ProcessorState {
    fn get(&mut self, store: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.check(store)?;
        let k = self.key(store, key);
        self.read(&k)
    }

    fn put(&mut self, store: &str, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        self.check(store)?;
        let k = self.key(store, &key);
        self.layer.put(k, value);
        Ok(())
    }

    fn delete(&mut self, store: &str, key: Vec<u8>) -> Result<(), StateError> {
        self.check(store)?;
        let k = self.key(store, &key);
        self.layer.delete(k);
        Ok(())
    }

    fn range(
        &mut self,
        store: &str,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        self.check(store)?;
        let prefix = keys::store_prefix(&self.pipeline, &self.step, store, self.partition);
        let from = self.key(store, start.unwrap_or_default());
        let to = match end {
            Some(e) => self.key(store, e),
            None => keys::prefix_end(&prefix),
        };
        let below = Over {
            txn: &self.txn,
            base: self.base.as_ref(),
        };
        let over = Over {
            txn: &self.chunk,
            base: &below,
        };
        match self.layer.range(&over, &from, &to, limit) {
            Ok(entries) => Ok(entries
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_vec(), v))
                .collect()),
            Err(e) => Err(self.failed(e)),
        }
    }

    fn schedule(&mut self, clock: Clock, time: i64, tag: Vec<u8>) {
        if clock == Clock::EventTime {
            self.call_times.push(time);
        }
        let c = clock_byte(clock);
        let low = &mut self.lowest[usize::from(c)];
        *low = Some(low.map_or(time, |l| l.min(time)));
        self.unset_timer(c, &tag);
        let k = keys::timer(&self.pipeline, &self.step, self.partition, c, time, &tag);
        self.layer.put(k, Vec::new());
        let index = keys::timer_index(&self.pipeline, &self.step, self.partition, c, &tag);
        self.layer.put(index, keys::ord_i64(time).to_vec());
    }

    fn cancel(&mut self, clock: Clock, tag: Vec<u8>) {
        self.unset_timer(clock_byte(clock), &tag);
    }

    fn keep(&mut self) {
        let layer = std::mem::take(&mut self.layer);
        self.chunk.absorb(layer);
        self.chunk_times.append(&mut self.call_times);
    }

    fn rollback(&mut self) {
        self.layer.clear();
        self.call_times.clear();
    }
}
