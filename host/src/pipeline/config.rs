//! Pipeline files (TOML), read and validated as a whole before anything
//! starts. Every error names the file, the line, the field and what would be
//! valid.
//!
//! ```toml
//! name = "wordcount"                 # the application id: names offsets, state, internal topics
//! input = "lines"                    # the stream the steps start from
//! output = "counts"                  # where the last step's default output goes
//! dead_letter = "wordcount-dlq"      # rejected and trapping records, with the reason in headers
//! commit_interval = "100ms"          # how often a task commits (default 100ms)
//! cache_max_bytes = 16777216         # a task's state cache (default 16 MiB; 0: none)
//!
//! [[steps]]
//! name = "split"
//! kind = "map"                       # map | aggregate | join | processor
//! module = "split_words.wasm"        # relative to this file
//! config = { min_length = 2 }        # passed to the function's init
//! outputs = { rare = "rare-words" }  # named outputs -> topics
//!
//! [[steps]]
//! name = "count"
//! kind = "aggregate"
//! module = "count.wasm"
//! window = { type = "tumbling", size = "5s", grace = "1s" }   # or hopping (advance) / session (gap)
//! emit = "update"                    # or "close": once, when the window closes
//! ```
//!
//! A join step names the other side: `with = "profiles"`, `with_kind =
//! "table"` (or "stream", which needs `window = { before = "1s", after =
//! "0s" }`), and `join = "inner" | "left" | "outer"`; `as_table = true`
//! makes the incoming records a table too (a table-table join, where a
//! deleted row deletes the join result). A processor lists its
//! state stores: `stores = ["seen"]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// A pipeline file that is wrong, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The 1-based line.
    pub line: usize,
    /// What is wrong, and what would be valid.
    pub message: String,
}

/// The kind of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// A mapper: one record in, zero or more out.
    Map,
    /// An aggregator, with the host keeping accumulators and windows.
    Aggregate,
    /// A joiner, with the host keeping the join state.
    Join,
    /// A processor, with state stores and timers.
    Processor,
}

impl StepKind {
    /// How the pipeline file writes it: `map`, `aggregate`, `join`, `processor`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Map => "map",
            StepKind::Aggregate => "aggregate",
            StepKind::Join => "join",
            StepKind::Processor => "processor",
        }
    }

    /// "a map step", "an aggregate step", ...
    pub fn with_article(self) -> &'static str {
        match self {
            StepKind::Map => "a map step",
            StepKind::Aggregate => "an aggregate step",
            StepKind::Join => "a join step",
            StepKind::Processor => "a processor step",
        }
    }
}

/// When an aggregate emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Emit {
    /// Every update of a window's result.
    #[default]
    Update,
    /// Once per window, when it closes (end + grace passed).
    Close,
}

/// Inner, left or outer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JoinType {
    /// Only pairs that match.
    #[default]
    Inner,
    /// Every left record, with the right side when it matches.
    Left,
    /// Both sides, matched where they match.
    Outer,
}

/// What the other side of a join is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WithKind {
    /// A table: the latest value per key of a (compacted) topic.
    #[default]
    Table,
    /// A stream: records within a time window of each other meet.
    Stream,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    name: Spanned<String>,
    input: Spanned<String>,
    output: Option<Spanned<String>>,
    dead_letter: Option<Spanned<String>>,
    commit_interval: Option<Spanned<String>>,
    cache_max_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    steps: Vec<Spanned<StepToml>>,
    kafka: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
}

/// How often a task commits when nothing else makes it commit sooner.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// The default bound of a task's state cache, in bytes.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 16 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepToml {
    name: Spanned<String>,
    kind: Spanned<StepKind>,
    module: Spanned<String>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    outputs: BTreeMap<String, Spanned<String>>,
    window: Option<Spanned<WindowToml>>,
    emit: Option<Spanned<Emit>>,
    with: Option<Spanned<String>>,
    with_kind: Option<Spanned<WithKind>>,
    join: Option<Spanned<JoinType>>,
    #[serde(default)]
    stores: Vec<Spanned<String>>,
    #[serde(default)]
    key_preserving: bool,
    #[serde(default)]
    as_table: bool,
    memory_mb: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowToml {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    size: Option<Spanned<String>>,
    advance: Option<Spanned<String>>,
    gap: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    before: Option<Spanned<String>>,
    after: Option<Spanned<String>>,
}

