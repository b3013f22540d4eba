//! Session windows, as Kafka Streams keeps them: a record at `ts` merges
//! every session of its key that ends at or after `ts - gap` and starts at
//! or before `ts + gap`; the record is dropped as late only if the merged
//! session ends before `stream time - gap - grace`. With `emit = "update"`
//! the merged-away sessions are emitted as tombstones and the new one with
//! its value; with `emit = "close"` a session is emitted once, when the
//! stream time reaches its end + gap + grace.

use anyhow::Context;

use super::accumulate::{Presentable, call_add, close_due, present};
use super::{Ctx, Item, Operator};
use crate::pipeline::config::{Emit, Step as StepConfig, Window};
use crate::pipeline::keys;
use crate::record::{Failure, Packed};
use crate::runtime::{Call, Guest};

/// A session-windowed aggregate step.
pub struct Session {
    cfg: StepConfig,
    guest: Box<dyn Guest>,
    gap: i64,
}

impl Session {
    /// A session aggregate running `guest`.
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        let gap = match cfg.window {
            Some(Window::Session { gap }) => gap,
            _ => 0,
        };
        Session { cfg, guest, gap }
    }

    fn close_key(&self, cx: &Ctx<'_>, end: i64, key: &[u8], start: i64) -> Vec<u8> {
        keys::agg_close(
            cx.pipeline,
            &self.cfg.name,
            cx.partition,
            end.saturating_add(self.gap),
            key,
            start,
        )
    }

    /// Adds one record to its key's session, merging every session it
    /// bridges.
    fn add(&mut self, cx: &mut Ctx<'_>, key: &[u8], it: &Item) -> anyhow::Result<Vec<Item>> {
        let (gap, name) = (self.gap, self.cfg.name.clone());
        let ts = it.rec.timestamp();
        let mut prefix = keys::step(cx.pipeline, b'a', &name, cx.partition);
        keys::push_key(&mut prefix, key);
        let sessions = cx.range(&prefix, &keys::prefix_end(&prefix), usize::MAX)?;
        let (mut start, mut end) = (ts, ts);
        let mut overlapping = Vec::new();
        for (k, v) in sessions {
            let (s, _) = keys::take_i64(&k[prefix.len()..]).context("a session key is corrupt")?;
            let (e, acc) = keys::agg_value(&v).context("a session's accumulator is corrupt")?;
            if e >= ts - gap && s <= ts + gap {
                start = start.min(s);
                end = end.max(e);
                overlapping.push((k, s, e, acc.to_vec()));
            }
        }
        if end
            < cx.stream_time
                .saturating_sub(gap)
                .saturating_sub(self.cfg.grace)
        {
            cx.out.late += 1;
            tracing::debug!(step = %name, ts, stream_time = *cx.stream_time, "late record dropped");
            return Ok(Vec::new());
        }
        // Merge the sessions it bridges, then add the record.
        let mut merged: Option<Vec<u8>> = None;
        for (_, _, _, acc) in &overlapping {
            merged = Some(match merged {
                None => acc.clone(),
                Some(m) => {
                    let (r, _) = self.guest.call(Call::Merge(&m, acc), None)?;
                    match r {
                        Ok(x) => x,
                        Err(reason) => {
                            cx.out.dead_packed(
                                &name,
                                &it.rec,
                                Failure::Trapped(format!("merging sessions: {reason}")),
                            );
                            return Ok(Vec::new());
                        }
                    }
                }
            });
        }
        let recs: [&Packed; 1] = [&it.rec];
        let member = [0usize];
        let acc = match call_add(self.guest.as_mut(), &recs, &[(merged.as_deref(), &member)])? {
            Ok((accs, rejected)) => {
                if let Some((_, m)) = rejected.into_iter().next() {
                    cx.out.dead_packed(&name, &it.rec, Failure::Rejected(m));
                    return Ok(Vec::new());
                }
                accs.into_iter().next().unwrap_or_default()
            }
            Err(trap) => {
                cx.out.dead_packed(&name, &it.rec, Failure::Trapped(trap));
                return Ok(Vec::new());
            }
        };
        let close = self.cfg.emit == Emit::Close;
        let mut out = Vec::new();
        for (k, s, e, _) in overlapping {
            cx.txn.delete(k);
            if close {
                let ck = self.close_key(cx, e, key, s);
                cx.txn.delete(ck);
            }
            if !close && (s, e) != (start, end) {
                let (s, e) = (s.to_string(), e.to_string());
                out.push(Item {
                    seq: it.seq,
                    rec: Packed::new(
                        0,
                        ts,
                        Some(key),
                        None,
                        [
                            ("weir.window.start", s.as_bytes()),
                            ("weir.window.end", e.as_bytes()),
                        ]
                        .into_iter(),
                    ),
                });
            }
        }
        let k = keys::agg(cx.pipeline, &name, cx.partition, key, start);
        let mut v = end.to_be_bytes().to_vec();
        v.extend_from_slice(&acc);
        cx.txn.put(k, v);
        if close {
            let ck = self.close_key(cx, end, key, start);
            cx.txn.put(ck, Vec::new());
        } else {
            out.extend(present(
                self.guest.as_mut(),
                &self.cfg,
                cx,
                vec![Presentable {
                    key: key.to_vec(),
                    start,
                    end,
                    acc,
                    seq: it.seq,
                    ts,
                    input: Some(it.rec.clone()),
                }],
            )?);
        }
        Ok(out)
    }
}

impl Operator for Session {
    fn config(&self) -> &StepConfig {
        &self.cfg
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        _side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        let mut out = Vec::new();
        for it in &flow {
            let Some(key) = it.rec.key() else {
                cx.out.dead_packed(
                    &self.cfg.name,
                    &it.rec,
                    Failure::Rejected(format!(
                        "step {}: an aggregate groups by key, and this record has none",
                        self.cfg.name
                    )),
                );
                continue;
            };
            cx.observe(it.rec.timestamp());
            out.extend(self.add(cx, key, it)?);
            // Closed after every record, as Kafka Streams' suppression
            // evicts, so that the batch size changes nothing.
            if self.cfg.emit == Emit::Close {
                out.extend(close_due(self.guest.as_mut(), &self.cfg, cx, self.gap)?);
            }
        }
        Ok(out)
    }

    fn guest(&self) -> &dyn Guest {
        self.guest.as_ref()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        std::mem::replace(&mut self.guest, guest)
    }
}
