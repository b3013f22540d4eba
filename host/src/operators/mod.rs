//! Operators: one file per kind of step, each behind [`Operator`].
//!
//! An operator takes a batch of records flowing through the pipeline (and,
//! for a join, the records of its other side), a [`Ctx`] with the task's
//! state view and an output [`Collector`], and returns the records that flow
//! on to the next step. It never calls another operator or the task: what a
//! timer emits comes back from [`Operator::tick`] and the task loop alone
//! runs the next step.
//!
//! One rule for guest failures, everywhere: a record that traps or is
//! rejected in `process`, `add`, `merge`, `present`, `join` or a timer goes to
//! the dead letters with the step and the reason, and the rest of the batch
//! goes on; an output to a named output the pipeline does not declare is a
//! dead letter too, with a reason saying how to declare it. A storage error
//! is not a guest failure: it fails the batch (nothing of it commits).

mod accumulate;
pub mod aggregate;
pub mod join_foreign;
pub mod join_global;
pub mod join_stream;
pub mod join_table;
pub mod map;
mod pairs;
pub mod processor;
pub mod session;
pub mod sliding;
pub mod suppress;
pub mod table_group;

use std::sync::Arc;

use crate::backend::{StateRead, Txn};
use crate::pipeline::config::{FkPart, Step as StepConfig, StepKind, Window, WithKind};
use crate::record::{DeadLetter, Failure, Packed, Record};
use crate::runtime::Guest;

/// A record moving through the steps; `seq` is its position in the task's
/// merged source order, which decides the order in which stateful steps see
/// records from different sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Position in the merged source order.
    pub seq: u64,
    /// The record, packed.
    pub rec: Packed,
}

/// What operators emit besides the flow: records to named outputs and dead
/// letters, with counters per step.
#[derive(Default, Debug)]
pub struct Collector {
    /// Records for named outputs: (topic, record).
    pub emitted: Vec<(String, Packed)>,
    /// Dead letters: (step name, dead letter).
    pub dead: Vec<(String, DeadLetter)>,
    /// Late records dropped.
    pub late: u64,
    /// Configuration errors met: (step, what is wrong) — an output or a
    /// state store the pipeline does not declare.
    pub config: Vec<(String, String)>,
    /// Send a named output to the topic of its own name, declared or not
    /// (`weir test MODULE.wasm`: no pipeline file declares outputs).
    pub any_output: bool,
}

impl Collector {
    /// Sends a record that failed in `step` to the dead letters.
    pub fn dead(&mut self, step: &str, record: Record, failure: Failure) {
        self.dead
            .push((step.to_string(), DeadLetter { record, failure }));
    }

    /// Sends a record of the flow that failed in `step` to the dead letters.
    pub fn dead_packed(&mut self, step: &str, record: &Packed, failure: Failure) {
        self.dead(step, record.to_record(), failure);
    }

    /// Routes an output of `step` to its named output `to`: to its topic
    /// when the pipeline declares it, else to the dead letters (with `input`,
    /// the record it came from, and how to declare it).
    pub fn named(&mut self, step: &StepConfig, to: &str, rec: Packed, input: &Packed) {
        if self.any_output {
            self.emitted.push((to.to_string(), rec));
            return;
        }
        match step.outputs.get(to) {
            Some(topic) => self.emitted.push((topic.clone(), rec)),
            None => {
                let declared: Vec<&String> = step.outputs.keys().collect();
                let reason = format!(
                    "step {} emitted to the output `{to}`, which the pipeline does not declare (declared: {declared:?}); add `outputs = {{ {to} = \"TOPIC\" }}` to the step",
                    step.name
                );
                self.config.push((step.name.clone(), reason.clone()));
                self.dead_packed(&step.name, input, Failure::Rejected(reason));
            }
        }
    }
}

/// What an operator works with during one batch.
pub struct Ctx<'a> {
    /// The pipeline (its name prefixes every state key).
    pub pipeline: &'a str,
    /// The task's partition.
    pub partition: u32,
    /// Committed state.
    pub base: &'a Arc<dyn StateRead>,
    /// The task's pending state changes.
    pub txn: &'a mut Txn,
    /// The task's stream time: the largest timestamp seen.
    pub stream_time: &'a mut i64,
    /// The task's stream time before this batch's records: earlier steps
    /// of the segment may have moved `stream_time` past all of them
    /// already.
    pub batch_time: i64,
    /// Named outputs and dead letters.
    pub out: &'a mut Collector,
    /// The wall clock, in ms since the Unix epoch (simulated in tests).
    pub now_ms: i64,
}

impl Ctx<'_> {
    /// The value of a state key: pending, else committed.
    pub fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        self.txn.get(self.base.as_ref(), key)
    }

    /// The values of `keys`, in their order: pending, else committed (read
    /// together).
    pub fn get_many(&self, keys: &[&[u8]]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        self.txn.get_many(self.base.as_ref(), keys)
    }

    /// State entries with `start <= key < end`, up to `limit`.
    pub fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.txn.range(self.base.as_ref(), start, end, limit)
    }

    /// Moves stream time forward to `ts` (it never goes back).
    pub fn observe(&mut self, ts: i64) {
        if ts > *self.stream_time {
            *self.stream_time = ts;
        }
    }
}

