//! Sliding windows, as Kafka Streams' `SlidingWindows` keeps them: windows
//! `[start, start + size]` (both ends included) that begin or end at a
//! record, one for every distinct set of a key's records no further than
//! `size` apart. A record at `t` updates the windows of its key it falls in,
//! creates its own left window `[t - size, t]` (from the aggregate of the
//! window that ended last before it, when that window's records reach into
//! it), the right window `[p + 1, p + 1 + size]` of the record `p` before
//! it, and its own right window `[t + 1, t + 1 + size]` when later records
//! fill it (a copy of the aggregate they are in). Records before `size`
//! share the window `[0, size]`. The windows are found and made exactly as
//! Kafka Streams' sliding window aggregation does, in its order, so that
//! every update and its order are Kafka Streams' (tests/parity/sliding).
//!
//! A record is late, and dropped, when its right window would have closed:
//! `t + 1 + size` at or before the stream time minus grace; a window that
//! has closed (its end before the stream time minus grace) takes no record.
//!
//! Without the state cache a window is seen by later records, and kept, for
//! its retention (2 × size + grace by default) behind the newest window
//! start written, as Kafka Streams' window store keeps it. With the cache
//! Kafka Streams still finds expired windows in its record cache, so Weir
//! keeps a window until no record could reach it (3 × size + grace behind
//! the stream time).

use anyhow::Context;

use super::accumulate::{
    Presentable, call_add, carried, close_due, forget_expired, own_time, pack_headers, present,
};
use super::{Ctx, Item, Operator};
use crate::pipeline::config::{Emit, Step as StepConfig, Window};
use crate::pipeline::keys;
use crate::record::{Failure, Packed};
use crate::runtime::Guest;

/// A sliding-windowed aggregate step.
pub struct Sliding {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
    size: i64,
    /// Emit on update once per commit (not at every update).
    defer: bool,
    /// The windows updated since the last commit, and where each is in it.
    held: Vec<Held>,
    index: rustc_hash::FxHashMap<(Vec<u8>, i64), usize>,
    /// What `held` holds, in bytes.
    held_bytes: usize,
    /// Counts the updates held, to order them by their last.
    touches: u64,
}

/// A window updated since the last commit, to emit at the next one.
struct Held {
    key: Vec<u8>,
    start: i64,
    seq: u64,
    /// When it was last updated (emitted in that order).
    order: u64,
    /// The record that last updated it.
    last: Packed,
}

impl Held {
    fn bytes(&self) -> usize {
        super::held_bytes::<Held, (Vec<u8>, i64)>(&self.key, &[self.last.bytes().len()])
    }
}

/// A window of the record's key as the record finds it.
struct Found {
    start: i64,
    /// The largest timestamp of its records.
    ts: i64,
    acc: Vec<u8>,
}

/// What a record does to one window, in Kafka Streams' order.
struct Op {
    start: i64,
    /// The aggregate it starts from: a window found (`None`: the
    /// initial aggregate).
    base: Option<usize>,
    /// Whether the record is added (else the base is copied as it is: the
    /// record's own right window).
    add: bool,
}

