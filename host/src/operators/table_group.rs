//! Aggregates over a table's rows, as Kafka Streams' `KGroupedTable`
//! (`table.groupBy(selector).count()` / `aggregate` / `reduce`), in two
//! parts either side of the repartition topic:
//!
//! - [`TableGroup`], the map step in front: its function groups each row
//!   (the new key is the group, the output value the row's contribution).
//!   The host keeps, per row key, the group and value it sent last; when a
//!   row changes group (or is deleted, or its function rejects it) the old
//!   group gets a removal (a record with the header `weir.table.remove`),
//!   and the new group the row; a row that stays in its group sends it
//!   once. Every record carries the row's key (`weir.table.row`).
//! - [`TableAggregate`], the `from_table` aggregate: it keeps each group's
//!   rows and, when one changes, makes the group's accumulator anew from
//!   its rows (the function's `add` over them, by row key), so the guest
//!   needs no subtractor; it emits the result once per change (uncached)
//!   or once per commit (the state cache on), as Kafka Streams'
//!   `KTableAggregate` emits its adder's and subtractor's result.

use anyhow::Context;

use super::accumulate::{Presentable, call_add, present};
use super::map::route;
use super::{Ctx, Item, Operator};
use crate::codec;
use crate::pipeline::config::Step as StepConfig;
use crate::pipeline::keys;
use crate::record::{Failure, Packed};
use crate::runtime::Guest;
use crate::runtime::guest::{Emitted, process_batch};

/// The header naming the table row a grouped record comes from.
pub const ROW: &str = "weir.table.row";
/// The header of a removal: the row leaves the record's group.
pub const REMOVE: &str = "weir.table.remove";

/// The grouping map step in front of a `from_table` aggregate.
pub struct TableGroup {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
}

impl TableGroup {
    /// The grouping step running `guest` (a mapper).
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        TableGroup { cfg, guest }
    }
}

fn sent_key(cx: &Ctx<'_>, cfg: &StepConfig, row: &[u8]) -> Vec<u8> {
    let mut k = keys::step(cx.pipeline, b'n', &cfg.name, cx.partition);
    keys::push_key(&mut k, row);
    k
}

/// A grouped record: `group`, `value` (none for a removal), the row's
/// timestamp and headers, and the row key.
fn grouped(row: &Packed, group: &[u8], value: Option<&[u8]>, key: &[u8]) -> Packed {
    let remove: &[(&str, &[u8])] = if value.is_none() {
        &[(REMOVE, b"1")]
    } else {
        &[]
    };
    Packed::new(
        row.offset(),
        row.timestamp(),
        Some(group),
        value,
        row.headers()
            .filter(|(n, _)| *n != ROW && *n != REMOVE)
            .chain([(ROW, key)])
            .chain(remove.iter().copied()),
    )
}

impl Operator for TableGroup {
    fn config(&self) -> &StepConfig {
        &self.cfg
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        _side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        // As Kafka Streams' table source, a row without a key is dropped.
        let flow: Vec<Item> = flow
            .into_iter()
            .filter(|it| it.rec.key().is_some())
            .collect();
        // The function groups the rows that have a value.
        let with_value: Vec<usize> = (0..flow.len())
            .filter(|&i| flow[i].rec.value().is_some())
            .collect();
        let inputs: Vec<&Packed> = with_value.iter().map(|&i| &flow[i].rec).collect();
        let (outcomes, _) = process_batch(self.guest.as_mut(), &inputs, None)?;
        let mut new: Vec<Option<Packed>> = vec![None; flow.len()];
        let mut others = Vec::new();
        for (idx, o) in outcomes {
            let Some(&at) = with_value.get(idx) else {
                continue;
            };
            match o {
                Emitted::Output(None, rec) if new[at].is_none() && rec.key().is_some() => {
                    new[at] = Some(rec);
                }
                Emitted::Output(None, _) => {}
                other => others.push((at, other)),
            }
        }
        route(&self.cfg, cx.out, &flow, others);
        let mut next = Vec::new();
        for (it, new) in flow.iter().zip(new) {
            let Some(row) = it.rec.key() else { continue };
            let sk = sent_key(cx, &self.cfg, row);
            let old_group = match cx.get(&sk)? {
                Some(b) => Some(
                    codec::Reader::new(&b)
                        .bytes("group")
                        .context("a table grouping's stored group is corrupt")?
                        .to_vec(),
                ),
                None => None,
            };
            // An output without a key or a value groups nothing (Kafka
            // Streams skips a selected pair with a null key or value).
            let new = new.filter(|n| n.value().is_some());
            let new_group = new.as_ref().and_then(Packed::key).map(<[u8]>::to_vec);
            if let Some(old) = &old_group
                && new_group.as_ref() != Some(old)
            {
                next.push(Item {
                    seq: it.seq,
                    rec: grouped(&it.rec, old, None, row),
                });
            }
            match (&new, &new_group) {
                (Some(n), Some(g)) => {
                    next.push(Item {
                        seq: it.seq,
                        rec: grouped(&it.rec, g, Some(n.value().unwrap_or_default()), row),
                    });
                    let mut b = Vec::new();
                    codec::put_bytes(&mut b, g);
                    cx.txn.put(sk, b);
                }
                _ => {
                    if old_group.is_some() {
                        cx.txn.delete(sk);
                    }
                }
            }
        }
        Ok(next)
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}

/// A `from_table` aggregate.
pub struct TableAggregate {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
    /// Emit once per commit (the state cache on).
    defer: bool,
    /// Groups changed since the last commit: (group, last record), in the
    /// order of their first change (emitted in the order of their last).
    held: Vec<(Vec<u8>, Item, u64)>,
    index: rustc_hash::FxHashMap<Vec<u8>, usize>,
    held_bytes: usize,
    touches: u64,
}

impl TableAggregate {
    /// The aggregate running `guest` (an aggregator).
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        TableAggregate {
            cfg,
            guest,
            defer: false,
            held: Vec::new(),
            index: rustc_hash::FxHashMap::default(),
            held_bytes: 0,
            touches: 0,
        }
    }

