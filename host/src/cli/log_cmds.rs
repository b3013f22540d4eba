//! Commands over the embedded log: topics, produce, consume, run (state
//! queries are in `state_cmds`).
//! `topic`, `produce` and `consume` work on Kafka instead when given
//! `--brokers` (or `WEIR_BROKERS`), through [`weir::kafka`].

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use weir::backend::Backend;
use weir::jsonl;
use weir::kafka::{self, Connection};
use weir::log::{Commit, Log, TopicConfig, partitioner};
use weir::pipeline::{self, RunOptions};
use weir::runtime::Runtime;

use super::RuntimeArgs;

#[path = "owner.rs"]
pub mod owner;

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
fn topic_lines(t: &kafka::admin::TopicInfo, list: bool) -> Vec<String> {
    let s = &t.settings;
    if list {
        return vec![format!(
            "{}\t{} partitions{}",
            t.name,
            s.partitions,
            if s.compacted { "\tcompacted" } else { "" }
        )];
    }
    let mut lines = vec![
        format!("topic: {}", t.name),
        format!("partitions: {}", s.partitions),
        format!("compacted: {}", s.compacted),
    ];
    if let Some(ms) = s.retention_ms {
        lines.push(format!(
            "retention: {}",
            humantime::format_duration(Duration::from_millis(ms as u64))
        ));
    }
    if let Some(b) = s.retention_bytes {
        lines.push(format!("retention bytes: {b}"));
    }
    for (p, (start, end)) in t.offsets.iter().enumerate() {
        lines.push(format!(
            "partition {p}: start offset {start}, end offset {end}"
        ));
    }
    lines
}

