//! The foundation: `weir test` and `weir check` over the examples and the
//! misbehaving test guests; loading errors; the precompiled cache.

use std::io::Write;

use crate::util::{assert_lines, guest, root, run, tempdir, weir};

fn example_input(name: &str) -> std::path::PathBuf {
    root().join("examples").join(name).join("sample.jsonl")
}

#[test]
fn uppercase_upper_cases_values() {
    let r = run(weir()
        .arg("test")
        .arg(guest("uppercase"))
        .arg("--input")
        .arg(example_input("uppercase")));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"
        {"output":null,"key":"a","value":"HELLO, WORLD","timestamp":1}
        {"output":null,"key":"b","value":"WEIR RUNS STREAM FUNCTIONS","timestamp":2}
        {"output":null,"key":null,"value":"NO KEY HERE","timestamp":3}
        {"output":null,"key":"d","value":null,"timestamp":4}
        "#,
    );
    assert_lines("stderr", &r.stderr, "");
}

#[test]
fn filter_errors_routes_by_level_and_rejects_non_json() {
    let r = run(weir()
        .arg("test")
        .arg(guest("filter-errors"))
        .arg("--input")
        .arg(example_input("filter-errors")));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"
        {"output":"low","key":"web-1","value":{"level":"INFO","msg":"started"},"timestamp":1000}
        {"output":"high","key":"web-1","value":{"level":"ERROR","msg":"disk full"},"timestamp":1001}
        {"output":"low","key":"db-7","value":{"level":"WARN","msg":"slow query"},"headers":{"trace":"abc"},"timestamp":1002}
        {"output":"high","key":"web-2","value":{"level":"ERROR","msg":"timeout"},"timestamp":1004}
        {"output":"low","key":null,"value":{"msg":"no level"},"timestamp":1005}
        "#,
    );
    assert_lines(
        "stderr",
        &r.stderr,
        r#"
        {"offset":3,"key":"db-7","value":"not json at all","headers":{"weir.error":"not a JSON log line: expected an object such as {\"level\":\"ERROR\",...}","weir.error.kind":"rejected"},"timestamp":1003}
        "#,
    );
}

#[test]
fn split_words_emits_lower_cased_words_without_the() {
    let r = run(weir()
        .arg("test")
        .arg(guest("split-words"))
        .arg("--input")
        .arg(example_input("split-words")));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"
        {"output":null,"key":"quick","value":"quick","timestamp":10}
        {"output":null,"key":"brown","value":"brown","timestamp":10}
        {"output":null,"key":"fox","value":"fox","timestamp":10}
        {"output":null,"key":"jumps","value":"jumps","timestamp":20}
        {"output":null,"key":"over","value":"over","timestamp":20}
        {"output":null,"key":"lazy","value":"lazy","timestamp":20}
        {"output":null,"key":"dog","value":"dog","timestamp":20}
        {"output":null,"key":"end","value":"end","timestamp":20}
        {"output":null,"key":"fox","value":"fox","timestamp":40}
        {"output":null,"key":"fox","value":"fox","timestamp":40}
        {"output":null,"key":"and","value":"and","timestamp":40}
        {"output":null,"key":"foxes","value":"foxes","timestamp":40}
        "#,
    );
}

#[test]
fn settings_reach_init() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"key\":\"k\",\"value\":\"v\"}\n").unwrap();
    let r = run(weir()
        .arg("test")
        .arg(guest("faulty"))
        .arg("--input")
        .arg(&input)
        .args(["--config", "suffix=-configured"]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"{"output":null,"key":"k","value":"v-configured","timestamp":0}"#,
    );
}

