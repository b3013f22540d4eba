//! Pipelines: a file of steps (see [`config`]) run over the embedded log.
//!
//! The steps split into *segments* wherever records must be repartitioned:
//! an aggregate or a join that follows a step which may have changed the
//! key reads from an internal topic `NAME-STEP-repartition`, keyed by the new
//! key, so that every record of a key reaches the same task (and the same
//! state). Each segment runs one *task* per partition of its source, in its
//! own thread. A task reads a batch, runs it through its steps (consecutive
//! steps run fused, each called once per batch), and commits the outputs,
//! the state changes, the stream time and the input offsets in one commit:
//! exactly once, across crashes. A foreign-key join spans three segments
//! (see [`config::ForeignKey`]). [`engine`] starts a pipeline and hands
//! back a handle on it; the operators live in [`crate::operators`], the
//! storage behind [`crate::backend`].

mod cache;
pub mod config;
pub mod engine;
pub mod keys;
mod pending;
mod supervisor;
mod task;
mod upgrade;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::backend::{Backend, Topic};
use crate::runtime::Runtime;

pub use self::config::Pipeline;
use self::config::{FkPart, StepKind, WithKind};
pub use self::engine::{PipelineHandle, Status, StepStatus, SwapState};

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Stop once every input is consumed (as of the start) and every
    /// internal topic drained.
    pub until_caught_up: bool,
    /// Show a progress line on stderr (only on a terminal).
    pub progress: bool,
    /// Records per batch.
    pub batch: usize,
    /// Benchmarks only: native stand-ins for modules, by file name.
    pub native: Option<fn(&str) -> Option<crate::runtime::NativeFn>>,
    /// A simulated wall clock (ms) the tasks read instead of the system's
    /// (`weir test`); with it, a task that is caught up fires its
    /// wall-clock and event-time timers once more before it ends, and a
    /// segment starts reading only once the segments before it finished
    /// (so that its batches, and its outputs, are the same every run).
    pub now_ms: Option<Arc<std::sync::atomic::AtomicI64>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            until_caught_up: false,
            progress: false,
            batch: 500,
            native: None,
            now_ms: None,
        }
    }
}

/// A run of consecutive steps that shares one source topic.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    /// Its source topic (the input, or a repartition topic).
    pub source: String,
    /// Indexes into the pipeline's steps.
    pub steps: std::ops::Range<usize>,
    /// Where its default output goes: the next segment's repartition topic,
    /// or the pipeline's output.
    pub sink: Option<String>,
}

/// The repartition topic in front of a step.
pub fn repartition_topic(pipeline: &str, step: &str) -> String {
    format!("{pipeline}-{step}-repartition")
}

/// The dead-letter topic of a pipeline.
pub fn dead_letter_topic(p: &Pipeline) -> String {
    p.dead_letter
        .clone()
        .unwrap_or_else(|| format!("{}-dead-letters", p.name))
}

pub(crate) fn segments(p: &Pipeline) -> Vec<Segment> {
    let mut segs = Vec::new();
    let mut start = 0;
    let mut source = p.input.clone();
    let mut key_changed = false;
    for (i, s) in p.steps.iter().enumerate() {
        // A global table join needs no repartition: every task has all of
        // the table.
        let stateful = match s.kind {
            StepKind::Aggregate => true,
            StepKind::Join => s.with_kind != WithKind::Global,
            _ => false,
        };
        // A foreign-key join's middle part reads the subscriptions (keyed
        // by the foreign key), its last part the responses (keyed by the
        // left key): each from a topic of its own.
        let fk_hop = s
            .foreign_key
            .as_ref()
            .is_some_and(|f| f.part != FkPart::Subscribe);
        // A table's rows regrouped always go through a repartition topic.
        if (stateful && key_changed) || fk_hop || s.from_table {
            let topic = repartition_topic(&p.name, &s.name);
            segs.push(Segment {
                source: source.clone(),
                steps: start..i,
                sink: Some(topic.clone()),
            });
            source = topic;
            start = i;
            key_changed = false;
        }
        match s.kind {
            StepKind::Map | StepKind::Processor => key_changed |= !s.key_preserving,
            StepKind::Aggregate | StepKind::Join => {}
        }
    }
    segs.push(Segment {
        source,
        steps: start..p.steps.len(),
        sink: p.output.clone(),
    });
    segs
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Records read from sources (inputs and internal topics).
    pub records_in: u64,
    /// Records written to output topics (not internal ones).
    pub records_out: u64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Late records dropped by windowed aggregates.
    pub late_dropped: u64,
    /// Per step that dead-lettered records: its name, how many, and the
    /// first reason.
    pub first_dead_letters: Vec<(String, u64, String)>,
    /// Steps whose every record went to the dead letters and that met a
    /// configuration error (an undeclared output or state store): the step
    /// and what to fix.
    pub misconfigured: Vec<(String, String)>,
}

/// The topic called `name`, created with `partitions` if it does not exist.
pub fn ensure_topic(backend: &dyn Backend, name: &str, partitions: u32) -> anyhow::Result<Topic> {
    backend.ensure_topic(name, partitions)
}

/// Runs a pipeline until `stop` is set (Ctrl-C) or, with
/// `until_caught_up`, until every input is consumed.
pub fn run(
    backend: Arc<dyn Backend>,
    pipeline: &Pipeline,
    runtime: &Runtime,
    options: &RunOptions,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Summary> {
    let handle = engine::start(backend, pipeline, runtime, options, stop)?;
    if options.progress && std::io::stderr().is_terminal() {
        progress_loop(&handle);
    }
    handle.wait()
}

/// Shows a progress line on stderr (rate, records in, partitions run, lag)
/// until the run ends.
pub fn progress_loop(handle: &PipelineHandle) {
    let started = Instant::now();
    let mut last = 0u64;
    let mut last_t = Instant::now();
    while !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(250));
        let status = handle.status();
        let n = status.records_in;
        let dt = last_t.elapsed().as_secs_f64().max(1e-3);
        let rate = n.saturating_sub(last) as f64 / dt;
        last = n;
        last_t = Instant::now();
        let mut lag = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for st in &status.steps {
            if seen.insert(st.lag) || st.lag > 0 {
                lag.push(format!("{} lag {}", st.name, st.lag));
            }
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{:>8.0} records/s  {} in  {:.0}s  partitions {:?}  cache {:.1} MB  {}",
            rate,
            n,
            started.elapsed().as_secs_f64(),
            status.partitions,
            status.cache_bytes as f64 / 1e6,
            lag.join("  ")
        );
        let _ = err.flush();
    }
    let _ = writeln!(std::io::stderr());
}
