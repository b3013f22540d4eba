//! The log router of the seed: JSON log lines whose `level` is `ERROR` go to
//! the output `high`, every other line to `low`. A value that is not a JSON
//! object is rejected, so it lands in the dead-letter output with the reason.

use weir_guest::{Error, Output, Record, reject};

#[derive(serde::Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    level: Option<std::borrow::Cow<'a, str>>,
}

#[weir_guest::map]
fn route(r: Record) -> Result<Output, Error> {
    let Ok(line) = r.json::<Line>() else {
        reject!("not a JSON log line: expected an object such as {{\"level\":\"ERROR\",...}}");
    };
    let to = match line.level.as_deref() {
        Some("ERROR") => "high",
        _ => "low",
    };
    Ok(Output::forward(&r).to(to))
}
