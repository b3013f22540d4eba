//! {{name}}: a Weir processor, with state stores and timers.

use weir_guest::{Error, Output, Processor, Record, state};

struct CountPerKey;

/// Counts records per key in the state store `counts` (declare it in the
/// pipeline file) and emits "key=N".
///
/// Change this: `process` returns outputs like a map function; override
/// `on_timer` to act on timers set with `weir_guest::timers`.
#[weir_guest::processor]
impl Processor for CountPerKey {
    fn process(r: &Record) -> Result<Vec<Output>, Error> {
        let key = r.key.unwrap_or_default();
        let n = state::get_json::<u64>("counts", key)?.unwrap_or(0) + 1;
        state::put_json("counts", key, &n)?;
        let text = format!("{}={n}", String::from_utf8_lossy(key));
        Ok(vec![Output::keyed(key, text)])
    }
}
