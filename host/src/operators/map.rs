//! Map, filter, flat-map and routing: a mapper's outputs go on down the flow
//! (default output) or to their named outputs' topics.

use super::{Collector, Ctx, Item, Operator};
use crate::pipeline::config::Step as StepConfig;
use crate::record::Packed;
use crate::runtime::Guest;
use crate::runtime::guest::{Emitted, process_batch};

/// A map step.
pub struct Map {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
}

impl Map {
    /// A map step running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        Map { cfg, guest }
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
        let inputs: Vec<&Packed> = flow.iter().map(|it| &it.rec).collect();
        let (outcomes, _) = process_batch(self.guest.as_mut(), &inputs, None)?;
        Ok(route(&self.cfg, cx.out, &flow, outcomes))
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}
