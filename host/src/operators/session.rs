//! Session windows, as Kafka Streams keeps them: a record at `ts` merges
//! every session of its key that ends at or after `ts - gap` and starts at
//! or before `ts + gap`, except closed ones (whose end + gap + grace the
//! stream time before the record has reached: Kafka Streams' store no
//! longer returns them, so the record starts a session beside them); the
//! record is dropped as late only if the merged
//! session ends before `stream time - gap - grace`. With `emit = "update"`
//! the sessions a record touched are emitted as tombstones and the new one
//! with its value, each stamped with its session's end; with `emit = "close"` a session is emitted once, when the
//! stream time reaches its end + gap + grace.
//!
//! With a state cache ([`Operator::defer_updates`]) updates are emitted once
//! per commit instead: each session created or grown since the last commit
//! and still there is emitted with its latest value, and a session merged
//! away is emitted as a tombstone only if the last commit had it (a session
//! that came and went between two commits was never seen downstream).
//!
//! A session leaves the state once no record can reach it: without the
//! cache as it closes (the session store's retention, gap + grace), with
//! it a day of stream time past its end, or later while the key's last
//! session can still grow and be stretched back to it (see
//! `Session::reachable`); a purge index entry written with it says when
//! to look. A record reads only the sessions of its key that may
//! touch it: those starting within the step's longest session (kept
//! beside its stream time) plus `gap` before it.

use anyhow::Context;

use super::accumulate::{
    Presentable, Reachable, call_add, close_due, forget_expired, own_time, pack_headers, present,
    set_own_time,
};
use super::{Ctx, Item, Operator};
use crate::pipeline::config::{Emit, Step as StepConfig, Window};
use crate::pipeline::keys;
use crate::record::{Failure, Packed};
use crate::runtime::{Call, Guest};

/// A session-windowed aggregate step.
pub struct Session {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
    gap: i64,
    /// Emit on update once per commit (not once per record).
    defer: bool,
    /// The sessions touched since the last commit, in the order of their
    /// first touch (emitted in the order of their last), and where each is
    /// in it.
    held: Vec<Held>,
    index: rustc_hash::FxHashMap<(Vec<u8>, i64, i64), usize>,
    /// What `held` holds, in bytes.
    held_bytes: usize,
    /// Counts the changes held, to order them by their last.
    touches: u64,
}

/// A session (key, start, end) touched since the last commit.
struct Held {
    key: Vec<u8>,
    start: i64,
    end: i64,
    /// Merged away into a larger session (else: created or updated).
    removed: bool,
    /// The seq of the last record that touched it.
    seq: u64,
    /// When it was last touched (it is emitted in that order, as Kafka
    /// Streams' record cache flushes).
    order: u64,
    /// That record (dead-lettered if presenting the session fails).
    last: Packed,
    /// The step's stream time before that record.
    prev: i64,
}

impl Held {
    /// The memory it takes while held (see [`super::held_bytes`]).
    fn bytes(&self) -> usize {
        super::held_bytes::<Held, (Vec<u8>, i64, i64)>(&self.key, &[self.last.bytes().len()])
    }
}

/// The tombstone of session `[s, e]` of `key`, stamped with its end (as
/// Kafka Streams stamps every session's output). Held to a commit (the
/// state cache on), it carries the headers of the record that merged the
/// session away, as Kafka Streams' record cache forwards it; uncached,
/// none (`carry` is `None`).
fn tombstone(key: &[u8], s: i64, e: i64, seq: u64, carry: Option<&Packed>) -> Item {
    let ts = e;
    let (s, e) = (s.to_string(), e.to_string());
    Item {
        seq,
        rec: Packed::new(
            0,
            ts,
            Some(key),
            None,
            carry.into_iter().flat_map(Packed::headers).chain([
                ("weir.window.start", s.as_bytes()),
                ("weir.window.end", e.as_bytes()),
            ]),
        ),
    }
}

