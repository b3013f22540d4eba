//! `weir state get|scan`: a pipeline's state (interactive queries), served by
//! the data directory's owner when one runs, else read from the directory.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use clap::Subcommand;

use weir::log::Log;
use weir::pipeline::keys;

use super::log_cmds::{DataArgs, KafkaArgs, Out, Request, perform};

#[derive(Subcommand)]
pub enum StateCommand {
    /// The value of one key in a step's state (every window, for a windowed
    /// aggregate).
    #[command(override_usage = "weir state get [OPTIONS] [DATA] <PIPELINE> <STEP> <KEY>")]
    Get {
        /// [DATA] PIPELINE STEP KEY: the data directory (optional, as
        /// --data), the pipeline's name (its file's `name`), the step and
        /// the key (as UTF-8 text).
        #[arg(num_args = 3..=4, required = true, value_name = "ARGS")]
        args: Vec<String>,
        /// Only windows starting at or after this time (ms).
        #[arg(long)]
        from: Option<i64>,
        /// Only windows starting before this time (ms).
        #[arg(long)]
        to: Option<i64>,
        #[command(flatten)]
        data: DataArgs,
        /// The pipeline runs on Kafka: read the local copy of its state
        /// under the data directory (the partitions this machine ran).
        #[arg(long, env = "WEIR_BROKERS", value_name = "HOST:PORT,...")]
        brokers: Option<String>,
    },
    /// Every key of a step's state.
    #[command(override_usage = "weir state scan [OPTIONS] [DATA] <PIPELINE> <STEP>")]
    Scan {
        /// [DATA] PIPELINE STEP: the data directory (optional, as --data),
        /// the pipeline's name (its file's `name`) and the step.
        #[arg(num_args = 2..=3, required = true, value_name = "ARGS")]
        args: Vec<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 1000)]
        max: usize,
        #[command(flatten)]
        data: DataArgs,
        /// The pipeline runs on Kafka: read the local copy of its state
        /// under the data directory (the partitions this machine ran).
        #[arg(long, env = "WEIR_BROKERS", value_name = "HOST:PORT,...")]
        brokers: Option<String>,
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

/// The tables a join step keeps ('j', partition, then `l` for the left
/// side or `r` for the right, then the key): the newest value per key of a
/// stream-table join's table, of both sides of a table-table join, and of a
/// foreign-key join's right table (its middle part, keyed by the foreign
/// key), and a global table join's table (once). Prints up to `max` entries of `key` (every key without one) in the
/// partitions `runs` accepts, `{"table": "left"|"right", "key", "value"}`;
/// returns how many.
fn join_tables(
    log: &Log,
    pipe: &str,
    step: &str,
    key: Option<&str>,
    max: usize,
    runs: &dyn Fn(Option<&[u8]>) -> bool,
    out: &mut dyn Out,
) -> anyhow::Result<usize> {
    let mut prefix = keys::pipeline(pipe);
    prefix.push(b'j');
    prefix.extend_from_slice(step.as_bytes());
    prefix.push(0);
    let side_at = prefix.len() + 4;
    let entries = match key {
        Some(key) => {
            let mut found = Vec::new();
            for side in [b'l', b'r'] {
                found.extend(per_partition(log, &prefix, runs, |own| {
                    own.push(side);
                    keys::push_key(own, key.as_bytes());
                })?);
            }
            found
        }
        None => {
            let mut all = log.scan(&prefix, usize::MAX)?;
            all.retain(|(k, _)| {
                runs(k.get(prefix.len()..side_at)) && matches!(k.get(side_at), Some(b'l' | b'r'))
            });
            all
        }
    };
    let mut found = 0;
    // A global table join keeps the whole table in every partition: each
    // row is shown once, from the first partition that has it (any other
    // join keeps a key in one partition only).
    let mut seen = std::collections::HashSet::new();
    let entries = entries
        .into_iter()
        .filter(|(k, _)| seen.insert(k.get(side_at..).map(<[u8]>::to_vec).unwrap_or_default()));
    for (k, v) in entries.take(max) {
        let side = if k.get(side_at) == Some(&b'l') {
            "left"
        } else {
            "right"
        };
        let Some((kb, _)) = k.get(side_at + 1..).and_then(keys::take_key) else {
            bail!("a state entry of step {step} is corrupt");
        };
        let line = serde_json::json!({
            "table": side,
            "key": String::from_utf8_lossy(kb),
            "value": text(&v),
        });
        out.out(&line.to_string())?;
        found += 1;
    }
    Ok(found)
}

