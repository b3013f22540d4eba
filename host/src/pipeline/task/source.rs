//! A task's sources: the topics its segment reads (its input, and a join's
//! other side), buffered, and taken in timestamp order across them.

use super::*;

pub(super) struct Source {
    pub(super) topic: Topic,
    /// The partition it reads: the task's, but for a global table's.
    pub(super) partition: u32,
    /// A global table's partition: read ahead of the other sources, and
    /// its position kept in the task's state under this key.
    pub(super) global: Option<Vec<u8>>,
    /// A global table partition's position as last committed (it is
    /// written again only when it moved).
    pub(super) saved: u64,
    /// The position to commit: past the last record taken from the buffer.
    pub(super) next: u64,
    /// Where the next read starts (past the buffer, and past offsets that
    /// hold no record, such as Kafka's transaction markers).
    pub(super) fetch: u64,
    /// The step (index within the segment) where its records enter: 0 for
    /// the segment's source, a join's index for the join's other side.
    pub(super) enters_at: usize,
    /// A join's other side (not the segment's stream).
    pub(super) side: bool,
    pub(super) buffer: VecDeque<Stored>,
    /// Not a pipeline's internal topic (its input, or a join's other side).
    pub(super) external: bool,
    /// An internal (repartition) topic's records below this offset are
    /// deleted: the commits that took the task past them purged them.
    pub(super) purged: u64,
}

impl Task {
    /// Fills source buffers and takes up to a batch of records in timestamp
    /// order across sources (on equal timestamps, a join's other side first,
    /// so that a table update applies before a stream record of its time).
    pub(super) fn take_batch(&mut self) -> anyhow::Result<Vec<(usize, Stored)>> {
        let batch = self.shared.options.batch.max(1);
        let until_caught_up = self.shared.options.until_caught_up;
        for src in &mut self.sources {
            if src.buffer.len() < batch {
                let from = src.fetch;
                // A run that stops once caught up reads external topics
                // only to where they ended when it started.
                let end = (src.external && until_caught_up)
                    .then(|| self.shared.end_at_start(&src.topic.name, src.partition));
                let limit = end.map_or(batch, |end| end.saturating_sub(from) as usize);
                let want = (batch - src.buffer.len()).min(limit);
                if want > 0 {
                    let (mut records, mut next) =
                        self.shared
                            .backend
                            .read_from(&src.topic, src.partition, from, want)?;
                    if let Some(end) = end
                        && let Some(cut) = records.iter().position(|r| r.offset >= end)
                    {
                        next = records[cut].offset;
                        records.truncate(cut);
                    }
                    src.fetch = next;
                    src.buffer.extend(records);
                    if src.buffer.is_empty() {
                        src.next = src.next.max(src.fetch);
                    }
                }
            }
        }
        // Timestamp order across sources needs each source's next record: a
        // source with nothing buffered that is known to hold more (a Kafka
        // fetch still on its way) is waited for, as Kafka Streams does.
        if self.sources.len() > 1 {
            for i in 0..self.sources.len() {
                if self.sources[i].buffer.is_empty() && self.holds_more(i)? {
                    return Ok(Vec::new());
                }
            }
        }
        let mut out = Vec::new();
        while out.len() < batch {
            let mut best: Option<(usize, i64)> = None;
            for (i, src) in self.sources.iter().enumerate() {
                if let Some(head) = src.buffer.front() {
                    let ts = head.timestamp();
                    // A global table's records go first, whatever their
                    // time, as Kafka Streams' global thread keeps its
                    // tables up to date ahead of the stream.
                    let better = match best {
                        None => true,
                        Some((bi, bts)) => {
                            let (g, bg) = (src.global.is_some(), self.sources[bi].global.is_some());
                            (g && !bg)
                                || (g == bg
                                    && (ts < bts
                                        || (ts == bts && src.side && !self.sources[bi].side)))
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
                if src.buffer.is_empty() {
                    src.next = src.next.max(src.fetch);
                }
                out.push((i, r));
            }
            // A source that ran dry but holds more (a Kafka fetch that
            // delivered part of what is there) ends the batch: its next
            // record may come before the other sources' heads.
            if self.sources.len() > 1 && self.sources[i].buffer.is_empty() && self.holds_more(i)? {
                break;
            }
        }
        Ok(out)
    }

    /// Whether source `i` holds records past what it fetched (up to where
    /// this run must read).
    fn holds_more(&self, i: usize) -> anyhow::Result<bool> {
        let src = &self.sources[i];
        let end = if src.external && self.shared.options.until_caught_up {
            self.shared.end_at_start(&src.topic.name, src.partition)
        } else {
            self.shared.backend.end_offset(&src.topic, src.partition)?
        };
        Ok(src.fetch < end)
    }
}
