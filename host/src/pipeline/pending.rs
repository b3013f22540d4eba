//! A task's pending commit: what the batches since the last commit
//! appended (outputs, dead letters), and when it is time to commit.
//!
//! A task runs batches into one pending commit and commits — outputs, dead
//! letters, state changes, positions and stream time, atomically — once the
//! commit interval has passed since the first of them, or sooner: when
//! the uncommitted state changes pass half the state cache's bound (with no
//! cache, after every batch that changed state), when the appended records
//! pass [`MAX_PENDING_APPEND_BYTES`], when the task idles (a batch came back
//! empty), before a module swap, and when it stops. Nothing of a batch is
//! visible to readers before its commit (on Kafka, a batch's records are
//! sent at once, inside the task's open transaction; under at-least-once
//! readers may see them sooner); a crash between two commits replays the
//! uncommitted batches from the last committed positions.

use std::time::{Duration, Instant};

use crate::backend::Commit;

/// A task commits once the records it appended since its last commit pass
/// this many bytes.
pub(crate) const MAX_PENDING_APPEND_BYTES: usize = 2 << 20;

/// The batches run since the last commit.
pub(crate) struct Pending {
    /// What they appended; state, positions and stream time are added at
    /// commit.
    pub commit: Commit,
    /// How many bytes of records `commit` appends.
    pub append_bytes: usize,
    /// When the first of them ran.
    pub since: Option<Instant>,
    /// Batches in it.
    pub batches: usize,
    interval: Duration,
    /// Uncommitted state changes past this many bytes make a commit due.
    dirty_max: usize,
}

impl Pending {
    /// Nothing pending yet; commit every `interval` and when the state
    /// changes pass half of `cache_max_bytes`.
    pub fn new(interval: Duration, cache_max_bytes: u64) -> Self {
        Pending {
            commit: Commit::default(),
            append_bytes: 0,
            since: None,
            batches: 0,
            interval,
            dirty_max: usize::try_from(cache_max_bytes / 2).unwrap_or(usize::MAX),
        }
    }

    /// Notes that a batch ran into it.
    pub fn ran(&mut self) {
        self.batches += 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// Whether anything waits for a commit.
    pub fn is_empty(&self) -> bool {
        self.batches == 0 && self.commit.is_empty()
    }

    /// Whether to commit now, with `dirty` bytes of uncommitted state
    /// changes (and held-back emissions).
    pub fn due(&self, dirty: usize) -> bool {
        if self.is_empty() && dirty == 0 {
            return false;
        }
        dirty > self.dirty_max
            || self.append_bytes >= MAX_PENDING_APPEND_BYTES
            || self.since.is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// Takes what to commit, leaving it empty.
    pub fn take(&mut self) -> Commit {
        self.append_bytes = 0;
        self.since = None;
        self.batches = 0;
        std::mem::take(&mut self.commit)
    }

    /// Drops what is pending (it is replayed).
    pub fn clear(&mut self) {
        self.take();
    }
}
