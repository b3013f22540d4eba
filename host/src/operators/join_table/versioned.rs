//! A versioned table for a stream-table join (its right side) or a
//! table-table join (each side), as Kafka Streams' versioned key-value store
//! keeps one (KIP-889): each key's newest value and its timestamp, and its
//! older values for `history` behind the newest timestamp of any record of
//! the side (its stream time, `T`).
//!
//! - A table record older than `T - history` is dropped; any other is a
//!   version from its timestamp on (a tombstone too): the newest, or, out
//!   of order, an older one slotted into the history.
//! - A stream record at `t` meets the version valid at `t` (the one with
//!   the largest timestamp not after `t`), none if that is a tombstone or
//!   there is none. Past the history (`t < T - history`) only the newest
//!   value is returned, when it is not after `t`, as Kafka Streams does.
//!
//! Layout of the right side, beside the join's other keys: `j r KEY` the
//! newest value (absent when it is a tombstone), `j R KEY` its timestamp,
//! `j h KEY TIME` an older version (1 and the value, or 0 for a tombstone),
//! and the step's time key holding `T`; of the left side (table-table),
//! `j l`, `j L`, `j g` and `j T`. A key's versions that no read can reach
//! any more (all but the last before `T - history`) are deleted when the key
//! is next written.

use crate::operators::Ctx;
use crate::pipeline::config::Step as StepConfig;
use crate::pipeline::keys;

/// One side's versioned table: the kinds of its keys.
#[derive(Clone, Copy)]
pub(super) struct Side {
    value: u8,
    ts: u8,
    versions: u8,
    /// Its time's key: the step's time key (`None`), or `j` and this.
    time: Option<u8>,
}

/// The right side (the table of a stream-table join).
pub(super) const RIGHT: Side = Side {
    value: b'r',
    ts: b'R',
    versions: b'h',
    time: None,
};

/// The left side of a table-table join.
pub(super) const LEFT: Side = Side {
    value: b'l',
    ts: b'L',
    versions: b'g',
    time: Some(b'T'),
};

/// What a put did, as Kafka Streams' versioned store answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Put {
    /// The key's newest value now.
    Latest,
    /// An older version, slotted into the history.
    Older,
    /// Older than the history: dropped.
    Dropped,
}

fn key(cx: &Ctx<'_>, cfg: &StepConfig, kind: u8, k: &[u8]) -> Vec<u8> {
    let mut sk = keys::step(cx.pipeline, b'j', &cfg.name, cx.partition);
    sk.push(kind);
    keys::push_key(&mut sk, k);
    sk
}

fn version_key(cx: &Ctx<'_>, cfg: &StepConfig, side: Side, k: &[u8], ts: i64) -> Vec<u8> {
    let mut vk = key(cx, cfg, side.versions, k);
    vk.extend_from_slice(&keys::ord_i64(ts));
    vk
}

fn time_key(cx: &Ctx<'_>, cfg: &StepConfig, side: Side) -> Vec<u8> {
    match side.time {
        None => keys::step_time(cx.pipeline, &cfg.name, cx.partition),
        Some(kind) => {
            let mut k = keys::step(cx.pipeline, b'j', &cfg.name, cx.partition);
            k.push(kind);
            k
        }
    }
}

fn table_time(cx: &Ctx<'_>, cfg: &StepConfig, side: Side) -> anyhow::Result<Option<i64>> {
    Ok(cx
        .get(&time_key(cx, cfg, side))?
        .filter(|b| b.len() >= 8)
        .map(|b| keys::from_ord_i64(&b)))
}

fn newest(
    cx: &Ctx<'_>,
    cfg: &StepConfig,
    side: Side,
    k: &[u8],
) -> anyhow::Result<Option<(Option<Vec<u8>>, i64)>> {
    let Some(ts) = cx
        .get(&key(cx, cfg, side.ts, k))?
        .filter(|b| b.len() >= 8)
        .map(|b| keys::from_ord_i64(&b))
    else {
        return Ok(None);
    };
    Ok(Some((cx.get(&key(cx, cfg, side.value, k))?, ts)))
}

fn encode(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        Some(v) => {
            let mut b = Vec::with_capacity(v.len() + 1);
            b.push(1);
            b.extend_from_slice(v);
            b
        }
        None => vec![0],
    }
}

/// Puts a table record of `side`: `value` (none: a tombstone) of key `k`
/// at `ts`.
#[allow(clippy::too_many_arguments)]
pub(super) fn put(
    cx: &mut Ctx<'_>,
    cfg: &StepConfig,
    side: Side,
    k: &[u8],
    value: Option<&[u8]>,
    ts: i64,
    history: i64,
) -> anyhow::Result<Put> {
    let time = table_time(cx, cfg, side)?;
    if time.is_some_and(|t| ts < t.saturating_sub(history)) {
        tracing::debug!(step = %cfg.name, ts, "a table record older than the history dropped");
        return Ok(Put::Dropped);
    }
    let now = time.map_or(ts, |t| t.max(ts));
    if Some(now) != time {
        let tk = time_key(cx, cfg, side);
        cx.txn.put(tk, keys::ord_i64(now).to_vec());
    }
    let done = match newest(cx, cfg, side, k)? {
        Some((_, newest_ts)) if ts < newest_ts => {
            cx.txn.put(version_key(cx, cfg, side, k, ts), encode(value));
            Put::Older
        }
        old => {
            if let Some((old_value, old_ts)) = old
                && old_ts < ts
            {
                cx.txn.put(
                    version_key(cx, cfg, side, k, old_ts),
                    encode(old_value.as_deref()),
                );
            }
            let rk = key(cx, cfg, side.value, k);
            match value {
                Some(v) => cx.txn.put(rk, v.to_vec()),
                None => cx.txn.delete(rk),
            }
            cx.txn
                .put(key(cx, cfg, side.ts, k), keys::ord_i64(ts).to_vec());
            Put::Latest
        }
    };
    // Versions no read can reach: all but the last one before T - history.
    let cut = now.saturating_sub(history);
    let from = version_key(cx, cfg, side, k, i64::MIN);
    let to = version_key(cx, cfg, side, k, cut);
    let old = cx.range(&from, &to, usize::MAX)?;
    for (vk, _) in old.iter().rev().skip(1) {
        cx.txn.delete(vk.clone());
    }
    Ok(done)
}

/// The value of key `k` at `ts` (none: no row then).
pub(super) fn get(
    cx: &Ctx<'_>,
    cfg: &StepConfig,
    k: &[u8],
    ts: i64,
    history: i64,
) -> anyhow::Result<Option<Vec<u8>>> {
    let newest = newest(cx, cfg, RIGHT, k)?;
    if let Some((value, newest_ts)) = &newest
        && *newest_ts <= ts
    {
        return Ok(value.clone());
    }
    let expired = table_time(cx, cfg, RIGHT)?.is_some_and(|t| ts < t.saturating_sub(history));
    if expired {
        return Ok(None);
    }
    let from = version_key(cx, cfg, RIGHT, k, i64::MIN);
    let to = version_key(cx, cfg, RIGHT, k, ts.saturating_add(1));
    let found = cx.range(&from, &to, usize::MAX)?;
    Ok(match found.last().map(|(_, v)| v.split_first()) {
        Some(Some((1, v))) => Some(v.to_vec()),
        _ => None,
    })
}
