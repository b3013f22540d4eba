//! Observability and queries: guest log lines, state queries over HTTP and
//! the Prometheus metrics.

use super::*;

impl Daemon {
    /// `GET /pipelines/P/logs`: guest log lines of its steps.
    pub fn logs(&self, name: &str, step: Option<&str>, max: usize) -> Reply {
        let dep = self.get(name)?;
        let d = lock(&dep);
        let mut modules: HashMap<String, String> = HashMap::new();
        for r in [&d.main, &d.shadow].into_iter().flatten() {
            for s in &r.pipeline.steps {
                modules.insert(s.module.display().to_string(), s.name.clone());
            }
        }
        let reg = lock(&self.registry);
        let lines: Vec<Value> = logs::lines(
            |l| {
                modules.get(&l.module).is_some_and(|s| *s == l.step)
                    && step.is_none_or(|s| s == l.step)
            },
            max,
        )
        .into_iter()
        .map(|l| {
            let sha = Path::new(&l.module)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            json!({
                "time_ms": l.time_ms,
                "level": l.level,
                "step": l.step,
                "module": reg.name_of(&sha).unwrap_or(l.module.clone()),
                "message": l.message,
            })
        })
        .collect();
        Ok(Value::Array(lines))
    }

    /// `GET /pipelines/P/steps/S/state`: one key, or a scan.
    #[allow(clippy::too_many_arguments)]
    pub fn state(
        &self,
        name: &str,
        step: &str,
        key: Option<String>,
        from: Option<i64>,
        to: Option<i64>,
        max: usize,
    ) -> Reply {
        let app = {
            let dep = self.get(name)?;
            let d = lock(&dep);
            d.main.as_ref().map_or_else(
                || format!("{name}{}", d.spec.suffix),
                |r| r.pipeline.name.clone(),
            )
        };
        let state = self.state_of(&app);
        // On Kafka, the partitions this instance runs now (as its run
        // publishes them beside its local state).
        let instance = crate::cli::state_cmds::instance_of(&state);
        let mut out = Collect::default();
        let wanted = key.clone();
        let code = crate::cli::state_cmds::state_log(
            &state,
            &app,
            step,
            key,
            from,
            to,
            max,
            instance.as_ref(),
            &mut out,
        )?;
        if code != 0 || (wanted.is_some() && out.lines.is_empty()) {
            return Err(fail(404, out.errors.join("; ")));
        }
        let entries: Vec<Value> = out
            .lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Ok(Value::Array(entries))
    }

    /// `GET /metrics`: Prometheus text.
    pub fn metrics(&self) -> String {
        let deps: Vec<_> = lock(&self.deps).values().cloned().collect();
        let mut rows: Vec<(String, String, &str, f64)> = Vec::new();
        let mut up = Vec::new();
        for d in deps {
            let d = lock(&d);
            let running = d.main.as_ref().is_some_and(|r| !r.handle.is_finished());
            up.push((d.spec.name.clone(), running));
            for r in [&d.main, &d.shadow].into_iter().flatten() {
                for s in r.handle.status().steps {
                    let app = r.pipeline.name.clone();
                    for (metric, v) in [
                        ("weir_step_records_in_total", s.records_in as f64),
                        ("weir_step_records_out_total", s.records_out as f64),
                        ("weir_step_dead_letters_total", s.dead_letters as f64),
                        ("weir_step_lag_records", s.lag as f64),
                        ("weir_step_swaps_total", s.swaps as f64),
                        (
                            "weir_step_last_swap_pause_seconds",
                            s.last_swap_pause_us as f64 / 1e6,
                        ),
                        ("weir_step_run_seconds_total", s.busy_us as f64 / 1e6),
                        ("weir_step_guest_seconds_total", s.guest_us as f64 / 1e6),
                    ] {
                        rows.push((app.clone(), s.name.clone(), metric, v));
                    }
                }
            }
        }
        let help = [
            (
                "weir_step_records_in_total",
                "counter",
                "Records that entered the step.",
            ),
            (
                "weir_step_records_out_total",
                "counter",
                "Records the step emitted.",
            ),
            (
                "weir_step_dead_letters_total",
                "counter",
                "Records the step sent to the dead letters.",
            ),
            (
                "weir_step_lag_records",
                "gauge",
                "Records of the step's source not yet read.",
            ),
            (
                "weir_step_swaps_total",
                "counter",
                "Module switches of the step (swaps and rollbacks).",
            ),
            (
                "weir_step_last_swap_pause_seconds",
                "gauge",
                "The longest time a task spent switching module in the last swap.",
            ),
            (
                "weir_step_run_seconds_total",
                "counter",
                "Time spent running the step: its guest calls and the host's work for it.",
            ),
            (
                "weir_step_guest_seconds_total",
                "counter",
                "Time spent inside the step's guest calls (the guest's code and the host functions it called).",
            ),
        ];
        let mut text = String::new();
        text.push_str("# HELP weir_pipeline_up Whether the deployed pipeline runs.\n# TYPE weir_pipeline_up gauge\n");
        for (p, running) in up {
            text.push_str(&format!(
                "weir_pipeline_up{{pipeline=\"{}\"}} {}\n",
                escape(&p),
                u8::from(running)
            ));
        }
        for (metric, kind, what) in help {
            text.push_str(&format!("# HELP {metric} {what}\n# TYPE {metric} {kind}\n"));
            for (app, step, m, v) in &rows {
                if *m == metric {
                    text.push_str(&format!(
                        "{metric}{{pipeline=\"{}\",step=\"{}\"}} {v}\n",
                        escape(app),
                        escape(step)
                    ));
                }
            }
        }
        text
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Collects what `state_log` prints.
#[derive(Default)]
struct Collect {
    lines: Vec<String>,
    errors: Vec<String>,
}

impl crate::cli::log_cmds::Out for Collect {
    fn out(&mut self, line: &str) -> std::io::Result<()> {
        self.lines.push(line.to_string());
        Ok(())
    }

    fn err(&mut self, line: &str) -> std::io::Result<()> {
        self.errors.push(line.to_string());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
