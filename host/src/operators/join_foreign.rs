//! Foreign-key table-table joins, in three parts (see
//! [`crate::pipeline::config::ForeignKey`]), as Kafka Streams runs
//! `KTable.join(other, foreignKeyExtractor, joiner)` and `leftJoin`:
//!
//! - [`Subscribe`], over the left table (keyed by `K`): keeps each key's
//!   foreign key and sends, keyed by the foreign key, a subscription with
//!   an instruction (Kafka Streams' four), a version (a count per partition,
//!   which only grows for a key) and the left value; an unsubscription to
//!   the old foreign key when it changed.
//! - [`Join`], over the subscriptions and the right table (co-partitioned):
//!   keeps the subscriptions by foreign key and the right values; a
//!   subscription gets a response with the right value it meets, a right
//!   update one per subscriber; the joiner makes each result (none, a
//!   tombstone, where Kafka Streams emits one).
//! - [`Resolve`], over the responses (keyed by `K`): drops a response older
//!   than one it passed on (sent by the old foreign key before it heard of
//!   the change), emits the rest.
//!
//! A result's timestamp is the larger of the two values' for a left update,
//! the right record's for a right update; its headers are those of the
//! record that made it.

use anyhow::Context;

use super::pairs::{Pair, joined};
use super::{Ctx, Item, Operator};
use crate::codec::{self, Reader};
use crate::pipeline::config::{JoinType, Step as StepConfig};
use crate::pipeline::keys;
use crate::record::{Failure, Packed};
use crate::runtime::Guest;

/// Kafka Streams' subscription instructions.
const DELETE_NO_PROPAGATE: u8 = 0;
const DELETE_AND_PROPAGATE: u8 = 1;
const PROPAGATE_NULL_IF_NO_FK_VAL: u8 = 2;
const PROPAGATE_ONLY_IF_FK_VAL: u8 = 3;
/// No subscription: a left record that sends none still has its place, so
/// that the middle part takes the right table's records in the order in
/// which the left ones came among them (by timestamp, as a task takes
/// records from its sources), not past it.
const PLACE_ONLY: u8 = 255;

/// A state key of a part: `kind` names the map, then `key` (length first).
fn state_key(cx: &Ctx<'_>, cfg: &StepConfig, kind: u8, key: &[u8]) -> Vec<u8> {
    let mut k = keys::step(cx.pipeline, b'j', &cfg.name, cx.partition);
    k.push(kind);
    keys::push_key(&mut k, key);
    k
}

/// The foreign key `pointer` finds in a left value: none when it is missing
/// or null; an error (the record's dead-letter reason) when the value is not
/// JSON.
pub(super) fn foreign_key_of(
    field: &str,
    pointer: &str,
    value: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    let v: serde_json::Value = serde_json::from_slice(value).map_err(|e| {
        format!("the value is not JSON, so `{field}` {pointer:?} cannot be read from it: {e}")
    })?;
    Ok(match v.pointer(pointer) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.as_bytes().to_vec()),
        Some(other) => Some(other.to_string().into_bytes()),
    })
}

/// The first part, over the left table.
pub struct Subscribe {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
}

impl Subscribe {
    /// The subscribing part of a foreign-key join (`guest` is the join's,
    /// which this part does not call).
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        Subscribe { cfg, guest }
    }
}

/// A subscription's value: instruction, version, the left key, the left
/// value (none: deleted).
fn subscription(instruction: u8, version: i64, key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let mut b = Vec::with_capacity(17 + key.len() + value.map_or(0, <[u8]>::len));
    b.push(instruction);
    b.extend_from_slice(&version.to_le_bytes());
    codec::put_bytes(&mut b, key);
    codec::put_opt(&mut b, value);
    b
}

