//! Guest log lines kept in memory for `weir logs`: a tracing layer that
//! takes the events of target `weir::guest` (each names its step and
//! module) into a bounded ring, once [`enable`] was called (the daemon).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};

/// How many lines are kept (the oldest go first).
pub const KEPT: usize = 10_000;

static ENABLED: AtomicBool = AtomicBool::new(false);
static LINES: Mutex<VecDeque<Line>> = Mutex::new(VecDeque::new());

/// One guest log line.
#[derive(Clone, Debug)]
pub struct Line {
    /// When (ms since the epoch).
    pub time_ms: i64,
    /// Its level (`INFO`, ...).
    pub level: String,
    /// The step that wrote it.
    pub step: String,
    /// The module that wrote it (its file).
    pub module: String,
    /// The text.
    pub message: String,
}

/// Starts keeping lines.
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

/// The kept lines that `keep` selects, the newest `max`, oldest first.
pub fn lines(keep: impl Fn(&Line) -> bool, max: usize) -> Vec<Line> {
    let all = match LINES.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let mut v: Vec<Line> = all
        .iter()
        .rev()
        .filter(|l| keep(l))
        .take(max)
        .cloned()
        .collect();
    v.reverse();
    v
}

/// The layer; add it to the subscriber (it sees only guest events).
pub struct Capture;

/// Only the guests' events reach [`Capture`].
pub struct GuestOnly;

impl<S: Subscriber> Filter<S> for GuestOnly {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        meta.target() == "weir::guest"
    }
}

#[derive(Default)]
struct Fields {
    step: String,
    module: String,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "step" => self.step = value.to_string(),
            "module" => self.module = value.to_string(),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        match field.name() {
            "step" => self.step = v,
            "module" => self.module = v,
            "message" => self.message = v,
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        if !ENABLED.load(Ordering::Relaxed) {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let line = Line {
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            level: event.metadata().level().to_string(),
            step: f.step,
            module: f.module,
            message: f.message,
        };
        let mut all = match LINES.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if all.len() >= KEPT {
            all.pop_front();
        }
        all.push_back(line);
    }
}
