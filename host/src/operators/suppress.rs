//! `emit_after = "10s"` on an aggregate: Kafka Streams'
//! `suppress(Suppressed.untilTimeLimit(limit, BufferConfig.unbounded()))`.
//! The aggregate's results wait in a buffer, one per key (and window): a
//! result for a key not buffered yet is held from its own timestamp on, a
//! later one replaces it in place (the buffer time stays the first's, as
//! Kafka Streams' buffer does not reset), and once the buffer's stream time
//! (the newest result's timestamp) is `limit` past a held result's buffer
//! time, the latest result for that key leaves, with its own timestamp and
//! headers, in buffer time order, then by key bytes and window. Results
//! still held when the input ends wait for later ones.
//!
//! With a bound (`emit_after_max_records`, `emit_after_max_bytes`: Kafka
//! Streams' `BufferConfig.maxRecords` / `maxBytes`), a result put in past
//! it lets out the oldest held results, in that order, until the buffer is
//! within it (`emitEarlyWhenFull`, the default), or stops the run
//! (`emit_after_when_full = "stop"`: `shutDownWhenFull`).
//!
//! Layout (kind `u`, its step's changelog on Kafka): `u b TIME ID` a held
//! result (packed), `u i ID` its buffer time and its size, `u T` the
//! buffer's stream time, where `ID` is the result's key bytes, then its
//! window (start and end; end and start for a session, in the order of
//! Kafka Streams' windowed key serializers); `u T` also holds a floor under
//! every held time, so that the buffer is scanned only when something may
//! be due, and how many results it holds in how many bytes.

use super::{Ctx, Item, Operator};
use crate::pipeline::config::{HoldLimit, Step as StepConfig, WhenFull, Window};
use crate::pipeline::keys;
use crate::record::Packed;
use crate::runtime::Guest;

/// An aggregate whose results are held `limit` of stream time.
pub struct Suppress {
    inner: Box<dyn Operator>,
    limit: i64,
}

impl Suppress {
    /// Holds the results of `inner` for `limit` ms of stream time.
    pub fn new(inner: Box<dyn Operator>, limit: i64) -> Self {
        Suppress { inner, limit }
    }

    fn prefix(&self, cx: &Ctx<'_>, kind: u8) -> Vec<u8> {
        let mut k = keys::step(cx.pipeline, b'u', &self.inner.config().name, cx.partition);
        k.push(kind);
        k
    }

    /// A result's identity: its key, then its window.
    fn id(&self, rec: &Packed) -> Vec<u8> {
        let mut id = rec.key().unwrap_or_default().to_vec();
        let header = |name: &str| {
            rec.headers()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
        };
        if let (Some(start), Some(end)) = (header("weir.window.start"), header("weir.window.end")) {
            let session = matches!(self.inner.config().window, Some(Window::Session { .. }));
            let (a, b) = if session { (end, start) } else { (start, end) };
            id.extend_from_slice(&keys::ord_i64(a));
            id.extend_from_slice(&keys::ord_i64(b));
        }
        id
    }

