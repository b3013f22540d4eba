//! The engine: starts a pipeline on a backend and hands back a
//! [`PipelineHandle`] to watch it (status per step), stop it, and swap a
//! step's module while it runs. Tasks (one per assigned partition and
//! segment, each in its own thread) are created and dropped as the
//! backend's assignment changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::config::{self, Pipeline, StepKind};
use super::{RunOptions, Segment, Summary, dead_letter_topic, segments};
use crate::backend::{Assignment, Backend, Topic};
use crate::runtime::{Guest, Module, RuntimeOptions, Step, World};

mod status;

pub use self::status::{Status, StepStatus};

/// Counters of one step.
#[derive(Default)]
pub(crate) struct StepCounters {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Time spent running the step's operator (its guest calls and the
    /// host's work for it), in microseconds.
    pub busy_us: AtomicU64,
    /// The part of `busy_us` spent inside guest calls.
    pub guest_us: AtomicU64,
}

impl StepCounters {
    /// Adds a run of the step's operator: `took` in all, `in_guest` of it
    /// inside guest calls.
    pub fn add_time(&self, took: Duration, in_guest: Duration) {
        self.busy_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.guest_us
            .fetch_add(in_guest.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The module a step runs, and how many times it was swapped.
struct Slot {
    module: Module,
    generation: u64,
    /// Tasks that switched to `generation`.
    applied: usize,
    /// The first dead-letter reason of the step, and how many there were.
    first_dead: Option<String>,
    /// The first configuration error the step met.
    config_error: Option<String>,
    /// The last swap: pending until every task committed a first batch
    /// with the new module, or rolled back when one trapped in it.
    last_swap: SwapState,
    /// The module before the last swap (what a rollback returns to).
    previous: Option<Module>,
    /// Tasks that committed a first batch with the swapped-in module.
    confirmed: usize,
    /// Tasks that must switch (and confirm) for the last swap.
    expected: usize,
    /// How long each task's switch took (no batch runs meanwhile), for the
    /// last swap.
    pauses: Vec<Duration>,
}

/// How the last hot swap of a step went.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SwapState {
    /// No swap yet.
    #[default]
    None,
    /// Switched; not every task has committed a batch with it yet. A trap in
    /// a task's first batch still rolls it back.
    Pending,
    /// Every task committed a first batch with the new module.
    Confirmed,
    /// A task's first batch with the new module trapped: nothing of that
    /// batch was committed and the step went back to the module before.
    RolledBack(String),
}

/// A task's first batch after a swap trapped in the swapped step.
#[derive(Debug, thiserror::Error)]
#[error("the new module of step {step} trapped in its first batch: {reason}")]
pub(crate) struct SwapRejected {
    pub step: usize,
    pub generation: u64,
    pub step_name: String,
    pub reason: String,
}

/// Counters shared by the tasks.
#[derive(Default)]
pub(crate) struct Stats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub dead_letters: AtomicU64,
    pub late_dropped: AtomicU64,
    /// What the tasks' state caches hold, in bytes.
    pub cache_bytes: AtomicU64,
}

/// Everything the tasks of a run share.
pub(crate) struct Shared {
    pub backend: Arc<dyn Backend>,
    pub pipeline: Pipeline,
    pub segments: Vec<Segment>,
    slots: Vec<Mutex<Slot>>,
    pub steps: Vec<StepCounters>,
    runtime_options: RuntimeOptions,
    pub options: RunOptions,
    pub stop: Arc<AtomicBool>,
    pub stats: Stats,
    /// Finished tasks per segment.
    pub finished: Vec<AtomicUsize>,
    /// Tasks per segment: the partition count of its source.
    pub tasks: Vec<usize>,
    /// End offsets of external topics when the run started.
    ends_at_start: BTreeMap<(String, u32), u64>,
    topics: BTreeMap<String, Topic>,
    pub dead_letter: String,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Shared {
    /// A topic the run uses.
    pub fn topic(&self, name: &str) -> anyhow::Result<Topic> {
        self.topics
            .get(name)
            .cloned()
            .with_context(|| format!("topic {name} is not known to the run"))
    }

    /// Where an external topic's partition ended when the run started.
    pub fn end_at_start(&self, topic: &str, partition: u32) -> u64 {
        self.ends_at_start
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// The current swap generation of pipeline step `si`.
    pub fn generation(&self, si: usize) -> u64 {
        lock(&self.slots[si]).generation
    }

    /// A task switched step `si` to the current generation; the switch
    /// took `pause`. Returns whether that generation is on probation (its
    /// first batch decides whether it stays).
    pub fn applied(&self, si: usize, generation: u64, pause: Duration) -> bool {
        let mut slot = lock(&self.slots[si]);
        slot.applied += 1;
        if slot.generation != generation {
            return false;
        }
        if slot.pauses.len() < 4096 {
            slot.pauses.push(pause);
        }
        slot.last_swap == SwapState::Pending
    }

    /// A task committed its first batch with generation `generation` of
    /// step `si`.
    pub fn confirm_swap(&self, si: usize, generation: u64) {
        let mut slot = lock(&self.slots[si]);
        if slot.generation == generation && slot.last_swap == SwapState::Pending {
            slot.confirmed += 1;
            if slot.confirmed >= slot.expected {
                slot.last_swap = SwapState::Confirmed;
            }
        }
    }

    /// A task's first batch with generation `generation` of step `si`
    /// trapped: every task goes back to the module before.
    pub fn reject_swap(&self, si: usize, generation: u64, reason: &str) {
        let mut slot = lock(&self.slots[si]);
        if slot.generation != generation || slot.last_swap != SwapState::Pending {
            return;
        }
        if let Some(previous) = slot.previous.take() {
            slot.module = previous;
            slot.generation += 1;
            slot.applied = 0;
            slot.pauses.clear();
        }
        slot.last_swap = SwapState::RolledBack(reason.to_string());
    }

    /// The first dead-letter reason of a step is kept for the summary.
    pub fn note_dead_letter(&self, step: &str, reason: &str) {
        if let Some(si) = self.pipeline.steps.iter().position(|s| s.name == step) {
            let mut slot = lock(&self.slots[si]);
            if slot.first_dead.is_none() {
                slot.first_dead = Some(reason.to_string());
            }
        }
    }

    /// A step met a configuration error (an undeclared output or store).
    pub fn note_config_error(&self, step: &str, reason: &str) {
        if let Some(si) = self.pipeline.steps.iter().position(|s| s.name == step) {
            let mut slot = lock(&self.slots[si]);
            if slot.config_error.is_none() {
                slot.config_error = Some(reason.to_string());
            }
        }
    }

    /// A new instance of step `si`'s current module, and its generation.
    pub fn guest(&self, si: usize) -> anyhow::Result<(Box<dyn Guest>, u64)> {
        let (module, generation) = {
            let slot = lock(&self.slots[si]);
            (slot.module.clone(), slot.generation)
        };
        let cfg = &self.pipeline.steps[si];
        let mut options = self.runtime_options.clone();
        if let Some(mb) = cfg.memory_mb {
            options.memory_limit = mb << 20;
        }
        let mut step = Step::new(module, &cfg.name, cfg.config.clone(), &options);
        let file = cfg
            .module
            .file_name()
            .map(|f| f.to_string_lossy().into_owned());
        if let (Some(native), Some(file)) = (self.options.native, file)
            && let Some(f) = native(&file)
        {
            step.set_native(f);
        }
        step.start()
            .with_context(|| format!("step {} of pipeline {}", cfg.name, self.pipeline.name))?;
        Ok((Box::new(step), generation))
    }
}

fn expected_world(kind: StepKind) -> World {
    match kind {
        StepKind::Map => World::Mapper,
        StepKind::Aggregate => World::Aggregator,
        StepKind::Join => World::Joiner,
        StepKind::Processor => World::Processor,
    }
}

/// Checks that `module` implements what step `step` of `pipeline` needs.
pub fn check_world(pipeline: &Pipeline, step: usize, module: &Module) -> anyhow::Result<()> {
    let s = &pipeline.steps[step];
    let want = expected_world(s.kind);
    if module.world() != want {
        let fits = match module.world() {
            World::Mapper => StepKind::Map,
            World::Aggregator => StepKind::Aggregate,
            World::Joiner => StepKind::Join,
            World::Processor => StepKind::Processor,
        };
        bail!(
            "{}:{}: step {} is {} (`kind = \"{}\"`), so its module must be {}, but {} is {}: set `kind = \"{}\"`, or build the module as {}",
            pipeline.file.display(),
            s.line,
            s.name,
            s.kind.with_article(),
            s.kind.as_str(),
            want.with_article(),
            module.name(),
            module.world().with_article(),
            fits.as_str(),
            want.with_article()
        );
    }
    Ok(())
}

/// A running pipeline.
pub struct PipelineHandle {
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<anyhow::Result<()>>>,
    assigned: Arc<Mutex<Assignment>>,
    done: Arc<AtomicBool>,
    /// What the run ended with, when it failed.
    failure: Arc<Mutex<Option<String>>>,
    cleaner: Option<JoinHandle<()>>,
}

/// Starts `pipeline` on `backend`: loads and checks its modules, creates
/// its topics, and starts its tasks. Returns at once.
pub fn start(
    backend: Arc<dyn Backend>,
    pipeline: &Pipeline,
    runtime: &crate::runtime::Runtime,
    options: &RunOptions,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<PipelineHandle> {
    let mut slots = Vec::new();
    for (i, s) in pipeline.steps.iter().enumerate() {
        let most = runtime.options().memory_limit >> 20;
        if let Some(mb) = s.memory_mb
            && mb > most
        {
            bail!(
                "{}:{}: step {}: `memory_mb` = {mb} is more than the run allows ({most} MiB): lower it, or run with --memory-mb {mb}",
                pipeline.file.display(),
                s.memory_mb_line,
                s.name
            );
        }
        let m = runtime
            .load_file(&s.module)
            .with_context(|| format!("step {} of {}", s.name, pipeline.file.display()))?;
        check_world(pipeline, i, &m)?;
        slots.push(Mutex::new(Slot {
            module: m,
            generation: 0,
            applied: 0,
            first_dead: None,
            config_error: None,
            last_swap: SwapState::None,
            previous: None,
            confirmed: 0,
            expected: 0,
            pauses: Vec::new(),
        }));
    }
    let input = backend.require_topic(&pipeline.input).with_context(|| {
        format!(
            "the input of pipeline {} ({})",
            pipeline.name,
            pipeline.file.display()
        )
    })?;
    let parts = input.config.partitions;
    let segs = segments(pipeline);
    let mut topics = BTreeMap::new();
    topics.insert(input.name.clone(), input.clone());
    // Merged inputs are read beside the first, partition by partition.
    for name in &pipeline.merged {
        let t = backend.require_topic(name).with_context(|| {
            format!(
                "an input of pipeline {} ({})",
                pipeline.name,
                pipeline.file.display()
            )
        })?;
        if t.config.partitions != parts {
            bail!(
                "input {name} has {} partitions but {} has {parts}; merged inputs need the same partition count",
                t.config.partitions,
                input.name
            );
        }
        topics.insert(name.clone(), t);
    }
    // Every segment runs as many tasks as its source has partitions: the
    // input's count, but for a foreign-key join's middle part, which reads
    // the subscriptions partitioned as its right table (as Kafka Streams
    // repartitions them to the right table's count).
    let mut seg_parts = Vec::new();
    for seg in &segs {
        let mut count = parts;
        for s in &pipeline.steps[seg.steps.clone()] {
            let Some(with) = &s.with else { continue };
            let t = backend.require_topic(with).with_context(|| {
                format!(
                    "the `with` side of step {} ({})",
                    s.name,
                    pipeline.file.display()
                )
            })?;
            let fk_middle = s
                .foreign_key
                .as_ref()
                .is_some_and(|f| f.part == config::FkPart::Join);
            if fk_middle {
                count = t.config.partitions;
            } else if s.with_kind == config::WithKind::Global {
                // Every task reads every partition of a global table.
            } else if t.config.partitions != parts {
                bail!(
                    "step {}: `with` topic {with} has {} partitions but the stream has {parts}; a join needs both sides co-partitioned (the same partition count and keys)",
                    s.name,
                    t.config.partitions
                );
            }
            topics.insert(with.clone(), t);
        }
        seg_parts.push(count);
    }
    // A repartition topic made by an earlier run keeps its partition count:
    // refused, as Kafka Streams refuses it, when the counts have changed
    // since (its records and the state are partitioned the old way).
    let internal = |name: &str, want: u32| -> anyhow::Result<Topic> {
        let t = backend.ensure_internal_topic(name, want)?;
        if t.config.partitions != want {
            bail!(
                "the internal topic {name} of pipeline {} has {} partitions, but this run needs {want}: a topic it reads has another partition count than when the pipeline last ran, so its state is partitioned the old way; reset it (`weir reset {}`) to reprocess its inputs",
                pipeline.name,
                t.config.partitions,
                pipeline.name
            );
        }
        Ok(t)
    };
    for (i, seg) in segs.iter().enumerate() {
        // A segment after the first reads a repartition topic, which the
        // segment before it writes.
        if i > 0 {
            topics.insert(seg.source.clone(), internal(&seg.source, seg_parts[i])?);
        }
        if let Some(sink) = &seg.sink {
            let topic = if i + 1 < segs.len() {
                internal(sink, seg_parts[i + 1])?
            } else {
                backend.ensure_topic(sink, parts)?
            };
            topics.insert(sink.clone(), topic);
        }
    }
    for s in &pipeline.steps {
        for t in s.outputs.values() {
            topics.insert(t.clone(), backend.ensure_topic(t, parts)?);
        }
    }
    let dead_letter = dead_letter_topic(pipeline);
    topics.insert(
        dead_letter.clone(),
        backend.ensure_topic(&dead_letter, parts)?,
    );

    let mut ends_at_start = BTreeMap::new();
    for (name, t) in &topics {
        for p in 0..t.config.partitions {
            ends_at_start.insert((name.clone(), p), backend.end_offset(t, p)?);
        }
    }
    let shared = Arc::new(Shared {
        backend: backend.clone(),
        pipeline: pipeline.clone(),
        finished: segs.iter().map(|_| AtomicUsize::new(0)).collect(),
        tasks: seg_parts.iter().map(|&n| n as usize).collect(),
        segments: segs,
        steps: pipeline
            .steps
            .iter()
            .map(|_| StepCounters::default())
            .collect(),
        slots,
        runtime_options: runtime.options().clone(),
        options: options.clone(),
        stop,
        stats: Stats::default(),
        ends_at_start,
        topics,
        dead_letter,
    });
    let done = Arc::new(AtomicBool::new(false));
    // Retention and compaction: at the start, then every 30 s.
    let cleaner = {
        let (backend, done) = (backend.clone(), done.clone());
        std::thread::Builder::new()
            .name("weir-cleaner".into())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                while !done.load(Ordering::SeqCst) {
                    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64);
                        if let Err(e) = backend.clean(now) {
                            tracing::warn!("retention and compaction failed: {e:#}");
                        }
                        last = Some(Instant::now());
                    }
                    // `wait` and `drop` unpark it when the run ends.
                    std::thread::park_timeout(Duration::from_secs(30));
                }
            })?
    };
    let assigned = Arc::new(Mutex::new(Assignment::default()));
    // Every topic a task reads, with its partition count, the input first.
    // A task's sources are co-partitioned: Kafka's consumer group assigns
    // partition N of all of them to the same process.
    let mut sources: Vec<(String, u32)> = Vec::new();
    for name in &pipeline.merged {
        sources.push((name.clone(), parts));
    }
    for (seg, &count) in shared.segments.iter().zip(&seg_parts) {
        sources.push((seg.source.clone(), count));
        for s in &pipeline.steps[seg.steps.clone()] {
            // A global table is read by hand, all of it, by every task:
            // not through the group.
            if let Some(with) = s
                .with
                .as_ref()
                .filter(|_| s.with_kind != config::WithKind::Global)
            {
                sources.push((with.clone(), count));
            }
        }
    }
    let mut seen = BTreeSet::new();
    sources.retain(|(name, _)| seen.insert(name.clone()));
    let mut assignor = backend.assignor(&pipeline.name, &sources)?;
    // The steps of a segment whose source has another count than the
    // input's (a foreign-key join's middle part) keep state partitioned
    // as that source.
    let mut by_source = BTreeMap::new();
    for (seg, &count) in shared.segments.iter().zip(&seg_parts) {
        if count != parts {
            for s in &pipeline.steps[seg.steps.clone()] {
                by_source.insert(s.name.clone(), seg.source.clone());
            }
        }
    }
    assignor.steps_partitioned_by(by_source);
    let failure = Arc::new(Mutex::new(None));
    let supervisor = {
        let (shared, assigned, done) = (shared.clone(), assigned.clone(), done.clone());
        let failure = failure.clone();
        std::thread::Builder::new()
            .name("weir-engine".into())
            .spawn(move || {
                let r = super::supervisor::supervise(&shared, assignor.as_mut(), &assigned);
                if let Err(e) = &r {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
                }
                done.store(true, Ordering::SeqCst);
                r
            })?
    };
    Ok(PipelineHandle {
        shared,
        supervisor: Some(supervisor),
        assigned,
        done,
        failure,
        cleaner: Some(cleaner),
    })
}

