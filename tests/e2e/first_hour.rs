//! A newcomer's first hour: every language guide runs as written in a
//! scratch directory (a new project, built, tested, run in a pipeline), and
//! the messages a newcomer meets on the way say what to do. A newcomer's
//! first runs (state under each emit mode, dead letters) are in
//! first_hour_runs.rs.
//!
//! The guides follow one convention, which these tests rely on: a ```sh
//! block is run (in the directory the previous block ended in); a ```text
//! block right after it is exactly what it prints (stdout and stderr
//! together); a code block with `save=PATH` is a file the reader writes into
//! the project. The install block (`bash .ci/setup`, `just install`) is the
//! one block not run: the test puts the `weir` it was built with on the PATH
//! instead, which is what `just install` does.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{assert_lines, root, run, shared_cache, target_dir, tempdir};

/// A fenced code block of a guide.
struct Block {
    /// The info string's first word (`sh`, `text`, `rust`, ...).
    lang: String,
    /// `save=PATH`, when the reader is told to write it into a file.
    save: Option<String>,
    body: String,
    /// The 1-based line of the opening fence.
    line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("").to_string();
        let save = words
            .find_map(|w| w.strip_prefix("save="))
            .map(str::to_string);
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l == "```" {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        out.push(Block {
            lang,
            save,
            body,
            line: n + 1,
        });
    }
    out
}

/// The commands of a shell block, without comments and blank lines.
fn commands(body: &str) -> Vec<&str> {
    body.lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// A directory holding `weir` (the binary under test), for the PATH.
fn weir_on_path(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_weir"), bin.join("weir")).unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path}", bin.display())
}

/// Follows `docs/GUIDE` in a scratch directory; returns how many outputs it
/// compared.
fn follow(guide: &str) -> usize {
    let file = root().join("docs").join(guide);
    let text = std::fs::read_to_string(&file).unwrap();
    let scratch = tempdir();
    let path = weir_on_path(scratch.path());
    let home = scratch.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    let state = scratch.path().join("cwd");
    let mut cwd: PathBuf = home.clone();
    let mut installed = false;
    let mut compared = 0;
    let all = blocks(&text);
    let mut last_output: Option<(usize, String)> = None;
    for b in &all {
        let at = format!("{guide}:{}", b.line);
        match b.lang.as_str() {
            "sh" => {
                let cmds = commands(&b.body);
                if cmds.contains(&"bash .ci/setup") {
                    // The install block: `just install` puts weir on the PATH,
                    // as the test does with the binary it was built with.
                    assert_eq!(cmds, ["bash .ci/setup", "just install"], "{at}");
                    installed = true;
                    last_output = None;
                    continue;
                }
                assert!(installed, "{at}: a command before the install block");
                let script = format!(
                    "exec 2>&1\nset -e\ncd '{}'\n{}pwd > '{}'\n",
                    cwd.display(),
                    b.body,
                    state.display()
                );
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(&script)
                    .env("PATH", &path)
                    .env("WEIR_CACHE", shared_cache())
                    // One build directory for the Rust projects of every run,
                    // so that the SDK's dependencies compile once.
                    .env("CARGO_TARGET_DIR", target_dir().join("weir-new-rust"))
                    .env_remove("WEIR_LOG")
                    .env_remove("WEIR_DATA")
                    .env_remove("WEIR_MODULE_PATH");
                let r = run(&mut sh);
                assert!(
                    r.status.success(),
                    "{at}: the block failed:\n{}\n--- it printed:\n{}{}",
                    b.body,
                    r.stdout,
                    r.stderr
                );
                cwd = PathBuf::from(std::fs::read_to_string(&state).unwrap().trim());
                last_output = Some((b.line, r.stdout));
            }
            "text" => {
                // Output shown right after a command is what it prints.
                if let Some((line, printed)) = last_output.take() {
                    assert_lines(
                        &format!("{at}: what the block at line {line} printed"),
                        &printed,
                        &b.body,
                    );
                    compared += 1;
                }
            }
            _ => {
                if let Some(save) = &b.save {
                    let to = cwd.join(save);
                    std::fs::write(&to, &b.body)
                        .unwrap_or_else(|e| panic!("{at}: cannot write {}: {e}", to.display()));
                }
                last_output = None;
            }
        }
    }
    assert!(installed, "{guide}: no install block");
    compared
}

