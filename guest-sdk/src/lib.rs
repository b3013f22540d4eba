//! Write [Weir](https://example.invalid/weir) stream functions in Rust.
//!
//! A stream function is a WebAssembly component that the Weir host runs over
//! partitioned streams. With this crate you write one plain function per
//! record; an attribute generates the batch export that the host calls, and
//! the packed batch encoding of `wit/functions.wit` stays out of sight.
//!
//! ```no_run
//! use weir_guest::{Error, Output, Record};
//!
//! /// Routes JSON log lines: `level == "ERROR"` to the output `high`, the
//! /// rest to `low`. A value that is not JSON is rejected (a dead letter).
//! #[weir_guest::map]
//! fn route(r: Record) -> Result<Vec<Output>, Error> {
//!     let line: serde_json::Value = r.json()?;
//!     let to = if line["level"] == "ERROR" { "high" } else { "low" };
//!     Ok(vec![Output::forward(&r).to(to)])
//! }
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type
//! `cdylib`) and run it over a file of records with
//! `weir test target/wasm32-wasip2/release/NAME.wasm --input records.jsonl`.
//!
//! The four kinds of function, one attribute each:
//!
//! - [`map`]: one record in, zero or more [`Output`]s out (map, filter,
//!   flat-map, routing to named outputs). The function returns
//!   `Result<T, Error>` where `T` is `Vec<Output>`, `Option<Output>` or
//!   `Output`; an `Err` rejects the record (it goes to the dead-letter
//!   output with the message).
//! - [`aggregate`]: on an `impl Aggregate for T` block. The host keeps the
//!   windows and the accumulators; you say how to start, add to, merge and
//!   present one.
//! - [`join`]: combines the two sides of a join whose state the host keeps.
//! - [`processor`]: on an `impl Processor for T` block; full control with
//!   [`state`] and [`timers`].
//!
//! Settings from the pipeline file (or `weir test --config k=v`) are in
//! [`config()`]; messages go to the host's log with [`info!`], [`warn!`] and
//! friends.

#![deny(missing_docs)]

pub mod alloc;
#[doc(hidden)]
pub mod codec;

#[cfg(all(
    feature = "allocator",
    target_arch = "wasm32",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator::new();

use std::fmt;
use std::sync::OnceLock;

pub use weir_guest_macros::{aggregate, join, map, processor};

/// Re-exported so that guests use the same serde as the SDK.
pub use serde;
/// Re-exported for JSON values: `weir_guest::serde_json::Value`.
pub use serde_json;

/// Why a record could not be processed. Returned from a function, it rejects
/// the record: the host sends it to the step's dead-letter output with this
/// message in its headers, and goes on with the next record.
///
/// Any error type converts into it with `?`, and so does a message:
/// `Error::from("no price")`, `Error::from(format!("bad price {p}"))`.
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

// Every error type and `&str`, `String` and `Cow<str>` convert into a boxed
// error; going through it gives both `?` on any error and `Error::from("…")`
// (two separate impls would overlap: std may one day make `String` an error).
impl<'a, E: Into<Box<dyn std::error::Error + 'a>>> From<E> for Error {
    fn from(e: E) -> Self {
        let e: Box<dyn std::error::Error + 'a> = e.into();
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Error { message }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Returns early from a function with an [`Error`] built like `format!`.
#[macro_export]
macro_rules! reject {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::new(::std::format!($($arg)*)))
    };
}

/// An input record, borrowed from the batch the host sent: reading it copies
/// nothing.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// The record's offset in its input partition, 0-based (for `weir test`,
    /// its position among the input file's records).
    pub offset: i64,
    /// Event time, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key; `None` for an unkeyed record.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// The headers.
    pub headers: Headers<'a>,
}

