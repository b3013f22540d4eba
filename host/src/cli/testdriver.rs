//! `weir test PIPELINE.toml`: a whole pipeline run in memory. The inputs
//! are produced into topics of a [`MemoryBackend`], the pipeline runs until
//! they are consumed, and every record of every output topic is printed.
//! Wall-clock timers follow a simulated clock that starts at 0 and moves
//! only when told (`--advance-wall`, or an `{"advance_wall_ms": N}` line).

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use anyhow::{Context, bail};
use serde_json::{Map, Value};

use weir::backend::memory::MemoryBackend;
use weir::backend::{Backend, TopicConfig};
use weir::jsonl;
use weir::log::partitioner::partition_for_key;
use weir::pipeline::{self, RunOptions, keys};
use weir::record::Record;
use weir::runtime::Runtime;

use super::RuntimeArgs;

/// What a pipeline test is given.
pub struct PipelineTest<'a> {
    pub pipeline: &'a Path,
    /// `TOPIC=FILE` pairs.
    pub inputs: &'a [String],
    /// Plain-text inputs (with the key separator, if any), not JSON lines.
    pub text: Option<Option<&'a str>>,
    pub partitions: u32,
    pub advance_wall_ms: i64,
    pub batch: usize,
    pub runtime: &'a RuntimeArgs,
    /// Compare the outputs with this file instead of printing them.
    pub expect: Option<&'a Path>,
    pub ignore_order: bool,
    /// Print the final state of every step after the outputs.
    pub state: bool,
    /// Everything as JSON lines.
    pub json: bool,
}

/// The records of one input file, cut where an `advance_wall_ms` line stands.
struct Input {
    topic: String,
    /// Records of each phase, and the wall-clock advance after it.
    phases: Vec<(Vec<Record>, i64)>,
}

fn read_input(topic: &str, file: &Path, text: Option<Option<&str>>) -> anyhow::Result<Input> {
    let f = std::fs::File::open(file)
        .with_context(|| format!("cannot open the input file {}", file.display()))?;
    let mut phases = vec![(Vec::new(), 0i64)];
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let number = n + 1;
        let line =
            line.with_context(|| format!("cannot read {} at line {number}", file.display()))?;
        if let Some(separator) = text {
            let r = jsonl::text_record(line.as_bytes(), separator)
                .map_err(|e| anyhow::anyhow!("{}:{number}: {e}", file.display()))?;
            if let Some(last) = phases.last_mut() {
                last.0.push(r);
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&line)
            && let Some(v) = o.get("advance_wall_ms")
        {
            let ms = v.as_i64().filter(|ms| *ms >= 0 && o.len() == 1).with_context(|| {
                format!(
                    "{}:{number}: an `advance_wall_ms` line must be {{\"advance_wall_ms\": N}} with N a whole number of milliseconds, 0 or more",
                    file.display()
                )
            })?;
            if let Some(last) = phases.last_mut() {
                last.1 += ms;
            }
            phases.push((Vec::new(), 0));
            continue;
        }
        let r = jsonl::parse_record(&line, 0)
            .map_err(|e| anyhow::anyhow!("{}:{number}: {e}", file.display()))?;
        if let Some(last) = phases.last_mut() {
            last.0.push(r);
        }
    }
    Ok(Input {
        topic: topic.to_string(),
        phases,
    })
}

