use weir_guest::{Error, Output, Record};

#[weir_guest::map]
fn two_args(r: Record, extra: u32) -> Result<Output, Error> {
    let _ = extra;
    Ok(Output::forward(&r))
}

#[weir_guest::map]
fn wrong_type(line: String) -> Result<Output, Error> {
    Ok(Output::value(line))
}

struct HalfUpgrade;

#[weir_guest::aggregate]
impl weir_guest::Aggregate for HalfUpgrade {
    type Acc = u64;
    const STATE_FORMAT: u32 = 1;
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
