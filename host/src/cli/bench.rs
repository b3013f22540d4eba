//! `weir bench`: what crossing the Wasm boundary costs.
//!
//! The harness is the one a pipeline task runs: records arrive as packed
//! batches (the layout the embedded log stores), the step's function runs
//! over each batch, and every output's key and value are copied once into a
//! sink buffer (as into a RocksDB write batch). The native rows run the very
//! same per-record function through the same SDK code (`weir-guest`'s batch
//! driver, compiled natively), so the ratio is the cost of the boundary and
//! of WebAssembly itself, nothing else. A plain loop over owned records,
//! without the batch encoding, is printed for reference.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use weir::codec::{self, Entry};
use weir::log::{Commit, Log};
use weir::record::Record;
use weir::runtime::{Call, Guest, Runtime, RuntimeOptions, Step};

#[path = "latency.rs"]
mod latency;
#[path = "bench_pipelines.rs"]
mod pipelines;
#[path = "swap_bench.rs"]
mod swap_bench;

/// Options of `weir bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The `uppercase` example, built for wasm32-wasip2.
    #[arg(long, value_name = "WASM")]
    pub module: PathBuf,
    /// Records per run.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Records per batch for the batched rows.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Runs of each row; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Instead: end-to-end pipelines on the embedded log (a map, and word
    /// count), with Wasm steps and with the same steps compiled natively.
    /// The modules are taken from the directory of --module.
    #[arg(long)]
    pub pipelines: bool,
    /// Instead: N event-time timers of a processor coming due at once, on
    /// the embedded log: how long firing them takes.
    #[arg(long, value_name = "N")]
    pub timers: Option<usize>,
    /// (internal) Run one pipeline benchmark in this process: storage | map | wordcount | bursts.
    #[arg(long, hide = true)]
    pub one: Option<String>,
    /// (internal) With --one: native steps.
    #[arg(long, hide = true)]
    pub native: bool,
    /// (internal) With --one wordcount: words drawn uniformly from this
    /// many distinct words (none: the fixed ten-word vocabulary).
    #[arg(long, hide = true)]
    pub words: Option<usize>,
    /// Instead: end-to-end latency through a running `weir run` (a map, and
    /// word count): records produced one at a time and in bursts through the
    /// owner's socket, timed from the produce returning to the output being
    /// readable; then the idle CPU of the running pipeline. The modules are
    /// taken from the directory of --module.
    #[arg(long)]
    pub latency: bool,
    /// Instead: the daemon's hot swap under load (pause p50/p99 over 100
    /// swaps), the time to precompile an upload, and a pipeline's
    /// throughput beside its shadow. `lowercase.wasm` must sit beside
    /// --module.
    #[arg(long)]
    pub swap: bool,
    /// With --pipelines: each task's commit interval (default: the
    /// pipeline default, 100ms).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub commit_interval: Option<Duration>,
    /// With --pipelines: each task's state cache bound in bytes (default:
    /// the pipeline default, 16 MiB).
    #[arg(long, value_name = "BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// With --latency: records produced one at a time (bursts send as many).
    #[arg(long, default_value_t = 500)]
    pub singles: usize,
}

/// `examples/split-words`, compiled natively.
fn native_split(r: weir_guest::Record) -> Result<Vec<weir_guest::Output>, weir_guest::Error> {
    let line = r.value_str()?.to_lowercase();
    Ok(line
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && *w != "the")
        .map(|w| weir_guest::Output::keyed(w, w))
        .collect())
}

/// `examples/count`, compiled natively.
struct NativeCount;

impl weir_guest::Aggregate for NativeCount {
    type Acc = u64;
    fn init() -> u64 {
        0
    }
    fn add(acc: &mut u64, _r: &weir_guest::Record) -> Result<(), weir_guest::Error> {
        *acc += 1;
        Ok(())
    }
    fn merge(a: u64, b: u64) -> u64 {
        a + b
    }
}

