//! Guests written from the docs alone, as an outside author would (the
//! sources under tests/guests/outside-*, tests/guests/LANG/outside-*): an
//! average per key in a tumbling window with a JSON accumulator (Rust,
//! JavaScript, Go, C) and a processor with a state store, an event-time
//! timer and logs (Rust, JavaScript, Python) print the same records in every
//! language. They hold what tripped such an author: QuickJS has no
//! `TextDecoder` nor `console` (the SDK now supplies both), a thrown plain
//! object became `[object Object]`, `from weir_guest import timers` failed,
//! and a Python function returning a number was rejected with `'int' object
//! is not iterable`.

use std::path::{Path, PathBuf};

use crate::util::{Run, assert_lines, guest, lang_guest, run, tempdir, weir};

const READINGS: &str = r#"{"key": "a", "value": 1, "timestamp": 1000}
{"key": "a", "value": "x", "timestamp": 1500}
{"key": "a", "value": 2, "timestamp": 2000}
{"key": "b", "value": 10, "timestamp": 3000}
{"key": "b", "value": 11, "timestamp": 4000}
{"key": "a", "value": 6, "timestamp": 6000}
{"key": "a", "value": 7, "timestamp": 7000}
{"key": "c", "value": 1, "timestamp": 10500}
"#;

const EVENTS: &str = r#"{"key": "a", "value": "x", "timestamp": 1000}
{"key": "a", "value": "x", "timestamp": 2000}
{"key": "b", "value": "x", "timestamp": 3000}
{"key": "b", "value": "bad", "timestamp": 3500}
{"key": "a", "value": "x", "timestamp": 12000}
{"key": "c", "value": "x", "timestamp": 30000}
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn averages_pipeline(dir: &Path, module: &Path) -> PathBuf {
    write(
        dir,
        "averages.toml",
        &format!(
            r#"name = "averages"
input = "readings"
output = "averages"

[[steps]]
name = "avg"
kind = "aggregate"
module = "{}"
window = {{ type = "tumbling", size = "5s" }}
emit = "close"
"#,
            module.display()
        ),
    )
}

#[test]
fn an_average_in_a_tumbling_window_is_the_same_in_rust_js_go_and_c() {
    let dir = tempdir();
    let input = write(dir.path(), "readings.jsonl", READINGS);
    let modules = [
        ("rust", guest("outside-avg")),
        ("js", lang_guest("js", "outside-avg")),
        ("go", lang_guest("go", "outside-avg")),
        ("c", lang_guest("c", "outside-avg")),
    ];
    for (lang, module) in modules {
        let file = averages_pipeline(dir.path(), &module);
        let out = run(weir()
            .arg("test")
            .arg(&file)
            .arg("--input")
            .arg(format!("readings={}", input.display())));
        assert!(out.status.success(), "{lang}: {}", out.stderr);
        // The windows close at 6 s and 10.5 s (a at 1.5 s is rejected and
        // left out: the window's timestamp is that of its last record, 2 s).
        assert_lines(
            &format!("{lang} averages"),
            &out.stdout,
            r#"
            {"topic":"averages","partition":0,"offset":0,"key":"a","value":{"avg":1.5,"count":2,"key":"a","start":0},"headers":{"weir.window.start":"0","weir.window.end":"5000"},"timestamp":2000}
            {"topic":"averages","partition":0,"offset":1,"key":"b","value":{"avg":10.5,"count":2,"key":"b","start":0},"headers":{"weir.window.start":"0","weir.window.end":"5000"},"timestamp":4000}
            {"topic":"averages","partition":0,"offset":2,"key":"a","value":{"avg":6.5,"count":2,"key":"a","start":5000},"headers":{"weir.window.start":"5000","weir.window.end":"10000"},"timestamp":7000}
            {"topic":"averages-dead-letters","partition":0,"offset":0,"key":"a","value":"x","headers":{"weir.error":"not a number: x","weir.error.kind":"rejected","weir.step":"avg","weir.topic":"readings","weir.partition":"0","weir.offset":"1"},"timestamp":1500}
            "#,
        );
        // `present` logs the key it decoded (in JavaScript with TextDecoder,
        // through console.log).
        for key in ["a", "b"] {
            assert!(
                out.stderr
                    .lines()
                    .any(|l| l.contains(&format!("INFO weir::guest: presenting {key} module="))),
                "{lang}: no log line for {key}:\n{}",
                out.stderr
            );
        }
    }
}

