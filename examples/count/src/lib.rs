//! Counts records per key (and per window, when the pipeline gives one).
//! The host keeps the counts; this only says how to start, add and merge.

use weir_guest::{Aggregate, Error, Record};

struct Count;

#[weir_guest::aggregate]
impl Aggregate for Count {
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
}
