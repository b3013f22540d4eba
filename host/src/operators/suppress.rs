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
//! Layout (kind `u`, its step's changelog on Kafka): `u b TIME ID` a held
//! result (packed), `u i ID` its buffer time, `u T` the buffer's stream
//! time, where `ID` is the result's key bytes, then its window (start and
//! end; end and start for a session, in the order of Kafka Streams'
//! windowed key serializers); `u T` also holds a floor under every held
//! time, so that the buffer is scanned only when something may be due.

use super::{Ctx, Item, Operator};
use crate::pipeline::config::{Step as StepConfig, Window};
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
    /// after each.
    fn hold(&self, cx: &mut Ctx<'_>, items: Vec<Item>) -> anyhow::Result<Vec<Item>> {
        if items.is_empty() {
            return Ok(items);
        }
        let time_key = self.prefix(cx, b'T');
        // The buffer's stream time, and a floor under every held time (as
        // Kafka Streams' buffer keeps its minimum): the buffer is scanned
        // only when something may be due.
        let stored = cx.get(&time_key)?;
        let (mut now, mut floor) = match stored.as_deref() {
            Some(b) if b.len() == 16 => (Some(keys::from_ord_i64(b)), keys::from_ord_i64(&b[8..])),
            Some(b) if b.len() == 8 => (Some(keys::from_ord_i64(b)), i64::MIN),
            _ => (None, i64::MAX),
        };
        let (from, ids) = (self.prefix(cx, b'b'), self.prefix(cx, b'i'));
        let mut out = Vec::new();
        for it in items {
            let ts = it.rec.timestamp();
            let t = now.map_or(ts, |n| n.max(ts));
            now = Some(t);
            let id = self.id(&it.rec);
            let mut ik = ids.clone();
            ik.extend_from_slice(&id);
            let at = match cx.get(&ik)?.filter(|b| b.len() == 8) {
                Some(b) => keys::from_ord_i64(&b),
                None => {
                    cx.txn.put(ik, keys::ord_i64(ts).to_vec());
                    floor = floor.min(ts);
                    ts
                }
            };
            let mut bk = from.clone();
            bk.extend_from_slice(&keys::ord_i64(at));
            bk.extend_from_slice(&id);
            cx.txn.put(bk, it.rec.bytes().to_vec());

            let due = t.saturating_sub(self.limit);
            if floor > due {
                continue;
            }
            let mut to = from.clone();
            to.extend_from_slice(&keys::ord_i64(due.saturating_add(1)));
            for (k, bytes) in cx.range(&from, &to, usize::MAX)? {
                let mut ik = ids.clone();
                ik.extend_from_slice(k.get(from.len() + 8..).unwrap_or_default());
                cx.txn.delete(ik);
                cx.txn.delete(k);
                let rec = Packed::parse(bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "step {}: a result held for `emit_after` is damaged ({e}); reset the pipeline",
                        self.inner.config().name
                    )
                })?;
                out.push(Item { seq: it.seq, rec });
            }
            floor = due.saturating_add(1);
        }
        if let Some(t) = now {
            let mut meta = keys::ord_i64(t).to_vec();
            meta.extend_from_slice(&keys::ord_i64(floor));
            if stored.as_deref() != Some(meta.as_slice()) {
                cx.txn.put(time_key, meta);
            }
        }
        Ok(out)
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