/// With the state cache on, how many later sessions of its key a closed
/// session may have and still be kept for records that stretch the last
/// one back to it (see `Session::reachable`).
const KEPT_LATER: usize = 16;

/// With the state cache on, how long (in stream time past its end) a closed
/// session is kept: a day.
const KEPT_FOR: i64 = 24 * 60 * 60 * 1000;

/// When a session ending at `end` leaves the state: as Kafka Streams'
/// session store stops returning it, at end + gap + grace (its retention)
/// without the state cache (`cached`); with it (Kafka Streams' record cache
/// still holds it, and merges into it any record that reaches it), first
/// looked at [`KEPT_FOR`] past its end (see `Session::reachable`).
fn leaves_at(end: i64, gap: i64, grace: i64, cached: bool) -> i64 {
    let at = end.saturating_add(gap).saturating_add(grace);
    if cached {
        at.saturating_add(2 * gap)
            .max(end.saturating_add(KEPT_FOR))
            .saturating_add(1)
    } else {
        at
    }
}

impl Session {
    /// A session aggregate running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        let gap = match cfg.window {
            Some(Window::Session { gap }) => gap,
            _ => 0,
        };
        Session {
            cfg,
            guest,
            gap,
            defer: false,
            held: Vec::new(),
            index: rustc_hash::FxHashMap::default(),
            held_bytes: 0,
            touches: 0,
        }
    }

    /// Notes that session `[start, end]` of `key` changed (or, `removed`,
    /// was merged away), to emit at the next commit.
    fn hold(&mut self, key: &[u8], start: i64, end: i64, removed: bool, it: &Item, prev: i64) {
        self.touches += 1;
        let order = self.touches;
        match self.index.entry((key.to_vec(), start, end)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                if let Some(h) = self.held.get_mut(*e.get()) {
                    self.held_bytes -= h.bytes();
                    h.removed = removed;
                    h.seq = it.seq;
                    h.order = order;
                    h.last = it.rec.clone();
                    h.prev = prev;
                    self.held_bytes += h.bytes();
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(self.held.len());
                let h = Held {
                    key: key.to_vec(),
                    start,
                    end,
                    removed,
                    seq: it.seq,
                    order,
                    last: it.rec.clone(),
                    prev,
                };
                self.held_bytes += h.bytes();
                self.held.push(h);
            }
        }
    }

    /// When a session ending at `end` leaves the state (see [`leaves_at`]).
    fn leaves_at(&self, end: i64) -> i64 {
        leaves_at(end, self.gap, self.cfg.grace, self.defer)
    }

    /// With the state cache on, until when a record may still merge into
    /// the session of `key` that ends at `end` (Kafka Streams' record cache
    /// keeps every session it holds within reach, closed or not). A record
    /// within the gap after it is in time until end + 2 × gap + grace, and a
    /// session of the key may still begin next to it, in time, until end +
    /// 3 × gap + grace. Any later session of the key, open now or begun
    /// later, can be stretched back by records in time, record by record,
    /// until it meets this one, however old this one is: so it stays for
    /// [`KEPT_FOR`] of stream time, and as long as the key's last session
    /// can grow, up to [`KEPT_LATER`] sessions back (Kafka Streams' cache
    /// holds them while it has room; beyond that, Weir lets them go).
    fn reachable(&self) -> impl Fn(&Ctx<'_>, &[u8], i64) -> anyhow::Result<Option<i64>> + use<'_> {
        move |cx: &Ctx<'_>, key: &[u8], end: i64| {
            let (gap, grace) = (self.gap, self.cfg.grace);
            let own = end.saturating_add(3 * gap).saturating_add(grace);
            let kept = own.max(end.saturating_add(KEPT_FOR));
            let mut prefix = keys::step(cx.pipeline, b'a', &self.cfg.name, cx.partition);
            keys::push_key(&mut prefix, key);
            let from = keys::agg(
                cx.pipeline,
                &self.cfg.name,
                cx.partition,
                key,
                end.saturating_add(1),
            );
            let later = cx.range(&from, &keys::prefix_end(&prefix), KEPT_LATER + 1)?;
            let Some((_, v)) = later.last() else {
                return Ok(Some(kept));
            };
            if later.len() > KEPT_LATER {
                return Ok(Some(own));
            }
            let (e, _) = keys::agg_value(v).context("a session's accumulator is corrupt")?;
            Ok(Some(
                kept.max(e.saturating_add(2 * gap).saturating_add(grace)),
            ))
        }
    }

    /// Where the length of the step's longest session is kept (beside its
    /// stream time).
    fn longest_key(&self, cx: &Ctx<'_>) -> Vec<u8> {
        let mut k = keys::step_time(cx.pipeline, &self.cfg.name, cx.partition);
        k.push(b'L');
        k
    }

    /// The length of the step's longest session so far (end - start), and
    /// whether it is kept; in state written before it was kept (or with no
    /// session yet), found by reading every session, once: the caller keeps
    /// it.
    fn longest(&self, cx: &Ctx<'_>) -> anyhow::Result<(i64, bool)> {
        if let Some(b) = cx.get(&self.longest_key(cx))? {
            let b: [u8; 8] = b
                .as_slice()
                .try_into()
                .context("a session step's longest length is corrupt")?;
            return Ok((i64::from_be_bytes(b), true));
        }
        let prefix = keys::step(cx.pipeline, b'a', &self.cfg.name, cx.partition);
        let mut longest = 0;
        for (k, v) in cx.range(&prefix, &keys::prefix_end(&prefix), usize::MAX)? {
            let s = k
                .len()
                .checked_sub(8)
                .and_then(|at| k.get(at..))
                .map(keys::from_ord_i64)
                .context("a session key is corrupt")?;
            let (e, _) = keys::agg_value(&v).context("a session's accumulator is corrupt")?;
            longest = longest.max(e.saturating_sub(s));
        }
        Ok((longest, false))
    }

    fn close_key(&self, cx: &Ctx<'_>, end: i64, key: &[u8], start: i64) -> Vec<u8> {
        keys::agg_close(
            cx.pipeline,
            &self.cfg.name,
            cx.partition,
            end.saturating_add(self.gap),
            key,
            start,
        )
    }

    /// Adds one record to its key's session, merging every session it
    /// bridges. `prev` is the step's stream time before the record, `now`
    /// with it.
    fn add(
        &mut self,
        cx: &mut Ctx<'_>,
        key: &[u8],
        it: &Item,
        prev: i64,
        now: i64,
    ) -> anyhow::Result<Vec<Item>> {
        let (gap, name) = (self.gap, self.cfg.name.clone());
        let ts = it.rec.timestamp();
        let mut prefix = keys::step(cx.pipeline, b'a', &name, cx.partition);
        keys::push_key(&mut prefix, key);
        // Only sessions that may touch `ts`: ending at or after `ts - gap`,
        // so starting no earlier than that minus the longest session of
        // the step (a key keeps its closed sessions a day, with the cache:
        // reading them all would cost each record as much).
        let (longest, kept) = self.longest(cx)?;
        let from = keys::agg(
            cx.pipeline,
            &name,
            cx.partition,
            key,
            ts.saturating_sub(gap).saturating_sub(longest),
        );
        let to = keys::agg(
            cx.pipeline,
            &name,
            cx.partition,
            key,
            ts.saturating_add(gap).saturating_add(1),
        );
        let sessions = cx.range(&from, &to, usize::MAX)?;
        let (mut start, mut end) = (ts, ts);
        let mut overlapping = Vec::new();
        for (k, v) in sessions {
            let (s, _) = keys::take_i64(&k[prefix.len()..]).context("a session key is corrupt")?;
            let (e, acc) = keys::agg_value(&v).context("a session's accumulator is corrupt")?;
            // Without the state cache, a closed session (its end + gap +
            // grace reached by the stream time before this record) is out
            // of reach, as in Kafka Streams with its record cache off,
            // whose session store no longer returns it past its retention
            // (gap + grace): a record next to it starts a session of its
            // own (the closed one leaves the state after the batch). With the
            // cache, Kafka Streams finds it in its record cache, which
            // does not check retention, and merges it: so does Weir.
            if !self.defer && e <= prev.saturating_sub(gap).saturating_sub(self.cfg.grace) {
                continue;
            }
            if e >= ts - gap && s <= ts + gap {
                start = start.min(s);
                end = end.max(e);
                overlapping.push((k, s, e, acc.to_vec()));
            }
        }
        if end < now.saturating_sub(gap).saturating_sub(self.cfg.grace) {
            cx.out.late += 1;
            tracing::debug!(step = %name, ts, stream_time = now, "late record dropped");
            return Ok(Vec::new());
        }
        // Merge the sessions it bridges, then add the record.
        let mut merged: Option<Vec<u8>> = None;
        for (_, _, _, acc) in &overlapping {
            merged = Some(match merged {
                None => acc.clone(),
                Some(m) => {
                    let (r, _) = self.guest.call(Call::Merge(&m, acc), None)?;
                    match r {
                        Ok(x) => x,
                        Err(reason) => {
                            cx.out.dead_packed(
                                &name,
                                &it.rec,
                                Failure::Trapped(format!("merging sessions: {reason}")),
                            );
                            return Ok(Vec::new());
                        }
                    }
                }
            });
        }
        let recs: [&Packed; 1] = [&it.rec];
        let member = [0usize];
        let acc = match call_add(self.guest.as_mut(), &recs, &[(merged.as_deref(), &member)])? {
            Ok((accs, rejected)) => {
                if let Some((_, m)) = rejected.into_iter().next() {
                    cx.out.dead_packed(&name, &it.rec, Failure::Rejected(m));
                    return Ok(Vec::new());
                }
                accs.into_iter().next().unwrap_or_default()
            }
            Err(trap) => {
                cx.out.dead_packed(&name, &it.rec, Failure::Trapped(trap));
                return Ok(Vec::new());
            }
        };
        let close = self.cfg.emit == Emit::Close;
        let mut out = Vec::new();
        // As Kafka Streams: when the record's session is more than `[ts,
        // ts]`, every session it touched is removed and tombstoned, the one
        // with the merged bounds too (held back to a commit, that one's
        // tombstone gives way to its update).
        let merged_more = (start, end) != (ts, ts);
        for (k, s, e, _) in overlapping {
            cx.txn.delete(k);
            if close {
                let ck = self.close_key(cx, e, key, s);
                cx.txn.delete(ck);
            }
            if !close && merged_more {
                if self.defer {
                    self.hold(key, s, e, true, it, prev);
                } else {
                    out.push(tombstone(key, s, e, it.seq, None));
                }
            }
        }
        if !kept || end.saturating_sub(start) > longest {
            cx.txn.put(
                self.longest_key(cx),
                longest
                    .max(end.saturating_sub(start))
                    .to_be_bytes()
                    .to_vec(),
            );
        }
        let k = keys::agg(cx.pipeline, &name, cx.partition, key, start);
        cx.txn.put(k, keys::agg_entry(end, end, &acc));
        if !close {
            let at = self.leaves_at(end);
            cx.txn.put(
                keys::agg_purge(cx.pipeline, &name, cx.partition, at, key, start),
                end.to_be_bytes().to_vec(),
            );
        }
        if close {
            let ck = self.close_key(cx, end, key, start);
            // With the state cache, the headers of the session's last
            // record, emitted with it at its close: Kafka Streams' record
            // cache forwards them to its suppression (uncached, none).
            let headers = if self.defer {
                pack_headers(it.rec.headers())
            } else {
                Vec::new()
            };
            cx.txn.put(ck, headers);
        } else if self.defer {
            self.hold(key, start, end, false, it, prev);
        } else {
            out.extend(present(
                self.guest.as_mut(),
                &self.cfg,
                cx,
                vec![Presentable {
                    key: key.to_vec(),
                    start,
                    end,
                    acc,
                    seq: it.seq,
                    ts: end,
                    input: Some(it.rec.clone()),
                    headers: Vec::new(),
                }],
            )?);
        }
        Ok(out)
    }
}

