//! `weir new NAME --lang rust|js|python|go|c [--world ...]`: writes a guest
//! project that builds and passes `weir test` as it is, from the templates in
//! `host/templates/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// The language of a new guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, with the weir-guest crate.
    Rust,
    /// JavaScript, built with QuickJS (componentize-qjs).
    Js,
    /// Python, built with componentize-py.
    Python,
    /// Go (1.24 or later), built for wasip1 and made a component with jco.
    Go,
    /// C, built with clang and wasi-libc, linked by wasm-component-ld.
    C,
}

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Js => "JavaScript",
            Lang::Python => "Python",
            Lang::Go => "Go",
            Lang::C => "C",
        }
    }

    fn guide(self) -> &'static str {
        match self {
            Lang::Rust => "guide-rust.md",
            Lang::Js => "guide-js.md",
            Lang::Python => "guide-python.md",
            Lang::Go => "guide-go.md",
            Lang::C => "guide-c.md",
        }
    }
}

/// The world (kind of function) of a new guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorldArg {
    /// One record in, zero or more outputs out.
    Mapper,
    /// An aggregate whose accumulators the host keeps.
    Aggregator,
    /// A join whose state the host keeps.
    Joiner,
    /// Full control with state stores and timers.
    Processor,
}

impl WorldArg {
    fn name(self) -> &'static str {
        match self {
            WorldArg::Mapper => "mapper",
            WorldArg::Aggregator => "aggregator",
            WorldArg::Joiner => "joiner",
            WorldArg::Processor => "processor",
        }
    }
}

/// Arguments of `weir new`.
#[derive(Args)]
pub struct NewArgs {
    /// The project's name: lower-case letters, digits, `-` and `_`, starting
    /// with a letter. It becomes a new directory.
    name: String,
    /// The language.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// The kind of function.
    #[arg(long, value_enum, default_value_t = WorldArg::Mapper)]
    world: WorldArg,
    /// Where to create the project directory [default: the current directory].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The Weir repository this binary was built from (its guest SDKs).
fn repo() -> PathBuf {
    let host = Path::new(env!("CARGO_MANIFEST_DIR"));
    host.parent().unwrap_or(host).to_path_buf()
}

const SAMPLE: &str = include_str!("../../templates/sample.jsonl");
const SAMPLE_AGGREGATOR: &str = include_str!("../../templates/sample-aggregator.jsonl");
const SAMPLE_PROCESSOR: &str = include_str!("../../templates/sample-processor.jsonl");

/// A world's sample input, and what `weir test --expect` compares the
/// template's outputs over it with (none for a joiner, which is tested in a
/// pipeline file: see `joiner_files`).
fn sample(world: WorldArg) -> (&'static str, Option<&'static str>) {
    match world {
        WorldArg::Mapper => (SAMPLE, Some(include_str!("../../templates/expected.jsonl"))),
        WorldArg::Aggregator => (
            SAMPLE_AGGREGATOR,
            Some(include_str!("../../templates/expected-aggregator.jsonl")),
        ),
        WorldArg::Processor => (
            SAMPLE_PROCESSOR,
            Some(include_str!("../../templates/expected-processor.jsonl")),
        ),
        WorldArg::Joiner => (SAMPLE, None),
    }
}

fn function_template(lang: Lang, world: WorldArg) -> &'static str {
    match (lang, world) {
        (Lang::Rust, WorldArg::Mapper) => include_str!("../../templates/rust/mapper.rs"),
        (Lang::Rust, WorldArg::Aggregator) => include_str!("../../templates/rust/aggregator.rs"),
        (Lang::Rust, WorldArg::Joiner) => include_str!("../../templates/rust/joiner.rs"),
        (Lang::Rust, WorldArg::Processor) => include_str!("../../templates/rust/processor.rs"),
        (Lang::Js, WorldArg::Mapper) => include_str!("../../templates/js/mapper.js"),
        (Lang::Js, WorldArg::Aggregator) => include_str!("../../templates/js/aggregator.js"),
        (Lang::Js, WorldArg::Joiner) => include_str!("../../templates/js/joiner.js"),
        (Lang::Js, WorldArg::Processor) => include_str!("../../templates/js/processor.js"),
        (Lang::Python, WorldArg::Mapper) => include_str!("../../templates/python/mapper.py"),
        (Lang::Python, WorldArg::Aggregator) => {
            include_str!("../../templates/python/aggregator.py")
        }
        (Lang::Python, WorldArg::Joiner) => include_str!("../../templates/python/joiner.py"),
        (Lang::Python, WorldArg::Processor) => include_str!("../../templates/python/processor.py"),
        (Lang::Go, WorldArg::Mapper) => include_str!("../../templates/go/mapper.go"),
        (Lang::Go, WorldArg::Aggregator) => include_str!("../../templates/go/aggregator.go"),
        (Lang::Go, WorldArg::Joiner) => include_str!("../../templates/go/joiner.go"),
        (Lang::Go, WorldArg::Processor) => include_str!("../../templates/go/processor.go"),
        (Lang::C, WorldArg::Mapper) => include_str!("../../templates/c/mapper.c"),
        (Lang::C, WorldArg::Aggregator) => include_str!("../../templates/c/aggregator.c"),
        (Lang::C, WorldArg::Joiner) => include_str!("../../templates/c/joiner.c"),
        (Lang::C, WorldArg::Processor) => include_str!("../../templates/c/processor.c"),
    }
}

