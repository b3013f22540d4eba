//! The commands that move a pipeline between versions of its modules, over
//! the daemon's HTTP API: `swap`, `rollback`, `shadow`, `diff`, `promote`,
//! `discard`.

use super::*;

#[derive(Args)]
pub struct SwapArgs {
    /// The pipeline.
    pipeline: String,
    /// The step.
    step: String,
    /// The module to switch to: NAME@VERSION or NAME@latest.
    module: String,
    #[command(flatten)]
    server: ServerArgs,
}

fn print_swap(v: &Value) {
    println!(
        "step {} of {}: {} -> {} ({}; pause {} us)",
        v["step"].as_str().unwrap_or(""),
        v["pipeline"].as_str().unwrap_or(""),
        v["from"].as_str().unwrap_or(""),
        v["to"].as_str().unwrap_or(""),
        match v["outcome"].as_str() {
            Some("confirmed") => "its first batch committed",
            Some("pending") => "no batch yet: a trap in its first batch will still roll it back",
            _ => "switched",
        },
        v["pause_us"]
    );
}

/// `weir swap`.
pub fn swap(args: SwapArgs) -> anyhow::Result<ExitCode> {
    let v = args.server.client()?.call(
        "POST",
        &format!(
            "/pipelines/{}/steps/{}/swap",
            esc(&args.pipeline),
            esc(&args.step)
        ),
        json!({"module": args.module}).to_string().as_bytes(),
    )?;
    print_swap(&v);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct StepArgs {
    /// The pipeline.
    pipeline: String,
    /// The step.
    step: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir rollback`.
pub fn rollback(args: StepArgs) -> anyhow::Result<ExitCode> {
    let v = args.server.client()?.call(
        "POST",
        &format!(
            "/pipelines/{}/steps/{}/rollback",
            esc(&args.pipeline),
            esc(&args.step)
        ),
        b"",
    )?;
    print_swap(&v);
    Ok(ExitCode::SUCCESS)
}

/// `weir shadow`.
pub fn shadow(args: SwapArgs) -> anyhow::Result<ExitCode> {
    let v = args.server.client()?.call(
        "POST",
        &format!("/pipelines/{}/shadow", esc(&args.pipeline)),
        json!({"step": args.step, "module": args.module})
            .to_string()
            .as_bytes(),
    )?;
    let s = &v["shadow"];
    println!(
        "shadow of {} started: step {} on {}, application id {}, outputs {}",
        args.pipeline,
        args.step,
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
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct DiffArgs {
    /// The pipeline.
    pipeline: String,
    /// As JSON.
    #[arg(long)]
    json: bool,
    /// How long to wait for the shadow to catch up, in seconds.
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// Samples of each kind.
    #[arg(long, default_value_t = 5)]
    samples: usize,
    #[command(flatten)]
    server: ServerArgs,
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// `weir diff`.
pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let v = args.server.client()?.call(
        "GET",
        &format!(
            "/pipelines/{}/diff?wait_ms={}&samples={}",
            esc(&args.pipeline),
            args.wait * 1000,
            args.samples
        ),
        b"",
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} against its shadow (step {} on {})",
        args.pipeline,
        v["shadow"]["step"].as_str().unwrap_or(""),
        v["shadow"]["module"].as_str().unwrap_or("")
    );
    for (what, n) in ["equal", "changed", "only_old", "only_new"]
        .iter()
        .map(|k| (k, &v[*k]))
    {
        println!("{:<9} {n}", what.replace('_', "-"));
    }
    let samples = &v["samples"];
    for s in samples["changed"].as_array().into_iter().flatten() {
        println!(
            "changed   {} {}: {} -> {}",
            s["topic"].as_str().unwrap_or(""),
            s["key"].as_str().unwrap_or(""),
            short(&s["old"]),
            short(&s["new"])
        );
    }
    for s in samples["only_old"].as_array().into_iter().flatten() {
        println!(
            "only-old  {} {}: {}",
            s["topic"].as_str().unwrap_or(""),
            s["key"].as_str().unwrap_or(""),
            short(&s["old"])
        );
    }
    for s in samples["only_new"].as_array().into_iter().flatten() {
        println!(
            "only-new  {} {}: {}",
            s["topic"].as_str().unwrap_or(""),
            s["key"].as_str().unwrap_or(""),
            short(&s["new"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct NameArgs {
    /// The pipeline.
    pipeline: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weir promote`.
pub fn promote(args: NameArgs) -> anyhow::Result<ExitCode> {
    let v = args.server.client()?.call(
        "POST",
        &format!("/pipelines/{}/promote", esc(&args.pipeline)),
        b"",
    )?;
    println!(
        "promoted the shadow of {}: step {} runs {} (application id {})",
        args.pipeline,
        v["step"].as_str().unwrap_or(""),
        v["module"].as_str().unwrap_or(""),
        v["app"].as_str().unwrap_or("")
    );
    for o in v["outputs"].as_array().into_iter().flatten() {
        println!(
            "readers of {} now read {}",
            o["from"].as_str().unwrap_or(""),
            o["to"].as_str().unwrap_or("")
        );
    }
    println!("{} (its output topics stay)", forgot(&v["forgot"]));
    Ok(ExitCode::SUCCESS)
}

/// What a promote or discard deleted of the application it ended, as a
/// line; a failure to delete goes to stderr as a warning.
fn forgot(v: &Value) -> String {
    let topics: Vec<&str> = ["topics", "deleted"]
        .iter()
        .flat_map(|f| v[*f].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    if let Some(e) = v["error"].as_str() {
        eprintln!("warning: {e}");
    }
    let app = v["reset"].as_str().unwrap_or("");
    if topics.is_empty() {
        format!("deleted the positions and state of application {app}")
    } else {
        format!(
            "deleted the positions and state of application {app} and the topics {}",
            topics.join(", ")
        )
    }
}

/// `weir discard`.
pub fn discard(args: NameArgs) -> anyhow::Result<ExitCode> {
    let v = args.server.client()?.call(
        "POST",
        &format!("/pipelines/{}/discard", esc(&args.pipeline)),
        b"",
    )?;
    println!(
        "discarded the shadow of {}: {}",
        args.pipeline,
        forgot(&v["forgot"])
    );
    Ok(ExitCode::SUCCESS)
}
