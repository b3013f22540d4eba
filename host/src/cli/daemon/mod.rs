//! `weir serve`: the daemon. It owns a data directory (the embedded log),
//! keeps a registry of uploaded modules, runs every deployed pipeline, swaps
//! a step's module while it runs (rolled back when the new version traps on
//! its first batch), runs shadows of pipelines over the same history and
//! compares their outputs; all through an HTTP API (`http`, documented in
//! docs/api.md) and, like `weir run`, the CLI's socket `DIR/weir.sock`.
//!
//! It drives pipelines only through `Arc<dyn Backend>` and
//! [`weir::pipeline::engine`]'s `start` and `PipelineHandle`.
//!
//! What it keeps in the data directory, under `weir-daemon/`: `modules/`
//! (the registry), `deployments/NAME.json` (each deployment: its pipeline
//! file's text, the module version of each step, whether it runs, its
//! shadow), so that a restart — also after SIGKILL — resumes every
//! deployment at the versions last deployed.

pub mod http;
pub mod logs;
mod observe;
pub mod registry;
mod shadow;
mod status;
mod swap;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use weir::backend::{Backend, StateRead};
use weir::kafka::backend::KafkaBackend;
use weir::log::Log;
use weir::pipeline::config;
use weir::pipeline::{self, Pipeline, PipelineHandle, RunOptions, SwapState, keys};
use weir::runtime::Runtime;

use self::registry::{Registry, RegistryError, write_atomic};

/// A failed request: its HTTP status and message.
#[derive(Debug)]
pub struct Failure {
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, and what to do.
    pub message: String,
    /// More fields of the JSON error.
    pub extra: Option<Value>,
}

/// A request's result: a JSON body, or a failure.
pub type Reply = Result<Value, Failure>;