impl Operator for Subscribe {
    fn config(&self) -> &StepConfig {
        &self.cfg
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        _side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        let cfg = &self.cfg;
        let version_key = state_key(cx, cfg, b'v', b"");
        let mut version = match cx.get(&version_key)? {
            Some(b) if b.len() == 8 => keys::from_ord_i64(&b),
            Some(_) => anyhow::bail!("step {}: the stored version is corrupt", cfg.name),
            None => 0,
        };
        let first = version;
        let mut next = Vec::new();
        for it in flow {
            cx.observe(it.rec.timestamp());
            let sent = next.len();
            self.subscribe(cx, &mut version, &it, &mut next)?;
            if next.len() == sent {
                next.push(Item {
                    seq: it.seq,
                    rec: Packed::new(
                        it.rec.offset(),
                        it.rec.timestamp(),
                        None,
                        Some(&[PLACE_ONLY]),
                        std::iter::empty(),
                    ),
                });
            }
        }
        if version != first {
            cx.txn.put(version_key, keys::ord_i64(version).to_vec());
        }
        Ok(next)
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}

impl Subscribe {
    /// Sends what a left record's change calls for to `next`.
    fn subscribe(
        &self,
        cx: &mut Ctx<'_>,
        version: &mut i64,
        it: &Item,
        next: &mut Vec<Item>,
    ) -> anyhow::Result<()> {
        let cfg = &self.cfg;
        let pointer = cfg.foreign_key.as_ref().map_or("", |f| f.pointer.as_str());
        // A table record without a key updates nothing (Kafka Streams
        // drops it).
        let Some(k) = it.rec.key() else {
            return Ok(());
        };
        // The new foreign key: none when the value was deleted, Some(None)
        // for a value without one.
        let new = match it.rec.value() {
            None => None,
            Some(v) => match foreign_key_of("foreign_key", pointer, v) {
                Ok(fk) => Some(fk),
                Err(why) => {
                    cx.out
                        .dead_packed(&cfg.name, &it.rec, Failure::Rejected(why));
                    return Ok(());
                }
            },
        };
        let fk_key = state_key(cx, cfg, b'k', k);
        // Stored: 1 and the foreign key, or 0 for a value without one.
        let old: Option<Option<Vec<u8>>> = cx.get(&fk_key)?.map(|b| match b.split_first() {
            Some((1, fk)) => Some(fk.to_vec()),
            _ => None,
        });
        match &new {
            Some(Some(fk)) => {
                let mut b = vec![1];
                b.extend_from_slice(fk);
                cx.txn.put(fk_key, b);
            }
            Some(None) => cx.txn.put(fk_key, vec![0]),
            None => cx.txn.delete(fk_key),
        }
        *version += 1;
        let version = *version;
        let value = it.rec.value();
        let mut send = |fk: Option<&[u8]>, instruction: u8| {
            next.push(Item {
                seq: it.seq,
                rec: Packed::new(
                    it.rec.offset(),
                    it.rec.timestamp(),
                    fk,
                    Some(&subscription(instruction, version, k, value)),
                    it.rec.headers(),
                ),
            });
        };
        let new_fk = new.as_ref().and_then(|f| f.as_deref());
        let old_fk = old.as_ref().and_then(|f| f.as_deref());
        // Kafka Streams' (4.4) instructions, to the letter.
        if cfg.join == JoinType::Left {
            if old.is_none() && new.is_none() {
                return Ok(());
            }
            if let Some(o) = old_fk
                && new_fk != Some(o)
            {
                send(Some(o), DELETE_NO_PROPAGATE);
            }
            // A value without a foreign key still gets its result (with
            // no right value), a deleted one its tombstone.
            send(new_fk, PROPAGATE_NULL_IF_NO_FK_VAL);
        } else if new.is_some() {
            match (new_fk, old_fk) {
                (None, Some(o)) => send(Some(o), DELETE_AND_PROPAGATE),
                (None, None) => {}
                (Some(n), Some(o)) if n != o => {
                    send(Some(o), DELETE_NO_PROPAGATE);
                    send(Some(n), PROPAGATE_NULL_IF_NO_FK_VAL);
                }
                (Some(n), _) => send(Some(n), PROPAGATE_ONLY_IF_FK_VAL),
            }
        } else if let Some(o) = old_fk {
            send(Some(o), DELETE_AND_PROPAGATE);
        }
        Ok(())
    }
}

/// The middle part, over the subscriptions and the right table.
pub struct Join {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
    /// The task has a state cache (see [`Operator::defer_updates`]).
    cached: bool,
}

impl Join {
    /// The joining part of a foreign-key join, running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        Join {
            cfg,
            guest,
            cached: false,
        }
    }
}

/// A response on its way: to pass on as it is (a tombstone), or the joiner's
/// result for a pair.
enum Response {
    Tombstone(Packed),
    Joined { pair: usize, version: i64 },
}

