//! Operator tests run here: on the in-memory backend, with native stand-ins
//! for guests (no RocksDB, no Wasm). A [`Harness`] plays the task: it feeds
//! batches to one operator and commits after each.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::{Collector, Ctx, Item, Operator, build};
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, Commit, StateRead, Txn};
use crate::codec::{self, Reader};
use crate::pipeline::config::{self, Step as StepConfig};
use crate::record::{Packed, Record};
use crate::runtime::{Call, Guest, GuestState, NativeGuest, World};

/// The one step of a pipeline file made of `step` (TOML of one `[[steps]]`).
pub fn step(toml: &str) -> StepConfig {
    let text = format!("name = \"p\"\ninput = \"in\"\noutput = \"out\"\n[[steps]]\n{toml}\n");
    // The file check wants the modules to exist; the stand-ins need none.
    let dir = tempfile::tempdir().unwrap();
    for m in ["count", "concat", "up", "proc"] {
        std::fs::write(dir.path().join(format!("{m}.wasm")), b"").unwrap();
    }
    config::parse(&dir.path().join("test.toml"), &text)
        .unwrap()
        .steps
        .remove(0)
}

/// A record with a text key and value.
pub fn rec(key: &str, value: &str, ts: i64) -> Record {
    Record {
        offset: 0,
        timestamp: ts,
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers: Vec::new(),
    }
}

/// A result list of entries (tag, index, payload bytes as encoded).
pub struct Results {
    buf: Vec<u8>,
    n: u32,
}

impl Results {
    pub fn new() -> Self {
        Results {
            buf: vec![0; 4],
            n: 0,
        }
    }
    fn head(&mut self, tag: u8, index: u32) {
        self.buf.push(tag);
        self.buf.extend_from_slice(&index.to_le_bytes());
        self.n += 1;
    }
    /// An output to the default output (`to` none) or a named one.
    pub fn output(&mut self, index: u32, to: Option<&str>, r: &Record) {
        self.head(0, index);
        codec::put_opt(&mut self.buf, to.map(str::as_bytes));
        self.buf.extend_from_slice(&r.timestamp.to_le_bytes());
        codec::put_opt(&mut self.buf, r.key.as_deref());
        codec::put_opt(&mut self.buf, r.value.as_deref());
        self.buf
            .extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
        for (name, value) in &r.headers {
            codec::put_bytes(&mut self.buf, name.as_bytes());
            codec::put_bytes(&mut self.buf, value);
        }
    }
    pub fn rejected(&mut self, index: u32, m: &str) {
        self.head(1, index);
        codec::put_bytes(&mut self.buf, m.as_bytes());
    }
    pub fn accumulator(&mut self, index: u32, a: &[u8]) {
        self.head(2, index);
        codec::put_bytes(&mut self.buf, a);
    }
    pub fn value(&mut self, index: u32, v: Option<&[u8]>) {
        self.head(3, index);
        codec::put_opt(&mut self.buf, v);
    }
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.n.to_le_bytes());
        self.buf
    }
}

fn records_of(r: &mut Reader<'_>) -> Vec<Record> {
    let n = r.u32("n").unwrap();
    (0..n).map(|_| r.record().unwrap()).collect()
}

fn count_of(acc: Option<&[u8]>) -> u64 {
    acc.map_or(0, |a| String::from_utf8_lossy(a).parse().unwrap_or(0))
}

