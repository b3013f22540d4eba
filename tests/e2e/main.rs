//! End-to-end tests: they drive the real `weir` binary with real guests built
//! from `examples/` and `tests/guests/` (`just guests` builds them; `just
//! test` runs both). One test binary, one module per area.

#![allow(clippy::unwrap_used)]

mod util;

mod commits;
mod console;
mod daemon;
mod daemon_admin;
mod daemon_shadow;
mod daemon_upgrade;
mod engine;
mod first_hour;
mod first_hour_runs;
mod foundation;
mod hardening;
mod hardening_limits;
mod joins_foreign;
mod joins_global;
mod kafka;
mod kafka_faults;
mod kafka_pipelines;
mod kstreams_dsl;
mod languages;
mod languages_stateful;
mod live;
mod outside_guests;
mod parity;
mod parity_kafka;
mod pipelines;
mod pipelines_stateful;
mod testdriver;
mod testdriver_expect;
