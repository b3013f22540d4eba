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
use std::time::Duration;

use anyhow::Context;

use super::cache::StateCache;
use super::config::StepKind;
use super::engine::Shared;
use super::keys;
use super::pending::Pending;
use crate::backend::{StateRead, Stored, Topic, Txn};
use crate::log::partitioner::partition_for_key;
use crate::operators::{self, Collector, Ctx, Item, Operator};
use crate::record::Packed;

struct Source {
    topic: Topic,
    next: u64,
    /// The step (index within the segment) where its records enter: 0 for
    /// the segment's source, a join's index for the join's other side.
    enters_at: usize,
    /// A join's other side (not the segment's stream).
    side: bool,
    buffer: VecDeque<Stored>,
    external: bool,
}

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
    ticks: bool,
    /// Set when this task must stop (its partition was revoked).
    revoked: Arc<AtomicBool>,
}

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
        };
        task.load_committed()?;
        Ok(task)
    }

    /// (Re)reads where the task is from the committed state: source
    /// positions and stream time. Pending changes — every batch since the
    /// last commit — are dropped, and so is the cache.
    fn load_committed(&mut self) -> anyhow::Result<()> {
        self.pending.clear();
        self.txn.clear();
        self.cache.clear();
        for op in &mut self.operators {
            op.discard();
        }
        let shared = self.shared.clone();
        let seg = &shared.segments[self.seg_index];
        let pipe = &shared.pipeline;
        let backend = &shared.backend;
        let p = self.partition;
        let source = |name: &str, enters_at: usize, side: bool, external: bool| {
            let topic = shared.topic(name)?;
            let committed = backend
                .position(&pipe.name, name, p)
                .with_context(|| format!("pipeline {}", pipe.name))?
                .unwrap_or(0);
            let first = backend.first_offset(&topic, p)?.unwrap_or(0);
            anyhow::Ok(Source {
                next: committed.max(first),
                topic,
                enters_at,
                side,
                buffer: VecDeque::new(),
                external,
            })
        };
        let mut sources = vec![source(&seg.source, 0, false, self.seg_index == 0)?];
        for (i, si) in seg.steps.clone().enumerate() {
            let cfg = &pipe.steps[si];
            if cfg.kind == StepKind::Join
                && let Some(with) = &cfg.with
            {
                sources.push(source(with, i, true, true)?);
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
        Ok(())
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
                self.shared.end_at_start(&src.topic.name, self.partition)
            } else {
                if !self.upstream_finished() {
                    return Ok(false);
                }
                self.shared.backend.end_offset(&src.topic, self.partition)?
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
                return self.commit_pending();
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
                    }
                    n
                }
                Err(e) => {
                    // A step that cannot run (it keeps timing out, or its
                    // instance cannot be made) stops the task: nothing of the
                    // batch was committed, so a fixed module resumes there.
                    if e.chain().any(|c| c.is::<crate::runtime::StepError>()) {
                        return Err(e);
                    }
                    // A storage error (or a corrupt stored record) fails the
                    // batch: nothing of it was committed. Start again from
                    // what was; after a few tries, stop with the error.
                    failures += 1;
                    if failures > 3 {
                        return Err(e);
                    }
                    tracing::warn!(
                        pipeline = %self.shared.pipeline.name,
                        segment = self.seg_index,
                        partition = self.partition,
                        "a batch failed and is retried: {e:#}"
                    );
                    std::thread::sleep(Duration::from_millis(50 << failures));
                    self.load_committed()?;
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
                return self.commit_pending();
            }
            if self.ticks {
                self.tick()?;
            }
            if self.stopping() {
                return self.commit_pending();
            }
            // An upstream task finishing wakes the waiters too.
            self.shared.backend.wait_for_data(version, cap);
        }
    }

    /// Commits what is pending, if anything.
    fn commit_pending(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() && self.txn.is_empty() {
            return Ok(());
        }
        self.commit()
    }

    /// Switches every operator whose step got a new module since this task
    /// last looked (between two batches), after committing what the old
    /// modules ran.
    fn apply_swaps(&mut self) -> anyhow::Result<()> {
        let swapped = (0..self.operators.len())
            .any(|i| self.shared.generation(self.step_ids[i]) != self.generations[i]);
        if !swapped {
            return Ok(());
        }
        self.commit_pending()?;
        for (i, op) in self.operators.iter_mut().enumerate() {
            let si = self.step_ids[i];
            let generation = self.shared.generation(si);
            if generation == self.generations[i] {
                continue;
            }
            match self.shared.guest(si) {
                Ok((guest, generation)) => {
                    op.swap(guest);
                    self.generations[i] = generation;
                    self.shared.applied(si);
                }
                Err(e) => {
                    // The swap's own check instantiated it; keep the old one.
                    tracing::error!(step = %op.config().name, "cannot switch to the new module: {e:#}");
                    self.generations[i] = generation;
                    self.shared.applied(si);
                }
            }
        }
        Ok(())
    }

    /// Fills source buffers and takes up to a batch of records in timestamp
    /// order across sources (on equal timestamps, a join's other side first,
    /// so that a table update applies before a stream record of its time).
    fn take_batch(&mut self) -> anyhow::Result<Vec<(usize, Stored)>> {
        let batch = self.shared.options.batch.max(1);
        let until_caught_up = self.shared.options.until_caught_up;
        for src in &mut self.sources {
            if src.buffer.len() < batch {
                let from = src.next + src.buffer.len() as u64;
                let limit = if src.external && until_caught_up {
                    let end = self.shared.end_at_start(&src.topic.name, self.partition);
                    end.saturating_sub(from) as usize
                } else {
                    batch
                };
                let want = (batch - src.buffer.len()).min(limit);
                if want > 0 {
                    src.buffer.extend(self.shared.backend.read(
                        &src.topic,
                        self.partition,
                        from,
                        want,
                    )?);
                }
            }
        }
        let mut out = Vec::new();
        while out.len() < batch {
            let mut best: Option<(usize, i64)> = None;
            for (i, src) in self.sources.iter().enumerate() {
                if let Some(head) = src.buffer.front() {
                    let ts = head.timestamp();
                    let better = match best {
                        None => true,
                        Some((bi, bts)) => {
                            ts < bts || (ts == bts && src.side && !self.sources[bi].side)
                        }
                    };
                    if better {
                        best = Some((i, ts));
                    }
                }
            }
            let Some((i, _)) = best else { break };
            let src = &mut self.sources[i];
            if let Some(r) = src.buffer.pop_front() {
                src.next = r.offset + 1;
                out.push((i, r));
            }
        }
        Ok(out)
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
            self.commit_pending()?;
            return Ok(0);
        }
        let n = taken.len();
        // Records grouped by the step they enter at.
        let mut entering: HashMap<(usize, bool), Vec<Item>> = HashMap::new();
        for (src, stored) in taken {
            let offset = stored.offset;
            let rec = Packed::parse(stored.bytes).with_context(|| {
                format!(
                    "the record at offset {offset} of {} partition {} is corrupt",
                    self.sources[src].topic.name, self.partition
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
        let flow = self.run_from(0, flow, &mut entering, &mut out)?;
        self.stage(flow, out)?;
        self.pending.ran();
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
            self.report_cache(dirty);
        }
        Ok(n)
    }

    /// Shows the cache's size (committed entries and pending changes) in
    /// the run's status.
    fn report_cache(&mut self, dirty: usize) {
        let now = (self.cache.bytes() + dirty) as u64;
        let stats = &self.shared.stats;
        stats
            .cache_bytes
            .fetch_add(now.wrapping_sub(self.reported_cache), Ordering::Relaxed);
        self.reported_cache = now;
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
        for i in first..self.operators.len() {
            let side = entering.remove(&(i, true)).unwrap_or_default();
            let counters = &self.shared.steps[self.step_ids[i]];
            counters
                .records_in
                .fetch_add((flow.len() + side.len()) as u64, Ordering::Relaxed);
            let (emitted, dead) = (out.emitted.len(), out.dead.len());
            let mut cx = Ctx {
                pipeline: &self.shared.pipeline.name,
                partition: self.partition,
                base: &self.base,
                txn: &mut self.txn,
                stream_time: &mut self.stream_time,
                out,
                now_ms: now,
            };
            flow = self.operators[i].run(&mut cx, flow, side)?;
            counters.records_out.fetch_add(
                (flow.len() + out.emitted.len() - emitted) as u64,
                Ordering::Relaxed,
            );
            counters
                .dead_letters
                .fetch_add((out.dead.len() - dead) as u64, Ordering::Relaxed);
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
            let mut cx = Ctx {
                pipeline: &self.shared.pipeline.name,
                partition: self.partition,
                base: &self.base,
                txn: &mut self.txn,
                stream_time: &mut self.stream_time,
                out: &mut out,
                now_ms: now,
            };
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

    /// Adds what a batch emitted to the pending commit: the flow to the
    /// segment's sink, named outputs and dead letters.
    fn stage(&mut self, flow: Vec<Item>, out: Collector) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        let seg = &shared.segments[self.seg_index];
        let partition = self.partition;
        let pending = &mut self.pending;
        let mut append = |topic: &Topic, rec: Packed| {
            let p = match rec.key() {
                Some(k) => partition_for_key(k, topic.config.partitions),
                None => partition % topic.config.partitions.max(1),
            };
            let bytes = rec.into_bytes();
            pending.append_bytes += bytes.len();
            pending.commit.append_packed(topic, p, bytes);
        };
        let stats = &shared.stats;
        if let Some(sink) = &seg.sink {
            let internal = self.seg_index + 1 < shared.segments.len();
            let topic = shared.topic(sink)?;
            let n = flow.len() as u64;
            for it in flow {
                append(&topic, it.rec);
            }
            if !internal {
                stats.records_out.fetch_add(n, Ordering::Relaxed);
            }
        }
        stats
            .records_out
            .fetch_add(out.emitted.len() as u64, Ordering::Relaxed);
        for (topic, rec) in out.emitted {
            let topic = shared.topic(&topic)?;
            append(&topic, rec);
        }
        if !out.dead.is_empty() {
            let dlq = shared.topic(&shared.dead_letter)?;
            let p = self.partition % dlq.config.partitions.max(1);
            for (step, d) in &out.dead {
                let mut r = d.to_record();
                r.headers
                    .push(("weir.step".into(), step.as_bytes().to_vec()));
                self.pending.commit.append(&dlq, p, &r);
                shared.note_dead_letter(step, d.failure.message());
            }
            stats
                .dead_letters
                .fetch_add(out.dead.len() as u64, Ordering::Relaxed);
        }
        stats.late_dropped.fetch_add(out.late, Ordering::Relaxed);
        for (step, reason) in &out.config {
            shared.note_config_error(step, reason);
        }
        Ok(())
    }

    /// Commits the pending batches atomically: first what the operators
    /// held back (emit-on-update once per commit) runs through the later
    /// steps, then their outputs, dead letters, state changes, the sources'
    /// positions and the stream time go to the backend in one commit.
    fn commit(&mut self) -> anyhow::Result<()> {
        let mut out = Collector::default();
        let mut flow = Vec::new();
        let now = self.now_ms();
        for i in 0..self.operators.len() {
            if self.operators[i].deferred_bytes() == 0 {
                continue;
            }
            let mut cx = Ctx {
                pipeline: &self.shared.pipeline.name,
                partition: self.partition,
                base: &self.base,
                txn: &mut self.txn,
                stream_time: &mut self.stream_time,
                out: &mut out,
                now_ms: now,
            };
            let (emitted, dead) = (cx.out.emitted.len(), cx.out.dead.len());
            let held = self.operators[i].flush(&mut cx)?;
            let counters = &self.shared.steps[self.step_ids[i]];
            counters.records_out.fetch_add(
                (held.len() + out.emitted.len() - emitted) as u64,
                Ordering::Relaxed,
            );
            counters
                .dead_letters
                .fetch_add((out.dead.len() - dead) as u64, Ordering::Relaxed);
            let mut none = HashMap::new();
            flow.extend(self.run_from(i + 1, held, &mut none, &mut out)?);
        }
        self.stage(flow, out)?;
        let shared = self.shared.clone();
        let pipe = &shared.pipeline.name;
        let mut commit = self.pending.take();
        let puts = self.txn.take();
        self.cache
            .committed(puts.iter().map(|(k, v)| (k.as_slice(), v)));
        for (k, v) in puts {
            commit.put(k, v);
        }
        for src in &self.sources {
            commit.position(pipe, &src.topic.name, self.partition, src.next);
        }
        commit.put(
            keys::stream_time(pipe, self.seg_index as u32, self.partition),
            Some(keys::ord_i64(self.stream_time).to_vec()),
        );
        // The cache already holds what this commit writes: if the commit
        // fails, the task clears it (`load_committed`) before going on.
        shared.backend.commit(commit)?;
        self.commits += 1;
        self.report_cache(0);
        Ok(())
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.shared
            .stats
            .cache_bytes
            .fetch_sub(self.reported_cache, Ordering::Relaxed);
    }
}
