//! One task: one partition of one segment. It takes a batch from its
//! sources (merged in timestamp order), runs it through the segment's
//! operators, and adds everything the batch changed — outputs, dead
//! letters, state, timers, stream time and input positions — to its pending
//! commit, which it commits as one when due (see [`super::pending`]); state
//! is read through the task's cache ([`super::cache`]). Between two batches
//! it applies hot swaps of its steps' modules.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::cache::StateCache;
use super::config::{StepKind, WithKind};
use super::engine::{Shared, SwapRejected};
use super::keys;
use super::pending::Pending;
use super::upgrade::{self, UpgradeRefused};
use crate::backend::{Fenced, StateRead, Stored, TaskId, TaskSpec, Topic, Txn};
use crate::log::partitioner::partition_for_key;
use crate::operators::{self, Collector, Ctx, Item, Operator};
use crate::record::{Failure, Packed};

/// The context a step runs in, over the task's state and pending changes:
/// `step_ctx!(task, out, batch_time, now_ms)`.
macro_rules! step_ctx {
    ($t:expr, $out:expr, $batch_time:expr, $now:expr) => {
        Ctx {
            pipeline: &$t.shared.pipeline.name,
            partition: $t.partition,
            base: &$t.base,
            txn: &mut $t.txn,
            batch_time: $batch_time,
            stream_time: &mut $t.stream_time,
            out: $out,
            now_ms: $now,
        }
    };
}

mod commit;
mod source;
mod swap;

use self::commit::changelogs;
use self::source::Source;

pub(crate) struct Task {
    shared: Arc<Shared>,
    seg_index: usize,
    partition: u32,
    /// Pipeline step indexes of the segment's operators.
    step_ids: Vec<usize>,
    operators: Vec<Box<dyn Operator>>,
    /// The swap generation each operator runs.
    generations: Vec<u64>,
    sources: Vec<Source>,
    stream_time: i64,
    txn: Txn,
    seq: u64,
    base: Arc<dyn StateRead>,
    /// `base`: committed state through the task's cache.
    cache: Arc<StateCache>,
    /// The batches run since the last commit.
    pending: Pending,
    /// The cache size last added to the run's status.
    reported_cache: u64,
    /// Commits made.
    commits: u64,
    /// When a commit next purges internal topics (see [`PURGE_INTERVAL`]).
    purge_at: Instant,
    ticks: bool,
    /// Set when this task must stop (its partition was revoked).
    revoked: Arc<AtomicBool>,
    /// Set when it stopped because another process took it over.
    pub fenced: Arc<AtomicBool>,
    /// With several sources: the offsets the batch took from each (to say
    /// where a dead letter came from).
    taken: Vec<std::collections::HashSet<u64>>,
    /// Operators just swapped whose first batch decides the swap:
    /// (operator index, generation).
    probation: Vec<(usize, u64)>,
    /// What this batch added to each operator's counters (in, out, dead),
    /// taken back when a swap's first batch is thrown away.
    counted: Vec<[u64; 3]>,
}

