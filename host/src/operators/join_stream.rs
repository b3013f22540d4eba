//! Windowed stream-stream joins, with Kafka Streams' retention: each side
//! keeps its records for `before + after + grace`, measured against that
//! side's own observed stream time (the largest timestamp it has kept). A
//! record meets exactly the other side's records within its window
//! (a left record at `t` meets right records in `[t - before, t + after]`,
//! a right one left records in `[t - after, t + before]`) that the other
//! side still retains; a result carries the larger of the two timestamps.
//!
//! In a left join a left record that met nothing, and in an outer join a
//! record of either side that met nothing, is held until its window closes
//! (the join's stream time, the largest timestamp of any record either side
//! has seen, passes `t + after + grace` for a left record, `t + before +
//! grace` for a right one) and is then emitted alone, unless a record of the
//! other side met it meanwhile; one whose window had already ended when it
//! came (`t + after`, or `t + before`, before the stream time) is emitted at
//! once. Held records come out in timestamp order, right before left at the
//! same timestamp, then by key, when a record at the stream time looks at
//! them; as in Kafka Streams, it looks only when the earliest held time
//! noted (see [`StreamJoin::emit_unmatched`]) plus its own side's reach and
//! the grace is behind the stream time, so a closed window may wait for a
//! later look. A record with no key joins nothing: in a
//! left join a left one, in an outer join one of either side, is emitted at
//! once alone (as Kafka Streams does since 3.7); otherwise it is skipped. A
//! record with no value is skipped.

use anyhow::Context;

use super::pairs::{Pair, join};
use super::{Ctx, Item, Operator};
use crate::pipeline::config::{JoinType, Step as StepConfig};
use crate::pipeline::keys;
use crate::record::Packed;
use crate::runtime::Guest;

/// A windowed stream-stream join step.
pub struct StreamJoin {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
}

const LEFT: u8 = b'L';
const RIGHT: u8 = b'R';
/// Where each side's observed stream time is kept.
const TIME: u8 = b'T';
/// Where left records that met nothing wait for their window to close.
const UNMATCHED: u8 = b'U';
/// Where right records that met nothing wait (outer joins).
const UNMATCHED_RIGHT: u8 = b'V';
/// Under [`TIME`]: the join's stream time, over every record of both sides.
const SHARED: u8 = b'S';
/// Under [`TIME`]: the earliest held time noted (Kafka Streams' `minTime`):
/// held records are looked at only once it is far enough behind.
const MIN_HELD: u8 = b'M';