fn native_step(file: &str) -> Option<weir::runtime::NativeFn> {
    use weir_guest::__private as g;
    match file {
        "uppercase.wasm" => Some(Box::new(|_, b: &[u8]| g::map_batch(b, native_uppercase))),
        "split_words.wasm" => Some(Box::new(|_, b: &[u8]| g::map_batch(b, native_split))),
        "count.wasm" => Some(Box::new(|f: &str, b: &[u8]| match f {
            "add" => g::aggregate_add::<NativeCount>(b),
            _ => g::aggregate_present::<NativeCount>(b),
        })),
        _ => None,
    }
}

pub(crate) fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The same function as `examples/uppercase`, compiled natively.
fn native_uppercase(r: weir_guest::Record) -> Result<weir_guest::Output, weir_guest::Error> {
    Ok(weir_guest::Output {
        key: r.key.map(<[u8]>::to_vec),
        value: r.value.map(<[u8]>::to_ascii_uppercase),
        ..weir_guest::Output::default()
    })
}

fn records(from: usize, n: usize) -> Vec<Record> {
    // A small LCG: the same data on every run, lower-case letters.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ (from as u64).wrapping_mul(0x9e37_79b9);
    (from..from + n)
        .map(|i| {
            let value: Vec<u8> = (0..100)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b'a' + ((x >> 33) % 26) as u8
                })
                .collect();
            Record {
                offset: i as i64,
                timestamp: 1_700_000_000_000 + i as i64,
                key: Some(format!("key-{i:08}").into_bytes()),
                value: Some(value),
                headers: Vec::new(),
            }
        })
        .collect()
}

/// Copies each output's key and value into the sink; returns how many
/// outputs there were.
fn sink(results: &[u8], inputs: usize, sink: &mut Vec<u8>) -> anyhow::Result<usize> {
    let mut n = 0;
    codec::read_results(results, inputs, |_, e| {
        if let Entry::Output(o) = e {
            sink.extend_from_slice(o.key.unwrap_or_default());
            sink.extend_from_slice(o.value.unwrap_or_default());
            n += 1;
        }
    })?;
    Ok(n)
}

fn best(
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<usize>,
) -> anyhow::Result<(Duration, usize)> {
    let mut best = Duration::MAX;
    let mut outputs = 0;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        outputs = f()?;
        best = best.min(t.elapsed());
    }
    Ok((best, outputs))
}

/// Calls the mapper's `process` on a packed batch.
fn call(step: &mut Step, batch: &[u8]) -> anyhow::Result<Vec<u8>> {
    match step.call(Call::Export("process", batch), None)?.0 {
        Ok(out) => Ok(out),
        Err(trap) => anyhow::bail!("the guest trapped: {trap}"),
    }
}

/// Checks that the modules a benchmark runs from the directory of --module
/// are there, before any table header is printed: a missing one is named,
/// with the command that builds it.
fn require_beside(module: &std::path::Path, names: &[&str]) -> anyhow::Result<()> {
    let dir = module.parent().context("--module has no directory")?;
    for name in names {
        let m = dir.join(name);
        anyhow::ensure!(
            m.is_file(),
            "{} is missing: run `just guests-rust`, which builds the examples into $CARGO_TARGET_DIR/wasm32-wasip2/guest/ (by default ~/.cache/weir/target/wasm32-wasip2/guest/), and give --module that directory's uppercase.wasm",
            m.display()
        );
    }
    Ok(())
}

