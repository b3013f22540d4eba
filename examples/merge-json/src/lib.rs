//! Joins two JSON values: the left one must be an object (or nothing, in an
//! outer join: then an empty one); the right one (or `null` when nothing
//! matched) goes into it under the field named by the `field` setting
//! (default "right"). With the setting `none_if` = a field name, a pair
//! where either side is an object with that field `true` gets no value (a
//! tombstone in a table join, a record without a value in a stream join).

use weir_guest::serde_json::{Map, Value};
use weir_guest::{Error, Pair, reject};

#[weir_guest::join]
fn merge(p: Pair) -> Result<Option<Vec<u8>>, Error> {
    let field = weir_guest::config().get("field").unwrap_or("right");
    let mut obj = match p.left {
        None => Map::new(),
        Some(left) => match weir_guest::serde_json::from_slice::<Value>(left) {
            Ok(Value::Object(obj)) => obj,
            _ => reject!("the left side is not a JSON object"),
        },
    };
    let right = match p.right {
        None => Value::Null,
        Some(r) => weir_guest::serde_json::from_slice(r)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(r).into_owned())),
    };
    if let Some(flag) = weir_guest::config().get("none_if")
        && (obj.get(flag) == Some(&Value::Bool(true))
            || right.get(flag) == Some(&Value::Bool(true)))
    {
        return Ok(None);
    }
    obj.insert(field.to_string(), right);
    Ok(Some(weir_guest::serde_json::to_vec(&Value::Object(
        obj as Map<String, Value>,
    ))?))
}
