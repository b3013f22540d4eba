//! What a running pipeline tells about itself: per step, records in and
//! out, dead letters, lag, its module, swaps and time; and the state
//! caches' size.

use super::*;

/// What one step is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepStatus {
    /// The step's name.
    pub name: String,
    /// The sha256 of the module it runs.
    pub module_sha256: String,
    /// The module's name.
    pub module: String,
    /// How many times its module was swapped.
    pub swaps: u64,
    /// Records that entered it.
    pub records_in: u64,
    /// Records it emitted (on down the flow and to named outputs).
    pub records_out: u64,
    /// Records it sent to the dead letters.
    pub dead_letters: u64,
    /// The first dead-letter reason, if any.
    pub first_dead_letter: Option<String>,
    /// Records of its segment's source not yet read.
    pub lag: u64,
    /// How the last swap went.
    pub last_swap: SwapState,
    /// The longest time a task switching to the current module spent
    /// between two batches (the swap's pause), in microseconds.
    pub last_swap_pause_us: u64,
    /// Time spent running the step (its guest calls and the host's work
    /// for it), in microseconds.
    pub busy_us: u64,
    /// The part of `busy_us` spent inside guest calls (the guest's code
    /// and the host functions it called), in microseconds.
    pub guest_us: u64,
}

/// What a running pipeline is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The pipeline's name.
    pub pipeline: String,
    /// Its steps, in order.
    pub steps: Vec<StepStatus>,
    /// The partitions of the input this process runs.
    pub partitions: Vec<u32>,
    /// Records read from sources so far.
    pub records_in: u64,
    /// Whether it stopped.
    pub finished: bool,
    /// What the tasks' state caches hold (committed entries kept for reads
    /// and changes not committed yet), in bytes.
    pub cache_bytes: u64,
}

impl PipelineHandle {
    /// What it is doing now.
    pub fn status(&self) -> Status {
        let s = &self.shared;
        let assigned = lock(&self.assigned).clone();
        let input = s.segments.first().map(|seg| seg.source.as_str());
        let partitions: Vec<u32> = assigned.of(input.unwrap_or_default()).into_iter().collect();
        let mut steps = Vec::new();
        for (si, cfg) in s.pipeline.steps.iter().enumerate() {
            let slot = lock(&s.slots[si]);
            let c = &s.steps[si];
            let lag = s
                .segments
                .iter()
                .find(|seg| seg.steps.contains(&si))
                .map_or(0, |seg| {
                    let mine: Vec<u32> = assigned.of(&seg.source).into_iter().collect();
                    self.lag(&seg.source, &mine)
                });
            steps.push(StepStatus {
                name: cfg.name.clone(),
                module_sha256: slot.module.sha256().to_string(),
                module: slot.module.name().to_string(),
                swaps: slot.generation,
                records_in: c.records_in.load(Ordering::Relaxed),
                records_out: c.records_out.load(Ordering::Relaxed),
                dead_letters: c.dead_letters.load(Ordering::Relaxed),
                first_dead_letter: slot.first_dead.clone(),
                lag,
                last_swap: slot.last_swap.clone(),
                busy_us: c.busy_us.load(Ordering::Relaxed),
                guest_us: c.guest_us.load(Ordering::Relaxed),
                last_swap_pause_us: slot.pauses.iter().max().map_or(0, |d| d.as_micros() as u64),
            });
        }
        Status {
            pipeline: s.pipeline.name.clone(),
            steps,
            partitions,
            records_in: s.stats.records_in.load(Ordering::Relaxed),
            finished: self.done.load(Ordering::SeqCst),
            cache_bytes: s.stats.cache_bytes.load(Ordering::Relaxed),
        }
    }

    fn lag(&self, topic: &str, partitions: &[u32]) -> u64 {
        let s = &self.shared;
        let Ok(t) = s.topic(topic) else { return 0 };
        partitions
            .iter()
            .map(|&p| {
                let end = s.backend.end_offset(&t, p).unwrap_or(0);
                let at = s
                    .backend
                    .position(&s.pipeline.name, topic, p)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                end.saturating_sub(at)
            })
            .sum()
    }
}