/// The files of a new project, as (path relative to it, contents), and the
/// commands that build and test it (run inside it).
struct Project {
    files: Vec<(String, String)>,
    build: String,
    test: String,
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let ok_start = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let ok_rest =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok_start || !ok_rest {
        bail!(
            "`{name}` is not a usable project name: use lower-case letters, digits, `-` and `_`, starting with a letter (for example `word-count`)"
        );
    }
    Ok(())
}

fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

fn project(name: &str, lang: Lang, world: WorldArg, repo: &Path) -> Project {
    let sdk = repo.join("guest-sdk").display().to_string();
    // The function's name in code: the project name as an identifier.
    let ident = name.replace('-', "_");
    let vars = [
        ("name", name),
        ("ident", ident.as_str()),
        ("sdk", sdk.as_str()),
        ("world", world.name()),
    ];
    let function = render(function_template(lang, world), &vars);
    let (sample, expected) = sample(world);
    let mut files = Vec::new();
    if world != WorldArg::Joiner {
        files.push(("sample.jsonl".to_string(), sample.to_string()));
    }
    if let Some(expected) = expected {
        files.push(("expected.jsonl".to_string(), expected.to_string()));
    }
    let (build, wasm) = match lang {
        Lang::Rust => {
            files.push((
                "Cargo.toml".into(),
                render(include_str!("../../templates/rust/Cargo.toml"), &vars),
            ));
            files.push((
                ".cargo/config.toml".into(),
                render(
                    include_str!("../../templates/rust/cargo-config.toml"),
                    &vars,
                ),
            ));
            files.push(("src/lib.rs".into(), function));
            files.push((".gitignore".into(), "/target\nCargo.lock\n".into()));
            // Cargo writes where CARGO_TARGET_DIR says, when it is set.
            let target = std::env::var("CARGO_TARGET_DIR")
                .ok()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "target".into());
            (
                "cargo build --release".to_string(),
                format!("{target}/wasm32-wasip2/release/{ident}.wasm"),
            )
        }
        Lang::Js => {
            files.push((
                "package.json".into(),
                render(include_str!("../../templates/js/package.json"), &vars),
            ));
            files.push(("index.js".into(), function));
            files.push((".gitignore".into(), "*.wasm\n".into()));
            // package.json's build script: node SDK/js/build.mjs index.js -o NAME.wasm
            ("npm run build".to_string(), format!("{name}.wasm"))
        }
        Lang::Python => {
            files.push((
                "pyproject.toml".into(),
                render(include_str!("../../templates/python/pyproject.toml"), &vars),
            ));
            files.push((
                "build.sh".into(),
                render(include_str!("../../templates/python/build.sh"), &vars),
            ));
            files.push(("app.py".into(), function));
            files.push((".gitignore".into(), "*.wasm\n__pycache__/\n".into()));
            ("bash build.sh".to_string(), format!("{name}.wasm"))
        }
        Lang::Go => {
            files.push((
                "go.mod".into(),
                render(include_str!("../../templates/go/go.mod"), &vars),
            ));
            files.push(("main.go".into(), function));
            files.push((".gitignore".into(), "*.wasm\n".into()));
            (
                format!("bash {sdk}/go/build.sh . {name}.wasm"),
                format!("{name}.wasm"),
            )
        }
        Lang::C => {
            files.push(("main.c".into(), function));
            files.push((".gitignore".into(), "*.wasm\n".into()));
            (
                format!("bash {sdk}/c/build.sh {name}.wasm main.c"),
                format!("{name}.wasm"),
            )
        }
    };
    let test = if expected.is_some() {
        format!("weir test {wasm} --input sample.jsonl --expect expected.jsonl")
    } else {
        // A joiner joins two inputs: it is tested in a pipeline file.
        files.extend(joiner_files(name, &wasm));
        "weir test join.toml --input left=left.jsonl --input right=right.jsonl --expect join.expected.jsonl".to_string()
    };
    let lang_name = lang.name();
    let guide = lang.guide();
    files.push((
        "README.md".into(),
        format!(
            "# {name}\n\nA Weir {world} in {lang_name}. Edit the function (the comment above it says what to change), then:\n\n```sh\n{build}\n{test}\n```\n{expect}\nSee {guide} in the Weir repository ({docs}).\n",
            world = world.name(),
            expect = if expected.is_some() {
                "\n`weir test` runs the function over `sample.jsonl` and compares its outputs with `expected.jsonl` (one expected record a line; the fields a line leaves out are not compared); it exits 1 with the differences when they differ. Change both files with the function; leave out `--expect expected.jsonl` to see the outputs.\n"
            } else {
                "\nA joiner joins two inputs, so `weir test` runs it in the pipeline `join.toml` (a left join of `left.jsonl` with the table `right.jsonl`) and compares the joined records with `join.expected.jsonl`; it exits 1 with the differences when they differ. Change the files with the function; leave out `--expect join.expected.jsonl` to see the outputs.\n"
            },
            docs = repo.join("docs").join(guide).display(),
        ),
    ));
    Project { files, build, test }
}