impl StreamJoin {
    /// A stream-stream join running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        StreamJoin { cfg, guest }
    }

    fn retention(&self) -> i64 {
        self.cfg.before + self.cfg.after + self.cfg.grace
    }

    fn prefix(&self, cx: &Ctx<'_>, kind: u8) -> Vec<u8> {
        let mut p = keys::step(cx.pipeline, b'j', &self.cfg.name, cx.partition);
        p.push(kind);
        p
    }

    fn observed(&self, cx: &Ctx<'_>, side: u8) -> anyhow::Result<i64> {
        let mut k = self.prefix(cx, TIME);
        k.push(side);
        Ok(cx
            .get(&k)?
            .map(|b| keys::from_ord_i64(&b))
            .unwrap_or(i64::MIN))
    }

    /// The join's stream time (before it was kept on its own: the larger of
    /// the two sides' observed times).
    fn shared_time(&self, cx: &Ctx<'_>) -> anyhow::Result<i64> {
        let s = self.observed(cx, SHARED)?;
        if s != i64::MIN {
            return Ok(s);
        }
        Ok(self.observed(cx, LEFT)?.max(self.observed(cx, RIGHT)?))
    }

    fn set_observed(&self, cx: &mut Ctx<'_>, side: u8, t: i64) {
        let mut k = self.prefix(cx, TIME);
        k.push(side);
        cx.txn.put(k, keys::ord_i64(t).to_vec());
    }

    /// The oldest timestamp a side with observed time `obs` still retains.
    fn retained_from(&self, obs: i64) -> i64 {
        obs.saturating_sub(self.retention()).saturating_add(1)
    }

    /// Where `side`'s records that met nothing are held.
    fn held_prefix(&self, cx: &Ctx<'_>, side: u8) -> Vec<u8> {
        self.prefix(
            cx,
            if side == LEFT {
                UNMATCHED
            } else {
                UNMATCHED_RIGHT
            },
        )
    }

    /// How long after its timestamp a record of `side` can still meet one of
    /// the other side: `after` for a left record, `before` for a right one.
    fn reach(&self, side: u8) -> i64 {
        if side == LEFT {
            self.cfg.after
        } else {
            self.cfg.before
        }
    }

    /// Looks at the held records when a record of `side` brings the
    /// stream time to `shared`, as Kafka Streams' KStreamKStreamJoin does:
    /// only when the earliest held time noted plus that side's reach
    /// (`after` for a left record, `before` for a right one) and the grace
    /// is behind `shared`. A look emits the held records whose window
    /// closed (by timestamp, right before left at the same one, then by
    /// key), goes over them in that order until it has met a still-open
    /// record of each side, and notes the timestamp of the last one it went
    /// over (held records it did not go over are newer).
    fn emit_unmatched(
        &self,
        cx: &mut Ctx<'_>,
        shared: i64,
        side: u8,
        trigger: &Item,
        pairs: &mut Vec<Pair>,
    ) -> anyhow::Result<()> {
        let min = self.observed(cx, MIN_HELD)?;
        let look = min
            .saturating_add(self.reach(side))
            .saturating_add(self.cfg.grace);
        if min == i64::MAX || look >= shared {
            return Ok(());
        }
        // The held records whose window closed: all of them come out (the
        // look stops only once past a still-open record of each side, and
        // every record after those is open too).
        let outer = self.cfg.join == JoinType::Outer;
        let mut due = Vec::new();
        let mut open: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
        for side in [RIGHT, LEFT] {
            if side == RIGHT && !outer {
                continue;
            }
            let prefix = self.held_prefix(cx, side);
            let mut mid = prefix.clone();
            mid.extend_from_slice(&keys::ord_i64(self.closed_before(side, shared)));
            for (k, v) in cx.range(&prefix, &mid, usize::MAX)? {
                let rec = Packed::parse(v).context("a held join record is corrupt")?;
                due.push((side, k, rec));
            }
            for (k, _) in cx.range(&mid, &keys::prefix_end(&prefix), 2)? {
                open[usize::from(side == LEFT)].push(held_time(&k, prefix.len())?);
            }
        }
        // Stable: a side's records of one key and timestamp stay in the
        // order they came.
        due.sort_by(|(a_side, _, a), (b_side, _, b)| {
            (a.timestamp(), *a_side != RIGHT, a.key()).cmp(&(
                b.timestamp(),
                *b_side != RIGHT,
                b.key(),
            ))
        });
        // The time the look notes: it goes over the held records by
        // timestamp, right before left, and stops at the one after it has
        // met an open record of each side, else at the last one.
        let noted = match (open[1].first(), open[0].first()) {
            (Some(&l), Some(&r)) => {
                let (later, next) = if l >= r {
                    // Right records after that left one are later.
                    let next_right = self.first_held_from(cx, RIGHT, l.saturating_add(1))?;
                    (l, [open[1].get(1).copied(), next_right])
                } else {
                    let next_left = self.first_held_from(cx, LEFT, r)?;
                    (r, [open[0].get(1).copied(), next_left])
                };
                next.into_iter().flatten().min().unwrap_or(later)
            }
            _ => {
                let mut last = due.last().map(|(_, _, rec)| rec.timestamp());
                for side in [RIGHT, LEFT] {
                    if open[usize::from(side == LEFT)].is_empty() {
                        continue;
                    }
                    let prefix = self.held_prefix(cx, side);
                    let mut mid = prefix.clone();
                    mid.extend_from_slice(&keys::ord_i64(self.closed_before(side, shared)));
                    if let Some((k, _)) = cx
                        .range(&mid, &keys::prefix_end(&prefix), usize::MAX)?
                        .last()
                    {
                        let t = held_time(k, prefix.len())?;
                        last = Some(last.map_or(t, |x: i64| x.max(t)));
                    }
                }
                last.unwrap_or(i64::MAX)
            }
        };
        #[cfg(test)]
        assert_eq!(noted, self.noted_by_going_over_all(cx, shared)?);
        for (side, k, rec) in due {
            cx.txn.delete(k);
            // Kafka Streams forwards the record being processed with the
            // held key, value and timestamp: its headers go on.
            let mut pair = alone(side, rec.key().map(<[u8]>::to_vec), &rec, trigger.seq);
            pair.headers_of = Some(trigger.rec.clone());
            pairs.push(pair);
        }
        self.set_observed(cx, MIN_HELD, noted);
        Ok(())
    }

    /// Held records of `side` with a timestamp before this have their
    /// window closed at stream time `shared`.
    fn closed_before(&self, side: u8, shared: i64) -> i64 {
        shared
            .saturating_sub(self.reach(side))
            .saturating_sub(self.cfg.grace)
    }

    /// The timestamp of the first held record of `side` at `from` or later.
    fn first_held_from(&self, cx: &Ctx<'_>, side: u8, from: i64) -> anyhow::Result<Option<i64>> {
        let prefix = self.held_prefix(cx, side);
        let mut start = prefix.clone();
        start.extend_from_slice(&keys::ord_i64(from));
        cx.range(&start, &keys::prefix_end(&prefix), 1)?
            .first()
            .map(|(k, _)| held_time(k, prefix.len()))
            .transpose()
    }

    /// Tests: the time a look notes, going over every held record as Kafka
    /// Streams does.
    #[cfg(test)]
    fn noted_by_going_over_all(&self, cx: &Ctx<'_>, shared: i64) -> anyhow::Result<i64> {
        let mut held = Vec::new();
        for side in [RIGHT, LEFT] {
            if side == RIGHT && self.cfg.join != JoinType::Outer {
                continue;
            }
            let prefix = self.held_prefix(cx, side);
            for (k, _) in cx.range(&prefix, &keys::prefix_end(&prefix), usize::MAX)? {
                held.push((held_time(&k, prefix.len())?, side != RIGHT, side));
            }
        }
        held.sort();
        let mut noted = i64::MAX;
        let (mut left_open, mut right_open) = (false, false);
        for (ts, _, side) in held {
            noted = ts;
            if left_open && right_open {
                break;
            }
            if ts >= self.closed_before(side, shared) {
                if side == LEFT {
                    left_open = true;
                } else {
                    right_open = true;
                }
            }
        }
        Ok(noted)
    }
}

