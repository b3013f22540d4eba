//! Aggregates over tumbling and hopping windows, or none (a global
//! aggregate per key): the host assigns records to windows, keeps the
//! accumulators in state and calls the guest to add records and present
//! results. A record whose window has closed (end + grace reached by the
//! stream time) is dropped as late; with `emit = "update"` each changed
//! window is emitted once per batch, with `emit = "close"` once when it closes.
//! With a state cache ([`Operator::defer_updates`]) an updated window is
//! emitted once per commit instead, with its latest value, when the task
//! commits.

use std::collections::hash_map::Entry;

use anyhow::Context;

use super::accumulate::{
    Presentable, call_add, carried, close_due, forget_expired, own_time, pack_headers, present,
    set_own_time,
};
use super::{Ctx, Item, Operator};
use crate::pipeline::config::{Emit, Step as StepConfig, Window};
use crate::pipeline::keys;
use crate::record::{Failure, Packed};
use crate::runtime::Guest;

/// A windowed (or global) aggregate step.
pub struct Aggregate {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
    /// Emit on update once per commit (not once per batch).
    defer: bool,
    /// The windows updated since the last commit, in the order of their
    /// first update (emitted in the order of their last), and where each
    /// is in it.
    updated: Vec<Updated>,
    index: rustc_hash::FxHashMap<(Vec<u8>, i64), usize>,
    /// What `updated` holds, in bytes.
    updated_bytes: usize,
    /// Counts the updates held, to order them by their last.
    touches: u64,
}

/// A window updated since the last commit, to emit at the next one.
struct Updated {
    key: Vec<u8>,
    start: i64,
    end: i64,
    /// The seq and the largest timestamp of its records so far.
    seq: u64,
    ts: i64,
    /// Its last record (dead-lettered if presenting the window fails).
    last: Packed,
    /// Its accumulator as last stored, when known (else read at commit).
    acc: Option<Vec<u8>>,
    /// When it was last updated (it is emitted in that order).
    order: u64,
}

impl Updated {
    /// The memory it takes while held (see [`super::held_bytes`]).
    fn bytes(&self) -> usize {
        let acc = self.acc.as_ref().map_or(0, Vec::len);
        super::held_bytes::<Updated, (Vec<u8>, i64)>(&self.key, &[self.last.bytes().len(), acc])
    }
}

/// A (key, window) a batch touches: its end, member record indexes, and the
/// seq, timestamp and index of its last record.
/// What [`Aggregate::add`] did: the groups' new accumulators (when the call
/// went through and they were wanted, one per updated group) and, per
/// group, whether it took any of its records.
type Took = (Option<Vec<Vec<u8>>>, Vec<bool>);

struct Group {
    key: Vec<u8>,
    start: i64,
    end: i64,
    members: Vec<usize>,
    seq: u64,
    ts: i64,
    last: usize,
}

/// The windows a record at `ts` falls in: `[start, end)`, by start. As Kafka
/// Streams' `TimeWindows`, no hopping window starts before 0.
pub fn windows_of(w: Option<Window>, ts: i64) -> impl Iterator<Item = (i64, i64)> {
    // (first start, advance, how many, size)
    let (first, advance, n, size) = match w {
        None | Some(Window::Session { .. } | Window::Sliding { .. }) => (0, 1, 1, 0),
        Some(Window::Tumbling { size }) => (ts.div_euclid(size) * size, size, 1, size),
        Some(Window::Hopping { size, advance }) => {
            let last = ts.div_euclid(advance) * advance;
            let mut first = last;
            let mut n = 0i64;
            let mut start = last;
            while start > ts - size && start >= 0 {
                first = start;
                n += 1;
                start -= advance;
            }
            (first, advance, n, size)
        }
    };
    (0..n).map(move |i| {
        let start = first + i * advance;
        (start, start + size)
    })
}

