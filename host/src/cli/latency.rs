//! `weir bench --latency`: how soon a record produced into a running
//! pipeline can be read at its output, and what the pipeline costs idle.
//!
//! A `weir run` child owns a fresh data directory. This process talks to it
//! as the CLI does, over `DIR/weir.sock`: one connection follows the output
//! topic (`consume --follow`) and notes when each output arrives; produces
//! go one record at a time (each waits for its output, so the pipeline is
//! idle when the next comes) and in bursts. A latency is from a produce
//! returning (its records committed) to the output line arriving; an output
//! that arrives before the produce's answer counts as 0.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::BenchArgs;
use crate::cli::log_cmds::Request;
use crate::cli::log_cmds::owner::socket_path;
use weir::log::{Log, TopicConfig};

/// Sends one request (and a produce's lines) and reads answers until its
/// exit; returns the `out` lines.
fn call(sock: &Path, req: &Request, lines: &[String]) -> anyhow::Result<Vec<String>> {
    let stream = UnixStream::connect(sock)
        .with_context(|| format!("cannot connect to {}", sock.display()))?;
    let mut w = std::io::BufWriter::new(stream.try_clone()?);
    writeln!(w, "{}", serde_json::to_string(req)?)?;
    for l in lines {
        writeln!(w, "{l}")?;
    }
    w.flush()?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut out = Vec::new();
    for line in BufReader::new(stream).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        if let Some(s) = v.get("out").and_then(Value::as_str) {
            out.push(s.to_string());
        } else if let Some(code) = v.get("exit").and_then(Value::as_u64) {
            anyhow::ensure!(code == 0, "the owner answered exit {code}");
            return Ok(out);
        } else if let Some(msg) = v.get("error").and_then(Value::as_str) {
            bail!("{msg}");
        }
    }
    bail!("the owner closed the connection before answering")
}

/// Follows `topic` through the owner: each output's key and when it came.
fn follow(sock: &Path, topic: &str) -> anyhow::Result<mpsc::Receiver<(String, Instant)>> {
    let req = Request::Consume {
        topic: topic.to_string(),
        from_beginning: true,
        partition: None,
        max: None,
        follow: true,
        format: Default::default(),
    };
    let stream = UnixStream::connect(sock)?;
    writeln!(&stream, "{}", serde_json::to_string(&req)?)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let at = Instant::now();
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                break;
            };
            if v.get("error").is_some() || v.get("exit").is_some() {
                let _ = tx.send((String::new(), at));
                break;
            }
            let Some(rec) = v.get("out").and_then(Value::as_str) else {
                continue;
            };
            let key = serde_json::from_str::<Value>(rec)
                .ok()
                .and_then(|r| r.get("key").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            if tx.send((key, at)).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// The pipeline's process; killed when dropped.
struct Owner(std::process::Child);

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which ends with the last ')').
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let t = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(t(14) + t(15))
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

struct Figures {
    p50: f64,
    p99: f64,
    max: f64,
}

fn figures(mut lat: Vec<Duration>) -> Figures {
    lat.sort();
    let at = |q: f64| {
        let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e3
    };
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        max: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    }
}

/// Waits for the outputs of `keys`; returns each one's latency from `since`
/// and from `called` (when the produce was sent).
fn await_keys(
    rx: &mpsc::Receiver<(String, Instant)>,
    early: &mut HashMap<String, Instant>,
    keys: &[String],
    since: Instant,
    called: Instant,
) -> anyhow::Result<Vec<(Duration, Duration)>> {
    let mut lat = Vec::with_capacity(keys.len());
    for k in keys {
        let at = loop {
            if let Some(at) = early.remove(k) {
                break at;
            }
            let (got, at) = rx
                .recv_timeout(Duration::from_secs(10))
                .with_context(|| format!("no output for {k} within 10 s"))?;
            anyhow::ensure!(!got.is_empty(), "the follower stopped");
            early.insert(got, at);
        };
        lat.push((
            at.saturating_duration_since(since),
            at.saturating_duration_since(called),
        ));
    }
    Ok(lat)
}

type Row = (Figures, Figures);

fn row(lat: Vec<(Duration, Duration)>) -> Row {
    (
        figures(lat.iter().map(|l| l.0).collect()),
        figures(lat.iter().map(|l| l.1).collect()),
    )
}