/// What a guest's `present` or `join` made of each of `n` items: a value
/// (`None`: emit nothing), a rejection, or no entry at all.
pub(crate) type Values = Vec<Option<Result<Option<Vec<u8>>, String>>>;

/// Reads a result list of values (tag 3) and rejections (tag 1) for `n`
/// items.
fn values(out: &[u8], n: usize) -> Result<Values, crate::codec::Malformed> {
    let mut values: Values = vec![None; n];
    crate::codec::read_results(out, n, |idx, e| {
        if let Some(slot) = values.get_mut(idx as usize) {
            match e {
                crate::codec::Entry::Value(v) => *slot = Some(Ok(v.map(<[u8]>::to_vec))),
                crate::codec::Entry::Rejected(m) => *slot = Some(Err(m.to_string())),
                _ => {}
            }
        }
    })?;
    Ok(values)
}

/// One step of a pipeline.
pub trait Operator: Send {
    /// The step's settings.
    fn config(&self) -> &StepConfig;

    /// Runs one batch: `flow` in order, and `side`, the records of a join's
    /// other side (empty for every other kind). Returns what flows on.
    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>>;

    /// Fires what came due with no input (wall-clock timers); what it
    /// returns flows on, with `seq`.
    fn tick(&mut self, cx: &mut Ctx<'_>, seq: u64) -> anyhow::Result<Vec<Item>> {
        let _ = (cx, seq);
        Ok(Vec::new())
    }

    /// Whether [`Operator::tick`] can ever emit (a processor's timers).
    fn ticks(&self) -> bool {
        false
    }

    /// Holds back what it emits on update until [`Operator::flush`], so
    /// that a key (and window) updated several times between two commits
    /// is emitted once, with its latest value (steps that emit on update
    /// and support it: windowed and unwindowed aggregates).
    fn defer_updates(&mut self, on: bool) {
        let _ = on;
    }

    /// Emits what it held back (just before a commit); what it returns
    /// flows on.
    fn flush(&mut self, cx: &mut Ctx<'_>) -> anyhow::Result<Vec<Item>> {
        let _ = cx;
        Ok(Vec::new())
    }

    /// Drops what it held back (the uncommitted batches are replayed).
    fn discard(&mut self) {}

    /// About how much memory what it holds back takes, in bytes.
    fn deferred_bytes(&self) -> usize {
        0
    }

    /// The function it runs.
    fn guest(&self) -> &dyn Guest;

    /// Replaces the function it runs (a hot swap, between two batches);
    /// returns the old one.
    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest>;
}

/// The operator for a step.
pub fn build(cfg: StepConfig, guest: Box<dyn Guest>) -> Box<dyn Operator> {
    if let Some(limit) = cfg.emit_after {
        let inner = build(
            StepConfig {
                emit_after: None,
                ..cfg
            },
            guest,
        );
        return Box::new(suppress::Suppress::new(inner, limit));
    }
    match cfg.kind {
        StepKind::Map if cfg.groups_table => Box::new(table_group::TableGroup::new(cfg, guest)),
        StepKind::Map => Box::new(map::Map::new(cfg, guest)),
        StepKind::Processor => Box::new(processor::Processor::new(cfg, guest)),
        StepKind::Aggregate if cfg.from_table => {
            Box::new(table_group::TableAggregate::new(cfg, guest))
        }
        StepKind::Aggregate => match cfg.window {
            Some(Window::Session { .. }) => Box::new(session::Session::new(cfg, guest)),
            Some(Window::Sliding { .. }) => Box::new(sliding::Sliding::new(cfg, guest)),
            _ => Box::new(aggregate::Aggregate::new(cfg, guest)),
        },
        StepKind::Join => match (cfg.foreign_key.as_ref().map(|f| f.part), cfg.with_kind) {
            (Some(FkPart::Subscribe), _) => Box::new(join_foreign::Subscribe::new(cfg, guest)),
            (Some(FkPart::Join), _) => Box::new(join_foreign::Join::new(cfg, guest)),
            (Some(FkPart::Resolve), _) => Box::new(join_foreign::Resolve::new(cfg, guest)),
            (None, WithKind::Table) => Box::new(join_table::TableJoin::new(cfg, guest)),
            (None, WithKind::Stream) => Box::new(join_stream::StreamJoin::new(cfg, guest)),
            (None, WithKind::Global) => Box::new(join_global::GlobalJoin::new(cfg, guest)),
        },
    }
}

#[cfg(test)]
pub(crate) mod testing;

/// The memory an update held for the next commit takes: its slot (a `T`)
/// in a vector that doubles as it grows, its index entry (a key of `K` and
/// a position) in a hash map that does too, and the heap blocks of its key
/// (held twice, there and in the index) and of `heap` (its record, its
/// accumulator).
pub(crate) fn held_bytes<T, K>(key: &[u8], heap: &[usize]) -> usize {
    use crate::backend::txn::heap_bytes;
    2 * std::mem::size_of::<T>()
        + 2 * (std::mem::size_of::<K>() + std::mem::size_of::<usize>() + 1)
        + 2 * heap_bytes(key.len())
        + heap.iter().map(|n| heap_bytes(*n)).sum::<usize>()
}

#[cfg(test)]
mod join_tests;
#[cfg(test)]
mod processor_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod sliding_tests;
#[cfg(test)]
mod stream_join_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;
