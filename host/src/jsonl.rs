//! The JSON-lines record format of `weir test`, `weir produce` and
//! `weir consume`: one JSON object per line.
//!
//! ```text
//! {"key": "user-1", "value": {"level": "ERROR"}, "headers": {"h": "v"}, "timestamp": 1700000000000}
//! ```
//!
//! - `key`, `value`: a JSON string stands for its UTF-8 bytes; any other JSON
//!   value for its compact JSON text; `null` (or leaving it out) for none.
//!   `key_b64` / `value_b64` give binary bytes in base64 instead.
//! - `headers`: an object of name to string, or to `{"b64": "..."}`.
//! - `timestamp`: milliseconds since the Unix epoch; 0 when left out.
//!
//! Printing reverses it: bytes that are a JSON document other than a string
//! or `null` print as that JSON, other UTF-8 bytes as a string, anything
//! else as `key_b64` / `value_b64`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use crate::record::{DeadLetter, Output, Record};

/// A line of plain text as a record, as Kafka's console producer reads one
/// (`weir produce --text`, `weir test --text`): the line is the value; with
/// `key_separator`, the text before its first occurrence is the key and the
/// rest the value, and a line without it is refused. No timestamp (0).
pub fn text_record(line: &[u8], key_separator: Option<&str>) -> Result<Record, BadLine> {
    let (key, value) = match key_separator {
        None => (None, line),
        Some(sep) => {
            let sep = sep.as_bytes();
            match line.windows(sep.len().max(1)).position(|w| w == sep) {
                Some(at) if !sep.is_empty() => (Some(line[..at].to_vec()), &line[at + sep.len()..]),
                _ => {
                    let sep = String::from_utf8_lossy(sep);
                    return Err(BadLine(format!(
                        "no key separator {sep:?} in the line (with --key-separator, every line is KEY{sep}VALUE)"
                    )));
                }
            }
        }
    };
    Ok(Record {
        key,
        value: Some(value.to_vec()),
        ..Record::default()
    })
}

/// A line that is not a record; the message says what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadLine(pub String);

const FIELDS: &str = "key, key_b64, value, value_b64, headers, timestamp";

/// Parses one line into a record with the given offset.
pub fn parse_record(line: &str, offset: i64) -> Result<Record, BadLine> {
    parse_line(line, offset).map(|(r, _)| r)
}

/// [`parse_record`], also telling whether the line gave a `timestamp`
/// (Kafka stamps a record without one with the current time).
pub fn parse_line(line: &str, offset: i64) -> Result<(Record, bool), BadLine> {
    let v: Value = serde_json::from_str(line).map_err(|e| BadLine(format!("not JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(BadLine(format!(
            "expected a JSON object with the fields {FIELDS}, found {}",
            kind(&v)
        )));
    };
    let mut r = Record {
        offset,
        ..Record::default()
    };
    for (name, val) in &obj {
        match name.as_str() {
            "key" => r.key = bytes_of(val),
            "value" => r.value = bytes_of(val),
            "key_b64" => r.key = b64_of("key_b64", val)?,
            "value_b64" => r.value = b64_of("value_b64", val)?,
            "timestamp" => {
                r.timestamp = val.as_i64().ok_or_else(|| {
                    BadLine(format!(
                        "`timestamp` must be an integer (ms since the Unix epoch), found {}",
                        kind(val)
                    ))
                })?
            }
            "headers" => r.headers = headers_of(val)?,
            // Printed by `weir consume`; accepted so that its output can be
            // produced again.
            "offset" | "partition" | "output" => {}
            other => {
                return Err(BadLine(format!(
                    "unknown field `{other}`; a record has the fields {FIELDS}"
                )));
            }
        }
    }
    if obj.contains_key("key") && obj.contains_key("key_b64") {
        return Err(BadLine("give `key` or `key_b64`, not both".into()));
    }
    if obj.contains_key("value") && obj.contains_key("value_b64") {
        return Err(BadLine("give `value` or `value_b64`, not both".into()));
    }
    Ok((r, obj.contains_key("timestamp")))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        other => Some(other.to_string().into_bytes()),
    }
}

fn b64_of(field: &str, v: &Value) -> Result<Option<Vec<u8>>, BadLine> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => B64
            .decode(s)
            .map(Some)
            .map_err(|e| BadLine(format!("`{field}` is not valid base64: {e}"))),
        other => Err(BadLine(format!(
            "`{field}` must be a base64 string, found {}",
            kind(other)
        ))),
    }
}

fn headers_of(v: &Value) -> Result<Vec<(String, Vec<u8>)>, BadLine> {
    let Value::Object(obj) = v else {
        return Err(BadLine(format!(
            "`headers` must be an object of name to string, found {}",
            kind(v)
        )));
    };
    obj.iter()
        .map(|(name, val)| {
            let bytes = match val {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Object(o) if o.len() == 1 && o.contains_key("b64") => {
                    b64_of(&format!("headers.{name}.b64"), &o["b64"])?.unwrap_or_default()
                }
                other => {
                    return Err(BadLine(format!(
                        "header `{name}` must be a string or {{\"b64\": \"...\"}}, found {}",
                        kind(other)
                    )));
                }
            };
            Ok((name.clone(), bytes))
        })
        .collect()
}