/// Runs the benchmark and prints its table.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.latency || args.pipelines {
        require_beside(
            &args.module,
            &["uppercase.wasm", "split_words.wasm", "count.wasm"],
        )?;
    }
    if args.latency {
        return latency::run(args);
    }
    if args.swap {
        return swap_bench::run(args);
    }
    if let Some(which) = &args.one {
        return pipelines::one_pipeline(args, which);
    }
    if args.pipelines {
        return pipelines::pipelines(args);
    }
    if let Some(n) = args.timers {
        return timers(args, n);
    }
    let n = args.records;
    let data = records(0, n);
    let batches: Vec<(usize, Vec<u8>)> = data
        .chunks(args.batch.max(1))
        .map(|c| (c.len(), codec::encode_batch(c)))
        .collect();
    let singles: Vec<Vec<u8>> = data.iter().map(|r| codec::encode_batch([r])).collect();

    let cache = tempfile::tempdir().context("cannot make a temporary cache directory")?;
    let options = RuntimeOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeOptions::default()
    };
    let runtime = Runtime::new(options.clone())?;
    let compiled = runtime.load_file(&args.module)?;
    let cached = runtime.load_file(&args.module)?;
    anyhow::ensure!(
        cached.from_cache(),
        "the second load did not come from the cache"
    );
    let mut step = Step::new(cached.clone(), "bench", Vec::new(), &options);
    step.start()?;
    let mut buf = Vec::with_capacity(args.batch * 128);

    let (native_batch, outs) = best(args.runs, || {
        let mut total = 0;
        for (len, b) in &batches {
            buf.clear();
            let out = weir_guest::__private::map_batch(b, native_uppercase);
            total += sink(&out, *len, &mut buf)?;
        }
        Ok(total)
    })?;
    anyhow::ensure!(outs == n, "native produced {outs} outputs for {n} records");

    let (wasm_batch, outs) = best(args.runs, || {
        let mut total = 0;
        for (len, b) in &batches {
            buf.clear();
            let out = call(&mut step, b)?;
            total += sink(&out, *len, &mut buf)?;
        }
        Ok(total)
    })?;
    anyhow::ensure!(outs == n, "wasm produced {outs} outputs for {n} records");

    let (wasm_single, outs) = best(args.runs, || {
        let mut total = 0;
        for b in &singles {
            buf.clear();
            let out = call(&mut step, b)?;
            total += sink(&out, 1, &mut buf)?;
        }
        Ok(total)
    })?;
    anyhow::ensure!(outs == n, "wasm produced {outs} outputs for {n} records");

    let (native_single, _) = best(args.runs, || {
        let mut total = 0;
        for b in &singles {
            buf.clear();
            let out = weir_guest::__private::map_batch(b, native_uppercase);
            total += sink(&out, 1, &mut buf)?;
        }
        Ok(total)
    })?;

    let (plain, _) = best(args.runs, || {
        let out: Vec<Record> = data
            .iter()
            .map(|r| Record {
                key: r.key.clone(),
                value: r.value.as_deref().map(<[u8]>::to_ascii_uppercase),
                ..r.clone()
            })
            .collect();
        Ok(out.len())
    })?;

    let mut inst = Vec::new();
    for _ in 0..200 {
        let mut s = Step::new(cached.clone(), "bench", Vec::new(), &options);
        s.start()?;
        inst.push(s.last_instantiate_time());
    }
    inst.sort();
    let mut loads = Vec::new();
    for _ in 0..20 {
        loads.push(runtime.load_file(&args.module)?.load_time());
    }
    loads.sort();

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let m = |d: Duration| format!("{:>7.2} M", rate(d) / 1e6);
    let nb = rate(native_batch);
    let ns = rate(native_single);
    println!(
        "uppercase: {n} records (12-byte keys, 100-byte values), batches of {}, best of {} runs",
        args.batch, args.runs
    );
    println!();
    println!("| path                                   | records/s | ratio to native |");
    println!("|----------------------------------------|-----------|-----------------|");
    println!(
        "| native, batches of {:<5}               | {} | 1.00            |",
        args.batch,
        m(native_batch)
    );
    println!(
        "| wasm, batches of {:<5}                 | {} | {:.2}            |",
        args.batch,
        m(wasm_batch),
        rate(wasm_batch) / nb
    );
    println!(
        "| native, one call per record            | {} | 1.00            |",
        m(native_single)
    );
    println!(
        "| wasm, one call per record              | {} | {:.2}            |",
        m(wasm_single),
        rate(wasm_single) / ns
    );
    println!(
        "| native plain loop (owned, no batching) | {} | (reference)     |",
        m(plain)
    );
    println!();
    println!(
        "compile: {:.1} ms; load from the precompiled cache: median {:.2} ms",
        compiled.load_time().as_secs_f64() * 1e3,
        loads[loads.len() / 2].as_secs_f64() * 1e3
    );
    println!(
        "instantiate (InstancePre + init): median {:.1} µs, first {:.1} µs",
        inst[inst.len() / 2].as_secs_f64() * 1e6,
        step.last_instantiate_time().as_secs_f64() * 1e6
    );
    Ok(())
}