/// Where a pipeline's state is read: the data directory, or on Kafka the
/// local copy of its state stores.
fn local(data: DataArgs, pipeline: &str, brokers: Option<String>) -> DataArgs {
    match brokers {
        Some(_) => DataArgs {
            data: data.data.join("kafka").join(pipeline),
        },
        None => data,
    }
}

/// Splits `[DATA] PIPELINE STEP [KEY]` (`want` of them without DATA): a
/// leading data directory replaces `--data`.
fn positional(mut args: Vec<String>, want: usize, data: DataArgs) -> (DataArgs, Vec<String>) {
    if args.len() > want {
        let dir = args.remove(0);
        return (DataArgs { data: dir.into() }, args);
    }
    (data, args)
}

pub fn state(cmd: StateCommand) -> anyhow::Result<ExitCode> {
    let (data, pipeline, step, key, from, to, max) = match cmd {
        StateCommand::Get {
            args,
            data,
            from,
            to,
            brokers,
        } => {
            let (data, args) = positional(args, 3, data);
            let [pipeline, step, key]: [String; 3] = args
                .try_into()
                .map_err(|_| anyhow::anyhow!("give [DATA] PIPELINE STEP KEY"))?;
            (
                local(data, &pipeline, brokers),
                pipeline,
                step,
                Some(key),
                from,
                to,
                usize::MAX,
            )
        }
        StateCommand::Scan {
            args,
            data,
            max,
            brokers,
        } => {
            let (data, args) = positional(args, 2, data);
            let [pipeline, step]: [String; 2] = args
                .try_into()
                .map_err(|_| anyhow::anyhow!("give [DATA] PIPELINE STEP"))?;
            (
                local(data, &pipeline, brokers),
                pipeline,
                step,
                None,
                None,
                None,
                max,
            )
        }
    };
    let req = Request::State {
        pipeline,
        step,
        key,
        from,
        to,
        max,
    };
    perform(&data.data, req, None, &Arc::new(AtomicBool::new(false)))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn state_log(
    log: &Log,
    pipe: &str,
    step: &str,
    key: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    max: usize,
    instance: Option<&Instance>,
    out: &mut dyn Out,
) -> anyhow::Result<u8> {
    let mut found = 0usize;
    // Only the partitions this instance runs, when it says (on Kafka it may
    // hold a stale copy of partitions it no longer runs); of a step
    // partitioned as another source (a foreign-key join's middle part, as
    // its right table), those of that source.
    let own = instance.map(|i| i.for_step(step));
    let instance = own.as_ref();
    let runs = |p: Option<&[u8]>| {
        instance.is_none_or(|i| {
            p.and_then(|b| <[u8; 4]>::try_from(b).ok())
                .is_some_and(|b| i.partitions.contains(&u32::from_be_bytes(b)))
        })
    };
    // Where a key that is not here is, when another instance runs it.
    let elsewhere = |key: &str| {
        let i = instance?;
        let part = weir::log::partitioner::partition_for_key(key.as_bytes(), i.of);
        (!i.partitions.contains(&part)).then(|| {
            format!(
                ": key {key:?} belongs to partition {part} of {of}, which another instance of application {pipe} runs (this one runs partitions {runs:?}); query that one",
                of = i.of,
                runs = i.partitions
            )
        })
    };
    // Aggregates ('a') and table join state ('j'), every partition.
    let mut prefix = keys::pipeline(pipe);
    prefix.push(b'a');
    prefix.extend_from_slice(step.as_bytes());
    prefix.push(0);
    let entries = match &key {
        // A key's windows in each partition: a few seeks, however large
        // the state.
        Some(key) => {
            let mut found = Vec::new();
            for p in partitions_under(log, &prefix)? {
                if !runs(Some(&p)) {
                    continue;
                }
                let mut own = prefix.clone();
                own.extend_from_slice(&p);
                keys::push_key(&mut own, key.as_bytes());
                found.extend(log.scan(&own, max)?);
            }
            found
        }
        None => {
            let mut all = log.scan(&prefix, usize::MAX)?;
            all.retain(|(k, _)| runs(k.get(prefix.len()..prefix.len() + 4)));
            all
        }
    };
    for (k, v) in entries {
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
            out.out(&serde_json::Value::Object(obj).to_string())?;
            found += 1;
        }
    }
    // A processor's stores ('s'): store 0 partition key.
    let mut sp = keys::pipeline(pipe);
    sp.push(b's');
    sp.extend_from_slice(step.as_bytes());
    sp.push(0);
    let entries = match &key {
        // The key in each store and partition: one read each.
        Some(key) => {
            let mut found = Vec::new();
            for store in names_under(log, &sp)? {
                let mut pre = sp.clone();
                pre.extend_from_slice(&store);
                pre.push(0);
                found.extend(per_partition(log, &pre, &runs, |own| {
                    own.extend_from_slice(key.as_bytes())
                })?);
            }
            found
        }
        None => {
            let mut all = log.scan(&sp, usize::MAX)?;
            // The partition follows the store's name and its 0 byte.
            all.retain(|(k, _)| {
                let at = k
                    .get(sp.len()..)
                    .and_then(|r| r.iter().position(|b| *b == 0))
                    .map(|z| sp.len() + z + 1);
                runs(at.and_then(|a| k.get(a..a + 4)))
            });
            all
        }
    };
    for (k, v) in entries {
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
            out.out(&serde_json::Value::Object(obj).to_string())?;
            found += 1;
        }
    }
    found += join_tables(
        log,
        pipe,
        step,
        key.as_deref(),
        max - found.min(max),
        &runs,
        out,
    )?;
    if found == 0 {
        let hint = key.as_deref().and_then(elsewhere).unwrap_or_default();
        let steps = steps_with_state(log, pipe)?;
        if steps.is_empty() {
            out.err(&format!(
                "pipeline {pipe} has no state in {} (is the name right? it is the pipeline file's `name`){hint}",
                log.dir().display()
            ))?;
            return Ok(1);
        }
        if !steps.iter().any(|s| s == step) {
            out.err(&format!(
                "pipeline {pipe} has no state for a step {step}; its steps with state: {}",
                steps.join(", ")
            ))?;
            return Ok(1);
        }
        if let Some(k) = key {
            out.err(&format!(
                "no state for key {k:?} in step {step} of pipeline {pipe}{hint}"
            ))?;
            return Ok(1);
        }
        out.err(&format!(
            "step {step} of pipeline {pipe} has no state (is the step name right?)"
        ))?;
    }
    Ok(0)
}

