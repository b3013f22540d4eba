//! Guests in JavaScript (and TypeScript), Python, Go and C: the same
//! stateless examples print exactly what the Rust examples print; an
//! exception, a panic or an abort() becomes a dead letter with a readable
//! reason; `weir new` projects build and pass `weir test` in every
//! language; the guides' snippets are the files these tests build. Stateful
//! guests (state, timers, windows, joins, upgrades) are in
//! languages_stateful.rs.
//!
//! The guests are built by `just guests` (recipes `guests-js`,
//! `guests-python`, `guests-go`, `guests-c`) into
//! `$CARGO_TARGET_DIR/guests/LANG/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Run, assert_lines, guest, lang_guest, root, run, target_dir, tempdir, weir};

pub(crate) const LANGS: [&str; 2] = ["js", "python"];

/// The compiled guest languages, tested beside the interpreted ones above.
pub(crate) const GO_AND_C: [&str; 2] = ["go", "c"];

fn weir_test(module: &Path, input: &Path) -> Run {
    run(weir().arg("test").arg(module).arg("--input").arg(input))
}

fn example_input(name: &str) -> PathBuf {
    root().join("examples").join(name).join("sample.jsonl")
}

/// Runs the Rust example and the same example in every other language over
/// the same input; each must print exactly the same stdout and stderr.
fn same_as_rust(name: &str, langs: &[&str]) {
    let input = example_input(name);
    let rust = weir_test(&guest(name), &input);
    assert!(rust.status.success(), "{}", rust.stderr);
    assert!(!rust.stdout.is_empty());
    for &lang in langs {
        let other = weir_test(&lang_guest(lang, name), &input);
        assert_eq!(
            other.status.code(),
            rust.status.code(),
            "{lang}: {}",
            other.stderr
        );
        assert_lines(
            &format!("{lang} {name} stdout"),
            &other.stdout,
            &rust.stdout,
        );
        assert_lines(
            &format!("{lang} {name} stderr"),
            &other.stderr,
            &rust.stderr,
        );
        assert_eq!(other.stdout, rust.stdout, "{lang} {name}: stdout differs");
        assert_eq!(other.stderr, rust.stderr, "{lang} {name}: stderr differs");
    }
}

#[test]
fn filter_errors_in_js_and_python_prints_what_rust_prints() {
    same_as_rust("filter-errors", &LANGS);
}

#[test]
fn filter_errors_in_go_and_c_prints_what_rust_prints() {
    same_as_rust("filter-errors", &GO_AND_C);
}

#[test]
fn split_words_in_js_and_python_prints_what_rust_prints() {
    same_as_rust("split-words", &LANGS);
}

#[test]
fn split_words_in_go_and_c_prints_what_rust_prints() {
    same_as_rust("split-words", &GO_AND_C);
}

/// The TypeScript example type-checks against guest-sdk/js/weir-guest.d.ts
/// (a wrong type fails `tsc`), builds with build.mjs as the JS guide shows,
/// and prints what the Rust split-words prints.
#[test]
fn a_typescript_guest_type_checks_builds_and_prints_what_rust_prints() {
    let tools = std::env::var_os("WEIR_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/weir"));
    let tsc = tools.join("node/node_modules/typescript/bin/tsc");
    let project = root().join("examples/typescript");
    let check = run(Command::new("node").arg(&tsc).arg("-p").arg(&project));
    assert!(
        check.status.success(),
        "tsc: {}{}",
        check.stdout,
        check.stderr
    );

    // A type error is caught: a number where the SDK takes a string or bytes.
    let dir = tempdir();
    let bad = dir.path().join("bad.ts");
    std::fs::write(
        &bad,
        "import { map, Output } from \"weir-guest\";\nexport const mapping = map((r) => Output.keyed(r.valueText(), 5));\n",
    )
    .unwrap();
    let config = dir.path().join("tsconfig.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"compilerOptions": {{"strict": true, "noEmit": true, "module": "es2022", "moduleResolution": "bundler"}}, "files": ["{}", "bad.ts"]}}"#,
            root().join("guest-sdk/js/weir-guest.d.ts").display()
        ),
    )
    .unwrap();
    let wrong = run(Command::new("node").arg(&tsc).arg("-p").arg(&config));
    assert!(!wrong.status.success());
    assert!(
        wrong.stdout.contains("bad.ts(2,")
            && wrong
                .stdout
                .contains("not assignable to parameter of type 'Bytes'"),
        "{}",
        wrong.stdout
    );

    let wasm = dir.path().join("split-words-ts.wasm");
    let build = run(Command::new("node")
        .arg(root().join("guest-sdk/js/build.mjs"))
        .arg(project.join("split-words/index.ts"))
        .arg("-o")
        .arg(&wasm));
    assert!(build.status.success(), "build.mjs: {}", build.stderr);
    let input = example_input("split-words");
    let rust = weir_test(&guest("split-words"), &input);
    let ts = weir_test(&wasm, &input);
    assert!(ts.status.success(), "{}", ts.stderr);
    assert_lines("typescript split-words", &ts.stdout, &rust.stdout);
    assert_eq!(ts.stderr, rust.stderr);
}

