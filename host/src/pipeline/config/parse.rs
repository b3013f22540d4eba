//! Reading a pipeline file: the TOML's shape, and the checks that turn it
//! into a [`Pipeline`] or an error naming the line and what to fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod checks;

use self::checks::{foreign_key, foreign_key_parts, from_table, hold_limit, join_sides, window};
use super::{
    ConfigError, DEFAULT_CACHE_MAX_BYTES, DEFAULT_COMMIT_INTERVAL, Emit, FkPart, Guarantee,
    HoldLimit, JoinType, KafkaSettings, Pipeline, Step, StepKind, WhenFull, Window, WithKind,
    is_registry_ref,
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
    emit_after: Option<Spanned<String>>,
    emit_after_max_records: Option<Spanned<u64>>,
    emit_after_max_bytes: Option<Spanned<u64>>,
    emit_after_when_full: Option<Spanned<WhenFull>>,
    with: Option<Spanned<String>>,
    with_kind: Option<Spanned<WithKind>>,
    join: Option<Spanned<JoinType>>,
    #[serde(default)]
    stores: Vec<Spanned<String>>,
    #[serde(default)]
    key_preserving: bool,
    as_table: Option<Spanned<bool>>,
    memory_mb: Option<Spanned<u64>>,
    foreign_key: Option<Spanned<String>>,
    lookup: Option<Spanned<String>>,
    history: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    from_table: Option<Spanned<bool>>,
}

/// Marks the first of the maps with `as_table` in front of each inner
/// table-table join: that map sees the table itself, so it alone can tell
/// a deletion of a row the table never held (see [`Step::tracks_rows`]).
fn mark_row_tracking(steps: &mut [Step]) {
    for i in 0..steps.len() {
        let j = &steps[i];
        if !(j.after_table_map && j.join == JoinType::Inner && j.history.is_none()) {
            continue;
        }
        let mut first = i;
        while first > 0 && steps[first - 1].kind == StepKind::Map && steps[first - 1].as_table {
            first -= 1;
        }
        if let Some(map) = steps.get_mut(first)
            && first < i
        {
            map.tracks_rows = true;
        }
    }
}

impl StepToml {
    /// Whether the step reads its input as a table (`as_table = true`).
    fn as_table(&self) -> bool {
        self.as_table.as_ref().is_some_and(|t| *t.get_ref())
    }
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
        next.after_table_map = next.kind == StepKind::Join
            && next.as_table
            && steps
                .last()
                .is_some_and(|p| p.kind == StepKind::Map && p.as_table);
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
    mark_row_tracking(&mut steps);
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
    if let Some(e) = &s.emit_after {
        if kind != StepKind::Aggregate {
            only("emit_after", true, e.span(), "aggregate")?;
        }
        if s.emit.as_ref().is_some_and(|m| *m.get_ref() == Emit::Close) {
            return cx.err(
                e.span(),
                format!("step {name}: `emit_after` holds results emitted on update; `emit = \"close\"` already emits each window once, when it closes"),
            );
        }
    }
    let hold_limit = hold_limit(cx, &name, s)?;
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
        if let Some(g) = &s.grace {
            return cx.err(
                g.span(),
                format!("step {name}: `grace` at a step's top level buffers a stream-table join's stream records; the grace of a window goes in the `window` table"),
            );
        }
    }
    if !matches!(kind, StepKind::Join | StepKind::Map)
        && let Some(t) = &s.as_table
    {
        only("as_table", *t.get_ref(), t.span(), "join and map")?;
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
        emit_after: match &s.emit_after {
            Some(e) => Some(cx.duration("emit_after", e)?),
            None => None,
        },
        hold_limit,
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
        key_preserving: s.key_preserving || (kind == StepKind::Map && s.as_table()),
        from_table: s.from_table.as_ref().is_some_and(|f| *f.get_ref()),
        groups_table: false,
        after_table_map: false,
        tracks_rows: false,
        as_table: s.as_table(),
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
        join_sides(cx, st, &mut step)?;
    }
    Ok(step)
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
