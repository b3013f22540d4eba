//! Counts records per key, as `examples/count` does and with the same
//! accumulator (a number), but presents a count as "N records": the second
//! version of an aggregate step in the daemon's swap tests, whose outputs
//! show which version made them while the count carries over.

use weir_guest::{Aggregate, Error, Record, Window};

struct CountV2;

#[weir_guest::aggregate]
impl Aggregate for CountV2 {
    type Acc = u64;

    fn init() -> u64 {
        0
    }

    fn add(acc: &mut u64, _r: &Record) -> Result<(), Error> {
        *acc += 1;
        Ok(())
    }

    fn merge(a: u64, b: u64) -> u64 {
        a + b
    }

    fn present(
        acc: &u64,
        _key: Option<&[u8]>,
        _window: Option<Window>,
    ) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(format!("{acc} records").into_bytes()))
    }
}