/// A window of an aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Fixed, non-overlapping windows of `size` ms.
    Tumbling {
        /// Size in ms.
        size: i64,
    },
    /// Windows of `size` ms starting every `advance` ms.
    Hopping {
        /// Size in ms.
        size: i64,
        /// Advance in ms.
        advance: i64,
    },
    /// Activity sessions: records closer than `gap` ms share a window.
    Session {
        /// Inactivity gap in ms.
        gap: i64,
    },
}

/// A validated step.
#[derive(Clone, Debug)]
pub struct Step {
    /// Its name, unique in the pipeline.
    pub name: String,
    /// Its kind.
    pub kind: StepKind,
    /// The 1-based line of its `kind` in the pipeline file, for messages.
    pub line: usize,
    /// The module's file.
    pub module: PathBuf,
    /// Its settings, as strings.
    pub config: Vec<(String, String)>,
    /// Named outputs to topics.
    pub outputs: BTreeMap<String, String>,
    /// An aggregate's window (`None`: unwindowed).
    pub window: Option<Window>,
    /// How late a record may be and still count, in ms.
    pub grace: i64,
    /// When an aggregate emits.
    pub emit: Emit,
    /// A join's other side (a topic).
    pub with: Option<String>,
    /// Table or stream.
    pub with_kind: WithKind,
    /// Inner, left or outer.
    pub join: JoinType,
    /// A stream-stream join's bounds: right records from `before` ms before
    /// to `after` ms after a left record meet it.
    pub before: i64,
    /// See `before`.
    pub after: i64,
    /// A processor's state stores.
    pub stores: Vec<String>,
    /// The step keeps the record key as it is (no repartition after it).
    pub key_preserving: bool,
    /// A join whose incoming records are a table's updates (a table-table
    /// join): both sides keep their newest value per key, and an update on
    /// either side emits the key's new join result.
    pub as_table: bool,
    /// The most memory the step's instances may have, in MiB (`None`: the
    /// run's `--memory-mb`); it also sets what one call may hand the host.
    pub memory_mb: Option<usize>,
}

/// A validated pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The application id.
    pub name: String,
    /// The input stream.
    pub input: String,
    /// The last step's default output topic.
    pub output: Option<String>,
    /// The dead-letter topic.
    pub dead_letter: Option<String>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The file it came from.
    pub file: PathBuf,
    /// Its `[kafka]` section: run against a Kafka cluster.
    pub kafka: Option<KafkaSettings>,
    /// How often a task commits: it runs batches into one pending commit
    /// until this much time has passed since the first of them (or the
    /// commit grows large, or the task idles or stops).
    pub commit_interval: Duration,
    /// The bound of each task's state cache, in bytes; 0: no cache, a
    /// commit after every batch that changes state, and emit-on-update once
    /// per batch.
    pub cache_max_bytes: u64,
}

/// What a pipeline commits together, on Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Outputs, changelog records and input offsets in one Kafka
    /// transaction (Kafka Streams' exactly_once_v2).
    ExactlyOnce,
    /// Outputs flushed, then offsets committed: a crash may repeat outputs.
    AtLeastOnce,
}

/// A pipeline file's `[kafka]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    /// librdkafka properties, as written (`bootstrap.servers`, `security.protocol`, ...).
    pub properties: Vec<(String, String)>,
    /// `guarantee`: exactly-once (the default) or at-least-once.
    pub guarantee: Guarantee,
}

impl KafkaSettings {
    /// `bootstrap.servers`, if the section gives it.
    pub fn bootstrap(&self) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == "bootstrap.servers")
            .map(|(_, v)| v.as_str())
    }
}

struct Ctx<'a> {
    file: String,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError {
            file: self.file.clone(),
            line: self.line_of(span.start),
            message: message.into(),
        })
    }

    fn duration(&self, field: &str, v: &Spanned<String>) -> Result<i64, ConfigError> {
        match humantime::parse_duration(v.get_ref().trim()) {
            Ok(d) => Ok(d.as_millis() as i64),
            Err(e) => self.err(
                v.span(),
                format!(
                    "`{field}` = {:?} is not a duration ({e}); write e.g. \"500ms\", \"5s\", \"1m\"",
                    v.get_ref()
                ),
            ),
        }
    }
}

