//! A processor (full control: state stores and timers). It counts each
//! key's records in the store `counts`; the first record of a key also sets
//! an event-time timer 10 s later (or `window_ms` from the settings), and
//! when the stream time passes it, the timer emits the key's count and
//! forgets it. With the setting `clock = "wall"` the timer follows the wall
//! clock instead (at the record's timestamp + the window).

use weir_guest::{Error, Output, Processor, Record, state, timers};

struct BurstCount;

#[weir_guest::processor]
impl Processor for BurstCount {
    fn process(r: &Record) -> Result<Vec<Output>, Error> {
        let key = r
            .key
            .ok_or_else(|| Error::new("burst-count needs keyed records"))?;
        let count: u64 = state::get_json("counts", key)?.unwrap_or(0);
        if count == 0 {
            let window: i64 = weir_guest::config().parse_or("window_ms", 10_000)?;
            if weir_guest::config().get("clock") == Some("wall") {
                timers::at_wall_clock(r.timestamp + window, key);
            } else {
                timers::at_event_time(r.timestamp + window, key);
            }
        }
        state::put_json("counts", key, &(count + 1))?;
        Ok(Vec::new())
    }

    fn on_timer(time: i64, tag: &[u8]) -> Result<Vec<Output>, Error> {
        let count: u64 = state::get_json("counts", tag)?.unwrap_or(0);
        state::delete("counts", tag)?;
        Ok(vec![Output::keyed(tag, count.to_string()).at(time)])
    }
}