impl<'a> Record<'a> {
    /// The key as UTF-8 text; an error if there is none or it is not UTF-8.
    pub fn key_str(&self) -> Result<&'a str, Error> {
        let key = self
            .key
            .ok_or_else(|| Error::new("the record has no key"))?;
        std::str::from_utf8(key).map_err(|e| Error::new(format!("the key is not UTF-8: {e}")))
    }

    /// The value as UTF-8 text; an error if there is none or it is not UTF-8.
    pub fn value_str(&self) -> Result<&'a str, Error> {
        let value = self
            .value
            .ok_or_else(|| Error::new("the record has no value (a tombstone)"))?;
        std::str::from_utf8(value).map_err(|e| Error::new(format!("the value is not UTF-8: {e}")))
    }

    /// The value parsed as JSON into `T`.
    pub fn json<T: serde::Deserialize<'a>>(&self) -> Result<T, Error> {
        let value = self
            .value
            .ok_or_else(|| Error::new("the record has no value (a tombstone)"))?;
        serde_json::from_slice(value)
            .map_err(|e| Error::new(format!("the value is not valid JSON: {e}")))
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.get(name)
    }
}

/// A record's headers, decoded on demand.
#[derive(Clone, Copy)]
pub struct Headers<'a> {
    count: u32,
    raw: &'a [u8],
}

impl<'a> Headers<'a> {
    /// The number of headers.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The headers in order, as (name, value); a name that is not UTF-8
    /// (which the host never sends) reads as "".
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut reader = codec::Reader::new(self.raw);
        (0..self.count).map(move |_| {
            let name = reader.bytes();
            let value = reader.bytes();
            (std::str::from_utf8(name).unwrap_or(""), value)
        })
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A record a function emits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The named output it goes to (`[steps.outputs]` in the pipeline
    /// file); `None` is the step's default output.
    pub to: Option<String>,
    /// The key; `None` for unkeyed.
    pub key: Option<Vec<u8>>,
    /// The value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers, in order. None (empty) keeps the input record's, as Kafka
    /// Streams' map and flatMap forward them (not for a timer's outputs,
    /// which have no input record).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Event time; `None` keeps the input record's (in
    /// [`Processor::on_timer`], the timer's time).
    pub timestamp: Option<i64>,
}

impl Output {
    /// An unkeyed output with this value.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        Output {
            value: Some(value.into()),
            ..Output::default()
        }
    }

    /// An output with this key and value.
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Output {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Output::default()
        }
    }

    /// An unkeyed output whose value is `value` as JSON; to keep the input
    /// record's key (an aggregate or join after the step groups by it), use
    /// `Output::forward(&r).with_value(serde_json::to_vec(&v)?)` or add
    /// [`Output::with_key`].
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        Ok(Output::value(serde_json::to_vec(value)?))
    }

    /// A copy of the input record: same key, value, headers and timestamp.
    pub fn forward(r: &Record<'_>) -> Self {
        Output {
            to: None,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            timestamp: Some(r.timestamp),
        }
    }

    /// Sends it to the named output `name`.
    pub fn to(mut self, name: impl Into<String>) -> Self {
        self.to = Some(name.into());
        self
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the event time (ms since the Unix epoch).
    pub fn at(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// What a [`map`] function may return inside its `Ok`: any number of outputs.
pub trait IntoOutputs {
    /// Calls `f` on each output, in order.
    fn for_each_output(self, f: impl FnMut(&Output));
}

impl IntoOutputs for Vec<Output> {
    fn for_each_output(self, f: impl FnMut(&Output)) {
        self.iter().for_each(f)
    }
}

impl IntoOutputs for Option<Output> {
    fn for_each_output(self, f: impl FnMut(&Output)) {
        self.iter().for_each(f)
    }
}

impl IntoOutputs for Output {
    fn for_each_output(self, mut f: impl FnMut(&Output)) {
        f(&self)
    }
}

/// What a [`join`] function or [`Aggregate::present`] may return inside its
/// `Ok`: a value, or `None` to emit nothing.
pub trait IntoValue {
    /// The value's bytes, or `None`.
    fn into_value(self) -> Option<Vec<u8>>;
}

impl IntoValue for Vec<u8> {
    fn into_value(self) -> Option<Vec<u8>> {
        Some(self)
    }
}

impl IntoValue for String {
    fn into_value(self) -> Option<Vec<u8>> {
        Some(self.into_bytes())
    }
}

impl<T: IntoValue> IntoValue for Option<T> {
    fn into_value(self) -> Option<Vec<u8>> {
        self.and_then(IntoValue::into_value)
    }
}

/// A time window, `[start, end)` in ms since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The first millisecond inside the window.
    pub start: i64,
    /// The first millisecond after it.
    pub end: i64,
}

/// An aggregate whose accumulators the host keeps, per key and window.
/// Implement it on a unit struct and put `#[weir_guest::aggregate]` on the
/// `impl` block.
///
/// ```no_run
/// use weir_guest::{Aggregate, Error, Record};
///
/// struct Count;
///
/// #[weir_guest::aggregate]
/// impl Aggregate for Count {
///     type Acc = u64;
///     fn init() -> u64 {
///         0
///     }
///     fn add(acc: &mut u64, _r: &Record) -> Result<(), Error> {
///         *acc += 1;
///         Ok(())
///     }
///     fn merge(a: u64, b: u64) -> u64 {
///         a + b
///     }
/// }
/// # fn main() {}
/// ```
pub trait Aggregate {
    /// The accumulator. The host stores it as JSON, so `weir state get`
    /// shows it readably.
    type Acc: serde::Serialize + serde::de::DeserializeOwned;

    /// A new, empty accumulator.
    fn init() -> Self::Acc;

    /// Adds a record. On `Err` the record is rejected (a dead letter) and
    /// must leave `acc` as it was.
    fn add(acc: &mut Self::Acc, r: &Record<'_>) -> Result<(), Error>;

    /// Merges two accumulators (session windows that come together).
    fn merge(a: Self::Acc, b: Self::Acc) -> Self::Acc;

    /// The value emitted for an accumulator; by default the accumulator as
    /// JSON. `window` is `None` for an unwindowed aggregate.
    fn present(
        acc: &Self::Acc,
        key: Option<&[u8]>,
        window: Option<Window>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let _ = (key, window);
        Ok(Some(serde_json::to_vec(acc)?))
    }

    /// The format of the accumulators this version writes. Define it, with
    /// [`Aggregate::upgrade`], when a new version's accumulator no longer
    /// reads an older version's: the host then hands every stored
    /// accumulator in another format to `upgrade` when the step switches to
    /// this version (a module that defines neither writes format 0).
    const STATE_FORMAT: u32 = 0;

    /// Converts an accumulator written in format `from` (its bytes, as that
    /// version stored them, in `entry.value`; `entry.key` is the record key
    /// it groups) into this version's: `Ok(None)` drops it, `Err` refuses
    /// the switch to this version (a swap is rolled back).
    fn upgrade(from: u32, entry: &StateEntry<'_>) -> Result<Option<Self::Acc>, Error> {
        let _ = entry;
        Err(Error::new(format!(
            "this module cannot upgrade state from format {from}"
        )))
    }
}

/// A stored state entry that [`Aggregate::upgrade`] or
/// [`Processor::upgrade`] converts to the module's format.
#[derive(Clone, Copy, Debug)]
pub struct StateEntry<'a> {
    /// The state store the entry is in (a processor's); "" for an
    /// aggregate's accumulator.
    pub store: &'a str,
    /// The record key an accumulator groups, or the store key.
    pub key: Option<&'a [u8]>,
    /// The stored bytes, in the older format.
    pub value: &'a [u8],
}

/// The two sides of a join that met, for a [`join`] function.
#[derive(Clone, Copy, Debug)]
pub struct Pair<'a> {
    /// The join key.
    pub key: Option<&'a [u8]>,
    /// Event time of the result.
    pub timestamp: i64,
    /// The left value; `None` when nothing matched (left or outer joins).
    pub left: Option<&'a [u8]>,
    /// The right value; `None` when nothing matched (left or outer joins).
    pub right: Option<&'a [u8]>,
}