/// A joiner's test: a pipeline file with a left stream-table join, its two
/// inputs and the joined records the template gives.
fn joiner_files(name: &str, wasm: &str) -> Vec<(String, String)> {
    vec![
        (
            "join.toml".into(),
            render(
                include_str!("../../templates/join.toml"),
                &[("name", name), ("wasm", wasm)],
            ),
        ),
        (
            "left.jsonl".into(),
            include_str!("../../templates/join-left.jsonl").into(),
        ),
        (
            "right.jsonl".into(),
            include_str!("../../templates/join-right.jsonl").into(),
        ),
        (
            "join.expected.jsonl".into(),
            include_str!("../../templates/join-expected.jsonl").into(),
        ),
    ]
}

/// Runs `weir new`.
pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let parent = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let dir = parent.join(&args.name);
    if dir.exists() {
        bail!(
            "{} already exists: choose another name, or remove it first",
            dir.display()
        );
    }
    let p = project(&args.name, args.lang, args.world, &repo());
    for (path, contents) in &p.files {
        let file = dir.join(path);
        if let Some(d) = file.parent() {
            std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create the directory {}", d.display()))?;
        }
        std::fs::write(&file, contents)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    println!(
        "created {} (a {} {})",
        dir.display(),
        args.lang.name(),
        args.world.name()
    );
    println!("build:  cd {} && {}", dir.display(), p.build);
    println!("test:   {}", p.test);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("word-count").is_ok());
        assert!(check_name("w2_x").is_ok());
        assert!(check_name("Word").is_err());
        assert!(check_name("2words").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn every_template_is_filled_in() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python, Lang::Go, Lang::C] {
            for world in [
                WorldArg::Mapper,
                WorldArg::Aggregator,
                WorldArg::Joiner,
                WorldArg::Processor,
            ] {
                let p = project("my-fn", lang, world, Path::new("/repo"));
                for (path, contents) in &p.files {
                    assert!(!contents.contains("{{"), "{lang:?} {world:?} {path}");
                }
            }
        }
    }
}
