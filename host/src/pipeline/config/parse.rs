//! Reading a pipeline file: the TOML's shape, and the checks that turn it
//! into a [`Pipeline`] or an error naming the line and what to fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    ConfigError, DEFAULT_CACHE_MAX_BYTES, DEFAULT_COMMIT_INTERVAL, Emit, FkPart, Guarantee,
    JoinType, KafkaSettings, Pipeline, Step, StepKind, Window, WithKind, is_registry_ref,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    name: Spanned<String>,
    input: Spanned<toml::Value>,
    output: Option<Spanned<String>>,
    dead_letter: Option<Spanned<String>>,
    commit_interval: Option<Spanned<String>>,
    cache_max_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    steps: Vec<Spanned<StepToml>>,
    kafka: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
}

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
    foreign_key: Option<Spanned<String>>,
    lookup: Option<Spanned<String>>,
    history: Option<Spanned<String>>,
    from_table: Option<Spanned<bool>>,
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
    retention: Option<Spanned<String>>,
    before: Option<Spanned<String>>,
    after: Option<Spanned<String>>,
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

pub(super) fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
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
    // `input`: a topic, or a list of topics merged in timestamp order.
    let inputs: Vec<String> = match raw.input.get_ref() {
        toml::Value::String(t) => vec![t.clone()],
        toml::Value::Array(a) if !a.is_empty() && a.iter().all(toml::Value::is_str) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => {
            return cx.err(
                raw.input.span(),
                "`input` is a topic name, or a list of them (`input = [\"clicks-eu\", \"clicks-us\"]`), merged in timestamp order",
            );
        }
    };
    for t in &inputs {
        if !name_ok(t) {
            return cx.err(
                raw.input.span(),
                format!("`input` = {t:?}: use 1 to 200 of the characters A-Z a-z 0-9 . _ -"),
            );
        }
    }
    if let Some(dup) = inputs
        .iter()
        .enumerate()
        .find_map(|(i, t)| inputs[..i].contains(t).then_some(t))
    {
        return cx.err(raw.input.span(), format!("`input` names {dup:?} twice"));
    }
    for (what, v) in [("name", Some(&raw.name))].into_iter().chain([
        ("output", raw.output.as_ref()),
        ("dead_letter", raw.dead_letter.as_ref()),
    ]) {
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
        let mut next = step(&cx, base, resolve, st, &steps)?;
        if next.from_table {
            from_table(&cx, st, &mut next, &mut steps)?;
        }
        if next.foreign_key.is_some() {
            let own = next.name.clone();
            for part in foreign_key_parts(next) {
                if part.name != own
                    && let Some(other) = raw
                        .steps
                        .iter()
                        .find(|o| *o.get_ref().name.get_ref() == part.name)
                {
                    return cx.err(
                        other.get_ref().name.span(),
                        format!(
                            "step {}: the foreign-key join {:?} runs a part of itself under this name: rename one of them",
                            part.name,
                            st.get_ref().name.get_ref()
                        ),
                    );
                }
                steps.push(part);
            }
        } else {
            steps.push(next);
        }
    }
    let kafka = match &raw.kafka {
        None => None,
        Some(section) => Some(kafka(&cx, section)?),
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
        input: inputs.first().cloned().unwrap_or_default(),
        merged: inputs.get(1..).map(<[String]>::to_vec).unwrap_or_default(),
        output: raw.output.map(Spanned::into_inner),
        dead_letter: raw.dead_letter.map(Spanned::into_inner),
        steps,
        file: path.to_path_buf(),
    })
}

