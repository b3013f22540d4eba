//! `weir test --expect FILE.jsonl`: the outputs compared with expected
//! records. An expected line names the fields it cares about (`topic`,
//! `partition`, `offset` for a pipeline, `output` for a module's named
//! output, `key` or `key_b64`, `value` or `value_b64`, `headers`,
//! `timestamp`); the fields it leaves out are not compared.
//! Keys and values are compared as `weir test` prints them, so `"value": 2`
//! matches the bytes `2` and `{"a":1}` matches `{"a": 1}`.

use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use serde_json::{Map, Value};

use weir::jsonl;

/// One expected record: its line number, the fields to compare and the
/// line as written.
pub struct Expected {
    line: usize,
    fields: Vec<(&'static str, Value)>,
    text: String,
}

const NAMES: [&str; 8] = [
    "topic",
    "output",
    "partition",
    "offset",
    "key",
    "value",
    "headers",
    "timestamp",
];

/// Reads an expected-records file.
pub fn read(path: &Path) -> anyhow::Result<Vec<Expected>> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open the expected-records file {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let number = n + 1;
        let line =
            line.with_context(|| format!("cannot read {} at line {number}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: String| anyhow::anyhow!("{}:{number}: {what}", path.display());
        let v: Value = serde_json::from_str(&line).map_err(|e| at(format!("not JSON: {e}")))?;
        let Value::Object(obj) = v else {
            return Err(at(
                "expected a JSON object with some of the fields topic, partition, offset, output, key, value, headers, timestamp".into(),
            ));
        };
        // Keys, values and headers through the record format, so that they
        // print as the outputs do.
        let mut rec = Map::new();
        let mut fields = Vec::new();
        for (name, val) in &obj {
            match name.as_str() {
                "topic" => {
                    let Value::String(_) = val else {
                        return Err(at("`topic` must be a string".into()));
                    };
                    fields.push(("topic", val.clone()));
                }
                "output" => {
                    if !(val.is_string() || val.is_null()) {
                        return Err(at(
                            "`output` must be a string (a named output) or null (the default output)".into(),
                        ));
                    }
                    fields.push(("output", val.clone()));
                }
                "partition" | "offset" => {
                    if !val.is_u64() {
                        return Err(at(format!("`{name}` must be a whole number")));
                    }
                    fields.push((
                        if name == "offset" {
                            "offset"
                        } else {
                            "partition"
                        },
                        val.clone(),
                    ));
                }
                "key" | "key_b64" | "value" | "value_b64" | "headers" | "timestamp" => {
                    rec.insert(name.clone(), val.clone());
                }
                other => {
                    return Err(at(format!(
                        "unknown field `{other}`; an expected record has some of the fields topic, partition, offset, output, key, key_b64, value, value_b64, headers, timestamp"
                    )));
                }
            }
        }
        let r = jsonl::parse_record(&Value::Object(rec).to_string(), 0)
            .map_err(|e| at(e.to_string()))?;
        let printed = jsonl::record_json(&r);
        for name in ["key", "value"] {
            if obj.contains_key(name) || obj.contains_key(&format!("{name}_b64")) {
                fields.push((name, bytes_field(&printed, name)));
            }
        }
        if obj.contains_key("headers") {
            fields.push(("headers", headers_field(&printed)));
        }
        if obj.contains_key("timestamp") {
            fields.push(("timestamp", printed["timestamp"].clone()));
        }
        fields.sort_by_key(|(n, _)| NAMES.iter().position(|x| x == n));
        out.push(Expected {
            line: number,
            fields,
            text: line.trim().to_string(),
        });
    }
    Ok(out)
}

/// A key or value as printed: `{"key": ...}` or `{"key_b64": ...}`.
fn bytes_field(obj: &Map<String, Value>, name: &str) -> Value {
    let b64 = format!("{name}_b64");
    match obj.get(&b64) {
        Some(v) => serde_json::json!({ b64: v }),
        None => obj.get(name).cloned().unwrap_or(Value::Null),
    }
}

fn headers_field(obj: &Map<String, Value>) -> Value {
    obj.get("headers")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()))
}

/// The value of field `name` of an output line, as an expected line holds it.
fn actual_field(obj: &Map<String, Value>, name: &str) -> Value {
    match name {
        "key" | "value" => bytes_field(obj, name),
        "headers" => headers_field(obj),
        _ => obj.get(name).cloned().unwrap_or(Value::Null),
    }
}

