//! Weir runs user-defined stream functions, compiled to sandboxed WebAssembly
//! components, over partitioned streams.
//!
//! The library is the whole runtime; the `weir` binary is a thin CLI over it.
//!
//! - [`runtime`]: the wasmtime engine, loading and validating components
//!   against the worlds of `wit/functions.wit`, the precompiled cache, and
//!   [`runtime::Step`], which runs a module and survives its traps.
//! - [`codec`]: the packed batch encoding that crosses the Wasm boundary.
//! - [`record`]: records, outputs and dead letters.
//! - [`jsonl`]: the JSON-lines record format of the CLI.
//! - [`log`]: the embedded partitioned log (RocksDB), the default source and
//!   sink, which also keeps pipelines' state, timers and offsets.
//! - [`backend`]: the log-backend seam (what a task needs from where records
//!   and state live), with an in-memory implementation.
//! - [`kafka`]: Apache Kafka through rdkafka, for `weir topic`, `produce`
//!   and `consume --brokers`.
//! - [`operators`]: one module per kind of step (map, aggregate, session,
//!   joins, processor), behind one interface.
//! - [`pipeline`]: pipeline files, segments, the task loop and the engine
//!   with its handle on running pipelines (status, stop, swap).

#![deny(missing_docs)]

pub mod backend;
pub mod bindings;
pub mod codec;
pub mod hints;
pub mod jsonl;
pub mod kafka;
pub mod log;
pub mod operators;
pub mod pipeline;
pub mod record;
pub mod runtime;