/// N event-time timers of one processor step, set in one batch and
/// committed to the embedded log, then brought due at once by one record:
/// the time the firing batch takes (each timer calls the function once).
fn timers(args: &BenchArgs, n: usize) -> anyhow::Result<()> {
    use weir::backend::{StateRead, Txn};
    use weir::operators::{Collector, Ctx, Item, build};
    use weir::record::Packed;
    use weir::runtime::{Clock, NativeGuest, World};

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("timers.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"timers\"\ninput = \"in\"\n[[steps]]\nname = \"t\"\nkind = \"processor\"\nmodule = {:?}\nstores = [\"s\"]\n",
            args.module.display().to_string()
        ),
    )?;
    let cfg = weir::pipeline::config::load(&file)?.steps.remove(0);
    let fired = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = fired.clone();
    let guest = NativeGuest::new("timers", World::Processor, move |call, state| {
        let empty = 0u32.to_le_bytes().to_vec();
        match (call, state) {
            (Call::Export("process", input), Some(state)) => {
                let mut r = codec::Reader::new(input);
                let count = r.u32("count").map_err(|e| e.to_string())?;
                for _ in 0..count {
                    let rec = r.record().map_err(|e| e.to_string())?;
                    if rec.value.as_deref() == Some(b"set") {
                        for i in 0..n {
                            state.schedule(
                                Clock::EventTime,
                                1_000,
                                (i as u64).to_be_bytes().to_vec(),
                            );
                        }
                    }
                }
                Ok(empty)
            }
            (Call::Timer(_, _), _) => {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(empty)
            }
            _ => Err("unexpected call".to_string()),
        }
    });
    let log = Log::open(&dir.path().join("data"))?;
    let base: Arc<dyn StateRead> = log.clone();
    let mut op = build(cfg, Box::new(guest));
    let mut txn = Txn::default();
    let mut stream_time = i64::MIN;
    let mut batch =
        |value: &str, ts: i64, txn: &mut Txn, stream_time: &mut i64| -> anyhow::Result<Duration> {
            let rec = Record {
                offset: 0,
                timestamp: ts,
                key: Some(b"k".to_vec()),
                value: Some(value.as_bytes().to_vec()),
                headers: Vec::new(),
            };
            let mut out = Collector::default();
            let started = Instant::now();
            let mut cx = Ctx {
                pipeline: "timers",
                partition: 0,
                base: &base,
                txn,
                batch_time: *stream_time,
                stream_time,
                out: &mut out,
                now_ms: 0,
            };
            op.run(
                &mut cx,
                vec![Item {
                    seq: 1,
                    rec: Packed::from_record(&rec),
                }],
                Vec::new(),
            )?;
            let mut c = Commit::default();
            for (k, v) in txn.take() {
                c.put(k, v);
            }
            log.commit(c)?;
            Ok(started.elapsed())
        };
    let set = batch("set", 0, &mut txn, &mut stream_time)?;
    let fire = batch("go", 2_000, &mut txn, &mut stream_time)?;
    let count = fired.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(count == n, "{count} of {n} timers fired");
    println!(
        "{n} event-time timers due at once on the embedded log: set and committed in {:.3} s; fired (one call each) and committed in {:.3} s ({:.0} timers/s)",
        set.as_secs_f64(),
        fire.as_secs_f64(),
        n as f64 / fire.as_secs_f64()
    );
    Ok(())
}
