//! The `state` and `timers` interfaces, for processors: reads and writes go
//! to the task's pending changes ([`Txn`]) over the data directory's
//! database, so that they commit with the batch (or vanish with a trap).

use std::sync::Arc;

use super::HostState;
use crate::bindings::weir::functions::{state, timers};
use crate::log::Log;
use crate::pipeline::keys;
use crate::pipeline::txn::Txn;

/// What a processor's state calls act on during one call.
#[derive(Clone)]
pub struct StateCtx {
    /// The committed state (`None`: state lives only in `txn`, as in `weir test`).
    pub log: Option<Arc<Log>>,
    /// The pipeline.
    pub pipeline: String,
    /// The step.
    pub step: String,
    /// The task's partition.
    pub partition: u32,
    /// The stores the step declares (empty: any name, as in `weir test`).
    pub stores: Vec<String>,
    /// The pending changes.
    pub txn: Txn,
}

impl StateCtx {
    fn check(&self, store: &str) -> Result<(), state::StateError> {
        if self.stores.is_empty() || self.stores.iter().any(|s| s == store) {
            Ok(())
        } else {
            Err(state::StateError::NoSuchStore(store.to_string()))
        }
    }

    fn key(&self, store: &str, key: &[u8]) -> Vec<u8> {
        keys::store(&self.pipeline, &self.step, store, self.partition, key)
    }
}

fn clock_byte(c: timers::Clock) -> u8 {
    match c {
        timers::Clock::EventTime => 0,
        timers::Clock::WallClock => 1,
    }
}

fn no_state() -> state::StateError {
    state::StateError::Io(
        "state stores exist only while the function runs as a processor step".into(),
    )
}

fn io(e: anyhow::Error) -> state::StateError {
    state::StateError::Io(format!("{e:#}"))
}

impl state::Host for HostState {
    fn get(&mut self, store: String, key: Vec<u8>) -> Result<Option<Vec<u8>>, state::StateError> {
        let cx = self.state.as_ref().ok_or_else(no_state)?;
        cx.check(&store)?;
        let db = cx.log.as_ref().map(|l| l.db());
        cx.txn.get_in(db, &cx.key(&store, &key)).map_err(io)
    }

    fn put(
        &mut self,
        store: String,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), state::StateError> {
        let cx = self.state.as_mut().ok_or_else(no_state)?;
        cx.check(&store)?;
        let k = cx.key(&store, &key);
        cx.txn.put(k, value);
        Ok(())
    }

    fn delete(&mut self, store: String, key: Vec<u8>) -> Result<(), state::StateError> {
        let cx = self.state.as_mut().ok_or_else(no_state)?;
        cx.check(&store)?;
        let k = cx.key(&store, &key);
        cx.txn.delete(k);
        Ok(())
    }

    fn range(
        &mut self,
        store: String,
        start: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, state::StateError> {
        let cx = self.state.as_ref().ok_or_else(no_state)?;
        cx.check(&store)?;
        let prefix = keys::store_prefix(&cx.pipeline, &cx.step, &store, cx.partition);
        let from = cx.key(&store, start.as_deref().unwrap_or_default());
        let to = match end {
            Some(e) => cx.key(&store, &e),
            None => keys::prefix_end(&prefix),
        };
        let db = cx.log.as_ref().map(|l| l.db());
        let entries = cx
            .txn
            .range_in(db, &from, &to, limit as usize)
            .map_err(io)?;
        Ok(entries
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_vec(), v))
            .collect())
    }
}

impl StateCtx {
    /// Removes the timer `tag` on clock `c`, if one is set (both its entry
    /// and its index).
    fn unset_timer(&mut self, c: u8, tag: &[u8]) {
        let index = keys::timer_index(&self.pipeline, &self.step, self.partition, c, tag);
        let db = self.log.as_ref().map(|l| l.db());
        if let Ok(Some(old)) = self.txn.get_in(db, &index)
            && old.len() == 8
        {
            let old_time = keys::from_ord_i64(&old);
            let k = keys::timer(&self.pipeline, &self.step, self.partition, c, old_time, tag);
            self.txn.delete(k);
            self.txn.delete(index);
        }
    }
}

impl timers::Host for HostState {
    fn schedule(&mut self, clock: timers::Clock, time: i64, tag: Vec<u8>) {
        let Some(cx) = self.state.as_mut() else {
            tracing::warn!(module = %self.tags.module, "a timer was scheduled outside a pipeline; it will not fire");
            return;
        };
        let c = clock_byte(clock);
        cx.unset_timer(c, &tag);
        let k = keys::timer(&cx.pipeline, &cx.step, cx.partition, c, time, &tag);
        cx.txn.put(k, Vec::new());
        let index = keys::timer_index(&cx.pipeline, &cx.step, cx.partition, c, &tag);
        cx.txn.put(index, keys::ord_i64(time).to_vec());
    }

    fn cancel(&mut self, clock: timers::Clock, tag: Vec<u8>) {
        if let Some(cx) = self.state.as_mut() {
            cx.unset_timer(clock_byte(clock), &tag);
        }
    }
}
