//! Hot swaps, as a task applies them between two batches: switching an
//! operator to its step's new module (after committing what the old one
//! ran), bringing the step's state to the new module's format, and the
//! probation of the swap's first batch.

use super::*;

impl Task {
    /// Brings every step's state to the format its module writes (see
    /// [`upgrade`]), into the pending changes: after (re)reading the
    /// committed state, which may predate an upgrade that did not commit.
    /// A step whose module is about to be switched is left to the switch.
    pub(super) fn ensure_formats(&mut self) -> anyhow::Result<()> {
        for i in 0..self.operators.len() {
            let si = self.step_ids[i];
            if self.shared.generation(si) != self.generations[i] {
                continue;
            }
            let op = &mut self.operators[i];
            let mut guest = op.swap(Box::new(upgrade::Lent));
            let done = upgrade::ensure_format(
                op.config(),
                guest.as_mut(),
                &self.shared.pipeline.name,
                self.partition,
                &self.base,
                &mut self.txn,
            );
            op.swap(guest);
            log_upgrade(
                &self.shared.pipeline.name,
                &op.config().name,
                self.partition,
                done?,
            );
        }
        Ok(())
    }

    /// Switches every operator whose step got a new module since this task
    /// last looked (between two batches), after committing what the old
    /// modules ran.
    pub(super) fn apply_swaps(&mut self) -> anyhow::Result<()> {
        let swapped = (0..self.operators.len())
            .any(|i| self.shared.generation(self.step_ids[i]) != self.generations[i]);
        if !swapped {
            return Ok(());
        }
        // A swap still on probation here is being rolled back (another task
        // rejected it) before this task ran a batch with it: what it holds
        // is that swap's state upgrade, which must not commit.
        let reverted = self
            .probation
            .iter()
            .any(|&(i, g)| self.shared.generation(self.step_ids[i]) != g);
        if reverted {
            self.probation.clear();
            self.load_committed()?;
        }
        self.commit_pending()?;
        for i in 0..self.operators.len() {
            let si = self.step_ids[i];
            let generation = self.shared.generation(si);
            if generation == self.generations[i] {
                continue;
            }
            let started = std::time::Instant::now();
            let op = &mut self.operators[i];
            match self.shared.guest(si) {
                Ok((mut guest, generation)) => {
                    // The state goes over to the new module's format before
                    // its first batch, and commits with it.
                    let upgraded = upgrade::ensure_format(
                        op.config(),
                        guest.as_mut(),
                        &self.shared.pipeline.name,
                        self.partition,
                        &self.base,
                        &mut self.txn,
                    );
                    op.swap(guest);
                    let step_name = op.config().name.clone();
                    self.generations[i] = generation;
                    self.probation.retain(|(o, _)| *o != i);
                    let on_probation = self.shared.applied(si, generation, started.elapsed());
                    if on_probation {
                        self.probation.push((i, generation));
                    } else if self.shared.generation(si) != generation {
                        // Superseded meanwhile (another task rejected it):
                        // no batch runs with it, and its upgrade must not
                        // commit; switch to what replaced it.
                        if upgraded.as_ref().map_or(true, |u| u.from != u.to) {
                            self.load_committed()?;
                        }
                        return self.apply_swaps();
                    }
                    match upgraded {
                        Ok(u) => {
                            log_upgrade(&self.shared.pipeline.name, &step_name, self.partition, u)
                        }
                        Err(e) => {
                            // Refused during a swap: the swap is rolled back
                            // (nothing of it was committed).
                            if on_probation && let Some(r) = e.downcast_ref::<UpgradeRefused>() {
                                return Err(SwapRejected {
                                    step: si,
                                    generation,
                                    step_name,
                                    reason: r.0.clone(),
                                }
                                .into());
                            }
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    // The swap's own check instantiated it; keep the old one.
                    tracing::error!(step = %op.config().name, "cannot switch to the new module: {e:#}");
                    self.generations[i] = generation;
                    self.shared.applied(si, generation, started.elapsed());
                }
            }
        }
        Ok(())
    }
}

/// Logs an upgrade that converted a step's state.
fn log_upgrade(pipeline: &str, step: &str, partition: u32, u: upgrade::Upgraded) {
    if u.from != u.to {
        tracing::info!(
            pipeline,
            step,
            partition,
            "state format {} -> {} ({} entries upgraded)",
            u.from,
            u.to,
            u.entries
        );
    }
}