/// The timestamp in a held record's state key (after its prefix).
fn held_time(key: &[u8], prefix_len: usize) -> anyhow::Result<i64> {
    keys::take_i64(&key[prefix_len..])
        .map(|(t, _)| t)
        .context("a held join record's key is corrupt")
}

/// The result of a record of `side` that met nothing.
fn alone(side: u8, key: Option<Vec<u8>>, rec: &Packed, seq: u64) -> Pair {
    let value = rec.value().map(<[u8]>::to_vec);
    let (left, right) = if side == LEFT {
        (value, None)
    } else {
        (None, value)
    };
    Pair {
        key,
        ts: rec.timestamp(),
        left,
        right,
        seq,
        rec: rec.clone(),
        headers_of: None,
    }
}

impl Operator for StreamJoin {
    fn config(&self) -> &StepConfig {
        &self.cfg
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        let mut all: Vec<(bool, Item)> = flow
            .into_iter()
            .map(|it| (true, it))
            .chain(side.into_iter().map(|it| (false, it)))
            .collect();
        all.sort_by_key(|(_, it)| it.seq);
        // Which sides hold (and emit alone) the records that meet nothing.
        let left_join = self.cfg.join != JoinType::Inner;
        let outer = self.cfg.join == JoinType::Outer;
        let (before, after) = (self.cfg.before, self.cfg.after);
        let mut pairs = Vec::new();
        for (is_left, it) in all {
            let ts = it.rec.timestamp();
            cx.observe(ts);
            let (mine, other) = if is_left {
                (LEFT, RIGHT)
            } else {
                (RIGHT, LEFT)
            };
            let holds = if is_left { left_join } else { outer };
            let other_holds = if is_left { outer } else { left_join };
            // Every record moves the join's stream time, even one it skips.
            let shared = self.shared_time(cx)?.max(ts);
            self.set_observed(cx, SHARED, shared);
            let (k, value) = match (it.rec.key(), it.rec.value()) {
                (Some(k), Some(v)) => (k.to_vec(), v),
                (None, Some(_)) if holds => {
                    pairs.push(alone(mine, None, &it.rec, it.seq));
                    continue;
                }
                _ => continue,
            };
            let mine_obs = self.observed(cx, mine)?.max(ts);
            self.set_observed(cx, mine, mine_obs);
            let other_obs = self.observed(cx, other)?;
            // This side keeps the record while it is retained.
            let entry_suffix = {
                let mut s = Vec::with_capacity(k.len() + 28);
                keys::push_key(&mut s, &k);
                s.extend_from_slice(&keys::ord_i64(ts));
                s.extend_from_slice(&it.rec.offset().to_be_bytes());
                s.extend_from_slice(&it.seq.to_be_bytes());
                s
            };
            if ts >= self.retained_from(mine_obs) {
                let mut mk = self.prefix(cx, mine);
                mk.extend_from_slice(&entry_suffix);
                cx.txn.put(mk, value.to_vec());
            }
            if left_join && ts == shared {
                self.emit_unmatched(cx, shared, mine, &it, &mut pairs)?;
            }
            // A left record at t meets right records in [t - before, t +
            // after]; a right one left records in [t - after, t + before].
            let (lo, hi) = if is_left {
                (ts.saturating_sub(before), ts.saturating_add(after))
            } else {
                (ts.saturating_sub(after), ts.saturating_add(before))
            };
            let lo = lo.max(self.retained_from(other_obs));
            let mut op = self.prefix(cx, other);
            keys::push_key(&mut op, &k);
            let mut from = op.clone();
            from.extend_from_slice(&keys::ord_i64(lo));
            let mut to = op.clone();
            to.extend_from_slice(&keys::ord_i64(hi.saturating_add(1)));
            let matches = if lo <= hi {
                cx.range(&from, &to, usize::MAX)?
            } else {
                Vec::new()
            };
            for (mk, v) in &matches {
                let other_ts = keys::take_i64(&mk[op.len()..])
                    .map(|(t, _)| t)
                    .context("a join buffer key is corrupt")?;
                if other_holds {
                    // The other record met something: it is no longer held.
                    let mut u = self.held_prefix(cx, other);
                    u.extend_from_slice(&keys::ord_i64(other_ts));
                    u.extend_from_slice(&mk[op.len() - k.len() - 4..]);
                    cx.txn.delete(u);
                }
                let (l, r) = if is_left {
                    (Some(value.to_vec()), Some(v.clone()))
                } else {
                    (Some(v.clone()), Some(value.to_vec()))
                };
                pairs.push(Pair {
                    key: Some(k.clone()),
                    ts: ts.max(other_ts),
                    left: l,
                    right: r,
                    seq: it.seq,
                    rec: it.rec.clone(),
                    headers_of: None,
                });
            }
            if matches.is_empty() && holds {
                if ts.saturating_add(self.reach(mine)) < shared {
                    // Its window ended before it came: alone, at once.
                    pairs.push(alone(mine, Some(k.clone()), &it.rec, it.seq));
                } else {
                    let mut u = self.held_prefix(cx, mine);
                    u.extend_from_slice(&keys::ord_i64(ts));
                    u.extend_from_slice(&entry_suffix);
                    cx.txn.put(u, it.rec.bytes().to_vec());
                    let min = self.observed(cx, MIN_HELD)?.min(ts);
                    self.set_observed(cx, MIN_HELD, min);
                }
            }
        }
        self.purge(cx)?;
        join(self.guest.as_mut(), &self.cfg, cx, pairs)
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}

impl StreamJoin {
    /// Forgets buffered records that their side no longer retains.
    fn purge(&self, cx: &mut Ctx<'_>) -> anyhow::Result<()> {
        for side in [LEFT, RIGHT] {
            let obs = self.observed(cx, side)?;
            if obs == i64::MIN {
                continue;
            }
            let horizon = self.retained_from(obs);
            let p = self.prefix(cx, side);
            for (k, _) in cx.range(&p, &keys::prefix_end(&p), usize::MAX)? {
                let ts = keys::take_key(&k[p.len()..])
                    .and_then(|(_, rest)| keys::take_i64(rest))
                    .map(|(ts, _)| ts)
                    .context("a join buffer key is corrupt")?;
                if ts < horizon {
                    cx.txn.delete(k);
                }
            }
        }
        Ok(())
    }
}
