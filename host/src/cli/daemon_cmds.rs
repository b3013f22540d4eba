//! `weir serve` and the commands that talk to it over HTTP: `module`,
//! `deploy`, `pipeline`, `swap`, `rollback`, `shadow`, `diff`, `promote`,
//! `discard`, `logs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use weir::log::Log;
use weir::runtime::Runtime;

use super::RuntimeArgs;
use super::daemon::{self, http};
use super::log_cmds::owner;

#[path = "daemon_client.rs"]
mod client;

pub use self::client::ServerArgs;
use self::client::esc;

#[path = "version_cmds.rs"]
mod versions;

pub use self::versions::{
    DiffArgs, NameArgs, StepArgs, SwapArgs, diff, discard, promote, rollback, shadow, swap,
};

#[derive(Args)]
pub struct ServeArgs {
    /// The data directory the daemon owns.
    #[arg(long, env = "WEIR_DATA", default_value = ".weir", value_name = "DIR")]
    data: PathBuf,
    /// Where the HTTP API listens (port 0: any free port; the address is
    /// written to DIR/weir.addr either way).
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    listen: SocketAddr,
    /// The largest request body (module uploads), in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    max_body_mb: usize,
    /// How long a swap waits for the first batch with the new module
    /// before it answers (a trap in that batch still rolls it back later).
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    swap_wait_ms: u64,
    /// Records per batch of every pipeline.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// `weir serve`.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let log = Log::open(&args.data)?;
    let token = http::token(&args.data, std::env::var("WEIR_TOKEN").ok())?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (s, log) = (stop.clone(), log.clone());
        ctrlc::set_handler(move || {
            s.store(true, Ordering::SeqCst);
            weir::backend::Backend::wake(&*log);
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    // The daemon is made after its socket serves: a reset asks it, once
    // there, whether it runs the pipeline.
    let daemon_slot: Arc<std::sync::OnceLock<Arc<daemon::Daemon>>> = Arc::default();
    let runs: owner::Runs = {
        let slot = daemon_slot.clone();
        Arc::new(move |p: &str, reset| slot.get().and_then(|d| d.unless_runs(p, reset)))
    };
    let _owner = owner::serve(log.clone(), &args.data, stop.clone(), runs)?;
    daemon::logs::enable(&args.data)?;
    let runtime = Runtime::new(args.runtime.options())?;
    let d = daemon::Daemon::open(
        &args.data,
        log,
        runtime,
        Duration::from_millis(args.swap_wait_ms),
        args.batch.max(1),
    )?;
    let _ = daemon_slot.set(d.clone());
    let served = http::serve(
        d.clone(),
        http::Settings {
            listen: args.listen,
            token,
            max_body: args.max_body_mb << 20,
        },
        &stop,
    );
    d.shutdown();
    served?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum ModuleCommand {
    /// Upload a component: checked against the worlds, precompiled, stored
    /// under its sha256 as the next version of NAME; prints NAME@VERSION.
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// The module's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Every module version.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The versions of one module.
    Show {
        /// The module's name.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a version (refused while a pipeline runs it).
    Delete {
        /// NAME@VERSION.
        module: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn module_line(v: &Value) -> String {
    let used: Vec<String> = v["used_by"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{}  {}  {} bytes  sha256 {}{}",
        v["module"].as_str().unwrap_or(""),
        v["world"].as_str().unwrap_or(""),
        v["size"],
        v["sha256"].as_str().unwrap_or(""),
        if used.is_empty() {
            String::new()
        } else {
            format!("  in use by {}", used.join(", "))
        }
    )
}

/// `weir module ...`.
pub fn module(cmd: ModuleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ModuleCommand::Push { file, name, server } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let v = server
                .client()?
                .call("POST", &format!("/modules?name={}", esc(&name)), &bytes)
                .with_context(|| format!("{} was refused", file.display()))?;
            println!("{}", v["module"].as_str().unwrap_or(""));
            eprintln!(
                "{}: {}, {} bytes, checked and precompiled in {:.1} ms",
                file.display(),
                v["world"].as_str().unwrap_or(""),
                v["size"],
                v["precompile_ms"].as_f64().unwrap_or(0.0)
            );
        }
        ModuleCommand::List { server } => {
            let v = server.client()?.call("GET", "/modules", b"")?;
            for m in v.as_array().into_iter().flatten() {
                println!("{}", module_line(m));
            }
        }
        ModuleCommand::Show { name, server } => {
            let v = server
                .client()?
                .call("GET", &format!("/modules/{}", esc(&name)), b"")?;
            for m in v.as_array().into_iter().flatten() {
                println!("{}", module_line(m));
            }
        }
        ModuleCommand::Delete { module, server } => {
            let Some((name, version)) = module.split_once('@') else {
                bail!("{module:?}: give NAME@VERSION");
            };
            let v = server.client()?.call(
                "DELETE",
                &format!("/modules/{}/{}", esc(name), esc(version)),
                b"",
            )?;
            println!("deleted {}", v["deleted"].as_str().unwrap_or(""));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct DeployArgs {
    /// The pipeline file; its steps may name registry modules as
    /// `module = "NAME@VERSION"` or `"NAME@latest"`.
    file: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir deploy`.
pub fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let file = std::path::absolute(&args.file).unwrap_or(args.file.clone());
    let body = json!({"file": file, "text": text});
    let v = args
        .server
        .client()?
        .call("POST", "/pipelines", body.to_string().as_bytes())?;
    let steps: Vec<String> = v["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{}={}",
                s["name"].as_str().unwrap_or(""),
                s["module"].as_str().unwrap_or("")
            )
        })
        .collect();
    println!(
        "deployed {}: {}",
        v["name"].as_str().unwrap_or(""),
        steps.join(" ")
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum PipelineCommand {
    /// Every deployed pipeline.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Each step's module version, records in/out, dead letters, lag and
    /// state size.
    Status {
        /// The pipeline.
        name: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop it (it stays deployed).
    Stop {
        /// The pipeline.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Start it again.
    Start {
        /// The pipeline.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Make it reprocess its inputs from the start when started again: a
    /// stopped pipeline forgets its input positions and state and loses its
    /// internal topics (its output topics are kept).
    Reset {
        /// The pipeline.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop it and forget it (its topics and state stay).
    Delete {
        /// The pipeline.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn print_status(v: &Value) {
    println!(
        "pipeline {}: {} (application id {})",
        v["name"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or(""),
        v["app"].as_str().unwrap_or("-")
    );
    if let Some(e) = v["error"].as_str() {
        println!("  error: {e}");
    }
    let outs: Vec<&str> = v["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(input) = v["input"].as_str() {
        println!("  input {input}, outputs {}", outs.join(", "));
    }
    // On Kafka, which partitions the consumer group gave this daemon.
    if let Some(b) = v["backend"].as_str().filter(|b| b.starts_with("Kafka")) {
        let parts: Vec<String> = v["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Value::to_string)
            .collect();
        println!("  on {b}, partitions [{}]", parts.join(", "));
    }
    print_steps(v, "  ");
    if let Some(r) = v["last_rollback"].as_str() {
        println!("  last rollback: {r}");
    }
    if v["shadow"].is_object() {
        let s = &v["shadow"];
        println!(
            "  shadow: step {} on {} (application id {}, outputs {})",
            s["step"].as_str().unwrap_or(""),
            s["module"].as_str().unwrap_or(""),
            s["app"].as_str().unwrap_or(""),
            s["outputs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
        print_steps(s, "    ");
    }
}

fn print_steps(v: &Value, indent: &str) {
    for s in v["steps"].as_array().into_iter().flatten() {
        if s.get("records_in").is_none() {
            println!(
                "{indent}step {}: module {}",
                s["name"].as_str().unwrap_or(""),
                s["module"].as_str().unwrap_or("")
            );
            continue;
        }
        println!(
            "{indent}step {}: module {}, in {}, out {}, dead letters {}, lag {}, state {} entries ({} bytes), swaps {} (last: {}, pause {} us)",
            s["name"].as_str().unwrap_or(""),
            s["module"].as_str().unwrap_or(""),
            s["records_in"],
            s["records_out"],
            s["dead_letters"],
            s["lag"],
            s["state_entries"],
            s["state_bytes"],
            s["swaps"],
            s["last_swap"].as_str().unwrap_or(""),
            s["last_swap_pause_us"],
        );
    }
}

/// `weir pipeline ...`.
pub fn pipeline(cmd: PipelineCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PipelineCommand::List { server } => {
            let v = server.client()?.call("GET", "/pipelines", b"")?;
            for p in v.as_array().into_iter().flatten() {
                let steps: Vec<String> = p["steps"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(s, m)| format!("{s}={}", m.as_str().unwrap_or("")))
                    .collect();
                let shadow = match p["shadow"].as_object() {
                    Some(s) => format!(
                        "  shadow {}={}",
                        s["step"].as_str().unwrap_or(""),
                        s["module"].as_str().unwrap_or("")
                    ),
                    None => String::new(),
                };
                println!(
                    "{}  {}  {}{shadow}",
                    p["name"].as_str().unwrap_or(""),
                    p["state"].as_str().unwrap_or(""),
                    steps.join(" ")
                );
            }
        }
        PipelineCommand::Status { name, json, server } => {
            let v = server
                .client()?
                .call("GET", &format!("/pipelines/{}", esc(&name)), b"")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
        }
        PipelineCommand::Stop { name, server } => {
            server
                .client()?
                .call("POST", &format!("/pipelines/{}/stop", esc(&name)), b"")?;
            println!("stopped {name}");
        }
        PipelineCommand::Start { name, server } => {
            server
                .client()?
                .call("POST", &format!("/pipelines/{}/start", esc(&name)), b"")?;
            println!("started {name}");
        }
        PipelineCommand::Reset { name, server } => {
            let v =
                server
                    .client()?
                    .call("POST", &format!("/pipelines/{}/reset", esc(&name)), b"")?;
            let topics: Vec<&str> = v["topics"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let topics = if topics.is_empty() {
                String::new()
            } else {
                format!(", deleted {}", topics.join(", "))
            };
            let what = match v["entries"].as_u64() {
                Some(n) => format!("forgot {n} entries of positions and state"),
                None if v["group"].as_bool() == Some(true) => {
                    "deleted its consumer group and local state".to_string()
                }
                None => "deleted its local state".to_string(),
            };
            println!(
                "reset {name}: {what}{topics}; `weir pipeline start {name}` reprocesses its inputs from the start"
            );
        }
        PipelineCommand::Delete { name, server } => {
            server
                .client()?
                .call("DELETE", &format!("/pipelines/{}", esc(&name)), b"")?;
            println!("deleted {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct LogsArgs {
    /// The pipeline.
    pipeline: String,
    /// Only this step's lines.
    #[arg(long)]
    step: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 1000)]
    max: usize,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir logs`.
pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!("/pipelines/{}/logs?max={}", esc(&args.pipeline), args.max);
    if let Some(s) = &args.step {
        path.push_str(&format!("&step={}", esc(s)));
    }
    let v = args.server.client()?.call("GET", &path, b"")?;
    for l in v.as_array().into_iter().flatten() {
        println!(
            "{} {} {}: {}",
            l["level"].as_str().unwrap_or(""),
            l["step"].as_str().unwrap_or(""),
            l["module"].as_str().unwrap_or(""),
            l["message"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
