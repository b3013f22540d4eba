//! `weir produce` and `weir consume`: JSON lines into a topic and out of
//! it, on the embedded log (through its owner when a run holds it) or on
//! Kafka.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use weir::backend::Backend;
use weir::jsonl;
use weir::kafka::{self, Connection};
use weir::log::{Commit, Log, partitioner};

use super::*;

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
    /// Each line is a record's value as it is, not a JSON record (as Kafka's
    /// console producer): no key, no timestamp; an empty line is an empty
    /// value.
    #[arg(long)]
    text: bool,
    /// With --text: the text before the first SEP of a line is the record's
    /// key, the rest its value (a line without SEP is an error).
    #[arg(long, value_name = "SEP", requires = "text")]
    key_separator: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// The format `--text` and `--key-separator` ask for.
fn line_format(text: bool, key_separator: &Option<String>) -> anyhow::Result<LineFormat> {
    if !text {
        return Ok(LineFormat::Json);
    }
    if key_separator.as_deref() == Some("") {
        bail!(
            "--key-separator is empty; give the text that ends a line's key, such as ':' or a tab"
        );
    }
    Ok(LineFormat::Text {
        key_separator: key_separator.clone(),
    })
}

/// Calls `each(line number, record, stamped)` for every record of `reader`,
/// read as `format` says; a malformed line is reported (to `out`'s standard
/// error) and counted, not passed on.
fn for_each_record(
    reader: &mut dyn BufRead,
    source: &str,
    format: &LineFormat,
    out: &mut dyn Out,
    mut each: impl FnMut(usize, weir::record::Record, bool) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut bad = 0usize;
    let mut buf = Vec::new();
    let mut n = 0usize;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {source} at line {}", n + 1))?;
        if read == 0 {
            return Ok(bad);
        }
        n += 1;
        let line = buf
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(&buf);
        let parsed = match format {
            LineFormat::Text { key_separator } => {
                jsonl::text_record(line, key_separator.as_deref())
                    .map(|r| (r, false))
                    .map_err(|e| e.to_string())
            }
            LineFormat::Json => match std::str::from_utf8(line) {
                Ok(l) if l.trim().is_empty() => continue,
                Ok(l) => jsonl::parse_line(l, 0).map_err(|e| e.to_string()),
                Err(e) => Err(format!(
                    "the line is not UTF-8 text ({e}); give binary bytes as key_b64 / value_b64, or produce it with --text"
                )),
            },
        };
        match parsed {
            Ok((r, stamped)) => each(n, r, stamped)?,
            Err(e) => {
                out.err(&format!("error: {source}:{n}: {e}"))?;
                bad += 1;
            }
        }
    }
}

/// "N malformed line(s) in SOURCE was/were not produced".
fn not_produced(bad: usize, source: &str) -> String {
    match bad {
        1 => format!("error: 1 malformed line in {source} was not produced"),
        n => format!("error: {n} malformed lines in {source} were not produced"),
    }
}

