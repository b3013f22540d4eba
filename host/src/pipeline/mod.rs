//! Pipelines: a file of steps (see [`config`]) run over the embedded log.
//!
//! The steps split into *segments* wherever records must be repartitioned:
//! an aggregate or a join that follows a step which may have changed the
//! key reads from an internal topic `NAME-STEP-repartition`, keyed by the new
//! key, so that every record of a key reaches the same task (and the same
//! state). Each segment runs one *task* per partition of its source, in its
//! own thread. A task reads a batch, runs it through its steps (consecutive
//! steps run fused, each called once per batch), and commits the outputs,
//! the state changes, the stream time and the input offsets in one write
//! batch: exactly once, across crashes.

pub mod config;
pub mod keys;
mod task;
pub mod txn;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::log::{Log, Topic, TopicConfig};
use crate::runtime::{Module, Runtime, World};

pub use self::config::Pipeline;
use self::config::StepKind;

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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            until_caught_up: false,
            progress: false,
            batch: 500,
            native: None,
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
        let stateful = matches!(s.kind, StepKind::Aggregate | StepKind::Join);
        if stateful && key_changed {
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
}

/// Counters shared by the tasks.
#[derive(Default)]
pub(crate) struct Stats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub dead_letters: AtomicU64,
    pub late_dropped: AtomicU64,
}

/// Everything a task needs that the run shares.
pub(crate) struct Shared {
    pub log: Arc<Log>,
    pub pipeline: Pipeline,
    pub segments: Vec<Segment>,
    pub modules: Vec<Module>,
    pub runtime_options: crate::runtime::RuntimeOptions,
    pub options: RunOptions,
    pub stop: Arc<AtomicBool>,
    pub stats: Stats,
    /// Finished tasks per segment.
    pub finished: Vec<AtomicUsize>,
    /// Tasks per segment.
    pub tasks: Vec<usize>,
    /// End offsets of external topics when the run started.
    pub ends_at_start: BTreeMap<(String, u32), u64>,
    pub topics: BTreeMap<String, Topic>,
    pub dead_letter: String,
}

fn expected_world(kind: StepKind) -> World {
    match kind {
        StepKind::Map => World::Mapper,
        StepKind::Aggregate => World::Aggregator,
        StepKind::Join => World::Joiner,
        StepKind::Processor => World::Processor,
    }
}

/// The topic called `name`, created with `partitions` if it does not exist.
pub fn ensure_topic(log: &Log, name: &str, partitions: u32) -> anyhow::Result<Topic> {
    match log.topic(name)? {
        Some(t) => Ok(t),
        None => log.create_topic(
            name,
            TopicConfig {
                partitions,
                compacted: false,
                retention_ms: None,
                retention_bytes: None,
            },
        ),
    }
}