/// `weir test MODULE --input events.jsonl`: the outputs, the one dead letter
/// (stderr's JSON line) and what the guest logged.
fn bursts_alone(module: &Path, input: &Path) -> (Run, String) {
    let out = run(weir().arg("test").arg(module).arg("--input").arg(input));
    let dead: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(dead.len(), 1, "{}", out.stderr);
    let dead = dead[0].to_string();
    (out, dead)
}

#[test]
fn a_processor_with_a_store_and_a_timer_is_the_same_in_rust_js_and_python() {
    let dir = tempdir();
    let input = write(dir.path(), "events.jsonl", EVENTS);
    let dead_letter = |reason: &str| {
        format!(
            r#"{{"offset":3,"key":"b","value":"bad","headers":{{"weir.error":{},"weir.error.kind":"rejected"}},"timestamp":3500}}"#,
            serde_json::to_string(reason).unwrap()
        )
    };
    let cases = [
        (
            "rust",
            guest("outside-bursts"),
            dead_letter("bad value at offset 3"),
        ),
        // A thrown plain object: its JSON, not `[object Object]`.
        (
            "js",
            lang_guest("js", "outside-bursts"),
            dead_letter(r#"{"reason":"bad value","offset":3}"#),
        ),
        // A number returned instead of outputs: what a function may return.
        (
            "python",
            lang_guest("python", "outside-bursts"),
            dead_letter(
                "TypeError: a function must return an Output, a list of Outputs or None, not int",
            ),
        ),
    ];
    for (lang, module, want_dead) in cases {
        let (out, dead) = bursts_alone(&module, &input);
        assert!(out.status.success(), "{lang}: {}", out.stderr);
        // a's timer (11 s) fires once c's record moves event time past it,
        // right after a's third record (12 s) counted; b's and c's at the end
        // of the input.
        assert_lines(
            &format!("{lang} bursts"),
            &out.stdout,
            r#"
            {"output":null,"key":"a","value":3,"timestamp":11000}
            {"output":null,"key":"b","value":1,"timestamp":13000}
            {"output":null,"key":"c","value":1,"timestamp":40000}
            "#,
        );
        assert_eq!(dead, want_dead, "{lang}");
        for line in [
            "INFO weir::guest: new burst for a at 1000 module=",
            "WARN weir::guest: burst of a ended at 11000: 3 module=",
            "WARN weir::guest: burst of c ended at 40000: 1 module=",
        ] {
            assert!(
                out.stderr.lines().any(|l| l.contains(line)),
                "{lang}: no log line {line:?}:\n{}",
                out.stderr
            );
        }
    }
}

fn weir_in(data: &Path, args: &[&str]) -> Run {
    let out = run(weir().args(args).arg("--data").arg(data));
    assert!(out.status.success(), "weir {args:?}: {}", out.stderr);
    out
}

#[test]
fn the_js_processor_with_a_store_and_a_timer_runs_on_the_embedded_log() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let input = write(dir.path(), "events.jsonl", EVENTS);
    let module = lang_guest("js", "outside-bursts");
    let file = write(
        dir.path(),
        "bursts.toml",
        &format!(
            r#"name = "bursts"
input = "events"
output = "bursts"

[[steps]]
name = "bursts"
kind = "processor"
module = "{}"
stores = ["counts"]
"#,
            module.display()
        ),
    );
    weir_in(&data, &["topic", "create", "events"]);
    weir_in(
        &data,
        &["produce", "events", "--input", input.to_str().unwrap()],
    );
    let ran = weir_in(
        &data,
        &[
            "run",
            file.to_str().unwrap(),
            "--until-caught-up",
            "--quiet",
        ],
    );
    assert!(
        ran.stderr.contains(
            "bursts: 6 records in, 2 out, 1 dead letter, 0 late records dropped\n\
             step bursts: 1 record went to the dead-letter topic bursts-dead-letters; \
             the first because: {\"reason\":\"bad value\",\"offset\":3}"
        ),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr
            .contains("WARN weir::guest: burst of a ended at 11000: 3 module="),
        "{}",
        ran.stderr
    );
    // c's timer (40 s) waits for a later record: its count is still stored.
    let out = weir_in(&data, &["consume", "bursts", "--from-beginning"]);
    assert_lines(
        "bursts",
        &out.stdout,
        r#"
        {"partition":0,"offset":0,"key":"a","value":3,"timestamp":11000}
        {"partition":0,"offset":1,"key":"b","value":1,"timestamp":13000}
        "#,
    );
    let out = weir_in(
        &data,
        &["consume", "bursts-dead-letters", "--from-beginning"],
    );
    assert_lines(
        "dead letters",
        &out.stdout,
        r#"{"partition":0,"offset":0,"key":"b","value":"bad","headers":{"weir.error":"{\"reason\":\"bad value\",\"offset\":3}","weir.error.kind":"rejected","weir.step":"bursts","weir.topic":"events","weir.partition":"0","weir.offset":"3"},"timestamp":3500}"#,
    );
    let out = weir_in(&data, &["state", "scan", "bursts", "bursts"]);
    assert_lines(
        "state",
        &out.stdout,
        r#"{"store":"counts","key":"c","value":1}"#,
    );
}