/// How often a task deletes the records of its internal (repartition)
/// topics that it has committed past, as Kafka Streams'
/// `repartition.purge.interval.ms` (30 s); and when it stops.
const PURGE_INTERVAL: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Task {
    /// The wall clock: the simulated one when the run has it.
    fn now_ms(&self) -> i64 {
        match &self.shared.options.now_ms {
            Some(c) => c.load(Ordering::SeqCst),
            None => now_ms(),
        }
    }

    pub(crate) fn new(
        shared: Arc<Shared>,
        seg_index: usize,
        partition: u32,
        revoked: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let seg = shared.segments[seg_index].clone();
        let mut operators = Vec::new();
        let mut generations = Vec::new();
        for si in seg.steps.clone() {
            let (guest, generation) = shared.guest(si)?;
            operators.push(operators::build(shared.pipeline.steps[si].clone(), guest));
            generations.push(generation);
        }
        let spec = TaskSpec {
            id: TaskId {
                segment: seg_index as u32,
                partition,
            },
            changelogs: changelogs(&shared, seg_index),
            partitions: shared.tasks[seg_index] as u32,
        };
        shared.backend.open_task(&spec)?;
        let pipe = &shared.pipeline;
        let cache = Arc::new(StateCache::new(
            shared.backend.clone(),
            pipe.cache_max_bytes,
        ));
        // Under a simulated clock (`weir test`) a task commits after every
        // batch, so that its outputs do not depend on the machine's speed.
        let interval = if shared.options.now_ms.is_some() {
            Duration::ZERO
        } else {
            pipe.commit_interval
                .min(shared.backend.longest_commit_interval())
        };
        if cache.enabled() {
            for op in &mut operators {
                op.defer_updates(true);
            }
        }
        let pending = Pending::new(interval, pipe.cache_max_bytes);
        let base: Arc<dyn StateRead> = cache.clone();
        let mut task = Task {
            cache,
            pending,
            reported_cache: 0,
            commits: 0,
            purge_at: Instant::now() + PURGE_INTERVAL,
            ticks: operators.iter().any(|o| o.ticks()),
            step_ids: seg.steps.clone().collect(),
            operators,
            generations,
            shared,
            seg_index,
            partition,
            sources: Vec::new(),
            stream_time: i64::MIN,
            txn: Txn::default(),
            seq: 0,
            base,
            revoked,
            fenced: Arc::new(AtomicBool::new(false)),
            taken: Vec::new(),
            probation: Vec::new(),
            counted: Vec::new(),
        };
        task.load_committed()?;
        Ok(task)
    }

    /// (Re)reads where the task is from the committed state: source
    /// positions and stream time. Pending changes — every batch since the
    /// last commit — are dropped (and what of them the backend sent ahead
    /// is abandoned), and so is the cache.
    fn load_committed(&mut self) -> anyhow::Result<()> {
        self.pending.clear();
        self.txn.clear();
        self.cache.clear();
        for op in &mut self.operators {
            op.discard();
        }
        self.shared.backend.abandon(self.id())?;
        let shared = self.shared.clone();
        let seg = &shared.segments[self.seg_index];
        let pipe = &shared.pipeline;
        let backend = &shared.backend;
        let p = self.partition;
        let base = &self.base;
        // `global`: the key of a global table partition's position.
        let source = |name: &str,
                      enters_at: usize,
                      side: bool,
                      external: bool,
                      read: u32,
                      global: Option<Vec<u8>>| {
            let topic = shared.topic(name)?;
            let committed = match &global {
                Some(k) => base
                    .get(k)?
                    .and_then(|b| b.get(..8).and_then(|b| b.try_into().ok()))
                    .map(u64::from_be_bytes),
                None => backend
                    .position(&pipe.name, name, p)
                    .with_context(|| format!("pipeline {}", pipe.name))?,
            }
            .unwrap_or(0);
            let first = backend.first_offset(&topic, read)?.unwrap_or(0);
            let next = committed.max(first);
            anyhow::Ok(Source {
                next,
                fetch: next,
                topic,
                partition: read,
                global,
                saved: committed,
                enters_at,
                side,
                buffer: VecDeque::new(),
                external,
                purged: first,
            })
        };
        let mut sources = vec![source(&seg.source, 0, false, self.seg_index == 0, p, None)?];
        // The first segment also reads the merged inputs, in timestamp
        // order with the first.
        if self.seg_index == 0 {
            for name in &pipe.merged {
                sources.push(source(name, 0, false, true, p, None)?);
            }
        }
        for (i, si) in seg.steps.clone().enumerate() {
            let cfg = &pipe.steps[si];
            if cfg.kind == StepKind::Join
                && let Some(with) = &cfg.with
            {
                if cfg.with_kind == WithKind::Global {
                    for q in 0..shared.topic(with)?.config.partitions {
                        let k = keys::global_position(&pipe.name, &cfg.name, p, q);
                        sources.push(source(with, i, true, true, q, Some(k))?);
                    }
                } else {
                    sources.push(source(with, i, true, true, p, None)?);
                }
            }
        }
        self.sources = sources;
        self.stream_time = match self.base.get(&keys::stream_time(
            &pipe.name,
            self.seg_index as u32,
            p,
        ))? {
            Some(b) if b.len() == 8 => keys::from_ord_i64(&b),
            Some(b) => anyhow::bail!(
                "the stored stream time of pipeline {} segment {} partition {p} is corrupt ({} bytes)",
                pipe.name,
                self.seg_index,
                b.len()
            ),
            None => i64::MIN,
        };
        self.txn.clear();
        self.ensure_formats()
    }

    fn id(&self) -> TaskId {
        TaskId {
            segment: self.seg_index as u32,
            partition: self.partition,
        }
    }

    fn upstream_finished(&self) -> bool {
        let s = &self.shared;
        (0..self.seg_index).all(|i| s.finished[i].load(Ordering::SeqCst) >= s.tasks[i])
    }

    /// Whether every source is consumed to where this run must reach.
    fn caught_up(&self) -> anyhow::Result<bool> {
        for src in &self.sources {
            if !src.buffer.is_empty() {
                return Ok(false);
            }
            let end = if src.external {
                self.shared.end_at_start(&src.topic.name, src.partition)
            } else {
                if !self.upstream_finished() {
                    return Ok(false);
                }
                self.shared.backend.end_offset(&src.topic, src.partition)?
            };
            if src.next < end {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst) || self.revoked.load(Ordering::SeqCst)
    }

    pub(crate) fn run(&mut self) -> anyhow::Result<()> {
        // Failures in a row: since the last commit that went through (a
        // batch that runs but never reaches a commit is no progress).
        let mut failures = 0u32;
        let mut failing_since: Option<Instant> = None;
        let mut commits = self.commits;
        // Idle, a task sleeps until records are appended (any partition of
        // the backend), its wall-clock timers may be due, or it is stopped
        // (a stop wakes the backend's waiters).
        let cap = if self.ticks {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        loop {
            if self.stopping() {
                return self.finish();
            }
            let version = self.shared.backend.data_version();
            // A simulated clock (`weir test`): a segment reads once the
            // segments before it are done, so its batches are the same
            // from run to run.
            if self.shared.options.now_ms.is_some() && !self.upstream_finished() {
                // An upstream task finishing wakes the waiters.
                self.shared
                    .backend
                    .wait_for_data(version, Duration::from_millis(5));
                continue;
            }
            let n = match self.apply_swaps().and_then(|()| self.step_batch()) {
                Ok(n) => {
                    if self.commits != commits {
                        commits = self.commits;
                        failures = 0;
                        failing_since = None;
                    }
                    n
                }
                Err(e) if e.is::<SwapRejected>() => {
                    // Nothing of the batch was committed: go back to the
                    // module before and take the batch again.
                    if let Some(r) = e.downcast_ref::<SwapRejected>() {
                        tracing::warn!(pipeline = %self.shared.pipeline.name, step = %r.step_name, "the swap is rolled back: {}", r.reason);
                        self.shared.reject_swap(r.step, r.generation, &r.reason);
                    }
                    self.probation.clear();
                    self.load_committed()?;
                    continue;
                }
                Err(e) => {
                    // Another process runs this task now (its partition
                    // moved): stop; the batch is the new owner's.
                    if self.fenced_by(&e) {
                        return Ok(());
                    }
                    // A step that cannot run (it keeps timing out, or its
                    // instance cannot be made) stops the task: nothing of the
                    // batch was committed, so a fixed module resumes there.
                    if e.chain()
                        .any(|c| c.is::<crate::runtime::StepError>() || c.is::<UpgradeRefused>())
                    {
                        return Err(e);
                    }
                    // A storage error (or a corrupt stored record) fails the
                    // batch: nothing of it was committed. Start again from
                    // what was; after a few tries, stop with the error.
                    // A backend that may come back (a Kafka broker
                    // restarting) is given its retry window.
                    let failing = *failing_since.get_or_insert_with(Instant::now);
                    let window = self.shared.backend.retry_window();
                    let mut err = e;
                    loop {
                        failures += 1;
                        if failures > 3 && failing.elapsed() >= window {
                            return Err(err);
                        }
                        tracing::warn!(
                            pipeline = %self.shared.pipeline.name,
                            segment = self.seg_index,
                            partition = self.partition,
                            "a batch failed and is retried: {err:#}"
                        );
                        std::thread::sleep(Duration::from_millis(
                            (50u64 << failures.min(5)).min(1000),
                        ));
                        if self.stopping() {
                            return Ok(());
                        }
                        match self.load_committed() {
                            Ok(()) => break,
                            Err(e) => err = e,
                        }
                    }
                    continue;
                }
            };
            if n > 0 {
                continue;
            }
            if self.shared.options.until_caught_up && self.caught_up()? {
                if self.ticks && self.shared.options.now_ms.is_some() {
                    self.tick()?;
                }
                return self.finish();
            }
            if self.ticks && self.probation.is_empty() {
                self.tick()?;
            }
            if self.stopping() {
                return self.finish();
            }
            // An upstream task finishing wakes the waiters too.
            self.shared.backend.wait_for_data(version, cap);
        }
    }

    /// The task's last commit (it stops): unless its partition was
    /// revoked (the new owner goes on from there), it also purges what its
    /// internal topics hold behind it. A commit refused because another
    /// process runs the task now ends the task as any fenced commit does.
    fn finish(&mut self) -> anyhow::Result<()> {
        let revoked = self.revoked.load(Ordering::SeqCst);
        if !revoked {
            self.purge_at = Instant::now();
        }
        let done = self.commit_pending().and_then(|()| {
            if !revoked
                && self
                    .sources
                    .iter()
                    .any(|s| !s.external && s.next > s.purged)
            {
                self.commit()?;
            }
            Ok(())
        });
        match done {
            Err(e) if self.fenced_by(&e) => Ok(()),
            done => done,
        }
    }

    /// Whether `e` says another process runs this task now (its commit was
    /// fenced); if so the task notes it, to stop without an error.
    fn fenced_by(&self, e: &anyhow::Error) -> bool {
        match e.chain().find_map(|c| c.downcast_ref::<Fenced>()) {
            Some(f) => {
                tracing::info!("{f}");
                self.fenced.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Runs one batch into the pending commit and commits when that is
    /// due; with no records, commits what is pending (the task idles).
    fn step_batch(&mut self) -> anyhow::Result<usize> {
        let taken = match self.take_batch() {
            Ok(t) => t,
            Err(e) => {
                // The batches before are whole: commit them, so that what
                // was read before a damaged record is not lost with it.
                if let Err(c) = self.commit_pending() {
                    tracing::warn!("committing before a failed read: {c:#}");
                }
                return Err(e);
            }
        };
        if taken.is_empty() {
            // A swapped module's upgraded state waits for its first batch,
            // which decides the swap.
            if self.probation.is_empty() {
                self.commit_pending()?;
            }
            return Ok(0);
        }
        let n = taken.len();
        self.taken.clear();
        if self.sources.len() > 1 {
            self.taken.resize(self.sources.len(), Default::default());
            for (src, stored) in &taken {
                self.taken[*src].insert(stored.offset);
            }
        }
        // Records grouped by the step they enter at.
        let mut entering: HashMap<(usize, bool), Vec<Item>> = HashMap::new();
        for (src, stored) in taken {
            let offset = stored.offset;
            let rec = Packed::parse(stored.bytes).with_context(|| {
                format!(
                    "the record at offset {offset} of {} partition {} is corrupt",
                    self.sources[src].topic.name, self.sources[src].partition
                )
            })?;
            self.seq += 1;
            let s = &self.sources[src];
            entering
                .entry((s.enters_at, s.side))
                .or_default()
                .push(Item { seq: self.seq, rec });
        }
        let flow = entering.remove(&(0, false)).unwrap_or_default();
        let mut out = Collector::default();
        self.counted = vec![[0; 3]; self.operators.len()];
        let flow = self.run_from(0, flow, &mut entering, &mut out)?;
        // The first batch of a swapped module: a trap in it rolls the swap
        // back before anything of the batch commits.
        for &(i, generation) in &self.probation {
            let name = &self.shared.pipeline.steps[self.step_ids[i]].name;
            let trapped = out
                .dead
                .iter()
                .find(|(step, d)| step == name && matches!(d.failure, Failure::Trapped(_)));
            if let Some((_, d)) = trapped {
                self.take_back_counts();
                return Err(SwapRejected {
                    step: self.step_ids[i],
                    generation,
                    step_name: name.clone(),
                    reason: d.failure.message().to_string(),
                }
                .into());
            }
        }
        // Rolled back meanwhile (another task rejected the swap): this
        // batch ran with a module the step no longer has, over state it may
        // have upgraded; it is thrown away and taken again.
        if self
            .probation
            .iter()
            .any(|&(i, g)| self.shared.generation(self.step_ids[i]) != g)
        {
            self.take_back_counts();
            self.probation.clear();
            self.load_committed()?;
            return Ok(n);
        }
        self.stage(flow, out)?;
        self.pending.ran();
        for (i, generation) in self.probation.drain(..) {
            self.shared.confirm_swap(self.step_ids[i], generation);
        }
        self.shared
            .stats
            .records_in
            .fetch_add(n as u64, Ordering::Relaxed);
        let dirty = self.txn.bytes()
            + self
                .operators
                .iter()
                .map(|o| o.deferred_bytes())
                .sum::<usize>();
        if self.pending.due(dirty) {
            self.commit()?;
        } else {
            // Kafka sends the batch's records now, inside the task's open
            // transaction; the embedded log keeps them for the commit.
            self.shared
                .backend
                .send_ahead(self.id(), &mut self.pending.commit.appends)?;
            self.report_cache(dirty);
        }
        Ok(n)
    }

    /// Runs `flow` through the operators from `first` on.
    fn run_from(
        &mut self,
        first: usize,
        mut flow: Vec<Item>,
        entering: &mut HashMap<(usize, bool), Vec<Item>>,
        out: &mut Collector,
    ) -> anyhow::Result<Vec<Item>> {
        let now = self.now_ms();
        let batch_time = self.stream_time;
        for i in first..self.operators.len() {
            let side = entering.remove(&(i, true)).unwrap_or_default();
            let counters = &self.shared.steps[self.step_ids[i]];
            let n_in = (flow.len() + side.len()) as u64;
            counters.records_in.fetch_add(n_in, Ordering::Relaxed);
            let (emitted, dead) = (out.emitted.len(), out.dead.len());
            let mut cx = step_ctx!(self, out, batch_time, now);
            let started = std::time::Instant::now();
            let guest_before = self.operators[i].guest().guest_time();
            flow = self.operators[i].run(&mut cx, flow, side)?;
            counters.add_time(
                started.elapsed(),
                self.operators[i]
                    .guest()
                    .guest_time()
                    .saturating_sub(guest_before),
            );
            let n_out = (flow.len() + out.emitted.len() - emitted) as u64;
            let n_dead = (out.dead.len() - dead) as u64;
            counters.records_out.fetch_add(n_out, Ordering::Relaxed);
            counters.dead_letters.fetch_add(n_dead, Ordering::Relaxed);
            if let Some(c) = self.counted.get_mut(i) {
                c[0] += n_in;
                c[1] += n_out;
                c[2] += n_dead;
            }
        }
        Ok(flow)
    }

    /// Fires wall-clock timers while no records arrive; commits if any fired.
    fn tick(&mut self) -> anyhow::Result<()> {
        let mut out = Collector::default();
        let mut flow_out = Vec::new();
        let mut changed = false;
        for i in 0..self.operators.len() {
            if !self.operators[i].ticks() {
                continue;
            }
            let now = self.now_ms();
            let mut cx = step_ctx!(self, &mut out, self.stream_time, now);
            let fired = self.operators[i].tick(&mut cx, self.seq)?;
            changed |= !fired.is_empty();
            // What a timer emits goes on through the later steps.
            let mut none = HashMap::new();
            flow_out.extend(self.run_from(i + 1, fired, &mut none, &mut out)?);
        }
        if changed || !out.emitted.is_empty() || !out.dead.is_empty() || !self.txn.is_empty() {
            self.stage(flow_out, out)?;
            self.commit()?;
        }
        Ok(())
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.shared
            .stats
            .cache_bytes
            .fetch_sub(self.reported_cache, Ordering::Relaxed);
        self.shared.backend.close_task(self.id());
    }
}
