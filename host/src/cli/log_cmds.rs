//! Commands over the embedded log: topics, produce, consume, run, state.
//! `topic`, `produce` and `consume` work on Kafka instead when given
//! `--brokers` (or `WEIR_BROKERS`), through [`weir::kafka`].

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use weir::jsonl;
use weir::kafka::{self, Connection};
use weir::log::{Commit, Log, TopicConfig, partitioner};
use weir::pipeline::{self, RunOptions, keys};
use weir::runtime::Runtime;

use super::RuntimeArgs;

/// Where the embedded log lives.
#[derive(Args, Clone)]
pub struct DataArgs {
    /// The data directory of the embedded log.
    #[arg(long, env = "WEIR_DATA", default_value = ".weir", value_name = "DIR")]
    pub data: PathBuf,
}

/// Kafka instead of the embedded log.
#[derive(Args, Clone)]
pub struct KafkaArgs {
    /// Work on this Kafka cluster (its bootstrap servers, HOST:PORT,...)
    /// instead of the embedded log.
    #[arg(long, env = "WEIR_BROKERS", value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,
    /// A librdkafka property for Kafka (security.protocol, sasl.*, ssl.*,
    /// ...), as KEY=VALUE (repeatable).
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = super::parse_kv, requires = "brokers")]
    pub properties: Vec<(String, String)>,
}

