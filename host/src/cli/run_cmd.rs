//! `weir run`: a pipeline on the embedded log (the default) or, when its
//! file has a `[kafka]` section or `--brokers` is given, on Kafka.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Args;

use weir::backend::Backend;
use weir::kafka::Connection;
use weir::kafka::backend::KafkaBackend;
use weir::log::Log;
use weir::pipeline::config::Guarantee;
use weir::pipeline::{self, RunOptions};
use weir::runtime::Runtime;

use super::RuntimeArgs;
use super::log_cmds::{DataArgs, KafkaArgs, owner};

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
    /// Records per batch (default: 500 on the embedded log; 5,000 on Kafka,
    /// where each commit is a transaction).
    #[arg(long)]
    batch: Option<usize>,
    /// How often each task commits, e.g. "100ms", "1s" (overrides the
    /// pipeline file's `commit_interval`; default 100ms).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    commit_interval: Option<std::time::Duration>,
    /// The bound of each task's state cache in bytes; 0: no cache, one
    /// emission per batch (overrides the file's `cache_max_bytes`; default
    /// 16 MiB).
    #[arg(long, value_name = "BYTES")]
    cache_max_bytes: Option<u64>,
    /// At the end, print the rate from the first record read to the end,
    /// and the process's peak memory (for benchmarks).
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// The Kafka cluster a pipeline runs on: `--brokers` (with `--kafka-config`)
/// over its `[kafka]` section's `bootstrap.servers` and properties.
fn kafka_of(args: &RunArgs, p: &pipeline::Pipeline) -> Option<(Connection, Guarantee)> {
    kafka_connection(p, args.kafka.connection())
}

/// The Kafka cluster `p` runs on, if any: `given` (from the command line)
/// over its `[kafka]` section's `bootstrap.servers`, with the section's
/// other properties and then `given`'s.
pub(crate) fn kafka_connection(
    p: &pipeline::Pipeline,
    given: Option<Connection>,
) -> Option<(Connection, Guarantee)> {
    let section = p.kafka.as_ref();
    let guarantee = section.map_or(Guarantee::ExactlyOnce, |k| k.guarantee);
    let mut properties: Vec<(String, String)> = section
        .map(|k| {
            k.properties
                .iter()
                .filter(|(k, _)| k != "bootstrap.servers")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let brokers = match given {
        Some(conn) => {
            properties.extend(conn.properties);
            conn.brokers
        }
        None => section?.bootstrap()?.to_string(),
    };
    Some((
        Connection {
            brokers,
            properties,
        },
        guarantee,
    ))
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut pipeline = pipeline::config::load(&args.pipeline)?;
    if let Some(i) = args.commit_interval {
        pipeline.commit_interval = i;
    }
    if let Some(b) = args.cache_max_bytes {
        pipeline.cache_max_bytes = b;
    }
    if pipeline.kafka.is_some() && kafka_of(&args, &pipeline).is_none() {
        anyhow::bail!(
            "{}: the [kafka] section has no `bootstrap.servers`: add it, or give --brokers HOST:PORT",
            pipeline.file.display()
        );
    }
    let runtime = Runtime::new(args.runtime.options())?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut _server = None;
    let on_kafka = kafka_of(&args, &pipeline).is_some();
    let backend: Arc<dyn Backend> = match kafka_of(&args, &pipeline) {
        Some((conn, guarantee)) => {
            KafkaBackend::open(conn, &pipeline.name, guarantee, &args.data.data)?
        }
        None => {
            let log = Log::open(&args.data.data)?;
            // While it runs, this process owns the directory: it serves the
            // CLI's requests for it over its socket (removed when `_server`
            // drops).
            let name = pipeline.name.clone();
            let runs: owner::Runs = Arc::new(move |p: &str, reset| (p != name).then(reset));
            _server = Some(owner::serve(
                log.clone(),
                &args.data.data,
                stop.clone(),
                runs,
            )?);
            log
        }
    };
    {
        let (s, backend) = (stop.clone(), backend.clone());
        ctrlc::set_handler(move || {
            s.store(true, Ordering::SeqCst);
            backend.wake();
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    let options = RunOptions {
        until_caught_up: args.until_caught_up,
        progress: !args.quiet,
        batch: args
            .batch
            .unwrap_or(if on_kafka { 5000 } else { 500 })
            .max(1),
        native: None,
        now_ms: None,
    };
    let started = std::time::Instant::now();
    let handle = pipeline::engine::start(backend, &pipeline, &runtime, &options, stop)?;
    let mut first = None;
    if options.progress && std::io::stderr().is_terminal() {
        pipeline::progress_loop(&handle);
    } else if args.stats {
        // From the first record read: what a pipeline costs, without the
        // start (joining the group, loading modules).
        while !handle.is_finished() && handle.status().records_in == 0 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        first = Some(std::time::Instant::now());
    } else if on_kafka && !args.quiet {
        // Without a terminal: a line each time the consumer group gives
        // this instance other partitions.
        let mut shown: Option<Vec<u32>> = None;
        while !handle.is_finished() {
            let now = handle.status().partitions;
            if shown.as_ref() != Some(&now) {
                let list: Vec<String> = now.iter().map(u32::to_string).collect();
                eprintln!(
                    "{}: this instance runs partitions [{}]",
                    pipeline.name,
                    list.join(", ")
                );
                shown = Some(now);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let summary = handle.wait()?;
    if args.stats {
        let from = first.unwrap_or(started);
        let secs = from.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "{}: {} in {:.2} s from the first = {:.0} records/s ({:.2} s from the start), peak RSS {} MB",
            pipeline.name,
            super::count_of(summary.records_in, "record"),
            secs,
            summary.records_in as f64 / secs,
            started.elapsed().as_secs_f64(),
            super::bench::peak_rss_kb() / 1024
        );
    }
    eprintln!(
        "{}: {} in, {} out, {}, {} dropped",
        pipeline.name,
        super::count_of(summary.records_in, "record"),
        summary.records_out,
        super::count_of(summary.dead_letters, "dead letter"),
        super::count_of(summary.late_dropped, "late record"),
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
