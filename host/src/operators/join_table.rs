//! Joins with a table on the other side. Stream-table: each stream record
//! meets the newest value of its key in the table (`with`), and a table
//! update emits nothing; a result has the stream record's timestamp.
//! Table-table (`as_table = true`): both sides keep their newest value per
//! key and its timestamp, an update on either side emits the join's new
//! result with the larger of the two timestamps, and a deletion emits a
//! tombstone where Kafka Streams' table-table joins do. With the state
//! cache on, a deletion of a key its side does not hold emits nothing, as
//! Kafka Streams' cached tables never forward one.
//!
//! A stream-table join with `history` reads a versioned table, as Kafka
//! Streams' versioned key-value stores keep one (see [`versioned`]): a
//! stream record meets the value the table had at its timestamp. With
//! `grace` too, stream records wait in a buffer for late table records
//! (see [`buffer`]).

mod buffer;
mod versioned;

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
    /// The task has a state cache (see [`Operator::defer_updates`]).
    cached: bool,
}

impl TableJoin {
    /// A table join running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        TableJoin {
            cfg,
            guest,
            cached: false,
        }
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
                // An unkeyed stream record meets nothing (a left join
                // emits it alone if it has a value, as Kafka Streams does).
                if is_left
                    && !cfg.as_table
                    && cfg.join != JoinType::Inner
                    && it.rec.value().is_some()
                {
                    pairs.push(Pair {
                        key: None,
                        ts: it.rec.timestamp(),
                        left: it.rec.value().map(<[u8]>::to_vec),
                        right: None,
                        seq: it.seq,
                        rec: it.rec,
                        headers_of: None,
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
            let ts = it.rec.timestamp();
            // The two values the result joins, its timestamp, and whether a
            // deletion that leaves no result emits a tombstone.
            let (left, right, ts, tombstone) = if !cfg.as_table {
                if !is_left {
                    // Stream-table: keep the table's newest value (and,
                    // versioned, its older ones); a table update emits
                    // nothing.
                    match cfg.history {
                        Some(h) => {
                            versioned::put(cx, cfg, versioned::RIGHT, &k, it.rec.value(), ts, h)?;
                        }
                        None => match it.rec.value() {
                            Some(v) => cx.txn.put(rk, v.to_vec()),
                            None => cx.txn.delete(rk),
                        },
                    }
                    continue;
                }
                if let Some(h) = cfg.history
                    && cfg.grace > 0
                    && it.rec.value().is_some()
                    && let Some(due) = buffer::put(cx, cfg, &k, &it.rec)?
                {
                    // Buffered: the records whose grace is over join now.
                    for rec in due {
                        let key = rec.key().map(<[u8]>::to_vec).unwrap_or_default();
                        let right = versioned::get(cx, cfg, &key, rec.timestamp(), h)?;
                        if joined(true, right.is_some()) {
                            pairs.push(Pair {
                                key: Some(key),
                                ts: rec.timestamp(),
                                left: rec.value().map(<[u8]>::to_vec),
                                right,
                                seq: it.seq,
                                rec,
                                headers_of: None,
                            });
                        }
                    }
                    continue;
                }
                let right = match cfg.history {
                    Some(h) => versioned::get(cx, cfg, &k, ts, h)?,
                    None => cx.get(&rk)?,
                };
                (it.rec.value().map(<[u8]>::to_vec), right, ts, false)
            } else {
                // Table-table: each side keeps its newest value and that
                // value's timestamp; a result carries the larger of the two
                // sides'.
                let (this_k, other_k) = if is_left { (&lk, &rk) } else { (&rk, &lk) };
                let (this_ts, other_ts) = if is_left {
                    (table_key(b'L'), table_key(b'R'))
                } else {
                    (table_key(b'R'), table_key(b'L'))
                };
                let this_old = cx.get(this_k)?;
                let this_new = it.rec.value().map(<[u8]>::to_vec);
                if let Some(h) = cfg.history {
                    // Versioned sides (KIP-914): a record older than its
                    // key's newest, or than the history, joins nothing. No
                    // cache: Kafka Streams' versioned stores have none.
                    let side = if is_left {
                        versioned::LEFT
                    } else {
                        versioned::RIGHT
                    };
                    let put = versioned::put(cx, cfg, side, &k, this_new.as_deref(), ts, h)?;
                    if put != versioned::Put::Latest {
                        continue;
                    }
                } else {
                    // A cached Kafka Streams table forwards a change only
                    // when its old or new value is there. Behind a filter
                    // (a map with `as_table`), a change from nothing to
                    // nothing reaches an inner join whatever the cache (the
                    // filter forwards what its source held and it dropped)
                    // and never a left or outer one (whose filter sends old
                    // values, and drops such a change).
                    let nothing = this_old.is_none() && this_new.is_none();
                    let skipped = match (cfg.after_table_map && is_left, cfg.join) {
                        (false, _) => self.cached,
                        (true, JoinType::Inner) => false,
                        (true, JoinType::Left | JoinType::Outer) => true,
                    };
                    if nothing && skipped {
                        continue;
                    }
                    match &this_new {
                        Some(v) => {
                            cx.txn.put(this_k.clone(), v.clone());
                            cx.txn.put(this_ts, keys::ord_i64(ts).to_vec());
                        }
                        None => {
                            cx.txn.delete(this_k.clone());
                            cx.txn.delete(this_ts);
                        }
                    }
                }
                let other = cx.get(other_k)?;
                let ts = match &other {
                    Some(_) => cx
                        .get(&other_ts)?
                        .filter(|b| b.len() == 8)
                        .map_or(ts, |b| ts.max(keys::from_ord_i64(&b))),
                    None => ts,
                };
                // With no result, a tombstone where Kafka Streams forwards
                // one: a deletion with the other side present in an inner
                // join; on the left of a left join, with the other side
                // present or a value before; in an outer join, a deletion
                // of a value that was.
                let tombstone = match cfg.join {
                    JoinType::Inner => other.is_some(),
                    JoinType::Left => is_left && (other.is_some() || this_old.is_some()),
                    JoinType::Outer => this_old.is_some(),
                };
                if is_left {
                    (this_new, other, ts, tombstone)
                } else {
                    (other, this_new, ts, tombstone)
                }
            };
            if joined(left.is_some(), right.is_some()) {
                pairs.push(Pair {
                    key: Some(k),
                    ts,
                    left,
                    right,
                    seq: it.seq,
                    rec: it.rec,
                    headers_of: None,
                });
            } else if tombstone {
                tombstones.push(Item {
                    seq: it.seq,
                    rec: Packed::new(it.rec.offset(), ts, Some(&k), None, it.rec.headers()),
                });
            }
        }
        let mut next = join(self.guest.as_mut(), &self.cfg, cx, pairs)?;
        next.extend(tombstones);
        next.sort_by_key(|it| it.seq);
        Ok(next)
    }

    fn defer_updates(&mut self, on: bool) {
        self.cached = on;
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}