/// A failure with `status`.
pub fn fail(status: u16, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
        extra: None,
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        let status = match e.downcast_ref::<RegistryError>() {
            Some(RegistryError::NotFound(_)) => 404,
            Some(_) => 400,
            None if e.is::<config::ConfigError>() => 400,
            None => 500,
        };
        fail(status, format!("{e:#}"))
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(m) => fail(404, m),
            other => fail(400, other.to_string()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A deployment as stored in `deployments/NAME.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Deployment {
    /// The pipeline's name (from its file).
    name: String,
    /// The file it was deployed from (names it in errors, anchors module
    /// paths).
    file: PathBuf,
    /// The file's text.
    text: String,
    /// Appended to its application id and output topics: empty, or
    /// `-shadow` (and more) after a promote.
    suffix: String,
    /// The module (NAME@VERSION) of each step that runs a registry module.
    steps: BTreeMap<String, String>,
    /// Per step, the versions it ran, oldest first (the last is the current).
    history: BTreeMap<String, Vec<String>>,
    /// Whether it should run.
    running: bool,
    /// Its shadow, if one runs.
    shadow: Option<ShadowSpec>,
    /// Shadows started so far (each gets its own application id).
    #[serde(default)]
    shadows: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ShadowSpec {
    step: String,
    module: String,
    /// Appended to the deployment's application id and output topics:
    /// `-shadow`, then `-shadow2`, `-shadow3`, ... for later shadows.
    suffix: String,
}

/// A pipeline running in the daemon. A swap holds a second reference to
/// the handle while it waits, without holding the deployment.
struct Running {
    handle: Arc<PipelineHandle>,
    pipeline: Pipeline,
    /// Where it runs: the daemon's log, or Kafka (a `[kafka]` section).
    backend: Arc<dyn Backend>,
}

impl Running {
    /// Stops it and waits for it to end (and for a swap under way to let go
    /// of it).
    fn finish(self) -> anyhow::Result<()> {
        self.handle.stop();
        let mut h = self.handle;
        loop {
            match Arc::try_unwrap(h) {
                Ok(handle) => return handle.wait().map(|_| ()),
                Err(again) => {
                    h = again;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

struct Dep {
    spec: Deployment,
    main: Option<Running>,
    shadow: Option<Running>,
    /// The last error that stopped it.
    error: Option<String>,
    /// A swap whose first batch has not decided yet: (step, from, to).
    pending: Option<(String, String, String)>,
    /// Why the last swap was rolled back.
    last_rollback: Option<String>,
    /// A swap is under way (it waits for its first batch without the lock).
    swapping: bool,
}

/// The daemon's state.
pub struct Daemon {
    dir: PathBuf,
    home: PathBuf,
    log: Arc<Log>,
    backend: Arc<dyn Backend>,
    /// Pipelines on Kafka, by application id.
    kafka: Mutex<HashMap<String, Arc<KafkaBackend>>>,
    runtime: Runtime,
    registry: Mutex<Registry>,
    deps: Mutex<BTreeMap<String, Arc<Mutex<Dep>>>>,
    /// How long a swap waits for its first batch's verdict.
    swap_wait: Duration,
    batch: usize,
}

/// The application id, outputs and dead letters of `p` with `suffix`.
fn apply_suffix(p: &mut Pipeline, suffix: &str) {
    if suffix.is_empty() {
        return;
    }
    p.dead_letter = Some(format!("{}{suffix}", pipeline::dead_letter_topic(p)));
    p.name = format!("{}{suffix}", p.name);
    p.output = p.output.take().map(|o| format!("{o}{suffix}"));
    for s in &mut p.steps {
        for t in s.outputs.values_mut() {
            *t = format!("{t}{suffix}");
        }
    }
}

/// Every output topic of `p`: its output, then named outputs.
fn output_topics(p: &Pipeline) -> Vec<String> {
    let mut v: Vec<String> = p.output.iter().cloned().collect();
    for s in &p.steps {
        for t in s.outputs.values() {
            if !v.contains(t) {
                v.push(t.clone());
            }
        }
    }
    v
}

impl Daemon {
    /// Opens the daemon's state in `dir` (whose log this process opened)
    /// and resumes every deployment that was running.
    pub fn open(
        dir: &Path,
        log: Arc<Log>,
        runtime: Runtime,
        swap_wait: Duration,
        batch: usize,
    ) -> anyhow::Result<Arc<Self>> {
        let home = dir.join("weir-daemon");
        std::fs::create_dir_all(home.join("deployments"))
            .with_context(|| format!("cannot create {}", home.display()))?;
        let registry = Registry::open(&home.join("modules"))?;
        let backend: Arc<dyn Backend> = log.clone();
        let d = Arc::new(Daemon {
            dir: dir.to_path_buf(),
            home,
            log,
            backend,
            kafka: Mutex::new(HashMap::new()),
            runtime,
            registry: Mutex::new(registry),
            deps: Mutex::new(BTreeMap::new()),
            swap_wait,
            batch,
        });
        d.resume()?;
        Ok(d)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn resume(&self) -> anyhow::Result<()> {
        let dir = self.home.join("deployments");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for f in files {
            let spec: Deployment = serde_json::from_slice(
                &std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?,
            )
            .with_context(|| format!("the deployment {} is corrupt", f.display()))?;
            let mut dep = Dep {
                spec,
                main: None,
                shadow: None,
                error: None,
                pending: None,
                last_rollback: None,
                swapping: false,
            };
            if dep.spec.running
                && let Err(e) = self.start_dep(&mut dep)
            {
                tracing::error!("cannot resume pipeline {}: {e:#}", dep.spec.name);
                dep.error = Some(format!("{e:#}"));
            }
            lock(&self.deps).insert(dep.spec.name.clone(), Arc::new(Mutex::new(dep)));
        }
        Ok(())
    }

    /// Stops every pipeline (each commits its batch).
    pub fn shutdown(&self) {
        let deps: Vec<_> = lock(&self.deps).values().cloned().collect();
        for d in &deps {
            let mut d = lock(d);
            for r in [d.main.take(), d.shadow.take()].into_iter().flatten() {
                let app = r.pipeline.name.clone();
                if let Err(e) = r.finish() {
                    tracing::error!("pipeline {app}: {e:#}");
                }
            }
        }
    }

    fn save(&self, spec: &Deployment) -> Result<(), Failure> {
        let path = self
            .home
            .join("deployments")
            .join(format!("{}.json", spec.name));
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(spec).map_err(anyhow::Error::from)?,
        )?;
        Ok(())
    }

    /// The pipeline a deployment runs (or its shadow), its modules resolved.
    fn build(&self, spec: &Deployment, shadow: bool) -> anyhow::Result<Pipeline> {
        let reg = lock(&self.registry);
        let resolve = |m: &str| {
            if !config::is_registry_ref(m) {
                return None;
            }
            // What each step runs is in `spec.steps` (set below): the
            // version the file named may be gone since.
            Some(Ok(reg.resolve(m).map_or_else(
                |_| PathBuf::from(m),
                |(_, v)| reg.blob(&v.sha256),
            )))
        };
        let mut p = config::parse_with(&spec.file, &spec.text, &resolve)?;
        for s in &mut p.steps {
            let r = match &spec.shadow {
                Some(sh) if shadow && sh.step == s.name => Some(&sh.module),
                _ => spec.steps.get(&s.name),
            };
            if let Some(r) = r {
                let (_, v) = reg.resolve(r)?;
                s.module = reg.blob(&v.sha256);
            }
        }
        let suffix = if shadow {
            let own = spec
                .shadow
                .as_ref()
                .map_or("-shadow", |s| s.suffix.as_str());
            format!("{}{own}", spec.suffix)
        } else {
            spec.suffix.clone()
        };
        apply_suffix(&mut p, &suffix);
        Ok(p)
    }

    /// Where `p` runs: on Kafka when its file has a `[kafka]` section (its
    /// state copy under the data directory), else on the daemon's log.
    fn backend_for(&self, p: &Pipeline) -> anyhow::Result<Arc<dyn Backend>> {
        let Some((conn, guarantee)) = super::run_cmd::kafka_connection(p, None) else {
            return Ok(self.backend.clone());
        };
        let mut kafka = lock(&self.kafka);
        if let Some(k) = kafka.get(&p.name) {
            return Ok(k.clone());
        }
        let k = KafkaBackend::open(conn, &p.name, guarantee, &self.dir)?;
        kafka.insert(p.name.clone(), k.clone());
        Ok(k)
    }

    /// Where application `app` keeps its state: its Kafka state copy, or
    /// the daemon's log.
    fn state_of(&self, app: &str) -> Arc<Log> {
        lock(&self.kafka)
            .get(app)
            .map_or_else(|| self.log.clone(), |k| k.local().clone())
    }

    fn run(&self, p: Pipeline) -> anyhow::Result<Running> {
        let backend = self.backend_for(&p)?;
        let options = RunOptions {
            batch: if backend.retry_window().is_zero() {
                self.batch
            } else {
                self.batch.max(5000)
            },
            ..RunOptions::default()
        };
        let handle = pipeline::engine::start(
            backend.clone(),
            &p,
            &self.runtime,
            &options,
            Arc::new(AtomicBool::new(false)),
        )?;
        Ok(Running {
            handle: Arc::new(handle),
            pipeline: p,
            backend,
        })
    }

    fn start_dep(&self, dep: &mut Dep) -> anyhow::Result<()> {
        if dep.main.is_none() {
            let p = self.build(&dep.spec, false)?;
            dep.main = Some(self.run(p)?);
        }
        if dep.spec.shadow.is_some() && dep.shadow.is_none() {
            let p = self.build(&dep.spec, true)?;
            dep.shadow = Some(self.run(p)?);
        }
        dep.error = None;
        Ok(())
    }

    fn get(&self, name: &str) -> Result<Arc<Mutex<Dep>>, Failure> {
        lock(&self.deps).get(name).cloned().ok_or_else(|| {
            fail(
                404,
                format!("no pipeline named {name} is deployed (`weir pipeline list` shows them)"),
            )
        })
    }

    // ---- modules -------------------------------------------------------

    /// `POST /modules?name=NAME`.
    pub fn push(&self, name: &str, bytes: &[u8]) -> Reply {
        let pushed = lock(&self.registry).push(&self.runtime, name, bytes)?;
        let v = &pushed.version;
        Ok(json!({
            "module": format!("{name}@{}", v.version),
            "name": name,
            "version": v.version,
            "sha256": v.sha256,
            "world": v.world,
            "size": v.size,
            "precompile_ms": pushed.precompile_ms,
        }))
    }

    /// Module references in use: (NAME@VERSION, where).
    fn in_use(&self) -> Vec<(String, String)> {
        let deps: Vec<_> = lock(&self.deps).values().cloned().collect();
        let mut used = Vec::new();
        for d in deps {
            let d = lock(&d);
            for (step, r) in &d.spec.steps {
                used.push((
                    r.clone(),
                    format!("step {step} of pipeline {}", d.spec.name),
                ));
            }
            if let Some(sh) = &d.spec.shadow {
                used.push((
                    sh.module.clone(),
                    format!("step {} of the shadow of pipeline {}", sh.step, d.spec.name),
                ));
            }
        }
        used
    }

    /// `GET /modules` and `GET /modules/NAME`.
    pub fn modules(&self, name: Option<&str>) -> Reply {
        let used = self.in_use();
        let reg = lock(&self.registry);
        let list = match name {
            Some(n) => vec![(n.to_string(), reg.versions(n)?)],
            None => reg.list(),
        };
        let mut out = Vec::new();
        for (n, versions) in list {
            for v in versions {
                let r = format!("{n}@{}", v.version);
                let users: Vec<&String> = used
                    .iter()
                    .filter(|(u, _)| *u == r)
                    .map(|(_, w)| w)
                    .collect();
                out.push(json!({
                    "module": r, "name": n, "version": v.version, "sha256": v.sha256,
                    "world": v.world, "size": v.size, "uploaded_ms": v.uploaded_ms,
                    "used_by": users,
                }));
            }
        }
        Ok(Value::Array(out))
    }

    /// `DELETE /modules/NAME/VERSION`.
    pub fn delete_module(&self, name: &str, version: &str) -> Reply {
        let n: u32 = version.parse().map_err(|_| {
            fail(
                400,
                format!("{version:?} is not a version number (delete NAME@VERSION)"),
            )
        })?;
        let r = format!("{name}@{n}");
        if let Some((_, w)) = self.in_use().into_iter().find(|(u, _)| *u == r) {
            return Err(fail(
                409,
                format!(
                    "{r} is in use by {w}: swap the step to another version (or delete the pipeline) first"
                ),
            ));
        }
        let gone = lock(&self.registry).delete(name, n)?;
        Ok(json!({ "deleted": r, "sha256": gone.sha256 }))
    }

    // ---- pipelines -----------------------------------------------------

    /// `POST /pipelines`: deploys (or redeploys) a pipeline file.
    pub fn deploy(&self, file: &Path, text: &str) -> Reply {
        // Which registry version each step names, in step order.
        let refs: Mutex<Vec<Option<String>>> = Mutex::new(Vec::new());
        let parsed = {
            let reg = lock(&self.registry);
            let resolve = |m: &str| {
                if !config::is_registry_ref(m) {
                    lock(&refs).push(None);
                    return None;
                }
                Some(match reg.resolve(m) {
                    Ok((r, v)) => {
                        lock(&refs).push(Some(r));
                        Ok(reg.blob(&v.sha256))
                    }
                    Err(e) => Err(e.to_string()),
                })
            };
            config::parse_with(file, text, &resolve).map_err(|e| fail(400, e.to_string()))?
        };
        let refs = lock(&refs).clone();
        let mut steps = BTreeMap::new();
        for (s, r) in parsed.steps.iter().zip(refs) {
            if let Some(r) = r {
                steps.insert(s.name.clone(), r);
            }
        }
        let name = parsed.name.clone();
        let existing = lock(&self.deps).get(&name).cloned();
        let spec = {
            let old = existing.as_ref().map(|d| lock(d).spec.clone());
            let mut history = old.as_ref().map(|o| o.history.clone()).unwrap_or_default();
            for (step, r) in &steps {
                let h = history.entry(step.clone()).or_default();
                if h.last() != Some(r) {
                    h.push(r.clone());
                }
            }
            Deployment {
                name: name.clone(),
                file: file.to_path_buf(),
                text: text.to_string(),
                suffix: old.as_ref().map(|o| o.suffix.clone()).unwrap_or_default(),
                steps,
                history,
                running: true,
                shadow: None,
                shadows: old.as_ref().map_or(0, |o| o.shadows),
            }
        };
        // Check that it starts before replacing what runs.
        let p = self.build(&spec, false)?;
        let existed = existing.is_some();
        let dep = existing.unwrap_or_else(|| {
            Arc::new(Mutex::new(Dep {
                spec: spec.clone(),
                main: None,
                shadow: None,
                error: None,
                pending: None,
                last_rollback: None,
                swapping: false,
            }))
        });
        {
            let mut d = lock(&dep);
            for r in [d.main.take(), d.shadow.take()].into_iter().flatten() {
                let _ = r.finish();
            }
            let running = match self.run(p) {
                Ok(r) => r,
                Err(e) => {
                    // What ran before runs on.
                    if existed
                        && d.spec.running
                        && let Err(again) = self.start_dep(&mut d)
                    {
                        d.error = Some(format!("{again:#}"));
                    }
                    return Err(fail(409, format!("cannot start pipeline {name}: {e:#}")));
                }
            };
            d.main = Some(running);
            d.spec = spec;
            d.error = None;
            d.pending = None;
            self.save(&d.spec)?;
        }
        lock(&self.deps).insert(name.clone(), dep.clone());
        let d = lock(&dep);
        Ok(self.status_of(&d))
    }

    /// `POST /pipelines/P/stop`.
    pub fn stop(&self, name: &str) -> Reply {
        let dep = self.get(name)?;
        let mut d = lock(&dep);
        for r in [d.main.take(), d.shadow.take()].into_iter().flatten() {
            if let Err(e) = r.finish() {
                d.error = Some(format!("{e:#}"));
            }
        }
        d.spec.running = false;
        self.save(&d.spec)?;
        Ok(self.status_of(&d))
    }

    /// `POST /pipelines/P/reset`: a stopped pipeline forgets its input
    /// positions and state and loses its internal topics, so that it
    /// reprocesses its inputs from the start when started again.
    pub fn reset(&self, name: &str) -> Reply {
        let dep = self.get(name)?;
        let mut d = lock(&dep);
        // A run that ended on an error is over: it is reset as a stopped one.
        if d.main.as_ref().is_some_and(|r| r.handle.is_finished())
            && d.shadow.is_none()
            && let Some(r) = d.main.take()
        {
            // Its error stays shown until the reset has gone through.
            if let Err(e) = r.finish() {
                d.error = Some(lock(&self.registry).name_blobs(&format!("{e:#}")));
            }
            d.spec.running = false;
            self.save(&d.spec)?;
        }
        if d.main.is_some() || d.shadow.is_some() {
            return Err(fail(
                409,
                format!("pipeline {name} runs: stop it first (`weir pipeline stop {name}`)"),
            ));
        }
        let p = self.build(&d.spec, false)?;
        let reply = self.forget_app(&p)?;
        // What the run before failed with is behind it now.
        d.error = None;
        Ok(reply)
    }

    /// As `weir reset` of application `p`, which no longer runs: `{"reset",
    /// "entries" (embedded log) or "group" (Kafka), "topics"}`.
    fn forget_app(&self, p: &Pipeline) -> Reply {
        Ok(match super::run_cmd::kafka_connection(p, None) {
            None => {
                let (entries, topics) = super::state_cmds::reset_embedded(&self.log, &p.name)?;
                json!({"reset": p.name, "entries": entries, "topics": topics})
            }
            Some((conn, _)) => {
                // Its local state is closed before it goes.
                lock(&self.kafka).remove(&p.name);
                let done = weir::kafka::admin::reset_app(&conn, &p.name)
                    .map_err(|e| fail(409, e.to_string()))?;
                let local = self.dir.join("kafka").join(&p.name);
                if local.exists() {
                    std::fs::remove_dir_all(&local).with_context(|| {
                        format!("cannot delete the local state {}", local.display())
                    })?;
                }
                json!({"reset": p.name, "group": done.group, "topics": done.topics})
            }
        })
    }

    /// `POST /pipelines/P/start`.
    pub fn start(&self, name: &str) -> Reply {
        let dep = self.get(name)?;
        let mut d = lock(&dep);
        // A run that ended on an error is started again.
        if d.main.as_ref().is_some_and(|r| r.handle.is_finished())
            && let Some(r) = d.main.take()
            && let Err(e) = r.finish()
        {
            tracing::warn!("pipeline {name} had stopped: {e:#}");
        }
        self.start_dep(&mut d)?;
        d.spec.running = true;
        self.save(&d.spec)?;
        Ok(self.status_of(&d))
    }

    /// `DELETE /pipelines/P`: stops it and forgets it (its topics and state
    /// stay in the log).
    pub fn delete(&self, name: &str) -> Reply {
        let dep = self.get(name)?;
        let mut d = lock(&dep);
        for r in [d.main.take(), d.shadow.take()].into_iter().flatten() {
            let _ = r.finish();
        }
        let path = self.home.join("deployments").join(format!("{name}.json"));
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        lock(&self.deps).remove(name);
        Ok(json!({ "deleted": name }))
    }
}
