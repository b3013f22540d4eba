//! Pipeline files (TOML), read and validated as a whole before anything
//! starts. Every error names the file, the line, the field and what would be
//! valid.
//!
//! ```toml
//! name = "wordcount"                 # the application id: names offsets, state, internal topics
//! input = "lines"                    # the stream the steps start from
//! output = "counts"                  # where the last step's default output goes
//! dead_letter = "wordcount-dlq"      # rejected and trapping records, with the reason in headers
//! commit_interval = "100ms"          # how often a task commits (default 100ms)
//! cache_max_bytes = 16777216         # a task's state cache (default 16 MiB; 0: none)
//!
//! [[steps]]
//! name = "split"
//! kind = "map"                       # map | aggregate | join | processor
//! module = "split_words.wasm"        # relative to this file
//! config = { min_length = 2 }        # passed to the function's init
//! outputs = { rare = "rare-words" }  # named outputs -> topics
//!
//! [[steps]]
//! name = "count"
//! kind = "aggregate"
//! module = "count.wasm"
//! window = { type = "tumbling", size = "5s", grace = "1s" }   # or hopping (advance) / session (gap)
//! emit = "update"                    # or "close": once, when the window closes
//! ```
//!
//! A join step names the other side: `with = "profiles"`, `with_kind =
//! "table"` (or "stream", which needs `window = { before = "1s", after =
//! "0s" }`), and `join = "inner" | "left" | "outer"`; `as_table = true`
//! makes the incoming records a table too (a table-table join, where a
//! deleted row deletes the join result); `foreign_key = "/user_id"` (a JSON
//! pointer into the left value) makes it a foreign-key table-table join,
//! "inner" or "left", whose right table is keyed by that field (see
//! [`ForeignKey`]). A processor lists its
//! state stores: `stores = ["seen"]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A pipeline file that is wrong, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The 1-based line.
    pub line: usize,
    /// What is wrong, and what would be valid.
    pub message: String,
}

/// The kind of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// A mapper: one record in, zero or more out.
    Map,
    /// An aggregator, with the host keeping accumulators and windows.
    Aggregate,
    /// A joiner, with the host keeping the join state.
    Join,
    /// A processor, with state stores and timers.
    Processor,
}

impl StepKind {
    /// How the pipeline file writes it: `map`, `aggregate`, `join`, `processor`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Map => "map",
            StepKind::Aggregate => "aggregate",
            StepKind::Join => "join",
            StepKind::Processor => "processor",
        }
    }

    /// "a map step", "an aggregate step", ...
    pub fn with_article(self) -> &'static str {
        match self {
            StepKind::Map => "a map step",
            StepKind::Aggregate => "an aggregate step",
            StepKind::Join => "a join step",
            StepKind::Processor => "a processor step",
        }
    }
}

/// When an aggregate emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Emit {
    /// Every update of a window's result.
    #[default]
    Update,
    /// Once per window, when it closes (end + grace passed).
    Close,
}

/// A bound on what `emit_after` holds: Kafka Streams' `BufferConfig`
/// (`maxRecords`, `maxBytes`, `emitEarlyWhenFull`, `shutDownWhenFull`).
/// The default holds without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HoldLimit {
    /// At most this many results held (one per key and window).
    pub max_records: Option<u64>,
    /// At most this many bytes held (a result's key, window, value and
    /// headers as the host packs them, plus 16).
    pub max_bytes: Option<u64>,
    /// Past a bound: emit the oldest held results early, or stop.
    pub when_full: WhenFull,
}

/// What `emit_after` does when it holds more than its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Emit the held results of the oldest hold times until within bounds
    /// (`emitEarlyWhenFull`, Kafka Streams' default for a bounded buffer).
    #[default]
    EmitEarly,
    /// Fail the task, so that the run stops (`shutDownWhenFull`).
    Stop,
}

/// Inner, left or outer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JoinType {
    /// Only pairs that match.
    #[default]
    Inner,
    /// Every left record, with the right side when it matches.
    Left,
    /// Both sides, matched where they match.
    Outer,
}

/// What the other side of a join is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WithKind {
    /// A table: the latest value per key of a (compacted) topic.
    #[default]
    Table,
    /// A stream: records within a time window of each other meet.
    Stream,
    /// A global table, as Kafka Streams' `GlobalKTable`: every task keeps
    /// all of it (every partition of `with`), read ahead of the stream.
    Global,
}