impl KafkaArgs {
    /// The Kafka cluster to use, if one was named.
    fn connection(&self) -> Option<Connection> {
        self.brokers.as_ref().map(|b| Connection {
            brokers: b.clone(),
            properties: self.properties.clone(),
        })
    }
}

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Its name.
        name: String,
        /// Number of partitions.
        #[arg(long, short, default_value_t = 1)]
        partitions: u32,
        /// Keep only the newest record per key (for tables).
        #[arg(long)]
        compacted: bool,
        /// Delete records older than this (e.g. 7d, 12h).
        #[arg(long, value_name = "DURATION")]
        retention: Option<humantime::Duration>,
        /// Delete the oldest records of a partition past this many bytes.
        #[arg(long, value_name = "BYTES")]
        retention_bytes: Option<u64>,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// List topics.
    List {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Show a topic's settings and its partitions' offsets.
    Describe {
        /// The topic.
        name: String,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Apply retention (time, size) and compaction to every topic now
    /// (`weir run` also does it when it starts and every 30 s).
    Clean {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Delete a topic and its records.
    Delete {
        /// The topic.
        name: String,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A topic as `topic list` and `topic describe` print it, from either log.
fn print_topic(t: &kafka::admin::TopicInfo, list: bool) {
    let s = &t.settings;
    if list {
        println!(
            "{}\t{} partitions{}",
            t.name,
            s.partitions,
            if s.compacted { "\tcompacted" } else { "" }
        );
        return;
    }
    println!("topic: {}", t.name);
    println!("partitions: {}", s.partitions);
    println!("compacted: {}", s.compacted);
    if let Some(ms) = s.retention_ms {
        println!(
            "retention: {}",
            humantime::format_duration(Duration::from_millis(ms as u64))
        );
    }
    if let Some(b) = s.retention_bytes {
        println!("retention bytes: {b}");
    }
    for (p, (start, end)) in t.offsets.iter().enumerate() {
        println!("partition {p}: start offset {start}, end offset {end}");
    }
}

fn info_of(t: &weir::log::Topic) -> kafka::admin::TopicInfo {
    kafka::admin::TopicInfo {
        name: t.name.clone(),
        settings: kafka::admin::TopicSettings {
            partitions: t.config.partitions,
            compacted: t.config.compacted,
            retention_ms: t.config.retention_ms,
            retention_bytes: t.config.retention_bytes,
        },
        offsets: Vec::new(),
    }
}

pub fn topic(cmd: TopicCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            compacted,
            retention,
            retention_bytes,
            data,
            kafka,
        } => {
            let config = TopicConfig {
                partitions,
                compacted,
                retention_ms: retention.map(|d| Duration::from(d).as_millis() as i64),
                retention_bytes,
            };
            if let Some(conn) = kafka.connection() {
                let settings = kafka::admin::TopicSettings {
                    partitions,
                    compacted,
                    retention_ms: config.retention_ms,
                    retention_bytes,
                };
                kafka::admin::create(&conn, &name, &settings)?;
            } else {
                Log::open(&data.data)?.create_topic(&name, config)?;
            }
            println!(
                "created topic {name} with {partitions} partition{}",
                plural(partitions.into())
            );
        }
        TopicCommand::List { data, kafka } => {
            let topics = match kafka.connection() {
                Some(conn) => kafka::admin::list(&conn)?,
                None => Log::open_reader(&data.data)?
                    .topics()?
                    .iter()
                    .map(info_of)
                    .collect(),
            };
            for t in &topics {
                print_topic(t, true);
            }
        }
        TopicCommand::Describe { name, data, kafka } => {
            let info = match kafka.connection() {
                Some(conn) => kafka::admin::describe(&conn, &name)?,
                None => {
                    let log = Log::open_reader(&data.data)?;
                    let t = log.require_topic(&name)?;
                    let mut info = info_of(&t);
                    for p in 0..t.config.partitions {
                        info.offsets.push((
                            log.start_offset(&t, p)? as i64,
                            log.end_offset(&t, p)? as i64,
                        ));
                    }
                    info
                }
            };
            print_topic(&info, false);
        }
        TopicCommand::Clean { data } => {
            let log = Log::open(&data.data)?;
            let n = log.clean(now_ms())?;
            println!("deleted {n} record{}", plural(n));
        }
        TopicCommand::Delete { name, data, kafka } => {
            match kafka.connection() {
                Some(conn) => kafka::admin::delete(&conn, &name)?,
                None => Log::open(&data.data)?.delete_topic(&name)?,
            }
            println!("deleted topic {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ProduceArgs {
    /// The topic.
    topic: String,
    /// Write every record to this partition (default: by key, as Kafka's
    /// default partitioner; unkeyed records round-robin).
    #[arg(long)]
    partition: Option<u32>,
    /// Read records from this file instead of stdin.
    #[arg(long, short)]
    input: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Calls `each(line number, record)` for every record of `reader`; a
/// malformed line is reported on stderr and counted, not passed on.
fn for_each_record(
    reader: Box<dyn BufRead + '_>,
    source: &str,
    mut each: impl FnMut(usize, weir::record::Record) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut bad = 0usize;
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {source} at line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match jsonl::parse_record(&line, 0) {
            Ok(r) => each(n + 1, r)?,
            Err(e) => {
                eprintln!("error: {source}:{}: {e}", n + 1);
                bad += 1;
            }
        }
    }
    Ok(bad)
}

pub fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let (reader, source): (Box<dyn BufRead>, String) = match &args.input {
        Some(path) => (
            Box::new(std::io::BufReader::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?,
            )),
            path.display().to_string(),
        ),
        None => (Box::new(std::io::stdin().lock()), "stdin".to_string()),
    };
    let (written, bad, refused) = match args.kafka.connection() {
        Some(conn) => produce_kafka(&conn, &args, reader, &source)?,
        None => produce_log(&args, reader, &source)?,
    };
    eprintln!(
        "produced {written} record{} to {}",
        plural(written),
        args.topic
    );
    if bad > 0 {
        eprintln!(
            "error: {bad} malformed line{} in {source} were not produced",
            plural(bad as u64)
        );
    }
    if refused > 0 {
        eprintln!(
            "error: Kafka refused {refused} record{} of {source}",
            plural(refused as u64)
        );
    }
    Ok(if bad + refused > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Returns (records written, malformed lines, refused records).
fn produce_log(
    args: &ProduceArgs,
    reader: Box<dyn BufRead + '_>,
    source: &str,
) -> anyhow::Result<(u64, usize, usize)> {
    let log = Log::open(&args.data.data)?;
    let topic = log.require_topic(&args.topic)?;
    if let Some(p) = args.partition
        && p >= topic.config.partitions
    {
        bail!(
            "topic {} has partitions 0 to {}; there is no partition {p}",
            topic.name,
            topic.config.partitions - 1
        );
    }
    let mut commit = Commit::default();
    let mut pending = 0usize;
    let mut written = 0u64;
    let mut rr = 0u32;
    let bad = for_each_record(reader, source, |_, record| {
        let p = match (args.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(k)) => partitioner::partition_for_key(k, topic.config.partitions),
            (None, None) => {
                rr = rr.wrapping_add(1);
                (rr - 1) % topic.config.partitions
            }
        };
        commit.append(&topic, p, &record);
        pending += 1;
        if pending == 1000 {
            written += log.commit(std::mem::take(&mut commit))?.len() as u64;
            pending = 0;
        }
        Ok(())
    })?;
    written += log.commit(commit)?.len() as u64;
    Ok((written, bad, 0))
}

/// As [`produce_log`], to Kafka: every delivery is checked, and each refused
/// record is reported with its line.
fn produce_kafka(
    conn: &Connection,
    args: &ProduceArgs,
    reader: Box<dyn BufRead + '_>,
    source: &str,
) -> anyhow::Result<(u64, usize, usize)> {
    let mut producer = kafka::produce::Producer::open(conn, &args.topic)?;
    if let Some(p) = args.partition
        && p >= producer.partitions()
    {
        bail!(
            "topic {} has partitions 0 to {}; there is no partition {p}",
            args.topic,
            producer.partitions() - 1
        );
    }
    let bad = for_each_record(reader, source, |line, record| {
        let p = producer.partition_for(args.partition, record.key.as_deref());
        Ok(producer.send(p, &record, line)?)
    })?;
    let summary = producer.finish()?;
    for r in &summary.refused {
        eprintln!(
            "error: {source}:{}: Kafka refused the record: {}",
            r.tag, r.reason
        );
    }
    Ok((summary.delivered, bad, summary.refused.len()))
}

#[derive(Args)]
pub struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// Start at the first record kept (the default is the end: only new ones).
    #[arg(long)]
    from_beginning: bool,
    /// Only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<usize>,
    /// Keep waiting for new records (Ctrl-C to stop).
    #[arg(long, short)]
    follow: bool,
    /// On Kafka, also print records of transactions not committed (yet) or
    /// aborted (the default is read_committed).
    #[arg(long, requires = "brokers")]
    read_uncommitted: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// One consumed record as a JSON line: partition, offset, then the record.
fn consumed_line(partition: u32, r: &weir::record::Record) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("partition".into(), partition.into());
    obj.insert("offset".into(), r.offset.into());
    obj.extend(jsonl::record_json(r));
    serde_json::Value::Object(obj).to_string()
}

pub fn consume(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    if args.follow {
        let s = stop.clone();
        let _ = ctrlc::set_handler(move || s.store(true, Ordering::SeqCst));
    }
    if let Some(conn) = args.kafka.connection() {
        let opts = kafka::consume::ReadOptions {
            from_beginning: args.from_beginning,
            partition: args.partition,
            max: args.max,
            follow: args.follow,
            read_uncommitted: args.read_uncommitted,
        };
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        kafka::consume::read(&conn, &args.topic, &opts, &stop, |p, r| {
            writeln!(out, "{}", consumed_line(p, &r))?;
            if args.follow {
                out.flush()?;
            }
            anyhow::Ok(())
        })?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let log = if args.follow {
        Log::open_follower(&args.data.data)?
    } else {
        Log::open_reader(&args.data.data)?
    };
    let topic = log.require_topic(&args.topic)?;
    let parts: Vec<u32> = match args.partition {
        Some(p) if p < topic.config.partitions => vec![p],
        Some(p) => bail!(
            "topic {} has partitions 0 to {}; there is no partition {p}",
            topic.name,
            topic.config.partitions - 1
        ),
        None => (0..topic.config.partitions).collect(),
    };
    let mut next = Vec::new();
    for p in &parts {
        next.push(if args.from_beginning {
            log.start_offset(&topic, *p)?
        } else {
            log.end_offset(&topic, *p)?
        });
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0usize;
    loop {
        let mut any = false;
        for (i, p) in parts.iter().enumerate() {
            loop {
                let left = args.max.map_or(usize::MAX, |m| m - printed);
                if left == 0 {
                    out.flush()?;
                    return Ok(ExitCode::SUCCESS);
                }
                let batch = log.read(&topic, *p, next[i], left.min(1000))?;
                if batch.is_empty() {
                    break;
                }
                any = true;
                for s in batch {
                    let mut r = s.record()?;
                    r.offset = s.offset as i64;
                    writeln!(out, "{}", consumed_line(*p, &r))?;
                    next[i] = s.offset + 1;
                    printed += 1;
                }
            }
        }
        out.flush()?;
        if !args.follow || stop.load(Ordering::SeqCst) {
            return Ok(ExitCode::SUCCESS);
        }
        if !any {
            std::thread::sleep(Duration::from_millis(100));
            log.catch_up()?;
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Exit once every input is consumed (as of the start).
    #[arg(long)]
    until_caught_up: bool,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Records per batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let pipeline = pipeline::config::load(&args.pipeline)?;
    let log = Log::open(&args.data.data)?;
    let runtime = Runtime::new(args.runtime.options())?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let s = stop.clone();
        ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    let options = RunOptions {
        until_caught_up: args.until_caught_up,
        progress: !args.quiet,
        batch: args.batch.max(1),
        native: None,
        now_ms: None,
    };
    let summary = pipeline::run(log, &pipeline, &runtime, &options, stop)?;
    eprintln!(
        "{}: {} records in, {} out, {} dead letters, {} late records dropped",
        pipeline.name,
        summary.records_in,
        summary.records_out,
        summary.dead_letters,
        summary.late_dropped
    );
    let dlq = pipeline::dead_letter_topic(&pipeline);
    for (step, n, reason) in &summary.first_dead_letters {
        eprintln!(
            "step {step}: {n} record{} went to the dead-letter topic {dlq}; the first because: {reason}",
            if *n == 1 { "" } else { "s" }
        );
    }
    if let Some((step, fix)) = summary.misconfigured.first() {
        eprintln!("error: every record of step {step} went to the dead letters: {fix}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum StateCommand {
    /// The value of one key in a step's state (every window, for a windowed
    /// aggregate).
    Get {
        /// The pipeline's name.
        pipeline: String,
        /// The step.
        step: String,
        /// The key (as UTF-8 text).
        key: String,
        /// Only windows starting at or after this time (ms).
        #[arg(long)]
        from: Option<i64>,
        /// Only windows starting before this time (ms).
        #[arg(long)]
        to: Option<i64>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Every key of a step's state.
    Scan {
        /// The pipeline's name.
        pipeline: String,
        /// The step.
        step: String,
        /// At most this many entries.
        #[arg(long, default_value_t = 1000)]
        max: usize,
        #[command(flatten)]
        data: DataArgs,
    },
}

fn text(b: &[u8]) -> serde_json::Value {
    match serde_json::from_slice::<serde_json::Value>(b) {
        Ok(v) if !v.is_string() && !v.is_null() => v,
        _ => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
    }
}

/// An aggregate's state entry (its key after `prefix_len` bytes) as
/// `weir state` prints it: key, window (when windowed), value. Also gives
/// the key's bytes and the window start; `None` when the entry is corrupt.
pub(super) fn aggregate_entry<'a>(
    prefix_len: usize,
    k: &'a [u8],
    v: &[u8],
) -> Option<(&'a [u8], i64, serde_json::Map<String, serde_json::Value>)> {
    let ((kb, start), (wend, acc)) = k
        .get(prefix_len + 4..)
        .and_then(keys::take_key)
        .and_then(|(kb, rest)| Some((kb, keys::take_i64(rest)?.0)))
        .zip(keys::agg_value(v))?;
    let mut obj = serde_json::Map::new();
    obj.insert(
        "key".into(),
        serde_json::Value::String(String::from_utf8_lossy(kb).into_owned()),
    );
    if (start, wend) != (0, 0) {
        obj.insert(
            "window".into(),
            serde_json::json!({"start": start, "end": wend}),
        );
    }
    obj.insert("value".into(), text(acc));
    Some((kb, start, obj))
}

/// A processor store's entry (store, 0, partition, key after `prefix_len`
/// bytes) as `weir state` prints it: store, key, value.
pub(super) fn store_entry<'a>(
    prefix_len: usize,
    k: &'a [u8],
    v: &[u8],
) -> Option<(&'a [u8], serde_json::Map<String, serde_json::Value>)> {
    let rest = k.get(prefix_len..)?;
    let zero = rest.iter().position(|b| *b == 0)?;
    let store = String::from_utf8_lossy(&rest[..zero]).into_owned();
    let kb = rest.get(zero + 5..)?;
    let mut obj = serde_json::Map::new();
    obj.insert("store".into(), serde_json::Value::String(store));
    obj.insert(
        "key".into(),
        serde_json::Value::String(String::from_utf8_lossy(kb).into_owned()),
    );
    obj.insert("value".into(), text(v));
    Some((kb, obj))
}

pub fn state(cmd: StateCommand) -> anyhow::Result<ExitCode> {
    let (data, pipe, step, key, from, to, max) = match cmd {
        StateCommand::Get {
            data,
            pipeline,
            step,
            key,
            from,
            to,
        } => (data, pipeline, step, Some(key), from, to, usize::MAX),
        StateCommand::Scan {
            data,
            pipeline,
            step,
            max,
        } => (data, pipeline, step, None, None, None, max),
    };
    let log = Log::open_reader(&data.data)?;
    let mut found = 0usize;
    let mut out = std::io::stdout().lock();
    // Aggregates ('a') and table join state ('j'), every partition.
    let mut prefix = keys::pipeline(&pipe);
    prefix.push(b'a');
    prefix.extend_from_slice(step.as_bytes());
    prefix.push(0);
    for (k, v) in log.scan(&prefix, usize::MAX)? {
        if found >= max {
            break;
        }
        let Some((kb, start, obj)) = aggregate_entry(prefix.len(), &k, &v) else {
            bail!("a state entry of step {step} is corrupt");
        };
        let wanted = key.as_ref().is_none_or(|key| key.as_bytes() == kb)
            && from.is_none_or(|f| start >= f)
            && to.is_none_or(|t| start < t);
        if wanted {
            writeln!(out, "{}", serde_json::Value::Object(obj))?;
            found += 1;
        }
    }
    // A processor's stores ('s'): store 0 partition key.
    let mut sp = keys::pipeline(&pipe);
    sp.push(b's');
    sp.extend_from_slice(step.as_bytes());
    sp.push(0);
    for (k, v) in log.scan(&sp, usize::MAX)? {
        if found >= max {
            break;
        }
        let rest = &k[sp.len()..];
        if !rest.contains(&0) {
            break;
        }
        let Some((kb, obj)) = store_entry(sp.len(), &k, &v) else {
            bail!("a state entry of step {step} is corrupt");
        };
        if key.as_ref().is_none_or(|key| key.as_bytes() == kb) {
            writeln!(out, "{}", serde_json::Value::Object(obj))?;
            found += 1;
        }
    }
    if found == 0 {
        if let Some(k) = key {
            eprintln!("no state for key {k:?} in step {step} of pipeline {pipe}");
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("step {step} of pipeline {pipe} has no state (is the step name right?)");
    }
    Ok(ExitCode::SUCCESS)
}