#[test]
fn split_words_agrees_with_rust_on_unicode_punctuation_and_tombstones() {
    split_words_on_unicode(&LANGS);
}

#[test]
fn split_words_in_go_and_c_agrees_with_rust_on_unicode_punctuation_and_tombstones() {
    split_words_on_unicode(&GO_AND_C);
}

fn split_words_on_unicode(langs: &[&str]) {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"key\":\"1\",\"value\":\"Ünïcödé WORDS: ÉTÉ, naïve—café; x2 3d\",\"timestamp\":1}\n",
            "{\"key\":\"2\",\"value\":\"  the THE The tHe theory  \",\"timestamp\":2}\n",
            "{\"key\":\"3\",\"value\":null,\"timestamp\":3}\n",
            "{\"key\":\"4\",\"value_b64\":\"/w==\",\"timestamp\":4}\n",
            "{\"key\":\"5\",\"value\":\"tab\\tnew\\nline_under-score\",\"headers\":{\"h\":\"v\"},\"timestamp\":5}\n",
        ),
    )
    .unwrap();
    let rust = weir_test(&guest("split-words"), &input);
    assert!(rust.status.success(), "{}", rust.stderr);
    for &lang in langs {
        let other = weir_test(&lang_guest(lang, "split-words"), &input);
        assert_eq!(other.stdout, rust.stdout, "{lang}: stdout differs");
        // The tombstone is rejected with the same message; the message for
        // bytes that are not UTF-8 names the language's own decoder error.
        let pick = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.contains("not UTF-8"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(pick(&other.stderr), pick(&rust.stderr), "{lang}: stderr");
        assert_eq!(
            other.stderr.lines().count(),
            rust.stderr.lines().count(),
            "{lang}: {}",
            other.stderr
        );
        assert!(
            other.stderr.contains(r#""offset":3"#)
                && other.stderr.contains("the value is not UTF-8: ")
        );
    }
}

#[test]
fn filter_errors_agrees_with_rust_on_odd_values() {
    filter_errors_on_odd_values(&LANGS);
}

#[test]
fn filter_errors_in_go_and_c_agrees_with_rust_on_odd_values() {
    filter_errors_on_odd_values(&GO_AND_C);
}

fn filter_errors_on_odd_values(langs: &[&str]) {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"key\":\"a\",\"value\":{\"level\":\"ERROR\"},\"timestamp\":1}\n",
            "{\"key\":\"b\",\"value\":{\"level\":null},\"timestamp\":2}\n",
            "{\"key\":\"c\",\"value\":{\"level\":5},\"timestamp\":3}\n",
            "{\"key\":\"d\",\"value\":\"[1,2]\",\"timestamp\":4}\n",
            "{\"key\":\"e\",\"value\":null,\"timestamp\":5}\n",
            "{\"key\":\"f\",\"value\":{\"level\":\"error\",\"n\":[1,{\"x\":null}]},\"headers\":{\"a\":\"1\",\"b\":{\"b64\":\"AAE=\"}},\"timestamp\":6}\n",
            "{\"value\":\"42\",\"timestamp\":7}\n",
        ),
    )
    .unwrap();
    let rust = weir_test(&guest("filter-errors"), &input);
    assert!(rust.status.success(), "{}", rust.stderr);
    for &lang in langs {
        let other = weir_test(&lang_guest(lang, "filter-errors"), &input);
        assert_eq!(other.stdout, rust.stdout, "{lang}: stdout differs");
        assert_eq!(other.stderr, rust.stderr, "{lang}: stderr differs");
    }
}