/// A module path: relative to the pipeline file, else in one of the
/// directories of `WEIR_MODULE_PATH` (colon-separated).
fn find_module(base: &Path, module: &str) -> Option<PathBuf> {
    let direct = base.join(module);
    if direct.exists() {
        return Some(direct);
    }
    let path = std::env::var_os("WEIR_MODULE_PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(module))
        .find(|p| p.exists())
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Reads and validates a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        message: format!("cannot read it: {e}"),
    })?;
    parse(path, &text)
}

/// Validates pipeline text (`path` names it in errors and anchors module
/// paths).
pub fn parse(path: &Path, text: &str) -> Result<Pipeline, ConfigError> {
    parse_with(path, text, &|_| None)
}

/// Whether a step's `module` names a module of the daemon's registry
/// (`NAME@VERSION` or `NAME@latest`) rather than a file.
pub fn is_registry_ref(module: &str) -> bool {
    match module.split_once('@') {
        Some((name, version)) => {
            name_ok(name)
                && !name.ends_with(".wasm")
                && (version == "latest" || version.parse::<u32>().is_ok())
        }
        None => false,
    }
}

/// [`parse`], with `resolve` giving the file of a step's `module` first:
/// `None` when it is not a reference it knows (then the module is a path),
/// `Err` with what is wrong (the daemon's registry has no such version).
pub fn parse_with(
    path: &Path,
    text: &str,
    resolve: &dyn Fn(&str) -> Option<Result<PathBuf, String>>,
) -> Result<Pipeline, ConfigError> {
    let cx = Ctx {
        file: path.display().to_string(),
        text,
    };
    let raw: FileToml = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| cx.line_of(s.start));
        // Name the field when the line is `field = value`.
        let field = text
            .lines()
            .nth(line.saturating_sub(1))
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim())
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let message = e.message().trim().to_string();
        ConfigError {
            file: cx.file.clone(),
            line,
            message: match field {
                Some(f) if !message.contains(&format!("`{f}`")) => format!("`{f}`: {message}"),
                _ => message,
            },
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for (what, v) in [("name", Some(&raw.name)), ("input", Some(&raw.input))]
        .into_iter()
        .chain([
            ("output", raw.output.as_ref()),
            ("dead_letter", raw.dead_letter.as_ref()),
        ])
    {
        if let Some(v) = v
            && !name_ok(v.get_ref())
        {
            return cx.err(
                v.span(),
                format!(
                    "`{what}` = {:?}: use 1 to 200 of the characters A-Z a-z 0-9 . _ -",
                    v.get_ref()
                ),
            );
        }
    }
    if raw.steps.is_empty() {
        return cx.err(
            raw.name.span(),
            "the pipeline has no steps: add at least one [[steps]] table with name, kind and module",
        );
    }
    let mut steps: Vec<Step> = Vec::new();
    for st in &raw.steps {
        let s = st.get_ref();
        let name = s.name.get_ref().clone();
        if !name_ok(&name) {
            return cx.err(
                s.name.span(),
                format!("step `name` = {name:?}: use 1 to 200 of the characters A-Z a-z 0-9 . _ -"),
            );
        }
        if steps.iter().any(|p| p.name == name) {
            return cx.err(
                s.name.span(),
                format!("two steps are named {name:?}: step names must be unique"),
            );
        }
        let kind = *s.kind.get_ref();
        let resolved = match resolve(s.module.get_ref()) {
            Some(Ok(p)) => Some(p),
            Some(Err(why)) => {
                return cx.err(
                    s.module.span(),
                    format!("step {name}: `module` = {:?}: {why}", s.module.get_ref()),
                );
            }
            None => find_module(base, s.module.get_ref()),
        };
        if resolved.is_none() && is_registry_ref(s.module.get_ref()) {
            return cx.err(
                s.module.span(),
                format!(
                    "step {name}: `module` = {:?} names a module of the daemon's registry: deploy the pipeline to `weir serve` with `weir deploy` (or give the .wasm file's path)",
                    s.module.get_ref()
                ),
            );
        }
        let Some(module) = resolved else {
            return cx.err(
                s.module.span(),
                format!(
                    "step {name}: `module` = {:?}: no such file, relative to the pipeline file ({}) or in WEIR_MODULE_PATH; {}",
                    s.module.get_ref(),
                    base.join(s.module.get_ref()).display(),
                    crate::hints::missing_module(&base.join(s.module.get_ref()))
                ),
            );
        };
        let config = s
            .config
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect();
        let mut outputs = BTreeMap::new();
        for (k, v) in &s.outputs {
            if !name_ok(v.get_ref()) {
                return cx.err(
                    v.span(),
                    format!(
                        "step {name}: output {k} = {:?} is not a valid topic name",
                        v.get_ref()
                    ),
                );
            }
            outputs.insert(k.clone(), v.get_ref().clone());
        }
        let only = |field: &str, present: bool, span: std::ops::Range<usize>, kinds: &str| {
            if present {
                cx.err(
                    span,
                    format!(
                        "step {name}: `{field}` applies to {kinds} steps, not to {}",
                        kind.with_article()
                    ),
                )
            } else {
                Ok(())
            }
        };
        if kind != StepKind::Aggregate
            && let Some(e) = &s.emit
        {
            only("emit", true, e.span(), "aggregate")?;
        }
        if kind != StepKind::Join {
            if let Some(w) = &s.with {
                only("with", true, w.span(), "join")?;
            }
            if let Some(j) = &s.join {
                only("join", true, j.span(), "join")?;
            }
        }
        if kind != StepKind::Processor
            && let Some(st) = s.stores.first()
        {
            only("stores", true, st.span(), "processor")?;
        }
        let mut step = Step {
            name: name.clone(),
            kind,
            line: cx.line_of(s.kind.span().start),
            module,
            config,
            outputs,
            window: None,
            grace: 0,
            emit: s.emit.as_ref().map(|e| *e.get_ref()).unwrap_or_default(),
            with: s.with.as_ref().map(|w| w.get_ref().clone()),
            with_kind: s
                .with_kind
                .as_ref()
                .map(|w| *w.get_ref())
                .unwrap_or_default(),
            join: s.join.as_ref().map(|j| *j.get_ref()).unwrap_or_default(),
            before: 0,
            after: 0,
            stores: s.stores.iter().map(|x| x.get_ref().clone()).collect(),
            key_preserving: s.key_preserving,
            as_table: s.as_table,
            memory_mb: match &s.memory_mb {
                Some(m) if *m.get_ref() == 0 || *m.get_ref() > 65_536 => {
                    return cx.err(
                        m.span(),
                        format!(
                            "step {name}: `memory_mb` = {}: give between 1 and 65536 (MiB)",
                            m.get_ref()
                        ),
                    );
                }
                Some(m) => Some(*m.get_ref() as usize),
                None => None,
            },
        };
        if let Some(w) = &s.window {
            let span = w.span();
            let w = w.get_ref();
            if let Some(g) = &w.grace {
                step.grace = cx.duration("window.grace", g)?;
            }
            match kind {
                StepKind::Aggregate => {
                    let Some(t) = &w.kind else {
                        return cx.err(span, format!("step {name}: the window needs a `type`: \"tumbling\", \"hopping\" or \"session\""));
                    };
                    let need = |f: &Option<Spanned<String>>,
                                field: &str|
                     -> Result<i64, ConfigError> {
                        match f {
                            Some(v) => {
                                let ms = cx.duration(&format!("window.{field}"), v)?;
                                if ms <= 0 {
                                    return cx.err(
                                        v.span(),
                                        format!(
                                            "step {name}: `window.{field}` must be longer than 0"
                                        ),
                                    );
                                }
                                Ok(ms)
                            }
                            None => cx.err(
                                span.clone(),
                                format!("step {name}: a {} window needs `{field}`", t.get_ref()),
                            ),
                        }
                    };
                    step.window = Some(match t.get_ref().as_str() {
                        "tumbling" => Window::Tumbling {
                            size: need(&w.size, "size")?,
                        },
                        "hopping" => {
                            let size = need(&w.size, "size")?;
                            let advance = need(&w.advance, "advance")?;
                            if advance > size {
                                return cx.err(span, format!("step {name}: `window.advance` ({advance} ms) is larger than `window.size` ({size} ms)"));
                            }
                            Window::Hopping { size, advance }
                        }
                        "session" => Window::Session {
                            gap: need(&w.gap, "gap")?,
                        },
                        other => {
                            return cx.err(t.span(), format!("step {name}: unknown window type {other:?}; valid: \"tumbling\", \"hopping\", \"session\""));
                        }
                    });
                }
                StepKind::Join => {
                    if let Some(b) = &w.before {
                        step.before = cx.duration("window.before", b)?;
                    }
                    if let Some(a) = &w.after {
                        step.after = cx.duration("window.after", a)?;
                    }
                }
                _ => {
                    return cx.err(
                        span,
                        format!(
                            "step {name}: `window` applies to aggregate and join steps, not to {}",
                            kind.with_article()
                        ),
                    );
                }
            }
        }
        if kind == StepKind::Join {
            let Some(with) = &s.with else {
                return cx.err(
                    st.span(),
                    format!("step {name}: a join needs `with`, the topic of the other side"),
                );
            };
            if !name_ok(with.get_ref()) {
                return cx.err(
                    with.span(),
                    format!(
                        "step {name}: `with` = {:?} is not a valid topic name",
                        with.get_ref()
                    ),
                );
            }
            if step.join == JoinType::Outer && !s.as_table && step.with_kind != WithKind::Stream {
                let span = s.join.as_ref().map_or(st.span(), |j| j.span());
                return cx.err(span, format!("step {name}: a stream-table join is \"inner\" or \"left\"; an outer join joins two tables (add `as_table = true`) or two streams (`with_kind = \"stream\"` and a window)"));
            }
            if s.as_table && step.with_kind != WithKind::Table {
                return cx.err(st.span(), format!("step {name}: `as_table = true` needs `with_kind = \"table\"` (a table-table join)"));
            }
            if step.with_kind == WithKind::Stream && s.window.is_none() {
                return cx.err(st.span(), format!("step {name}: a stream-stream join needs `window = {{ before = \"...\", after = \"...\" }}`"));
            }
        }
        steps.push(step);
    }
    let _ = Duration::ZERO;
    let kafka = match &raw.kafka {
        None => None,
        Some(section) => {
            let mut properties = Vec::new();
            let mut guarantee = Guarantee::ExactlyOnce;
            for (k, v) in section.get_ref() {
                let text = match v.get_ref() {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_) => {
                        v.get_ref().to_string()
                    }
                    _ => {
                        return cx.err(
                            v.span(),
                            format!("[kafka] `{k}`: give a string, a number or a boolean"),
                        );
                    }
                };
                if k == "guarantee" {
                    guarantee = match text.as_str() {
                        "exactly-once" => Guarantee::ExactlyOnce,
                        "at-least-once" => Guarantee::AtLeastOnce,
                        other => {
                            return cx.err(
                                v.span(),
                                format!(
                                    "[kafka] `guarantee` = {other:?}: use \"exactly-once\" or \"at-least-once\""
                                ),
                            );
                        }
                    };
                } else if k == "application.id" || k == "group.id" || k == "transactional.id" {
                    return cx.err(
                        v.span(),
                        format!(
                            "[kafka] `{k}`: Weir names the consumer group, transactional ids and internal topics after the pipeline's `name`; remove `{k}` and set `name`"
                        ),
                    );
                } else {
                    properties.push((k.clone(), text));
                }
            }
            Some(KafkaSettings {
                properties,
                guarantee,
            })
        }
    };
    let commit_interval = match &raw.commit_interval {
        Some(v) => Duration::from_millis(cx.duration("commit_interval", v)?.max(0) as u64),
        None => DEFAULT_COMMIT_INTERVAL,
    };
    Ok(Pipeline {
        kafka,
        commit_interval,
        cache_max_bytes: raw
            .cache_max_bytes
            .map_or(DEFAULT_CACHE_MAX_BYTES, Spanned::into_inner),
        name: raw.name.into_inner(),
        input: raw.input.into_inner(),
        output: raw.output.map(Spanned::into_inner),
        dead_letter: raw.dead_letter.map(Spanned::into_inner),
        steps,
        file: path.to_path_buf(),
    })
}
