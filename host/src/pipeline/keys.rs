//! Where a pipeline keeps its things in the data directory's database.
//!
//! ```text
//! K pipeline 0 'o' source-topic 0 partition:u32          -> next offset to read (u64; kept by the backend)
//! K pipeline 0 't' segment:u32 partition:u32             -> the task's stream time (i64)
//! K pipeline 0 'a' step 0 partition:u32 klen:u32 key start:i64 -> aggregate: end:i64 + max timestamp:i64 + accumulator
//! K pipeline 0 'c' step 0 partition:u32 close:i64 key start:i64(plain) klen:u32 -> aggregate windows by close time (emit on close)
//! K pipeline 0 'e' step 0 partition:u32                  -> a windowed aggregate's own stream time (i64)
//! K pipeline 0 'j' step 0 side:u8 partition:u32 klen:u32 key [ts:i64 offset:u64] -> join state
//! K pipeline 0 's' step 0 store 0 partition:u32 key      -> a processor's state store
//! K pipeline 0 'f' step 0 partition:u32                  -> the format of the step's state (u32; absent: 0)
//! K pipeline 0 'g' step 0 partition:u32 table-partition:u32 -> a global table join's next offset in the table (u64)
//! K pipeline 0 'n' step 0 partition:u32 klen:u32 row      -> a table grouping's group of the row (bytes)
//! K pipeline 0 'h' step 0 partition:u32 klen:u32 row      -> a table map's input holds the row (empty)
//! K pipeline 0 'm' step 0 partition:u32 klen:u32 group klen:u32 row -> a `from_table` aggregate's rows
//! ```
//!
//! Signed numbers are stored with the sign bit flipped, big-endian, so that
//! byte order is numeric order.

/// An `i64` whose big-endian bytes sort in numeric order.
pub fn ord_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`ord_i64`].
pub fn from_ord_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    (u64::from_be_bytes(a) ^ (1 << 63)) as i64
}

/// The prefix of everything a pipeline keeps.
pub fn pipeline(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.push(b'K');
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k
}

