//! `weir demo`: word count, stock statistics and orders joined with their
//! customers (a foreign-key join) on the embedded log, in a temporary data
//! directory, with their results as tables.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use weir::log::{Commit, Log, partitioner};
use weir::pipeline::{self, RunOptions};
use weir::record::Record;
use weir::runtime::Runtime;

use super::RuntimeArgs;

// DEMO_GUESTS: the demo's modules, built by build.rs.
include!(concat!(env!("OUT_DIR"), "/demo_guests.rs"));

const WORDCOUNT: &str = include_str!("../../../examples/pipelines/wordcount.toml");
const STOCKS: &str = include_str!("../../../examples/pipelines/stock-stats.toml");
const ORDER_USERS: &str = include_str!("../../../examples/pipelines/order-users.toml");
const ORDERS: &str = include_str!("../../../examples/pipelines/order-users.orders.jsonl");
const USERS: &str = include_str!("../../../examples/pipelines/order-users.users.jsonl");

const TEXT: &str = "The river flows past the weir and the weir holds the river back.
A stream of records flows through a pipeline of functions.
Every function is a WebAssembly component, and every component is sandboxed.
State lives beside the stream: counts, windows and joins survive a crash.
Kafka carries the stream in production; the embedded log carries it here.
The weir lets the water through, one batch at a time.";

#[derive(Args)]
pub struct DemoArgs {
    /// Keep the data here instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn produce(log: &Log, topic: &weir::log::Topic, records: Vec<Record>) -> anyhow::Result<()> {
    let mut c = Commit::default();
    for r in records {
        let p = partitioner::partition_for_key(
            r.key.as_deref().unwrap_or_default(),
            topic.config.partitions,
        );
        c.append(topic, p, &r);
    }
    log.commit(c)?;
    Ok(())
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let dir = args.data.clone().unwrap_or_else(|| tmp.path().join("data"));
    let pipes = tmp.path().join("pipelines");
    std::fs::create_dir_all(&pipes)?;
    std::fs::write(pipes.join("wordcount.toml"), WORDCOUNT)?;
    std::fs::write(pipes.join("stock-stats.toml"), STOCKS)?;
    std::fs::write(pipes.join("order-users.toml"), ORDER_USERS)?;
    // The modules built into this binary, beside the pipeline files (where
    // they are looked for first); without them, WEIR_MODULE_PATH.
    for (file, bytes) in DEMO_GUESTS {
        std::fs::write(pipes.join(file), bytes)
            .with_context(|| format!("cannot write the demo module {file}"))?;
    }
    let wordcount = pipeline::config::load(&pipes.join("wordcount.toml"))
        .context("this weir was built without the demo's modules: run `just guests`, and set WEIR_MODULE_PATH to the directory they are in (`just demo` does both)")?;
    let stocks = pipeline::config::load(&pipes.join("stock-stats.toml"))?;
    let order_users = pipeline::config::load(&pipes.join("order-users.toml"))?;

    let log = Log::open(&dir)?;
    let runtime = Runtime::new(args.runtime.options())?;
    if args.data.is_some() {
        println!("weir demo: data in {}", dir.display());
    }

    // Word count.
    let lines = pipeline::ensure_topic(&*log, "lines", 2)?;
    let records = TEXT
        .lines()
        .enumerate()
        .map(|(i, l)| Record {
            offset: 0,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(format!("line-{i}").into_bytes()),
            value: Some(l.as_bytes().to_vec()),
            headers: Vec::new(),
        })
        .collect();
    produce(&log, &lines, records)?;
    let opts = RunOptions {
        until_caught_up: true,
        progress: false,
        batch: 500,
        native: None,
        now_ms: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = pipeline::run(log.clone(), &wordcount, &runtime, &opts, stop.clone())?;
    println!(
        "\n== word count: {} lines -> split (map) -> repartition by word -> count (aggregate)",
        s.records_in.min(TEXT.lines().count() as u64)
    );
    let counts = latest(&log, "counts")?;
    let mut by_count: Vec<(String, String)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| {
        b.1.parse::<u64>()
            .unwrap_or(0)
            .cmp(&a.1.parse::<u64>().unwrap_or(0))
            .then(a.0.cmp(&b.0))
    });
    println!("{:<14} {:>5}", "word", "count");
    for (w, c) in by_count.iter().take(12) {
        println!("{w:<14} {c:>5}");
    }
    if args.data.is_some() {
        println!(
            "({} distinct words; `weir consume counts --from-beginning --data {}` shows them all)",
            by_count.len(),
            dir.display()
        );
    } else {
        println!(
            "({} distinct words; the data is in a temporary directory, deleted on exit: `weir demo --data DIR` keeps it for `weir consume counts --from-beginning --data DIR`)",
            by_count.len()
        );
    }

