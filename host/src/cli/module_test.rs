//! `weir test MODULE.wasm --input FILE.jsonl`: one function over one file
//! of records, in memory, by its world:
//!
//! - a mapper: each record through `process`, in batches of `--batch`; its
//!   outputs in input order;
//! - a processor: the processor operator of a pipeline (the same code a
//!   one-step pipeline runs), its state stores in memory, its event-time
//!   timers firing after each batch once the stream time passes them, and at
//!   the end of the input every timer still set (event time moves to the
//!   latest of them); wall-clock timers follow a clock that stays at 0;
//! - an aggregator: a one-step unwindowed pipeline in memory; each key's
//!   presented value at the end;
//! - a joiner: refused, with a pipeline file to test it in.
//!
//! Outputs go to stdout as JSON lines, dead letters to stderr; with
//! `--expect` the outputs are compared instead of printed.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use serde_json::{Map, Value};

use weir::backend::{StateRead, Txn};
use weir::jsonl;
use weir::operators::{self, Collector, Ctx, Item};
use weir::pipeline::keys;
use weir::record::{DeadLetter, Packed, Record};
use weir::runtime::guest::{Emitted, process_batch};
use weir::runtime::{Module, Runtime, Step, World};

use super::RuntimeArgs;
use super::expect::Expected;

/// What a module test is given.
pub struct ModuleTest<'a> {
    pub module: &'a Path,
    pub input: &'a Path,
    /// A plain-text input (with the key separator, if any), not JSON lines.
    pub text: Option<Option<&'a str>>,
    pub config: &'a [(String, String)],
    pub batch: usize,
    pub runtime: &'a RuntimeArgs,
    /// Compare the outputs with this file instead of printing them.
    pub expect: Option<&'a Path>,
    pub ignore_order: bool,
    /// The comparison's report as JSON lines.
    pub json: bool,
}

/// Where a module test's outputs go: stdout as they come, or kept for the
/// comparison with the expected records.
struct Sink {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    kept: Option<Vec<Map<String, Value>>>,
}

impl Sink {
    fn new(keep: bool) -> Self {
        Sink {
            out: std::io::BufWriter::new(std::io::stdout().lock()),
            kept: keep.then(Vec::new),
        }
    }

    fn output(&mut self, obj: Map<String, Value>) -> anyhow::Result<()> {
        match &mut self.kept {
            Some(kept) => kept.push(obj),
            None => writeln!(self.out, "{}", Value::Object(obj))?,
        }
        Ok(())
    }

    /// An output of a mapper or processor: `{"output": NAME|null, ...record}`.
    fn record(&mut self, to: Option<String>, r: &Record) -> anyhow::Result<()> {
        let mut obj = Map::new();
        obj.insert("output".into(), to.map_or(Value::Null, Value::String));
        obj.extend(jsonl::record_json(r));
        self.output(obj)
    }

