//! Commands over the embedded log: topics, produce, consume, run, state.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use weir::jsonl;
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
    },
    /// List topics.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Show a topic's settings and its partitions' offsets.
    Describe {
        /// The topic.
        name: String,
        #[command(flatten)]
        data: DataArgs,
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
    },
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
        } => {
            let log = Log::open(&data.data)?;
            let t = log.create_topic(
                &name,
                TopicConfig {
                    partitions,
                    compacted,
                    retention_ms: retention.map(|d| Duration::from(d).as_millis() as i64),
                    retention_bytes,
                },
            )?;
            println!(
                "created topic {} with {} partition{}",
                t.name,
                partitions,
                if partitions == 1 { "" } else { "s" }
            );
        }
        TopicCommand::List { data } => {
            let log = Log::open_reader(&data.data)?;
            for t in log.topics()? {
                println!(
                    "{}\t{} partitions{}",
                    t.name,
                    t.config.partitions,
                    if t.config.compacted {
                        "\tcompacted"
                    } else {
                        ""
                    }
                );
            }
        }
        TopicCommand::Describe { name, data } => {
            let log = Log::open_reader(&data.data)?;
            let t = log.require_topic(&name)?;
            println!("topic: {}", t.name);
            println!("partitions: {}", t.config.partitions);
            println!("compacted: {}", t.config.compacted);
            if let Some(ms) = t.config.retention_ms {
                println!(
                    "retention: {}",
                    humantime::format_duration(Duration::from_millis(ms as u64))
                );
            }
            if let Some(b) = t.config.retention_bytes {
                println!("retention bytes: {b}");
            }
            for p in 0..t.config.partitions {
                println!(
                    "partition {p}: start offset {}, end offset {}",
                    log.start_offset(&t, p)?,
                    log.end_offset(&t, p)?
                );
            }
        }
        TopicCommand::Clean { data } => {
            let log = Log::open(&data.data)?;
            let n = log.clean(now_ms())?;
            println!("deleted {n} record{}", if n == 1 { "" } else { "s" });
        }
        TopicCommand::Delete { name, data } => {
            let log = Log::open(&data.data)?;
            log.delete_topic(&name)?;
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
}

pub fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
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
    let mut commit = Commit::default();
    let mut pending = 0usize;
    let mut written = 0u64;
    let mut bad = 0usize;
    let mut rr = 0u32;
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {source} at line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = match jsonl::parse_record(&line, 0) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {source}:{}: {e}", n + 1);
                bad += 1;
                continue;
            }
        };
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
    }
    written += log.commit(commit)?.len() as u64;
    eprintln!(
        "produced {written} record{} to {}",
        if written == 1 { "" } else { "s" },
        topic.name
    );
    if bad > 0 {
        eprintln!(
            "error: {bad} malformed line{} in {source} were not produced",
            if bad == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
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
    #[command(flatten)]
    data: DataArgs,
}

pub fn consume(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
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
    let stop = Arc::new(AtomicBool::new(false));
    if args.follow {
        let s = stop.clone();
        let _ = ctrlc::set_handler(move || s.store(true, Ordering::SeqCst));
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
                    let r = s.record()?;
                    let mut obj = serde_json::Map::new();
                    obj.insert("partition".into(), (*p).into());
                    obj.insert("offset".into(), s.offset.into());
                    obj.extend(jsonl::record_json(&r));
                    writeln!(out, "{}", serde_json::Value::Object(obj))?;
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
        let (k, v) = (k.as_slice(), v.as_slice());
        let parsed = k
            .get(prefix.len() + 4..)
            .and_then(keys::take_key)
            .and_then(|(kb, rest)| Some((kb, keys::take_i64(rest)?.0)))
            .zip(keys::agg_value(v));
        let Some(((kb, start), (wend, acc))) = parsed else {
            bail!("a state entry of step {step} is corrupt");
        };
        let wanted = key.as_ref().is_none_or(|key| key.as_bytes() == kb)
            && from.is_none_or(|f| start >= f)
            && to.is_none_or(|t| start < t);
        if wanted {
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
        let (k, v) = (k.as_slice(), v.as_slice());
        let rest = &k[sp.len()..];
        let Some(zero) = rest.iter().position(|b| *b == 0) else {
            break;
        };
        let store = String::from_utf8_lossy(&rest[..zero]).into_owned();
        let Some(kb) = rest.get(zero + 5..) else {
            bail!("a state entry of step {step} is corrupt");
        };
        if key.as_ref().is_none_or(|key| key.as_bytes() == kb) {
            let mut obj = serde_json::Map::new();
            obj.insert("store".into(), serde_json::Value::String(store));
            obj.insert(
                "key".into(),
                serde_json::Value::String(String::from_utf8_lossy(kb).into_owned()),
            );
            obj.insert("value".into(), text(v));
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