/// A counting aggregator: the accumulator is the count as text; a record
/// whose value is "bad" is rejected, "trap" traps the call.
pub fn counter() -> Box<dyn Guest> {
    Box::new(NativeGuest::new(
        "count",
        World::Aggregator,
        |call, _| match call {
            Call::Export("add", input) => {
                let mut r = Reader::new(input);
                let recs = records_of(&mut r);
                if recs.iter().any(|x| x.value.as_deref() == Some(b"trap")) {
                    return Err("trapped: unreachable".into());
                }
                let groups = r.u32("groups").unwrap();
                let mut res = Results::new();
                let mut accs = Vec::new();
                for _ in 0..groups {
                    let acc = r.opt_bytes("acc").unwrap();
                    let n = r.u32("members").unwrap();
                    let mut c = count_of(acc);
                    for _ in 0..n {
                        let m = r.u32("m").unwrap() as usize;
                        if recs[m].value.as_deref() != Some(b"bad") {
                            c += 1;
                        }
                    }
                    accs.push(c);
                }
                for (i, x) in recs.iter().enumerate() {
                    if x.value.as_deref() == Some(b"bad") {
                        res.rejected(i as u32, "bad record");
                    }
                }
                // Entries in index order: rejections are indexed by record,
                // accumulators by group; both start at 0.
                let mut entries: Vec<(u32, bool, Vec<u8>)> = Vec::new();
                for (g, c) in accs.iter().enumerate() {
                    entries.push((g as u32, true, c.to_string().into_bytes()));
                }
                let mut res2 = Results::new();
                let rejected: Vec<u32> = recs
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| x.value.as_deref() == Some(b"bad"))
                    .map(|(i, _)| i as u32)
                    .collect();
                for i in rejected {
                    entries.push((i, false, Vec::new()));
                }
                entries.sort_by_key(|e| e.0);
                for (i, is_acc, a) in entries {
                    if is_acc {
                        res2.accumulator(i, &a);
                    } else {
                        res2.rejected(i, "bad record");
                    }
                }
                drop(res);
                Ok(res2.finish())
            }
            Call::Export("present", input) => {
                let mut r = Reader::new(input);
                let n = r.u32("n").unwrap();
                let mut res = Results::new();
                for i in 0..n {
                    r.opt_bytes("key").unwrap();
                    r.i64("start").unwrap();
                    r.i64("end").unwrap();
                    let acc = r.bytes("acc").unwrap();
                    res.value(i, Some(acc));
                }
                Ok(res.finish())
            }
            Call::Merge(a, b) => Ok((count_of(Some(a)) + count_of(Some(b)))
                .to_string()
                .into_bytes()),
            other => Err(format!("unexpected call {other:?}")),
        },
    ))
}

/// A joiner: "left+right" ("-" for a side that is missing).
pub fn concat() -> Box<dyn Guest> {
    Box::new(NativeGuest::new(
        "concat",
        World::Joiner,
        |call, _| match call {
            Call::Export("join", input) => {
                let mut r = Reader::new(input);
                let n = r.u32("n").unwrap();
                let mut res = Results::new();
                for i in 0..n {
                    r.opt_bytes("key").unwrap();
                    r.i64("ts").unwrap();
                    let side = |b: Option<&[u8]>| {
                        b.map_or("-".to_string(), |b| String::from_utf8_lossy(b).into_owned())
                    };
                    let l = side(r.opt_bytes("l").unwrap());
                    let rr = side(r.opt_bytes("r").unwrap());
                    if l == "reject" {
                        res.rejected(i, "rejected pair");
                    } else {
                        res.value(i, Some(format!("{l}+{rr}").as_bytes()));
                    }
                }
                Ok(res.finish())
            }
            other => Err(format!("unexpected call {other:?}")),
        },
    ))
}

/// A mapper that emits each record without headers, except a record whose
/// value is "own", emitted with the header `mine` = `1` only.
pub fn reheader() -> Box<dyn Guest> {
    Box::new(NativeGuest::new(
        "reheader",
        World::Mapper,
        |call, _| match call {
            Call::Export("process", input) => {
                let mut r = Reader::new(input);
                let recs = records_of(&mut r);
                let mut res = Results::new();
                for (i, x) in recs.iter().enumerate() {
                    let mut o = x.clone();
                    o.headers = if x.value.as_deref() == Some(b"own".as_slice()) {
                        vec![("mine".to_string(), b"1".to_vec())]
                    } else {
                        Vec::new()
                    };
                    res.output(i as u32, None, &o);
                }
                Ok(res.finish())
            }
            other => Err(format!("unexpected call {other:?}")),
        },
    ))
}

/// A mapper that upper-cases values, routes "x..." to the named output
/// `rare` and rejects "bad".
pub fn upper() -> Box<dyn Guest> {
    Box::new(NativeGuest::new(
        "upper",
        World::Mapper,
        |call, _| match call {
            Call::Export("process", input) => {
                let mut r = Reader::new(input);
                let recs = records_of(&mut r);
                let mut res = Results::new();
                for (i, x) in recs.iter().enumerate() {
                    let v = x.value.clone().unwrap_or_default();
                    if v == b"bad" {
                        res.rejected(i as u32, "bad value");
                        continue;
                    }
                    let mut o = x.clone();
                    o.value = Some(v.to_ascii_uppercase());
                    let to = if v.starts_with(b"x") {
                        Some("rare")
                    } else {
                        None
                    };
                    res.output(i as u32, to, &o);
                }
                Ok(res.finish())
            }
            other => Err(format!("unexpected call {other:?}")),
        },
    ))
}