#[test]
fn an_exception_thrown_for_a_record_becomes_a_dead_letter_with_its_message() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"key\":\"a\",\"value\":\"ok\"}\n{\"key\":\"b\",\"value\":\"boom\"}\n{\"key\":\"c\",\"value\":\"null\"}\n{\"key\":\"d\",\"value\":\"zero\"}\n{\"key\":\"e\",\"value\":\"fine\"}\n",
    )
    .unwrap();
    let dead = |offset: u32, key: &str, value: &str, message: &str| {
        format!(
            r#"{{"offset":{offset},"key":"{key}","value":"{value}","headers":{{"weir.error":"{message}","weir.error.kind":"rejected"}},"timestamp":0}}"#
        )
    };
    let ok = |key: &str, value: &str| {
        format!(r#"{{"output":null,"key":"{key}","value":"{value}","timestamp":0}}"#)
    };

    // JavaScript: its own RangeError, and a TypeError from the runtime.
    let js = weir_test(&lang_guest("js", "throws"), &input);
    assert!(js.status.success(), "{}", js.stderr);
    assert_lines(
        "js stdout",
        &js.stdout,
        &[ok("a", "ok"), ok("d", "zero"), ok("e", "fine")].join("\n"),
    );
    assert_lines(
        "js stderr",
        &js.stderr,
        &[
            dead(1, "b", "boom", "RangeError: boom at offset 1"),
            dead(
                2,
                "c",
                "null",
                "TypeError: cannot read property 'value' of null",
            ),
        ]
        .join("\n"),
    );

    // Python: its own ValueError, and a ZeroDivisionError from the runtime.
    let py = weir_test(&lang_guest("python", "throws"), &input);
    assert!(py.status.success(), "{}", py.stderr);
    assert_lines(
        "python stdout",
        &py.stdout,
        &[ok("a", "ok"), ok("c", "null"), ok("e", "fine")].join("\n"),
    );
    assert_lines(
        "python stderr",
        &py.stderr,
        &[
            dead(1, "b", "boom", "ValueError: boom at offset 1"),
            dead(3, "d", "zero", "ZeroDivisionError: division by zero"),
        ]
        .join("\n"),
    );
}

#[test]
fn a_go_panic_and_a_c_abort_become_dead_letters_with_a_readable_reason() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"key\":\"a\",\"value\":\"ok\"}\n{\"key\":\"b\",\"value\":\"boom\"}\n{\"key\":\"c\",\"value\":\"zero\"}\n{\"key\":\"d\",\"value\":\"abort\"}\n{\"key\":\"e\",\"value\":\"fine\"}\n",
    )
    .unwrap();
    let dead = |offset: u32, key: &str, value: &str, message: &str, kind: &str| {
        format!(
            r#"{{"offset":{offset},"key":"{key}","value":"{value}","headers":{{"weir.error":"{message}","weir.error.kind":"{kind}"}},"timestamp":0}}"#
        )
    };
    let ok = |key: &str, value: &str| {
        format!(r#"{{"output":null,"key":"{key}","value":"{value}","timestamp":0}}"#)
    };

    // Go: the SDK recovers a panic, its own or the runtime's, and rejects
    // that record with the panic's value; the instance goes on.
    let go = weir_test(&lang_guest("go", "panics"), &input);
    assert!(go.status.success(), "{}", go.stderr);
    assert_lines(
        "go stdout",
        &go.stdout,
        &[ok("a", "ok"), ok("d", "abort"), ok("e", "fine")].join("\n"),
    );
    assert_lines(
        "go stderr",
        &go.stderr,
        &[
            dead(1, "b", "boom", "panic: boom at offset 1", "rejected"),
            dead(
                2,
                "c",
                "zero",
                "panic: runtime error: integer divide by zero",
                "rejected",
            ),
        ]
        .join("\n"),
    );

    // C: abort() traps after saying which record on stderr; the host
    // replaces the instance and retries the batch one record at a time, so
    // only that record is a dead letter, with what the guest wrote.
    let c = weir_test(&lang_guest("c", "aborts"), &input);
    assert!(c.status.success(), "{}", c.stderr);
    assert_lines(
        "c stdout",
        &c.stdout,
        &[
            ok("a", "ok"),
            ok("b", "boom"),
            ok("c", "zero"),
            ok("e", "fine"),
        ]
        .join("\n"),
    );
    assert_lines(
        "c stderr",
        &c.stderr,
        r#"{"offset":3,"key":"d","value":"abort","headers":{"weir.error":"trapped: wasm `unreachable` instruction executed","weir.error.kind":"trapped","weir.error.stderr":"weir-guest: abort() called while processing the record at offset 3"},"timestamp":0}"#,
    );
}