impl Aggregate {
    /// An aggregate step running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        Aggregate {
            cfg,
            guest,
            defer: false,
            updated: Vec::new(),
            index: rustc_hash::FxHashMap::default(),
            updated_bytes: 0,
            touches: 0,
        }
    }

    /// Notes the windows a batch updated, to emit at the next commit, with
    /// their new accumulators (`accs`, one per group) when known.
    /// `last` gives the record of a group's last index (moved out of the
    /// batch when no other group needs it).
    fn hold(
        &mut self,
        groups: Vec<Group>,
        accs: Option<Vec<Vec<u8>>>,
        mut last_of: impl FnMut(usize) -> Option<Packed>,
    ) {
        let mut accs = accs.map(Vec::into_iter);
        for g in groups {
            let acc = accs.as_mut().and_then(Iterator::next);
            let Some(last) = last_of(g.last) else {
                continue;
            };
            let next = self.updated.len();
            self.touches += 1;
            let order = self.touches;
            match self.index.entry((g.key.clone(), g.start)) {
                Entry::Occupied(e) => {
                    let u = &mut self.updated[*e.get()];
                    self.updated_bytes -= u.bytes();
                    u.seq = g.seq;
                    u.ts = u.ts.max(g.ts);
                    u.last = last;
                    u.acc = acc;
                    u.order = order;
                    self.updated_bytes += u.bytes();
                }
                Entry::Vacant(e) => {
                    e.insert(next);
                    let u = Updated {
                        key: g.key,
                        start: g.start,
                        end: g.end,
                        seq: g.seq,
                        ts: g.ts,
                        last,
                        acc,
                        order,
                    };
                    self.updated_bytes += u.bytes();
                    self.updated.push(u);
                }
            }
        }
    }

    /// The accumulators the groups have now (pending or committed), each
    /// group stamped with its window's stored timestamp.
    fn stored_accs(&self, cx: &Ctx<'_>, groups: &mut [Group]) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut accs = Vec::with_capacity(groups.len());
        for g in groups {
            let k = keys::agg(cx.pipeline, &self.cfg.name, cx.partition, &g.key, g.start);
            let v = cx
                .get(&k)?
                .context("an updated window has no accumulator")?;
            let (_, ts, acc) = keys::agg_value_ts(&v).context("a stored accumulator is corrupt")?;
            g.ts = ts;
            accs.push(acc.to_vec());
        }
        Ok(accs)
    }

    /// Adds records to their groups' accumulators and stores them; when the
    /// call fails, retries record by record so that only the record that
    /// fails becomes a dead letter. Returns the new accumulators, one per
    /// group, when the call did not fail (and they are wanted: `keep`), and
    /// sets each group's timestamp to the largest of its window's records
    /// so far (stored ones included), as Kafka Streams stamps an update.
    fn add(
        &mut self,
        cx: &mut Ctx<'_>,
        recs: &[&Packed],
        groups: &mut [Group],
        keep: bool,
    ) -> anyhow::Result<Took> {
        // The groups' accumulators, read together.
        let state_keys: Vec<Vec<u8>> = groups
            .iter()
            .map(|g| keys::agg(cx.pipeline, &self.cfg.name, cx.partition, &g.key, g.start))
            .collect();
        let read: Vec<&[u8]> = state_keys.iter().map(Vec::as_slice).collect();
        // The stored values (window end, timestamp, accumulator), checked.
        let stored = cx.get_many(&read)?;
        let mut parsed = Vec::with_capacity(stored.len());
        for v in &stored {
            parsed.push(match v {
                Some(v) => Some(keys::agg_value_ts(v).context("a stored accumulator is corrupt")?),
                None => None,
            });
        }
        let call: Vec<(Option<&[u8]>, &[usize])> = parsed
            .iter()
            .zip(groups.iter())
            .map(|(v, g)| (v.map(|(_, _, acc)| acc), g.members.as_slice()))
            .collect();
        let stored_ts: Vec<Option<i64>> = parsed.iter().map(|v| v.map(|(_, ts, _)| ts)).collect();
        let failure = match call_add(self.guest.as_mut(), recs, &call)? {
            Ok((accs, rejected)) => {
                let refused: rustc_hash::FxHashSet<usize> =
                    rejected.iter().map(|(idx, _)| *idx).collect();
                for (idx, m) in rejected {
                    if let Some(r) = recs.get(idx) {
                        cx.out.dead_packed(&self.cfg.name, r, Failure::Rejected(m));
                    }
                }
                let close = self.cfg.emit == Emit::Close && self.cfg.window.is_some();
                // A window emitted on update leaves the state at its start
                // + retention (emitted on close, when it closes).
                let expires = self.cfg.emit == Emit::Update && self.cfg.retention > 0;
                let mut kept = Vec::with_capacity(if keep { groups.len() } else { 0 });
                let mut applied = Vec::with_capacity(groups.len());
                for (((g, acc), k), old_ts) in
                    groups.iter_mut().zip(accs).zip(state_keys).zip(stored_ts)
                {
                    // A rejected record is left out: it neither stamps its
                    // group nor, alone, updates (or emits) it.
                    if !refused.is_empty() {
                        g.members.retain(|m| !refused.contains(m));
                        let Some(&last) = g.members.last() else {
                            applied.push(false);
                            continue;
                        };
                        g.last = last;
                        g.ts = g
                            .members
                            .iter()
                            .filter_map(|m| recs.get(*m))
                            .map(|r| r.timestamp())
                            .max()
                            .unwrap_or(g.ts);
                    }
                    applied.push(true);
                    if let Some(t) = old_ts {
                        g.ts = g.ts.max(t);
                    }
                    cx.txn.put(k, keys::agg_entry(g.end, g.ts, &acc));
                    if expires && old_ts.is_none() {
                        cx.txn.put(
                            keys::agg_purge(
                                cx.pipeline,
                                &self.cfg.name,
                                cx.partition,
                                g.start.saturating_add(self.cfg.retention),
                                &g.key,
                                g.start,
                            ),
                            g.end.to_be_bytes().to_vec(),
                        );
                    }
                    if keep {
                        kept.push(acc);
                    }
                    if close {
                        // The headers of the window's last record, emitted
                        // with it at its close (Kafka Streams' suppression
                        // buffer keeps the last update's).
                        let headers = recs
                            .get(g.last)
                            .map(|r| pack_headers(r.headers()))
                            .unwrap_or_default();
                        cx.txn.put(
                            keys::agg_close(
                                cx.pipeline,
                                &self.cfg.name,
                                cx.partition,
                                g.end,
                                &g.key,
                                g.start,
                            ),
                            headers,
                        );
                    }
                }
                return Ok((keep.then_some(kept), applied));
            }
            Err(f) => f,
        };
        if let [r] = recs {
            cx.out
                .dead_packed(&self.cfg.name, r, Failure::Trapped(failure));
            return Ok((None, vec![false; groups.len()]));
        }
        // Record by record: a group is updated if one of its records was
        // taken, and its last record is the last one taken.
        let mut applied = vec![false; groups.len()];
        for (ri, r) in recs.iter().enumerate() {
            let (mut mine, at): (Vec<Group>, Vec<usize>) = groups
                .iter()
                .enumerate()
                .filter(|(_, g)| g.members.contains(&ri))
                .map(|(gi, g)| {
                    let one = Group {
                        key: g.key.clone(),
                        start: g.start,
                        end: g.end,
                        members: vec![0],
                        seq: g.seq,
                        ts: r.timestamp(),
                        last: 0,
                    };
                    (one, gi)
                })
                .unzip();
            let (_, took) = self.add(cx, std::slice::from_ref(r), &mut mine, false)?;
            for (gi, took) in at.into_iter().zip(took) {
                if let (true, Some(g)) = (took, groups.get_mut(gi)) {
                    g.last = ri;
                    if let Some(a) = applied.get_mut(gi) {
                        *a = true;
                    }
                }
            }
        }
        Ok((None, applied))
    }
}

