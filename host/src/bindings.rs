//! Host bindings generated from `wit/functions.wit` for the interfaces the
//! host implements (log, state, timers), and nothing else.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "weir:functions/sdk",
});