/// The partitions an instance of a Kafka pipeline runs now, of how many.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Instance {
    pub partitions: Vec<u32>,
    pub of: u32,
    /// Steps partitioned as another source than the input (a foreign-key
    /// join's middle part, as its right table): their own.
    #[serde(default)]
    pub steps: std::collections::BTreeMap<String, Instance>,
}

impl Instance {
    /// The partitions this instance runs of `step`'s state.
    pub fn for_step(&self, step: &str) -> Instance {
        self.steps
            .get(step)
            .cloned()
            .unwrap_or_else(|| self.clone())
    }
}

/// What the instance running the Kafka pipeline whose local state is `log`
/// published of its assignment, if one runs (see
/// [`weir::kafka::backend::ASSIGNMENT_FILE`]).
pub(crate) fn instance_of(log: &Log) -> Option<Instance> {
    let text =
        std::fs::read_to_string(log.dir().join(weir::kafka::backend::ASSIGNMENT_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// One read in each partition under `prefix` that `runs` accepts: of
/// `prefix`, the partition, and what `tail` appends. Returns what is there.
fn per_partition(
    log: &Log,
    prefix: &[u8],
    runs: &dyn Fn(Option<&[u8]>) -> bool,
    tail: impl Fn(&mut Vec<u8>),
) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut found = Vec::new();
    for p in partitions_under(log, prefix)? {
        if !runs(Some(&p)) {
            continue;
        }
        let mut own = prefix.to_vec();
        own.extend_from_slice(&p);
        tail(&mut own);
        if let Some(v) = weir::backend::StateRead::get(log, &own)? {
            found.push((own, v));
        }
    }
    Ok(found)
}

/// The partitions (4 bytes each) that keys under `prefix` continue with,
/// each found with one seek.
fn partitions_under(log: &Log, prefix: &[u8]) -> anyhow::Result<Vec<[u8; 4]>> {
    use weir::backend::StateRead;
    let end = keys::prefix_end(prefix);
    let mut start = prefix.to_vec();
    let mut out = Vec::new();
    while let Some((k, _)) = log.range(&start, &end, 1)?.into_iter().next() {
        let Some(p) = k
            .get(prefix.len()..prefix.len() + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        else {
            break;
        };
        out.push(p);
        let Some(next) = u32::from_be_bytes(p).checked_add(1) else {
            break;
        };
        start.truncate(prefix.len());
        start.extend_from_slice(&next.to_be_bytes());
    }
    Ok(out)
}

/// The names (up to a 0 byte) that keys under `prefix` continue with, each
/// found with one seek.
fn names_under(log: &Log, prefix: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    use weir::backend::StateRead;
    let end = keys::prefix_end(prefix);
    let mut start = prefix.to_vec();
    let mut out = Vec::new();
    let at = prefix.len();
    while let Some((k, _)) = log.range(&start, &end, 1)?.into_iter().next() {
        let Some(len) = k.get(at..).and_then(|r| r.iter().position(|b| *b == 0)) else {
            break;
        };
        let name = k[at..at + len].to_vec();
        // Past every key under this name: the name, then 0x01.
        start.truncate(at);
        start.extend_from_slice(&name);
        start.push(1);
        out.push(name);
    }
    Ok(out)
}

/// The steps of `pipe` that hold state (aggregates, table joins and
/// processors), each found with one seek.
fn steps_with_state(log: &Log, pipe: &str) -> anyhow::Result<Vec<String>> {
    let mut steps = Vec::new();
    for kind in [b'a', b's', b'j'] {
        let mut prefix = keys::pipeline(pipe);
        prefix.push(kind);
        for name in names_under(log, &prefix)? {
            let name = String::from_utf8_lossy(&name).into_owned();
            if !steps.contains(&name) {
                steps.push(name);
            }
        }
    }
    steps.sort();
    Ok(steps)
}

/// `weir reset`: the options.
#[derive(clap::Args)]
pub struct ResetArgs {
    /// The pipeline's name (its `name` field), or its file (whose
    /// `[kafka]` section, if any, names the cluster).
    pub pipeline: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// The pipeline runs on Kafka: delete its consumer group and internal
    /// topics there, and its local state under the data directory.
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// `weir reset NAME`: the pipeline's next run reprocesses its inputs from
/// the start, with no state (the seed's reprocessing by resetting, as Kafka
/// Streams' application reset tool).
pub fn reset(args: ResetArgs) -> anyhow::Result<ExitCode> {
    let (name, conn) = if args.pipeline.ends_with(".toml") {
        let p = weir::pipeline::config::load(Path::new(&args.pipeline))?;
        let conn = super::run_cmd::kafka_connection(&p, args.kafka.connection()).map(|(c, _)| c);
        (p.name, conn)
    } else {
        (args.pipeline, args.kafka.connection())
    };
    if let Some(conn) = conn {
        return reset_kafka(&conn, &name, &args.data.data);
    }
    let stop = Arc::new(AtomicBool::new(false));
    perform(
        &args.data.data,
        Request::Reset { pipeline: name },
        None,
        &stop,
    )
}

/// Forgets `pipeline`'s input positions, stream times and state, and
/// deletes its repartition topics (`NAME-STEP-repartition`); its output
/// and dead-letter topics are kept. Returns how many entries it forgot and
/// the topics it deleted.
pub(crate) fn reset_embedded(log: &Log, pipeline: &str) -> anyhow::Result<(u64, Vec<String>)> {
    weir::log::check_name("pipeline", pipeline)?;
    let prefix = format!("{pipeline}-");
    let mut internal = Vec::new();
    for t in log.topics()?.into_iter().map(|t| t.name) {
        if t.starts_with(&prefix)
            && t.ends_with("-repartition")
            && !other_pipelines_topic(log, pipeline, &t)?
        {
            internal.push(t);
        }
    }
    let entries = log.delete_prefix(&keys::pipeline(pipeline))?;
    internal.sort();
    for t in &internal {
        log.delete_topic(t)?;
    }
    Ok((entries, internal))
}

/// Whether repartition topic `topic` (`PIPELINE-...-repartition`) is that
/// of another pipeline whose name starts with `PIPELINE-` (`wc-2`'s
/// `wc-2-count-repartition` for pipeline `wc`, or a daemon's shadow
/// `wc-shadow`): one with positions or state in `log`, unless `pipeline`'s
/// own positions name the topic.
fn other_pipelines_topic(log: &Log, pipeline: &str, topic: &str) -> anyhow::Result<bool> {
    let mut own = weir::log::position_key(pipeline, topic, 0);
    own.truncate(own.len() - 4);
    if !log.scan(&own, 1)?.is_empty() {
        return Ok(false);
    }
    let body = &topic[..topic.len() - "-repartition".len()];
    for (at, _) in body
        .match_indices('-')
        .filter(|(at, _)| *at > pipeline.len())
    {
        if !log.scan(&keys::pipeline(&body[..at]), 1)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// [`reset_embedded`], telling `out` what it did.
pub(super) fn reset_log(log: &Log, pipeline: &str, out: &mut dyn Out) -> anyhow::Result<u8> {
    let (entries, internal) = reset_embedded(log, pipeline)?;
    if entries == 0 && internal.is_empty() {
        out.err(&format!(
            "pipeline {pipeline} has no positions, state or repartition topics in {} (is the name right? it is the pipeline file's `name`)",
            log.dir().display()
        ))?;
        return Ok(1);
    }
    let topics = match internal.len() {
        0 => String::new(),
        _ => format!(
            " and deleted its repartition topic{} {}",
            if internal.len() == 1 { "" } else { "s" },
            internal.join(", ")
        ),
    };
    out.out(&format!(
        "reset pipeline {pipeline}: forgot its input positions and state ({entries} entr{}){topics}; its next run reads its inputs from the start. Its output topics are kept: delete them with `weir topic delete` to start them empty",
        if entries == 1 { "y" } else { "ies" }
    ))?;
    Ok(0)
}

/// `weir reset NAME --brokers ...`: the application reset on Kafka (its
/// consumer group and internal topics) and its local state under `data`.
fn reset_kafka(
    conn: &weir::kafka::Connection,
    pipeline: &str,
    data: &Path,
) -> anyhow::Result<ExitCode> {
    weir::log::check_name("pipeline", pipeline)?;
    let done = weir::kafka::admin::reset_app(conn, pipeline)?;
    let local = data.join("kafka").join(pipeline);
    let had_local = local.exists();
    if had_local {
        std::fs::remove_dir_all(&local)
            .with_context(|| format!("cannot delete the local state {}", local.display()))?;
    }
    if !done.group && done.topics.is_empty() && !had_local {
        eprintln!(
            "pipeline {pipeline} has no consumer group or internal topics on Kafka at {} and no local state in {} (is the name right? it is the pipeline file's `name`)",
            conn.brokers,
            local.display()
        );
        return Ok(ExitCode::from(1));
    }
    let mut did = Vec::new();
    if done.group {
        did.push(format!(
            "deleted its consumer group {pipeline} (its input positions)"
        ));
    }
    if !done.topics.is_empty() {
        did.push(format!(
            "deleted its internal topics {}",
            done.topics.join(", ")
        ));
    }
    if had_local {
        did.push(format!("deleted its local state {}", local.display()));
    }
    println!(
        "reset pipeline {pipeline} on Kafka: {}; its next run reads its inputs from the start. Its output topics are kept",
        did.join("; ")
    );
    Ok(ExitCode::SUCCESS)
}