#[test]
fn the_rust_guide_runs_as_written() {
    // A new project, its template's output and its --expect run, the
    // aggregator's and the processor's --expect runs, the router built and
    // run over log lines, and the router in a pipeline.
    assert_eq!(follow("guide-rust.md"), 6);
}

#[test]
fn the_js_guide_runs_as_written() {
    assert_eq!(follow("guide-js.md"), 6);
}

#[test]
fn the_python_guide_runs_as_written() {
    assert_eq!(follow("guide-python.md"), 6);
}

// ------------------------------------------------------------------ templates

/// `weir new NAME --lang LANG` in `dir`, with `env`; returns what it printed.
fn weir_new(dir: &Path, name: &str, lang: &str, env: &[(&str, &str)]) -> String {
    let mut c = crate::util::weir();
    c.args(["new", name, "--lang", lang])
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    let r = run(&mut c);
    assert!(r.status.success(), "weir new: {}", r.stderr);
    r.stdout
}

#[test]
fn weir_new_prints_commands_that_work_where_they_are_run() {
    let dir = tempdir();
    let d = dir.path();
    assert_lines(
        "rust",
        &weir_new(d, "my-fn", "rust", &[]),
        "created ./my-fn (a Rust mapper)
         build:  cd ./my-fn && cargo build --release
         test:   weir test target/wasm32-wasip2/release/my_fn.wasm --input sample.jsonl --expect expected.jsonl",
    );
    // Cargo writes under CARGO_TARGET_DIR when it is set.
    assert_lines(
        "rust with CARGO_TARGET_DIR",
        &weir_new(d, "other-fn", "rust", &[("CARGO_TARGET_DIR", "/tmp/t")]),
        "created ./other-fn (a Rust mapper)
         build:  cd ./other-fn && cargo build --release
         test:   weir test /tmp/t/wasm32-wasip2/release/other_fn.wasm --input sample.jsonl --expect expected.jsonl",
    );
    assert_lines(
        "js",
        &weir_new(d, "js-fn", "js", &[]),
        "created ./js-fn (a JavaScript mapper)
         build:  cd ./js-fn && npm run build
         test:   weir test js-fn.wasm --input sample.jsonl --expect expected.jsonl",
    );
    assert_lines(
        "python",
        &weir_new(d, "py-fn", "python", &[]),
        "created ./py-fn (a Python mapper)
         build:  cd ./py-fn && bash build.sh
         test:   weir test py-fn.wasm --input sample.jsonl --expect expected.jsonl",
    );
}

#[test]
fn a_new_rust_project_builds_for_wasm_with_simd_and_has_serde() {
    let dir = tempdir();
    weir_new(dir.path(), "my-fn", "rust", &[]);
    let project = dir.path().join("my-fn");
    let config = std::fs::read_to_string(project.join(".cargo/config.toml")).unwrap();
    let settings: Vec<&str> = config
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(
        settings,
        [
            "[build]",
            "target = \"wasm32-wasip2\"",
            "[target.wasm32-wasip2]",
            "rustflags = [\"-C\", \"target-feature=+simd128,+bulk-memory\"]",
        ]
    );
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    for dep in [
        "serde = { version = \"1\", features = [\"derive\"] }",
        "serde_json = \"1\"",
    ] {
        assert!(
            manifest.lines().any(|l| l == dep),
            "Cargo.toml lacks {dep}:\n{manifest}"
        );
    }
}

// ------------------------------------------------------------------ guest builds check the shape

