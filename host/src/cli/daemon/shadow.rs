//! Side-by-side reprocessing: a shadow of a pipeline (another application
//! id, suffixed outputs, from the earliest offsets), the keyed diff of its
//! outputs against the pipeline's, and promoting or discarding it.

use super::*;

impl Daemon {
    // ---- shadows -------------------------------------------------------

    /// `POST /pipelines/P/shadow`: a copy of the pipeline with `step` on
    /// `module`, from the earliest offsets, with its own state and output
    /// topics (suffixed `-shadow`; `-shadow2`, ... for later shadows).
    pub fn shadow(&self, name: &str, step: &str, module: &str) -> Reply {
        let dep = self.get(name)?;
        let mut d = lock(&dep);
        if let Some(sh) = &d.spec.shadow {
            return Err(fail(
                409,
                format!(
                    "pipeline {name} already has a shadow (step {} on {}): `weir promote {name}` or `weir discard {name}` first",
                    sh.step, sh.module
                ),
            ));
        }
        if !d.spec.steps.contains_key(step) {
            return Err(fail(
                404,
                format!(
                    "pipeline {name} has no step {step} that runs a registry module (steps: {})",
                    d.spec.steps.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let (r, _) = lock(&self.registry).resolve(module)?;
        let mut spec = d.spec.clone();
        spec.shadows += 1;
        spec.shadow = Some(ShadowSpec {
            step: step.to_string(),
            module: r.clone(),
            suffix: match spec.shadows {
                1 => "-shadow".to_string(),
                n => format!("-shadow{n}"),
            },
        });
        let p = self.build(&spec, true)?;
        // A shadow starts from nothing: state or positions left by an
        // earlier shadow of the same name would not be a fair comparison.
        if self.has_positions(&p)? {
            return Err(fail(
                409,
                format!(
                    "the application id {} already has committed positions (another pipeline of that name ran on this directory); redeploy under another name",
                    p.name
                ),
            ));
        }
        let running = self.run(p)?;
        d.spec = spec;
        d.shadow = Some(running);
        self.save(&d.spec)?;
        Ok(self.status_of(&d))
    }

    fn has_positions(&self, p: &Pipeline) -> anyhow::Result<bool> {
        let backend = self.backend_for(p)?;
        let Some(t) = backend.topic(&p.input)? else {
            return Ok(false);
        };
        for part in 0..t.config.partitions {
            if backend.position(&p.name, &p.input, part)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the shadow has caught up to the same input offsets as the
    /// pipeline, with nothing left in flight in either.
    fn caught_up(&self, main: &Running, shadow: &Running) -> anyhow::Result<Option<String>> {
        for r in [main, shadow] {
            let st = r.handle.status();
            if let Some(s) = st.steps.iter().find(|s| s.lag > 0) {
                return Ok(Some(format!(
                    "{} has {} to go in step {}",
                    r.pipeline.name,
                    crate::cli::count_of(s.lag, "record"),
                    s.name
                )));
            }
        }
        let p = &main.pipeline;
        for name in std::iter::once(&p.input).chain(&p.merged) {
            let input = main.backend.require_topic(name)?;
            for part in 0..input.config.partitions {
                let a = main
                    .backend
                    .position(&main.pipeline.name, &input.name, part)?
                    .unwrap_or(0);
                let b = shadow
                    .backend
                    .position(&shadow.pipeline.name, &input.name, part)?
                    .unwrap_or(0);
                if a != b {
                    return Ok(Some(format!(
                        "partition {part} of {}: the pipeline is at offset {a}, the shadow at {b}",
                        input.name
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Every record of `topic`, keyed for the diff: (key and window, values
    /// in order; only the newest with `latest`, for an aggregate's results,
    /// whose intermediate updates depend on how records fell into batches).
    fn keyed(
        &self,
        backend: &dyn Backend,
        topic: &str,
        latest: bool,
    ) -> anyhow::Result<BTreeMap<String, Vec<Value>>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let Some(t) = backend.topic(topic)? else {
            return Ok(out);
        };
        for part in 0..t.config.partitions {
            for s in read_all(backend, &t, part)? {
                let r = s.record()?;
                let text = |b: &Option<Vec<u8>>| {
                    b.as_ref()
                        .map_or(Value::Null, |b| json!(String::from_utf8_lossy(b)))
                };
                let mut key = match &r.key {
                    Some(k) => String::from_utf8_lossy(k).into_owned(),
                    None => String::new(),
                };
                let h = |n: &str| {
                    r.headers
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                };
                if let (Some(a), Some(b)) = (h("weir.window.start"), h("weir.window.end")) {
                    key = format!("{key} [{a},{b})");
                }
                let values = out.entry(key).or_default();
                if latest {
                    values.clear();
                }
                values.push(text(&r.value));
            }
        }
        Ok(out)
    }

    /// `GET /pipelines/P/diff`: the pipeline's outputs against its shadow's,
    /// keyed, once the shadow caught up (waits up to `wait`).
    pub fn diff(&self, name: &str, wait: Duration, samples: usize) -> Reply {
        let dep = self.get(name)?;
        let d = lock(&dep);
        let (Some(main), Some(shadow)) = (&d.main, &d.shadow) else {
            return Err(fail(
                409,
                format!(
                    "pipeline {name} has no running shadow: `weir shadow {name} STEP NAME@VERSION` starts one"
                ),
            ));
        };
        let started = Instant::now();
        loop {
            match self.caught_up(main, shadow)? {
                None => break,
                Some(why) if started.elapsed() >= wait => {
                    return Err(fail(
                        409,
                        format!(
                            "the shadow of {name} has not caught up with it ({why}); try again"
                        ),
                    ));
                }
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let mut topics = Vec::new();
        let (mut equal, mut changed, mut only_old, mut only_new) = (0u64, 0u64, 0u64, 0u64);
        let mut s_changed = Vec::new();
        let mut s_old = Vec::new();
        let mut s_new = Vec::new();
        // The pipeline's output is an aggregate's results when its last step
        // aggregates: compared by the newest result per key and window.
        let aggregated = main
            .pipeline
            .steps
            .last()
            .is_some_and(|s| s.kind == config::StepKind::Aggregate);
        for (a, b) in output_topics(&main.pipeline)
            .into_iter()
            .zip(output_topics(&shadow.pipeline))
        {
            let latest = aggregated && main.pipeline.output.as_ref() == Some(&a);
            let old = self.keyed(main.backend.as_ref(), &a, latest)?;
            let new = self.keyed(shadow.backend.as_ref(), &b, latest)?;
            let value = |v: &Vec<Value>| {
                if v.len() == 1 {
                    v[0].clone()
                } else {
                    Value::Array(v.clone())
                }
            };
            for (k, ov) in &old {
                match new.get(k) {
                    Some(nv) if nv == ov => equal += 1,
                    Some(nv) => {
                        changed += 1;
                        if s_changed.len() < samples {
                            s_changed.push(
                                json!({"topic": a, "key": k, "old": value(ov), "new": value(nv)}),
                            );
                        }
                    }
                    None => {
                        only_old += 1;
                        if s_old.len() < samples {
                            s_old.push(json!({"topic": a, "key": k, "old": value(ov)}));
                        }
                    }
                }
            }
            for (k, nv) in &new {
                if !old.contains_key(k) {
                    only_new += 1;
                    if s_new.len() < samples {
                        s_new.push(json!({"topic": b, "key": k, "new": value(nv)}));
                    }
                }
            }
            topics.push(json!({"old": a, "new": b}));
        }
        Ok(json!({
            "pipeline": name,
            "shadow": d.spec.shadow.as_ref().map(|s| json!({"step": s.step, "module": s.module})),
            "topics": topics,
            "equal": equal,
            "changed": changed,
            "only_old": only_old,
            "only_new": only_new,
            "samples": {"changed": s_changed, "only_old": s_old, "only_new": s_new},
        }))
    }

    /// `POST /pipelines/P/promote`: the shadow becomes the pipeline. The
    /// original stops; the shadow keeps running under its application id and
    /// writes to its own (suffixed) output topics, which readers now read:
    /// the answer and `weir pipeline status` name them.
    pub fn promote(&self, name: &str) -> Reply {
        let dep = self.get(name)?;
        let mut d = lock(&dep);
        let Some(sh) = d.spec.shadow.clone() else {
            return Err(fail(
                409,
                format!("pipeline {name} has no shadow to promote"),
            ));
        };
        let Some(shadow) = d.shadow.take() else {
            return Err(fail(
                409,
                format!("the shadow of {name} is not running: `weir pipeline start {name}` first"),
            ));
        };
        let old = match self.build(&d.spec, false) {
            Ok(p) => p,
            Err(e) => {
                d.shadow = Some(shadow);
                return Err(e.into());
            }
        };
        let before = output_topics(&old);
        if let Some(r) = d.main.take() {
            let _ = r.finish();
        }
        let after = output_topics(&shadow.pipeline);
        d.spec.suffix = format!("{}{}", d.spec.suffix, sh.suffix);
        d.spec.steps.insert(sh.step.clone(), sh.module.clone());
        d.spec
            .history
            .entry(sh.step.clone())
            .or_default()
            .push(sh.module.clone());
        d.spec.shadow = None;
        d.main = Some(shadow);
        self.save(&d.spec)?;
        // The original's positions, state and internal topics serve
        // nothing now; its output topics stay for readers not yet switched.
        let forgot = self.clean_up(&old, &[]);
        let moved: Vec<Value> = before
            .iter()
            .zip(&after)
            .map(|(a, b)| json!({"from": a, "to": b}))
            .collect();
        Ok(json!({
            "pipeline": name,
            "step": sh.step,
            "module": sh.module,
            "app": d.main.as_ref().map(|r| r.pipeline.name.clone()),
            "outputs": moved,
            "forgot": forgot,
        }))
    }

    /// `POST /pipelines/P/discard`: stops the shadow and deletes what it
    /// made: its positions, state, internal topics, output topics and
    /// dead-letter topic.
    pub fn discard(&self, name: &str) -> Reply {
        let dep = self.get(name)?;
        let mut d = lock(&dep);
        if d.spec.shadow.is_none() {
            return Err(fail(
                409,
                format!("pipeline {name} has no shadow to discard"),
            ));
        }
        let p = self.build(&d.spec, true)?;
        if let Some(r) = d.shadow.take() {
            let _ = r.finish();
        }
        let sh = d.spec.shadow.take();
        self.save(&d.spec)?;
        let mut made = output_topics(&p);
        made.push(pipeline::dead_letter_topic(&p));
        let forgot = self.clean_up(&p, &made);
        Ok(json!({
            "pipeline": name,
            "discarded": sh.map(|s| json!({"step": s.step, "module": s.module})),
            "forgot": forgot,
        }))
    }

    /// After application `p` stopped for good: forgets its positions and
    /// state, deletes its internal topics and those of `topics` that exist.
    /// A failure does not undo what went before it: it is in the answer
    /// (`error`), with what was done.
    fn clean_up(&self, p: &Pipeline, topics: &[String]) -> Value {
        let deleted = self.delete_topics(p, topics);
        let mut v = match self.forget_app(p) {
            Ok(v) => v,
            Err(e) => json!({"reset": p.name, "error": e.message}),
        };
        match deleted {
            Ok(t) => v["deleted"] = json!(t),
            Err(e) => {
                let msg = format!("{e:#}");
                v["error"] = json!(match v["error"].as_str() {
                    Some(first) => format!("{first}; {msg}"),
                    None => msg,
                });
            }
        }
        if let Some(e) = v["error"].as_str() {
            tracing::warn!("cleaning up after application {}: {e}", p.name);
        }
        v
    }

    /// Deletes those of `names` that exist where `p` runs (its Kafka
    /// cluster or the log); returns them.
    fn delete_topics(&self, p: &Pipeline, names: &[String]) -> anyhow::Result<Vec<String>> {
        let mut deleted = Vec::new();
        match crate::cli::run_cmd::kafka_connection(p, None) {
            None => {
                for n in names {
                    if self.log.topic(n)?.is_some() {
                        self.log.delete_topic(n)?;
                        deleted.push(n.clone());
                    }
                }
            }
            Some((conn, _)) => {
                let there: Vec<String> = weir::kafka::admin::list(&conn)?
                    .into_iter()
                    .map(|t| t.name)
                    .collect();
                for n in names.iter().filter(|n| there.contains(n)) {
                    weir::kafka::admin::delete(&conn, n)?;
                    deleted.push(n.clone());
                }
            }
        }
        Ok(deleted)
    }
}

/// Every record of a partition, to its end as of now (Kafka's reads come
/// as fetched, so this reads until the end offset).
fn read_all(
    backend: &dyn Backend,
    t: &weir::backend::Topic,
    part: u32,
) -> anyhow::Result<Vec<weir::backend::Stored>> {
    let end = backend.end_offset(t, part)?;
    let mut next = backend.first_offset(t, part)?.unwrap_or(0);
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    while next < end {
        let (got, n) = backend.read_from(t, part, next, 10_000)?;
        if got.is_empty() && n == next {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "reading {} partition {part} stalled at offset {next} of {end}",
                t.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        next = n;
        out.extend(got);
    }
    Ok(out)
}
