//! Upper-cases each record's value (ASCII), keeping its key and timestamp.

use weir_guest::{Error, Output, Record};

#[weir_guest::map]
fn uppercase(r: Record) -> Result<Output, Error> {
    Ok(Output {
        key: r.key.map(<[u8]>::to_vec),
        value: r.value.map(<[u8]>::to_ascii_uppercase),
        ..Output::default()
    })
}