#[test]
fn a_trap_in_a_batch_of_100_dead_letters_only_that_record() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    let mut expected = String::new();
    for i in 1..=100 {
        let value = if i == 37 {
            "panic".to_string()
        } else {
            format!("v{i}")
        };
        writeln!(f, r#"{{"key":"k{i}","value":"{value}","timestamp":{i}}}"#).unwrap();
        if i != 37 {
            expected.push_str(&format!(
                "{{\"output\":null,\"key\":\"k{i}\",\"value\":\"v{i}\",\"timestamp\":{i}}}\n"
            ));
        }
    }
    drop(f);
    let r = run(weir()
        .arg("test")
        .arg(guest("faulty"))
        .arg("--input")
        .arg(&input)
        .args(["--batch", "100"]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 99);
    assert_lines("stdout", &r.stdout, &expected);
    assert_lines(
        "stderr",
        &r.stderr,
        r#"{"offset":36,"key":"k37","value":"panic","headers":{"weir.error":"panicked at tests/guests/faulty/src/lib.rs:11:20: boom at offset 36","weir.error.kind":"trapped"},"timestamp":37}"#,
    );
}

#[test]
fn an_endless_loop_hits_the_deadline_and_the_rest_goes_on() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"value\":\"a\"}\n{\"value\":\"loop\"}\n{\"value\":\"b\"}\n",
    )
    .unwrap();
    let r = run(weir()
        .arg("test")
        .arg(guest("faulty"))
        .arg("--input")
        .arg(&input)
        .args(["--deadline-ms", "200"]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"
        {"output":null,"key":null,"value":"a","timestamp":0}
        {"output":null,"key":null,"value":"b","timestamp":0}
        "#,
    );
    assert_lines(
        "stderr",
        &r.stderr,
        r#"{"offset":1,"key":null,"value":"loop","headers":{"weir.error":"deadline exceeded: the call ran longer than 200 ms","weir.error.kind":"trapped"},"timestamp":0}"#,
    );
}

#[test]
fn a_guest_that_eats_memory_is_stopped_at_the_limit() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"value\":\"oom\"}\n{\"value\":\"after\"}\n").unwrap();
    let r = run(weir()
        .arg("test")
        .arg(guest("faulty"))
        .arg("--input")
        .arg(&input)
        .args(["--memory-mb", "32"]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"{"output":null,"key":null,"value":"after","timestamp":0}"#,
    );
    assert_lines(
        "stderr",
        &r.stderr,
        r#"{"offset":0,"key":null,"value":"oom","headers":{"weir.error":"memory limit exceeded: the guest tried to grow its memory past 32 MiB","weir.error.kind":"trapped"},"timestamp":0}"#,
    );
}

#[test]
fn guest_logs_go_to_the_host_log_tagged_with_module_and_step() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"value\":\"log\"}\n").unwrap();
    let module = guest("faulty");
    let r = run(weir().arg("test").arg(&module).arg("--input").arg(&input));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stderr",
        &r.stderr,
        &format!(
            " INFO weir::guest: hello from offset 0 module={} step=test",
            module.display()
        ),
    );
}

#[test]
fn a_malformed_input_line_names_the_file_and_line_and_the_rest_is_processed() {
    let dir = tempdir();
    let input = dir.path().join("records.jsonl");
    std::fs::write(
        &input,
        "{\"value\":\"one\"}\n{\"vaule\":\"two\"}\n\n{\"value\":\"three\"\n{\"value\":\"four\"}\n",
    )
    .unwrap();
    let r = run(weir()
        .arg("test")
        .arg(guest("uppercase"))
        .arg("--input")
        .arg(&input));
    assert_eq!(r.status.code(), Some(1));
    assert_lines(
        "stdout",
        &r.stdout,
        r#"
        {"output":null,"key":null,"value":"ONE","timestamp":0}
        {"output":null,"key":null,"value":"FOUR","timestamp":0}
        "#,
    );
    let file = input.display();
    assert_lines(
        "stderr",
        &r.stderr,
        &format!(
            "error: {file}:2: unknown field `vaule`; a record has the fields key, key_b64, value, value_b64, headers, timestamp
             error: {file}:4: not JSON: EOF while parsing an object at line 1 column 16
             error: 2 malformed lines in {file} (the other records were processed)"
        ),
    );
}

fn check_error(bytes: &[u8], name: &str) -> (String, String) {
    let dir = tempdir();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let r = run(weir().arg("check").arg(&path));
    assert_eq!(r.status.code(), Some(1), "{}", r.stdout);
    assert_eq!(r.stdout, "");
    (path.display().to_string(), r.stderr)
}

#[test]
fn garbage_bytes_are_refused() {
    let (path, stderr) = check_error(b"hello world, not wasm", "garbage.wasm");
    assert_lines(
        "stderr",
        &stderr,
        &format!(
            r#"error: {path}: not a WebAssembly component: it does not start with the bytes \0asm (it starts with "hello wo")"#
        ),
    );
}

