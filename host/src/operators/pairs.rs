//! The call into a joiner shared by the join operators: pairs of values in,
//! one joined value (or none: a result without a value, as a Kafka Streams
//! `ValueJoiner` returning `null` forwards one) per pair out; a pair whose
//! call fails goes to the dead letters as the record that made it.

use super::{Ctx, Item};
use crate::codec;
use crate::pipeline::config::Step as StepConfig;
use crate::record::{Failure, Packed};
use crate::runtime::{Call, Guest};

/// Two values that meet, and the record that made them meet.
pub(super) struct Pair {
    /// The join key.
    pub key: Option<Vec<u8>>,
    /// The result's timestamp.
    pub ts: i64,
    /// The left value (none: no match on the left).
    pub left: Option<Vec<u8>>,
    /// The right value (none: no match on the right).
    pub right: Option<Vec<u8>>,
    /// The result's seq.
    pub seq: u64,
    /// The record that made them meet (its offset and headers go on; a
    /// dead letter if the call fails on it).
    pub rec: Packed,
    /// The record whose headers the result carries instead of `rec`'s (a
    /// held stream-join record emitted by a later one).
    pub headers_of: Option<Packed>,
}

/// Calls the joiner for `pairs`; returns the joined records in order (a
/// pair the joiner gave no value for is a record without one; a pair that
/// went to the dead letters is none).
pub(super) fn join(
    guest: &mut dyn Guest,
    cfg: &StepConfig,
    cx: &mut Ctx<'_>,
    pairs: Vec<Pair>,
) -> anyhow::Result<Vec<Item>> {
    let values = joined(guest, cfg, cx, &pairs)?;
    Ok(pairs
        .into_iter()
        .zip(values)
        .filter_map(|(p, value)| {
            let value = value?;
            Some(Item {
                seq: p.seq,
                rec: Packed::new(
                    p.rec.offset(),
                    p.ts,
                    p.key.as_deref(),
                    value.as_deref(),
                    p.headers_of.as_ref().unwrap_or(&p.rec).headers(),
                ),
            })
        })
        .collect())
}

/// What the joiner made of one pair: its value (none: the joiner gave
/// nothing, a result without a value), or none when the call failed on it
/// (its record is then a dead letter).
pub(super) type Joined = Option<Option<Vec<u8>>>;

/// Calls the joiner for `pairs`: what it made of each, in order.
pub(super) fn joined(
    guest: &mut dyn Guest,
    cfg: &StepConfig,
    cx: &mut Ctx<'_>,
    pairs: &[Pair],
) -> anyhow::Result<Vec<Joined>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = (pairs.len() as u32).to_le_bytes().to_vec();
    for p in pairs {
        codec::put_opt(&mut buf, p.key.as_deref());
        buf.extend_from_slice(&p.ts.to_le_bytes());
        codec::put_opt(&mut buf, p.left.as_deref());
        codec::put_opt(&mut buf, p.right.as_deref());
    }
    let (result, _) = guest.call(Call::Export("join", &buf), None)?;
    let failure = match result {
        Ok(out) => match super::values(&out, pairs.len()) {
            Ok(results) => {
                let mut next = Vec::with_capacity(pairs.len());
                for (p, res) in pairs.iter().zip(results) {
                    next.push(match res {
                        Some(Ok(value)) => Some(value),
                        None => Some(None),
                        Some(Err(m)) => {
                            cx.out.dead_packed(&cfg.name, &p.rec, Failure::Rejected(m));
                            None
                        }
                    });
                }
                return Ok(next);
            }
            Err(e) => e.to_string(),
        },
        Err(trap) => trap,
    };
    if let [p] = pairs {
        cx.out
            .dead_packed(&cfg.name, &p.rec, Failure::Trapped(failure));
        return Ok(vec![None]);
    }
    let mut next = Vec::with_capacity(pairs.len());
    for p in pairs.chunks(1) {
        next.extend(joined(guest, cfg, cx, p)?);
    }
    Ok(next)
}