fn print_topic(t: &kafka::admin::TopicInfo, list: bool) {
    for l in topic_lines(t, list) {
        println!("{l}");
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

/// A command on a data directory of the embedded log. The process that owns
/// the directory (`weir run`) serves it to clients over its socket
/// ([`owner`]); with no owner, the CLI does it on the directory itself.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// `topic create`.
    TopicCreate { name: String, config: TopicConfig },
    /// `topic list`.
    TopicList,
    /// `topic describe`.
    TopicDescribe { name: String },
    /// `topic clean`.
    TopicClean,
    /// `topic delete`.
    TopicDelete { name: String },
    /// `produce`: the records follow the request, one JSON line each.
    Produce {
        topic: String,
        partition: Option<u32>,
        /// Where the records come from, for messages (`stdin`, a file).
        source: String,
    },
    /// `consume`.
    Consume {
        topic: String,
        from_beginning: bool,
        partition: Option<u32>,
        max: Option<usize>,
        follow: bool,
    },
    /// `state get` (with a key) and `state scan`.
    State {
        pipeline: String,
        step: String,
        key: Option<String>,
        from: Option<i64>,
        to: Option<i64>,
        max: usize,
    },
}

impl Request {
    /// Whether it writes (so that, with no owner, the directory is opened
    /// for writing, which takes its lock).
    fn writes(&self) -> bool {
        matches!(
            self,
            Request::TopicCreate { .. }
                | Request::TopicClean
                | Request::TopicDelete { .. }
                | Request::Produce { .. }
        )
    }
}

/// Where a request's output goes: the terminal, or an owner's client.
pub trait Out {
    /// A line for standard output.
    fn out(&mut self, line: &str) -> std::io::Result<()>;
    /// A line for standard error.
    fn err(&mut self, line: &str) -> std::io::Result<()>;
    /// Makes what was written visible now.
    fn flush(&mut self) -> std::io::Result<()>;
    /// Nothing was written for a while (a follower waiting): a client that
    /// went away is noticed here.
    fn idle(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Terminal {
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Out for Terminal {
    fn out(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.out, "{line}")
    }

    fn err(&mut self, line: &str) -> std::io::Result<()> {
        self.out.flush()?;
        eprintln!("{line}");
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Does `req` on `dir`: through the process that owns it if one runs, else
/// on the directory itself. `input` is a produce's records.
pub(crate) fn perform(
    dir: &Path,
    req: Request,
    input: Option<Box<dyn BufRead + Send>>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<ExitCode> {
    let code = match owner::connect(dir)? {
        Some(client) => client.call(&req, input)?,
        None => {
            let log = if req.writes() {
                Log::open(dir)?
            } else if matches!(req, Request::Consume { follow: true, .. }) {
                Log::open_follower(dir)?
            } else {
                Log::open_reader(dir)?
            };
            let mut input = input.unwrap_or_else(|| Box::new(std::io::empty()));
            let mut out = Terminal {
                out: std::io::BufWriter::new(std::io::stdout()),
            };
            let code = execute(&log, req, &mut input, &mut out, stop)?;
            out.flush()?;
            code
        }
    };
    Ok(ExitCode::from(code))
}

/// Does `req` on an open log, writing what it says to `out`; returns the
/// exit code. Both the CLI (no owner) and the owner's server call it.
pub fn execute(
    log: &Log,
    req: Request,
    input: &mut dyn BufRead,
    out: &mut dyn Out,
    stop: &AtomicBool,
) -> anyhow::Result<u8> {
    match req {
        Request::TopicCreate { name, config } => {
            let partitions = config.partitions;
            log.create_topic(&name, config)?;
            out.out(&format!(
                "created topic {name} with {partitions} partition{}",
                plural(partitions.into())
            ))?;
        }
        Request::TopicList => {
            for t in log.topics()? {
                for l in topic_lines(&info_of(&t), true) {
                    out.out(&l)?;
                }
            }
        }
        Request::TopicDescribe { name } => {
            let t = log.require_topic(&name)?;
            let mut info = info_of(&t);
            for p in 0..t.config.partitions {
                info.offsets.push((
                    log.start_offset(&t, p)? as i64,
                    log.end_offset(&t, p)? as i64,
                ));
            }
            for l in topic_lines(&info, false) {
                out.out(&l)?;
            }
        }
        Request::TopicClean => {
            let n = log.clean(now_ms())?;
            out.out(&format!("deleted {n} record{}", plural(n)))?;
        }
        Request::TopicDelete { name } => {
            log.delete_topic(&name)?;
            out.out(&format!("deleted topic {name}"))?;
        }
        Request::Produce {
            topic,
            partition,
            source,
        } => return produce_log(log, &topic, partition, input, &source, out),
        Request::Consume {
            topic,
            from_beginning,
            partition,
            max,
            follow,
        } => {
            return consume_log(
                log,
                &topic,
                from_beginning,
                partition,
                max,
                follow,
                out,
                stop,
            );
        }
        Request::State {
            pipeline,
            step,
            key,
            from,
            to,
            max,
        } => return super::state_cmds::state_log(log, &pipeline, &step, key, from, to, max, out),
    }
    Ok(0)
}

pub fn topic(cmd: TopicCommand) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    let (data, req) = match cmd {
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
                println!(
                    "created topic {name} with {partitions} partition{}",
                    plural(partitions.into())
                );
                return Ok(ExitCode::SUCCESS);
            }
            (data, Request::TopicCreate { name, config })
        }
        TopicCommand::List { data, kafka } => {
            if let Some(conn) = kafka.connection() {
                for t in &kafka::admin::list(&conn)? {
                    print_topic(t, true);
                }
                return Ok(ExitCode::SUCCESS);
            }
            (data, Request::TopicList)
        }
        TopicCommand::Describe { name, data, kafka } => {
            if let Some(conn) = kafka.connection() {
                print_topic(&kafka::admin::describe(&conn, &name)?, false);
                return Ok(ExitCode::SUCCESS);
            }
            (data, Request::TopicDescribe { name })
        }
        TopicCommand::Clean { data } => (data, Request::TopicClean),
        TopicCommand::Delete { name, data, kafka } => {
            if let Some(conn) = kafka.connection() {
                kafka::admin::delete(&conn, &name)?;
                println!("deleted topic {name}");
                return Ok(ExitCode::SUCCESS);
            }
            (data, Request::TopicDelete { name })
        }
    };
    perform(&data.data, req, None, &stop)
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
/// malformed line is reported (to `out`'s standard error) and counted, not
/// passed on.
fn for_each_record(
    reader: &mut dyn BufRead,
    source: &str,
    out: &mut dyn Out,
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
                out.err(&format!("error: {source}:{}: {e}", n + 1))?;
                bad += 1;
            }
        }
    }
    Ok(bad)
}

pub fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let (mut reader, source): (Box<dyn BufRead + Send>, String) = match &args.input {
        Some(path) => (
            Box::new(std::io::BufReader::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?,
            )),
            path.display().to_string(),
        ),
        None => (
            Box::new(std::io::BufReader::new(std::io::stdin())),
            "stdin".to_string(),
        ),
    };
    let Some(conn) = args.kafka.connection() else {
        let req = Request::Produce {
            topic: args.topic.clone(),
            partition: args.partition,
            source,
        };
        let stop = Arc::new(AtomicBool::new(false));
        return perform(&args.data.data, req, Some(reader), &stop);
    };
    let mut out = Terminal {
        out: std::io::BufWriter::new(std::io::stdout()),
    };
    let (written, bad, refused) = produce_kafka(&conn, &args, &mut reader, &source, &mut out)?;
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