/// `node guest-sdk/js/build.mjs FILE -o OUT` on a module that does not build:
/// it fails, and says so in one message naming the file and what to fix,
/// without a Node stack trace.
#[test]
fn a_js_module_that_does_not_build_is_refused_with_what_to_fix() {
    let dir = tempdir();
    let cases = [
        (
            "syntax.js",
            "import { map } from \"weir-guest\";\nexport const mapping = map((r) => { return r.valueText( });\n",
            "build.mjs: syntax.js does not build:\nBuild failed with 1 error:\n\n[PARSE_ERROR] Unexpected token\n",
        ),
        (
            "import.js",
            "import { mapp } from \"weir-guest\";\nexport const mapping = mapp((r) => null);\n",
            "build.mjs: import.js does not build:\nBuild failed with 1 error:\n\n[MISSING_EXPORT] \"mapp\" is not exported by",
        ),
        (
            "nomerge.js",
            "import { aggregate } from \"weir-guest\";\nexport const aggregation = aggregate({ init: () => 0, add: (a) => a + 1 });\n",
            "build.mjs: nomerge.js: aggregate({ init, add, merge }): `merge` is missing, not a function (merge combines two accumulators: sessions that come together)\n",
        ),
        (
            "noprocess.js",
            "import { processor } from \"weir-guest\";\nexport const processing = processor({ proces: (r) => null });\n",
            "build.mjs: noprocess.js: processor({ process, onTimer }): `process` is missing, or not a function of a record\n",
        ),
    ];
    for (file, source, want) in cases {
        write(dir.path(), file, source);
        let out = run(std::process::Command::new("node")
            .arg(crate::util::root().join("guest-sdk/js/build.mjs"))
            .arg(file)
            .arg("-o")
            .arg("out.wasm")
            .current_dir(dir.path()));
        assert_eq!(out.status.code(), Some(1), "{file}: {}", out.stderr);
        assert!(
            out.stderr.starts_with(want),
            "{file}: expected stderr to start with\n{want}\ngot\n{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("    at "),
            "{file}: a stack trace:\n{}",
            out.stderr
        );
        assert!(!dir.path().join("out.wasm").exists(), "{file}");
    }
}

