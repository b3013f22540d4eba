//! The command line: clap definitions and one small function per command.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use weir::runtime::{Runtime, RuntimeOptions};

mod bench;
mod daemon;
mod daemon_cmds;
mod demo;
mod expect;
mod log_cmds;
mod module_test;
mod new;
mod run_cmd;
mod state_cmds;
mod testdriver;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Run stream functions, compiled to WebAssembly components, over partitioned streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a function (mapper, processor or aggregator) over a JSON-lines
    /// file of records (outputs to stdout, dead letters to stderr), or a
    /// whole pipeline file in memory (`weir test PIPELINE.toml --input
    /// TOPIC=FILE.jsonl`); with --expect, compare the outputs with a file.
    Test(TestArgs),
    /// Check a module: its world, exports, imports and size.
    Check(CheckArgs),
    /// Measure the Wasm boundary: records/s of a mapper against the same
    /// work in native Rust, instantiation time and cache load time (or, with
    /// --pipelines, --latency, --swap or --timers, what those name).
    Bench(bench::BenchArgs),
    /// Create, list, describe and delete topics of the embedded log (or of
    /// Kafka, with --brokers).
    #[command(subcommand)]
    Topic(log_cmds::TopicCommand),
    /// Append JSON-lines records (stdin or --input) to a topic (on Kafka
    /// with --brokers).
    Produce(log_cmds::ProduceArgs),
    /// Print a topic's records as JSON lines (from Kafka with --brokers:
    /// read_committed, to the end as of the start unless --follow).
    Consume(log_cmds::ConsumeArgs),
    /// Run a pipeline file on the embedded log (or on Kafka, with --brokers
    /// or a `[kafka]` section in the file).
    Run(run_cmd::RunArgs),
    /// Word count and stock statistics on the embedded log, end to end.
    Demo(demo::DemoArgs),
    /// Read a pipeline's state (interactive queries), running or stopped.
    #[command(subcommand)]
    State(state_cmds::StateCommand),
    /// Make a stopped pipeline reprocess its inputs from the start: forget
    /// its input positions and state and delete its repartition topics
    /// (its output topics are kept).
    Reset(state_cmds::ResetArgs),
    /// Write a new guest project (Rust, JavaScript, Python, Go or C) that builds
    /// and passes `weir test` as it is.
    New(new::NewArgs),
    /// The daemon: run many pipelines on a data directory, with an HTTP
    /// API (docs/api.md) for modules, deployments, swaps and shadows.
    Serve(daemon_cmds::ServeArgs),
    /// The daemon's module registry: push, list, show, delete.
    #[command(subcommand)]
    Module(daemon_cmds::ModuleCommand),
    /// Deploy a pipeline file to the daemon (or redeploy it).
    Deploy(daemon_cmds::DeployArgs),
    /// The daemon's pipelines: list, status, stop, start, reset, delete.
    #[command(subcommand)]
    Pipeline(daemon_cmds::PipelineCommand),
    /// Switch a running step to another module version (rolled back if it
    /// traps on its first batch).
    Swap(daemon_cmds::SwapArgs),
    /// Switch a step back to the version it ran before.
    Rollback(daemon_cmds::StepArgs),
    /// Run a copy of a pipeline with a step on another version, from the
    /// earliest offsets, into its own output topics (suffixed -shadow).
    Shadow(daemon_cmds::SwapArgs),
    /// Compare a pipeline's outputs with its shadow's, keyed.
    Diff(daemon_cmds::DiffArgs),
    /// Make the shadow the pipeline (readers switch to its output topics).
    Promote(daemon_cmds::NameArgs),
    /// Stop and drop a pipeline's shadow.
    Discard(daemon_cmds::NameArgs),
    /// Guest log lines of a deployed pipeline.
    Logs(daemon_cmds::LogsArgs),
}

/// Settings of the WebAssembly runtime, shared by the commands that run guests.
#[derive(Args, Clone)]
pub struct RuntimeArgs {
    /// Precompiled-module cache directory [default: $WEIR_CACHE, else ~/.cache/weir/modules].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Compile every time; use no cache.
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
    /// The longest one call into the guest may run, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    deadline_ms: u64,
    /// The most memory one guest instance may use, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    memory_mb: usize,
    /// Stop a step after this many calls in a row ran past the deadline
    /// (its records stay uncommitted, so a fixed module resumes there).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    max_timeouts: u32,
}