/// A response's value: the version, then the result (none: a tombstone).
fn response(version: i64, result: Option<&[u8]>) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + result.map_or(0, <[u8]>::len));
    b.extend_from_slice(&version.to_le_bytes());
    codec::put_opt(&mut b, result);
    b
}

impl Operator for Join {
    fn config(&self) -> &StepConfig {
        &self.cfg
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        let cfg = &self.cfg;
        let left_join = cfg.join == JoinType::Left;
        let mut all: Vec<(bool, Item)> = flow
            .into_iter()
            .map(|it| (true, it))
            .chain(side.into_iter().map(|it| (false, it)))
            .collect();
        all.sort_by_key(|(_, it)| it.seq);
        let mut pairs: Vec<Pair> = Vec::new();
        let mut out: Vec<(u64, Response)> = Vec::new();
        // Kafka Streams' result for a left value (none: deleted) meeting a
        // right one: a tombstone without a right value (inner) or a left
        // one; else the joiner's.
        let mut respond = |pairs: &mut Vec<Pair>,
                           seq: u64,
                           key: &[u8],
                           version: i64,
                           left: Option<Vec<u8>>,
                           right: Option<Vec<u8>>,
                           ts: i64,
                           made_by: Packed| {
            if right.is_none() && (!left_join || left.is_none()) {
                let rec = Packed::new(
                    made_by.offset(),
                    ts,
                    Some(key),
                    Some(&response(version, None)),
                    made_by.headers(),
                );
                out.push((seq, Response::Tombstone(rec)));
            } else {
                out.push((
                    seq,
                    Response::Joined {
                        pair: pairs.len(),
                        version,
                    },
                ));
                pairs.push(Pair {
                    key: Some(key.to_vec()),
                    ts,
                    left,
                    right,
                    seq,
                    rec: made_by,
                    headers_of: None,
                });
            }
        };
        for (is_sub, it) in all {
            cx.observe(it.rec.timestamp());
            if is_sub {
                let value = it.rec.value().context("a subscription without a value")?;
                if value == [PLACE_ONLY] {
                    continue;
                }
                let mut r = Reader::new(value);
                let parsed = (|| {
                    Ok::<_, codec::Malformed>((
                        r.u8("instruction")?,
                        r.i64("version")?,
                        r.bytes("key")?,
                        r.opt_bytes("value")?,
                    ))
                })();
                let (instruction, version, k, v) = parsed.map_err(|e| {
                    anyhow::anyhow!(
                        "step {}: a subscription at offset {} is corrupt: {e}",
                        cfg.name,
                        it.rec.offset()
                    )
                })?;
                let fk = it.rec.key();
                let right = match fk {
                    Some(fk) => {
                        let sub_key = {
                            let mut s = state_key(cx, cfg, b's', fk);
                            keys::push_key(&mut s, k);
                            s
                        };
                        if matches!(instruction, DELETE_NO_PROPAGATE | DELETE_AND_PROPAGATE) {
                            cx.txn.delete(sub_key);
                        } else {
                            let mut b = version.to_le_bytes().to_vec();
                            codec::put_opt(&mut b, v);
                            cx.txn.put(sub_key, b);
                        }
                        let value = cx.get(&state_key(cx, cfg, b'r', fk))?;
                        let ts = cx.get(&state_key(cx, cfg, b'R', fk))?;
                        value.map(|v| {
                            let ts = ts.filter(|b| b.len() == 8).map(|b| keys::from_ord_i64(&b));
                            (v, ts)
                        })
                    }
                    // A left join's value without a foreign key.
                    None if instruction == PROPAGATE_NULL_IF_NO_FK_VAL => None,
                    None => continue,
                };
                let ts = match &right {
                    Some((_, Some(rts))) => it.rec.timestamp().max(*rts),
                    _ => it.rec.timestamp(),
                };
                let left = v.map(<[u8]>::to_vec);
                let right_value = right.map(|(v, _)| v);
                // The left record, as the dead letter if the joiner fails.
                let made_by = Packed::new(
                    it.rec.offset(),
                    it.rec.timestamp(),
                    Some(k),
                    v,
                    it.rec.headers(),
                );
                // The right value each instruction answers with, if any.
                let right = match instruction {
                    // An inner join's left key deleted or left without a
                    // foreign key: its result goes (a tombstone).
                    DELETE_AND_PROPAGATE => Some(None),
                    PROPAGATE_NULL_IF_NO_FK_VAL => Some(right_value),
                    PROPAGATE_ONLY_IF_FK_VAL if right_value.is_some() => Some(right_value),
                    _ => None,
                };
                if let Some(right) = right {
                    respond(&mut pairs, it.seq, k, version, left, right, ts, made_by);
                }
            } else {
                // A right table update: every subscriber of its key gets a
                // response.
                let Some(fk) = it.rec.key() else { continue };
                let (rk, rts) = (state_key(cx, cfg, b'r', fk), state_key(cx, cfg, b'R', fk));
                let new = it.rec.value();
                // A cached Kafka Streams table forwards a change only when
                // its old or new value is there.
                if self.cached && new.is_none() && cx.get(&rk)?.is_none() {
                    continue;
                }
                match new {
                    Some(v) => {
                        cx.txn.put(rk, v.to_vec());
                        cx.txn.put(rts, keys::ord_i64(it.rec.timestamp()).to_vec());
                    }
                    None => {
                        cx.txn.delete(rk);
                        cx.txn.delete(rts);
                    }
                }
                let prefix = state_key(cx, cfg, b's', fk);
                for (sk, sv) in cx.range(&prefix, &keys::prefix_end(&prefix), usize::MAX)? {
                    let corrupt = || format!("step {}: a stored subscription is corrupt", cfg.name);
                    let (k, _) = keys::take_key(&sk[prefix.len()..]).with_context(corrupt)?;
                    let mut r = Reader::new(&sv);
                    let version = r.i64("version").ok().with_context(corrupt)?;
                    let left = r.opt_bytes("value").ok().with_context(corrupt)?;
                    respond(
                        &mut pairs,
                        it.seq,
                        k,
                        version,
                        left.map(<[u8]>::to_vec),
                        new.map(<[u8]>::to_vec),
                        it.rec.timestamp(),
                        it.rec.clone(),
                    );
                }
            }
        }
        let mut results = joined(self.guest.as_mut(), cfg, cx, &pairs)?;
        let mut next = Vec::with_capacity(out.len());
        for (seq, r) in out {
            let rec = match r {
                Response::Tombstone(rec) => rec,
                Response::Joined { pair, version } => {
                    // A pair that went to the dead letters sends nothing; one
                    // the joiner gave no value sends a tombstone.
                    let Some(value) = results.get_mut(pair).and_then(Option::take) else {
                        continue;
                    };
                    let p = &pairs[pair];
                    Packed::new(
                        p.rec.offset(),
                        p.ts,
                        p.key.as_deref(),
                        Some(&response(version, value.as_deref())),
                        p.rec.headers(),
                    )
                }
            };
            next.push(Item { seq, rec });
        }
        Ok(next)
    }

