//! Hot swaps and rollbacks of a running step's module, as the daemon
//! requests them of the engine and records them in the deployment.

use super::status::swap_text;
use super::*;

impl Daemon {
    /// `POST /pipelines/P/steps/S/swap`: switches a running step to
    /// `module` (NAME@VERSION or NAME@latest).
    pub fn swap(&self, name: &str, step: &str, module: &str, rollback: bool) -> Reply {
        let dep = self.get(name)?;
        // Under the deployment's lock: what to swap, and a hold on the
        // handle; the wait for the first batch goes without the lock, so
        // that status and metrics answer meanwhile.
        let (from, to, v, handle) = {
            let mut d = lock(&dep);
            self.reconcile(&mut d);
            if d.swapping {
                return Err(fail(
                    409,
                    format!("a swap of pipeline {name} is under way: try again when it answered"),
                ));
            }
            let Some(from) = d.spec.steps.get(step).cloned() else {
                return Err(fail(
                    404,
                    format!(
                        "pipeline {name} has no step {step} that runs a registry module (steps: {})",
                        d.spec.steps.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            let (to, v) = lock(&self.registry).resolve(module)?;
            let Some(main) = d.main.as_ref().filter(|r| !r.handle.is_finished()) else {
                return Err(fail(
                    409,
                    format!("pipeline {name} is not running: `weir pipeline start {name}` first"),
                ));
            };
            let handle = main.handle.clone();
            d.swapping = true;
            (from, to, v, handle)
        };
        let outcome = self.switch(&handle, name, step, &to, &v);
        let mut d = lock(&dep);
        d.swapping = false;
        let (state, switched_ms, pause) = outcome?;
        if let SwapState::RolledBack(reason) = &state {
            let reason = &lock(&self.registry).name_blobs(reason);
            let message = format!(
                "the swap of step {step} of {name} to {to} was rolled back: {reason}; step {step} runs {from} again, and nothing of the failed batch was committed"
            );
            d.last_rollback = Some(message.clone());
            return Err(Failure {
                status: 409,
                message,
                extra: Some(json!({"outcome": "rolled_back", "reason": reason, "module": from})),
            });
        }
        if !d
            .main
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(&r.handle, &handle))
        {
            return Err(fail(
                409,
                format!(
                    "pipeline {name} was stopped or redeployed while step {step} was swapped to {to}: it runs what it was started with"
                ),
            ));
        }
        d.spec.steps.insert(step.to_string(), to.clone());
        let h = d.spec.history.entry(step.to_string()).or_default();
        if rollback {
            h.pop();
        } else {
            h.push(to.clone());
        }
        if state == SwapState::Pending {
            d.pending = Some((step.to_string(), from.clone(), to.clone()));
        }
        self.save(&d.spec)?;
        Ok(json!({
            "pipeline": name,
            "step": step,
            "from": from,
            "to": to,
            "outcome": swap_text(&state),
            "switch_ms": switched_ms,
            "pause_us": pause,
        }))
    }

    /// Switches `step` to the stored version `v` (`to`) and waits for the
    /// verdict of its first batch: the state, the time to switch every task
    /// (ms) and the longest pause of a task (µs).
    fn switch(
        &self,
        handle: &PipelineHandle,
        name: &str,
        step: &str,
        to: &str,
        v: &registry::Version,
    ) -> Result<(SwapState, f64, u64), Failure> {
        // Just deployed: its tasks may not run yet, and a swap counts the
        // running ones (tasks started later start on the new version).
        let waited = Instant::now();
        while handle.status().partitions.is_empty() && waited.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let path = lock(&self.registry).blob(&v.sha256);
        let loaded = self
            .runtime
            .load_file(&path)
            .map_err(|e| fail(400, format!("{to}: {e:#}")))?;
        let started = Instant::now();
        handle
            .swap(step, loaded, Duration::from_secs(10))
            .map_err(|e| {
                fail(
                    409,
                    format!("cannot swap step {step} of {name} to {to}: {e:#}"),
                )
            })?;
        let switched_ms = started.elapsed().as_secs_f64() * 1e3;
        // The first batch decides.
        let deadline = Instant::now() + self.swap_wait;
        let state = loop {
            let s = handle.swap_state(step).unwrap_or_default();
            if s != SwapState::Pending || Instant::now() >= deadline {
                break s;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let pause = handle
            .status()
            .steps
            .iter()
            .find(|s| s.name == step)
            .map_or(0, |s| s.last_swap_pause_us);
        Ok((state, switched_ms, pause))
    }

    /// `POST /pipelines/P/steps/S/rollback`: back to the version before.
    pub fn rollback(&self, name: &str, step: &str) -> Reply {
        let previous = {
            let dep = self.get(name)?;
            let mut d = lock(&dep);
            self.reconcile(&mut d);
            let h = d.spec.history.get(step).cloned().unwrap_or_default();
            if h.len() < 2 {
                return Err(fail(
                    409,
                    format!(
                        "step {step} of {name} has no earlier version to go back to (it ran only {})",
                        h.last().map_or("one version".to_string(), Clone::clone)
                    ),
                ));
            }
            h[h.len() - 2].clone()
        };
        self.swap(name, step, &previous, true)
    }
}
