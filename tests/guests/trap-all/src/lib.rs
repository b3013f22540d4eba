//! Traps on every record: a version of a map step that the daemon must roll
//! back on its first batch, losing nothing.

use weir_guest::{Error, Output, Record};

#[weir_guest::map]
fn trap_all(r: Record) -> Result<Output, Error> {
    panic!("trap-all traps on every record (offset {})", r.offset)
}
