//! Commands over the embedded log: topics, produce, consume (the last two
//! in `records_cmds`; `weir run` is in `run_cmd`, state queries in
//! `state_cmds`).
//! `topic`, `produce` and `consume` work on Kafka instead when given
//! `--brokers` (or `WEIR_BROKERS`), through [`weir::kafka`].

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use weir::kafka::{self, Connection};
use weir::log::{Log, TopicConfig};

use super::plural;

#[path = "owner.rs"]
pub mod owner;
#[path = "records_cmds.rs"]
mod records;

pub use self::records::{ConsumeArgs, ProduceArgs, consume, produce};
use self::records::{consume_log, produce_log};

/// How `weir produce` reads its lines and `weir consume` prints records.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// JSON lines, the record format of [`weir::jsonl`].
    #[default]
    Json,
    /// Plain text, as Kafka's console producer and consumer: a line is a
    /// record's value; with a separator, the text before its first
    /// occurrence is the key.
    Text { key_separator: Option<String> },
}

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
    pub(crate) fn connection(&self) -> Option<Connection> {
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
        /// How the lines are read.
        #[serde(default)]
        format: LineFormat,
    },
    /// `consume`.
    Consume {
        topic: String,
        from_beginning: bool,
        partition: Option<u32>,
        max: Option<usize>,
        follow: bool,
        /// How the records are printed.
        #[serde(default)]
        format: LineFormat,
    },
    /// `reset`: forget a pipeline's positions and state, delete its
    /// repartition topics.
    Reset { pipeline: String },
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
                | Request::Reset { .. }
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
        Some(client) => client.call(&req, input, stop)?,
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
            format,
        } => return produce_log(log, &topic, partition, input, &source, &format, out),
        Request::Consume {
            topic,
            from_beginning,
            partition,
            max,
            follow,
            format,
        } => {
            let read = records::Reading {
                from_beginning,
                partition,
                max,
                follow,
                format,
            };
            return consume_log(log, &topic, &read, out, stop);
        }
        Request::Reset { pipeline } => return super::state_cmds::reset_log(log, &pipeline, out),
        Request::State {
            pipeline,
            step,
            key,
            from,
            to,
            max,
        } => {
            let instance = super::state_cmds::instance_of(log);
            return super::state_cmds::state_log(
                log,
                &pipeline,
                &step,
                key,
                from,
                to,
                max,
                instance.as_ref(),
                out,
            );
        }
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
        TopicCommand::Clean { data } => {
            // Kafka applies its topics' retention and compaction itself; with
            // WEIR_BROKERS set, cleaning (or creating) a local log instead
            // would be a surprise.
            if std::env::var("WEIR_BROKERS").is_ok_and(|b| !b.trim().is_empty()) {
                anyhow::bail!(
                    "`weir topic clean` is for the embedded log only: Kafka applies retention and compaction itself (WEIR_BROKERS is set; unset it to clean the embedded log)"
                );
            }
            (data, Request::TopicClean)
        }
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
