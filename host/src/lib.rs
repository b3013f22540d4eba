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
//! - [`kafka`]: Apache Kafka through rdkafka, for `weir topic`, `produce`
//!   and `consume --brokers`.
//! - [`pipeline`]: pipeline files and `weir run`: tasks, windows, joins.
//! - [`bench`]: `weir bench`, the cost of the boundary against native code.

#![deny(missing_docs)]

pub mod bench;
pub mod bindings;
pub mod codec;
pub mod jsonl;
pub mod kafka;
pub mod log;
pub mod pipeline;
pub mod record;
pub mod runtime;