    /// A dead letter, to stderr after what came before it on stdout.
    fn dead(&mut self, d: &DeadLetter) -> anyhow::Result<()> {
        self.out.flush()?;
        writeln!(std::io::stderr().lock(), "{}", jsonl::dead_letter_line(d))?;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// Runs the test.
pub fn run(t: ModuleTest<'_>) -> anyhow::Result<ExitCode> {
    // Read first: a mistake in it is reported before the run.
    let expected = t.expect.map(super::expect::read).transpose()?;
    let options = t.runtime.options();
    let runtime = Runtime::new(options)?;
    super::require_module(t.module)?;
    let module = runtime.load_file(t.module)?;
    let mut sink = Sink::new(expected.is_some());
    let bad_lines = match module.world() {
        World::Mapper => mapper(module, &t, &mut sink)?,
        World::Processor => processor(module, &t, &mut sink)?,
        World::Aggregator => {
            super::testdriver::run_aggregator(
                t.module,
                t.input,
                t.text,
                t.config,
                t.batch,
                t.runtime,
                |o| sink.output(o),
            )?;
            0
        }
        World::Joiner => return Err(super::testdriver::joiner_alone(t.module)),
    };
    sink.flush()?;
    let mut code = ExitCode::SUCCESS;
    if bad_lines > 0 {
        eprintln!(
            "error: {} malformed line{} in {} (the other records were processed)",
            bad_lines,
            if bad_lines == 1 { "" } else { "s" },
            t.input.display()
        );
        code = ExitCode::FAILURE;
    }
    if let (Some(expected), Some(file), Some(actual)) = (expected, t.expect, sink.kept.take()) {
        code = compare(&mut sink, file, &expected, &actual, &t)?.unwrap_or(code);
    }
    sink.flush()?;
    Ok(code)
}

/// Prints the comparison; `Some(FAILURE)` when the outputs differ.
fn compare(
    sink: &mut Sink,
    file: &Path,
    expected: &[Expected],
    actual: &[Map<String, Value>],
    t: &ModuleTest<'_>,
) -> anyhow::Result<Option<ExitCode>> {
    let (report, equal) = super::expect::compare(file, expected, actual, t.ignore_order, t.json);
    if equal && !t.json {
        writeln!(
            sink.out,
            "{}: {}, as expected",
            file.display(),
            super::count_of(expected.len() as u64, "record")
        )?;
    }
    write!(sink.out, "{report}")?;
    Ok((!equal).then_some(ExitCode::FAILURE))
}

/// Reads the input in batches of `batch` records and calls `f` on each.
/// Offsets are 0-based positions among the records, as in a topic partition
/// that `weir produce` filled from the same file (blank and malformed lines
/// take none); a malformed line is reported on stderr, after the outputs of
/// the records before it, and counted.
fn batches(
    input: &Path,
    text: Option<Option<&str>>,
    batch: usize,
    sink: &mut Sink,
    mut f: impl FnMut(&[Record], &mut Sink) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let file = std::fs::File::open(input)
        .with_context(|| format!("cannot open the input file {}", input.display()))?;
    let mut bad_lines = 0usize;
    let mut offset = 0i64;
    let mut records = Vec::with_capacity(batch);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let number = n + 1;
        let line =
            line.with_context(|| format!("cannot read {} at line {number}", input.display()))?;
        let parsed = match text {
            Some(separator) => jsonl::text_record(line.as_bytes(), separator)
                .map(|r| weir::record::Record { offset, ..r }),
            None if line.trim().is_empty() => continue,
            None => jsonl::parse_record(&line, offset),
        };
        match parsed {
            Ok(r) => {
                records.push(r);
                offset += 1;
            }
            Err(e) => {
                // Keep the order of what is printed: the records before first.
                if !records.is_empty() {
                    f(&records, sink)?;
                    records.clear();
                }
                sink.flush()?;
                bad_lines += 1;
                eprintln!("error: {}:{number}: {e}", input.display());
            }
        }
        if records.len() == batch {
            f(&records, sink)?;
            records.clear();
        }
    }
    if !records.is_empty() {
        f(&records, sink)?;
    }
    Ok(bad_lines)
}

/// A mapper: each batch through `process`; outputs in input order.
fn mapper(module: Module, t: &ModuleTest<'_>, sink: &mut Sink) -> anyhow::Result<usize> {
    let mut step = Step::new(module, "test", t.config.to_vec(), &t.runtime.options());
    step.start()?;
    batches(t.input, t.text, t.batch.max(1), sink, |records, sink| {
        let packed: Vec<Packed> = records.iter().map(Packed::from_record).collect();
        let (outcomes, _) = process_batch(&mut step, &packed, None)?;
        for (i, outcome) in outcomes {
            match outcome {
                Emitted::Output(to, rec) => sink.record(to, &rec.to_record())?,
                Emitted::Failed(failure) => sink.dead(&DeadLetter {
                    record: records[i].clone(),
                    failure,
                })?,
            }
        }
        Ok(())
    })
}

/// A processor: the pipeline's processor operator over the input, its state
/// in memory; then, at the end of the input, event time moves to the latest
/// event-time timer still set, so that every one of them fires.
fn processor(module: Module, t: &ModuleTest<'_>, sink: &mut Sink) -> anyhow::Result<usize> {
    let pipe = super::testdriver::one_step(t.module, "processor", t.config)?;
    let Some(cfg) = pipe.steps.first().cloned() else {
        anyhow::bail!("a one-step pipeline has no step");
    };
    let mut step = Step::new(module, &cfg.name, cfg.config.clone(), &t.runtime.options());
    step.start()?;
    let step_name = cfg.name.clone();
    let mut op = operators::build(cfg, Box::new(step));
    let committed = Arc::new(Committed::default());
    let base: Arc<dyn StateRead> = committed.clone();
    let mut txn = Txn::default();
    let mut stream_time = i64::MIN;
    let mut seq = 0u64;
    // One call of the operator: a batch, or (`None`) the end of the input.
    let mut call = |records: Option<&[Record]>, sink: &mut Sink| -> anyhow::Result<()> {
        let mut out = Collector {
            any_output: true,
            ..Collector::default()
        };
        let mut cx = Ctx {
            pipeline: &pipe.name,
            partition: 0,
            base: &base,
            txn: &mut txn,
            batch_time: stream_time,
            stream_time: &mut stream_time,
            out: &mut out,
            now_ms: 0,
        };
        let next = match records {
            Some(records) => {
                let flow = records
                    .iter()
                    .map(|r| {
                        seq += 1;
                        Item {
                            seq,
                            rec: Packed::from_record(r),
                        }
                    })
                    .collect();
                op.run(&mut cx, flow, Vec::new())?
            }
            None => {
                if let Some(latest) = latest_timer(&cx, &pipe.name, &step_name)? {
                    cx.observe(latest);
                }
                op.tick(&mut cx, seq)?
            }
        };
        for it in next {
            sink.record(None, &it.rec.to_record())?;
        }
        for (to, rec) in out.emitted {
            sink.record(Some(to), &rec.to_record())?;
        }
        for (_, d) in out.dead {
            sink.dead(&d)?;
        }
        // Each call's changes are committed, as a task commits a batch.
        committed.apply(txn.take());
        Ok(())
    };
    let bad_lines = batches(t.input, t.text, t.batch.max(1), sink, |records, sink| {
        call(Some(records), sink)
    })?;
    call(None, sink)?;
    Ok(bad_lines)
}

/// A processor's committed state, in memory.
#[derive(Default)]
struct Committed(RwLock<BTreeMap<Vec<u8>, Vec<u8>>>);

impl Committed {
    fn apply(&self, changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        for (k, v) in changes {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
    }
}

impl StateRead for Committed {
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(key).cloned())
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range(start.to_vec()..end.to_vec())
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// The time of the latest event-time timer set, if any.
fn latest_timer(cx: &Ctx<'_>, pipe: &str, step: &str) -> anyhow::Result<Option<i64>> {
    let prefix = keys::timers(pipe, step, 0, 0);
    let end = keys::prefix_end(&prefix);
    let all = cx.range(&prefix, &end, usize::MAX)?;
    Ok(all
        .last()
        .and_then(|(k, _)| keys::take_i64(&k[prefix.len()..]))
        .map(|(time, _)| time))
}
