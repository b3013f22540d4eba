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
