//! Joins two JSON values: the left one must be an object; the right one (or
//! `null` when nothing matched, in a left join) goes into it under the field
//! named by the `field` setting (default "right").

use weir_guest::serde_json::{Map, Value};
use weir_guest::{Error, Pair, reject};

#[weir_guest::join]
fn merge(p: Pair) -> Result<Option<Vec<u8>>, Error> {
    let field = weir_guest::config().get("field").unwrap_or("right");
    let Some(left) = p.left else {
        reject!("the left side has no value");
    };
    let Ok(Value::Object(mut obj)) = weir_guest::serde_json::from_slice::<Value>(left) else {
        reject!("the left side is not a JSON object");
    };
    let right = match p.right {
        None => Value::Null,
        Some(r) => weir_guest::serde_json::from_slice(r)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(r).into_owned())),
    };
    obj.insert(field.to_string(), right);
    Ok(Some(weir_guest::serde_json::to_vec(&Value::Object(
        obj as Map<String, Value>,
    ))?))
}