#[test]
fn the_state_and_aggregate_examples_build_and_pass_check() {
    for lang in LANGS.iter().chain(&GO_AND_C) {
        for (name, world, iface) in [
            (
                "count-per-key",
                "processor",
                "exports: weir:functions/processing@0.1.0 (init, process, on-timer)",
            ),
            (
                "sum-per-key",
                "aggregator",
                "exports: weir:functions/aggregation@0.1.0 (init, add, merge, present)",
            ),
        ] {
            let r = run(weir().arg("check").arg(lang_guest(lang, name)));
            assert!(r.status.success(), "{lang} {name}: {}", r.stderr);
            assert!(
                r.stdout.contains(&format!("\nworld: {world}\n")),
                "{}",
                r.stdout
            );
            assert!(r.stdout.contains(iface), "{}", r.stdout);
        }
    }
}

/// Runs `weir new` in a fresh directory, then the build command it printed
/// (unchanged, in the project), and returns the project directory.
fn new_project(
    parent: &Path,
    name: &str,
    lang: &str,
    world: &str,
    env: &[(&str, PathBuf)],
) -> PathBuf {
    let r = run(weir()
        .arg("new")
        .arg(name)
        .args(["--lang", lang, "--world", world])
        .arg("--dir")
        .arg(parent));
    assert!(r.status.success(), "weir new: {}", r.stderr);
    let build = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("build:"))
        .unwrap_or_else(|| panic!("weir new printed no build command: {}", r.stdout))
        .trim()
        .to_string();
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(&build);
    for (k, v) in env {
        sh.env(k, v);
    }
    let b = run(&mut sh);
    assert!(
        b.status.success(),
        "`{build}` failed:\n{}\n{}",
        b.stdout,
        b.stderr
    );
    parent.join(name)
}

/// What each template prints over its sample (the mapper upper-cases, the
/// aggregator sums per key, the processor counts per key), and how many
/// records its expected.jsonl holds.
const TEMPLATE_OUTPUTS: [(&str, &str, usize); 3] = [
    (
        "mapper",
        r#"
        {"output":null,"key":"a","value":"HELLO","timestamp":1}
        {"output":null,"key":"b","value":"WEIR RUNS STREAM FUNCTIONS","timestamp":2}
        "#,
        2,
    ),
    (
        "aggregator",
        r#"
        {"key":"a","value":3.5}
        {"key":"b","value":4.25}
        "#,
        2,
    ),
    (
        "processor",
        r#"
        {"output":null,"key":"a","value":"a=1","timestamp":1}
        {"output":null,"key":"b","value":"b=1","timestamp":2}
        {"output":null,"key":"a","value":"a=2","timestamp":3}
        "#,
        3,
    ),
];

fn check_world(module: &Path, world: &str) {
    let r = run(weir().arg("check").arg(module));
    assert!(r.status.success(), "{}: {}", module.display(), r.stderr);
    assert!(
        r.stdout.contains(&format!("\nworld: {world}\n")),
        "{}",
        r.stdout
    );
}

