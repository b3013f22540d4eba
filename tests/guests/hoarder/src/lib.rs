//! A processor that tries to make the host hold far more than the guest's
//! own memory: for the value `hoard` it puts the same value of `value_mb`
//! MiB (default 100) into the store `hoard` under `values` keys (default
//! 30), then emits one more output of `output_mb` MiB (default 0: none);
//! for the value `flood` it emits `outputs` outputs (default 100) of
//! `output_mb` MiB each (default 1) from that one small record; any other
//! value puts one small entry. Every record is forwarded.

use weir_guest::{Error, Output, Processor, Record, config, state};

struct Hoarder;

#[weir_guest::processor]
impl Processor for Hoarder {
    fn process(r: &Record) -> Result<Vec<Output>, Error> {
        let mut outputs = vec![Output::forward(r)];
        if r.value == Some(b"hoard") {
            let mb: usize = config().parse_or("value_mb", 100)?;
            let values: usize = config().parse_or("values", 30)?;
            let value = vec![7u8; mb << 20];
            for i in 0..values {
                state::put("hoard", i.to_string().as_bytes(), &value)?;
            }
            let output_mb: usize = config().parse_or("output_mb", 0)?;
            if output_mb > 0 {
                outputs.push(Output::value(vec![b'o'; output_mb << 20]));
            }
        } else if r.value == Some(b"flood") {
            let n: usize = config().parse_or("outputs", 100)?;
            let output_mb: usize = config().parse_or("output_mb", 1)?;
            for _ in 0..n {
                outputs.push(Output::value(vec![b'o'; output_mb << 20]));
            }
        } else {
            state::put("hoard", r.value.unwrap_or_default(), b"small")?;
        }
        Ok(outputs)
    }
}
