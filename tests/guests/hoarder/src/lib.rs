//! A processor that tries to make the host hold far more than the guest's
//! own memory: for the value `hoard` it puts the same value of `value_mb`
//! MiB (default 100) into the store `hoard` under `values` keys (default
//! 30); any other value puts one small entry. Every record is forwarded.

use weir_guest::{Error, Output, Processor, Record, config, state};

struct Hoarder;

#[weir_guest::processor]
impl Processor for Hoarder {
    fn process(r: &Record) -> Result<Vec<Output>, Error> {
        if r.value == Some(b"hoard") {
            let mb: usize = config().parse_or("value_mb", 100)?;
            let values: usize = config().parse_or("values", 30)?;
            let value = vec![7u8; mb << 20];
            for i in 0..values {
                state::put("hoard", i.to_string().as_bytes(), &value)?;
            }
        } else {
            state::put("hoard", r.value.unwrap_or_default(), b"small")?;
        }
        Ok(vec![Output::forward(r)])
    }
}