fn one(args: &BenchArgs, which: &str, modules: &Path) -> anyhow::Result<(Row, Row, f64, usize)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    Log::open(&data)?.create_topic("in", TopicConfig::partitions(2))?;
    let file: PathBuf = modules.join(format!("bench-latency-{which}.toml"));
    std::fs::write(&file, super::pipelines::pipeline_text(which))?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("run")
        .arg(&file)
        .arg("--quiet")
        .arg("--data")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start weir run")?;
    let owner = Owner(child);
    let sock = socket_path(&data);
    // The socket first, then the output topic (the pipeline creates it).
    let started = Instant::now();
    let rx = loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "weir run did not start serving {} within 60 s",
            sock.display()
        );
        if UnixStream::connect(&sock).is_ok() {
            let topics = call(&sock, &Request::TopicList, &[])?;
            if topics.iter().any(|t| t.starts_with("out\t")) {
                break follow(&sock, "out")?;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&file);
    let produce = Request::Produce {
        topic: "in".into(),
        partition: None,
        source: "bench".into(),
        format: Default::default(),
    };
    let mut early = HashMap::new();
    // One at a time: the pipeline is idle when each record comes.
    let mut singles = Vec::new();
    for i in 0..args.singles {
        let key = format!("s{i}");
        let line = format!(r#"{{"key":"{key}","value":"{key}"}}"#);
        let called = Instant::now();
        call(&sock, &produce, &[line])?;
        let since = Instant::now();
        singles.extend(await_keys(&rx, &mut early, &[key], since, called)?);
    }
    // Bursts of 100 in one produce each.
    let mut bursts = Vec::new();
    for b in 0..(args.singles / 100).max(5) {
        let keys: Vec<String> = (0..100).map(|i| format!("b{b}x{i}")).collect();
        let lines: Vec<String> = keys
            .iter()
            .map(|k| format!(r#"{{"key":"{k}","value":"{k}"}}"#))
            .collect();
        let called = Instant::now();
        call(&sock, &produce, &lines)?;
        let since = Instant::now();
        bursts.extend(await_keys(&rx, &mut early, &keys, since, called)?);
    }
    // Idle: the CPU the running pipeline uses with nothing to do.
    let pid = owner.0.id();
    std::thread::sleep(Duration::from_millis(500));
    let (t0, c0) = (Instant::now(), cpu_ticks(pid)?);
    std::thread::sleep(Duration::from_secs(5));
    let (t1, c1) = (Instant::now(), cpu_ticks(pid)?);
    let idle = (c1 - c0) as f64 / clock_ticks_per_second() / (t1 - t0).as_secs_f64() * 100.0;
    let n = singles.len();
    Ok((row(singles), row(bursts), idle, n))
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let modules = args
        .module
        .parent()
        .context("--module has no directory")?
        .to_path_buf();
    println!(
        "end-to-end latency through a running `weir run` on the embedded log (2 partitions): produce through the owner's socket returned -> output readable by a follower"
    );
    println!();
    println!(
        "(from the produce returning, its records committed; and, after the slash, from the produce being sent, its own round trip included)"
    );
    println!();
    println!(
        "| pipeline  | produced            | p50 ms        | p99 ms        | max ms        | idle CPU (% of a core, 5 s) |"
    );
    println!(
        "|-----------|---------------------|---------------|---------------|---------------|-----------------------------|"
    );
    let cell = |a: f64, b: f64| format!("{a:.2} / {b:.2}");
    for which in ["map", "wordcount"] {
        let ((s, sc), (b, bc), idle, n) = one(args, which, &modules)?;
        println!(
            "| {which:<9} | {:<19} | {:>13} | {:>13} | {:>13} | {idle:>27.2} |",
            format!("{n} one at a time"),
            cell(s.p50, sc.p50),
            cell(s.p99, sc.p99),
            cell(s.max, sc.max),
        );
        println!(
            "| {which:<9} | {:<19} | {:>13} | {:>13} | {:>13} | {:>27} |",
            "bursts of 100",
            cell(b.p50, bc.p50),
            cell(b.p99, bc.p99),
            cell(b.max, bc.max),
            ""
        );
    }
    Ok(())
}