impl Operator for Session {
    fn config(&self) -> &StepConfig {
        &self.cfg
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        _side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        let mut out = Vec::new();
        let before = own_time(cx, &self.cfg)?;
        let mut now = before;
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
            cx.observe(it.rec.timestamp());
            let prev = now;
            now = now.max(it.rec.timestamp());
            out.extend(self.add(cx, key, it, prev, now)?);
            // Closed after every record, as Kafka Streams' suppression
            // evicts, so that the batch size changes nothing.
            if self.cfg.emit == Emit::Close {
                // (The close index holds end + gap.) With the cache, a
                // closed session gets a purge entry, and leaves once no
                // record can merge into it in time (see `reachable`).
                let (defer, gap, grace) = (self.defer, self.gap, self.cfg.grace);
                let kept = |close: i64, _| {
                    defer.then(|| leaves_at(close.saturating_sub(gap), gap, grace, defer))
                };
                out.extend(close_due(
                    self.guest.as_mut(),
                    &self.cfg,
                    cx,
                    gap,
                    now,
                    kept,
                )?);
                if self.defer {
                    let reachable = self.reachable();
                    forget_expired(&self.cfg, cx, now, Some(&reachable))?;
                }
            }
        }
        set_own_time(cx, &self.cfg, before, now);
        // Emitted on update without the cache: sessions past their time
        // leave now (with the cache, at the commit, once emitted).
        if self.cfg.emit == Emit::Update && !self.defer {
            forget_expired(&self.cfg, cx, now, None)?;
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
        let mut out = Vec::new();
        let mut items = Vec::with_capacity(held.len());
        for h in held {
            let k = keys::agg(cx.pipeline, &self.cfg.name, cx.partition, &h.key, h.start);
            if h.removed {
                // Seen downstream only if the last commit had it and it
                // was not closed yet: Kafka Streams' cache forwards a
                // removal only when its store still returns the session,
                // which it no longer does past its retention (gap + grace).
                let closed = h.end
                    <= h.prev
                        .saturating_sub(self.gap)
                        .saturating_sub(self.cfg.grace);
                let committed = !closed
                    && match cx.base.get(&k)? {
                        Some(v) => {
                            keys::agg_value(&v)
                                .context("a session's accumulator is corrupt")?
                                .0
                                == h.end
                        }
                        None => false,
                    };
                if committed {
                    out.push(tombstone(&h.key, h.start, h.end, h.seq, Some(&h.last)));
                }
                continue;
            }
            let Some(v) = cx.get(&k)? else { continue };
            let (end, acc) = keys::agg_value(&v).context("a session's accumulator is corrupt")?;
            if end != h.end {
                continue;
            }
            items.push(Presentable {
                acc: acc.to_vec(),
                key: h.key,
                start: h.start,
                end,
                seq: h.seq,
                ts: end,
                // Kafka Streams' record cache forwards a session with the
                // headers of the record that last put it (uncached, none).
                headers: h
                    .last
                    .headers()
                    .map(|(n, v)| (n.to_string(), v.to_vec()))
                    .collect(),
                input: Some(h.last),
            });
        }
        out.extend(present(self.guest.as_mut(), &self.cfg, cx, items)?);
        if self.cfg.emit == Emit::Update {
            let now = own_time(cx, &self.cfg)?;
            let reachable = self.reachable();
            let reachable = self.defer.then_some(&reachable as Reachable<'_>);
            forget_expired(&self.cfg, cx, now, reachable)?;
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
