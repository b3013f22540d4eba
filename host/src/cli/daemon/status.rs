//! What the daemon tells about its pipelines: the list, each one's status
//! (steps, counters, swaps, shadow, state sizes), and a swap that was
//! rolled back while nobody waited, reconciled into the deployment.

use super::*;

impl Daemon {
    /// Calls `f` (a reset of `app`'s state) unless a pipeline (or a shadow)
    /// named `app` runs here: `None` when one does. Every deployment stays
    /// locked meanwhile, so that none starts while its state goes.
    pub fn unless_runs<T>(&self, app: &str, f: impl FnOnce() -> T) -> Option<T> {
        // In name order (the map's), should anything else ever take several.
        let deps: Vec<_> = lock(&self.deps).values().cloned().collect();
        let held: Vec<_> = deps.iter().map(|d| lock(d)).collect();
        let runs = held.iter().any(|d| {
            [&d.main, &d.shadow]
                .into_iter()
                .flatten()
                .any(|r| r.pipeline.name == app && !r.handle.is_finished())
        });
        (!runs).then(f)
    }

    /// `GET /pipelines`.
    pub fn list(&self) -> Reply {
        let deps: Vec<_> = lock(&self.deps).values().cloned().collect();
        let mut out = Vec::new();
        for d in deps {
            let mut d = lock(&d);
            self.reconcile(&mut d);
            out.push(json!({
                "name": d.spec.name,
                "state": state_of(&d),
                "steps": d.spec.steps,
                "shadow": d.spec.shadow.as_ref().map(|s| json!({"step": s.step, "module": s.module})),
            }));
        }
        Ok(Value::Array(out))
    }

    /// `GET /pipelines/P`.
    pub fn status(&self, name: &str) -> Reply {
        let dep = self.get(name)?;
        let mut d = lock(&dep);
        self.reconcile(&mut d);
        Ok(self.status_of(&d))
    }

    /// A swap rolled back after its wait: the deployment goes back too.
    pub(super) fn reconcile(&self, d: &mut Dep) {
        let Some((step, from, to)) = d.pending.clone() else {
            return;
        };
        let Some(state) = d.main.as_ref().and_then(|r| r.handle.swap_state(&step)) else {
            return;
        };
        match state {
            SwapState::RolledBack(reason) => {
                let reason = lock(&self.registry).name_blobs(&reason);
                d.spec.steps.insert(step.clone(), from);
                if let Some(h) = d.spec.history.get_mut(&step)
                    && h.last() == Some(&to)
                {
                    h.pop();
                }
                d.last_rollback = Some(format!(
                    "the swap of step {step} to {to} was rolled back: {reason}"
                ));
                d.pending = None;
                if let Err(e) = self.save(&d.spec) {
                    tracing::error!("{}", e.message);
                }
            }
            SwapState::Confirmed | SwapState::None => d.pending = None,
            SwapState::Pending => {}
        }
    }

    pub(super) fn run_status(&self, r: &Running, spec: &Deployment, shadow: bool) -> Value {
        let st = r.handle.status();
        let reg = lock(&self.registry);
        let steps: Vec<Value> = st
            .steps
            .iter()
            .map(|s| {
                let module = match &spec.shadow {
                    Some(sh) if shadow && sh.step == s.name => Some(sh.module.clone()),
                    _ => spec.steps.get(&s.name).cloned(),
                }
                .filter(|m| {
                    reg.resolve(m)
                        .is_ok_and(|(_, v)| v.sha256 == s.module_sha256)
                })
                .or_else(|| reg.name_of(&s.module_sha256))
                .unwrap_or_else(|| s.module.clone());
                let (entries, bytes) = self.state_size(&r.pipeline.name, &s.name);
                json!({
                    "name": s.name,
                    "module": module,
                    "sha256": s.module_sha256,
                    "records_in": s.records_in,
                    "records_out": s.records_out,
                    "dead_letters": s.dead_letters,
                    "first_dead_letter": s.first_dead_letter,
                    "lag": s.lag,
                    "state_entries": entries,
                    "state_bytes": bytes,
                    "swaps": s.swaps,
                    "last_swap": swap_text(&s.last_swap),
                    "last_swap_pause_us": s.last_swap_pause_us,
                    "busy_us": s.busy_us,
                    "guest_us": s.guest_us,
                })
            })
            .collect();
        json!({
            "app": r.pipeline.name,
            "input": r.pipeline.input,
            "outputs": output_topics(&r.pipeline),
            "dead_letters": pipeline::dead_letter_topic(&r.pipeline),
            "finished": st.finished,
            "records_in": st.records_in,
            "backend": r.backend.describe(),
            "partitions": st.partitions,
            "steps": steps,
        })
    }

    pub(super) fn status_of(&self, d: &Dep) -> Value {
        let mut v = match &d.main {
            Some(r) => self.run_status(r, &d.spec, false),
            None => {
                json!({ "steps": d.spec.steps.iter().map(|(s, m)| json!({"name": s, "module": m})).collect::<Vec<_>>() })
            }
        };
        v["name"] = json!(d.spec.name);
        v["state"] = json!(state_of(d));
        // A run that failed says why while it is shown as failed.
        let failure = d
            .main
            .as_ref()
            .filter(|r| r.handle.is_finished())
            .and_then(|r| r.handle.failure())
            .map(|e| lock(&self.registry).name_blobs(&e));
        v["error"] = json!(d.error.clone().or(failure));
        v["last_rollback"] = json!(d.last_rollback);
        v["shadow"] = match (&d.spec.shadow, &d.shadow) {
            (Some(sh), Some(r)) => {
                let mut s = self.run_status(r, &d.spec, true);
                s["step"] = json!(sh.step);
                s["module"] = json!(sh.module);
                s
            }
            _ => Value::Null,
        };
        v
    }

    /// Entries and bytes of a step's state (aggregates, joins, stores).
    pub(super) fn state_size(&self, app: &str, step: &str) -> (u64, u64) {
        let (mut n, mut bytes) = (0u64, 0u64);
        for kind in [b'a', b'j', b's'] {
            let mut start = keys::pipeline(app);
            start.push(kind);
            start.extend_from_slice(step.as_bytes());
            start.push(0);
            let mut end = start.clone();
            if let Some(last) = end.last_mut() {
                *last = 1;
            }
            if let Ok(entries) = self.state_of(app).range(&start, &end, 1_000_000) {
                for (k, v) in entries {
                    n += 1;
                    bytes += (k.len() + v.len()) as u64;
                }
            }
        }
        (n, bytes)
    }
}

pub(super) fn swap_text(s: &SwapState) -> String {
    match s {
        SwapState::None => "none".into(),
        SwapState::Pending => "pending".into(),
        SwapState::Confirmed => "confirmed".into(),
        SwapState::RolledBack(r) => format!("rolled back: {r}"),
    }
}

pub(super) fn state_of(d: &Dep) -> String {
    match &d.main {
        Some(r) if r.handle.is_finished() => "failed".into(),
        Some(_) => "running".into(),
        None if d.error.is_some() => "failed".into(),
        None => "stopped".into(),
    }
}
