//! The commit path of a task: what a batch emitted goes into the pending
//! commit, and a commit writes the held-back updates, outputs, dead
//! letters, state changes, positions and stream time to the backend as one.

use super::*;

impl Task {
    /// Commits what is pending, if anything.
    pub(super) fn commit_pending(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() && self.txn.is_empty() {
            return Ok(());
        }
        self.commit()
    }

    /// Takes back what the batch added to the steps' counters (a batch
    /// thrown away).
    pub(super) fn take_back_counts(&self) {
        for (i, [n_in, n_out, n_dead]) in self.counted.iter().enumerate() {
            let c = &self.shared.steps[self.step_ids[i]];
            c.records_in.fetch_sub(*n_in, Ordering::Relaxed);
            c.records_out.fetch_sub(*n_out, Ordering::Relaxed);
            c.dead_letters.fetch_sub(*n_dead, Ordering::Relaxed);
        }
    }

    /// Shows the cache's size (committed entries and pending changes) in
    /// the run's status.
    pub(super) fn report_cache(&mut self, dirty: usize) {
        let now = (self.cache.bytes() + dirty) as u64;
        let stats = &self.shared.stats;
        stats
            .cache_bytes
            .fetch_add(now.wrapping_sub(self.reported_cache), Ordering::Relaxed);
        self.reported_cache = now;
    }

    /// Adds what a batch emitted to the pending commit: the flow to the
    /// segment's sink, named outputs and dead letters.
    pub(super) fn stage(&mut self, flow: Vec<Item>, out: Collector) -> anyhow::Result<()> {
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
                // Where the record was read: another source (a merged input,
                // a join's other side) when only it gave this offset in the
                // batch, else the segment's source.
                let offset = r.offset.max(0) as u64;
                let src = (0..self.sources.len())
                    .position(|i| {
                        i > 0
                            && self.taken.get(i).is_some_and(|t| t.contains(&offset))
                            && !self.taken.first().is_some_and(|t| t.contains(&offset))
                    })
                    .unwrap_or(0);
                r.headers.push((
                    "weir.topic".into(),
                    self.sources[src].topic.name.as_bytes().to_vec(),
                ));
                r.headers.push((
                    "weir.partition".into(),
                    self.sources[src].partition.to_string().into_bytes(),
                ));
                r.headers
                    .push(("weir.offset".into(), offset.to_string().into_bytes()));
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
    pub(super) fn commit(&mut self) -> anyhow::Result<()> {
        let mut out = Collector::default();
        let mut flow = Vec::new();
        let now = self.now_ms();
        for i in 0..self.operators.len() {
            if self.operators[i].deferred_bytes() == 0 {
                continue;
            }
            let mut cx = step_ctx!(self, &mut out, self.stream_time, now);
            let (emitted, dead) = (cx.out.emitted.len(), cx.out.dead.len());
            let started = std::time::Instant::now();
            let guest_before = self.operators[i].guest().guest_time();
            let held = self.operators[i].flush(&mut cx)?;
            let counters = &self.shared.steps[self.step_ids[i]];
            counters.add_time(
                started.elapsed(),
                self.operators[i]
                    .guest()
                    .guest_time()
                    .saturating_sub(guest_before),
            );
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
        commit.task = Some(self.id());
        let puts = self.txn.take();
        self.cache
            .committed(puts.iter().map(|(k, v)| (k.as_slice(), v)));
        for (k, v) in puts {
            commit.put(k, v);
        }
        // A repartition topic's records go once their reader is past them
        // (Kafka Streams purges them too): nothing reads them again, and the
        // log would otherwise keep every one for ever.
        let purge = std::time::Instant::now() >= self.purge_at;
        for src in &self.sources {
            if let Some(k) = &src.global {
                if src.next != src.saved {
                    commit.put(k.clone(), Some(src.next.to_be_bytes().to_vec()));
                }
                continue;
            }
            commit.position(pipe, &src.topic.name, self.partition, src.next);
            if purge && !src.external && src.next > src.purged {
                commit.purge(&src.topic, self.partition, src.purged..src.next);
            }
        }
        commit.put(
            keys::stream_time(pipe, self.seg_index as u32, self.partition),
            Some(keys::ord_i64(self.stream_time).to_vec()),
        );
        // The cache already holds what this commit writes: if the commit
        // fails, the task clears it (`load_committed`) before going on.
        shared.backend.commit(commit)?;
        for src in &mut self.sources {
            src.saved = src.next;
        }
        if purge {
            for src in &mut self.sources {
                if !src.external {
                    src.purged = src.purged.max(src.next);
                }
            }
            self.purge_at = std::time::Instant::now() + PURGE_INTERVAL;
        }
        self.commits += 1;
        self.report_cache(0);
        Ok(())
    }
}

/// The changelogs a segment's state goes to (see [`keys::changelog`]).
pub(super) fn changelogs(shared: &Shared, seg_index: usize) -> Vec<String> {
    let mut names = vec![format!("segment-{seg_index}")];
    for si in shared.segments[seg_index].steps.clone() {
        let cfg = &shared.pipeline.steps[si];
        match cfg.kind {
            // A table's grouping keeps each row's group, a table map in
            // front of an inner join the keys its input holds.
            StepKind::Map if cfg.groups_table || cfg.tracks_rows => names.push(cfg.name.clone()),
            StepKind::Map => {}
            StepKind::Aggregate | StepKind::Join => names.push(cfg.name.clone()),
            StepKind::Processor => {
                names.push(cfg.name.clone());
                for store in &cfg.stores {
                    names.push(format!("{}-{store}", cfg.name));
                }
            }
        }
    }
    names
}
