//! Written from the docs alone, as an outside author would: a processor that
//! counts each key's records in the store `counts`; a key's first record sets
//! an event-time timer 10 s later, which emits the count and forgets it. It
//! logs each burst's start (info) and end (warn), and rejects the value
//! "bad". The same function is in js/ and python/; the end-to-end tests
//! (tests/e2e/outside_guests.rs) compare their outputs.

use weir_guest::{Error, Output, Processor, Record, reject, state, timers};

struct Bursts;

#[weir_guest::processor]
impl Processor for Bursts {
    fn process(r: &Record) -> Result<Vec<Output>, Error> {
        let key = r.key_str()?;
        if r.value == Some(b"bad") {
            reject!("bad value at offset {}", r.offset);
        }
        let n = state::get_json::<u64>("counts", key.as_bytes())?.unwrap_or(0);
        if n == 0 {
            weir_guest::info!("new burst for {key} at {}", r.timestamp);
            timers::at_event_time(r.timestamp + 10_000, key.as_bytes());
        }
        state::put_json("counts", key.as_bytes(), &(n + 1))?;
        Ok(vec![])
    }

    fn on_timer(time: i64, tag: &[u8]) -> Result<Vec<Output>, Error> {
        let key = std::str::from_utf8(tag)?;
        let n = state::get_json::<u64>("counts", tag)?.unwrap_or(0);
        state::delete("counts", tag)?;
        weir_guest::warn!("burst of {key} ended at {time}: {n}");
        Ok(vec![Output::keyed(tag, n.to_string())])
    }
}
