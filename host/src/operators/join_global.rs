//! Joins with a global table, as Kafka Streams' `KStream#join(GlobalKTable,
//! keySelector, joiner)`: every task keeps all of the table (every
//! partition of `with`, read ahead of the stream), so the stream needs no
//! repartition; a stream record meets the table's value under the key its
//! `lookup` (a JSON pointer into its value; else its own key) gives, and
//! the result keeps the stream record's key, timestamp and headers. A table
//! update emits nothing.
//!
//! As in Kafka Streams 4: a stream record without a value is dropped; an
//! inner join drops a record whose lookup finds no key or no row, a left
//! join emits it with no right value. A table record without a key is
//! dropped, one without a value deletes its key.

use super::join_foreign::foreign_key_of;
use super::pairs::{Pair, join};
use super::{Ctx, Item, Operator};
use crate::pipeline::config::{JoinType, Step as StepConfig};
use crate::pipeline::keys;
use crate::record::Failure;
use crate::runtime::Guest;

/// A stream-global table join step.
pub struct GlobalJoin {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
}

impl GlobalJoin {
    /// A global table join running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        GlobalJoin { cfg, guest }
    }
}

/// Where the table's value of `key` is kept (as a stream-table join keeps
/// its table: `weir state` shows it as the table `right`).
fn table_key(cx: &Ctx<'_>, cfg: &StepConfig, key: &[u8]) -> Vec<u8> {
    let mut k = keys::step(cx.pipeline, b'j', &cfg.name, cx.partition);
    k.push(b'r');
    keys::push_key(&mut k, key);
    k
}

impl Operator for GlobalJoin {
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
        let left_join = cfg.join == JoinType::Left;
        let mut pairs = Vec::new();
        for (is_left, it) in all {
            if !is_left {
                let Some(k) = it.rec.key() else { continue };
                let tk = table_key(cx, cfg, k);
                match it.rec.value() {
                    Some(v) => cx.txn.put(tk, v.to_vec()),
                    None => cx.txn.delete(tk),
                }
                continue;
            }
            cx.observe(it.rec.timestamp());
            let Some(value) = it.rec.value() else {
                continue;
            };
            let found = match &cfg.lookup {
                None => it.rec.key().map(<[u8]>::to_vec),
                Some(pointer) => match foreign_key_of("lookup", pointer, value) {
                    Ok(k) => k,
                    Err(why) => {
                        cx.out
                            .dead_packed(&cfg.name, &it.rec, Failure::Rejected(why));
                        continue;
                    }
                },
            };
            let right = match &found {
                Some(k) => cx.get(&table_key(cx, cfg, k))?,
                None => None,
            };
            if right.is_none() && !left_join {
                continue;
            }
            pairs.push(Pair {
                key: it.rec.key().map(<[u8]>::to_vec),
                ts: it.rec.timestamp(),
                left: Some(value.to_vec()),
                right,
                seq: it.seq,
                rec: it.rec,
                headers_of: None,
            });
        }
        join(self.guest.as_mut(), &self.cfg, cx, pairs)
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}