/// A processor: counts records per key in store `n`, emits the count, and
/// sets an event-time timer at ts + 10 (a wall-clock one at ts + 100 for
/// the value "wall", an event-time one at ts - 5 for "past") that emits
/// "timer:<key>" (for a key starting with `n-`, "timer:<key>=<its count>");
/// a value "trap" traps after writing state.
pub fn counting_processor() -> Box<dyn Guest> {
    Box::new(NativeGuest::new(
        "proc",
        World::Processor,
        |call, state: Option<&mut dyn GuestState>| {
            let state = state.ok_or("no state")?;
            match call {
                Call::Export("process", input) => {
                    let mut r = Reader::new(input);
                    let recs = records_of(&mut r);
                    let mut res = Results::new();
                    for (i, x) in recs.iter().enumerate() {
                        let key = x.key.clone().unwrap_or_default();
                        let n = count_of(
                            state
                                .get("n", &key)
                                .map_err(|e| format!("{e:?}"))?
                                .as_deref(),
                        ) + 1;
                        state
                            .put("n", key.clone(), n.to_string().into_bytes())
                            .map_err(|e| format!("{e:?}"))?;
                        if x.value.as_deref() == Some(b"trap") {
                            return Err("trapped: boom".into());
                        }
                        if x.value.as_deref() == Some(b"wall") {
                            state.schedule(
                                crate::runtime::Clock::WallClock,
                                x.timestamp + 100,
                                key.clone(),
                            );
                        } else {
                            let at = if x.value.as_deref() == Some(b"past") {
                                x.timestamp - 5
                            } else {
                                x.timestamp + 10
                            };
                            state.schedule(crate::runtime::Clock::EventTime, at, key.clone());
                        }
                        let mut o = x.clone();
                        o.value = Some(n.to_string().into_bytes());
                        res.output(i as u32, None, &o);
                    }
                    Ok(res.finish())
                }
                Call::Timer(time, tag) => {
                    let mut res = Results::new();
                    let mut value = format!("timer:{}", String::from_utf8_lossy(tag));
                    if tag.starts_with(b"n-") {
                        let n = state.get("n", tag).map_err(|e| format!("{e:?}"))?;
                        value.push_str(&format!("={}", count_of(n.as_deref())));
                    }
                    let o = Record {
                        timestamp: time,
                        key: Some(tag.to_vec()),
                        value: Some(value.into_bytes()),
                        ..Record::default()
                    };
                    res.output(0, None, &o);
                    Ok(res.finish())
                }
                other => Err(format!("unexpected call {other:?}")),
            }
        },
    ))
}

/// One operator on the in-memory backend, fed batch by batch like a task.
pub struct Harness {
    pub backend: MemoryBackend,
    base: Arc<dyn StateRead>,
    pub op: Box<dyn Operator>,
    txn: Txn,
    pub stream_time: i64,
    /// The stream time an earlier step of the segment has already moved
    /// the next batch to (it observed the whole batch before this step).
    pub ahead: Option<i64>,
    seq: u64,
    pub now_ms: i64,
    /// Dead letters so far: (step, reason, record).
    pub dead: Vec<(String, String, Record)>,
    /// Named outputs so far.
    pub emitted: Vec<(String, Record)>,
    pub late: u64,
}

impl Harness {
    pub fn new(cfg: StepConfig, guest: Box<dyn Guest>) -> Self {
        let backend = MemoryBackend::new();
        Harness {
            base: Arc::new(backend.clone()),
            backend,
            op: build(cfg, guest),
            txn: Txn::default(),
            stream_time: i64::MIN,
            ahead: None,
            seq: 0,
            now_ms: 0,
            dead: Vec::new(),
            emitted: Vec::new(),
            late: 0,
        }
    }

    /// Runs one batch (stream records, and a join's other side, each with
    /// its position in the merged order) and commits it.
    pub fn batch(&mut self, records: &[(bool, Record)]) -> anyhow::Result<Vec<Record>> {
        let mut out = self.run_batch(records)?;
        out.extend(self.commit_held()?);
        Ok(out)
    }