impl Sliding {
    /// A sliding-window aggregate running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        let size = match cfg.window {
            Some(Window::Sliding { size }) => size,
            _ => 1,
        };
        Sliding {
            cfg,
            guest,
            size,
            defer: false,
            held: Vec::new(),
            index: rustc_hash::FxHashMap::default(),
            held_bytes: 0,
            touches: 0,
        }
    }

    /// When a window starting at `start` leaves the state, in the time
    /// [`Sliding::forget_time`] gives: without the cache at its start +
    /// retention against the newest window start written; with it, once no
    /// record in time could reach it (a record at `t` looks back to
    /// `t - 2 × size`, and is in time while `t + size + 1` is after the
    /// stream time minus grace).
    fn purge_at(&self, start: i64) -> i64 {
        purge_at(self.defer, self.size, &self.cfg, start)
    }

    fn forget_time(&self, now: i64, observed: i64) -> i64 {
        if self.defer { now } else { observed }
    }

    fn hold(&mut self, key: &[u8], start: i64, it: &Item) {
        self.touches += 1;
        let order = self.touches;
        match self.index.entry((key.to_vec(), start)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                if let Some(h) = self.held.get_mut(*e.get()) {
                    self.held_bytes -= h.bytes();
                    h.seq = it.seq;
                    h.order = order;
                    h.last = it.rec.clone();
                    self.held_bytes += h.bytes();
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(self.held.len());
                let h = Held {
                    key: key.to_vec(),
                    start,
                    seq: it.seq,
                    order,
                    last: it.rec.clone(),
                };
                self.held_bytes += h.bytes();
                self.held.push(h);
            }
        }
    }

    /// The windows of `key` starting in `[from, to]` that a record sees, by
    /// start: without the cache, those within retention of `observed`.
    fn found(
        &self,
        cx: &Ctx<'_>,
        key: &[u8],
        from: i64,
        to: i64,
        observed: i64,
    ) -> anyhow::Result<Vec<Found>> {
        let name = &self.cfg.name;
        let mut prefix = keys::step(cx.pipeline, b'a', name, cx.partition);
        keys::push_key(&mut prefix, key);
        let lo = keys::agg(cx.pipeline, name, cx.partition, key, from);
        let hi = keys::agg(cx.pipeline, name, cx.partition, key, to.saturating_add(1));
        let oldest = observed.saturating_sub(self.cfg.retention);
        let mut found = Vec::new();
        for (k, v) in cx.range(&lo, &hi, usize::MAX)? {
            let (start, _) =
                keys::take_i64(&k[prefix.len()..]).context("a sliding window key is corrupt")?;
            if !self.defer && observed > i64::MIN && start <= oldest {
                continue;
            }
            let (_, ts, acc) = keys::agg_value_ts(&v).context("a stored accumulator is corrupt")?;
            found.push(Found {
                start,
                ts,
                acc: acc.to_vec(),
            });
        }
        Ok(found)
    }

    /// What a record at `t` does to its key's windows (`found`, by start),
    /// in Kafka Streams' order.
    fn plan(&self, t: i64, found: &[Found]) -> Vec<Op> {
        let d = self.size;
        let mut ops = Vec::new();
        let mut starts = rustc_hash::FxHashSet::default();
        let mut right_agg: Option<usize> = None;
        let mut right_made = false;
        let mut prev: Option<i64> = None;
        if t < d {
            // Early records share [0, size].
            let mut combined = None;
            for (i, w) in found.iter().enumerate() {
                starts.insert(w.start);
                if w.start == 0 {
                    combined = Some(i);
                    if w.ts < t {
                        prev = Some(w.ts);
                    }
                } else if w.start <= t {
                    right_agg = Some(i);
                    ops.push(update(w.start, i));
                } else if w.start == t + 1 {
                    right_made = true;
                }
            }
            if right_agg.is_none() && combined.is_some_and(|c| found[c].ts > t) {
                right_agg = combined;
            }
            if let Some(r) = right_agg.filter(|r| !right_made && found[*r].ts > t) {
                ops.push(Op {
                    start: t + 1,
                    base: Some(r),
                    add: false,
                });
            }
            if let Some(p) = prev.filter(|p| !starts.contains(&(p + 1))) {
                ops.push(fresh(p + 1));
            }
            ops.push(match combined {
                Some(c) => update(0, c),
                None => fresh(0),
            });
            return ops;
        }
        let mut left_agg: Option<usize> = None;
        let mut left_made = false;
        for (i, w) in found.iter().enumerate().rev() {
            starts.insert(w.start);
            let end = w.start + d;
            if w.start == t + 1 {
                right_made = true;
            } else if end > t {
                right_agg = right_agg.or(Some(i));
                ops.push(update(w.start, i));
            } else if end == t {
                left_made = true;
                ops.push(update(w.start, i));
                if w.ts < t {
                    prev = Some(w.ts);
                } else {
                    return ops;
                }
            } else {
                left_agg = Some(i);
                prev = Some(w.ts);
                break;
            }
        }
        if let Some(p) = prev.filter(|p| !starts.contains(&(p + 1)) && p + 1 + d >= t) {
            ops.push(fresh(p + 1));
        }
        if !left_made {
            let base = left_agg.filter(|_| prev.is_some_and(|p| t - d <= p));
            ops.push(Op {
                start: t - d,
                base,
                add: true,
            });
        }
        if let Some(r) = right_agg.filter(|r| !right_made && found[*r].ts > t) {
            ops.push(Op {
                start: t + 1,
                base: Some(r),
                add: false,
            });
        }
        ops
    }

    /// Adds one record to its key's windows. `now` is the step's stream
    /// time with it; `observed` the newest window start written (moved on).
    fn add(
        &mut self,
        cx: &mut Ctx<'_>,
        key: &[u8],
        it: &Item,
        now: i64,
        observed: &mut i64,
    ) -> anyhow::Result<Vec<Item>> {
        let (d, name) = (self.size, self.cfg.name.clone());
        let t = it.rec.timestamp();
        let close_time = now.saturating_sub(self.cfg.grace);
        if t.saturating_add(1).saturating_add(d) <= close_time {
            cx.out.late += 1;
            tracing::debug!(step = %name, ts = t, stream_time = now, "late record dropped");
            return Ok(Vec::new());
        }
        if t < 0 {
            cx.out.dead_packed(
                &name,
                &it.rec,
                Failure::Rejected(format!(
                    "step {name}: sliding windows start at time 0, and this record's timestamp is {t}"
                )),
            );
            return Ok(Vec::new());
        }
        let from = if t < d { 0 } else { t - 2 * d };
        let found = self.found(cx, key, from.max(0), t + 1, *observed)?;
        // A window whose end is before the close time takes no record (a
        // copy is made whatever its end, as Kafka Streams makes it).
        let ops: Vec<Op> = self
            .plan(t, &found)
            .into_iter()
            .filter(|op| !op.add || op.start + d >= close_time)
            .collect();
        let recs: [&Packed; 1] = [&it.rec];
        let member = [0usize];
        let groups: Vec<(Option<&[u8]>, &[usize])> = ops
            .iter()
            .filter(|op| op.add)
            .map(|op| {
                let base = op.base.and_then(|i| found.get(i)).map(|f| f.acc.as_slice());
                (base, &member[..])
            })
            .collect();
        let mut accs = if groups.is_empty() {
            Vec::new().into_iter()
        } else {
            match call_add(self.guest.as_mut(), &recs, &groups)? {
                Ok((accs, rejected)) => {
                    if let Some((_, m)) = rejected.into_iter().next() {
                        cx.out.dead_packed(&name, &it.rec, Failure::Rejected(m));
                        return Ok(Vec::new());
                    }
                    accs.into_iter()
                }
                Err(trap) => {
                    cx.out.dead_packed(&name, &it.rec, Failure::Trapped(trap));
                    return Ok(Vec::new());
                }
            }
        };
        let close = self.cfg.emit == Emit::Close;
        let mut items = Vec::new();
        for op in ops {
            let base = op.base.and_then(|i| found.get(i));
            let (acc, ts) = if op.add {
                let acc = accs.next().context("the guest's add missed a window")?;
                (acc, base.map_or(t, |b| b.ts.max(t)))
            } else {
                let b = base.context("a sliding window copied from nothing")?;
                (b.acc.clone(), b.ts)
            };
            let end = op.start + d;
            let k = keys::agg(cx.pipeline, &name, cx.partition, key, op.start);
            cx.txn.put(k, keys::agg_entry(end, ts, &acc));
            *observed = (*observed).max(op.start);
            if close {
                let ck = keys::agg_close(cx.pipeline, &name, cx.partition, end, key, op.start);
                cx.txn.put(ck, pack_headers(it.rec.headers()));
                continue;
            }
            let at = self.purge_at(op.start);
            cx.txn.put(
                keys::agg_purge(cx.pipeline, &name, cx.partition, at, key, op.start),
                end.to_be_bytes().to_vec(),
            );
            if self.defer {
                self.hold(key, op.start, it);
            } else {
                items.push(Presentable {
                    key: key.to_vec(),
                    start: op.start,
                    end,
                    acc,
                    seq: it.seq,
                    ts,
                    input: Some(it.rec.clone()),
                    headers: carried(&self.cfg, Some(&it.rec)),
                });
            }
        }
        present(self.guest.as_mut(), &self.cfg, cx, items)
    }
}