/// A C map function without its `weir_out *` parameter: clang only warns
/// about the function pointer, and the component would trap on every call
/// (an indirect call of the wrong type); build.sh makes it an error.
#[test]
fn a_c_function_of_the_wrong_signature_does_not_build() {
    let dir = tempdir();
    let src = write(
        dir.path(),
        "main.c",
        "#include \"weir.h\"\nstatic weir_status f(const weir_record *r) { (void)r; return WEIR_OK; }\nWEIR_MAP(f)\n",
    );
    let out = run(std::process::Command::new("bash")
        .arg(crate::util::root().join("guest-sdk/c/build.sh"))
        .arg("out.wasm")
        .arg(&src)
        .current_dir(dir.path()));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "main.c:3:1: error: incompatible function pointer types passing 'weir_status (const weir_record *)' to parameter of type 'weir_map_fn'"
        ),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("out.wasm").exists());
}

/// `weir new NAME --world joiner` writes a pipeline file to test the joiner
/// in, its two inputs and the joined records: the `test:` command it prints
/// passes as it is (it printed `weir check` before: a joiner had nothing to
/// run).
#[test]
fn a_new_joiner_project_passes_the_test_it_prints_in_c_and_js() {
    let dir = tempdir();
    for lang in ["c", "js"] {
        let name = format!("join-{lang}");
        let new = run(weir()
            .current_dir(dir.path())
            .args(["new", &name, "--lang", lang, "--world", "joiner"]));
        assert!(new.status.success(), "{lang}: {}", new.stderr);
        let line = |prefix: &str| {
            new.stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("{lang}: no {prefix} line in {}", new.stdout))
                .trim()
                .to_string()
        };
        let (build, test) = (line("build:"), line("test:"));
        assert_eq!(
            test,
            "weir test join.toml --input left=left.jsonl --input right=right.jsonl --expect join.expected.jsonl",
            "{lang}"
        );
        let built = run(std::process::Command::new("sh")
            .arg("-c")
            .arg(&build)
            .current_dir(dir.path()));
        assert!(built.status.success(), "{lang}: {build}: {}", built.stderr);
        let project = dir.path().join(&name);
        let args: Vec<&str> = test.split_whitespace().skip(1).collect();
        let out = run(weir().current_dir(&project).args(&args));
        assert_eq!(
            (out.status.code(), out.stdout.as_str(), out.stderr.as_str()),
            (Some(0), "join.expected.jsonl: 2 records, as expected\n", ""),
            "{lang}"
        );
    }
}

/// guide-c.md: what a C function prints goes to the host's log, every line
/// once stdout is line-buffered before the first printf (without it, the
/// first text an instance's stdout flushes never arrives).
#[test]
fn a_c_printf_reaches_the_log_line_by_line_with_stdout_line_buffered() {
    let dir = tempdir();
    let src = write(
        dir.path(),
        "main.c",
        "#include <stdio.h>\n#include \"weir.h\"\n\
         static weir_status f(const weir_record *r, weir_out *out) {\n\
         \x20   static int ready = 0;\n\
         \x20   if (!ready) { setvbuf(stdout, NULL, _IOLBF, 0); ready = 1; }\n\
         \x20   printf(\"seen %lld\\n\", (long long)r->offset);\n\
         \x20   weir_emit(out, weir_forward(r));\n\
         \x20   return WEIR_OK;\n}\nWEIR_MAP(f)\n",
    );
    let built = run(std::process::Command::new("bash")
        .arg(crate::util::root().join("guest-sdk/c/build.sh"))
        .arg("out.wasm")
        .arg(&src)
        .current_dir(dir.path()));
    assert!(built.status.success(), "{}", built.stderr);
    let input = write(
        dir.path(),
        "in.jsonl",
        "{\"key\":\"a\",\"value\":\"x\"}\n{\"key\":\"b\",\"value\":\"y\"}\n{\"key\":\"c\",\"value\":\"z\"}\n",
    );
    let out = run(weir()
        .arg("test")
        .arg(dir.path().join("out.wasm"))
        .arg("--input")
        .arg(&input));
    assert!(out.status.success(), "{}", out.stderr);
    let seen: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.split("INFO weir::guest: ").nth(1))
        .map(|l| l.split(" module=").next().unwrap_or(l))
        .collect();
    assert_eq!(seen, ["seen 0", "seen 1", "seen 2"], "{}", out.stderr);
}
