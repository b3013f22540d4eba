//! What a guest instance's store holds: an empty WASI context (imports
//! resolve, nothing is granted), the memory limit, the guest's captured
//! stdout and stderr, and the `log` interface, which writes into tracing
//! tagged with the module and step.
//!
//! What one call may put into the host's log is bounded: a line longer than
//! [`MAX_LOG_LINE`] bytes is cut (with a marker saying how long it was), and
//! past [`MAX_LOG_LINES`] lines in one call (log lines, stdout and stderr
//! together) the rest are dropped and counted in a line of the host's own.
//! What one call may hand the host through state puts and log lines is
//! bounded too, by [`CALL_BYTES_PER_MEMORY_LIMIT`] times the memory limit: a
//! call past it traps (see [`link_call_budget`]).
//! Blocking WASI calls do not block: the guest's clock is frozen, so a sleep
//! or a clock subscription is ready at once (see [`link_frozen_clock`]), and
//! a guest that keeps sleeping keeps running into its deadline.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime::{StoreContextMut, StoreLimits};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::bindings::weir::functions::{log, state};

/// Who is running: shown on every log line a guest writes.
#[derive(Clone, Debug)]
pub struct Tags {
    /// The module (file name or registry name).
    pub module: Arc<str>,
    /// The pipeline step (for `weir test`, "test").
    pub step: Arc<str>,
}

/// The data of one guest instance's store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) tags: Tags,
    pub(crate) stdout: Capture,
    pub(crate) stderr: Capture,
    /// A processor's state during a call.
    pub(crate) state: Option<Box<dyn super::state::GuestState>>,
    /// What the current call wrote to the log so far.
    call_log: CallLog,
    /// Bytes the current call handed the host (state puts, log lines).
    call_bytes: usize,
    /// The most it may: [`CALL_BYTES_PER_MEMORY_LIMIT`] times the memory limit.
    call_bytes_limit: usize,
}

/// The most bytes one call may hand the host through state puts and log
/// lines, as a multiple of the instance's memory limit: what a hostile call
/// can make the host hold is then bounded by the memory limit too.
pub const CALL_BYTES_PER_MEMORY_LIMIT: usize = 2;

/// A call handed the host more bytes than its budget; the call traps with it.
#[derive(Debug, thiserror::Error)]
#[error(
    "host memory limit per call exceeded: the call handed the host more than {limit_mib} MiB through state puts, log lines and outputs ({CALL_BYTES_PER_MEMORY_LIMIT} times the guest's memory limit, which --memory-mb or the step's `memory_mb` sets)"
)]
pub(crate) struct CallBytesExceeded {
    pub(crate) limit_mib: usize,
}

/// The longest log line kept, in bytes; a longer one is cut with a marker.
pub const MAX_LOG_LINE: usize = 8 * 1024;
/// The most log lines one call may write (log, stdout and stderr together);
/// the rest are dropped and counted.
pub const MAX_LOG_LINES: usize = 1000;
/// How much of what the guest wrote to stderr goes into a dead letter.
const STDERR_TAIL_LINES: usize = 5;

/// What the guest wrote during the current call.
#[derive(Default)]
struct CallLog {
    /// Lines written to the host's log.
    lines: usize,
    /// Lines dropped past [`MAX_LOG_LINES`].
    dropped: usize,
    /// The panic message the SDK's panic hook reported, if any.
    panic: Option<String>,
}

/// What a guest left behind after a call: its stderr (a trap's dead letter
/// shows it, apart from the reason) and the panic its SDK reported.
pub(crate) struct GuestOutput {
    /// What it wrote to stderr (at most the last 64 KiB).
    pub(crate) stderr: String,
    /// `panicked at FILE:LINE:COL: MESSAGE`, from the SDK's panic hook.
    pub(crate) panic: Option<String>,
}

impl GuestOutput {
    /// The last lines the guest wrote to stderr, each cut to a bounded
    /// length, joined with " | "; empty when it wrote nothing.
    pub(crate) fn stderr_tail(&self) -> String {
        let said: Vec<&str> = self
            .stderr
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .collect();
        said[said.len().saturating_sub(STDERR_TAIL_LINES)..]
            .iter()
            .map(|l| truncate_line(l, 1024))
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// `line`, cut to at most `max` bytes (on a character boundary) with a
/// marker saying how long it was.
pub(crate) fn truncate_line(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_string();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [cut: the line had {} bytes; {max} are kept]",
        &line[..end],
        line.len()
    )
}

impl HostState {
    pub(crate) fn new(tags: Tags, memory_limit: usize) -> Self {
        let stdout = Capture::default();
        let stderr = Capture::default();
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            // Deterministic: a guest sees no real time and no real
            // randomness, so that reprocessing the same input gives the
            // same output. Event time comes with the records.
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(wasmtime_wasi::Deterministic::new(vec![0x5e, 0xed, 0x42]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![0x5e, 0xed]))
            .insecure_random_seed(0x5eed)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .trap_on_grow_failure(true)
                .build(),
            tags,
            stdout,
            stderr,
            state: None,
            call_log: CallLog::default(),
            call_bytes: 0,
            call_bytes_limit: memory_limit.saturating_mul(CALL_BYTES_PER_MEMORY_LIMIT),
        }
    }