/// See [`Sliding::purge_at`].
fn purge_at(cached: bool, size: i64, cfg: &StepConfig, start: i64) -> i64 {
    if cached {
        start
            .saturating_add(size.saturating_mul(3))
            .saturating_add(cfg.grace)
            .saturating_add(1)
    } else {
        start.saturating_add(cfg.retention)
    }
}

/// An existing window the record is added to.
fn update(start: i64, i: usize) -> Op {
    Op {
        start,
        base: Some(i),
        add: true,
    }
}

/// A new window of the record alone.
fn fresh(start: i64) -> Op {
    Op {
        start,
        base: None,
        add: true,
    }
}

/// The step's stream time and the newest window start it wrote, kept
/// together (the first as every windowed aggregate keeps it).
fn times(cx: &Ctx<'_>, cfg: &StepConfig) -> anyhow::Result<(i64, i64)> {
    let now = own_time(cx, cfg)?;
    let k = keys::step_time(cx.pipeline, &cfg.name, cx.partition);
    let observed = match cx.get(&k)? {
        Some(b) if b.len() >= 16 => keys::from_ord_i64(&b[8..16]),
        _ => i64::MIN,
    };
    Ok((now, observed))
}

impl Operator for Sliding {
    fn config(&self) -> &StepConfig {
        &self.cfg
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        _side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        let (before, observed_before) = times(cx, &self.cfg)?;
        let (mut now, mut observed) = (before, observed_before);
        let mut out = Vec::new();
        for it in &flow {
            let Some(key) = it.rec.key() else {
                cx.out.dead_packed(
                    &self.cfg.name,
                    &it.rec,
                    Failure::Rejected(format!(
                        "step {}: an aggregate groups by key, and this record has none",
                        self.cfg.name
                    )),
                );
                continue;
            };
            // As Kafka Streams' sliding windows, a record without a value is
            // skipped.
            if it.rec.value().is_none() {
                continue;
            }
            let ts = it.rec.timestamp();
            cx.observe(ts);
            now = now.max(ts);
            out.extend(self.add(cx, key, it, now, &mut observed)?);
            if self.cfg.emit == Emit::Close {
                // Closed after every record, as Kafka Streams' suppression
                // evicts, so that the batch size changes nothing. A closed
                // window stays while later records may still copy it.
                let forget = self.forget_time(now, observed);
                let (cached, size, cfg) = (self.defer, self.size, &self.cfg);
                let purge =
                    |_, start| Some(purge_at(cached, size, cfg, start)).filter(|at| *at > forget);
                let closed = close_due(self.guest.as_mut(), cfg, cx, 0, now, purge)?;
                out.extend(closed);
            }
        }
        if (now, observed) != (before, observed_before) {
            let k = keys::step_time(cx.pipeline, &self.cfg.name, cx.partition);
            let mut v = keys::ord_i64(now).to_vec();
            v.extend_from_slice(&keys::ord_i64(observed));
            cx.txn.put(k, v);
        }
        // With the cache, windows held for the commit leave after it.
        if !(self.defer && self.cfg.emit == Emit::Update) && observed > i64::MIN {
            forget_expired(&self.cfg, cx, self.forget_time(now, observed), None)?;
        }
        Ok(out)
    }