    /// Runs one batch into the pending commit (no commit: a task's commit
    /// interval); its named outputs and dead letters are noted at once.
    pub fn run_batch(&mut self, records: &[(bool, Record)]) -> anyhow::Result<Vec<Record>> {
        let mut flow = Vec::new();
        let mut side = Vec::new();
        for (is_side, r) in records {
            self.seq += 1;
            let it = Item {
                seq: self.seq,
                rec: Packed::from_record(r),
            };
            if *is_side {
                side.push(it)
            } else {
                flow.push(it)
            }
        }
        let batch_time = self.stream_time;
        if let Some(t) = self.ahead.take() {
            self.stream_time = self.stream_time.max(t);
        }
        let mut out = Collector::default();
        let mut cx = Ctx {
            pipeline: "p",
            partition: 0,
            base: &self.base,
            txn: &mut self.txn,
            batch_time,
            stream_time: &mut self.stream_time,
            out: &mut out,
            now_ms: self.now_ms,
        };
        let result = self.op.run(&mut cx, flow, side);
        let next = match result {
            Ok(n) => n,
            Err(e) => {
                self.txn.clear();
                self.op.discard();
                return Err(e);
            }
        };
        self.note(out);
        Ok(next.into_iter().map(|it| it.rec.to_record()).collect())
    }

    /// Emits what the operator held back and commits; returns what it
    /// emitted.
    pub fn commit_held(&mut self) -> anyhow::Result<Vec<Record>> {
        let mut out = Collector::default();
        let batch_time = self.stream_time;
        let mut cx = Ctx {
            pipeline: "p",
            partition: 0,
            base: &self.base,
            txn: &mut self.txn,
            batch_time,
            stream_time: &mut self.stream_time,
            out: &mut out,
            now_ms: self.now_ms,
        };
        let held = self.op.flush(&mut cx)?;
        self.commit(out)?;
        Ok(held.into_iter().map(|it| it.rec.to_record()).collect())
    }

    /// Writes `value` under `key` with the next commit (state as an earlier
    /// build left it).
    pub fn put_state(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.txn.put(key, value);
    }

    /// Deletes `key` with the next commit (state as an earlier build left
    /// it).
    pub fn delete_state(&mut self, key: Vec<u8>) {
        self.txn.delete(key);
    }

    /// Drops the uncommitted batches, as a task does when one fails.
    pub fn discard(&mut self) {
        self.txn.clear();
        self.op.discard();
    }

    /// Fires what is due with no input.
    pub fn tick(&mut self) -> anyhow::Result<Vec<Record>> {
        let mut out = Collector::default();
        let batch_time = self.stream_time;
        let mut cx = Ctx {
            pipeline: "p",
            partition: 0,
            base: &self.base,
            txn: &mut self.txn,
            batch_time,
            stream_time: &mut self.stream_time,
            out: &mut out,
            now_ms: self.now_ms,
        };
        let next = self.op.tick(&mut cx, self.seq)?;
        self.commit(out)?;
        Ok(next.into_iter().map(|it| it.rec.to_record()).collect())
    }

    fn commit(&mut self, out: Collector) -> anyhow::Result<()> {
        let mut c = Commit::default();
        for (k, v) in self.txn.take() {
            c.put(k, v);
        }
        self.backend.commit(c)?;
        self.note(out);
        Ok(())
    }

    fn note(&mut self, out: Collector) {
        for (step, d) in out.dead {
            self.dead
                .push((step, d.failure.message().to_string(), d.record));
        }
        self.emitted
            .extend(out.emitted.into_iter().map(|(t, r)| (t, r.to_record())));
        self.late += out.late;
    }

    /// Feeds `records` (side flag, record) in batches of `size`; returns
    /// every output in order.
    pub fn feed(&mut self, records: &[(bool, Record)], size: usize) -> Vec<Record> {
        let mut out = Vec::new();
        for chunk in records.chunks(size.max(1)) {
            out.extend(self.batch(chunk).unwrap());
        }
        out
    }
}

/// "key[start,end]=value" for windowed outputs, "key=value" otherwise
/// ("null" for a tombstone).
pub fn show(r: &Record) -> String {
    let text = |b: &Option<Vec<u8>>| {
        b.as_ref().map_or("null".to_string(), |v| {
            String::from_utf8_lossy(v).into_owned()
        })
    };
    let h = |n: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    match (h("weir.window.start"), h("weir.window.end")) {
        (Some(s), Some(e)) => format!(
            "{}[{s},{e}]={}@{}",
            text(&r.key),
            text(&r.value),
            r.timestamp
        ),
        _ => format!("{}={}@{}", text(&r.key), text(&r.value), r.timestamp),
    }
}
