//! The checks of a step's parts that span several fields: its window and
//! retention, a join's sides, a foreign-key join's three parts, and a
//! `from_table` aggregate's place.

use super::*;

/// Reads a step's `window` table into `step`.
pub(super) fn window(
    cx: &Ctx<'_>,
    step: &mut Step,
    w: &Spanned<WindowToml>,
) -> Result<(), ConfigError> {
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
pub(super) fn retention(
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

/// Checks a `from_table` aggregate: unwindowed, after the one map step
/// that groups the table's rows (which it marks), and before that only
/// maps with `as_table`.
pub(super) fn from_table(
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
    let table_maps = |steps: &[Step]| steps.iter().all(|s| s.kind == StepKind::Map && s.as_table);
    match before {
        [.., map] if map.kind == StepKind::Map && map.as_table => cx.err(
            span,
            format!("step {name}: the map step in front of a `from_table` aggregate picks each row's group, a new key, and `as_table = true` keeps keys: drop `as_table` on step {} (the host already reads the pipeline's input as a table here)", map.name),
        ),
        // Maps with `as_table` may filter the table first (Kafka Streams'
        // `table.filter(...).groupBy(...)`).
        [filters @ .., map] if map.kind == StepKind::Map && table_maps(filters) => {
            map.groups_table = true;
            Ok(())
        }
        _ => cx.err(
            span,
            format!("step {name}: a `from_table` aggregate groups the rows of the pipeline's input (a table) through one `map` step before it, its grouping (Kafka Streams' `groupBy` selector): make it the second step, after that map (maps with `as_table = true` may come first, to filter or map the table)"),
        ),
    }
}

/// Checks a join step's sides: `with`, `join`, `as_table`, `with_kind`.
pub(super) fn join_sides(
    cx: &Ctx<'_>,
    st: &Spanned<StepToml>,
    step: &mut Step,
) -> Result<(), ConfigError> {
    let (s, name) = (st.get_ref(), step.name.clone());
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
    if step.join == JoinType::Outer && !s.as_table() && step.with_kind == WithKind::Table {
        let span = s.join.as_ref().map_or(st.span(), |j| j.span());
        return cx.err(span, format!("step {name}: a stream-table join is \"inner\" or \"left\"; an outer join joins two tables (add `as_table = true`) or two streams (`with_kind = \"stream\"` and a window)"));
    }
    if s.as_table() && step.with_kind != WithKind::Table {
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
        if step.with_kind != WithKind::Table || s.foreign_key.is_some() {
            return cx.err(
                h.span(),
                format!("step {name}: `history` applies to stream-table and table-table joins (versioned tables, as Kafka Streams' versioned stores): leave out `foreign_key` and `with_kind`"),
            );
        }
        if step.history.is_some_and(|ms| ms <= 0) {
            return cx.err(
                h.span(),
                format!("step {name}: `history` must be longer than 0"),
            );
        }
    }
    if let Some(g) = &s.grace {
        if s.as_table() {
            return cx.err(
                g.span(),
                format!("step {name}: `grace` buffers the stream records of a stream-table join; a table-table join (`as_table`) has none"),
            );
        }
        let Some(history) = step.history else {
            return cx.err(
                g.span(),
                format!("step {name}: `grace` buffers the stream records of a stream-table join over a versioned table: give the join `history` too (Kafka Streams' Joined.withGracePeriod needs a versioned table)"),
            );
        };
        let grace = cx.duration("grace", g)?;
        if grace > history {
            return cx.err(
                g.span(),
                format!("step {name}: `grace` ({grace} ms) is longer than `history` ({history} ms): a buffered record could outlive the table versions it is to meet; make `history` at least the grace, as Kafka Streams requires"),
            );
        }
        step.grace = grace;
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
pub(super) fn foreign_key(
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
    step.foreign_key = Some(crate::pipeline::config::ForeignKey {
        pointer: pointer.clone(),
        part: FkPart::Join,
    });
    Ok(())
}

/// The three steps a foreign-key join runs as (`join`: its middle part):
/// `NAME.subscribe`, `NAME`, `NAME.resolve`.
pub(super) fn foreign_key_parts(join: Step) -> [Step; 3] {
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

/// Reads the bounds on what `emit_after` holds (`emit_after_max_records`,
/// `emit_after_max_bytes`, `emit_after_when_full`).
pub(super) fn hold_limit(cx: &Ctx<'_>, name: &str, s: &StepToml) -> Result<HoldLimit, ConfigError> {
    let limit = HoldLimit {
        max_records: s.emit_after_max_records.as_ref().map(|m| *m.get_ref()),
        max_bytes: s.emit_after_max_bytes.as_ref().map(|m| *m.get_ref()),
        when_full: s
            .emit_after_when_full
            .as_ref()
            .map(|w| *w.get_ref())
            .unwrap_or_default(),
    };
    let spans = [
        s.emit_after_max_records
            .as_ref()
            .map(|m| ("emit_after_max_records", m.span())),
        s.emit_after_max_bytes
            .as_ref()
            .map(|m| ("emit_after_max_bytes", m.span())),
        s.emit_after_when_full
            .as_ref()
            .map(|w| ("emit_after_when_full", w.span())),
    ];
    let Some((field, span)) = spans.into_iter().flatten().next() else {
        return Ok(limit);
    };
    if s.emit_after.is_none() {
        return cx.err(
            span,
            format!("step {name}: `{field}` bounds what `emit_after` holds; set `emit_after` too (e.g. `emit_after = \"10s\"`)"),
        );
    }
    if limit.max_records.is_none() && limit.max_bytes.is_none() {
        return cx.err(
            span,
            format!("step {name}: `emit_after_when_full` says what happens past a bound; set `emit_after_max_records` or `emit_after_max_bytes` too"),
        );
    }
    Ok(limit)
}