#[test]
fn a_js_module_whose_export_is_not_made_by_map_is_refused_at_build() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::write(
        d.join("index.js"),
        "import { Output } from \"weir-guest\";\nexport const mapping = (r) => Output.forward(r);\n",
    )
    .unwrap();
    std::fs::write(
        d.join("agg.js"),
        "export const aggregation = { init: () => 0, add: (a) => a + 1, merge: (a, b) => a + b };\n",
    )
    .unwrap();
    let build = |entry: &str| {
        run(Command::new("node")
            .arg(root().join("guest-sdk/js/build.mjs"))
            .args([entry, "-o", "out.wasm"])
            .current_dir(d))
    };
    let r = build("index.js");
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_lines(
        "stderr",
        &r.stderr,
        "build.mjs: index.js: `mapping` is a function, not what map(...) returns: write `export const mapping = map((r) => ...)`, with `import { map } from \"weir-guest\"`",
    );
    let r = build("agg.js");
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_lines(
        "stderr",
        &r.stderr,
        "build.mjs: agg.js: `aggregation` is an object, not what aggregate(...) returns: write `export const aggregation = aggregate({ init, add, merge })`, with `import { aggregate } from \"weir-guest\"`",
    );
    assert!(!d.join("out.wasm").exists());
}

#[test]
fn a_python_module_without_a_decorator_is_refused_at_build() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::write(
        d.join("app.py"),
        "import weir_guest as weir\n\n\ndef route(r):\n    return weir.Output.forward(r)\n",
    )
    .unwrap();
    let build = |args: &[&str]| {
        run(Command::new("bash")
            .arg(root().join("guest-sdk/python/build.sh"))
            .args(args)
            .current_dir(d))
    };
    let r = build(&[".", "app", "out.wasm"]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_lines(
        "stderr",
        &r.stderr,
        "build.sh: ./app.py has no function decorated with @weir.map (nor @weir.aggregate, @weir.join or @weir.processor): put `@weir.map` on the line above your function, with `import weir_guest as weir`",
    );
    std::fs::write(
        d.join("app.py"),
        "import weir_guest as weir\n\n\n@weir.map\ndef route(r):\n    return weir.Output.forward(r)\n",
    )
    .unwrap();
    let r = build(&[".", "app", "out.wasm", "aggregator"]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_lines(
        "stderr",
        &r.stderr,
        "build.sh: ./app.py is decorated with @weir.map, which makes a mapper, but the world asked for is aggregator: change the decorator, or leave the world out",
    );
    let r = build(&[".", "apps", "out.wasm"]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_lines(
        "stderr",
        &r.stderr,
        "build.sh: ./apps.py: no such file (the arguments are the app's directory, its module without .py, and the output)",
    );
    assert!(!d.join("out.wasm").exists());
}

// ------------------------------------------------------------------ numbers and offsets

#[test]
fn weir_test_offsets_are_0_based_as_in_weir_run_and_errors_name_the_line() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    // A blank line and a malformed line take no offset, as `weir produce`
    // gives them none.
    std::fs::write(
        &input,
        "{\"value\":\"x\"}\n\nnot json\n{\"value\":\"reject\"}\n",
    )
    .unwrap();
    let module = crate::util::guest("faulty");
    let r = run(crate::util::weir()
        .arg("test")
        .arg(&module)
        .arg("--input")
        .arg(&input));
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"{"output":null,"key":null,"value":"x","timestamp":0}"#,
    );
    assert_lines(
        "stderr",
        &r.stderr,
        &format!(
            r#"
            error: {file}:3: not JSON: expected ident at line 1 column 2
            {{"offset":1,"key":null,"value":"reject","headers":{{"weir.error":"rejected on purpose at offset 1","weir.error.kind":"rejected"}},"timestamp":0}}
            error: 1 malformed line in {file} (the other records were processed)
            "#,
            file = input.display()
        ),
    );

    // The same file through a topic and a pipeline: the guest sees the same offset.
    let data = dir.path().join("data");
    let weir = |args: &[&str]| run(crate::util::weir().args(args).arg("--data").arg(&data));
    weir(&["topic", "create", "in"]);
    let produced = weir(&["produce", "in", "--input", input.to_str().unwrap()]);
    assert_eq!(produced.status.code(), Some(1), "{}", produced.stderr);
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"p\"\ninput = \"in\"\noutput = \"out\"\n\n[[steps]]\nname = \"f\"\nkind = \"map\"\nmodule = \"{}\"\n",
            module.display()
        ),
    )
    .unwrap();
    let ran = weir(&["run", pipeline.to_str().unwrap(), "--until-caught-up", "-q"]);
    assert!(ran.status.success(), "{}", ran.stderr);
    let dead = weir(&["consume", "p-dead-letters", "--from-beginning"]);
    assert_lines(
        "dead letters of weir run",
        &dead.stdout,
        r#"{"partition":0,"offset":0,"key":null,"value":"reject","headers":{"weir.error":"rejected on purpose at offset 1","weir.error.kind":"rejected","weir.step":"f","weir.topic":"in","weir.partition":"0","weir.offset":"1"},"timestamp":0}"#,
    );
}