/// Runs the test; prints the outputs.
pub fn run(t: PipelineTest<'_>) -> anyhow::Result<ExitCode> {
    let pipe = pipeline::config::load(t.pipeline)?;
    // Read first: a mistake in it is reported before the run.
    let expected = t.expect.map(super::expect::read).transpose()?;
    let mut inputs = Vec::new();
    for spec in t.inputs {
        let Some((topic, file)) = spec
            .split_once('=')
            .filter(|(t, f)| !t.is_empty() && !f.is_empty())
        else {
            bail!(
                "--input {spec:?}: a pipeline test takes --input TOPIC=FILE.jsonl (for example --input {}=input.jsonl)",
                pipe.input
            );
        };
        inputs.push(read_input(topic, &PathBuf::from(file), t.text)?);
    }
    let mut known: BTreeSet<String> = BTreeSet::from([pipe.input.clone()]);
    known.extend(pipe.merged.iter().cloned());
    known.extend(pipe.steps.iter().filter_map(|s| s.with.clone()));
    for i in &inputs {
        if !known.contains(&i.topic) {
            bail!(
                "--input {}=...: pipeline {} ({}) reads no topic {}; it reads {}",
                i.topic,
                pipe.name,
                t.pipeline.display(),
                i.topic,
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let mem = execute(
        &pipe,
        &inputs,
        t.partitions,
        t.advance_wall_ms,
        t.batch,
        t.runtime,
    )?;
    let parts = t.partitions.max(1);

    // Every output topic: the pipeline's output, named outputs, dead letters.
    let mut outputs: BTreeSet<String> = BTreeSet::new();
    outputs.extend(pipe.output.clone());
    for s in &pipe.steps {
        outputs.extend(s.outputs.values().cloned());
    }
    outputs.insert(pipeline::dead_letter_topic(&pipe));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut code = ExitCode::SUCCESS;
    if let (Some(expected), Some(file)) = (expected, t.expect) {
        let mut actual = Vec::new();
        for topic in &outputs {
            for p in 0..parts {
                for r in mem.records(topic, p) {
                    actual.push(output_json(topic, p, &r));
                }
            }
        }
        let (report, equal) =
            super::expect::compare(file, &expected, &actual, t.ignore_order, t.json);
        if equal && !t.json {
            writeln!(
                out,
                "{}: {}, as expected",
                file.display(),
                super::count_of(expected.len() as u64, "record")
            )?;
        }
        write!(out, "{report}")?;
        if !equal {
            code = ExitCode::FAILURE;
        }
    } else {
        for topic in &outputs {
            for p in 0..parts {
                for r in mem.records(topic, p) {
                    writeln!(out, "{}", Value::Object(output_json(topic, p, &r)))?;
                }
            }
        }
    }
    if t.state {
        print_state(&mut out, &pipe, &mem, t.json)?;
    }
    out.flush()?;
    Ok(code)
}

/// The final state of every step, as `weir state scan` prints it: under a
/// `# state of step S` line, or with `--json` each entry with its `"step"`.
fn print_state(
    out: &mut dyn Write,
    pipe: &pipeline::Pipeline,
    mem: &MemoryBackend,
    json: bool,
) -> anyhow::Result<()> {
    let state = mem.state();
    for step in &pipe.steps {
        let mut lines = Vec::new();
        for (tag, aggregate) in [(b'a', true), (b's', false)] {
            let mut prefix = keys::pipeline(&pipe.name);
            prefix.push(tag);
            prefix.extend_from_slice(step.name.as_bytes());
            prefix.push(0);
            for (k, v) in state.range(prefix.clone()..) {
                if !k.starts_with(&prefix) {
                    break;
                }
                let entry = if aggregate {
                    super::state_cmds::aggregate_entry(prefix.len(), k, v).map(|(_, _, o)| o)
                } else {
                    super::state_cmds::store_entry(prefix.len(), k, v).map(|(_, o)| o)
                };
                let Some(obj) = entry else {
                    bail!("a state entry of step {} is corrupt", step.name);
                };
                lines.push(obj);
            }
        }
        if lines.is_empty() {
            continue;
        }
        if !json {
            writeln!(out, "# state of step {}", step.name)?;
        }
        for obj in lines {
            let v = if json {
                let mut o = Map::new();
                o.insert("step".into(), step.name.clone().into());
                o.extend(obj);
                Value::Object(o)
            } else {
                Value::Object(obj)
            };
            writeln!(out, "{v}")?;
        }
    }
    Ok(())
}

/// Runs `pipe` in memory over `inputs`; gives the backend with what it wrote.
fn execute(
    pipe: &pipeline::Pipeline,
    inputs: &[Input],
    partitions: u32,
    advance_wall_ms: i64,
    batch: usize,
    runtime: &RuntimeArgs,
) -> anyhow::Result<MemoryBackend> {
    let mut known: BTreeSet<String> = BTreeSet::from([pipe.input.clone()]);
    known.extend(pipe.merged.iter().cloned());
    known.extend(pipe.steps.iter().filter_map(|s| s.with.clone()));
    let mem = MemoryBackend::new();
    let parts = partitions.max(1);
    for name in &known {
        mem.create_topic(name, TopicConfig::partitions(parts))?;
    }
    let runtime = Runtime::new(runtime.options())?;
    let clock = Arc::new(AtomicI64::new(0));
    let options = RunOptions {
        until_caught_up: true,
        progress: false,
        batch: batch.max(1),
        native: None,
        now_ms: Some(clock.clone()),
    };
    let backend: Arc<dyn Backend> = Arc::new(mem.clone());
    let phases = inputs.iter().map(|i| i.phases.len()).max().unwrap_or(1);
    let mut round_robin = 0u32;
    let run_once = |backend: &Arc<dyn Backend>| -> anyhow::Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = pipeline::engine::start(backend.clone(), pipe, &runtime, &options, stop)?;
        handle.wait()?;
        Ok(())
    };
    for phase in 0..phases {
        let mut advance = 0i64;
        for input in inputs {
            let Some((records, adv)) = input.phases.get(phase) else {
                continue;
            };
            advance = advance.max(*adv);
            let topic = backend.require_topic(&input.topic)?;
            for r in records {
                let p = match &r.key {
                    Some(k) => partition_for_key(k, parts),
                    None => {
                        round_robin = round_robin.wrapping_add(1);
                        (round_robin - 1) % parts
                    }
                };
                mem.produce(&topic, p, std::slice::from_ref(r));
            }
        }
        run_once(&backend)?;
        if advance > 0 {
            // The clock moves once the records before the line are
            // processed; a run with nothing new to read fires the timers.
            clock.fetch_add(advance, Ordering::SeqCst);
            run_once(&backend)?;
        }
    }
    if advance_wall_ms > 0 {
        clock.fetch_add(advance_wall_ms, Ordering::SeqCst);
        run_once(&backend)?;
    }
    Ok(mem)
}

/// One output record: topic, partition, offset, then the record.
fn output_json(topic: &str, partition: u32, r: &Record) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("topic".into(), topic.into());
    obj.insert("partition".into(), partition.into());
    obj.insert("offset".into(), r.offset.into());
    obj.extend(jsonl::record_json(r));
    obj
}

/// A pipeline of one step of `kind` running `module` with `config`, from
/// topic `input` to topic `output` (what `weir test MODULE.wasm` runs).
pub fn one_step(
    module: &Path,
    kind: &str,
    config: &[(String, String)],
) -> anyhow::Result<pipeline::Pipeline> {
    let module = std::fs::canonicalize(module)
        .with_context(|| format!("cannot resolve {}", module.display()))?;
    let q = |s: &str| Value::String(s.to_string()).to_string();
    let settings: Vec<String> = config
        .iter()
        .map(|(k, v)| format!("{} = {}", q(k), q(v)))
        .collect();
    let name = if kind == "aggregate" {
        "aggregate"
    } else {
        "process"
    };
    let text = format!(
        "name = \"test\"\ninput = \"input\"\noutput = \"output\"\n[[steps]]\nname = \"{name}\"\nkind = \"{kind}\"\nmodule = {}\nconfig = {{ {} }}\n",
        q(&module.to_string_lossy()),
        settings.join(", ")
    );
    Ok(pipeline::config::parse(&module, &text)?)
}

/// `weir test AGGREGATOR.wasm --input FILE.jsonl`: the module as the one
/// step of a pipeline in memory, unwindowed: each key's records fold into
/// one group, and its presented value at the end goes to `emit` per key (in
/// key order) as `{"key": ..., "value": ...}`. Dead letters go to stderr.
pub fn run_aggregator(
    module: &Path,
    input: &Path,
    text: Option<Option<&str>>,
    config: &[(String, String)],
    batch: usize,
    runtime: &RuntimeArgs,
    mut emit: impl FnMut(Map<String, Value>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let pipe = one_step(module, "aggregate", config)?;
    let inputs = [read_input("input", input, text)?];
    let mem = execute(&pipe, &inputs, 1, 0, batch, runtime)?;
    // The last update of each key is its value at the end.
    let mut last: std::collections::BTreeMap<Option<Vec<u8>>, Record> = Default::default();
    for r in mem.records("output", 0) {
        last.insert(r.key.clone(), r);
    }
    for r in last.values() {
        let mut obj = jsonl::record_json(r);
        obj.remove("timestamp");
        obj.remove("headers");
        emit(obj)?;
    }
    let dead = mem.records(&pipeline::dead_letter_topic(&pipe), 0);
    for r in &dead {
        eprintln!("{}", Value::Object(jsonl::record_json(r)));
    }
    Ok(())
}

/// What `weir test JOINER.wasm` says: a join needs two inputs.
pub fn joiner_alone(module: &Path) -> anyhow::Error {
    let file = module.file_name().map_or_else(
        || module.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    anyhow::anyhow!(
        "{}: is a joiner, which joins two inputs; test it in a pipeline file, e.g. join.toml:\n\n    name = \"join-test\"\n    input = \"left\"\n    output = \"joined\"\n    steps = [{{ name = \"join\", kind = \"join\", module = \"{file}\", with = \"right\", with_kind = \"table\" }}]\n\nthen: weir test join.toml --input left=left.jsonl --input right=right.jsonl",
        module.display()
    )
}
