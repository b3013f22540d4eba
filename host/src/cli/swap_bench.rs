//! `weir bench --swap`: what the daemon's hot swap costs. A map pipeline
//! (uppercase) runs on the embedded log, 2 partitions, while a producer
//! thread keeps appending; its step is swapped 100 times between
//! `uppercase` and `lowercase`, each swap waiting for every task's first
//! batch with the new module. Reported: the pause (the time a task spends
//! switching between two batches: a new instance from the precompiled
//! module, its `init`), the time `swap` takes to reach every task, and the
//! time to check and precompile a module (a registry upload) or load it
//! precompiled; then the throughput of a pipeline alone and beside its
//! shadow (a second run of it under another application id over the same
//! input).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use weir::backend::Backend;
use weir::log::{Commit, Log, TopicConfig};
use weir::pipeline::{self, RunOptions, SwapState, engine};
use weir::record::Record;
use weir::runtime::{Runtime, RuntimeOptions};

use super::BenchArgs;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn produce(log: &Log, topic: &weir::log::Topic, from: u64, n: u64) -> anyhow::Result<()> {
    let mut c = Commit::default();
    for i in from..from + n {
        let key = format!("k{}", i % 64);
        let p = weir::log::partitioner::partition_for_key(key.as_bytes(), 2);
        c.append(
            topic,
            p,
            &Record {
                offset: 0,
                timestamp: i as i64,
                key: Some(key.into_bytes()),
                value: Some(format!("record number {i} of the swap benchmark").into_bytes()),
                headers: Vec::new(),
            },
        );
    }
    log.commit(c).map(|_| ())
}

fn map_file(
    dir: &std::path::Path,
    name: &str,
    module: &std::path::Path,
) -> anyhow::Result<pipeline::Pipeline> {
    let f = dir.join(format!("{name}.toml"));
    std::fs::write(
        &f,
        format!(
            "name = \"{name}\"\ninput = \"in\"\noutput = \"{name}-out\"\n[[steps]]\nname = \"case\"\nkind = \"map\"\nmodule = {:?}\n",
            module.display().to_string()
        ),
    )?;
    Ok(pipeline::config::load(&f)?)
}

