//! Counts records per key, as `examples/count` does, but keeps the count as
//! `{"count": N}` rather than a plain number: a new accumulator format
//! (state format 1), with an upgrade from the numbers `examples/count`
//! stored (format 0). The daemon's and the pipelines' upgrade tests swap
//! `examples/count` for it. With the setting `refuse_upgrade = KEY` it
//! rejects the upgrade of KEY's count (to test a refused upgrade).

use serde::{Deserialize, Serialize};
use weir_guest::{Aggregate, Error, Record, StateEntry};

#[derive(Serialize, Deserialize, Default)]
struct Tally {
    count: u64,
}

struct CountV3;

#[weir_guest::aggregate]
impl Aggregate for CountV3 {
    type Acc = Tally;

    const STATE_FORMAT: u32 = 1;

    fn init() -> Tally {
        Tally::default()
    }

    fn add(acc: &mut Tally, _r: &Record) -> Result<(), Error> {
        acc.count += 1;
        Ok(())
    }

    fn merge(a: Tally, b: Tally) -> Tally {
        Tally {
            count: a.count + b.count,
        }
    }

    fn upgrade(from: u32, entry: &StateEntry<'_>) -> Result<Option<Tally>, Error> {
        if from != 0 {
            return Err(Error::new(format!("unknown state format {from}")));
        }
        if let Some(refused) = weir_guest::config().get("refuse_upgrade")
            && entry.key == Some(refused.as_bytes())
        {
            return Err(Error::new("refused by the setting refuse_upgrade"));
        }
        let count: u64 = weir_guest::serde_json::from_slice(entry.value)?;
        Ok(Some(Tally { count }))
    }
}
