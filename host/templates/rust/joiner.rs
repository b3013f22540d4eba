//! {{name}}: a Weir joiner. The host keeps the join state and decides which
//! records meet; this combines the two values.

use weir_guest::{Error, Pair};

/// Joins the two values as "left|right" (a missing side is empty).
///
/// Change this: return `Ok(None)` for a result without a value (a tombstone
/// in a table join), `Err(...)` to reject it.
#[weir_guest::join]
fn {{ident}}(p: Pair) -> Result<Option<Vec<u8>>, Error> {
    let mut out = p.left.unwrap_or_default().to_vec();
    out.push(b'|');
    out.extend_from_slice(p.right.unwrap_or_default());
    Ok(Some(out))
}
