//! {{name}}: a Weir mapper. Each record in gives zero or more outputs.

use weir_guest::{Error, Output, Record};

/// Upper-cases each value and keeps the key, headers and timestamp.
///
/// Change this: return `Ok(vec![])` to drop a record, several outputs to
/// split one, `Output::forward(&r).to("name")` to route it to a named output,
/// or `Err(...)` (or `weir_guest::reject!`) to send it to the dead letters.
#[weir_guest::map]
fn {{ident}}(r: Record) -> Result<Vec<Output>, Error> {
    let value = r.value_str()?.to_uppercase();
    Ok(vec![Output::forward(&r).with_value(value)])
}