    fn defer_updates(&mut self, on: bool) {
        self.cached = on;
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}

/// The last part, over the responses.
pub struct Resolve {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
}

impl Resolve {
    /// The resolving part of a foreign-key join (`guest` is the join's,
    /// which this part does not call).
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        Resolve { cfg, guest }
    }
}

impl Operator for Resolve {
    fn config(&self) -> &StepConfig {
        &self.cfg
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        _side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        let cfg = &self.cfg;
        let mut next = Vec::with_capacity(flow.len());
        for it in flow {
            cx.observe(it.rec.timestamp());
            let corrupt = || {
                format!(
                    "step {}: the response at offset {} is corrupt",
                    cfg.name,
                    it.rec.offset()
                )
            };
            let k = it.rec.key().with_context(corrupt)?;
            let mut r = Reader::new(it.rec.value().with_context(corrupt)?);
            let version = r.i64("version").ok().with_context(corrupt)?;
            let result = r.opt_bytes("result").ok().with_context(corrupt)?;
            let vk = state_key(cx, cfg, b'n', k);
            if let Some(b) = cx.get(&vk)?
                && b.len() == 8
                && version < keys::from_ord_i64(&b)
            {
                // Sent for a foreign key the left key has left since.
                continue;
            }
            cx.txn.put(vk, keys::ord_i64(version).to_vec());
            next.push(Item {
                seq: it.seq,
                rec: Packed::new(
                    it.rec.offset(),
                    it.rec.timestamp(),
                    Some(k),
                    result,
                    it.rec.headers(),
                ),
            });
        }
        Ok(next)
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}
