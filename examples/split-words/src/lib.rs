//! Word count's first step: a line becomes one record per lower-cased word,
//! keyed by the word (the value is the word too), dropping "the". A word is a
//! maximal run of letters and digits.

use weir_guest::{Error, Output, Record};

#[weir_guest::map]
fn split(r: Record) -> Result<Vec<Output>, Error> {
    let line = r.value_str()?.to_lowercase();
    Ok(line
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && *w != "the")
        .map(|w| Output::keyed(w, w))
        .collect())
}