/// A function with full control: state stores and timers. Implement it on a
/// unit struct and put `#[weir_guest::processor]` on the `impl` block.
pub trait Processor {
    /// Processes one record, like a [`map`] function.
    fn process(r: &Record<'_>) -> Result<Vec<Output>, Error>;

    /// A timer set with [`timers`] fired.
    fn on_timer(time: i64, tag: &[u8]) -> Result<Vec<Output>, Error> {
        let _ = (time, tag);
        Ok(Vec::new())
    }

    /// The format of the values this version keeps in its stores; define it
    /// with [`Processor::upgrade`] (see [`Aggregate::STATE_FORMAT`]).
    const STATE_FORMAT: u32 = 0;

    /// Converts a store entry written in format `from` into this version's
    /// format: `Ok(None)` deletes it, `Err` refuses the switch.
    fn upgrade(from: u32, entry: &StateEntry<'_>) -> Result<Option<Vec<u8>>, Error> {
        let _ = entry;
        Err(Error::new(format!(
            "this module cannot upgrade state from format {from}"
        )))
    }
}

/// The step's settings from the pipeline file or `weir test --config k=v`.
#[derive(Debug, Default)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` parsed as `T`, or `default` when it is not set.
    pub fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Error>
    where
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| Error::new(format!("config `{name}` = {v:?}: {e}"))),
        }
    }

    /// Every setting, in order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// The step's settings (empty until the host has called `init`).