/// How often a task commits when nothing else makes it commit sooner.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// The default bound of a task's state cache, in bytes.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 16 << 20;

/// A window of an aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Fixed, non-overlapping windows of `size` ms.
    Tumbling {
        /// Size in ms.
        size: i64,
    },
    /// Windows of `size` ms starting every `advance` ms.
    Hopping {
        /// Size in ms.
        size: i64,
        /// Advance in ms.
        advance: i64,
    },
    /// Sliding windows, as Kafka Streams' `SlidingWindows`: a window `[start,
    /// start + size]` (both ends included) for every distinct set of a key's
    /// records no further than `size` ms apart.
    Sliding {
        /// Kafka Streams' time difference, in ms.
        size: i64,
    },
    /// Activity sessions: records closer than `gap` ms share a window.
    Session {
        /// Inactivity gap in ms.
        gap: i64,
    },
}

/// A validated step.
#[derive(Clone, Debug)]
pub struct Step {
    /// Its name, unique in the pipeline.
    pub name: String,
    /// Its kind.
    pub kind: StepKind,
    /// The 1-based line of its `kind` in the pipeline file, for messages.
    pub line: usize,
    /// The module's file.
    pub module: PathBuf,
    /// Its settings, as strings.
    pub config: Vec<(String, String)>,
    /// Named outputs to topics.
    pub outputs: BTreeMap<String, String>,
    /// An aggregate's window (`None`: unwindowed).
    pub window: Option<Window>,
    /// How late a record may be and still count, in ms.
    pub grace: i64,
    /// How long a tumbling or hopping window stays in the state, in ms of
    /// stream time after its start (`window.retention`, at least size +
    /// grace, the default, as Kafka Streams' window stores); 0 for other
    /// steps.
    pub retention: i64,
    /// When an aggregate emits.
    pub emit: Emit,
    /// An aggregate's results held this long (ms of stream time) from a
    /// key's first held result, then its latest emitted (Kafka Streams'
    /// `suppress(untilTimeLimit)`); `None`: not held.
    pub emit_after: Option<i64>,
    /// How much `emit_after` may hold, and what happens past that.
    pub hold_limit: HoldLimit,
    /// A join's other side (a topic).
    pub with: Option<String>,
    /// Table, stream or global table.
    pub with_kind: WithKind,
    /// A global table join's lookup: a JSON pointer into the left value
    /// whose value is the table key (`None`: the left record's key).
    pub lookup: Option<String>,
    /// A stream-table join's versioned table (a table-table join's two):
    /// how long (ms, behind the newest table record) it keeps older values,
    /// so that a stream record meets the value the table had at its
    /// timestamp (`None`: the newest).
    pub history: Option<i64>,
    /// Inner, left or outer.
    pub join: JoinType,
    /// A stream-stream join's bounds: right records from `before` ms before
    /// to `after` ms after a left record meet it.
    pub before: i64,
    /// See `before`.
    pub after: i64,
    /// A processor's state stores.
    pub stores: Vec<String>,
    /// The step keeps the record key as it is (no repartition after it).
    pub key_preserving: bool,
    /// An aggregate over a table's rows (Kafka Streams' `KGroupedTable`):
    /// the pipeline's input is a table, and a row that changes leaves the
    /// group it was in and joins its new one.
    pub from_table: bool,
    /// The map step in front of a `from_table` aggregate: its function
    /// groups the table's rows (Kafka Streams' `groupBy` selector), and the
    /// host sends each row's old group its removal.
    pub groups_table: bool,
    /// A join whose incoming records are a table's updates (a table-table
    /// join): both sides keep their newest value per key, and an update on
    /// either side emits the key's new join result. On a map step: it maps
    /// a table's changes (Kafka Streams' `KTable.filter` / `mapValues`),
    /// keeping keys, a dropped row becoming its key's deletion.
    pub as_table: bool,
    /// A table-table join whose own side comes through a map with
    /// `as_table` (Kafka Streams' `KTable.filter` in front of the join):
    /// a deletion of a key its side does not hold is a change from nothing
    /// to nothing, which such a filter forwards to an inner join and drops
    /// in front of a left or outer one (which asks it for old values).
    pub after_table_map: bool,
    /// A map with `as_table`, the first of those in front of an inner
    /// table-table join: with the state cache on, it keeps which keys its
    /// input holds and passes on no deletion of a key it does not hold, as
    /// Kafka Streams' cached source table forwards none.
    pub tracks_rows: bool,
    /// The most memory the step's instances may have, in MiB (`None`: the
    /// run's `--memory-mb`); it also sets what one call may hand the host.
    pub memory_mb: Option<usize>,
    /// The 1-based line of `memory_mb` (0 without it), for messages.
    pub memory_mb_line: usize,
    /// A foreign-key table-table join's part (the file's `foreign_key`
    /// makes one join step into three, see [`ForeignKey`]).
    pub foreign_key: Option<ForeignKey>,
}

