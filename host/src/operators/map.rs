//! Map, filter, flat-map and routing: a mapper's outputs go on down the flow
//! (default output) or to their named outputs' topics.
//!
//! A map step with `as_table = true` maps a table's changes, as Kafka
//! Streams' `KTable.filter` and `KTable.mapValues` (not materialized) do:
//! each row keeps its key, a deletion passes on without a call, a row the
//! function drops becomes a deletion of its key, and a row without a key is
//! skipped (a table holds none).

use super::{Collector, Ctx, Item, Operator};
use crate::pipeline::config::Step as StepConfig;
use crate::pipeline::keys;
use crate::record::{Failure, Packed};
use crate::runtime::Guest;
use crate::runtime::guest::{Emitted, process_batch};

/// A map step.
pub struct Map {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
    /// The task has a state cache (see [`Operator::defer_updates`]).
    cached: bool,
}

impl Map {
    /// A map step running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        Map {
            cfg,
            guest,
            cached: false,
        }
    }
}

/// Where a step's outcomes go: default outputs on down the flow (with the
/// seq of the record they came from), named outputs to their topics, dead
/// letters to the dead letters. Outcome indexes index `flow`.
pub(crate) fn route(
    cfg: &StepConfig,
    out: &mut Collector,
    flow: &[Item],
    outcomes: Vec<(usize, Emitted)>,
) -> Vec<Item> {
    let mut next = Vec::with_capacity(flow.len());
    for (idx, o) in outcomes {
        let input: &Packed = &flow[idx].rec;
        match o {
            Emitted::Output(None, rec) => next.push(Item {
                seq: flow[idx].seq,
                rec,
            }),
            Emitted::Output(Some(to), rec) => out.named(cfg, &to, rec, input),
            Emitted::Failed(f) => out.dead_packed(&cfg.name, input, f),
        }
    }
    next
}

impl Map {
    /// The table form (`as_table`): one change out per row change in.
    fn run_table(&mut self, cx: &mut Ctx<'_>, flow: Vec<Item>) -> anyhow::Result<Vec<Item>> {
        // A table holds no row without a key (Kafka Streams' table source
        // skips such a record); a deletion needs no call.
        let mut flow: Vec<Item> = flow
            .into_iter()
            .filter(|it| it.rec.key().is_some())
            .collect();
        if self.cfg.tracks_rows && self.cached {
            flow = self.held_changes(cx, flow)?;
        }
        let called: Vec<usize> = (0..flow.len())
            .filter(|&i| flow[i].rec.value().is_some())
            .collect();
        let inputs: Vec<&Packed> = called.iter().map(|&i| &flow[i].rec).collect();
        let outcomes = if inputs.is_empty() {
            Vec::new()
        } else {
            process_batch(self.guest.as_mut(), &inputs, None)?.0
        };
        // What each row's call gave: its default outputs, or a failure.
        let mut gave: Vec<Result<Vec<Packed>, Failure>> =
            flow.iter().map(|_| Ok(Vec::new())).collect();
        for (idx, o) in outcomes {
            let Some(&at) = called.get(idx) else { continue };
            let input = &flow[at].rec;
            match o {
                Emitted::Output(None, rec) => {
                    if let Ok(rows) = &mut gave[at] {
                        rows.push(rec);
                    }
                }
                Emitted::Output(Some(to), rec) => cx.out.named(&self.cfg, &to, rec, input),
                Emitted::Failed(f) => gave[at] = Err(f),
            }
        }
        let mut next = Vec::with_capacity(flow.len());
        for (it, gave) in flow.iter().zip(gave) {
            let input = &it.rec;
            let rows = match gave {
                Err(f) => {
                    cx.out.dead_packed(&self.cfg.name, input, f);
                    continue;
                }
                Ok(rows) => rows,
            };
            let reason = match rows.as_slice() {
                [] => None,
                [one] if one.key() == input.key() => None,
                [one] => Some(format!(
                    "step {}: a table's map keeps each row's key (`as_table = true`, Kafka Streams' KTable.mapValues), and the function changed the key {} to {}; drop `as_table` to map a stream",
                    self.cfg.name,
                    shown(input.key()),
                    shown(one.key())
                )),
                more => Some(format!(
                    "step {}: a table's map gives each row one value or none (`as_table = true`), and the function returned {} outputs for the row {}",
                    self.cfg.name,
                    more.len(),
                    shown(input.key())
                )),
            };
            if let Some(reason) = reason {
                cx.out
                    .dead_packed(&self.cfg.name, input, Failure::Rejected(reason));
                continue;
            }
            // A deletion, or a row the function dropped: its key's deletion,
            // with the row's time and headers.
            let rec = rows.into_iter().next().unwrap_or_else(|| {
                Packed::new(
                    input.offset(),
                    input.timestamp(),
                    input.key(),
                    None,
                    input.headers(),
                )
            });
            next.push(Item { seq: it.seq, rec });
        }
        Ok(next)
    }

    /// Keeps which keys the input table holds, and leaves out a deletion of
    /// a key it does not hold: Kafka Streams' cached source table forwards
    /// none, and an inner join after a filter would emit a tombstone for it.
    fn held_changes(&self, cx: &mut Ctx<'_>, flow: Vec<Item>) -> anyhow::Result<Vec<Item>> {
        let mut kept = Vec::with_capacity(flow.len());
        let prefix = keys::step(cx.pipeline, b'h', &self.cfg.name, cx.partition);
        for it in flow {
            let Some(key) = it.rec.key() else { continue };
            let mut hk = prefix.clone();
            keys::push_key(&mut hk, key);
            let held = cx.get(&hk)?.is_some();
            match (it.rec.value().is_some(), held) {
                (true, false) => cx.txn.put(hk, Vec::new()),
                (false, true) => cx.txn.delete(hk),
                (false, false) => continue,
                (true, true) => {}
            }
            kept.push(it);
        }
        Ok(kept)
    }
}

/// A key as a message shows it: its text, quoted, or its bytes.
fn shown(key: Option<&[u8]>) -> String {
    match key {
        None => "none".to_string(),
        Some(k) => match std::str::from_utf8(k) {
            Ok(s) => format!("{s:?}"),
            Err(_) => format!("{k:?}"),
        },
    }
}

impl Operator for Map {
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
            return Ok(flow);
        }
        if self.cfg.as_table {
            return self.run_table(cx, flow);
        }
        let inputs: Vec<&Packed> = flow.iter().map(|it| &it.rec).collect();
        let (outcomes, _) = process_batch(self.guest.as_mut(), &inputs, None)?;
        Ok(route(&self.cfg, cx.out, &flow, outcomes))
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