    /// What the current call handed the host so far, and its budget.
    pub(crate) fn call_bytes(&self) -> (usize, usize) {
        (self.call_bytes, self.call_bytes_limit)
    }

    /// Counts `bytes` more handed to the host by the current call; an error
    /// (which traps the call) past its budget.
    pub(crate) fn charge(&mut self, bytes: usize) -> Result<(), CallBytesExceeded> {
        self.call_bytes = self.call_bytes.saturating_add(bytes);
        if self.call_bytes > self.call_bytes_limit {
            return Err(CallBytesExceeded {
                limit_mib: self.call_bytes_limit >> 20,
            });
        }
        Ok(())
    }

    /// Takes one more line of the current call's log budget: `false` when
    /// the call has used it up (the line is then counted as dropped).
    fn admit_line(&mut self) -> bool {
        if self.call_log.lines >= MAX_LOG_LINES {
            self.call_log.dropped += 1;
            return false;
        }
        self.call_log.lines += 1;
        true
    }

    /// Ends a call: sends what the guest printed to stdout into the log
    /// (within the call's line budget), says how many lines were dropped,
    /// and returns its stderr and reported panic, which the caller logs or
    /// puts into a dead letter. The next call starts with a fresh budget.
    pub(crate) fn drain_output(&mut self) -> GuestOutput {
        let out = self.stdout.take();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            if self.admit_line() {
                let line = truncate_line(line, MAX_LOG_LINE);
                tracing::info!(target: "weir::guest", module = %self.tags.module, step = %self.tags.step, stream = "stdout", "{line}");
            }
        }
        let log = std::mem::take(&mut self.call_log);
        self.call_bytes = 0;
        if log.dropped > 0 {
            tracing::warn!(
                module = %self.tags.module,
                step = %self.tags.step,
                "the guest wrote {} more log lines in one call; dropped (at most {MAX_LOG_LINES} lines per call)",
                log.dropped
            );
        }
        GuestOutput {
            stderr: self.stderr.take(),
            panic: log.panic,
        }
    }

    /// Logs what the guest wrote to stderr during a call that succeeded
    /// (at most [`MAX_LOG_LINES`] lines of [`MAX_LOG_LINE`] bytes).
    pub(crate) fn log_stderr(&self, out: &GuestOutput) {
        let mut dropped = 0usize;
        for (n, line) in out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
        {
            if n >= MAX_LOG_LINES {
                dropped += 1;
                continue;
            }
            let line = truncate_line(line, MAX_LOG_LINE);
            tracing::warn!(target: "weir::guest", module = %self.tags.module, step = %self.tags.step, stream = "stderr", "{line}");
        }
        if dropped > 0 {
            tracing::warn!(
                module = %self.tags.module,
                step = %self.tags.step,
                "the guest wrote {dropped} more lines to stderr in one call; dropped (at most {MAX_LOG_LINES} lines per call)"
            );
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String) {
        // The Rust SDK's panic hook reports a panic this way just before the
        // call traps; the trap's dead letter names it.
        // It is not logged: the dead letter says it.
        if level == log::Level::Error && message.starts_with("panicked at ") {
            self.call_log.panic = Some(truncate_line(&message, MAX_LOG_LINE));
            return;
        }
        if !self.admit_line() {
            return;
        }
        let message = truncate_line(&message, MAX_LOG_LINE);
        let (m, s) = (&self.tags.module, &self.tags.step);
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "weir::guest", module = %m, step = %s, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "weir::guest", module = %m, step = %s, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "weir::guest", module = %m, step = %s, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "weir::guest", module = %m, step = %s, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "weir::guest", module = %m, step = %s, "{message}")
            }
        }
    }
}

/// A clock that stays at the Unix epoch.
struct FrozenClock;

/// Links `state.put` and `log.write` again, over the bindings', so that
/// each charges what it hands the host to the call's budget
/// ([`HostState::charge`]) before doing its work: a call past the budget
/// traps, its state changes are dropped, and its record becomes a dead letter
/// naming the limit.
pub(crate) fn link_call_budget(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = link_charged(linker);
    linker.allow_shadowing(false);
    linked
}

