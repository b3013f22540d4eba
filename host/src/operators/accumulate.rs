//! Calls into an aggregator shared by the windowed and the session
//! aggregate: `add` records to accumulators and `present` them as outputs,
//! each with the one failure rule (a batch that fails is retried item by
//! item; what fails alone is a dead letter).

use super::{Ctx, Item};
use crate::codec::{self, Entry};
use crate::pipeline::config::Step as StepConfig;
use crate::pipeline::keys;
use crate::record::{Failure, Packed, Record};
use crate::runtime::{Call, Guest};

/// What `add` made of a batch: the new accumulator of every group and the
/// records it rejected (index into the records, reason).
pub(super) type Added = (Vec<Vec<u8>>, Vec<(usize, String)>);

/// Calls `add` once for `records` and groups of (accumulator so far, member
/// record indexes). `Ok(Err(reason))`: the call failed as a whole (a trap or
/// a malformed answer).
pub(super) fn call_add(
    guest: &mut dyn Guest,
    records: &[&Packed],
    groups: &[(Option<&[u8]>, &[usize])],
) -> anyhow::Result<Result<Added, String>> {
    let mut buf = codec::pack_batch(records.iter().map(|r| r.bytes()));
    buf.extend_from_slice(&(groups.len() as u32).to_le_bytes());
    for (acc, members) in groups {
        codec::put_opt(&mut buf, *acc);
        buf.extend_from_slice(&(members.len() as u32).to_le_bytes());
        for m in *members {
            buf.extend_from_slice(&(*m as u32).to_le_bytes());
        }
    }
    let (result, _) = guest.call(Call::Export("add", &buf), None)?;
    let out = match result {
        Ok(out) => out,
        Err(trap) => return Ok(Err(trap)),
    };
    let mut accs: Vec<Option<Vec<u8>>> = vec![None; groups.len()];
    let mut rejected = Vec::new();
    let mut bad = None;
    let parsed = codec::read_results(&out, records.len().max(groups.len()), |idx, e| match e {
        Entry::Accumulator(a) => match accs.get_mut(idx as usize) {
            Some(slot) => *slot = Some(a.to_vec()),
            None => bad = Some(idx),
        },
        Entry::Rejected(m) => rejected.push((idx as usize, m.to_string())),
        _ => bad = Some(idx),
    });
    if let Err(e) = parsed {
        return Ok(Err(e.to_string()));
    }
    if bad.is_some() || accs.iter().any(Option::is_none) {
        return Ok(Err(
            "the guest's add returned an entry of the wrong kind or missed a group".into(),
        ));
    }
    Ok(Ok((accs.into_iter().flatten().collect(), rejected)))
}

/// One accumulator to present.
pub(super) struct Presentable {
    /// The group's key.
    pub key: Vec<u8>,
    /// The window (0, 0 for an unwindowed aggregate).
    pub start: i64,
    /// Its end.
    pub end: i64,
    /// The accumulator.
    pub acc: Vec<u8>,
    /// The seq and timestamp the output gets.
    pub seq: u64,
    /// Its timestamp.
    pub ts: i64,
    /// The record that caused it (dead-lettered if presenting fails), if any.
    pub input: Option<Packed>,
    /// The headers the output carries before the window's: those of the
    /// record that last updated it, as Kafka Streams forwards a tumbling,
    /// hopping or unwindowed aggregate's update with its input record's
    /// headers (and its suppression buffer keeps them to the close); none
    /// for sessions, whose updates Kafka Streams forwards as new records.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The headers an update carries (see [`Presentable::headers`]): the
/// record's, unless the step has session windows.
pub(super) fn carried(cfg: &StepConfig, rec: Option<&Packed>) -> Vec<(String, Vec<u8>)> {
    match (cfg.window, rec) {
        (Some(crate::pipeline::config::Window::Session { .. }), _) | (_, None) => Vec::new(),
        (_, Some(r)) => r
            .headers()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect(),
    }
}

/// A record's headers in the packed encoding (empty when it has none), kept
/// in a window's close index so that `emit = "close"` emits them.
pub(super) fn pack_headers<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let headers: Vec<_> = headers.collect();
    if headers.is_empty() {
        return Vec::new();
    }
    let mut buf = (headers.len() as u32).to_le_bytes().to_vec();
    for (name, value) in headers {
        codec::put_bytes(&mut buf, name.as_bytes());
        codec::put_bytes(&mut buf, value);
    }
    buf
}

/// Reads what [`pack_headers`] wrote (an empty value: no headers, as an
/// index written before headers were kept).
fn unpack_headers(b: &[u8]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = codec::Reader::new(b);
    let n = r.u32("header count")?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let name = r.string("header name")?.to_string();
        let value = r.bytes("header value")?.to_vec();
        out.push((name, value));
    }
    Ok(out)
}