    /// Puts `items` into the buffer one by one, and lets out what is due
    /// after each: by time, then (when a bound is set) the oldest held
    /// until within it, as Kafka Streams' suppression enforces its buffer.
    fn hold(&self, cx: &mut Ctx<'_>, items: Vec<Item>) -> anyhow::Result<Vec<Item>> {
        if items.is_empty() {
            return Ok(items);
        }
        let time_key = self.prefix(cx, b'T');
        let (from, ids) = (self.prefix(cx, b'b'), self.prefix(cx, b'i'));
        let stored = cx.get(&time_key)?;
        let mut m = match Meta::read(stored.as_deref()) {
            Some(m) => m,
            // Written before the buffer counted what it holds: count it.
            None => {
                let mut m = Meta::read_time(stored.as_deref());
                for (k, v) in cx.range(&from, &keys::prefix_end(&from), usize::MAX)? {
                    m.count += 1;
                    m.bytes += size(k.len().saturating_sub(from.len() + 8), v.len());
                }
                m
            }
        };
        let mut out = Vec::new();
        for it in items {
            let ts = it.rec.timestamp();
            let t = m.now.map_or(ts, |n| n.max(ts));
            m.now = Some(t);
            let id = self.id(&it.rec);
            let mut ik = ids.clone();
            ik.extend_from_slice(&id);
            let new_size = size(id.len(), it.rec.bytes().len());
            let held = cx.get(&ik)?.filter(|b| b.len() >= 8);
            let at = match held {
                Some(b) => {
                    let at = keys::from_ord_i64(&b);
                    let old = match b.get(8..16) {
                        Some(n) => u64::from_be_bytes(n.try_into().unwrap_or_default()),
                        None => {
                            let bk = self.held_key(&from, at, &id);
                            cx.get(&bk)?.map_or(0, |v| size(id.len(), v.len()))
                        }
                    };
                    m.bytes = m.bytes.saturating_sub(old);
                    at
                }
                None => {
                    m.count += 1;
                    m.floor = m.floor.min(ts);
                    ts
                }
            };
            m.bytes += new_size;
            let mut iv = keys::ord_i64(at).to_vec();
            iv.extend_from_slice(&new_size.to_be_bytes());
            cx.txn.put(ik, iv);
            cx.txn
                .put(self.held_key(&from, at, &id), it.rec.bytes().to_vec());

            let due = t.saturating_sub(self.limit);
            if m.floor <= due {
                let mut to = from.clone();
                to.extend_from_slice(&keys::ord_i64(due.saturating_add(1)));
                let evicted = cx.range(&from, &to, usize::MAX)?;
                self.evict(cx, &mut m, &from, &ids, evicted, it.seq, &mut out)?;
                m.floor = due.saturating_add(1);
            }
            if self.over(&m) {
                let limit = self.inner.config().hold_limit;
                if limit.when_full == WhenFull::Stop {
                    anyhow::bail!(
                        "step {}: `emit_after` holds {} results ({} bytes), over its bound ({}); `emit_after_when_full = \"stop\"` stops the run here, before the batch commits. Raise the bound, or drop `emit_after_when_full` to emit the oldest results early",
                        self.inner.config().name,
                        m.count,
                        m.bytes,
                        bounds(&limit),
                    );
                }
                while self.over(&m) {
                    let excess = match limit.max_records {
                        Some(max) if m.count > max => (m.count - max) as usize,
                        _ => 1,
                    };
                    let oldest = cx.range(&from, &keys::prefix_end(&from), excess)?;
                    if oldest.is_empty() {
                        // Nothing held, so the count is off: start anew.
                        (m.count, m.bytes) = (0, 0);
                        break;
                    }
                    self.evict(cx, &mut m, &from, &ids, oldest, it.seq, &mut out)?;
                }
            }
        }
        if m.now.is_some() {
            let meta = m.write();
            if stored.as_deref() != Some(meta.as_slice()) {
                cx.txn.put(time_key, meta);
            }
        }
        Ok(out)
    }

    /// `u b TIME ID`: where a result held since `at` lies.
    fn held_key(&self, from: &[u8], at: i64, id: &[u8]) -> Vec<u8> {
        let mut bk = from.to_vec();
        bk.extend_from_slice(&keys::ord_i64(at));
        bk.extend_from_slice(id);
        bk
    }

    /// Whether the buffer holds more than its bound.
    fn over(&self, m: &Meta) -> bool {
        let limit = self.inner.config().hold_limit;
        limit.max_records.is_some_and(|max| m.count > max)
            || limit.max_bytes.is_some_and(|max| m.bytes > max)
    }