#[test]
fn a_core_module_is_refused_with_how_to_build_a_component() {
    let (path, stderr) = check_error(b"\0asm\x01\0\0\0", "core.wasm");
    assert_lines(
        "stderr",
        &stderr,
        &format!(
            "error: {path}: this is a core WebAssembly module, not a component. Build the guest for the target wasm32-wasip2 (cargo build --target wasm32-wasip2), or wrap a core module with `wasm-tools component new`"
        ),
    );
}

#[test]
fn a_component_of_no_weir_world_is_refused() {
    // The smallest component: a header and nothing else.
    let (path, stderr) = check_error(b"\0asm\x0d\0\x01\0", "empty.wasm");
    assert_lines(
        "stderr",
        &stderr,
        &format!(
            "error: {path}: exports none of the Weir worlds' interfaces (mapper: weir:functions/mapping@0.1.0, aggregator: weir:functions/aggregation@0.1.0, joiner: weir:functions/joining@0.1.0, processor: weir:functions/processing@0.1.0); it exports: nothing. Implement one world of wit/functions.wit"
        ),
    );
}

#[test]
fn a_truncated_component_names_the_offset() {
    let bytes = std::fs::read(guest("uppercase")).unwrap();
    let (path, stderr) = check_error(&bytes[..bytes.len() / 2], "truncated.wasm");
    assert!(
        stderr.starts_with(&format!("error: {path}: invalid component: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("failed to parse WebAssembly module") && stderr.contains("out of bounds"),
        "{stderr}"
    );
}

#[test]
fn a_missing_export_is_named() {
    let module = guest("half-mapper");
    let r = run(weir().arg("check").arg(&module));
    assert_eq!(r.status.code(), Some(1));
    assert_lines(
        "stderr",
        &r.stderr,
        &format!(
            "error: {}: a mapper must export `process` in weir:functions/mapping@0.1.0, and this module does not",
            module.display()
        ),
    );
}

#[test]
fn a_joiner_alone_is_refused_by_weir_test_with_a_pipeline_example() {
    let module = guest("merge-json");
    let r = run(weir()
        .arg("test")
        .arg(&module)
        .arg("--input")
        .arg(example_input("uppercase")));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(r.stdout, "");
    assert_lines(
        "stderr",
        &r.stderr,
        &format!(
            r#"error: {}: is a joiner, which joins two inputs; test it in a pipeline file, e.g. join.toml:

                name = "join-test"
                input = "left"
                output = "joined"
                steps = [{{ name = "join", kind = "join", module = "merge_json.wasm", with = "right", with_kind = "table" }}]

            then: weir test join.toml --input left=left.jsonl --input right=right.jsonl"#,
            module.display()
        ),
    );
}

#[test]
fn check_describes_world_exports_and_imports() {
    let module = guest("faulty");
    let r = run(weir().arg("check").arg(&module));
    assert!(r.status.success(), "{}", r.stderr);
    let size = std::fs::metadata(&module).unwrap().len();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], format!("module: {}", module.display()));
    assert_eq!(lines[1], "world: mapper");
    assert_eq!(lines[2], format!("size: {size} bytes"));
    assert!(lines[3].starts_with("sha256: ") && lines[3].len() == 8 + 64);
    assert_eq!(
        lines[4],
        "exports: weir:functions/mapping@0.1.0 (init, process)"
    );
    assert!(lines.contains(&"imports: weir:functions/log@0.1.0 (provided)"));
    assert!(lines.contains(&"imports: wasi:cli/stderr@0.2.6 (linked, grants nothing)"));
    let aggregate = run(weir().arg("check").arg(guest("count")));
    assert!(aggregate.stdout.contains("world: aggregator\n"));
    assert!(
        aggregate
            .stdout
            .contains("exports: weir:functions/aggregation@0.1.0 (init, add, merge, present)\n")
    );
}

