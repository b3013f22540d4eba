//! One task: one partition of one segment. It reads batches from its
//! sources, runs them through the segment's steps and commits everything a
//! batch changed in one write batch.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;

use super::config::{Emit, JoinType, Step as StepConfig, StepKind, Window, WithKind};
use super::keys;
use super::txn::Txn;
use super::{Segment, Shared};
use crate::codec::{self, Entry};
use crate::log::partitioner::partition_for_key;
use crate::log::{Commit, Stored, Topic};
use crate::record::{DeadLetter, Failure, Outcome, Record};
use crate::runtime::{StateCtx, Step};

/// A record moving through the steps; `seq` is its position in the batch's
/// merged source order, which decides the order in which stateful steps see
/// records from different sources.
#[derive(Clone, Debug)]
struct Item {
    seq: u64,
    rec: Record,
}

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

pub(crate) struct Task<'a> {
    shared: &'a Shared,
    seg_index: usize,
    seg: &'a Segment,
    partition: u32,
    steps: Vec<(StepConfig, Step)>,
    sources: Vec<Source>,
    stream_time: i64,
    txn: Txn,
    commit: Commit,
    seq: u64,
    has_processor: bool,
}

/// A (key, window start) an aggregate batch touches...
type GroupKey = (Vec<u8>, i64);
/// ...and its window end, member record indexes, last seq and last timestamp.
type Group = (i64, Vec<usize>, u64, i64);
/// A table-table join's two sides of one key: left, right.
type TableRow = (Option<Vec<u8>>, Option<Vec<u8>>);
/// A join pair: key, timestamp, left, right, seq, and the record it came from.
type JoinPair = (
    Option<Vec<u8>>,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    u64,
    Record,
);

