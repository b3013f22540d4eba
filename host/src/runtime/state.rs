//! The `state` and `timers` interfaces, for processors. The runtime knows
//! nothing of where state lives: during one call the store holds a
//! [`GuestState`], which the caller (a pipeline operator, `weir test`)
//! implements over its pending changes and its backend, and takes back after
//! the call.

use std::any::Any;

use super::HostState;
use crate::bindings::weir::functions::{state, timers};

pub use crate::bindings::weir::functions::state::StateError;
pub use crate::bindings::weir::functions::timers::Clock;

/// Entries of a store, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// What a processor's state and timer calls act on during a call.
///
/// The runtime calls [`GuestState::keep`] after a call that succeeded and
/// [`GuestState::rollback`] after one that trapped, so that a trap leaves no
/// state change behind.
pub trait GuestState: Any + Send {
    /// The value of `key` in `store`.
    fn get(&mut self, store: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Sets `key` in `store`.
    fn put(&mut self, store: &str, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError>;
    /// Removes `key` from `store`.
    fn delete(&mut self, store: &str, key: Vec<u8>) -> Result<(), StateError>;
    /// Up to `limit` entries of `store` with `start <= key < end`.
    fn range(
        &mut self,
        store: &str,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError>;
    /// Schedules (or moves) the timer `tag` on `clock` at `time`.
    fn schedule(&mut self, clock: Clock, time: i64, tag: Vec<u8>);
    /// Cancels the timer `tag` on `clock`.
    fn cancel(&mut self, clock: Clock, tag: Vec<u8>);
    /// The changes since the last `keep` or `rollback` stay.
    fn keep(&mut self);
    /// The changes since the last `keep` or `rollback` are dropped.
    fn rollback(&mut self);
}

fn no_state() -> StateError {
    StateError::Io("state stores exist only while the function runs as a processor step".into())
}

impl state::Host for HostState {
    fn get(&mut self, store: String, key: Vec<u8>) -> Result<Option<Vec<u8>>, StateError> {
        self.state.as_mut().ok_or_else(no_state)?.get(&store, &key)
    }

    fn put(&mut self, store: String, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        self.state
            .as_mut()
            .ok_or_else(no_state)?
            .put(&store, key, value)
    }

    fn delete(&mut self, store: String, key: Vec<u8>) -> Result<(), StateError> {
        self.state
            .as_mut()
            .ok_or_else(no_state)?
            .delete(&store, key)
    }

    fn range(
        &mut self,
        store: String,
        start: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        self.state.as_mut().ok_or_else(no_state)?.range(
            &store,
            start.as_deref(),
            end.as_deref(),
            limit as usize,
        )
    }
}

impl timers::Host for HostState {
    fn schedule(&mut self, clock: Clock, time: i64, tag: Vec<u8>) {
        match self.state.as_mut() {
            Some(s) => s.schedule(clock, time, tag),
            None => {
                tracing::warn!(module = %self.tags.module, "a timer was scheduled outside a processor step; it will not fire")
            }
        }
    }

    fn cancel(&mut self, clock: Clock, tag: Vec<u8>) {
        if let Some(s) = self.state.as_mut() {
            s.cancel(clock, tag);
        }
    }
}
