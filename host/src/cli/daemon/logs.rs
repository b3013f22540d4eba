//! Guest log lines for `weir logs`: a tracing layer that takes the events
//! of target `weir::guest` (each names its step and module) into a bounded
//! ring, once [`enable`] was called (the daemon), and appends each to
//! `DATA/logs/guest.log` as a JSON line, so that they outlive the daemon.
//! The file is rotated at [`FILE_MAX_BYTES`] (the previous one is kept as
//! `guest.log.1`); a daemon starting again reads the newest [`KEPT`] lines
//! back from the two files.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};

/// How many lines are kept (the oldest go first).
pub const KEPT: usize = 10_000;

/// The size past which the log file is rotated.
pub const FILE_MAX_BYTES: u64 = 16 << 20;

static ENABLED: AtomicBool = AtomicBool::new(false);
static LINES: Mutex<VecDeque<Line>> = Mutex::new(VecDeque::new());
static FILE: Mutex<Option<LogFile>> = Mutex::new(None);

/// The file lines are appended to.
struct LogFile {
    path: PathBuf,
    file: File,
    bytes: u64,
}

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

/// Starts keeping lines, in memory and in `DATA/logs/guest.log`, after
/// reading back the newest of those an earlier daemon wrote there.
pub fn enable(data: &Path) -> anyhow::Result<()> {
    let dir = data.join("logs");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the log directory {}", dir.display()))?;
    let path = dir.join("guest.log");
    let mut earlier = VecDeque::new();
    for p in [rotated(&path), path.clone()] {
        read_back(&p, &mut earlier)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open the guest log {}", path.display()))?;
    let bytes = file.metadata().map_or(0, |m| m.len());
    *lock(&LINES) = earlier;
    *lock(&FILE) = Some(LogFile { path, file, bytes });
    ENABLED.store(true, Ordering::SeqCst);
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn rotated(path: &Path) -> PathBuf {
    path.with_extension("log.1")
}

/// Adds the lines of the file at `path` (if any) to `into`, keeping the
/// newest [`KEPT`]. A line that does not parse (the end of a file a crash
/// cut short) is skipped.
fn read_back(path: &Path, into: &mut VecDeque<Line>) -> anyhow::Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the guest log {}", path.display()));
        }
    };
    for text in std::io::BufReader::new(file).lines() {
        let text = text.with_context(|| format!("cannot read the guest log {}", path.display()))?;
        if let Some(line) = Line::parse(&text) {
            if into.len() >= KEPT {
                into.pop_front();
            }
            into.push_back(line);
        }
    }
    Ok(())
}

impl Line {
    fn to_json(&self) -> String {
        serde_json::json!({
            "time_ms": self.time_ms,
            "level": self.level,
            "step": self.step,
            "module": self.module,
            "message": self.message,
        })
        .to_string()
    }

    fn parse(text: &str) -> Option<Line> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        Some(Line {
            time_ms: v.get("time_ms")?.as_i64()?,
            level: s("level")?,
            step: s("step")?,
            module: s("module")?,
            message: s("message")?,
        })
    }
}

/// Appends `line` to the log file, rotating it when it is full. A failure
/// to write is reported once in the host's log and does not stop the
/// guest.
fn persist(line: &Line) {
    let mut guard = lock(&FILE);
    let Some(f) = guard.as_mut() else {
        return;
    };
    let mut text = line.to_json();
    text.push('\n');
    if f.bytes + text.len() as u64 > FILE_MAX_BYTES {
        let _ = std::fs::rename(&f.path, rotated(&f.path));
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&f.path)
        {
            Ok(file) => {
                f.file = file;
                f.bytes = 0;
            }
            Err(e) => {
                eprintln!("weir: cannot open the guest log {}: {e}", f.path.display());
                *guard = None;
                return;
            }
        }
    }
    match f.file.write_all(text.as_bytes()) {
        Ok(()) => f.bytes += text.len() as u64,
        Err(e) => {
            eprintln!(
                "weir: cannot write the guest log {} (guest lines are kept in memory only from now on): {e}",
                f.path.display()
            );
            *guard = None;
        }
    }
}

/// The kept lines that `keep` selects, the newest `max`, oldest first.
pub fn lines(keep: impl Fn(&Line) -> bool, max: usize) -> Vec<Line> {
    let all = lock(&LINES);
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
        persist(&line);
        let mut all = lock(&LINES);
        if all.len() >= KEPT {
            all.pop_front();
        }
        all.push_back(line);
    }
}