// ------------------------------------------------------------------ hints that fit the user

/// `weir ARGS` in `dir` (without CARGO_TARGET_DIR unless given); it must fail
/// with exactly `want` on stderr.
fn fails_with(dir: &Path, args: &[&str], env: &[(&str, &str)], want: &str) {
    let mut c = crate::util::weir();
    c.args(args).current_dir(dir).env_remove("CARGO_TARGET_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    let r = run(&mut c);
    assert_eq!(r.status.code(), Some(1), "weir {args:?}: {}", r.stderr);
    assert_lines(&format!("weir {args:?}"), &r.stderr, want);
}

#[test]
fn a_missing_module_says_how_to_build_it_in_its_language() {
    let dir = tempdir();
    let d = dir.path().canonicalize().unwrap();
    for (name, lang) in [("my-fn", "rust"), ("js-fn", "js"), ("py-fn", "python")] {
        weir_new(&d, name, lang, &[]);
    }
    let rust = d.join("my-fn");
    fails_with(
        &rust,
        &[
            "test",
            "target/wasm32-wasip2/release/my_fn.wasm",
            "--input",
            "sample.jsonl",
        ],
        &[],
        &format!(
            "error: target/wasm32-wasip2/release/my_fn.wasm: no such file: build it first: `cargo build --release` in {} (a Rust project)",
            rust.display()
        ),
    );
    fails_with(
        &rust,
        &["check", "target/wasm32-wasip2/release/my_fn.wasm"],
        &[("CARGO_TARGET_DIR", "/tmp/elsewhere")],
        &format!(
            "error: target/wasm32-wasip2/release/my_fn.wasm: no such file: build it first: `cargo build --release` in {} (a Rust project); CARGO_TARGET_DIR is set, so cargo writes the component under /tmp/elsewhere, not under target/",
            rust.display()
        ),
    );
    let js = d.join("js-fn");
    fails_with(
        &js,
        &["test", "js-fn.wasm", "--input", "sample.jsonl"],
        &[],
        &format!(
            "error: js-fn.wasm: no such file: build it first: `npm run build` in {} (a JavaScript project)",
            js.display()
        ),
    );
    let py = d.join("py-fn");
    fails_with(
        &py,
        &["test", "py-fn.wasm", "--input", "sample.jsonl"],
        &[],
        &format!(
            "error: py-fn.wasm: no such file: build it first: `bash build.sh` in {} (a Python project)",
            py.display()
        ),
    );
    // Outside any project, and in a pipeline file.
    fails_with(
        &d,
        &["check", "nowhere.wasm"],
        &[],
        "error: nowhere.wasm: no such file: fix the path, or build the module first",
    );
    std::fs::write(
        js.join("p.toml"),
        "name = \"p\"\ninput = \"in\"\n\n[[steps]]\nname = \"f\"\nkind = \"map\"\nmodule = \"js-fn.wasm\"\n",
    )
    .unwrap();
    fails_with(
        &js,
        &["run", "p.toml", "--data", "data"],
        &[],
        &format!(
            "error: p.toml:7: step f: `module` = \"js-fn.wasm\": no such file, relative to the pipeline file (js-fn.wasm) or in WEIR_MODULE_PATH; build it first: `npm run build` in {} (a JavaScript project)",
            js.display()
        ),
    );
}

#[test]
fn a_step_whose_module_is_of_another_world_names_the_line_and_the_fix() {
    let dir = tempdir();
    let d = dir.path();
    let module = crate::util::guest("uppercase");
    std::fs::write(
        d.join("sums.toml"),
        format!(
            "name = \"sums\"\ninput = \"in\"\n\n[[steps]]\nname = \"sum\"\n# a mapper, by mistake\nkind = \"aggregate\"\nmodule = \"{}\"\n",
            module.display()
        ),
    )
    .unwrap();
    fails_with(
        d,
        &["run", "sums.toml", "--data", "data"],
        &[],
        &format!(
            "error: sums.toml:7: step sum is an aggregate step (`kind = \"aggregate\"`), so its module must be an aggregator, but {m} is a mapper: set `kind = \"map\"`, or build the module as an aggregator",
            m = module.display()
        ),
    );
    // A field of another kind of step: the kind with its article.
    std::fs::write(
        d.join("emit.toml"),
        format!(
            "name = \"e\"\ninput = \"in\"\n\n[[steps]]\nname = \"up\"\nkind = \"map\"\nmodule = \"{}\"\nemit = \"close\"\n",
            module.display()
        ),
    )
    .unwrap();
    fails_with(
        d,
        &["run", "emit.toml", "--data", "data"],
        &[],
        "error: emit.toml:8: step up: `emit` applies to aggregate steps, not to a map step",
    );
    std::fs::write(
        d.join("with.toml"),
        format!(
            "name = \"w\"\ninput = \"in\"\n\n[[steps]]\nname = \"agg\"\nkind = \"aggregate\"\nmodule = \"{}\"\nwith = \"t\"\n",
            module.display()
        ),
    )
    .unwrap();
    fails_with(
        d,
        &["run", "with.toml", "--data", "data"],
        &[],
        "error: with.toml:8: step agg: `with` applies to join steps, not to an aggregate step",
    );
}

// ------------------------------------------------------------------ the pipeline reference

#[test]
fn the_readme_links_the_pipeline_reference_and_the_guides() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for link in [
        "(docs/pipeline.md)",
        "(docs/guide-rust.md)",
        "(docs/guide-js.md)",
        "(docs/guide-python.md)",
    ] {
        assert!(readme.contains(link), "README.md does not link {link}");
    }
}

