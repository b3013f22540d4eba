//! What a guest instance's store holds: an empty WASI context (imports
//! resolve, nothing is granted), the memory limit, the guest's captured
//! stdout and stderr, and the `log` interface, which writes into tracing
//! tagged with the module and step.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::bindings::weir::functions::log;

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
        }
    }

    /// Sends what the guest printed to stdout since the last call into the
    /// log, and returns what it wrote to stderr (a panic message, an
    /// exception), which the caller logs or puts into a dead letter.
    pub(crate) fn drain_output(&mut self) -> String {
        let out = self.stdout.take();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(target: "weir::guest", module = %self.tags.module, step = %self.tags.step, stream = "stdout", "{line}");
        }
        self.stderr.take()
    }

    /// Logs what the guest wrote to stderr during a call that succeeded.
    pub(crate) fn log_stderr(&self, err: &str) {
        for line in err.lines().filter(|l| !l.trim().is_empty()) {
            tracing::warn!(target: "weir::guest", module = %self.tags.module, step = %self.tags.step, stream = "stderr", "{line}");
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
