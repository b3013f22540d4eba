//! Makes each record's value one field of its JSON value, keeping its key,
//! time and headers: the setting `field` is a JSON pointer (default "", the
//! whole value); a string becomes the value as it is, another JSON value its
//! JSON text. A record without the field (or with it null) is dropped, and
//! with the setting `only_if` (a JSON pointer too) so is one whose value
//! does not have `true` there, with `drop_if` one whose value has `true`
//! there; one whose value is not JSON is rejected. On
//! a stream, Kafka Streams' `filter` and `mapValues`; in a map step with
//! `as_table = true`, over a table, `KTable.filter` and `KTable.mapValues`:
//! a dropped row becomes a deletion of its key.

use weir_guest::serde_json::Value;
use weir_guest::{Error, Output, Record, reject};

#[weir_guest::map]
fn pick_field(r: Record) -> Result<Option<Output>, Error> {
    let field = weir_guest::config().get("field").unwrap_or("");
    let Some(value) = r.value else {
        return Ok(None);
    };
    let Ok(json) = weir_guest::serde_json::from_slice::<Value>(value) else {
        reject!("the value is not JSON, so {field:?} cannot be read from it")
    };
    let flag = |name: &str| {
        weir_guest::config()
            .get(name)
            .map(|f| json.pointer(f) == Some(&Value::Bool(true)))
    };
    if flag("only_if") == Some(false) || flag("drop_if") == Some(true) {
        return Ok(None);
    }
    let picked = match json.pointer(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if !field.is_empty() => s.clone().into_bytes(),
        Some(_) if field.is_empty() => value.to_vec(),
        Some(other) => other.to_string().into_bytes(),
    };
    Ok(Some(Output {
        value: Some(picked),
        ..Output::forward(&r)
    }))
}
