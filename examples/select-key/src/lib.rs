//! Keys each record by a field of its JSON value, keeping the value: the
//! setting `field` is a JSON pointer (default "/key"); a string becomes the
//! key as it is, another JSON value its JSON text. A record without a
//! value, whose value is not JSON, or without the field (or with it null)
//! is rejected. As Kafka Streams' `selectKey`, or the selector of
//! `groupBy` on a stream or a table.

use weir_guest::serde_json::Value;
use weir_guest::{Error, Output, Record, reject};

#[weir_guest::map]
fn select_key(r: Record) -> Result<Output, Error> {
    let field = weir_guest::config().get("field").unwrap_or("/key");
    let Some(value) = r.value else {
        reject!("the record has no value")
    };
    let Ok(json) = weir_guest::serde_json::from_slice::<Value>(value) else {
        reject!("the value is not JSON, so {field:?} cannot be read from it")
    };
    let key = match json.pointer(field) {
        None | Some(Value::Null) => reject!("the value has no {field:?}"),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    Ok(Output {
        key: Some(key),
        value: Some(value.to_vec()),
        ..Output::default()
    })
}
