//! Lower-cases each record's value (ASCII), keeping its key and timestamp:
//! the second version of the `uppercase` map step in the hot-swap tests.

use weir_guest::{Error, Output, Record};

#[weir_guest::map]
fn lowercase(r: Record) -> Result<Output, Error> {
    Ok(Output {
        key: r.key.map(<[u8]>::to_vec),
        value: r.value.map(<[u8]>::to_ascii_lowercase),
        ..Output::default()
    })
}