impl Operator for Aggregate {
    fn config(&self) -> &StepConfig {
        &self.cfg
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        _side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        let cfg = &self.cfg;
        let mut index: rustc_hash::FxHashMap<(&[u8], i64), usize> =
            rustc_hash::FxHashMap::default();
        let mut groups: Vec<Group> = Vec::new();
        let mut records: Vec<&Packed> = Vec::new();
        // Where each of `records` is in `flow`.
        let mut rec_at: Vec<usize> = Vec::new();
        let windowed = cfg.window.is_some();
        let before = if windowed {
            own_time(cx, cfg)?
        } else {
            i64::MIN
        };
        let mut now = before;
        for (fi, it) in flow.iter().enumerate() {
            let Some(key) = it.rec.key() else {
                cx.out.dead_packed(
                    &cfg.name,
                    &it.rec,
                    Failure::Rejected(format!(
                        "step {}: an aggregate groups by key, and this record has none",
                        cfg.name
                    )),
                );
                continue;
            };
            let ts = it.rec.timestamp();
            cx.observe(ts);
            now = now.max(ts);
            // As Kafka Streams' `groupByKey().aggregate()`, a global
            // aggregate skips a record with no value (a windowed one adds it).
            if cfg.window.is_none() && it.rec.value().is_none() {
                continue;
            }
            let idx = records.len();
            let mut counted = false;
            for (start, end) in windows_of(cfg.window, ts) {
                if windowed && end + cfg.grace <= now {
                    continue;
                }
                counted = true;
                let g = *index.entry((key, start)).or_insert_with(|| {
                    groups.push(Group {
                        key: key.to_vec(),
                        start,
                        end,
                        members: Vec::new(),
                        seq: 0,
                        ts: i64::MIN,
                        last: 0,
                    });
                    groups.len() - 1
                });
                let g = &mut groups[g];
                g.members.push(idx);
                g.seq = it.seq;
                g.ts = g.ts.max(ts);
                g.last = idx;
            }
            if counted {
                records.push(&it.rec);
                rec_at.push(fi);
            } else {
                cx.out.late += 1;
                tracing::debug!(step = %cfg.name, ts, stream_time = now, "late record dropped");
            }
        }
        if windowed {
            set_own_time(cx, cfg, before, now);
        }
        let mut out = Vec::new();
        if !groups.is_empty() {
            // In the order of their last update (a record's windows by
            // start), as Kafka Streams' record cache flushes them: what is
            // emitted is its uncached output without the superseded updates.
            groups.sort_by_key(|g| (g.last, g.start));
            let hold = self.cfg.emit == Emit::Update && self.defer;
            let (mut accs, applied) = self.add(cx, &records, &mut groups, hold)?;
            // Groups none of whose records was taken are neither updated
            // nor emitted (their accumulators are not among `accs`).
            if applied.contains(&false) {
                let mut applied = applied.into_iter();
                groups.retain(|_| applied.next().unwrap_or(true));
            }
            if hold && accs.is_none() {
                // Taken record by record: read back now, since the window
                // may leave the state before the commit emits it.
                accs = Some(self.stored_accs(cx, &mut groups)?);
            }
            if hold {
                // Each group keeps its last record: moved out of the batch
                // by the last group that needs it, copied before that.
                let mut needs = vec![0u32; records.len()];
                for g in &groups {
                    if let Some(n) = needs.get_mut(g.last) {
                        *n += 1;
                    }
                }
                let mut flow: Vec<Option<Packed>> =
                    flow.into_iter().map(|it| Some(it.rec)).collect();
                self.hold(groups, accs, |ri| {
                    let slot = flow.get_mut(*rec_at.get(ri)?)?;
                    let n = needs.get_mut(ri)?;
                    *n -= 1;
                    if *n == 0 { slot.take() } else { slot.clone() }
                });
            } else if self.cfg.emit == Emit::Update {
                let mut items = Vec::new();
                for g in &groups {
                    let k = keys::agg(cx.pipeline, &self.cfg.name, cx.partition, &g.key, g.start);
                    let Some(v) = cx.get(&k)? else { continue };
                    let (_, ts, acc) =
                        keys::agg_value_ts(&v).context("a stored accumulator is corrupt")?;
                    items.push(Presentable {
                        key: g.key.clone(),
                        start: g.start,
                        end: g.end,
                        acc: acc.to_vec(),
                        seq: g.seq,
                        ts,
                        input: records.get(g.last).map(|r| (*r).clone()),
                        headers: carried(&self.cfg, records.get(g.last).copied()),
                    });
                }
                out.extend(present(self.guest.as_mut(), &self.cfg, cx, items)?);
            }
        }
        if windowed {
            // As a Kafka Streams window store: a window leaves at its start
            // + retention, measured against the start of the last window
            // the stream time is in.
            let observed = (now > i64::MIN)
                .then(|| windows_of(self.cfg.window, now).last().map(|(s, _)| s))
                .flatten();
            if let Some(observed) = observed {
                forget_expired(&self.cfg, cx, observed, None)?;
            }
            if self.cfg.emit == Emit::Close {
                let retention = self.cfg.retention;
                out.extend(close_due(
                    self.guest.as_mut(),
                    &self.cfg,
                    cx,
                    0,
                    now,
                    |_, start| {
                        let at = start.saturating_add(retention);
                        Some(at).filter(|at| observed.is_some_and(|o| *at > o))
                    },
                )?);
            }
        }
        Ok(out)
    }