impl RuntimeArgs {
    fn options(&self) -> RuntimeOptions {
        RuntimeOptions {
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache
                    .clone()
                    .or_else(weir::runtime::Cache::default_dir)
            },
            memory_limit: self.memory_mb << 20,
            deadline: Duration::from_millis(self.deadline_ms),
            max_timeouts: self.max_timeouts,
        }
    }
}

#[derive(Args)]
struct TestArgs {
    /// The component (.wasm) to run, or a pipeline file (.toml) to run in
    /// memory.
    module: PathBuf,
    /// The records, one JSON object per line (or plain lines, with --text):
    /// FILE for a module; TOPIC=FILE (repeatable) for a pipeline.
    #[arg(long, short, required = true)]
    input: Vec<String>,
    /// Read the inputs as plain text, as `weir produce --text`: each line a
    /// record's value (no key, timestamp 0).
    #[arg(long)]
    text: bool,
    /// With --text: the text before the first SEP of a line is the key.
    #[arg(long, value_name = "SEP", requires = "text")]
    key_separator: Option<String>,
    /// Pipeline tests: partitions of every input topic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,
    /// Pipeline tests: move the simulated wall clock forward by this much
    /// (e.g. 10s, 500ms, 2m) once the input is consumed; timers then fire.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    advance_wall: Option<i64>,
    /// Compare the outputs with these records (JSON lines with some of
    /// topic (pipelines) or output (modules), key, value, headers,
    /// timestamp); exit 1 with the differences when they differ.
    #[arg(long, value_name = "FILE.jsonl")]
    expect: Option<PathBuf>,
    /// With --expect: compare as multisets, in any order.
    #[arg(long, requires = "expect")]
    ignore_order: bool,
    /// Pipeline tests: print the final state of every step after the run
    /// (key, window, value; a processor's stores by name).
    #[arg(long)]
    state: bool,
    /// Every part of the output as JSON lines (state entries with their
    /// "step", differences and a summary object).
    #[arg(long)]
    json: bool,
    /// A setting passed to the function's init, as KEY=VALUE (repeatable).
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_kv)]
    config: Vec<(String, String)>,
    /// Records per call into the guest [default: 100 for a module, 500 (as
    /// `weir run`) for a pipeline].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: Option<u32>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args)]
struct CheckArgs {
    /// The component (.wasm) to check.
    module: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// "s" unless `n` is 1: `format!("{n} record{}", plural(n))`.
pub(crate) fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `n` and `noun`, plural unless `n` is 1: "1 record", "2 records".
pub(crate) fn count_of(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", plural(n))
}

fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("expected a duration such as 10s, 500ms, 2m or 1h, got {s:?}"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "expected a duration such as 10s, 500ms, 2m or 1h, got {s:?}"
            ));
        }
    };
    n.checked_mul(scale)
        .filter(|ms| *ms >= 0)
        .ok_or_else(|| format!("duration {s:?} is out of range"))
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Logs to stderr: warnings from the host, and guest messages from info up,
/// unless `WEIR_LOG` (a tracing filter) says otherwise.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,weir::guest=info"));
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_filter(filter);
    // The daemon keeps guest log lines for `weir logs`.
    let guests = daemon::logs::Capture.with_filter(daemon::logs::GuestOnly);
    tracing_subscriber::registry().with(fmt).with(guests).init();
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Test(args) => test(args),
        Command::Check(args) => check(args),
        Command::Bench(args) => bench::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Topic(cmd) => log_cmds::topic(cmd),
        Command::Produce(args) => log_cmds::produce(args),
        Command::Consume(args) => log_cmds::consume(args),
        Command::Run(args) => run_cmd::run(args),
        Command::State(cmd) => state_cmds::state(cmd),
        Command::Reset(args) => state_cmds::reset(args),
        Command::Demo(args) => demo::run(args),
        Command::New(args) => new::run(args),
        Command::Serve(args) => daemon_cmds::serve(args),
        Command::Module(cmd) => daemon_cmds::module(cmd),
        Command::Deploy(args) => daemon_cmds::deploy(args),
        Command::Pipeline(cmd) => daemon_cmds::pipeline(cmd),
        Command::Swap(args) => daemon_cmds::swap(args),
        Command::Rollback(args) => daemon_cmds::rollback(args),
        Command::Shadow(args) => daemon_cmds::shadow(args),
        Command::Diff(args) => daemon_cmds::diff(args),
        Command::Promote(args) => daemon_cmds::promote(args),
        Command::Discard(args) => daemon_cmds::discard(args),
        Command::Logs(args) => daemon_cmds::logs(args),
    }
}

