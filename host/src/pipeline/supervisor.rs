//! The supervisor of a running pipeline: keeps one task per (segment,
//! assigned partition) running as the assignment changes, restarts a task
//! that was fenced while its partition is still assigned, and stops the run
//! when a task fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::engine::{Shared, lock};
use super::task::Task;
use crate::backend::Assignment;

struct Running {
    revoked: Arc<AtomicBool>,
    fenced: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<()>>,
}

/// Keeps one task per (segment, assigned partition) running until the run
/// stops, every task finished, or a task failed.
pub(super) fn supervise(
    shared: &Arc<Shared>,
    assignor: &mut dyn crate::backend::Assignor,
    assigned: &Mutex<Assignment>,
) -> anyhow::Result<()> {
    let mut running: HashMap<(usize, u32), Running> = HashMap::new();
    let failed = Arc::new(AtomicBool::new(false));
    let mut first_err: Option<anyhow::Error> = None;
    // Tasks that end and `PipelineHandle::stop` unpark this thread; the
    // wait only bounds how late a stop flag set from outside is seen.
    let me = std::thread::current();
    let mut current = Assignment::default();
    // Tasks that stopped because their commit was fenced, and when: they
    // start again after a second if their partition is still ours (the
    // fence came from a rebalance that left it here).
    let mut fenced: HashMap<(usize, u32), Instant> = HashMap::new();
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst) || failed.load(Ordering::SeqCst);
        let polled = if stopping {
            None
        } else {
            match assignor.poll(Duration::from_millis(250)) {
                Ok(set) => set,
                // The assignment is lost (a consumer group gone): the tasks
                // finish their batch and stop before the run ends with it.
                Err(e) => {
                    first_err.get_or_insert(e);
                    shared.stop.store(true, Ordering::SeqCst);
                    shared.backend.wake();
                    None
                }
            }
        };
        if let Some(set) = polled {
            // Revoked partitions: their tasks finish their batch and stop.
            let gone: Vec<(usize, u32)> = running
                .keys()
                .filter(|(seg, p)| !set.of(&shared.segments[*seg].source).contains(p))
                .copied()
                .collect();
            for key in gone {
                if let Some(r) = running.remove(&key) {
                    r.revoked.store(true, Ordering::SeqCst);
                    if let Err(e) = join(r.thread, key) {
                        first_err.get_or_insert(e);
                    }
                }
            }
            *lock(assigned) = set.clone();
            current = set;
        } else if stopping {
            std::thread::park_timeout(Duration::from_millis(50));
        }
        if !stopping {
            let ended: Vec<(usize, u32)> = running
                .iter()
                .filter(|(_, r)| r.thread.is_finished() && r.fenced.load(Ordering::SeqCst))
                .map(|(k, _)| *k)
                .collect();
            for key in ended {
                if let Some(r) = running.remove(&key) {
                    if let Err(e) = join(r.thread, key) {
                        first_err.get_or_insert(e);
                    }
                    shared.finished[key.0].fetch_sub(1, Ordering::SeqCst);
                    fenced.insert(key, Instant::now());
                }
            }
            fenced.retain(|_, at| at.elapsed() < Duration::from_secs(1));
            for seg in 0..shared.segments.len() {
                for p in current.of(&shared.segments[seg].source) {
                    if running.contains_key(&(seg, p)) || fenced.contains_key(&(seg, p)) {
                        continue;
                    }
                    let revoked = Arc::new(AtomicBool::new(false));
                    let gone = Arc::new(AtomicBool::new(false));
                    let (s, r, f, g) = (
                        shared.clone(),
                        revoked.clone(),
                        failed.clone(),
                        gone.clone(),
                    );
                    let me = me.clone();
                    let thread = std::thread::Builder::new()
                        .name(format!("weir-task-{seg}-{p}"))
                        .spawn(move || {
                            let result = Task::new(s.clone(), seg, p, r).and_then(|mut t| {
                                let ran = t.run();
                                g.store(t.fenced.load(Ordering::SeqCst), Ordering::SeqCst);
                                ran
                            });
                            s.finished[seg].fetch_add(1, Ordering::SeqCst);
                            if result.is_err() {
                                // One failed task stops the run: the others
                                // finish their batch and commit.
                                f.store(true, Ordering::SeqCst);
                                s.stop.store(true, Ordering::SeqCst);
                            }
                            // Downstream tasks waiting for data look again
                            // (upstream finished, or the run stops).
                            s.backend.wake();
                            me.unpark();
                            result
                        })?;
                    running.insert(
                        (seg, p),
                        Running {
                            revoked,
                            fenced: gone,
                            thread,
                        },
                    );
                }
            }
        }
        if running.values().all(|r| r.thread.is_finished()) && !running.is_empty()
            || (stopping && running.is_empty())
        {
            break;
        }
    }
    for (key, r) in running {
        if let Err(e) = join(r.thread, key) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn join(thread: JoinHandle<anyhow::Result<()>>, (seg, p): (usize, u32)) -> anyhow::Result<()> {
    match thread.join() {
        Ok(r) => r.with_context(|| format!("task {seg}-{p}")),
        Err(_) => bail!("task {seg}-{p} panicked"),
    }
}