#[test]
fn a_second_load_comes_from_the_precompiled_cache() {
    let cache = tempdir();
    let module = guest("split-words");
    let first = run(weir()
        .arg("check")
        .arg(&module)
        .arg("--cache")
        .arg(cache.path()));
    assert!(first.status.success(), "{}", first.stderr);
    assert!(
        first.stdout.contains("\ncompiled: compiled now\n"),
        "{}",
        first.stdout
    );
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].ends_with(".cwasm"));
    let second = run(weir()
        .arg("check")
        .arg(&module)
        .arg("--cache")
        .arg(cache.path()));
    assert!(
        second
            .stdout
            .contains("\ncompiled: loaded from the precompiled cache\n"),
        "{}",
        second.stdout
    );
    // A corrupt cache entry is recompiled, not fatal.
    std::fs::write(cache.path().join(&cached[0]), b"junk").unwrap();
    let third = run(weir()
        .arg("check")
        .arg(&module)
        .arg("--cache")
        .arg(cache.path()));
    assert!(third.status.success(), "{}", third.stderr);
    assert!(
        third.stdout.contains("\ncompiled: compiled now\n"),
        "{}",
        third.stdout
    );
}

#[test]
fn a_wrong_guest_signature_is_a_compile_error_pointing_at_it() {
    let krate = root().join("tests/guests/bad-signature");
    let target = crate::util::target_dir().join("bad-signature");
    let r = run(std::process::Command::new(env!("CARGO"))
        .args(["check", "--quiet", "--manifest-path"])
        .arg(krate.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_TERM_COLOR", "never"));
    assert!(!r.status.success());
    assert!(
        r.stderr.contains(
            "error: a weir function takes 1 argument, this one takes 2: expected `fn NAME(r: Record) -> Result<Vec<Output>, Error>`\n --> src/lib.rs:4:4"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("error[E0631]: type mismatch in function arguments\n  --> src/lib.rs:10:1"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(
            "error: an Aggregate that sets STATE_FORMAT must define `fn upgrade(from: u32, entry: &StateEntry) -> ...` too, which converts the state older formats left\n  --> src/lib.rs:19:11"
        ),
        "{}",
        r.stderr
    );
}

/// The README's five-minute guide, built and run as a reader would.
#[test]
fn the_readme_guide_builds_and_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = |start: &str| -> String {
        let at = readme
            .find(start)
            .unwrap_or_else(|| panic!("README has no block starting {start:?}"));
        let rest = &readme[at..];
        rest[..rest.find("```").unwrap()].to_string()
    };
    let manifest = block("# Cargo.toml").replace(
        "path = \"../weir/guest-sdk\"",
        &format!(
            "path = {:?}",
            root().join("guest-sdk").display().to_string()
        ),
    );
    let source = block("// src/lib.rs");
    let target = crate::util::target_dir().join("readme-guide");
    let krate = target.join("shout");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!("{manifest}\n[workspace]\n"),
    )
    .unwrap();
    std::fs::write(krate.join("src/lib.rs"), source).unwrap();
    let built = run(std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(krate.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target.join("target")));
    assert!(built.status.success(), "{}", built.stderr);
    let input = krate.join("sample.jsonl");
    std::fs::write(
        &input,
        "{\"key\": \"a\", \"value\": \"hello\"}\n{\"key\": \"b\"}\n",
    )
    .unwrap();
    let r = run(weir()
        .arg("test")
        .arg(target.join("target/wasm32-wasip2/release/shout.wasm"))
        .arg("--input")
        .arg(&input)
        .args(["--config", "suffix=?!"]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"{"output":null,"key":"a","value":"HELLO?!","timestamp":0}"#,
    );
    assert_lines(
        "stderr",
        &r.stderr,
        r#"{"offset":1,"key":"b","value":null,"headers":{"weir.error":"record at offset 1 has no value","weir.error.kind":"rejected"},"timestamp":0}"#,
    );
}

/// Only an aggregator or a processor keeps state a new version may upgrade:
/// a mapper exporting `upgrading` is refused, naming what to do.
#[test]
fn a_mapper_that_exports_an_upgrade_is_refused() {
    let module = guest("upgrading-mapper");
    let r = run(weir().arg("check").arg(&module));
    assert_eq!(r.status.code(), Some(1), "{}", r.stdout);
    assert_lines(
        "check",
        &r.stderr,
        &format!(
            "error: {}: exports weir:functions/upgrading@0.1.0, but it is a mapper, which keeps no state to upgrade: only an aggregator or a processor may export it; remove the export",
            module.display()
        ),
    );
}