    fn rows_prefix(&self, cx: &Ctx<'_>, group: &[u8]) -> Vec<u8> {
        let mut k = keys::step(cx.pipeline, b'm', &self.cfg.name, cx.partition);
        keys::push_key(&mut k, group);
        k
    }

    /// Makes `group`'s accumulator anew from its rows and stores it, stamped
    /// with the newest time of its changes; returns what to present.
    fn remake(
        &mut self,
        cx: &mut Ctx<'_>,
        group: &[u8],
        it: &Item,
    ) -> anyhow::Result<Option<Presentable>> {
        let prefix = self.rows_prefix(cx, group);
        let rows = cx.range(&prefix, &keys::prefix_end(&prefix), usize::MAX)?;
        let recs: Vec<Packed> = rows
            .iter()
            .map(|(_, v)| {
                Packed::new(
                    0,
                    it.rec.timestamp(),
                    Some(group),
                    Some(v),
                    std::iter::empty(),
                )
            })
            .collect();
        let refs: Vec<&Packed> = recs.iter().collect();
        let members: Vec<usize> = (0..recs.len()).collect();
        let acc = match call_add(self.guest.as_mut(), &refs, &[(None, &members)])? {
            Ok((accs, rejected)) => {
                if let Some((_, m)) = rejected.into_iter().next() {
                    cx.out
                        .dead_packed(&self.cfg.name, &it.rec, Failure::Rejected(m));
                    return Ok(None);
                }
                accs.into_iter().next().unwrap_or_default()
            }
            Err(trap) => {
                cx.out
                    .dead_packed(&self.cfg.name, &it.rec, Failure::Trapped(trap));
                return Ok(None);
            }
        };
        let k = keys::agg(cx.pipeline, &self.cfg.name, cx.partition, group, 0);
        let ts = match cx.get(&k)? {
            Some(v) => {
                let (_, ts, _) =
                    keys::agg_value_ts(&v).context("a stored accumulator is corrupt")?;
                ts.max(it.rec.timestamp())
            }
            None => it.rec.timestamp(),
        };
        cx.txn.put(k, keys::agg_entry(0, ts, &acc));
        Ok(Some(Presentable {
            key: group.to_vec(),
            start: 0,
            end: 0,
            acc,
            seq: it.seq,
            ts,
            input: Some(it.rec.clone()),
            headers: it
                .rec
                .headers()
                .filter(|(n, _)| *n != ROW && *n != REMOVE)
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
        }))
    }
}

impl Operator for TableAggregate {
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
        for it in flow {
            cx.observe(it.rec.timestamp());
            let header = |name: &str| {
                it.rec
                    .headers()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_vec())
            };
            let (Some(group), Some(row)) = (it.rec.key().map(<[u8]>::to_vec), header(ROW)) else {
                cx.out.dead_packed(
                    &self.cfg.name,
                    &it.rec,
                    Failure::Rejected(format!(
                        "step {}: a `from_table` aggregate takes the grouped rows of the map step in front of it, and this record is none",
                        self.cfg.name
                    )),
                );
                continue;
            };
            let mut rk = self.rows_prefix(cx, &group);
            keys::push_key(&mut rk, &row);
            match (header(REMOVE), it.rec.value()) {
                (None, Some(v)) => cx.txn.put(rk, v.to_vec()),
                _ => cx.txn.delete(rk),
            }
            if self.defer {
                self.touches += 1;
                let order = self.touches;
                match self.index.get(&group) {
                    Some(&i) => {
                        if let Some(h) = self.held.get_mut(i) {
                            self.held_bytes -= h.1.rec.bytes().len();
                            self.held_bytes += it.rec.bytes().len();
                            h.1 = it;
                            h.2 = order;
                        }
                    }
                    None => {
                        self.held_bytes += super::held_bytes::<(Vec<u8>, Item, u64), Vec<u8>>(
                            &group,
                            &[it.rec.bytes().len()],
                        );
                        self.index.insert(group.clone(), self.held.len());
                        self.held.push((group, it, order));
                    }
                }
                continue;
            }
            if let Some(p) = self.remake(cx, &group, &it)? {
                out.extend(present(self.guest.as_mut(), &self.cfg, cx, vec![p])?);
            }
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
        held.sort_by_key(|h| h.2);
        let mut items = Vec::new();
        for (group, it, _) in held {
            if let Some(p) = self.remake(cx, &group, &it)? {
                items.push(p);
            }
        }
        present(self.guest.as_mut(), &self.cfg, cx, items)
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
