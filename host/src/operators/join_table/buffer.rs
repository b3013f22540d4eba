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
//! Streams' do), `j B` the buffer's time and the next sequence number.

use crate::operators::Ctx;
use crate::pipeline::config::Step as StepConfig;
use crate::pipeline::keys;
use crate::record::Packed;

fn prefix(cx: &Ctx<'_>, cfg: &StepConfig, side: u8) -> Vec<u8> {
    let mut k = keys::step(cx.pipeline, b'j', &cfg.name, cx.partition);
    k.push(side);
    k
}

/// The buffer's time and next sequence number.
fn meta(cx: &Ctx<'_>, cfg: &StepConfig) -> anyhow::Result<(Option<i64>, u32)> {
    Ok(match cx.get(&prefix(cx, cfg, b'B'))? {
        Some(b) if b.len() == 12 => {
            let mut seq = [0u8; 4];
            seq.copy_from_slice(&b[8..12]);
            (Some(keys::from_ord_i64(&b)), u32::from_be_bytes(seq))
        }
        _ => (None, 0),
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
    let (time, seq) = meta(cx, cfg)?;
    if time.is_some_and(|t| t.saturating_sub(cfg.grace) > ts) {
        return Ok(None);
    }
    let now = time.map_or(ts, |t| t.max(ts));
    let mut bk = prefix(cx, cfg, b'b');
    bk.extend_from_slice(&keys::ord_i64(ts));
    bk.extend_from_slice(k);
    bk.extend_from_slice(&seq.to_be_bytes());
    cx.txn.put(bk, rec.bytes().to_vec());
    let mut m = keys::ord_i64(now).to_vec();
    m.extend_from_slice(&seq.wrapping_add(1).to_be_bytes());
    cx.txn.put(prefix(cx, cfg, b'B'), m);

    // Everything at or before `now - grace` leaves.
    let from = prefix(cx, cfg, b'b');
    let mut to = from.clone();
    to.extend_from_slice(&keys::ord_i64(
        now.saturating_sub(cfg.grace).saturating_add(1),
    ));
    let due = cx.range(&from, &to, usize::MAX)?;
    let mut out = Vec::with_capacity(due.len());
    for (key, bytes) in due {
        cx.txn.delete(key);
        let rec = Packed::parse(bytes).map_err(|e| {
            anyhow::anyhow!(
                "step {}: a record in the join's buffer is damaged ({e}); reset the pipeline",
                cfg.name
            )
        })?;
        out.push(rec);
    }
    Ok(Some(out))
}
