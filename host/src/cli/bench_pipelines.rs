//! `weir bench --pipelines`: whole pipelines on the embedded log (a map,
//! word count over a growing key space, and the storage limit with no guest
//! at all), each run in a process of its own so that its peak memory is its
//! own.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use weir::log::{Commit, Log, TopicConfig};
use weir::runtime::{Runtime, RuntimeOptions};

use super::{BenchArgs, native_step, peak_rss_kb, records};

/// Resets the peak-memory mark of this process (Linux: `clear_refs` 5), so
/// that the figure covers the run and not the generated input.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Fills topic `in` (2 partitions) with `n` records, generated and written
/// in chunks so that the input is never held in memory as a whole. Gives
/// the topic and, for word count over `distinct` words, how many of them
/// the lines hold (a bit per word; zero otherwise).
fn fill(
    log: &Log,
    which: &str,
    n: usize,
    distinct: Option<usize>,
) -> anyhow::Result<(weir::log::Topic, u64)> {
    let mut seen = vec![0u64; distinct.unwrap_or(0).max(1).div_ceil(64)];
    let topic = log.create_topic("in", TopicConfig::partitions(2))?;
    let words = [
        "stream", "river", "the", "weir", "log", "kafka", "state", "window", "join", "table",
    ];
    let mut done = 0;
    while done < n {
        let chunk = (n - done).min(10_000);
        let mut c = Commit::default();
        for (j, mut r) in records(done, chunk).into_iter().enumerate() {
            let i = done + j;
            if which == "bursts" {
                // 1,000 keys, a record every 100 ms: bursts of a key close
                // 10 s after they start, all through the run.
                r.key = Some(format!("k{}", mix(i as u64) % 1000).into_bytes());
                r.timestamp = 1_700_000_000_000 + 100 * i as i64;
            }
            if which == "wordcount" {
                let line: Vec<String> = match distinct {
                    // Uniform over `d` words: a hash of the word's place.
                    Some(d) => (0..8)
                        .map(|j| {
                            let w = mix((i * 8 + j) as u64) % d.max(1) as u64;
                            seen[(w / 64) as usize] |= 1 << (w % 64);
                            format!("w{w}")
                        })
                        .collect(),
                    None => (0..8)
                        .map(|j| words[(i * 7 + j * 3) % words.len()].to_string())
                        .collect(),
                };
                r.value = Some(line.join(" ").into_bytes());
            }
            c.append(&topic, (i % 2) as u32, &r);
        }
        log.commit(c)?;
        done += chunk;
    }
    Ok((topic, seen.iter().map(|b| u64::from(b.count_ones())).sum()))
}

/// A 64-bit mixer (splitmix64's finaliser): spreads consecutive numbers.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The storage limit: per partition, in its own thread, read a batch, copy
/// every record into an output (its value upper-cased, as the map does) and
/// commit the outputs with the input position — the same reads, writes and
/// commits as the map pipeline, with no guest and no operator at all.
fn storage_only(log: &Arc<Log>, input: &weir::log::Topic, batch: usize) -> anyhow::Result<u64> {
    let out = log.create_topic("out", TopicConfig::partitions(2))?;
    let mut threads = Vec::new();
    for p in 0..2u32 {
        let (log, input, out) = (log.clone(), input.clone(), out.clone());
        threads.push(std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut next = 0u64;
            let mut n = 0u64;
            loop {
                let got = log.read(&input, p, next, batch)?;
                let Some(last) = got.last() else { break };
                next = last.offset + 1;
                let mut c = Commit::default();
                for s in &got {
                    let mut packed = s.bytes.clone();
                    upper_value(&mut packed);
                    c.append_packed(&out, p, packed);
                }
                c.position("bench", &input.name, p, next);
                log.commit(c)?;
                n += got.len() as u64;
            }
            Ok(n)
        }));
    }
    let mut total = 0;
    for t in threads {
        total += t
            .join()
            .map_err(|_| anyhow::anyhow!("a storage thread panicked"))??;
    }
    Ok(total)
}

/// Upper-cases the value of a packed record in place.
fn upper_value(packed: &mut [u8]) {
    let len = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let key_at = 16;
    let Some(klen) = len(packed, key_at) else {
        return;
    };
    let value_at = key_at + 4 + if klen == u32::MAX { 0 } else { klen as usize };
    let Some(vlen) = len(packed, value_at) else {
        return;
    };
    if vlen == u32::MAX {
        return;
    }
    let start = value_at + 4;
    if let Some(v) = packed.get_mut(start..start + vlen as usize) {
        v.make_ascii_uppercase();
    }
}

/// The benchmark's pipeline `which` (map | wordcount | bursts), from `in` to
/// `out`; its modules are found beside the file.
pub(super) fn pipeline_text(which: &str) -> &'static str {
    if which == "bursts" {
        return "name = \"bench\"\ninput = \"in\"\noutput = \"out\"\n[[steps]]\nname = \"burst\"\nkind = \"processor\"\nmodule = \"burst_count.wasm\"\nstores = [\"counts\"]\n";
    }
    if which == "wordcount" {
        "name = \"bench\"\ninput = \"in\"\noutput = \"out\"\n[[steps]]\nname = \"split\"\nkind = \"map\"\nmodule = \"split_words.wasm\"\n[[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"\n"
    } else {
        "name = \"bench\"\ninput = \"in\"\noutput = \"out\"\n[[steps]]\nname = \"up\"\nkind = \"map\"\nmodule = \"uppercase.wasm\"\n"
    }
}