    fn defer_updates(&mut self, on: bool) {
        self.defer = on;
    }

    fn flush(&mut self, cx: &mut Ctx<'_>) -> anyhow::Result<Vec<Item>> {
        self.index.clear();
        self.updated_bytes = 0;
        let mut updated = std::mem::take(&mut self.updated);
        updated.sort_by_key(|u| u.order);
        let mut items = Vec::with_capacity(updated.len());
        for u in updated {
            let (acc, ts) = match u.acc {
                Some(acc) => (acc, u.ts),
                None => {
                    let k = keys::agg(cx.pipeline, &self.cfg.name, cx.partition, &u.key, u.start);
                    let Some(v) = cx.get(&k)? else { continue };
                    let (_, ts, acc) =
                        keys::agg_value_ts(&v).context("a stored accumulator is corrupt")?;
                    (acc.to_vec(), ts)
                }
            };
            items.push(Presentable {
                acc,
                key: u.key,
                start: u.start,
                end: u.end,
                seq: u.seq,
                ts,
                headers: carried(&self.cfg, Some(&u.last)),
                input: Some(u.last),
            });
        }
        present(self.guest.as_mut(), &self.cfg, cx, items)
    }

    fn discard(&mut self) {
        self.updated.clear();
        self.index.clear();
        self.updated_bytes = 0;
    }

    fn deferred_bytes(&self) -> usize {
        self.updated_bytes
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}
