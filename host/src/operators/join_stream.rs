//! Windowed stream-stream joins, with Kafka Streams' retention: each side
//! keeps its records for `before + after + grace`, measured against that
//! side's own observed stream time (the largest timestamp it has seen). A
//! record meets exactly the other side's records within its window
//! (a left record at `t` meets right records in `[t - before, t + after]`)
//! that the other side still retains; a result carries the larger of the
//! two timestamps. In a left join, a left record that met nothing is held
//! until its window closes (the join's stream time, the larger of both
//! sides', passes `t + after + grace`) and is then emitted alone, unless a
//! right record met it meanwhile; one whose window had already closed when
//! it arrived is emitted at once.

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

    fn set_observed(&self, cx: &mut Ctx<'_>, side: u8, t: i64) {
        let mut k = self.prefix(cx, TIME);
        k.push(side);
        cx.txn.put(k, keys::ord_i64(t).to_vec());
    }

    /// The oldest timestamp a side with observed time `obs` still retains.
    fn retained_from(&self, obs: i64) -> i64 {
        obs.saturating_sub(self.retention()).saturating_add(1)
    }

    /// Emits the held left records whose window closed by `shared`.
    fn emit_unmatched(
        &self,
        cx: &mut Ctx<'_>,
        shared: i64,
        seq: u64,
        pairs: &mut Vec<Pair>,
    ) -> anyhow::Result<()> {
        let prefix = self.prefix(cx, UNMATCHED);
        let mut end = prefix.clone();
        let bound = shared
            .saturating_sub(self.cfg.after)
            .saturating_sub(self.cfg.grace);
        end.extend_from_slice(&keys::ord_i64(bound));
        for (k, v) in cx.range(&prefix, &end, usize::MAX)? {
            let rec = Packed::parse(v).context("a held join record is corrupt")?;
            cx.txn.delete(k);
            pairs.push(Pair {
                key: rec.key().map(<[u8]>::to_vec),
                ts: rec.timestamp(),
                left: rec.value().map(<[u8]>::to_vec),
                right: None,
                seq,
                rec,
            });
        }
        Ok(())
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
        let left_join = self.cfg.join != JoinType::Inner;
        let (before, after) = (self.cfg.before, self.cfg.after);
        let mut pairs = Vec::new();
        for (is_left, it) in all {
            cx.observe(it.rec.timestamp());
            let Some(k) = it.rec.key().map(<[u8]>::to_vec) else {
                continue;
            };
            let ts = it.rec.timestamp();
            let (mine, other) = if is_left {
                (LEFT, RIGHT)
            } else {
                (RIGHT, LEFT)
            };
            let mine_obs = self.observed(cx, mine)?.max(ts);
            self.set_observed(cx, mine, mine_obs);
            let other_obs = self.observed(cx, other)?;
            let shared = mine_obs.max(other_obs);
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
                cx.txn.put(mk, it.rec.value().unwrap_or_default().to_vec());
            }
            if left_join && ts == shared {
                self.emit_unmatched(cx, shared, it.seq, &mut pairs)?;
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
                if !is_left {
                    // The left record met something: it is no longer held.
                    let mut u = self.prefix(cx, UNMATCHED);
                    u.extend_from_slice(&keys::ord_i64(other_ts));
                    u.extend_from_slice(&mk[op.len() - k.len() - 4..]);
                    cx.txn.delete(u);
                }
                let (l, r) = if is_left {
                    (it.rec.value().map(<[u8]>::to_vec), Some(v.clone()))
                } else {
                    (Some(v.clone()), it.rec.value().map(<[u8]>::to_vec))
                };
                pairs.push(Pair {
                    key: Some(k.clone()),
                    ts: ts.max(other_ts),
                    left: l,
                    right: r,
                    seq: it.seq,
                    rec: it.rec.clone(),
                });
            }
            if matches.is_empty() && is_left && left_join {
                if ts.saturating_add(after) < shared {
                    // Its window closed before it came: alone, at once.
                    pairs.push(Pair {
                        key: Some(k.clone()),
                        ts,
                        left: it.rec.value().map(<[u8]>::to_vec),
                        right: None,
                        seq: it.seq,
                        rec: it.rec.clone(),
                    });
                } else {
                    let mut u = self.prefix(cx, UNMATCHED);
                    u.extend_from_slice(&keys::ord_i64(ts));
                    u.extend_from_slice(&entry_suffix);
                    cx.txn.put(u, it.rec.bytes().to_vec());
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