fn new_in_every_world(lang: &str, wasm: impl Fn(&Path, &str) -> PathBuf, env: &[(&str, PathBuf)]) {
    let dir = tempdir();
    for world in ["mapper", "aggregator", "joiner", "processor"] {
        let name = format!("my-{world}");
        let project = new_project(dir.path(), &name, lang, world, env);
        let module = wasm(&project, &name);
        check_world(&module, world);
        let Some((_, output, n)) = TEMPLATE_OUTPUTS.iter().find(|(w, _, _)| *w == world) else {
            assert!(!project.join("expected.jsonl").exists(), "{lang} {world}");
            continue;
        };
        let r = weir_test(&module, &project.join("sample.jsonl"));
        assert!(r.status.success(), "{lang} {world}: {}", r.stderr);
        assert_lines(&format!("{lang} {world} template"), &r.stdout, output);
        assert_lines(&format!("{lang} {world} template stderr"), &r.stderr, "");
        // The run the project's README shows: exit 0 on its expected.jsonl.
        let r = run(weir().current_dir(&project).arg("test").arg(&module).args([
            "--input",
            "sample.jsonl",
            "--expect",
            "expected.jsonl",
        ]));
        assert_eq!(
            r.status.code(),
            Some(0),
            "{lang} {world}: {}{}",
            r.stdout,
            r.stderr
        );
        assert_eq!(
            r.stdout,
            format!("expected.jsonl: {n} records, as expected\n"),
            "{lang} {world}"
        );
        assert_eq!(r.stderr, "", "{lang} {world}");
    }
}

#[test]
fn weir_new_rust_builds_and_passes_weir_test() {
    // One build directory for every run of this test, so that the SDK's
    // dependencies compile once.
    let target = target_dir().join("weir-new-rust");
    new_in_every_world(
        "rust",
        |_, name| {
            target
                .join("wasm32-wasip2/release")
                .join(format!("{}.wasm", name.replace('-', "_")))
        },
        &[("CARGO_TARGET_DIR", target.clone())],
    );
}

#[test]
fn weir_new_js_builds_and_passes_weir_test() {
    new_in_every_world("js", |p, name| p.join(format!("{name}.wasm")), &[]);
}

#[test]
fn weir_new_python_builds_and_passes_weir_test() {
    new_in_every_world("python", |p, name| p.join(format!("{name}.wasm")), &[]);
}

#[test]
fn weir_new_go_builds_and_passes_weir_test() {
    new_in_every_world("go", |p, name| p.join(format!("{name}.wasm")), &[]);
}

#[test]
fn weir_new_c_builds_and_passes_weir_test() {
    new_in_every_world("c", |p, name| p.join(format!("{name}.wasm")), &[]);
}

#[test]
fn weir_new_refuses_a_bad_name_and_an_existing_directory() {
    let dir = tempdir();
    let r = run(weir().args(["new", "Bad/Name", "--dir"]).arg(dir.path()));
    assert_eq!(r.status.code(), Some(1));
    assert!(
        r.stderr.contains("is not a usable project name"),
        "{}",
        r.stderr
    );
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let r = run(weir().args(["new", "taken", "--dir"]).arg(dir.path()));
    assert_eq!(r.status.code(), Some(1));
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
}

/// The code blocks of a guide marked with a file name (```js file=PATH)
/// must be that file of the repository, which the tests above build.
#[test]
fn the_guides_snippets_are_the_files_the_tests_build() {
    for guide in [
        "guide-rust.md",
        "guide-js.md",
        "guide-python.md",
        "guide-go.md",
        "guide-c.md",
    ] {
        let path = root().join("docs").join(guide);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut found = 0;
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let Some(file) = line
                .strip_prefix("```")
                .and_then(|l| l.split_once(" file="))
                .and_then(|(_, f)| f.split_whitespace().next())
            else {
                continue;
            };
            let mut snippet = String::new();
            for l in lines.by_ref() {
                if l == "```" {
                    break;
                }
                snippet.push_str(l);
                snippet.push('\n');
            }
            let source = std::fs::read_to_string(root().join(file))
                .unwrap_or_else(|e| panic!("{guide}: {file}: {e}"));
            assert_eq!(
                snippet, source,
                "{guide}: the snippet of {file} differs from the file"
            );
            found += 1;
        }
        assert!(
            found >= 2,
            "{guide}: only {found} snippets are marked with file="
        );
    }
}