fn window_headers(windowed: bool, start: i64, end: i64) -> Vec<(String, Vec<u8>)> {
    if windowed {
        vec![
            ("weir.window.start".into(), start.to_string().into_bytes()),
            ("weir.window.end".into(), end.to_string().into_bytes()),
        ]
    } else {
        Vec::new()
    }
}

/// Presents accumulators as output records: key, the guest's value, the
/// window in the headers `weir.window.start` / `weir.window.end`.
pub(super) fn present(
    guest: &mut dyn Guest,
    cfg: &StepConfig,
    cx: &mut Ctx<'_>,
    items: Vec<Presentable>,
) -> anyhow::Result<Vec<Item>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let windowed = cfg.window.is_some();
    let mut buf = (items.len() as u32).to_le_bytes().to_vec();
    for p in &items {
        codec::put_opt(&mut buf, Some(&p.key));
        let (s, e) = if windowed { (p.start, p.end) } else { (0, 0) };
        buf.extend_from_slice(&s.to_le_bytes());
        buf.extend_from_slice(&e.to_le_bytes());
        codec::put_bytes(&mut buf, &p.acc);
    }
    let (result, _) = guest.call(Call::Export("present", &buf), None)?;
    let failure = match result {
        Ok(out) => match super::values(&out, items.len()) {
            Ok(values) => {
                let mut out = Vec::new();
                for (p, v) in items.into_iter().zip(values) {
                    match v {
                        Some(Ok(Some(value))) => {
                            let mut headers = p.headers.clone();
                            headers.extend(window_headers(windowed, p.start, p.end));
                            out.push(Item {
                                seq: p.seq,
                                rec: Packed::new(
                                    0,
                                    p.ts,
                                    Some(&p.key),
                                    Some(&value),
                                    headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
                                ),
                            })
                        }
                        Some(Ok(None)) | None => {}
                        Some(Err(m)) => dead(cfg, cx, p, Failure::Rejected(m)),
                    }
                }
                return Ok(out);
            }
            Err(e) => e.to_string(),
        },
        Err(trap) => trap,
    };
    if items.len() == 1 {
        if let Some(p) = items.into_iter().next() {
            dead(cfg, cx, p, Failure::Trapped(format!("present: {failure}")));
        }
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for p in items {
        out.extend(present(guest, cfg, cx, vec![p])?);
    }
    Ok(out)
}

/// A result that could not be presented goes to the dead letters: the
/// record that caused it, or (for a window that closed) a record with the
/// key, the window in the headers and the accumulator as its value.
fn dead(cfg: &StepConfig, cx: &mut Ctx<'_>, p: Presentable, failure: Failure) {
    let windowed = cfg.window.is_some();
    let record = p.input.map(|r| r.to_record()).unwrap_or_else(|| Record {
        offset: 0,
        timestamp: p.ts,
        key: Some(p.key),
        value: Some(p.acc),
        headers: window_headers(windowed, p.start, p.end),
    });
    cx.out.dead(&cfg.name, record, failure);
}

/// A windowed aggregate's own stream time: the largest timestamp of the
/// records that reached it (not the task's, which other steps move too), as
/// Kafka Streams keeps one per windowed processor.
pub(super) fn own_time(cx: &Ctx<'_>, cfg: &StepConfig) -> anyhow::Result<i64> {
    use anyhow::Context;
    let k = keys::step_time(cx.pipeline, &cfg.name, cx.partition);
    match cx.get(&k)? {
        Some(b) => Ok(keys::from_ord_i64(b.get(..8).with_context(|| {
            format!("step {}: its stored stream time is corrupt", cfg.name)
        })?)),
        None => Ok(i64::MIN),
    }
}

/// Keeps a windowed aggregate's own stream time, when it moved.
pub(super) fn set_own_time(cx: &mut Ctx<'_>, cfg: &StepConfig, before: i64, now: i64) {
    if now != before {
        let k = keys::step_time(cx.pipeline, &cfg.name, cx.partition);
        cx.txn.put(k, keys::ord_i64(now).to_vec());
    }
}