/// How bytes print: JSON that is not a string or null as itself, UTF-8 as a
/// string, anything else as base64 under the `_b64` name.
fn put_bytes(obj: &mut Map<String, Value>, field: &str, bytes: Option<&[u8]>) {
    let Some(b) = bytes else {
        obj.insert(field.into(), Value::Null);
        return;
    };
    if let Ok(v) = serde_json::from_slice::<Value>(b)
        && !matches!(v, Value::String(_) | Value::Null)
    {
        obj.insert(field.into(), v);
        return;
    }
    match std::str::from_utf8(b) {
        Ok(s) => obj.insert(field.into(), Value::String(s.into())),
        Err(_) => obj.insert(format!("{field}_b64"), Value::String(B64.encode(b))),
    };
}

fn headers_json<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Option<Value> {
    let mut m = Map::new();
    for (name, value) in headers {
        let v = match std::str::from_utf8(value) {
            Ok(s) => Value::String(s.into()),
            Err(_) => {
                let mut o = Map::new();
                o.insert("b64".into(), Value::String(B64.encode(value)));
                Value::Object(o)
            }
        };
        m.insert(name.into(), v);
    }
    (!m.is_empty()).then_some(Value::Object(m))
}

/// A record as a JSON object: key, value, headers (when there are any),
/// timestamp.
pub fn record_json(r: &Record) -> Map<String, Value> {
    let mut obj = Map::new();
    put_bytes(&mut obj, "key", r.key.as_deref());
    put_bytes(&mut obj, "value", r.value.as_deref());
    if let Some(h) = headers_json(r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))) {
        obj.insert("headers".into(), h);
    }
    obj.insert("timestamp".into(), Value::from(r.timestamp));
    obj
}

/// An output as one line: `output` first, then the record.
pub fn output_line(o: &Output) -> String {
    let mut obj = Map::new();
    obj.insert(
        "output".into(),
        o.to.as_ref()
            .map_or(Value::Null, |s| Value::String(s.clone())),
    );
    obj.extend(record_json(&o.record));
    Value::Object(obj).to_string()
}

/// A dead letter as one line: the record as the dead-letter topic gets it
/// (with the `weir.error` headers), with its offset first.
pub fn dead_letter_line(d: &DeadLetter) -> String {
    let mut obj = Map::new();
    obj.insert("offset".into(), Value::from(d.record.offset));
    obj.extend(record_json(&d.to_record()));
    Value::Object(obj).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_json_and_base64_round_trip() {
        let line = r#"{"key":"k","value":{"b":1,"a":[true]},"headers":{"h":"v","bin":{"b64":"/w=="}},"timestamp":5}"#;
        let r = parse_record(line, 3).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&br#"{"b":1,"a":[true]}"#[..]));
        assert_eq!(r.headers[1], ("bin".to_string(), vec![0xff]));
        let out = Output {
            to: Some("high".into()),
            record: r,
        };
        assert_eq!(
            output_line(&out),
            r#"{"output":"high","key":"k","value":{"b":1,"a":[true]},"headers":{"h":"v","bin":{"b64":"/w=="}},"timestamp":5}"#
        );
        let bin = parse_record(r#"{"value_b64":"AP8="}"#, 0).unwrap();
        assert_eq!(
            record_json(&bin).get("value_b64"),
            Some(&Value::String("AP8=".into()))
        );
    }

    #[test]
    fn numbers_print_with_every_digit_they_had() {
        let r = Record {
            value: Some(br#"{"a":110.00000000000001,"b":[0.30000000000000004,-2.5e-7]}"#.to_vec()),
            ..Record::default()
        };
        assert_eq!(
            Value::Object(record_json(&r)).to_string(),
            r#"{"key":null,"value":{"a":110.00000000000001,"b":[0.30000000000000004,-2.5e-7]},"timestamp":0}"#
        );
    }

    #[test]
    fn mistakes_name_what_to_fix() {
        assert_eq!(
            parse_record(r#"{"vaule":1}"#, 0).unwrap_err().0,
            "unknown field `vaule`; a record has the fields key, key_b64, value, value_b64, headers, timestamp"
        );
        assert_eq!(
            parse_record(r#"{"timestamp":"now"}"#, 0).unwrap_err().0,
            "`timestamp` must be an integer (ms since the Unix epoch), found a string"
        );
        assert_eq!(
            parse_record("[1]", 0).unwrap_err().0,
            "expected a JSON object with the fields key, key_b64, value, value_b64, headers, timestamp, found an array"
        );
    }
}