    // Stock statistics.
    let trades = pipeline::ensure_topic(&*log, "trades", 2)?;
    let tickers = ["ACME", "GLOB", "INIT"];
    let mut x: u64 = 42;
    let mut recs = Vec::new();
    for i in 0..600i64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let t = tickers[(x >> 40) as usize % 3];
        let ask = 100.0 + ((x >> 20) % 400) as f64 * 0.25;
        // Out of order by up to 1.5 s: within the 2 s grace period.
        let ts = 1_700_000_000_000 + i * 50 - ((x >> 50) % 1500) as i64;
        recs.push(Record {
            offset: 0,
            timestamp: ts,
            key: Some(t.as_bytes().to_vec()),
            value: Some(format!("{{\"ask\":{ask}}}").into_bytes()),
            headers: Vec::new(),
        });
    }
    produce(&log, &trades, recs)?;
    let s = pipeline::run(log.clone(), &stocks, &runtime, &opts, stop.clone())?;
    println!(
        "\n== stock statistics: {} trades (out of order) -> 5 s windows every 1 s, per ticker; {} closed windows emitted",
        s.records_in, s.records_out
    );
    let mut last: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for p in 0..log.require_topic("stock-stats")?.config.partitions {
        let t = log.require_topic("stock-stats")?;
        for stored in log.read(&t, p, 0, usize::MAX)? {
            let r = stored.record()?;
            let start = r
                .headers
                .iter()
                .find(|(n, _)| n == "weir.window.start")
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                .unwrap_or(0);
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            let value =
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            let e = last.entry(key).or_insert((i64::MIN, String::new()));
            if start > e.0 {
                *e = (start, value);
            }
        }
    }
    println!(
        "{:<6} {:>15} {:>8} {:>6} {:>8}",
        "ticker", "last window", "min ask", "trades", "avg ask"
    );
    for (t, (start, v)) in &last {
        let j: serde_json::Value = serde_json::from_str(v).unwrap_or_default();
        println!(
            "{t:<6} {:>15} {:>8} {:>6} {:>8}",
            format!(
                "+{:.0}s..+{:.0}s",
                (*start - 1_700_000_000_000) as f64 / 1e3,
                (*start + 5000 - 1_700_000_000_000) as f64 / 1e3
            ),
            j["min_ask"].to_string(),
            j["count"].to_string(),
            j["avg_ask"].to_string()
        );
    }

    // Orders joined with their customers.
    for (name, text) in [("orders", ORDERS), ("users", USERS)] {
        let topic = pipeline::ensure_topic(&*log, name, 2)?;
        let records = text
            .lines()
            .enumerate()
            .map(|(i, l)| weir::jsonl::parse_record(l, i as i64))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("the demo's sample {name}"))?;
        produce(&log, &topic, records)?;
    }
    pipeline::run(log.clone(), &order_users, &runtime, &opts, stop)?;
    println!(
        "\n== orders with their customers: orders (by order id) -> the user each names, kept joined as orders move and users change (a foreign-key join with users, by user id)"
    );
    println!("{:<6} {:<5} {:<5} customer", "order", "item", "user");
    for (order, v) in latest(&log, "orders-with-users")? {
        let j: serde_json::Value = serde_json::from_str(&v).unwrap_or_default();
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
        let mut customer = text(&j["customer"]["name"]);
        if let Some(city) = j["customer"]["city"].as_str() {
            customer = format!("{customer} ({city})");
        }
        println!(
            "{order:<6} {:<5} {:<5} {customer}",
            text(&j["item"]),
            text(&j["user"])
        );
    }
    println!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn latest(log: &Log, topic: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let t = log.require_topic(topic)?;
    let mut m = BTreeMap::new();
    for p in 0..t.config.partitions {
        for s in log.read(&t, p, 0, usize::MAX)? {
            let r = s.record()?;
            m.insert(
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
            );
        }
    }
    Ok(m)
}