/// A foreign-key table-table join (Kafka Streams' `KTable.join(other,
/// foreignKeyExtractor, joiner)`): the left table (keyed by `K`) joins the
/// right one (keyed by a field of the left values) in three parts, each a
/// step of its own segment. `NAME.subscribe` (over the left table) keeps
/// each key's foreign key and sends subscriptions, keyed by the foreign
/// key, to `NAME`; `NAME` (over those and the right table, co-partitioned)
/// keeps the subscriptions and the right values, calls the joiner and sends
/// responses, keyed by `K`, to `NAME.resolve`, which drops a response older
/// than one it already passed on (the key has moved to another foreign key
/// since) and emits the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignKey {
    /// A JSON pointer into the left value (`/user_id`): the right table's
    /// key (a string's text; a number's, a boolean's, an object's or an
    /// array's JSON; none when it is missing or null).
    pub pointer: String,
    /// Which of the three parts the step is.
    pub part: FkPart,
}

/// The parts of a foreign-key join (see [`ForeignKey`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FkPart {
    /// Over the left table: keeps each key's foreign key, sends subscriptions.
    Subscribe,
    /// Over the subscriptions and the right table: joins, sends responses.
    Join,
    /// Over the responses: drops stale ones, emits the results.
    Resolve,
}

/// A validated pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The application id.
    pub name: String,
    /// The input stream (the first topic of `input`).
    pub input: String,
    /// More input topics (`input = ["a", "b"]`), merged with the first in
    /// timestamp order as Kafka Streams' `builder.stream(List.of(..))`;
    /// each has as many partitions as the first.
    pub merged: Vec<String>,
    /// The last step's default output topic.
    pub output: Option<String>,
    /// The dead-letter topic.
    pub dead_letter: Option<String>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The file it came from.
    pub file: PathBuf,
    /// Its `[kafka]` section: run against a Kafka cluster.
    pub kafka: Option<KafkaSettings>,
    /// How often a task commits: it runs batches into one pending commit
    /// until this much time has passed since the first of them (or the
    /// commit grows large, or the task idles or stops).
    pub commit_interval: Duration,
    /// The bound of each task's state cache, in bytes; 0: no cache, a
    /// commit after every batch that changes state, and emit-on-update once
    /// per batch.
    pub cache_max_bytes: u64,
}

/// What a pipeline commits together, on Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Outputs, changelog records and input offsets in one Kafka
    /// transaction (Kafka Streams' exactly_once_v2).
    ExactlyOnce,
    /// Outputs flushed, then offsets committed: a crash may repeat outputs.
    AtLeastOnce,
}

/// A pipeline file's `[kafka]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    /// librdkafka properties, as written (`bootstrap.servers`, `security.protocol`, ...).
    pub properties: Vec<(String, String)>,
    /// `guarantee`: exactly-once (the default) or at-least-once.
    pub guarantee: Guarantee,
}

impl KafkaSettings {
    /// `bootstrap.servers`, if the section gives it.
    pub fn bootstrap(&self) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == "bootstrap.servers")
            .map(|(_, v)| v.as_str())
    }
}

/// Reads and validates a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        message: format!("cannot read it: {e}"),
    })?;
    parse(path, &text)
}

/// Validates pipeline text (`path` names it in errors and anchors module
/// paths).
pub fn parse(path: &Path, text: &str) -> Result<Pipeline, ConfigError> {
    parse_with(path, text, &|_| None)
}

mod parse;

use parse::name_ok;
pub use parse::parse_with;

/// Whether a step's `module` names a module of the daemon's registry
/// (`NAME@VERSION` or `NAME@latest`) rather than a file.
pub fn is_registry_ref(module: &str) -> bool {
    match module.split_once('@') {
        Some((name, version)) => {
            name_ok(name)
                && !name.ends_with(".wasm")
                && (version == "latest" || version.parse::<u32>().is_ok())
        }
        None => false,
    }
}