/// Reads and checks one `[[steps]]` table (`earlier`: the steps before it).
fn step(
    cx: &Ctx<'_>,
    base: &Path,
    resolve: &dyn Fn(&str) -> Option<Result<PathBuf, String>>,
    st: &Spanned<StepToml>,
    earlier: &[Step],
) -> Result<Step, ConfigError> {
    let s = st.get_ref();
    let name = s.name.get_ref().clone();
    if !name_ok(&name) {
        return cx.err(
            s.name.span(),
            format!("step `name` = {name:?}: use 1 to 200 of the characters A-Z a-z 0-9 . _ -"),
        );
    }
    if earlier.iter().any(|p| p.name == name) {
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
        if let Some(l) = &s.lookup {
            only("lookup", true, l.span(), "join")?;
        }
        if let Some(h) = &s.history {
            only("history", true, h.span(), "join")?;
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
        retention: 0,
        emit: s.emit.as_ref().map(|e| *e.get_ref()).unwrap_or_default(),
        with: s.with.as_ref().map(|w| w.get_ref().clone()),
        with_kind: s
            .with_kind
            .as_ref()
            .map(|w| *w.get_ref())
            .unwrap_or_default(),
        lookup: s.lookup.as_ref().map(|l| l.get_ref().clone()),
        history: match &s.history {
            Some(h) => Some(cx.duration("history", h)?),
            None => None,
        },
        join: s.join.as_ref().map(|j| *j.get_ref()).unwrap_or_default(),
        before: 0,
        after: 0,
        stores: s.stores.iter().map(|x| x.get_ref().clone()).collect(),
        key_preserving: s.key_preserving,
        from_table: s.from_table.as_ref().is_some_and(|f| *f.get_ref()),
        groups_table: false,
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
        memory_mb_line: s
            .memory_mb
            .as_ref()
            .map_or(0, |m| cx.line_of(m.span().start)),
        foreign_key: None,
    };
    if let Some(w) = &s.window {
        window(cx, &mut step, w)?;
    }
    if let Some(fk) = &s.foreign_key {
        foreign_key(cx, st, fk, &mut step)?;
    }
    if kind == StepKind::Join {
        join_sides(cx, st, &step)?;
    }
    Ok(step)
}

/// Reads a step's `window` table into `step`.
fn window(cx: &Ctx<'_>, step: &mut Step, w: &Spanned<WindowToml>) -> Result<(), ConfigError> {
    let (name, kind) = (step.name.clone(), step.kind);
    let span = w.span();
    let w = w.get_ref();
    if let Some(g) = &w.grace {
        step.grace = cx.duration("window.grace", g)?;
    }
    match kind {
        StepKind::Aggregate => {
            let Some(t) = &w.kind else {
                return cx.err(span, format!("step {name}: the window needs a `type`: \"tumbling\", \"hopping\", \"sliding\" or \"session\""));
            };
            let need = |f: &Option<Spanned<String>>, field: &str| -> Result<i64, ConfigError> {
                match f {
                    Some(v) => {
                        let ms = cx.duration(&format!("window.{field}"), v)?;
                        if ms <= 0 {
                            return cx.err(
                                v.span(),
                                format!("step {name}: `window.{field}` must be longer than 0"),
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
                "sliding" => Window::Sliding {
                    size: need(&w.size, "size")?,
                },
                "session" => Window::Session {
                    gap: need(&w.gap, "gap")?,
                },
                other => {
                    return cx.err(t.span(), format!("step {name}: unknown window type {other:?}; valid: \"tumbling\", \"hopping\", \"sliding\", \"session\""));
                }
            });
            retention(cx, step, w.retention.as_ref())?;
        }
        StepKind::Join => {
            if let Some(r) = &w.retention {
                return cx.err(
                    r.span(),
                    format!("step {name}: `window.retention` applies to an aggregate's tumbling, hopping and sliding windows; a join keeps its records for `before + after + grace`"),
                );
            }
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
    Ok(())
}

/// Sets a tumbling, hopping or sliding window's retention:
/// `window.retention`, at least its size plus grace (the default; twice the
/// size plus grace for sliding windows, whose new windows are made from
/// windows up to twice the size before a record), as Kafka Streams requires
/// of a window store's retention.
fn retention(
    cx: &Ctx<'_>,
    step: &mut Step,
    r: Option<&Spanned<String>>,
) -> Result<(), ConfigError> {
    let size = match step.window {
        Some(Window::Tumbling { size } | Window::Hopping { size, .. }) => size,
        Some(Window::Sliding { size }) => size.saturating_mul(2),
        _ => {
            return match r {
                Some(r) => cx.err(
                    r.span(),
                    format!(
                        "step {}: `window.retention` applies to tumbling, hopping and sliding windows; a session stays in the state as docs/pipeline.md says",
                        step.name
                    ),
                ),
                None => Ok(()),
            };
        }
    };
    let least = size.saturating_add(step.grace);
    step.retention = match r {
        None => least,
        Some(r) => {
            let ms = cx.duration("window.retention", r)?;
            if ms < least {
                return cx.err(
                    r.span(),
                    format!(
                        "step {}: `window.retention` ({ms} ms) is shorter than {} plus its grace ({least} ms): a window would leave the state while records can still update it",
                        step.name,
                        if matches!(step.window, Some(Window::Sliding { .. })) {
                            "twice the window's size"
                        } else {
                            "the window's size"
                        }
                    ),
                );
            }
            ms
        }
    };
    Ok(())
}

/// Checks a `from_table` aggregate: unwindowed, the pipeline's second step,
/// after the one map step that groups the table's rows (which it marks).
fn from_table(
    cx: &Ctx<'_>,
    st: &Spanned<StepToml>,
    step: &mut Step,
    before: &mut [Step],
) -> Result<(), ConfigError> {
    let span = st
        .get_ref()
        .from_table
        .as_ref()
        .map_or(st.span(), |f| f.span());
    let name = &step.name;
    if step.kind != StepKind::Aggregate {
        return cx.err(
            span,
            format!(
                "step {name}: `from_table` applies to aggregate steps, not to {}",
                step.kind.with_article()
            ),
        );
    }
    if step.window.is_some() {
        return cx.err(
            span,
            format!("step {name}: a `from_table` aggregate takes no `window` (a table's rows have no time window)"),
        );
    }
    match before {
        [map] if map.kind == StepKind::Map => {
            map.groups_table = true;
            Ok(())
        }
        _ => cx.err(
            span,
            format!("step {name}: a `from_table` aggregate groups the rows of the pipeline's input (a table) through one `map` step before it, its grouping (Kafka Streams' `groupBy` selector): make it the second step, after that map"),
        ),
    }
}

/// Checks a join step's sides: `with`, `join`, `as_table`, `with_kind`.
fn join_sides(cx: &Ctx<'_>, st: &Spanned<StepToml>, step: &Step) -> Result<(), ConfigError> {
    let (s, name) = (st.get_ref(), &step.name);
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
    if step.join == JoinType::Outer && !s.as_table && step.with_kind == WithKind::Table {
        let span = s.join.as_ref().map_or(st.span(), |j| j.span());
        return cx.err(span, format!("step {name}: a stream-table join is \"inner\" or \"left\"; an outer join joins two tables (add `as_table = true`) or two streams (`with_kind = \"stream\"` and a window)"));
    }
    if s.as_table && step.with_kind != WithKind::Table {
        return cx.err(
            st.span(),
            format!(
                "step {name}: `as_table = true` needs `with_kind = \"table\"` (a table-table join)"
            ),
        );
    }
    if step.with_kind == WithKind::Stream && s.window.is_none() {
        return cx.err(st.span(), format!("step {name}: a stream-stream join needs `window = {{ before = \"...\", after = \"...\" }}`"));
    }
    if step.with_kind == WithKind::Global {
        if let Some(w) = &s.window {
            return cx.err(
                w.span(),
                format!("step {name}: a global table join takes no `window`: the table's newest value per key is always there"),
            );
        }
        if step.join == JoinType::Outer {
            let span = s.join.as_ref().map_or(st.span(), |j| j.span());
            return cx.err(
                span,
                format!("step {name}: a global table join is \"inner\" or \"left\", as Kafka Streams' are"),
            );
        }
    }
    if let Some(h) = &s.history {
        if step.with_kind != WithKind::Table || s.as_table || s.foreign_key.is_some() {
            return cx.err(
                h.span(),
                format!("step {name}: `history` applies to stream-table joins (a versioned table, as Kafka Streams' versioned stores): leave out `as_table`, `foreign_key` and `with_kind`"),
            );
        }
        if step.history.is_some_and(|ms| ms <= 0) {
            return cx.err(
                h.span(),
                format!("step {name}: `history` must be longer than 0"),
            );
        }
    }
    if let Some(l) = &s.lookup {
        if step.with_kind != WithKind::Global {
            return cx.err(
                l.span(),
                format!("step {name}: `lookup` applies to global table joins (`with_kind = \"global\"`); a table join looks up the record's key"),
            );
        }
        if !l.get_ref().starts_with('/') {
            return cx.err(
                l.span(),
                format!("step {name}: `lookup` = {:?} is not a JSON pointer into the left value: start it with `/`, as in \"/product_id\"", l.get_ref()),
            );
        }
    }
    Ok(())
}

/// Checks a join's `foreign_key` and makes the step a foreign-key join's
/// middle part (see [`super::ForeignKey`]; `parse_with` adds the other two).
fn foreign_key(
    cx: &Ctx<'_>,
    st: &Spanned<StepToml>,
    fk: &Spanned<String>,
    step: &mut Step,
) -> Result<(), ConfigError> {
    let name = &step.name;
    if step.kind != StepKind::Join {
        return cx.err(
            fk.span(),
            format!(
                "step {name}: `foreign_key` applies to join steps, not to {}",
                step.kind.with_article()
            ),
        );
    }
    let pointer = fk.get_ref();
    if !pointer.starts_with('/') {
        return cx.err(
            fk.span(),
            format!("step {name}: `foreign_key` = {pointer:?} is not a JSON pointer into the left value: start it with `/`, as in \"/user_id\" or \"/order/customer\""),
        );
    }
    if step.with_kind != WithKind::Table {
        return cx.err(
            st.span(),
            format!("step {name}: a foreign-key join joins two tables: leave out `with_kind` (or give \"table\")"),
        );
    }
    if step.join == JoinType::Outer {
        let span = st.get_ref().join.as_ref().map_or(st.span(), |j| j.span());
        return cx.err(
            span,
            format!(
                "step {name}: a foreign-key join is \"inner\" or \"left\", as Kafka Streams' are"
            ),
        );
    }
    step.as_table = true;
    step.foreign_key = Some(super::ForeignKey {
        pointer: pointer.clone(),
        part: FkPart::Join,
    });
    Ok(())
}

/// The three steps a foreign-key join runs as (`join`: its middle part):
/// `NAME.subscribe`, `NAME`, `NAME.resolve`.
fn foreign_key_parts(join: Step) -> [Step; 3] {
    let part = |suffix: &str, part: FkPart| {
        let mut s = join.clone();
        s.name = format!("{}.{suffix}", join.name);
        s.with = None;
        s.outputs = BTreeMap::new();
        if let Some(fk) = &mut s.foreign_key {
            fk.part = part;
        }
        s
    };
    let (subscribe, resolve) = (
        part("subscribe", FkPart::Subscribe),
        part("resolve", FkPart::Resolve),
    );
    [subscribe, join, resolve]
}

/// Reads the `[kafka]` section.
fn kafka(
    cx: &Ctx<'_>,
    section: &Spanned<BTreeMap<String, Spanned<toml::Value>>>,
) -> Result<KafkaSettings, ConfigError> {
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
    Ok(KafkaSettings {
        properties,
        guarantee,
    })
}