fn read_u64(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| b.as_slice().try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl<'a> Task<'a> {
    pub(crate) fn new(
        shared: &'a Shared,
        seg_index: usize,
        partition: u32,
    ) -> anyhow::Result<Self> {
        let seg = &shared.segments[seg_index];
        let pipe = &shared.pipeline;
        let db = shared.log.db();
        let topic = |name: &str| -> anyhow::Result<Topic> {
            shared
                .topics
                .get(name)
                .cloned()
                .with_context(|| format!("topic {name} is not known to the run"))
        };
        let mut sources = Vec::new();
        let main = topic(&seg.source)?;
        let next = read_u64(db.get(keys::offset(&pipe.name, &main.name, partition))?);
        sources.push(Source {
            next: next.max(shared.log.first_offset(&main, partition)?.unwrap_or(0)),
            topic: main,
            enters_at: 0,
            side: false,
            buffer: VecDeque::new(),
            external: seg_index == 0,
        });
        let mut steps = Vec::new();
        for (i, si) in seg.steps.clone().enumerate() {
            let cfg = pipe.steps[si].clone();
            if cfg.kind == StepKind::Join
                && let Some(with) = &cfg.with
            {
                let t = topic(with)?;
                let next = read_u64(db.get(keys::offset(&pipe.name, with, partition))?);
                sources.push(Source {
                    next: next.max(shared.log.first_offset(&t, partition)?.unwrap_or(0)),
                    topic: t,
                    enters_at: i,
                    side: true,
                    buffer: VecDeque::new(),
                    external: true,
                });
            }
            let mut step = Step::new(
                shared.modules[si].clone(),
                &cfg.name,
                cfg.config.clone(),
                &shared.runtime_options,
            );
            let file = cfg
                .module
                .file_name()
                .map(|f| f.to_string_lossy().into_owned());
            if let (Some(native), Some(file)) = (shared.options.native, file)
                && let Some(f) = native(&file)
            {
                step.set_native(f);
            }
            steps.push((cfg, step));
        }
        let stream_time = db
            .get(keys::stream_time(&pipe.name, seg_index as u32, partition))?
            .map(|b| keys::from_ord_i64(&b))
            .unwrap_or(i64::MIN);
        for (_, s) in &mut steps {
            s.start()?;
        }
        let has_processor = steps.iter().any(|(c, _)| c.kind == StepKind::Processor);
        Ok(Task {
            shared,
            seg_index,
            seg,
            partition,
            steps,
            sources,
            stream_time,
            txn: Txn::default(),
            commit: Commit::default(),
            seq: 0,
            has_processor,
        })
    }

    fn upstream_finished(&self) -> bool {
        let s = self.shared;
        (0..self.seg_index).all(|i| s.finished[i].load(Ordering::SeqCst) >= s.tasks[i])
    }

    /// Whether every source is consumed to where this run must reach.
    fn caught_up(&self) -> anyhow::Result<bool> {
        for src in &self.sources {
            if !src.buffer.is_empty() {
                return Ok(false);
            }
            let end = if src.external {
                *self
                    .shared
                    .ends_at_start
                    .get(&(src.topic.name.clone(), self.partition))
                    .unwrap_or(&0)
            } else {
                if !self.upstream_finished() {
                    return Ok(false);
                }
                self.shared.log.end_offset(&src.topic, self.partition)?
            };
            if src.next < end {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(crate) fn run(&mut self) -> anyhow::Result<()> {
        let mut idle = Duration::from_millis(1);
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let n = self.step_batch()?;
            if n > 0 {
                idle = Duration::from_millis(1);
                continue;
            }
            if self.shared.options.until_caught_up && self.caught_up()? {
                tracing::debug!(segment = self.seg_index, partition = self.partition, next = ?self.sources.iter().map(|s| s.next).collect::<Vec<_>>(), "caught up");
                return Ok(());
            }
            if self.has_processor {
                self.tick()?;
            }
            std::thread::sleep(idle);
            idle = (idle * 2).min(Duration::from_millis(50));
        }
    }

    /// Fills source buffers and takes up to a batch of records in timestamp
    /// order across sources (on equal timestamps, a join's other side first,
    /// so that a table update applies before a stream record of its time).
    fn take_batch(&mut self) -> anyhow::Result<Vec<(usize, Stored)>> {
        let batch = self.shared.options.batch.max(1);
        for src in &mut self.sources {
            if src.buffer.len() < batch {
                let from = src.next + src.buffer.len() as u64;
                let limit = if src.external {
                    let end = *self
                        .shared
                        .ends_at_start
                        .get(&(src.topic.name.clone(), self.partition))
                        .unwrap_or(&0);
                    if self.shared.options.until_caught_up {
                        (end.saturating_sub(from)) as usize
                    } else {
                        batch
                    }
                } else {
                    batch
                };
                let want = (batch - src.buffer.len()).min(limit);
                if want > 0 {
                    src.buffer.extend(self.shared.log.read(
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

    fn step_batch(&mut self) -> anyhow::Result<usize> {
        let taken = self.take_batch()?;
        if taken.is_empty() {
            return Ok(0);
        }
        let n = taken.len();
        // Records grouped by the step they enter at.
        let mut entering: HashMap<(usize, bool), Vec<Item>> = HashMap::new();
        for (src, stored) in taken {
            let rec = stored.record()?;
            self.seq += 1;
            let s = &self.sources[src];
            entering
                .entry((s.enters_at, s.side))
                .or_default()
                .push(Item { seq: self.seq, rec });
        }
        let mut flow = entering.remove(&(0, false)).unwrap_or_default();
        for i in 0..self.steps.len() {
            let side = entering.remove(&(i, true)).unwrap_or_default();
            let kind = self.steps[i].0.kind;
            flow = match kind {
                StepKind::Map => self.map(i, flow)?,
                StepKind::Processor => self.process(i, flow)?,
                StepKind::Aggregate => self.aggregate(i, flow)?,
                StepKind::Join => self.join(i, flow, side)?,
            };
        }
        self.sink(flow)?;
        self.finish_batch()?;
        self.shared
            .stats
            .records_in
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn partition_of(&self, topic: &Topic, key: Option<&[u8]>) -> u32 {
        match key {
            Some(k) => partition_for_key(k, topic.config.partitions),
            None => self.partition % topic.config.partitions.max(1),
        }
    }

    fn append(&mut self, topic_name: &str, rec: Record) -> anyhow::Result<()> {
        let topic = self
            .shared
            .topics
            .get(topic_name)
            .with_context(|| format!("topic {topic_name} is not known to the run"))?;
        let p = self.partition_of(topic, rec.key.as_deref());
        self.commit.append(topic, p, rec);
        Ok(())
    }

    fn dead(&mut self, step: &str, d: DeadLetter) -> anyhow::Result<()> {
        let mut r = d.to_record();
        r.headers
            .push(("weir.step".into(), step.as_bytes().to_vec()));
        let dlq = self.shared.dead_letter.clone();
        let topic = self
            .shared
            .topics
            .get(&dlq)
            .with_context(|| format!("dead-letter topic {dlq} is not known"))?;
        let p = self.partition % topic.config.partitions.max(1);
        self.commit.append(topic, p, r);
        self.shared
            .stats
            .dead_letters
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn sink(&mut self, flow: Vec<Item>) -> anyhow::Result<()> {
        let Some(sink) = self.seg.sink.clone() else {
            return Ok(());
        };
        let internal = self.seg_index + 1 < self.shared.segments.len();
        let n = flow.len() as u64;
        for it in flow {
            self.append(&sink, it.rec)?;
        }
        if !internal {
            self.shared
                .stats
                .records_out
                .fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }

    fn finish_batch(&mut self) -> anyhow::Result<()> {
        let pipe = self.shared.pipeline.name.clone();
        let mut commit = std::mem::take(&mut self.commit);
        for (k, v) in self.txn.take() {
            commit.put(k, v);
        }
        for src in &self.sources {
            commit.put(
                keys::offset(&pipe, &src.topic.name, self.partition),
                Some(src.next.to_be_bytes().to_vec()),
            );
        }
        commit.put(
            keys::stream_time(&pipe, self.seg_index as u32, self.partition),
            Some(keys::ord_i64(self.stream_time).to_vec()),
        );
        self.shared.log.commit(commit)?;
        Ok(())
    }

    /// A map (or, for now, a processor's per-record function) over the flow.
    fn map(&mut self, i: usize, flow: Vec<Item>) -> anyhow::Result<Vec<Item>> {
        if flow.is_empty() {
            return Ok(flow);
        }
        let inputs: Vec<&Record> = flow.iter().map(|it| &it.rec).collect();
        let outcomes = self.steps[i].1.map_indexed(&inputs)?;
        self.route(i, &flow, outcomes)
    }

    /// Where a step's outcomes go: default outputs on down the flow, named
    /// outputs to their topics, dead letters to the dead-letter topic.
    /// Output offsets index `flow`.
    fn route(
        &mut self,
        i: usize,
        flow: &[Item],
        outcomes: Vec<(usize, Outcome)>,
    ) -> anyhow::Result<Vec<Item>> {
        let name = self.steps[i].0.name.clone();
        let mut next = Vec::with_capacity(flow.len());
        for (idx, o) in outcomes {
            match o {
                Outcome::Output(out) => {
                    let rec = out.record;
                    match out.to {
                        None => next.push(Item {
                            seq: flow[idx].seq,
                            rec,
                        }),
                        Some(to) => match self.steps[i].0.outputs.get(&to).cloned() {
                            Some(topic) => {
                                self.append(&topic, rec)?;
                                self.shared
                                    .stats
                                    .records_out
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                            None => {
                                let declared: Vec<&String> =
                                    self.steps[i].0.outputs.keys().collect();
                                let reason = format!(
                                    "step {name} emitted to the output `{to}`, which the pipeline does not declare (declared: {declared:?}); add `outputs = {{ {to} = \"TOPIC\" }}` to the step"
                                );
                                self.dead(
                                    &name,
                                    DeadLetter {
                                        record: flow[idx].rec.clone(),
                                        failure: Failure::Rejected(reason),
                                    },
                                )?;
                            }
                        },
                    }
                }
                Outcome::Dead(d) => self.dead(&name, d)?,
            }
        }
        Ok(next)
    }

    fn state_ctx(&mut self, i: usize) -> StateCtx {
        StateCtx {
            log: Some(self.shared.log.clone()),
            pipeline: self.shared.pipeline.name.clone(),
            step: self.steps[i].0.name.clone(),
            partition: self.partition,
            stores: self.steps[i].0.stores.clone(),
            txn: std::mem::take(&mut self.txn),
        }
    }

    /// A processor: its per-record function with state, then the timers
    /// that came due (event time: the stream time passed them; wall clock:
    /// the clock did).
    fn process(&mut self, i: usize, flow: Vec<Item>) -> anyhow::Result<Vec<Item>> {
        let mut next = Vec::new();
        let mut last_seq = self.seq;
        if !flow.is_empty() {
            for it in &flow {
                self.stream_time = self.stream_time.max(it.rec.timestamp);
            }
            last_seq = flow.iter().map(|it| it.seq).max().unwrap_or(last_seq);
            let inputs: Vec<&Record> = flow.iter().map(|it| &it.rec).collect();
            let ctx = self.state_ctx(i);
            let result = self.steps[i].1.process(&inputs, ctx);
            let (outcomes, ctx) = result?;
            self.txn = ctx.txn;
            next = self.route(i, &flow, outcomes)?;
        }
        next.extend(self.fire_timers(i, last_seq)?);
        Ok(next)
    }

    /// Calls `on-timer` for every due timer of a processor step, earliest
    /// first, and returns the outputs.
    fn fire_timers(&mut self, i: usize, seq: u64) -> anyhow::Result<Vec<Item>> {
        let pipe = self.shared.pipeline.name.clone();
        let name = self.steps[i].0.name.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut out = Vec::new();
        for (clock, due) in [(0u8, self.stream_time), (1u8, now)] {
            // A timer callback may schedule timers that are due at once; a
            // bound keeps a guest from looping here forever.
            for _ in 0..10_000 {
                let prefix = keys::timers(&pipe, &name, self.partition, clock);
                let mut end = prefix.clone();
                end.extend_from_slice(&keys::ord_i64(due.saturating_add(1)));
                let db = self.shared.log.db();
                let Some((k, _)) = self.txn.range(db, &prefix, &end, 1)?.into_iter().next() else {
                    break;
                };
                let (time, tag) =
                    keys::take_i64(&k[prefix.len()..]).context("a timer key is corrupt")?;
                let tag = tag.to_vec();
                self.txn.delete(k);
                self.txn
                    .delete(keys::timer_index(&pipe, &name, self.partition, clock, &tag));
                let ctx = self.state_ctx(i);
                let (result, ctx) = self.steps[i].1.on_timer(time, &tag, ctx)?;
                self.txn = ctx.txn;
                match result {
                    Ok(outputs) => {
                        for (to, mut rec) in outputs {
                            rec.offset = 0;
                            match to {
                                None => out.push(Item { seq, rec }),
                                Some(to) => match self.steps[i].0.outputs.get(&to).cloned() {
                                    Some(topic) => self.append(&topic, rec)?,
                                    None => {
                                        tracing::warn!(step = %name, "a timer emitted to the undeclared output `{to}`; dropped")
                                    }
                                },
                            }
                        }
                    }
                    Err(reason) => {
                        // No input record to dead-letter: the timer's tag is the record.
                        self.dead(
                            &name,
                            DeadLetter {
                                record: Record {
                                    timestamp: time,
                                    key: Some(tag.clone()),
                                    ..Record::default()
                                },
                                failure: Failure::Trapped(format!("on-timer at {time}: {reason}")),
                            },
                        )?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Fires wall-clock timers while no records arrive; commits if any fired.
    fn tick(&mut self) -> anyhow::Result<()> {
        let mut any = false;
        for i in 0..self.steps.len() {
            if self.steps[i].0.kind != StepKind::Processor {
                continue;
            }
            let out = self.fire_timers(i, self.seq)?;
            any |= !out.is_empty() || !self.commit.is_empty();
            // Outputs of a timer continue through the later steps.
            let mut flow = out;
            for j in i + 1..self.steps.len() {
                flow = match self.steps[j].0.kind {
                    StepKind::Map => self.map(j, flow)?,
                    StepKind::Processor => self.process(j, flow)?,
                    StepKind::Aggregate => self.aggregate(j, flow)?,
                    StepKind::Join => self.join(j, flow, Vec::new())?,
                };
            }
            self.sink(flow)?;
        }
        if any || !self.txn.is_empty() {
            self.finish_batch()?;
        }
        Ok(())
    }

    fn windows_of(&self, w: Option<Window>, ts: i64) -> Vec<(i64, i64)> {
        match w {
            None => vec![(0, 0)],
            Some(Window::Tumbling { size }) => {
                let start = ts.div_euclid(size) * size;
                vec![(start, start + size)]
            }
            Some(Window::Hopping { size, advance }) => {
                let mut out = Vec::new();
                let last = ts.div_euclid(advance) * advance;
                let mut start = last;
                while start > ts - size {
                    out.push((start, start + size));
                    start -= advance;
                }
                out.reverse();
                out
            }
            Some(Window::Session { .. }) => vec![(ts, ts)],
        }
    }

    /// A windowed (or global) aggregate: the host assigns records to windows,
    /// keeps accumulators in the state store and calls the guest to add
    /// records, merge sessions and present results.
    fn aggregate(&mut self, i: usize, flow: Vec<Item>) -> anyhow::Result<Vec<Item>> {
        let cfg = self.steps[i].0.clone();
        let pipe = self.shared.pipeline.name.clone();
        let mut out = Vec::new();
        // (key, start) -> (end, member indexes, last seq, last ts)
        let mut order: Vec<(Vec<u8>, i64)> = Vec::new();
        let mut groups: HashMap<GroupKey, Group> = HashMap::new();
        let mut records: Vec<&Item> = Vec::new();
        let mut late_or_keyless = Vec::new();
        for it in &flow {
            let Some(key) = it.rec.key.clone() else {
                late_or_keyless.push(DeadLetter {
                    record: it.rec.clone(),
                    failure: Failure::Rejected(format!(
                        "step {}: an aggregate groups by key, and this record has none",
                        cfg.name
                    )),
                });
                continue;
            };
            let ts = it.rec.timestamp;
            self.stream_time = self.stream_time.max(ts);
            if let Some(Window::Session { .. }) = cfg.window {
                // Sessions are merged record by record, in order.
                let emitted = self.session_add(i, &key, it)?;
                out.extend(emitted);
                continue;
            }
            let idx = records.len();
            let mut counted = false;
            for (start, end) in self.windows_of(cfg.window, ts) {
                if cfg.window.is_some() && end + cfg.grace <= self.stream_time {
                    continue;
                }
                counted = true;
                let g = groups.entry((key.clone(), start)).or_insert_with(|| {
                    order.push((key.clone(), start));
                    (end, Vec::new(), 0, i64::MIN)
                });
                g.1.push(idx);
                g.2 = it.seq;
                g.3 = g.3.max(ts);
            }
            if counted {
                records.push(it);
            } else {
                self.shared
                    .stats
                    .late_dropped
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(step = %cfg.name, ts, stream_time = self.stream_time, "late record dropped");
            }
        }
        for d in late_or_keyless {
            self.dead(&cfg.name, d)?;
        }
        if !groups.is_empty() {
            let recs: Vec<Record> = records.iter().map(|it| it.rec.clone()).collect();
            let seqs: Vec<u64> = records.iter().map(|it| it.seq).collect();
            let group_list: Vec<(GroupKey, Group)> = order
                .iter()
                .filter_map(|k| groups.remove(k).map(|g| (k.clone(), g)))
                .collect();
            self.add_groups(i, &recs, &seqs, &group_list)?;
            if cfg.emit == Emit::Update {
                let items: Vec<(Vec<u8>, i64, i64, u64, i64)> = group_list
                    .iter()
                    .map(|((k, s), (e, _, seq, ts))| (k.clone(), *s, *e, *seq, *ts))
                    .collect();
                out.extend(self.present(i, &items)?);
            }
        }
        if cfg.emit == Emit::Close && cfg.window.is_some() {
            out.extend(self.close_windows(i)?);
        }
        let _ = pipe;
        Ok(out)
    }

    /// Calls the guest's `add` for these groups and stores the new
    /// accumulators; on a trap, retries record by record so that only the
    /// record that traps becomes a dead letter.
    fn add_groups(
        &mut self,
        i: usize,
        recs: &[Record],
        seqs: &[u64],
        groups: &[(GroupKey, Group)],
    ) -> anyhow::Result<()> {
        let cfg = self.steps[i].0.clone();
        let pipe = self.shared.pipeline.name.clone();
        let db = self.shared.log.db();
        let mut buf = codec::encode_batch(recs);
        buf.extend_from_slice(&(groups.len() as u32).to_le_bytes());
        for ((key, start), (_, members, _, _)) in groups {
            let k = keys::agg(&pipe, &cfg.name, self.partition, key, *start);
            let acc = match self.txn.get(db, &k)? {
                Some(v) => Some(
                    keys::agg_value(&v)
                        .context("a stored accumulator is corrupt")?
                        .1
                        .to_vec(),
                ),
                None => None,
            };
            codec::put_opt(&mut buf, acc.as_deref());
            buf.extend_from_slice(&(members.len() as u32).to_le_bytes());
            for m in members {
                buf.extend_from_slice(&(*m as u32).to_le_bytes());
            }
        }
        let result = self.steps[i].1.call_bytes("add", &buf)?;
        let failure = match result {
            Ok(out) => {
                let mut accs: Vec<Option<Vec<u8>>> = vec![None; groups.len()];
                let mut rejected = Vec::new();
                let mut bad = None;
                let parsed =
                    codec::read_results(&out, recs.len().max(groups.len()), |idx, e| match e {
                        Entry::Accumulator(a) => {
                            if let Some(slot) = accs.get_mut(idx as usize) {
                                *slot = Some(a.to_vec());
                            }
                        }
                        Entry::Rejected(m) => rejected.push((idx as usize, m.to_string())),
                        _ => bad = Some(idx),
                    });
                match (parsed, bad) {
                    (Ok(()), None) if accs.iter().all(Option::is_some) => {
                        for (idx, m) in rejected {
                            if let Some(r) = recs.get(idx) {
                                self.dead(
                                    &cfg.name,
                                    DeadLetter {
                                        record: r.clone(),
                                        failure: Failure::Rejected(m),
                                    },
                                )?;
                            }
                        }
                        for (((key, start), (end, _, _, _)), acc) in groups.iter().zip(accs) {
                            let acc = acc.unwrap_or_default();
                            let k = keys::agg(&pipe, &cfg.name, self.partition, key, *start);
                            let mut v = end.to_be_bytes().to_vec();
                            v.extend_from_slice(&acc);
                            self.txn.put(k, v);
                            if cfg.emit == Emit::Close && cfg.window.is_some() {
                                self.txn.put(
                                    keys::agg_close(
                                        &pipe,
                                        &cfg.name,
                                        self.partition,
                                        *end,
                                        key,
                                        *start,
                                    ),
                                    Vec::new(),
                                );
                            }
                        }
                        return Ok(());
                    }
                    (Err(e), _) => e.to_string(),
                    _ => "the guest's add returned an entry of the wrong kind or missed a group"
                        .into(),
                }
            }
            Err(trap) => trap,
        };
        if recs.len() == 1 {
            return self.dead(
                &cfg.name,
                DeadLetter {
                    record: recs[0].clone(),
                    failure: Failure::Trapped(failure),
                },
            );
        }
        // Retry record by record, in order, each with its own groups.
        for (ri, r) in recs.iter().enumerate() {
            let mine: Vec<(GroupKey, Group)> = groups
                .iter()
                .filter(|(_, (_, m, _, _))| m.contains(&ri))
                .map(|(k, (e, _, s, t))| (k.clone(), (*e, vec![0], *s, *t)))
                .collect();
            self.add_groups(i, std::slice::from_ref(r), &seqs[ri..=ri], &mine)?;
        }
        Ok(())
    }

    /// Presents accumulators as output records (key, value = the guest's
    /// presentation; windows in the headers `weir.window.start` / `end`).
    fn present(
        &mut self,
        i: usize,
        items: &[(Vec<u8>, i64, i64, u64, i64)],
    ) -> anyhow::Result<Vec<Item>> {
        let cfg = self.steps[i].0.clone();
        let pipe = self.shared.pipeline.name.clone();
        let db = self.shared.log.db();
        let mut buf = (items.len() as u32).to_le_bytes().to_vec();
        let mut present = Vec::new();
        for (key, start, end, seq, ts) in items {
            let k = keys::agg(&pipe, &cfg.name, self.partition, key, *start);
            let Some(v) = self.txn.get(db, &k)? else {
                continue;
            };
            codec::put_opt(&mut buf, Some(key));
            let (s, e) = if cfg.window.is_some() {
                (*start, *end)
            } else {
                (0, 0)
            };
            buf.extend_from_slice(&s.to_le_bytes());
            buf.extend_from_slice(&e.to_le_bytes());
            let (_, acc) = keys::agg_value(&v).context("a stored accumulator is corrupt")?;
            codec::put_bytes(&mut buf, acc);
            present.push((key.clone(), *start, *end, *seq, *ts));
        }
        buf[..4].copy_from_slice(&(present.len() as u32).to_le_bytes());
        if present.is_empty() {
            return Ok(Vec::new());
        }
        let out = match self.steps[i].1.call_bytes("present", &buf)? {
            Ok(out) => out,
            Err(trap) => anyhow::bail!(
                "step {}: the guest trapped presenting results: {trap}",
                cfg.name
            ),
        };
        let mut values: Vec<Option<Option<Vec<u8>>>> = vec![None; present.len()];
        codec::read_results(&out, present.len(), |idx, e| {
            if let (Entry::Value(v), Some(slot)) = (e, values.get_mut(idx as usize)) {
                *slot = Some(v.map(<[u8]>::to_vec));
            }
        })
        .with_context(|| format!("step {}: present", cfg.name))?;
        let mut items_out = Vec::new();
        for ((key, start, end, seq, ts), v) in present.into_iter().zip(values) {
            let Some(Some(value)) = v else { continue };
            let mut headers = Vec::new();
            if cfg.window.is_some() {
                headers.push(("weir.window.start".into(), start.to_string().into_bytes()));
                headers.push(("weir.window.end".into(), end.to_string().into_bytes()));
            }
            items_out.push(Item {
                seq,
                rec: Record {
                    offset: 0,
                    timestamp: ts,
                    key: Some(key),
                    value: Some(value),
                    headers,
                },
            });
        }
        Ok(items_out)
    }

    /// Emits and forgets the windows whose end + grace the stream time has
    /// passed (emit = "close").
    fn close_windows(&mut self, i: usize) -> anyhow::Result<Vec<Item>> {
        let cfg = self.steps[i].0.clone();
        let pipe = self.shared.pipeline.name.clone();
        let prefix = keys::step(&pipe, b'c', &cfg.name, self.partition);
        let mut end = prefix.clone();
        end.extend_from_slice(&keys::ord_i64(
            self.stream_time.saturating_sub(cfg.grace).saturating_add(1),
        ));
        let db = self.shared.log.db();
        let closing = self.txn.range(db, &prefix, &end, usize::MAX)?;
        let mut items = Vec::new();
        for (k, _) in &closing {
            let rest = &k[prefix.len()..];
            let parsed = keys::take_i64(rest).and_then(|(wend, rest)| {
                let (key, rest) = keys::take_key(rest)?;
                let (start, _) = keys::take_i64(rest)?;
                Some((wend, key.to_vec(), start))
            });
            let (wend, key, start) = parsed.context("a window index key is corrupt")?;
            items.push((key, start, wend, 0u64, wend - 1));
        }
        let out = self.present(i, &items)?;
        for (k, _) in closing {
            self.txn.delete(k);
        }
        for (key, start, _, _, _) in items {
            self.txn
                .delete(keys::agg(&pipe, &cfg.name, self.partition, &key, start));
        }
        Ok(out)
    }

    /// Adds one record to its key's session, merging every session it
    /// bridges; emits tombstones for merged-away sessions and the new result.
    fn session_add(&mut self, i: usize, key: &[u8], it: &Item) -> anyhow::Result<Vec<Item>> {
        let cfg = self.steps[i].0.clone();
        let Some(Window::Session { gap }) = cfg.window else {
            return Ok(Vec::new());
        };
        let pipe = self.shared.pipeline.name.clone();
        let ts = it.rec.timestamp;
        if ts < self.stream_time.saturating_sub(gap + cfg.grace) {
            self.shared
                .stats
                .late_dropped
                .fetch_add(1, Ordering::Relaxed);
            return Ok(Vec::new());
        }
        let db = self.shared.log.db();
        let mut prefix = keys::step(&pipe, b'a', &cfg.name, self.partition);
        keys::push_key(&mut prefix, key);
        let sessions = self
            .txn
            .range(db, &prefix, &keys::prefix_end(&prefix), usize::MAX)?;
        let mut start = ts;
        let mut end = ts;
        let mut merged: Option<Vec<u8>> = None;
        let mut removed = Vec::new();
        for (k, v) in sessions {
            let (s, _) = keys::take_i64(&k[prefix.len()..]).context("a session key is corrupt")?;
            let (e, acc_bytes) =
                keys::agg_value(&v).context("a session's accumulator is corrupt")?;
            if s - gap <= ts && ts <= e + gap {
                start = start.min(s);
                end = end.max(e);
                let acc = acc_bytes.to_vec();
                merged = Some(match merged {
                    None => acc,
                    Some(m) => match self.steps[i].1.merge(&m, &acc)? {
                        Ok(x) => x,
                        Err(reason) => {
                            anyhow::bail!("step {}: merging sessions failed: {reason}", cfg.name)
                        }
                    },
                });
                removed.push((k, s, e));
            }
        }
        // Add the record to the merged accumulator (or a new one).
        let mut buf = codec::encode_batch([&it.rec]);
        buf.extend_from_slice(&1u32.to_le_bytes());
        codec::put_opt(&mut buf, merged.as_deref());
        buf.extend_from_slice(&1u32.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        let acc = match self.steps[i].1.call_bytes("add", &buf)? {
            Ok(out) => {
                let mut acc = None;
                let mut rejected = None;
                codec::read_results(&out, 1, |_, e| match e {
                    Entry::Accumulator(a) => acc = Some(a.to_vec()),
                    Entry::Rejected(m) => rejected = Some(m.to_string()),
                    _ => {}
                })?;
                if let Some(m) = rejected {
                    self.dead(
                        &cfg.name,
                        DeadLetter {
                            record: it.rec.clone(),
                            failure: Failure::Rejected(m),
                        },
                    )?;
                    return Ok(Vec::new());
                }
                acc.unwrap_or_default()
            }
            Err(trap) => {
                self.dead(
                    &cfg.name,
                    DeadLetter {
                        record: it.rec.clone(),
                        failure: Failure::Trapped(trap),
                    },
                )?;
                return Ok(Vec::new());
            }
        };
        let mut out = Vec::new();
        for (k, s, e) in removed {
            self.txn.delete(k);
            if cfg.emit == Emit::Update && (s, e) != (start, end) {
                out.push(Item {
                    seq: it.seq,
                    rec: Record {
                        offset: 0,
                        timestamp: ts,
                        key: Some(key.to_vec()),
                        value: None,
                        headers: vec![
                            ("weir.window.start".into(), s.to_string().into_bytes()),
                            ("weir.window.end".into(), e.to_string().into_bytes()),
                        ],
                    },
                });
            }
        }
        let k = keys::agg(&pipe, &cfg.name, self.partition, key, start);
        let mut v = end.to_be_bytes().to_vec();
        v.extend_from_slice(&acc);
        self.txn.put(k, v);
        if cfg.emit == Emit::Update {
            out.extend(self.present(i, &[(key.to_vec(), start, end, it.seq, ts)])?);
        }
        Ok(out)
    }

    /// A join whose state the host keeps: `flow` is the left (stream) side,
    /// `side` the records of the `with` topic, both in batch order.
    fn join(&mut self, i: usize, flow: Vec<Item>, side: Vec<Item>) -> anyhow::Result<Vec<Item>> {
        let cfg = self.steps[i].0.clone();
        let pipe = self.shared.pipeline.name.clone();
        let mut all: Vec<(bool, Item)> = flow
            .into_iter()
            .map(|it| (true, it))
            .chain(side.into_iter().map(|it| (false, it)))
            .collect();
        all.sort_by_key(|(_, it)| it.seq);
        // (key, ts, left, right, seq) pairs for the guest, in order.
        let mut pairs: Vec<JoinPair> = Vec::new();
        let mut tombstones: Vec<Item> = Vec::new();
        for (is_left, it) in all {
            self.stream_time = self.stream_time.max(it.rec.timestamp);
            let key = it.rec.key.clone();
            let db = self.shared.log.db();
            match (cfg.with_kind, is_left) {
                (WithKind::Table, side_is_left) => {
                    let Some(k) = key else {
                        // An unkeyed stream record meets nothing.
                        if side_is_left && !cfg.as_table && cfg.join != JoinType::Inner {
                            pairs.push((
                                None,
                                it.rec.timestamp,
                                it.rec.value.clone(),
                                None,
                                it.seq,
                                it.rec,
                            ));
                        }
                        continue;
                    };
                    let table_key = |side: u8| {
                        let mut sk = keys::step(&pipe, b'j', &cfg.name, self.partition);
                        sk.push(side);
                        keys::push_key(&mut sk, &k);
                        sk
                    };
                    // Keep the newest value of each table side (and what it
                    // was, to know whether a join result existed before).
                    let mut before: Option<TableRow> = None;
                    if !side_is_left || cfg.as_table {
                        let sk = table_key(if side_is_left { b'l' } else { b'r' });
                        if cfg.as_table {
                            before = Some((
                                self.txn.get(db, &table_key(b'l'))?,
                                self.txn.get(db, &table_key(b'r'))?,
                            ));
                        }
                        match &it.rec.value {
                            Some(v) => self.txn.put(sk, v.clone()),
                            None => self.txn.delete(sk),
                        }
                    }
                    if !side_is_left && !cfg.as_table {
                        // Stream-table: a table update emits nothing.
                        continue;
                    }
                    let right = self.txn.get(db, &table_key(b'r'))?;
                    let left = if cfg.as_table {
                        self.txn.get(db, &table_key(b'l'))?
                    } else {
                        it.rec.value.clone()
                    };
                    let ts = it.rec.timestamp;
                    let joined = |l: bool, r: bool| match cfg.join {
                        JoinType::Inner => l && r,
                        JoinType::Left => l,
                        JoinType::Outer => l || r,
                    };
                    if joined(left.is_some(), right.is_some()) {
                        pairs.push((Some(k), ts, left, right, it.seq, it.rec));
                    } else if let Some((l0, r0)) = before
                        && joined(l0.is_some(), r0.is_some())
                    {
                        // Table-table: the key's join result is gone.
                        tombstones.push(Item {
                            seq: it.seq,
                            rec: Record {
                                offset: it.rec.offset,
                                timestamp: ts,
                                key: Some(k),
                                value: None,
                                headers: Vec::new(),
                            },
                        });
                    }
                }
                (WithKind::Stream, _) => {
                    let Some(k) = key else { continue };
                    let ts = it.rec.timestamp;
                    let (mine, other) = if is_left { (b'L', b'R') } else { (b'R', b'L') };
                    // A right record at time t meets left records in
                    // [t - after, t + before]; a left one right records in
                    // [t - before, t + after].
                    let (lo, hi) = if is_left {
                        (ts - cfg.before, ts + cfg.after)
                    } else {
                        (ts - cfg.after, ts + cfg.before)
                    };
                    let mut op = keys::step(&pipe, b'j', &cfg.name, self.partition);
                    op.push(other);
                    keys::push_key(&mut op, &k);
                    let mut from = op.clone();
                    from.extend_from_slice(&keys::ord_i64(lo));
                    let mut to = op.clone();
                    to.extend_from_slice(&keys::ord_i64(hi.saturating_add(1)));
                    let matches = self.txn.range(db, &from, &to, usize::MAX)?;
                    for (_, v) in &matches {
                        let (l, r) = if is_left {
                            (it.rec.value.clone(), Some(v.clone()))
                        } else {
                            (Some(v.clone()), it.rec.value.clone())
                        };
                        pairs.push((Some(k.clone()), ts, l, r, it.seq, it.rec.clone()));
                    }
                    if matches.is_empty() && is_left && cfg.join != JoinType::Inner {
                        pairs.push((
                            Some(k.clone()),
                            ts,
                            it.rec.value.clone(),
                            None,
                            it.seq,
                            it.rec.clone(),
                        ));
                    }
                    let mut mk = keys::step(&pipe, b'j', &cfg.name, self.partition);
                    mk.push(mine);
                    keys::push_key(&mut mk, &k);
                    mk.extend_from_slice(&keys::ord_i64(ts));
                    mk.extend_from_slice(&it.rec.offset.to_be_bytes());
                    mk.extend_from_slice(&it.seq.to_be_bytes());
                    self.txn.put(mk, it.rec.value.clone().unwrap_or_default());
                }
            }
        }
        if cfg.with_kind == WithKind::Stream {
            self.purge_join_buffers(i)?;
        }
        if pairs.is_empty() {
            return Ok(tombstones);
        }
        let mut buf = (pairs.len() as u32).to_le_bytes().to_vec();
        for (key, ts, l, r, _, _) in &pairs {
            codec::put_opt(&mut buf, key.as_deref());
            buf.extend_from_slice(&ts.to_le_bytes());
            codec::put_opt(&mut buf, l.as_deref());
            codec::put_opt(&mut buf, r.as_deref());
        }
        let out = match self.steps[i].1.call_bytes("join", &buf)? {
            Ok(out) => out,
            Err(trap) => {
                for (_, _, _, _, _, rec) in pairs {
                    self.dead(
                        &cfg.name,
                        DeadLetter {
                            record: rec,
                            failure: Failure::Trapped(trap.clone()),
                        },
                    )?;
                }
                return Ok(Vec::new());
            }
        };
        let mut results: Vec<Option<Result<Option<Vec<u8>>, String>>> = vec![None; pairs.len()];
        codec::read_results(&out, pairs.len(), |idx, e| {
            let slot = &mut results[idx as usize];
            match e {
                Entry::Value(v) => *slot = Some(Ok(v.map(<[u8]>::to_vec))),
                Entry::Rejected(m) => *slot = Some(Err(m.to_string())),
                _ => {}
            }
        })
        .with_context(|| format!("step {}: join", cfg.name))?;
        let mut next = Vec::new();
        for ((key, ts, _, _, seq, rec), res) in pairs.into_iter().zip(results) {
            match res {
                Some(Ok(Some(value))) => next.push(Item {
                    seq,
                    rec: Record {
                        offset: rec.offset,
                        timestamp: ts,
                        key,
                        value: Some(value),
                        headers: rec.headers,
                    },
                }),
                Some(Ok(None)) | None => {}
                Some(Err(m)) => self.dead(
                    &cfg.name,
                    DeadLetter {
                        record: rec,
                        failure: Failure::Rejected(m),
                    },
                )?,
            }
        }
        next.extend(tombstones);
        next.sort_by_key(|it| it.seq);
        Ok(next)
    }

    /// Forgets buffered stream records that no future record can meet.
    fn purge_join_buffers(&mut self, i: usize) -> anyhow::Result<()> {
        let cfg = self.steps[i].0.clone();
        let pipe = self.shared.pipeline.name.clone();
        let horizon = self
            .stream_time
            .saturating_sub(cfg.before.max(cfg.after) + cfg.grace + 1);
        let db = self.shared.log.db();
        for side in [b'L', b'R'] {
            let mut p = keys::step(&pipe, b'j', &cfg.name, self.partition);
            p.push(side);
            let entries = self.txn.range(db, &p, &keys::prefix_end(&p), usize::MAX)?;
            for (k, _) in entries {
                let rest = &k[p.len()..];
                let ts = keys::take_key(rest)
                    .and_then(|(_, rest)| keys::take_i64(rest))
                    .map(|(ts, _)| ts)
                    .context("a join buffer key is corrupt")?;
                if ts < horizon {
                    self.txn.delete(k);
                }
            }
        }
        Ok(())
    }
}
