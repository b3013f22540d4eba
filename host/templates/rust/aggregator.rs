//! {{name}}: a Weir aggregator. The host keeps one accumulator per key (and
//! window); this says how to start, add to and merge one.

use weir_guest::{Aggregate, Error, Record};

struct Sum;

/// Sums the values (numbers) per key.
///
/// Change this: `Acc` is any serde type (stored as JSON); `add` folds a
/// record into it (an `Err` rejects the record); `merge` combines two.
#[weir_guest::aggregate]
impl Aggregate for Sum {
    type Acc = f64;

    fn init() -> f64 {
        0.0
    }

    fn add(acc: &mut f64, r: &Record) -> Result<(), Error> {
        *acc += r.value_str()?.trim().parse::<f64>()?;
        Ok(())
    }

    fn merge(a: f64, b: f64) -> f64 {
        a + b
    }
}