    /// Lets the held results `evicted` (from a range of `u b`) out.
    #[allow(clippy::too_many_arguments)]
    fn evict(
        &self,
        cx: &mut Ctx<'_>,
        m: &mut Meta,
        from: &[u8],
        ids: &[u8],
        evicted: Vec<(Vec<u8>, Vec<u8>)>,
        seq: u64,
        out: &mut Vec<Item>,
    ) -> anyhow::Result<()> {
        for (k, bytes) in evicted {
            let id = k.get(from.len() + 8..).unwrap_or_default();
            let mut ik = ids.to_vec();
            ik.extend_from_slice(id);
            m.count = m.count.saturating_sub(1);
            m.bytes = m.bytes.saturating_sub(size(id.len(), bytes.len()));
            cx.txn.delete(ik);
            cx.txn.delete(k);
            let rec = Packed::parse(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "step {}: a result held for `emit_after` is damaged ({e}); reset the pipeline",
                    self.inner.config().name
                )
            })?;
            out.push(Item { seq, rec });
        }
        Ok(())
    }
}

/// What a held result counts toward `emit_after_max_bytes`: its identity
/// (key and window), its packed record, and 16 for its two times.
fn size(id: usize, rec: usize) -> u64 {
    (id + rec + 16) as u64
}

/// A bound, as the pipeline file gives it.
fn bounds(limit: &HoldLimit) -> String {
    let mut parts = Vec::new();
    if let Some(n) = limit.max_records {
        parts.push(format!("emit_after_max_records = {n}"));
    }
    if let Some(n) = limit.max_bytes {
        parts.push(format!("emit_after_max_bytes = {n}"));
    }
    parts.join(", ")
}

/// The buffer's stream time, a floor under every held time, and how many
/// results it holds in how many bytes (`u T`).
struct Meta {
    now: Option<i64>,
    floor: i64,
    count: u64,
    bytes: u64,
}

impl Meta {
    /// The whole of `u T`, or `None` when it was written before the buffer
    /// counted (or there is none yet with something held: never).
    fn read(b: Option<&[u8]>) -> Option<Meta> {
        match b {
            None => Some(Meta {
                now: None,
                floor: i64::MAX,
                count: 0,
                bytes: 0,
            }),
            Some(b) if b.len() == 32 => Some(Meta {
                now: Some(keys::from_ord_i64(b)),
                floor: keys::from_ord_i64(&b[8..]),
                count: u64::from_be_bytes(b[16..24].try_into().ok()?),
                bytes: u64::from_be_bytes(b[24..32].try_into().ok()?),
            }),
            Some(_) => None,
        }
    }

    /// The times of an older `u T` (a count of 0, to be counted).
    fn read_time(b: Option<&[u8]>) -> Meta {
        let (now, floor) = match b {
            Some(b) if b.len() >= 16 => (Some(keys::from_ord_i64(b)), keys::from_ord_i64(&b[8..])),
            Some(b) if b.len() >= 8 => (Some(keys::from_ord_i64(b)), i64::MIN),
            _ => (None, i64::MAX),
        };
        Meta {
            now,
            floor,
            count: 0,
            bytes: 0,
        }
    }

    fn write(&self) -> Vec<u8> {
        let mut meta = keys::ord_i64(self.now.unwrap_or(i64::MIN)).to_vec();
        meta.extend_from_slice(&keys::ord_i64(self.floor));
        meta.extend_from_slice(&self.count.to_be_bytes());
        meta.extend_from_slice(&self.bytes.to_be_bytes());
        meta
    }
}

impl Operator for Suppress {
    fn config(&self) -> &StepConfig {
        self.inner.config()
    }

    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        flow: Vec<Item>,
        side: Vec<Item>,
    ) -> anyhow::Result<Vec<Item>> {
        let results = self.inner.run(cx, flow, side)?;
        self.hold(cx, results)
    }

    fn defer_updates(&mut self, on: bool) {
        self.inner.defer_updates(on);
    }

    fn flush(&mut self, cx: &mut Ctx<'_>) -> anyhow::Result<Vec<Item>> {
        let results = self.inner.flush(cx)?;
        self.hold(cx, results)
    }

    fn discard(&mut self) {
        self.inner.discard();
    }

    fn deferred_bytes(&self) -> usize {
        self.inner.deferred_bytes()
    }

    fn guest(&self) -> &dyn Guest {
        self.inner.guest()
    }

    fn swap(&mut self, guest: Box<dyn Guest>) -> Box<dyn Guest> {
        self.inner.swap(guest)
    }
}
