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
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::codec::{self, Entry};
use crate::record::Record;
use crate::runtime::{Runtime, RuntimeOptions, Step};

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
}

/// The same function as `examples/uppercase`, compiled natively.
fn native_uppercase(r: weir_guest::Record) -> Result<weir_guest::Output, weir_guest::Error> {
    Ok(weir_guest::Output {
        key: r.key.map(<[u8]>::to_vec),
        value: r.value.map(<[u8]>::to_ascii_uppercase),
        ..weir_guest::Output::default()
    })
}

fn records(n: usize) -> Vec<Record> {
    // A small LCG: the same data on every run, lower-case letters.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
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

/// Runs the benchmark and prints its table.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let n = args.records;
    let data = records(n);
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
            let out = match step.call_bytes("process", b)? {
                Ok(out) => out,
                Err(trap) => anyhow::bail!("the guest trapped: {trap}"),
            };
            total += sink(&out, *len, &mut buf)?;
        }
        Ok(total)
    })?;
    anyhow::ensure!(outs == n, "wasm produced {outs} outputs for {n} records");

    let (wasm_single, outs) = best(args.runs, || {
        let mut total = 0;
        for b in &singles {
            buf.clear();
            let out = match step.call_bytes("process", b)? {
                Ok(out) => out,
                Err(trap) => anyhow::bail!("the guest trapped: {trap}"),
            };
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