    fn defer_updates(&mut self, on: bool) {
        self.defer = on;
    }

    fn flush(&mut self, cx: &mut Ctx<'_>) -> anyhow::Result<Vec<Item>> {
        self.index.clear();
        self.held_bytes = 0;
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|h| h.order);
        let mut items = Vec::with_capacity(held.len());
        for h in held {
            let k = keys::agg(cx.pipeline, &self.cfg.name, cx.partition, &h.key, h.start);
            let Some(v) = cx.get(&k)? else { continue };
            let (end, ts, acc) =
                keys::agg_value_ts(&v).context("a stored accumulator is corrupt")?;
            items.push(Presentable {
                acc: acc.to_vec(),
                key: h.key,
                start: h.start,
                end,
                seq: h.seq,
                ts,
                headers: carried(&self.cfg, Some(&h.last)),
                input: Some(h.last),
            });
        }
        let out = present(self.guest.as_mut(), &self.cfg, cx, items)?;
        if self.cfg.emit == Emit::Update {
            let (now, observed) = times(cx, &self.cfg)?;
            if observed > i64::MIN {
                forget_expired(&self.cfg, cx, self.forget_time(now, observed), None)?;
            }
        }
        Ok(out)
    }

    fn discard(&mut self) {
        self.held.clear();
        self.index.clear();
        self.held_bytes = 0;
    }

    fn deferred_bytes(&self) -> usize {
        self.held_bytes
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}