#[test]
fn weir_help_says_what_new_run_and_pipeline_do() {
    let r = run(crate::util::weir().arg("--help"));
    assert!(r.status.success(), "{}", r.stderr);
    let line = |cmd: &str| {
        r.stdout
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("{cmd} ")))
            .unwrap_or_else(|| panic!("weir --help lists `{cmd}`: {}", r.stdout))
            .to_string()
    };
    assert_eq!(
        line("new"),
        "new       Write a new guest project (Rust, JavaScript, Python, Go or C) that builds and passes `weir test` as it is"
    );
    assert_eq!(
        line("run"),
        "run       Run a pipeline file on the embedded log (or on Kafka, with --brokers or a `[kafka]` section in the file)"
    );
    assert_eq!(
        line("pipeline"),
        "pipeline  The daemon's pipelines: list, status, stop, start, reset, delete"
    );
}

#[test]
fn bench_latency_and_pipelines_name_a_missing_module_before_printing_a_table() {
    let dir = tempdir();
    let module = dir.path().join("uppercase.wasm");
    for mode in ["--latency", "--pipelines"] {
        let r = run(crate::util::weir()
            .args(["bench", mode, "--module"])
            .arg(&module));
        assert_eq!(r.status.code(), Some(1), "{mode}: {}", r.stderr);
        assert_eq!(r.stdout, "", "{mode}");
        assert_lines(
            mode,
            &r.stderr,
            &format!(
                "error: {} is missing: run `just guests-rust`, which builds the examples into $CARGO_TARGET_DIR/wasm32-wasip2/guest/ (by default ~/.cache/weir/target/wasm32-wasip2/guest/), and give --module that directory's uppercase.wasm",
                module.display()
            ),
        );
    }
}

#[test]
fn topic_clean_with_weir_brokers_set_says_it_is_for_the_embedded_log() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let r = run(crate::util::weir()
        .env("WEIR_BROKERS", "127.0.0.1:1")
        .args(["topic", "clean", "--data"])
        .arg(&data));
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_lines(
        "stderr",
        &r.stderr,
        "error: `weir topic clean` is for the embedded log only: Kafka applies retention and compaction itself (WEIR_BROKERS is set; unset it to clean the embedded log)",
    );
    assert!(!data.exists(), "no data directory is made");
}