/// Fields that differ: (name, expected, actual).
fn differences<'a>(
    e: &'a Expected,
    a: &Map<String, Value>,
) -> Vec<(&'static str, &'a Value, Value)> {
    e.fields
        .iter()
        .filter_map(|(n, v)| {
            let got = actual_field(a, n);
            (got != *v).then_some((*n, v, got))
        })
        .collect()
}

/// Compares; returns the report and whether the outputs are as expected.
/// The report is text (empty when equal), or with `json` one JSON object a
/// line: each difference, then a summary.
pub fn compare(
    file: &Path,
    expected: &[Expected],
    actual: &[Map<String, Value>],
    ignore_order: bool,
    json: bool,
) -> (String, bool) {
    let mut used = vec![false; actual.len()];
    let mut unmatched = Vec::new();
    let mut cursor = 0usize;
    for (ei, e) in expected.iter().enumerate() {
        let from = if ignore_order { 0 } else { cursor };
        let found =
            (from..actual.len()).find(|&i| !used[i] && differences(e, &actual[i]).is_empty());
        match found {
            Some(i) => {
                used[i] = true;
                cursor = i + 1;
            }
            None => unmatched.push(ei),
        }
    }
    let mut text = String::new();
    let (mut missing, mut changed, mut unexpected, mut moved) = (0, 0, 0, 0);
    let same = |e: &Expected, a: &Map<String, Value>, name: &str| {
        e.fields
            .iter()
            .find(|(n, _)| *n == name)
            .is_none_or(|(_, v)| actual_field(a, name) == *v)
    };
    let parsed = |e: &Expected| serde_json::from_str::<Value>(&e.text).unwrap_or(Value::Null);
    let line = |text: &mut String, v: Value| {
        *text += &v.to_string();
        text.push('\n');
    };
    for ei in unmatched {
        let e = &expected[ei];
        // A changed record: an unused output of the same topic (or named
        // output) and key.
        let paired = (0..actual.len()).find(|&i| {
            !used[i]
                && same(e, &actual[i], "topic")
                && same(e, &actual[i], "output")
                && same(e, &actual[i], "key")
        });
        match paired {
            Some(i) => {
                used[i] = true;
                let diffs = differences(e, &actual[i]);
                let what = if diffs.is_empty() {
                    moved += 1;
                    "out of order"
                } else {
                    changed += 1;
                    "changed"
                };
                if json {
                    let fields: Map<String, Value> = diffs
                        .iter()
                        .map(|(n, want, got)| {
                            (
                                n.to_string(),
                                serde_json::json!({"expected": want, "got": got}),
                            )
                        })
                        .collect();
                    line(
                        &mut text,
                        serde_json::json!({"diff": what, "line": e.line, "expected": parsed(e),
                            "got": actual[i], "fields": fields}),
                    );
                } else {
                    text += &format!("{}:{}: {what}: {}\n", file.display(), e.line, e.text);
                    for (n, want, got) in diffs {
                        text += &format!("    {n}: expected {want}, got {got}\n");
                    }
                }
            }
            None => {
                missing += 1;
                if json {
                    line(
                        &mut text,
                        serde_json::json!({"diff": "missing", "line": e.line, "expected": parsed(e)}),
                    );
                } else {
                    text += &format!("{}:{}: missing: {}\n", file.display(), e.line, e.text);
                }
            }
        }
    }
    for (i, a) in actual.iter().enumerate() {
        if !used[i] {
            unexpected += 1;
            if json {
                line(
                    &mut text,
                    serde_json::json!({"diff": "unexpected", "got": a}),
                );
            } else {
                text += &format!("unexpected: {}\n", Value::Object(a.clone()));
            }
        }
    }
    let equal = missing + unexpected + changed + moved == 0;
    if json {
        line(
            &mut text,
            serde_json::json!({"expect": file.display().to_string(), "equal": equal,
                "missing": missing, "unexpected": unexpected, "changed": changed,
                "out_of_order": moved, "expected": expected.len(), "output": actual.len()}),
        );
    } else if !equal {
        text += &format!(
            "{}: {missing} missing, {unexpected} unexpected, {changed} changed, {moved} out of order ({} expected, {} output)\n",
            file.display(),
            expected.len(),
            actual.len()
        );
    }
    (text, equal)
}
