//! The stream side's grace of a stream-table join over a versioned table
//! (`grace`, Kafka Streams' `Joined.withGracePeriod`, KIP-923): stream
//! records wait in a buffer until the buffer's time (the newest timestamp
//! of a record put into it) is `grace` past theirs, so that table records
//! that arrive late but are older than them are there when they join.
//!
//! - A stream record older than the buffer's time minus `grace` is late: it
//!   joins at once (with the table's version at its timestamp).
//! - Any other goes into the buffer; then every buffered record at or
//!   before the buffer's time minus `grace` leaves it and joins, ordered by
//!   timestamp, then by key bytes and arrival (as Kafka Streams' time-ordered
//!   buffer orders them).
//! - What is still buffered when the input ends waits for later records.
//!
//! Layout, beside the join's other keys: `j b TIME KEY SEQ` a buffered
//! record (packed; the key's raw bytes, so that keys order as Kafka
//! Streams' do), `j B` the buffer's time, the next sequence number and a
//! floor under the buffered records' times.

use crate::operators::Ctx;
use crate::pipeline::config::Step as StepConfig;
use crate::pipeline::keys;
use crate::record::Packed;

fn prefix(cx: &Ctx<'_>, cfg: &StepConfig, side: u8) -> Vec<u8> {
    let mut k = keys::step(cx.pipeline, b'j', &cfg.name, cx.partition);
    k.push(side);
    k
}

/// The buffer's time, its next sequence number, and a floor under every
/// buffered record's time (as Kafka Streams' buffer keeps its minimum), so
/// that the buffer is scanned only when something may be due.
fn meta(cx: &Ctx<'_>, cfg: &StepConfig) -> anyhow::Result<(Option<i64>, u32, i64)> {
    Ok(match cx.get(&prefix(cx, cfg, b'B'))? {
        Some(b) if b.len() == 12 || b.len() == 20 => {
            let mut seq = [0u8; 4];
            seq.copy_from_slice(&b[8..12]);
            let floor = b.get(12..20).map_or(i64::MIN, keys::from_ord_i64);
            (Some(keys::from_ord_i64(&b)), u32::from_be_bytes(seq), floor)
        }
        _ => (None, 0, i64::MAX),
    })
}

/// Puts stream record `rec` (with key `k` and a value) into the buffer.
/// Returns `None` when it is late (it joins at once), or the records that
/// leave the buffer now, in the order they join (it among them when its
/// time has come).
pub(super) fn put(
    cx: &mut Ctx<'_>,
    cfg: &StepConfig,
    k: &[u8],
    rec: &Packed,
) -> anyhow::Result<Option<Vec<Packed>>> {
    let ts = rec.timestamp();
    let (time, seq, floor) = meta(cx, cfg)?;
    if time.is_some_and(|t| t.saturating_sub(cfg.grace) > ts) {
        return Ok(None);
    }
    let now = time.map_or(ts, |t| t.max(ts));
    let from = prefix(cx, cfg, b'b');
    let mut bk = from.clone();
    bk.extend_from_slice(&keys::ord_i64(ts));
    bk.extend_from_slice(k);
    bk.extend_from_slice(&seq.to_be_bytes());
    cx.txn.put(bk, rec.bytes().to_vec());

    // Everything at or before `now - grace` leaves.
    let due = now.saturating_sub(cfg.grace);
    let mut floor = floor.min(ts);
    let mut out = Vec::new();
    if floor <= due {
        let mut to = from.clone();
        to.extend_from_slice(&keys::ord_i64(due.saturating_add(1)));
        for (key, bytes) in cx.range(&from, &to, usize::MAX)? {
            cx.txn.delete(key);
            let rec = Packed::parse(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "step {}: a record in the join's buffer is damaged ({e}); reset the pipeline",
                    cfg.name
                )
            })?;
            out.push(rec);
        }
        floor = due.saturating_add(1);
    }
    let mut m = keys::ord_i64(now).to_vec();
    m.extend_from_slice(&seq.wrapping_add(1).to_be_bytes());
    m.extend_from_slice(&keys::ord_i64(floor));
    cx.txn.put(prefix(cx, cfg, b'B'), m);
    Ok(Some(out))
}