fn link_charged(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.instance("weir:functions/state@0.1.0")?.func_wrap(
        "put",
        |mut cx: StoreContextMut<'_, HostState>,
         (store, key, value): (String, Vec<u8>, Vec<u8>)| {
            let s = cx.data_mut();
            s.charge(store.len() + key.len() + value.len())?;
            Ok((state::Host::put(s, store, key, value),))
        },
    )?;
    linker.instance("weir:functions/log@0.1.0")?.func_wrap(
        "write",
        |mut cx: StoreContextMut<'_, HostState>, (level, message): (log::Level, String)| {
            let s = cx.data_mut();
            s.charge(message.len())?;
            log::Host::write(s, level, message);
            Ok(())
        },
    )?;
    Ok(())
}

/// Links `wasi:clocks/monotonic-clock` again, over wasmtime-wasi's, so that a
/// subscription to a duration or an instant is ready at once. The guest's
/// clock is frozen, so no time passes for it while it "sleeps"; and a host
/// call that blocked would hold the task past its deadline (epoch
/// interruption only stops a guest while it runs Wasm) and ignore Ctrl-C.
/// Every other pollable a guest can make is ready at once too: stdin is
/// closed, stdout and stderr are captured in memory, and sockets, files and
/// name lookups are refused before they exist.
pub(crate) fn link_frozen_clock(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = monotonic_clock::add_to_linker::<HostState, FrozenClocks>(linker, |s| {
        FrozenClockView(&mut s.table)
    });
    linker.allow_shadowing(false);
    linked
}

/// The frozen clock's view of a store: its resource table.
struct FrozenClockView<'a>(&'a mut ResourceTable);

struct FrozenClocks;

impl HasData for FrozenClocks {
    type Data<'a> = FrozenClockView<'a>;
}

impl monotonic_clock::Host for FrozenClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(0)
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(1_000_000)
    }

    fn subscribe_instant(
        &mut self,
        _when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.0.push(Ready)?;
        wasmtime_wasi::p2::subscribe(self.0, ready)
    }

    fn subscribe_duration(
        &mut self,
        _duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.0.push(Ready)?;
        wasmtime_wasi::p2::subscribe(self.0, ready)
    }
}

/// A pollable that is always ready.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// What a guest writes to stdout or stderr, kept in memory up to a bound
/// (the oldest bytes go first) until the host drains it after a call.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

const CAPTURE_LIMIT: usize = 64 * 1024;

impl Capture {
    fn append(&self, bytes: &[u8]) {
        let mut buf = match self.0.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        buf.extend_from_slice(bytes);
        if buf.len() > CAPTURE_LIMIT {
            let cut = buf.len() - CAPTURE_LIMIT;
            buf.drain(..cut);
        }
    }

    fn take(&self) -> String {
        let mut buf = match self.0.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let s = String::from_utf8_lossy(&buf).into_owned();
        buf.clear();
        s
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(CAPTURE_LIMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Host as _;

    fn state() -> HostState {
        HostState::new(
            Tags {
                module: "m.wasm".into(),
                step: "s".into(),
            },
            1 << 20,
        )
    }

    #[test]
    fn a_long_line_is_cut_on_a_character_boundary_with_a_marker() {
        assert_eq!(truncate_line("short", 8), "short");
        // "é" is two bytes: a cut at 3 would split the second one.
        assert_eq!(
            truncate_line("éééé", 3),
            "é… [cut: the line had 8 bytes; 3 are kept]"
        );
    }

    #[test]
    fn a_call_logs_at_most_its_budget_and_the_next_call_starts_afresh() {
        let mut s = state();
        for i in 0..MAX_LOG_LINES + 250 {
            s.write(log::Level::Info, format!("line {i}"));
        }
        assert_eq!(s.call_log.lines, MAX_LOG_LINES);
        assert_eq!(s.call_log.dropped, 250);
        let out = s.drain_output();
        assert_eq!(out.panic, None);
        assert_eq!((s.call_log.lines, s.call_log.dropped), (0, 0));
        s.write(log::Level::Info, "again".into());
        assert_eq!(s.call_log.lines, 1);
    }

    #[test]
    fn a_reported_panic_is_kept_for_the_dead_letter_not_logged() {
        let mut s = state();
        s.write(log::Level::Error, "panicked at src/lib.rs:1:2: boom".into());
        s.write(
            log::Level::Info,
            "panicked at is only a panic at error level".into(),
        );
        assert_eq!(s.call_log.lines, 1);
        s.stderr.append(b"one\n\ntwo\nthree\nfour\nfive\nsix\n");
        let out = s.drain_output();
        assert_eq!(
            out.panic.as_deref(),
            Some("panicked at src/lib.rs:1:2: boom")
        );
        assert_eq!(out.stderr_tail(), "two | three | four | five | six");
    }
}