pub fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let format = line_format(args.text, &args.key_separator)?;
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
            format,
        };
        let stop = Arc::new(AtomicBool::new(false));
        return perform(&args.data.data, req, Some(reader), &stop);
    };
    let mut out = Terminal {
        out: std::io::BufWriter::new(std::io::stdout()),
    };
    let (written, bad, refused) =
        produce_kafka(&conn, &args, &mut reader, &source, &format, &mut out)?;
    eprintln!(
        "produced {written} record{} to {}",
        plural(written),
        args.topic
    );
    if bad > 0 {
        eprintln!("{}", not_produced(bad, &source));
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
pub(super) fn produce_log(
    log: &Log,
    topic: &str,
    partition: Option<u32>,
    reader: &mut dyn BufRead,
    source: &str,
    format: &LineFormat,
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
    let bad = for_each_record(reader, source, format, out, |_, record, _| {
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
        out.err(&not_produced(bad, source))?;
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
    format: &LineFormat,
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
    let bad = for_each_record(reader, source, format, out, |line, record, stamped| {
        let p = producer.partition_for(args.partition, record.key.as_deref());
        Ok(producer.send(p, &record, stamped, line)?)
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
    /// Print each record's value as text, a line each, not a JSON record (as
    /// Kafka's console consumer; `null` for none).
    #[arg(long)]
    text: bool,
    /// With --text: print the key, SEP, then the value.
    #[arg(long, value_name = "SEP", requires = "text")]
    key_separator: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// What `weir consume` reads, and how it prints it.
pub(super) struct Reading {
    pub from_beginning: bool,
    pub partition: Option<u32>,
    pub max: Option<usize>,
    pub follow: bool,
    pub format: LineFormat,
}

/// One consumed record as a JSON line: partition, offset, then the record.
fn consumed_line(partition: u32, r: &weir::record::Record) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("partition".into(), partition.into());
    obj.insert("offset".into(), r.offset.into());
    obj.extend(jsonl::record_json(r));
    serde_json::Value::Object(obj).to_string()
}

/// One consumed record as `format` prints it.
fn print_line(partition: u32, r: &weir::record::Record, format: &LineFormat) -> String {
    let LineFormat::Text { key_separator } = format else {
        return consumed_line(partition, r);
    };
    let text = |b: &Option<Vec<u8>>| match b {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "null".to_string(),
    };
    match key_separator {
        Some(sep) => format!("{}{sep}{}", text(&r.key), text(&r.value)),
        None => text(&r.value),
    }
}

pub fn consume(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let format = line_format(args.text, &args.key_separator)?;
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
            writeln!(out, "{}", print_line(p, &r, &format))?;
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
        format,
    };
    perform(&args.data.data, req, None, &stop)
}

/// Waits until topic `name` exists (a follower started before the pipeline
/// that creates it); `None` when stopped first.
fn wait_for_topic(
    log: &Log,
    name: &str,
    out: &mut dyn Out,
    stop: &AtomicBool,
) -> anyhow::Result<Option<weir::log::Topic>> {
    let mut told = false;
    let mut said = Instant::now();
    loop {
        let version = log.data_version();
        if let Some(t) = log.topic(name)? {
            return Ok(Some(t));
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if !told {
            // Checks the name (a typo is an error, not a wait).
            weir::log::check_name("topic", name)?;
            out.err(&format!("waiting for topic {name} to be created"))?;
            out.flush()?;
            told = true;
        }
        if log.follows() {
            std::thread::sleep(Duration::from_millis(100));
            log.catch_up()?;
        } else {
            log.wait_for_data(version, Duration::from_secs(1));
            idle_now_and_then(out, &mut said)?;
        }
    }
}

/// Tells a follower's client that nothing is new once a second, however
/// busy the log is with other topics: writing is how the owner finds out
/// that a client has gone (its thread then ends).
fn idle_now_and_then(out: &mut dyn Out, said: &mut Instant) -> anyhow::Result<()> {
    if said.elapsed() >= Duration::from_secs(1) {
        out.idle()?;
        *said = Instant::now();
    }
    Ok(())
}

pub(super) fn consume_log(
    log: &Log,
    topic: &str,
    read: &Reading,
    out: &mut dyn Out,
    stop: &AtomicBool,
) -> anyhow::Result<u8> {
    let Reading {
        from_beginning,
        partition,
        max,
        follow,
        ref format,
    } = *read;
    let topic = match follow {
        false => log.require_topic(topic)?,
        true => match wait_for_topic(log, topic, out, stop)? {
            Some(t) => t,
            None => return Ok(0),
        },
    };
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
            // The first record kept; on an empty partition offset 0, not
            // its end: a commit landing between "no record" and reading the
            // end would move the end past its records, which were then
            // never printed (a read seeks to the first record at or after
            // the offset it is given, so 0 is right after retention too).
            log.first_offset(&topic, *p)?.unwrap_or(0)
        } else {
            log.end_offset(&topic, *p)?
        });
    }
    let mut printed = 0usize;
    let mut said = Instant::now();
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
                    out.out(&print_line(*p, &r, format))?;
                    next[i] = s.offset + 1;
                    printed += 1;
                }
            }
        }
        out.flush()?;
        if !follow || stop.load(Ordering::SeqCst) {
            return Ok(0);
        }
        if any {
            said = Instant::now();
        } else if log.follows() {
            // Another process writes: look again every 100 ms.
            std::thread::sleep(Duration::from_millis(100));
            log.catch_up()?;
        } else {
            log.wait_for_data(version, Duration::from_secs(1));
            idle_now_and_then(out, &mut said)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Barrier, mpsc};

    use weir::log::TopicConfig;
    use weir::record::Record;

    use super::*;

    /// What a command printed.
    #[derive(Default)]
    struct Lines(Vec<String>);

    impl Out for Lines {
        fn out(&mut self, line: &str) -> std::io::Result<()> {
            self.0.push(line.to_string());
            Ok(())
        }

        fn err(&mut self, line: &str) -> std::io::Result<()> {
            self.0.push(format!("stderr: {line}"));
            Ok(())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_text_line_is_a_value_or_a_key_and_a_value() {
        let r = jsonl::text_record(b"k1=>a=>b", Some("=>")).unwrap();
        assert_eq!(
            (r.key.as_deref(), r.value.as_deref()),
            (Some(&b"k1"[..]), Some(&b"a=>b"[..]))
        );
        let r = jsonl::text_record(b"k1=>a", None).unwrap();
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"k1=>a"[..])));
        let r = jsonl::text_record(b"", None).unwrap();
        assert_eq!(r.value.as_deref(), Some(&b""[..]));
        assert_eq!(
            jsonl::text_record(b"k1 a", Some("\t")).unwrap_err().0,
            r#"no key separator "\t" in the line (with --key-separator, every line is KEY	VALUE)"#
        );
    }

    #[test]
    fn a_json_line_that_is_not_utf8_is_named_and_the_others_are_read() {
        let mut input: &[u8] = b"{\"value\":\"a\"}\n\xff\x01\n\n{\"value\":\"b\"}";
        let mut lines = Lines::default();
        let mut values = Vec::new();
        let bad = for_each_record(
            &mut input,
            "in.jsonl",
            &LineFormat::Json,
            &mut lines,
            |n, r, _| {
                values.push((n, r.value));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(bad, 1);
        assert_eq!(values, [(1, Some(b"a".to_vec())), (4, Some(b"b".to_vec()))]);
        assert_eq!(
            lines.0,
            [
                "stderr: error: in.jsonl:2: the line is not UTF-8 text (invalid utf-8 sequence of 1 bytes from index 0); give binary bytes as key_b64 / value_b64, or produce it with --text"
            ]
        );
    }

    /// A follower from the beginning that starts on an empty partition
    /// while a commit lands there prints that commit's records. (It used to
    /// start at the partition's end when it found no record and then read
    /// the end after the commit had moved it: it skipped the commit, then
    /// waited for records that had already come — the follower of a
    /// running pipeline that printed 101 of 120 records and stalled.) The
    /// race is narrow, so it is run many times, a commit and a follower
    /// released together each time.
    #[test]
    fn a_follower_from_the_beginning_prints_a_commit_that_lands_as_it_starts() {
        const RECORDS: usize = 19;
        let tmp = tempfile::tempdir().unwrap();
        let log = Log::open(tmp.path()).unwrap();
        for round in 0..400 {
            let name = format!("t{round}");
            let topic = log.create_topic(&name, TopicConfig::partitions(1)).unwrap();
            let both = Arc::new(Barrier::new(2));
            let writer = {
                let (log, both) = (log.clone(), both.clone());
                std::thread::spawn(move || {
                    let mut commit = Commit::default();
                    for i in 0..RECORDS {
                        let record = Record {
                            key: Some(format!("k{i}").into_bytes()),
                            value: Some(format!("v{i}").into_bytes()),
                            ..Record::default()
                        };
                        commit.append(&topic, 0, &record);
                    }
                    both.wait();
                    log.commit(commit).unwrap();
                })
            };
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, rx) = mpsc::channel();
            let follower = {
                let (log, stop, name) = (log.clone(), stop.clone(), name.clone());
                std::thread::spawn(move || {
                    let mut lines = Lines::default();
                    both.wait();
                    let read = Reading {
                        from_beginning: true,
                        partition: None,
                        max: Some(RECORDS),
                        follow: true,
                        format: LineFormat::Json,
                    };
                    let code = consume_log(&log, &name, &read, &mut lines, &stop);
                    let _ = tx.send(());
                    (code.unwrap(), lines.0)
                })
            };
            // A follower that skipped the commit waits for ever: stop it.
            let _ = rx.recv_timeout(Duration::from_secs(10));
            stop.store(true, Ordering::SeqCst);
            writer.join().unwrap();
            let (code, lines) = follower.join().unwrap();
            let offsets: Vec<i64> = lines
                .iter()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["offset"].as_i64().unwrap()
                })
                .collect();
            assert_eq!(
                offsets,
                (0..RECORDS as i64).collect::<Vec<_>>(),
                "round {round}: the offsets the follower printed"
            );
            assert_eq!(code, 0);
        }
    }
}