pub fn config() -> &'static Config {
    CONFIG.get_or_init(Config::default)
}

/// Levelled messages into the host's log, tagged with the module and step.
pub mod log {
    use crate::__private::bindings::weir::functions::log as wit;

    /// How important a message is.
    pub use wit::Level;

    /// Writes `message` at `level`.
    pub fn write(level: Level, message: &str) {
        wit::write(level, message)
    }
}

/// Logs at info level, like `format!`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, &::std::format!($($arg)*)) };
}
/// Logs at warn level, like `format!`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, &::std::format!($($arg)*)) };
}
/// Logs at error level, like `format!`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, &::std::format!($($arg)*)) };
}
/// Logs at debug level, like `format!`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, &::std::format!($($arg)*)) };
}

/// State stores kept by the host (processor functions only). Keys and values
/// are bytes; the `_json` variants store values as JSON.
pub mod state {
    use crate::__private::bindings::weir::functions::state as wit;
    use crate::Error;

    fn err(store: &str, e: wit::StateError) -> Error {
        match e {
            wit::StateError::NoSuchStore(s) => Error::new(format!(
                "no state store named `{s}`: declare it in the pipeline file"
            )),
            wit::StateError::Io(m) => Error::new(format!("state store `{store}`: {m}")),
        }
    }

    /// The value of `key` in `store`.
    pub fn get(store: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        wit::get(store, key).map_err(|e| err(store, e))
    }

    /// Sets `key` in `store`.
    pub fn put(store: &str, key: &[u8], value: &[u8]) -> Result<(), Error> {
        wit::put(store, key, value).map_err(|e| err(store, e))
    }

    /// Removes `key` from `store`.
    pub fn delete(store: &str, key: &[u8]) -> Result<(), Error> {
        wit::delete(store, key).map_err(|e| err(store, e))
    }

    /// A key and its value.
    pub type Entry = (Vec<u8>, Vec<u8>);

    /// Up to `limit` entries with `start <= key < end`, in key order.
    pub fn range(
        store: &str,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<Entry>, Error> {
        wit::range(store, start, end, limit).map_err(|e| err(store, e))
    }

    /// The value of `key` in `store`, parsed from JSON.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        store: &str,
        key: &[u8],
    ) -> Result<Option<T>, Error> {
        match get(store, key)? {
            None => Ok(None),
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
        }
    }

    /// Sets `key` in `store` to `value` as JSON.
    pub fn put_json<T: serde::Serialize + ?Sized>(
        store: &str,
        key: &[u8],
        value: &T,
    ) -> Result<(), Error> {
        put(store, key, &serde_json::to_vec(value)?)
    }
}

/// Timers (processor functions only): when one fires, the host calls
/// [`Processor::on_timer`] with its tag. A tag is one timer per clock:
/// setting it again moves it.
pub mod timers {
    use crate::__private::bindings::weir::functions::timers as wit;

    /// Fires `tag` when the partition's stream time reaches `time`.
    pub fn at_event_time(time: i64, tag: &[u8]) {
        wit::schedule(wit::Clock::EventTime, time, tag)
    }

    /// Fires `tag` when the wall clock reaches `time`.
    pub fn at_wall_clock(time: i64, tag: &[u8]) {
        wit::schedule(wit::Clock::WallClock, time, tag)
    }

    /// Cancels an event-time timer.
    pub fn cancel_event_time(tag: &[u8]) {
        wit::cancel(wit::Clock::EventTime, tag)
    }

    /// Cancels a wall-clock timer.
    pub fn cancel_wall_clock(tag: &[u8]) {
        wit::cancel(wit::Clock::WallClock, tag)
    }
}

#[doc(hidden)]
pub mod __private;