/// A task's stream time.
pub fn stream_time(pipe: &str, segment: u32, partition: u32) -> Vec<u8> {
    let mut k = pipeline(pipe);
    k.push(b't');
    k.extend_from_slice(&segment.to_be_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The prefix of one step's keys of one kind in one partition.
pub fn step(pipe: &str, kind: u8, step: &str, partition: u32) -> Vec<u8> {
    let mut k = pipeline(pipe);
    k.push(kind);
    k.extend_from_slice(step.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The format a step's state in one partition was written in (see
/// [`super::upgrade`]).
pub fn state_format(pipe: &str, step_name: &str, partition: u32) -> Vec<u8> {
    step(pipe, b'f', step_name, partition)
}

/// A windowed aggregate's own stream time in one partition: the largest
/// timestamp of the records that reached it (Kafka Streams keeps one per
/// windowed processor).
pub fn step_time(pipe: &str, step_name: &str, partition: u32) -> Vec<u8> {
    step(pipe, b'e', step_name, partition)
}

/// Where a task is in one partition of the global table a join step reads
/// (every task reads all of it): the next offset, as 8 big-endian bytes.
/// Kept with the task's state, not as a consumer position.
pub fn global_position(
    pipe: &str,
    step_name: &str,
    partition: u32,
    table_partition: u32,
) -> Vec<u8> {
    let mut k = step(pipe, b'g', step_name, partition);
    k.extend_from_slice(&table_partition.to_be_bytes());
    k
}

/// Appends a length-prefixed key.
pub fn push_key(k: &mut Vec<u8>, key: &[u8]) {
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key);
}

/// An aggregate's accumulator of one key and window.
pub fn agg(pipe: &str, step_name: &str, partition: u32, key: &[u8], start: i64) -> Vec<u8> {
    let mut k = step(pipe, b'a', step_name, partition);
    push_key(&mut k, key);
    k.extend_from_slice(&ord_i64(start));
    k
}

/// The close index entry of one window: its close time (`end`), then the
/// key's bytes and the window start as Kafka Streams serializes a windowed
/// key (big-endian), then the key's length. Entries closing together sort
/// as Kafka Streams' suppression buffer evicts them: by those bytes.
pub fn agg_close(
    pipe: &str,
    step_name: &str,
    partition: u32,
    end: i64,
    key: &[u8],
    start: i64,
) -> Vec<u8> {
    window_index(step(pipe, b'c', step_name, partition), end, key, start)
}

/// The purge index entry of a closed session kept for merging (see
/// `accumulate::close_due`): when to forget it (`at`), then its key and
/// start as in [`agg_close`]; its value is the session's end.
pub fn agg_purge(
    pipe: &str,
    step_name: &str,
    partition: u32,
    at: i64,
    key: &[u8],
    start: i64,
) -> Vec<u8> {
    window_index(step(pipe, b'q', step_name, partition), at, key, start)
}

/// An index entry after `prefix`: a time, a window's key and start, the
/// key's length (read back by [`take_close`]).
fn window_index(mut k: Vec<u8>, at: i64, key: &[u8], start: i64) -> Vec<u8> {
    k.extend_from_slice(&ord_i64(at));
    k.extend_from_slice(key);
    k.extend_from_slice(&start.to_be_bytes());
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k
}

/// Reads a close index entry after its prefix: close time, key, start.
pub fn take_close(b: &[u8]) -> Option<(i64, &[u8], i64)> {
    let (close, rest) = take_i64(b)?;
    let len_at = rest.len().checked_sub(4)?;
    let len = u32::from_be_bytes(rest.get(len_at..)?.try_into().ok()?) as usize;
    let key = rest.get(..len)?;
    let start = i64::from_be_bytes(rest.get(len..len_at)?.try_into().ok()?);
    Some((close, key, start))
}

/// A processor's state store entry.
pub fn store(pipe: &str, step_name: &str, store_name: &str, partition: u32, key: &[u8]) -> Vec<u8> {
    let mut k = store_prefix(pipe, step_name, store_name, partition);
    k.extend_from_slice(key);
    k
}

/// The prefix of a processor's state store in one partition.
pub fn store_prefix(pipe: &str, step_name: &str, store_name: &str, partition: u32) -> Vec<u8> {
    let mut k = pipeline(pipe);
    k.push(b's');
    k.extend_from_slice(step_name.as_bytes());
    k.push(0);
    k.extend_from_slice(store_name.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The prefix of a processor step's timers on one clock (0 event time, 1
/// wall clock) in one partition; then `time:i64 tag`.
pub fn timers(pipe: &str, step_name: &str, partition: u32, clock: u8) -> Vec<u8> {
    let mut k = step(pipe, b'w', step_name, partition);
    k.push(clock);
    k
}

/// A timer's entry.
pub fn timer(
    pipe: &str,
    step_name: &str,
    partition: u32,
    clock: u8,
    time: i64,
    tag: &[u8],
) -> Vec<u8> {
    let mut k = timers(pipe, step_name, partition, clock);
    k.extend_from_slice(&ord_i64(time));
    k.extend_from_slice(tag);
    k
}

/// Where a timer's time is kept by tag (to move or cancel it).
pub fn timer_index(pipe: &str, step_name: &str, partition: u32, clock: u8, tag: &[u8]) -> Vec<u8> {
    let mut k = step(pipe, b'x', step_name, partition);
    k.push(clock);
    k.extend_from_slice(tag);
    k
}

/// Reads a length-prefixed key at the start of `b`: the key and what follows.
pub fn take_key(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let key = b.get(4..4 + len)?;
    Some((key, &b[4 + len..]))
}

/// Reads an ordered `i64` at the start of `b`.
pub fn take_i64(b: &[u8]) -> Option<(i64, &[u8])> {
    let head = b.get(..8)?;
    Some((from_ord_i64(head), &b[8..]))
}

/// An aggregate's stored value: the window end, the largest timestamp of
/// the window's records (its results' timestamp, as Kafka Streams keeps it
/// with the aggregate), then the accumulator.
pub fn agg_entry(end: i64, ts: i64, acc: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + acc.len());
    v.extend_from_slice(&end.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(acc);
    v
}

/// Splits an aggregate's stored value into its window end and accumulator.
pub fn agg_value(v: &[u8]) -> Option<(i64, &[u8])> {
    agg_value_ts(v).map(|(end, _, acc)| (end, acc))
}

/// Splits an aggregate's stored value into its window end, the largest
/// timestamp of its records and its accumulator.
pub fn agg_value_ts(v: &[u8]) -> Option<(i64, i64, &[u8])> {
    let end = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let ts = i64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
    Some((end, ts, &v[16..]))
}

/// The key just after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// The changelog a state key belongs to on Kafka (its name without the
/// application id in front and `-changelog` behind) and the partition it
/// goes to: `STEP` for a step's aggregates, joins and timers, `STEP-STORE`
/// for a processor's store, `segment-N` for a segment's stream time.
/// `None` for keys that are not state (positions).
pub fn changelog(key: &[u8]) -> Option<(String, u32)> {
    let rest = key.strip_prefix(b"K")?;
    let end = rest.iter().position(|&b| b == 0)?;
    let rest = &rest[end + 1..];
    let (&kind, rest) = rest.split_first()?;
    let u32_at =
        |b: &[u8]| -> Option<u32> { Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?)) };
    let name = |b: &[u8]| -> Option<(String, usize)> {
        let end = b.iter().position(|&c| c == 0)?;
        Some((String::from_utf8_lossy(&b[..end]).into_owned(), end + 1))
    };
    match kind {
        b't' => {
            let seg = u32_at(rest)?;
            let p = u32_at(rest.get(4..)?)?;
            Some((format!("segment-{seg}"), p))
        }
        b'a' | b'c' | b'q' | b'e' | b'j' | b'w' | b'x' | b'f' | b'g' | b'm' | b'n' | b'u'
        | b'h' => {
            let (step, at) = name(rest)?;
            Some((step, u32_at(rest.get(at..)?)?))
        }
        b's' => {
            let (step, at) = name(rest)?;
            let (store, at2) = name(rest.get(at..)?)?;
            Some((format!("{step}-{store}"), u32_at(rest.get(at + at2..)?)?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_key_names_its_changelog_and_partition() {
        assert_eq!(
            changelog(&stream_time("wc", 1, 7)),
            Some(("segment-1".to_string(), 7))
        );
        assert_eq!(
            changelog(&agg("wc", "count", 3, b"word", 0)),
            Some(("count".to_string(), 3))
        );
        assert_eq!(
            changelog(&agg_close("wc", "count", 3, 10, b"w", 0)),
            Some(("count".to_string(), 3))
        );
        assert_eq!(
            changelog(&agg_purge("wc", "count", 3, 10, b"w", 0)),
            Some(("count".to_string(), 3))
        );
        assert_eq!(
            changelog(&step_time("wc", "count", 3)),
            Some(("count".to_string(), 3))
        );
        assert_eq!(
            changelog(&global_position("wc", "enrich", 3, 7)),
            Some(("enrich".to_string(), 3))
        );
        assert_eq!(
            changelog(&step("wc", b'h', "active", 3)),
            Some(("active".to_string(), 3))
        );
        assert_eq!(
            changelog(&step("wc", b'n', "by-region", 3)),
            Some(("by-region".to_string(), 3))
        );
        assert_eq!(
            changelog(&step("wc", b'u', "by-region", 3)),
            Some(("by-region".to_string(), 3))
        );
        // A position is not state: it goes with the consumer group.
        assert_eq!(changelog(&crate::log::position_key("wc", "lines", 3)), None);
        // A purge index entry reads as a close index entry does.
        let k = agg_purge("wc", "count", 3, 20_001, b"word", 5_000);
        assert_eq!(
            take_close(&k[step("wc", b'q', "count", 3).len()..]),
            Some((20_001, &b"word"[..], 5_000))
        );
        let prefix = step("wc", b'c', "count", 3);
        let k = agg_close("wc", "count", 3, 10_000, b"word", 5_000);
        assert_eq!(
            take_close(&k[prefix.len()..]),
            Some((10_000, &b"word"[..], 5_000))
        );
        // Closing together: by the key's bytes then the start, not by length.
        assert!(
            agg_close("wc", "count", 3, 10, b"aa", 0) < agg_close("wc", "count", 3, 10, b"b", 0)
        );
        assert_eq!(
            changelog(&timer("p", "burst", 2, 0, 5, b"t")),
            Some(("burst".to_string(), 2))
        );
        assert_eq!(
            changelog(&store("p", "burst", "counts", 4, b"k")),
            Some(("burst-counts".to_string(), 4))
        );
        assert_eq!(
            changelog(&state_format("wc", "count", 5)),
            Some(("count".to_string(), 5))
        );
        assert_eq!(changelog(b"Kp\0o..."), None);
        assert_eq!(changelog(b"C-checkpoint"), None);
    }

    #[test]
    fn ordered_i64_sorts_numerically() {
        let vals = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for w in vals.windows(2) {
            assert!(ord_i64(w[0]) < ord_i64(w[1]));
        }
        for v in vals {
            assert_eq!(from_ord_i64(&ord_i64(v)), v);
        }
    }
}
