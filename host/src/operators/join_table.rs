//! Joins with a table on the other side. Stream-table: each stream record
//! meets the newest value of its key in the table (`with`), and a table
//! update emits nothing. Table-table (`as_table = true`): both sides keep
//! their newest value per key, an update on either side emits the join's
//! new result, and a delete that ends a result emits a tombstone.

use super::pairs::{Pair, join};
use super::{Ctx, Item, Operator};
use crate::pipeline::config::{JoinType, Step as StepConfig};
use crate::pipeline::keys;
use crate::record::Packed;
use crate::runtime::Guest;

/// A stream-table or table-table join step.
pub struct TableJoin {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
}

impl TableJoin {
    /// A table join running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        TableJoin { cfg, guest }
    }
}

impl Operator for TableJoin {
    fn config(&self) -> &StepConfig {
        &self.cfg
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        let cfg = &self.cfg;
        let mut all: Vec<(bool, Item)> = flow
            .into_iter()
            .map(|it| (true, it))
            .chain(side.into_iter().map(|it| (false, it)))
            .collect();
        all.sort_by_key(|(_, it)| it.seq);
        let joined = |l: bool, r: bool| match cfg.join {
            JoinType::Inner => l && r,
            JoinType::Left => l,
            JoinType::Outer => l || r,
        };
        let mut pairs = Vec::new();
        let mut tombstones = Vec::new();
        for (is_left, it) in all {
            cx.observe(it.rec.timestamp());
            let Some(k) = it.rec.key().map(<[u8]>::to_vec) else {
                // An unkeyed stream record meets nothing.
                if is_left && !cfg.as_table && cfg.join != JoinType::Inner {
                    pairs.push(Pair {
                        key: None,
                        ts: it.rec.timestamp(),
                        left: it.rec.value().map(<[u8]>::to_vec),
                        right: None,
                        seq: it.seq,
                        rec: it.rec,
                    });
                }
                continue;
            };
            let table_key = |side: u8| {
                let mut sk = keys::step(cx.pipeline, b'j', &cfg.name, cx.partition);
                sk.push(side);
                keys::push_key(&mut sk, &k);
                sk
            };
            let (lk, rk) = (table_key(b'l'), table_key(b'r'));
            // Keep the newest value of each table side (and what it was, to
            // know whether a join result existed before).
            let mut before = None;
            if !is_left || cfg.as_table {
                if cfg.as_table {
                    before = Some((cx.get(&lk)?, cx.get(&rk)?));
                }
                let sk = if is_left { lk.clone() } else { rk.clone() };
                match it.rec.value() {
                    Some(v) => cx.txn.put(sk, v.to_vec()),
                    None => cx.txn.delete(sk),
                }
            }
            if !is_left && !cfg.as_table {
                // Stream-table: a table update emits nothing.
                continue;
            }
            let right = cx.get(&rk)?;
            let left = if cfg.as_table {
                cx.get(&lk)?
            } else {
                it.rec.value().map(<[u8]>::to_vec)
            };
            let ts = it.rec.timestamp();
            if joined(left.is_some(), right.is_some()) {
                pairs.push(Pair {
                    key: Some(k),
                    ts,
                    left,
                    right,
                    seq: it.seq,
                    rec: it.rec,
                });
            } else if let Some((l0, r0)) = before
                && joined(l0.is_some(), r0.is_some())
            {
                // Table-table: the key's join result is gone.
                tombstones.push(Item {
                    seq: it.seq,
                    rec: Packed::new(it.rec.offset(), ts, Some(&k), None, std::iter::empty()),
                });
            }
        }
        let mut next = join(self.guest.as_mut(), &self.cfg, cx, pairs)?;
        next.extend(tombstones);
        next.sort_by_key(|it| it.seq);
        Ok(next)
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}