/// Appends the records of `reader` to `topic`, committing every 1,000 and at
/// the end: when it returns, every record it counts as produced is in the
/// log. Returns the exit code.
fn produce_log(
    log: &Log,
    topic: &str,
    partition: Option<u32>,
    reader: &mut dyn BufRead,
    source: &str,
    out: &mut dyn Out,
) -> anyhow::Result<u8> {
    let topic = log.require_topic(topic)?;
    if let Some(p) = partition
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
    let bad = for_each_record(reader, source, out, |_, record| {
        let p = match (partition, &record.key) {
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
    out.err(&format!(
        "produced {written} record{} to {}",
        plural(written),
        topic.name
    ))?;
    if bad > 0 {
        out.err(&format!(
            "error: {bad} malformed line{} in {source} were not produced",
            plural(bad as u64)
        ))?;
        return Ok(1);
    }
    Ok(0)
}

/// As [`produce_log`], to Kafka: every delivery is checked, and each refused
/// record is reported with its line.
fn produce_kafka(
    conn: &Connection,
    args: &ProduceArgs,
    reader: &mut dyn BufRead,
    source: &str,
    out: &mut dyn Out,
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
    let bad = for_each_record(reader, source, out, |line, record| {
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
    let req = Request::Consume {
        topic: args.topic,
        from_beginning: args.from_beginning,
        partition: args.partition,
        max: args.max,
        follow: args.follow,
    };
    perform(&args.data.data, req, None, &stop)
}

#[allow(clippy::too_many_arguments)]
fn consume_log(
    log: &Log,
    topic: &str,
    from_beginning: bool,
    partition: Option<u32>,
    max: Option<usize>,
    follow: bool,
    out: &mut dyn Out,
    stop: &AtomicBool,
) -> anyhow::Result<u8> {
    let topic = log.require_topic(topic)?;
    let parts: Vec<u32> = match partition {
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
        next.push(if from_beginning {
            log.start_offset(&topic, *p)?
        } else {
            log.end_offset(&topic, *p)?
        });
    }
    let mut printed = 0usize;
    loop {
        let version = log.data_version();
        let mut any = false;
        for (i, p) in parts.iter().enumerate() {
            loop {
                let left = max.map_or(usize::MAX, |m| m - printed);
                if left == 0 {
                    out.flush()?;
                    return Ok(0);
                }
                let batch = log.read(&topic, *p, next[i], left.min(1000))?;
                if batch.is_empty() {
                    break;
                }
                any = true;
                for s in batch {
                    let mut r = s.record()?;
                    r.offset = s.offset as i64;
                    out.out(&consumed_line(*p, &r))?;
                    next[i] = s.offset + 1;
                    printed += 1;
                }
            }
        }
        out.flush()?;
        if !follow || stop.load(Ordering::SeqCst) {
            return Ok(0);
        }
        if !any {
            if log.follows() {
                // Another process writes: look again every 100 ms.
                std::thread::sleep(Duration::from_millis(100));
                log.catch_up()?;
            } else if log.wait_for_data(version, Duration::from_secs(1)) == version {
                out.idle()?;
            }
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
    /// How often each task commits, e.g. "100ms", "1s" (overrides the
    /// pipeline file's `commit_interval`; default 100ms).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    commit_interval: Option<std::time::Duration>,
    /// The bound of each task's state cache in bytes; 0: no cache, one
    /// emission per batch (overrides the file's `cache_max_bytes`; default
    /// 16 MiB).
    #[arg(long, value_name = "BYTES")]
    cache_max_bytes: Option<u64>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut pipeline = pipeline::config::load(&args.pipeline)?;
    if let Some(i) = args.commit_interval {
        pipeline.commit_interval = i;
    }
    if let Some(b) = args.cache_max_bytes {
        pipeline.cache_max_bytes = b;
    }
    let log = Log::open(&args.data.data)?;
    let runtime = Runtime::new(args.runtime.options())?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (s, log) = (stop.clone(), log.clone());
        ctrlc::set_handler(move || {
            s.store(true, Ordering::SeqCst);
            log.wake();
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    // While it runs, this process owns the directory: it serves the CLI's
    // requests for it over its socket (removed when `_server` drops).
    let _server = owner::serve(log.clone(), &args.data.data, stop.clone())?;
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