/// Runs the benchmark and prints its tables.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = args.module.parent().context("--module has no directory")?;
    let upper = dir.join("uppercase.wasm");
    let lower = dir.join("lowercase.wasm");
    for m in [&upper, &lower] {
        anyhow::ensure!(
            m.exists(),
            "{} is missing: run `just guests-rust`",
            m.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let cache = tmp.path().join("cache");

    // Upload: check and precompile (no cache yet), then a precompiled load.
    let bytes = std::fs::read(&upper)?;
    let fresh = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache.clone()),
        ..RuntimeOptions::default()
    })?;
    let t = Instant::now();
    fresh.load("uppercase", &bytes)?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    fresh.load("uppercase", &bytes)?;
    let cached_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(fresh);

    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache),
        ..RuntimeOptions::default()
    })?;
    let log = Log::open(&tmp.path().join("data"))?;
    let input = log.create_topic("in", TopicConfig::partitions(2))?;
    let backend: Arc<dyn Backend> = log.clone();
    let p = map_file(tmp.path(), "swapped", &upper)?;
    let modules = [runtime.load_file(&lower)?, runtime.load_file(&upper)?];
    let handle = engine::start(
        backend.clone(),
        &p,
        &runtime,
        &RunOptions {
            batch: args.batch,
            ..RunOptions::default()
        },
        Arc::new(AtomicBool::new(false)),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (log, input, stop) = (log.clone(), input.clone(), stop.clone());
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                produce(&log, &input, n, 200)?;
                n += 200;
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(n)
        })
    };
    // Every task runs and has taken records before the first swap.
    let started = Instant::now();
    while handle.status().partitions.len() < 2 || handle.status().records_in == 0 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the pipeline did not start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let swaps = 100;
    let mut pauses = Vec::new();
    let mut reach = Vec::new();
    let mut rolled_back = 0;
    for i in 0..swaps {
        let t = Instant::now();
        handle.swap("case", modules[i % 2].clone(), Duration::from_secs(10))?;
        reach.push(t.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        loop {
            match handle.swap_state("case") {
                Some(SwapState::Pending) if started.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Some(SwapState::RolledBack(_)) => {
                    rolled_back += 1;
                    break;
                }
                _ => break,
            }
        }
        let st = handle.status();
        if let Some(s) = st.steps.first() {
            pauses.push(s.last_swap_pause_us as f64 / 1e3);
        }
    }
    stop.store(true, Ordering::SeqCst);
    let produced = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer panicked"))??;
    handle.stop();
    let summary = handle.wait()?;
    pauses.sort_by(f64::total_cmp);
    reach.sort_by(f64::total_cmp);
    println!(
        "hot swap under load: {swaps} swaps of a map step (uppercase <-> lowercase), 2 partitions, batches of {}, a producer appending 200 records about every millisecond meanwhile ({produced} records, {} through the step, {rolled_back} rolled back)",
        args.batch, summary.records_in
    );
    println!();
    println!("| what | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    println!(
        "| pause: a task switching between two batches (the longest of the 2 tasks, per swap) | {:.3} | {:.3} | {:.3} |",
        pct(&pauses, 0.5),
        pct(&pauses, 0.99),
        pauses.last().copied().unwrap_or(0.0)
    );
    println!(
        "| `swap` call: check, trial instance, until every task switched | {:.3} | {:.3} | {:.3} |",
        pct(&reach, 0.5),
        pct(&reach, 0.99),
        reach.last().copied().unwrap_or(0.0)
    );
    println!();
    println!(
        "upload of uppercase.wasm ({} bytes): checked and precompiled in {compile_ms:.1} ms; loaded precompiled in {cached_ms:.2} ms",
        bytes.len()
    );

    // A pipeline alone, then beside its shadow, over the same input.
    let n = args.records as u64;
    let log2 = Log::open(&tmp.path().join("data2"))?;
    let input2 = log2.create_topic("in", TopicConfig::partitions(2))?;
    let mut at = 0;
    while at < n {
        let k = (n - at).min(10_000);
        produce(&log2, &input2, at, k)?;
        at += k;
    }
    let backend2: Arc<dyn Backend> = log2.clone();
    let options = RunOptions {
        until_caught_up: true,
        batch: args.batch,
        ..RunOptions::default()
    };
    let alone = map_file(tmp.path(), "alone", &upper)?;
    let t = Instant::now();
    pipeline::run(
        backend2.clone(),
        &alone,
        &runtime,
        &options,
        Arc::new(AtomicBool::new(false)),
    )?;
    let alone_rate = n as f64 / t.elapsed().as_secs_f64();
    let main = map_file(tmp.path(), "main", &upper)?;
    let shadow = map_file(tmp.path(), "main-shadow", &lower)?;
    let t = Instant::now();
    let h1 = engine::start(
        backend2.clone(),
        &main,
        &runtime,
        &options,
        Arc::new(AtomicBool::new(false)),
    )?;
    let h2 = engine::start(
        backend2.clone(),
        &shadow,
        &runtime,
        &options,
        Arc::new(AtomicBool::new(false)),
    )?;
    h1.wait()?;
    let main_s = t.elapsed().as_secs_f64();
    h2.wait()?;
    let both_s = t.elapsed().as_secs_f64();
    println!();
    println!("| {n} records already in the log, map | records/s per pipeline |");
    println!("|---|---|");
    println!("| the pipeline alone | {alone_rate:.0} |");
    println!(
        "| the pipeline beside its shadow (both from offset 0) | {:.0} (pipeline), {:.0} (shadow) |",
        n as f64 / main_s,
        n as f64 / both_s
    );
    Ok(())
}