/// A module file that does not exist: say how to build it.
fn require_module(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        anyhow::bail!(
            "{}: no such file: {}",
            path.display(),
            weir::hints::missing_module(path)
        );
    }
    Ok(())
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let text = args.text.then_some(args.key_separator.as_deref());
    if args.module.extension().is_some_and(|e| e == "toml") {
        return testdriver::run(testdriver::PipelineTest {
            pipeline: &args.module,
            inputs: &args.input,
            text,
            partitions: args.partitions,
            advance_wall_ms: args.advance_wall.unwrap_or(0),
            batch: args.batch.unwrap_or(500) as usize,
            runtime: &args.runtime,
            expect: args.expect.as_deref(),
            ignore_order: args.ignore_order,
            state: args.state,
            json: args.json,
        });
    }
    let pipeline_only = [
        ("--partitions", args.partitions != 1),
        ("--advance-wall", args.advance_wall.is_some()),
        ("--state", args.state),
    ];
    if let Some((flag, _)) = pipeline_only.iter().find(|(_, given)| *given) {
        anyhow::bail!(
            "{flag} is for pipeline tests (weir test PIPELINE.toml --input TOPIC=FILE.jsonl ...); {} is a module",
            args.module.display()
        );
    }
    let [input] = args.input.as_slice() else {
        anyhow::bail!(
            "a module test takes one --input FILE.jsonl; to feed several topics, test a pipeline file (weir test PIPELINE.toml --input TOPIC=FILE.jsonl ...)"
        );
    };
    module_test::run(module_test::ModuleTest {
        module: &args.module,
        input: Path::new(input),
        text,
        config: &args.config,
        batch: args.batch.unwrap_or(100) as usize,
        runtime: &args.runtime,
        expect: args.expect.as_deref(),
        ignore_order: args.ignore_order,
        json: args.json,
    })
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let options = args.runtime.options();
    let runtime = Runtime::new(options)?;
    require_module(&args.module)?;
    let module = runtime.load_file(&args.module)?;
    print_check(&args.module, &module)?;
    Ok(ExitCode::SUCCESS)
}

fn print_check(path: &Path, module: &weir::runtime::Module) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "module: {}", path.display())?;
    writeln!(out, "world: {}", module.world())?;
    writeln!(out, "size: {} bytes", module.size())?;
    writeln!(out, "sha256: {}", module.sha256())?;
    writeln!(
        out,
        "exports: {} ({})",
        module.world().interface(),
        module.world().functions().join(", ")
    )?;
    let others: Vec<&String> = module
        .exports()
        .iter()
        .filter(|e| *e != module.world().interface())
        .collect();
    for e in others {
        if module.upgrades() && e == weir::runtime::UPGRADING {
            writeln!(
                out,
                "exports: {e} ({}: converts state older versions wrote)",
                weir::runtime::UPGRADING_FUNCTIONS.join(", ")
            )?;
        } else {
            writeln!(out, "exports: {e} (ignored)")?;
        }
    }
    for i in module.imports() {
        let what = if i.starts_with("wasi:") {
            "linked, grants nothing"
        } else {
            "provided"
        };
        writeln!(out, "imports: {i} ({what})")?;
    }
    writeln!(
        out,
        "compiled: {}",
        if module.from_cache() {
            "loaded from the precompiled cache"
        } else {
            "compiled now"
        }
    )?;
    writeln!(
        out,
        "load time: {:.2} ms",
        module.load_time().as_secs_f64() * 1e3
    )?;
    Ok(())
}