/// One pipeline run in this process; prints `RESULT input-records
/// records-in seconds peak-kb outputs distinct-words`.
pub(super) fn one_pipeline(args: &BenchArgs, which: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let modules = args
        .module
        .parent()
        .context("--module has no directory")?
        .to_path_buf();
    let n = match which {
        "wordcount" => args.records / 4,
        _ => args.records,
    };
    let log = Log::open(&dir.path().join("data"))?;
    let (topic, distinct) = fill(&log, which, n, args.words)?;
    // The input goes to table files, so that the run's memory holds none of it.
    log.flush()?;
    if which == "storage" {
        reset_peak_rss();
        let started = Instant::now();
        let done = storage_only(&log, &topic, args.batch)?;
        let secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(done == n as u64, "storage row read {done} of {n}");
        println!("RESULT {n} {done} {secs} {} {done} 0", peak_rss_kb());
        return Ok(());
    }
    let text = match which {
        "map" | "wordcount" | "bursts" => pipeline_text(which),
        other => anyhow::bail!("unknown pipeline benchmark {other}"),
    };
    let file = modules.join(format!("bench-{which}.toml"));
    std::fs::write(&file, text)?;
    let mut pipeline = weir::pipeline::config::load(&file)?;
    let _ = std::fs::remove_file(&file);
    if let Some(i) = args.commit_interval {
        pipeline.commit_interval = i;
    }
    if let Some(b) = args.cache_max_bytes {
        pipeline.cache_max_bytes = b;
    }
    let runtime = Runtime::new(RuntimeOptions::default())?;
    let options = weir::pipeline::RunOptions {
        until_caught_up: true,
        progress: false,
        batch: args.batch,
        native: if args.native { Some(native_step) } else { None },
        now_ms: None,
    };
    reset_peak_rss();
    let started = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let summary = weir::pipeline::run(log, &pipeline, &runtime, &options, stop)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "RESULT {} {} {secs} {} {} {distinct}",
        n,
        summary.records_in,
        peak_rss_kb(),
        summary.records_out
    );
    Ok(())
}

/// One pipeline run in a process of its own: (input records/s, peak MB,
/// outputs emitted, distinct words in the input).
fn one(
    args: &BenchArgs,
    which: &str,
    native: bool,
    words: Option<usize>,
) -> anyhow::Result<(f64, f64, u64, u64)> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("bench")
        .arg("--module")
        .arg(&args.module)
        .args(["--records", &args.records.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .args(["--one", which]);
    if let Some(i) = args.commit_interval {
        cmd.args(["--commit-interval", &format!("{}ms", i.as_millis())]);
    }
    if let Some(b) = args.cache_max_bytes {
        cmd.args(["--cache-max-bytes", &b.to_string()]);
    }
    if native {
        cmd.arg("--native");
    }
    if let Some(w) = words {
        cmd.args(["--words", &w.to_string()]);
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .with_context(|| {
            format!(
                "the {which} run printed no result: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    anyhow::ensure!(f.len() == 6, "bad result line {line}");
    Ok((f[0] / f[2], f[3] / 1024.0, f[4] as u64, f[5] as u64))
}

pub(super) fn pipelines(args: &BenchArgs) -> anyhow::Result<()> {
    println!(
        "pipelines on the embedded log: {} records for the map, {} lines of 8 words for word count; 2 partitions, batches of {}; peak memory of the run alone (the generated input is left out)",
        args.records,
        args.records / 4,
        args.batch
    );
    println!();
    println!(
        "| pipeline      | steps  | input records/s | peak memory | ratio to native | ratio to storage |"
    );
    println!(
        "|---------------|--------|-----------------|-------------|-----------------|------------------|"
    );
    let (storage, mem, ..) = one(args, "storage", false, None)?;
    println!(
        "| storage limit | none   | {storage:>15.0} | {mem:>8.0} MB | -               | 1.00             |"
    );
    for which in ["map", "wordcount"] {
        let mut native_rate = 0.0;
        for native in [true, false] {
            let (rate, mem, ..) = one(args, which, native, None)?;
            if native {
                native_rate = rate;
            }
            println!(
                "| {which:<13} | {:<6} | {rate:>15.0} | {mem:>8.0} MB | {:<15} | {:<16} |",
                if native { "native" } else { "wasm" },
                format!("{:.2}", rate / native_rate),
                format!("{:.2}", rate / storage),
            );
        }
    }
    let (rate, mem, ..) = one(args, "bursts", false, None)?;
    println!(
        "| bursts        | wasm   | {rate:>15.0} | {mem:>8.0} MB | -               | {:<16} |",
        format!("{:.2}", rate / storage),
    );
    println!();
    println!(
        "(word count's rate is in lines of 8 words per second; its storage ratio compares lines with records; bursts is a processor with a state store and an event-time timer per burst of a key, examples/burst-count)"
    );
    println!();
    println!(
        "word count (Wasm) over a growing key space: {} lines of 8 words drawn uniformly from N distinct words",
        args.records / 4
    );
    println!();
    println!(
        "| distinct words | in the input | lines/s | vs 100 words | outputs emitted | peak memory |"
    );
    println!(
        "|----------------|--------------|---------|--------------|-----------------|-------------|"
    );
    let mut first = 0.0;
    for words in [100, 100_000, 1_000_000] {
        let (rate, mem, outputs, seen) = one(args, "wordcount", false, Some(words))?;
        if first == 0.0 {
            first = rate;
        }
        println!(
            "| {words:>14} | {seen:>12} | {rate:>7.0} | {:>12} | {outputs:>15} | {mem:>8.0} MB |",
            format!("{:.2}", rate / first)
        );
    }
    println!();
    println!(
        "(in the input: how many of the N words the lines hold; the count emits a word at most once per commit, so its outputs lie between that and the {} words)",
        args.records / 4 * 8
    );
    Ok(())
}