/// Until when a record may still merge into the session of `key` that ends
/// at `end` (see [`forget_expired`]).
pub(super) type Reachable<'a> = &'a dyn Fn(&Ctx<'_>, &[u8], i64) -> anyhow::Result<Option<i64>>;

/// Emits and forgets the windows (or sessions) whose close time (the window
/// end plus `slack`, as kept in the close index) plus grace the aggregate's
/// stream time `now` has reached (`emit = "close"`).
///
/// `keep_until(close, start)` may keep a closed window's accumulator in the
/// state until a later time, with an entry in the purge index for
/// [`forget_expired`]: a window whose retention outlasts its close (it
/// stays queryable, as in a Kafka Streams window store), and sessions with
/// the state cache on, which a later record may still merge into (Kafka
/// Streams' record cache still holds a session its suppression has emitted,
/// and a record within the gap merges into it and emits the merged session
/// when it closes in turn). `None`: forgotten as it closes.
pub(super) fn close_due(
    guest: &mut dyn Guest,
    cfg: &StepConfig,
    cx: &mut Ctx<'_>,
    slack: i64,
    now: i64,
    keep_until: impl Fn(i64, i64) -> Option<i64>,
) -> anyhow::Result<Vec<Item>> {
    use anyhow::Context;

    // Entries whose time is before `due_at` are due.
    let due_at = now.saturating_sub(cfg.grace).saturating_add(1);
    let due = keys::ord_i64(due_at);
    let prefix = keys::step(cx.pipeline, b'c', &cfg.name, cx.partition);
    let mut end = prefix.clone();
    end.extend_from_slice(&due);
    let closing = cx.range(&prefix, &end, usize::MAX)?;
    let mut items = Vec::new();
    for (k, index) in &closing {
        let (close, key, start) = keys::take_close(&k[prefix.len()..])
            .map(|(close, key, start)| (close, key.to_vec(), start))
            .context("a window index key is corrupt")?;
        let agg = keys::agg(cx.pipeline, &cfg.name, cx.partition, &key, start);
        if let Some(v) = cx.get(&agg)? {
            let (wend, ts, acc) =
                keys::agg_value_ts(&v).context("a stored accumulator is corrupt")?;
            let wend = if slack == 0 { close } else { wend };
            if let Some(at) = keep_until(close, start) {
                let purge = keys::agg_purge(cx.pipeline, &cfg.name, cx.partition, at, &key, start);
                cx.txn.put(purge, wend.to_be_bytes().to_vec());
            } else {
                cx.txn.delete(agg);
            }
            // As Kafka Streams' suppression emits the last update it
            // buffered: stamped with the largest timestamp of the window's
            // records (a session's: its end).
            items.push(Presentable {
                key: key.clone(),
                start,
                end: wend,
                acc: acc.to_vec(),
                seq: 0,
                ts,
                input: None,
                headers: unpack_headers(index)
                    .context("a window index entry's headers are corrupt")?,
            });
        }
    }
    for (k, _) in closing {
        cx.txn.delete(k);
    }
    present(guest, cfg, cx, items)
}

/// Forgets the windows (or sessions) whose time to leave the state has
/// come: purge index entries at or before `time` (for sessions the stream
/// time; for windows the start of the last window the stream time is in,
/// as a Kafka Streams window store measures retention), unless a record
/// merged into one since (its end moved: the merged session has an entry
/// of its own).
///
/// `reachable(cx, key, end)` may keep one longer: the time until which a
/// record may still merge into it (sessions with the state cache on); its
/// purge entry then moves there, to be looked at again.
pub(super) fn forget_expired(
    cfg: &StepConfig,
    cx: &mut Ctx<'_>,
    time: i64,
    reachable: Option<Reachable<'_>>,
) -> anyhow::Result<()> {
    use anyhow::Context;

    let prefix = keys::step(cx.pipeline, b'q', &cfg.name, cx.partition);
    let mut end = prefix.clone();
    end.extend_from_slice(&keys::ord_i64(time.saturating_add(1)));
    for (k, v) in cx.range(&prefix, &end, usize::MAX)? {
        let (_, key, start) =
            keys::take_close(&k[prefix.len()..]).context("a purge index key is corrupt")?;
        let kept_end = v
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_be_bytes)
            .context("a purge index entry is corrupt")?;
        let agg = keys::agg(cx.pipeline, &cfg.name, cx.partition, key, start);
        if let Some(stored) = cx.get(&agg)? {
            let (e, _) = keys::agg_value(&stored).context("a stored accumulator is corrupt")?;
            if e == kept_end {
                let until = match reachable {
                    Some(f) => f(cx, key, e)?,
                    None => None,
                };
                match until.filter(|u| *u >= time) {
                    Some(u) => {
                        let at = u.saturating_add(1);
                        let later =
                            keys::agg_purge(cx.pipeline, &cfg.name, cx.partition, at, key, start);
                        cx.txn.put(later, v.clone());
                    }
                    None => cx.txn.delete(agg),
                }
            }
        }
        cx.txn.delete(k);
    }
    Ok(())
}