/// Runs a pipeline until `stop` is set (Ctrl-C) or, with
/// `until_caught_up`, until every input is consumed.
pub fn run(
    log: Arc<Log>,
    pipeline: &Pipeline,
    runtime: &Runtime,
    options: &RunOptions,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Summary> {
    let mut modules = Vec::new();
    for s in &pipeline.steps {
        let m = runtime
            .load_file(&s.module)
            .with_context(|| format!("step {} of {}", s.name, pipeline.file.display()))?;
        let want = expected_world(s.kind);
        if m.world() != want {
            bail!(
                "{}: step {} is a {:?} step, so its module must be {}, but {} is {}",
                pipeline.file.display(),
                s.name,
                s.kind,
                want.with_article(),
                s.module.display(),
                m.world().with_article()
            );
        }
        modules.push(m);
    }
    let input = log.require_topic(&pipeline.input).with_context(|| {
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
    for seg in &segs {
        if seg.source != pipeline.input {
            topics.insert(seg.source.clone(), ensure_topic(&log, &seg.source, parts)?);
        }
        if let Some(sink) = &seg.sink {
            topics.insert(sink.clone(), ensure_topic(&log, sink, parts)?);
        }
    }
    for s in &pipeline.steps {
        for t in s.outputs.values() {
            topics.insert(t.clone(), ensure_topic(&log, t, parts)?);
        }
        if let Some(with) = &s.with {
            let t = log.require_topic(with).with_context(|| {
                format!(
                    "the `with` side of step {} ({})",
                    s.name,
                    pipeline.file.display()
                )
            })?;
            if t.config.partitions != parts {
                bail!(
                    "step {}: `with` topic {with} has {} partitions but the stream has {parts}; a join needs both sides co-partitioned (the same partition count and keys)",
                    s.name,
                    t.config.partitions
                );
            }
            topics.insert(with.clone(), t);
        }
    }
    let dead_letter = dead_letter_topic(pipeline);
    topics.insert(
        dead_letter.clone(),
        ensure_topic(&log, &dead_letter, parts)?,
    );

    let mut ends_at_start = BTreeMap::new();
    for (name, t) in &topics {
        for p in 0..t.config.partitions {
            ends_at_start.insert((name.clone(), p), log.end_offset(t, p)?);
        }
    }
    let shared = Arc::new(Shared {
        log: log.clone(),
        pipeline: pipeline.clone(),
        finished: segs.iter().map(|_| AtomicUsize::new(0)).collect(),
        tasks: segs.iter().map(|_| parts as usize).collect(),
        segments: segs,
        modules,
        runtime_options: runtime.options().clone(),
        options: options.clone(),
        stop: stop.clone(),
        stats: Stats::default(),
        ends_at_start,
        topics,
        dead_letter,
    });

    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    // Retention and compaction: at the start, then every 30 s.
    let cleaner = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last: Option<Instant> = None;
            while !done.load(Ordering::SeqCst) {
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    if let Err(e) = log.clean(now) {
                        tracing::warn!("retention and compaction failed: {e:#}");
                    }
                    last = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let progress = if options.progress && std::io::stderr().is_terminal() {
        let (shared, done) = (shared.clone(), done.clone());
        Some(std::thread::spawn(move || {
            progress_loop(&shared, &done, started)
        }))
    } else {
        None
    };
    let mut handles = Vec::new();
    for seg in 0..shared.segments.len() {
        for p in 0..parts {
            let shared = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("weir-task-{seg}-{p}"))
                    .spawn(move || {
                        let r = task::Task::new(&shared, seg, p).and_then(|mut t| t.run());
                        shared.finished[seg].fetch_add(1, Ordering::SeqCst);
                        if r.is_err() {
                            // One failed task stops the run: the others
                            // finish their batch and commit.
                            shared.stop.store(true, Ordering::SeqCst);
                        }
                        r.with_context(|| format!("task {seg}-{p}"))
                    })?,
            );
        }
    }
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("a task panicked"));
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    if let Some(h) = progress {
        let _ = h.join();
    }
    let _ = cleaner.join();
    if let Some(e) = first_err {
        return Err(e);
    }
    let s = &shared.stats;
    Ok(Summary {
        records_in: s.records_in.load(Ordering::Relaxed),
        records_out: s.records_out.load(Ordering::Relaxed),
        dead_letters: s.dead_letters.load(Ordering::Relaxed),
        late_dropped: s.late_dropped.load(Ordering::Relaxed),
    })
}

fn progress_loop(shared: &Shared, done: &AtomicBool, started: Instant) {
    let mut last = 0u64;
    let mut last_t = Instant::now();
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        let n = shared.stats.records_in.load(Ordering::Relaxed);
        let dt = last_t.elapsed().as_secs_f64().max(1e-3);
        let rate = (n - last) as f64 / dt;
        last = n;
        last_t = Instant::now();
        let mut lag = Vec::new();
        for seg in &shared.segments {
            let Some(t) = shared.topics.get(&seg.source) else {
                continue;
            };
            let mut total = 0u64;
            for p in 0..t.config.partitions {
                let end = shared.log.end_offset(t, p).unwrap_or(0);
                let at = shared
                    .log
                    .db()
                    .get(keys::offset(&shared.pipeline.name, &t.name, p))
                    .ok()
                    .flatten()
                    .and_then(|b| b.as_slice().try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                total += end.saturating_sub(at);
            }
            lag.push(format!("{} lag {total}", seg.source));
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{:>8.0} records/s  {} in  {:.0}s  {}",
            rate,
            n,
            started.elapsed().as_secs_f64(),
            lag.join("  ")
        );
        let _ = err.flush();
    }
    let _ = writeln!(std::io::stderr());
}