impl PipelineHandle {
    /// Asks every task to finish its batch, commit and stop.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.backend.wake();
        if let Some(h) = &self.supervisor {
            h.thread().unpark();
        }
    }

    /// Whether the run has ended (stopped, caught up, or failed).
    pub fn is_finished(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// The error the run ended with, once it has failed.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Switches step `step` to `module`, between two batches in every task;
    /// its state stays. The module is checked against the step's world and
    /// instantiated with `init` first: if that fails, nothing changes and
    /// the error is returned. Returns once every running task has switched
    /// (or `wait` passed).
    pub fn swap(&self, step: &str, module: Module, wait: Duration) -> anyhow::Result<()> {
        let s = &self.shared;
        let si = s
            .pipeline
            .steps
            .iter()
            .position(|c| c.name == step)
            .with_context(|| format!("pipeline {} has no step {step}", s.pipeline.name))?;
        check_world(&s.pipeline, si, &module)?;
        let cfg = &s.pipeline.steps[si];
        let mut options = s.runtime_options.clone();
        if let Some(mb) = cfg.memory_mb {
            options.memory_limit = mb << 20;
        }
        let mut trial = Step::new(module.clone(), &cfg.name, cfg.config.clone(), &options);
        trial.start().with_context(|| {
            format!("the new module for step {step} did not start; the old one keeps running")
        })?;
        let tasks = s
            .segments
            .iter()
            .find(|seg| seg.steps.contains(&si))
            .map_or(0, |seg| lock(&self.assigned).of(&seg.source).len());
        {
            let mut slot = lock(&s.slots[si]);
            let old = std::mem::replace(&mut slot.module, module);
            slot.previous = Some(old);
            slot.generation += 1;
            slot.applied = 0;
            slot.confirmed = 0;
            slot.expected = tasks;
            slot.pauses.clear();
            slot.last_swap = if tasks == 0 {
                SwapState::Confirmed
            } else {
                SwapState::Pending
            };
        }
        let started = Instant::now();
        while started.elapsed() < wait && !self.is_finished() {
            if lock(&s.slots[si]).applied >= tasks {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// How the last swap of `step` went.
    pub fn swap_state(&self, step: &str) -> Option<SwapState> {
        let s = &self.shared;
        let si = s.pipeline.steps.iter().position(|c| c.name == step)?;
        Some(lock(&s.slots[si]).last_swap.clone())
    }

    /// Waits for the run to end and says what it did.
    pub fn wait(mut self) -> anyhow::Result<Summary> {
        let result = match self.supervisor.take() {
            Some(h) => match h.join() {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("the engine's supervisor panicked")),
            },
            None => Ok(()),
        };
        self.done.store(true, Ordering::SeqCst);
        if let Some(c) = self.cleaner.take() {
            c.thread().unpark();
            let _ = c.join();
        }
        result?;
        let st = &self.shared.stats;
        let mut first_dead = Vec::new();
        let mut misconfigured = Vec::new();
        for (si, cfg) in self.shared.pipeline.steps.iter().enumerate() {
            let slot = lock(&self.shared.slots[si]);
            let c = &self.shared.steps[si];
            let (dead, seen) = (
                c.dead_letters.load(Ordering::Relaxed),
                c.records_in.load(Ordering::Relaxed),
            );
            if let Some(r) = &slot.first_dead {
                first_dead.push((cfg.name.clone(), dead, r.clone()));
            }
            if let Some(e) = &slot.config_error
                && seen > 0
                && dead >= seen
            {
                misconfigured.push((cfg.name.clone(), e.clone()));
            }
        }
        Ok(Summary {
            records_in: st.records_in.load(Ordering::Relaxed),
            records_out: st.records_out.load(Ordering::Relaxed),
            dead_letters: st.dead_letters.load(Ordering::Relaxed),
            late_dropped: st.late_dropped.load(Ordering::Relaxed),
            first_dead_letters: first_dead,
            misconfigured,
        })
    }
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        if let Some(h) = self.supervisor.take() {
            self.shared.stop.store(true, Ordering::SeqCst);
            let _ = h.join();
        }
        self.done.store(true, Ordering::SeqCst);
        if let Some(c) = self.cleaner.take() {
            c.thread().unpark();
            let _ = c.join();
        }
    }
}
