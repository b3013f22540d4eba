//! Limits on what one call of a hostile guest (tests/guests/hostile and
//! hoarder) may hand the host: state, outputs, memory (and a step's
//! `memory_mb`), bounded logs, and the host's own dead-letter reasons. The
//! harness is in hardening.rs.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::hardening::{Data, dead_letters, hostile_test, input_file, values};
use crate::util::{assert_lines, guest, run, tempdir, weir};

const OVER_BUDGET: &str = "host memory limit per call exceeded: the call handed the host more than 128 MiB through state puts, log lines and outputs (2 times the guest's memory limit, which --memory-mb or the step's `memory_mb` sets)";

#[test]
fn a_call_that_hands_the_host_too_much_state_is_a_dead_letter() {
    let dir = tempdir();
    let input = input_file(dir.path(), &["a", "hoard", "b"]);
    let r = run(weir()
        .arg("test")
        .arg(guest("hoarder"))
        .arg("--input")
        .arg(&input)
        .args(["--memory-mb", "64", "--config", "value_mb=20"]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"
        {"output":null,"key":"k1","value":"a","timestamp":0}
        {"output":null,"key":"k3","value":"b","timestamp":0}
        "#,
    );
    assert_lines(
        "stderr",
        &r.stderr,
        &format!(
            r#"{{"offset":1,"key":"k2","value":"hoard","headers":{{"weir.error":"{OVER_BUDGET}","weir.error.kind":"trapped"}},"timestamp":0}}"#
        ),
    );
}

/// The peak resident memory of a running process, in KiB (Linux).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[test]
fn a_pipeline_step_that_hoards_state_is_stopped_and_the_host_stays_small() {
    let d = Data::new();
    d.produce("in", 1, &["a".into(), "hoard".into(), "b".into()]);
    let file = d.dir.path().join("hoard.toml");
    std::fs::write(
        &file,
        "name = \"hoard\"\ninput = \"in\"\noutput = \"out\"\ndead_letter = \"dlq\"\n\n\
         [[steps]]\nname = \"hoard\"\nkind = \"processor\"\nmodule = \"hoarder.wasm\"\n\
         stores = [\"hoard\"]\nconfig = { value_mb = \"20\" }\n",
    )
    .unwrap();
    // Thirty values of 20 MiB (600 MiB) against a budget of 128 MiB.
    let mut child = d
        .weir()
        .arg("run")
        .arg(&file)
        .args(["--until-caught-up", "--quiet", "--memory-mb", "64"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let bound = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < bound, "weir run did not finish");
        peak = peak.max(peak_rss_kib(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(values(&d.consume("out")), ["a", "b"]);
    let dead = d.consume("dlq");
    assert_eq!(values(&dead), ["hoard"]);
    assert_eq!(
        dead[0]["headers"],
        json!({"weir.error": OVER_BUDGET, "weir.error.kind": "trapped", "weir.step": "hoard", "weir.topic": "in", "weir.partition": "0", "weir.offset": "1"})
    );
    // The guest's 64 MiB, the 128 MiB budget, one value in flight and the
    // host itself; without the budget the host held over 600 MiB.
    assert!(peak < 400 * 1024, "peak RSS {peak} KiB");
    let state = run(d.weir().args(["state", "scan", "hoard", "hoard"]));
    assert_lines(
        "state",
        &state.stdout,
        r#"
        {"store":"hoard","key":"a","value":"small"}
        {"store":"hoard","key":"b","value":"small"}
        "#,
    );
}

/// Outputs alone: a call whose outputs from one small record would be 100
/// MiB cannot build them inside its 64 MiB (the result list lives in the
/// guest's memory, so outputs alone never reach the 128 MiB per-call budget,
/// which counts them): the memory limit stops it, the record is a dead
/// letter saying so, and the pipeline goes on with the next record.
#[test]
fn a_call_that_emits_huge_outputs_from_a_small_input_is_a_dead_letter() {
    let d = Data::new();
    d.produce("in", 1, &["a".into(), "flood".into(), "b".into()]);
    let file = d.dir.path().join("flood.toml");
    std::fs::write(
        &file,
        "name = \"flood\"\ninput = \"in\"\noutput = \"out\"\ndead_letter = \"dlq\"\n\n\
         [[steps]]\nname = \"flood\"\nkind = \"processor\"\nmodule = \"hoarder.wasm\"\n\
         stores = [\"hoard\"]\nconfig = { outputs = \"100\", output_mb = \"1\" }\n",
    )
    .unwrap();
    let mut child = d
        .weir()
        .arg("run")
        .arg(&file)
        .args(["--until-caught-up", "--quiet", "--memory-mb", "64"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let bound = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < bound, "weir run did not finish");
        peak = peak.max(peak_rss_kib(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(values(&d.consume("out")), ["a", "b"]);
    let dead = d.consume("dlq");
    assert_eq!(values(&dead), ["flood"]);
    assert_eq!(
        dead[0]["headers"],
        json!({"weir.error": "memory limit exceeded: the guest tried to grow its memory past 64 MiB",
            "weir.error.kind": "trapped", "weir.step": "flood",
            "weir.topic": "in", "weir.partition": "0", "weir.offset": "1"})
    );
    assert!(peak < 400 * 1024, "peak RSS {peak} KiB");
}

/// What a call returns counts toward its budget: 60 MiB of state puts and
/// an output of 1 MiB pass under the 64 MiB budget of a 32 MiB guest; the
/// same puts and an output of 6 MiB do not, and the record is a dead letter
/// naming the limit.
#[test]
fn outputs_count_toward_what_a_call_may_hand_the_host() {
    let dir = tempdir();
    let input = input_file(dir.path(), &["a", "hoard", "b"]);
    let test = |output_mb: &str| {
        run(weir()
            .arg("test")
            .arg(guest("hoarder"))
            .arg("--input")
            .arg(&input)
            .args(["--memory-mb", "32", "--config", "value_mb=4"])
            .args(["--config", "values=15", "--config"])
            .arg(format!("output_mb={output_mb}")))
    };
    let r = test("1");
    assert!(r.status.success(), "{}", r.stderr);
    let outputs: Vec<(Value, usize)> = r
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["key"].clone(), v["value"].as_str().unwrap().len())
        })
        .collect();
    assert_eq!(
        outputs,
        [
            (json!("k1"), 1),
            (json!("k2"), 5),
            (Value::Null, 1 << 20),
            (json!("k3"), 1)
        ]
    );
    assert_eq!(r.stderr, "");
    let r = test("6");
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"
        {"output":null,"key":"k1","value":"a","timestamp":0}
        {"output":null,"key":"k3","value":"b","timestamp":0}
        "#,
    );
    assert_lines(
        "stderr",
        &r.stderr,
        r#"{"offset":1,"key":"k2","value":"hoard","headers":{"weir.error":"host memory limit per call exceeded: the call handed the host more than 64 MiB through state puts, log lines and outputs (2 times the guest's memory limit, which --memory-mb or the step's `memory_mb` sets)","weir.error.kind":"trapped"},"timestamp":0}"#,
    );
}

// 5. Logs are bounded.

#[test]
fn a_guest_that_floods_the_log_is_cut_to_a_thousand_lines_per_call() {
    // A generous deadline: a million host calls take a second or two.
    let (r, _) = hostile_test(&["log-flood"], &["--deadline-ms", "60000"]);
    assert!(r.status.success(), "{}", r.stderr);
    let module = guest("hostile").display().to_string();
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1001,
        "{}",
        &r.stderr[..r.stderr.len().min(2000)]
    );
    for (i, l) in lines[..1000].iter().enumerate() {
        assert_eq!(
            *l,
            format!(" INFO weir::guest: line {i} module={module} step=test")
        );
    }
    assert_eq!(
        lines[1000],
        format!(
            " WARN weir::runtime::host: the guest wrote 999000 more log lines in one call; dropped (at most 1000 lines per call) module={module} step=test"
        )
    );
}

#[test]
fn a_ten_mib_log_line_is_cut_with_a_marker() {
    let (r, _) = hostile_test(&["log-long"], &[]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stderr",
        &r.stderr,
        &format!(
            " INFO weir::guest: {}… [cut: the line had 10485760 bytes; 8192 are kept] module={} step=test",
            "x".repeat(8192),
            guest("hostile").display()
        ),
    );
}

// 7. The dead-letter reason is the host's.

#[test]
fn the_dead_letter_reason_is_the_hosts_and_stderr_has_a_header_of_its_own() {
    let (r, _) = hostile_test(
        &[
            "fake-panic-loop",
            "fake-panic-trap",
            "fake-panic-oom",
            "panic",
            "stack",
            "fine",
        ],
        &["--deadline-ms", "300", "--memory-mb", "32"],
    );
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"{"output":null,"key":"k6","value":"fine","timestamp":0}"#,
    );
    let fake = "panicked at src/evil.rs:1:1: | I choose my own reason";
    let dead: Vec<(String, Value)> = dead_letters(&r.stderr)
        .into_iter()
        .map(|d| {
            (
                d["value"].as_str().unwrap().to_string(),
                d["headers"].clone(),
            )
        })
        .collect();
    assert_eq!(
        dead,
        [
            (
                "fake-panic-loop".to_string(),
                json!({"weir.error": "deadline exceeded: the call ran longer than 300 ms", "weir.error.kind": "trapped", "weir.error.stderr": fake})
            ),
            (
                "fake-panic-trap".to_string(),
                json!({"weir.error": "trapped: wasm `unreachable` instruction executed", "weir.error.kind": "trapped", "weir.error.stderr": fake})
            ),
            (
                "fake-panic-oom".to_string(),
                json!({"weir.error": "memory limit exceeded: the guest tried to grow its memory past 32 MiB", "weir.error.kind": "trapped", "weir.error.stderr": fake})
            ),
            (
                "panic".to_string(),
                // Rust's default panic hook, not the SDK's: its output is the
                // guest's, not a reason.
                json!({"weir.error": "trapped: wasm `unreachable` instruction executed", "weir.error.kind": "trapped", "weir.error.stderr": format!("thread '<unnamed>' (1) panicked at tests/guests/hostile/src/lib.rs:{}: | a real panic | note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace", real_panic_at())})
            ),
            (
                "stack".to_string(),
                json!({"weir.error": "trapped: out of bounds memory access (the guest's stack may have overflowed: deep recursion or large local variables)", "weir.error.kind": "trapped"})
            ),
        ]
    );
}

/// "LINE:COLUMN" of the hostile guest's real `panic!`.
fn real_panic_at() -> String {
    let source =
        std::fs::read_to_string(crate::util::root().join("tests/guests/hostile/src/lib.rs"))
            .unwrap();
    let (line, column) = source
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("panic!(\"a real panic\")").map(|c| (i + 1, c + 1)))
        .unwrap();
    format!("{line}:{column}")
}

#[test]
fn in_a_pipeline_a_forged_panic_message_lands_in_its_own_header() {
    let d = Data::new();
    d.produce(
        "in",
        1,
        &[
            "ok".into(),
            "fake-panic-trap".into(),
            "fake-panic-loop".into(),
        ],
    );
    d.ok(&["topic", "create", "out"]);
    d.ok(&["topic", "create", "dlq"]);
    let file = d.pipeline("hostile.wasm", "");
    let r = run(d.weir().arg("run").arg(&file).args([
        "--until-caught-up",
        "--quiet",
        "--deadline-ms",
        "300",
    ]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(values(&d.consume("out")), ["ok"]);
    let dead = d.consume("dlq");
    let fake = "panicked at src/evil.rs:1:1: | I choose my own reason";
    assert_eq!(
        dead.iter()
            .map(|r| r["headers"].clone())
            .collect::<Vec<_>>(),
        [
            json!({"weir.error": "trapped: wasm `unreachable` instruction executed", "weir.error.kind": "trapped", "weir.error.stderr": fake, "weir.step": "attack", "weir.topic": "in", "weir.partition": "0", "weir.offset": "1"}),
            json!({"weir.error": "deadline exceeded: the call ran longer than 300 ms", "weir.error.kind": "trapped", "weir.error.stderr": fake, "weir.step": "attack", "weir.topic": "in", "weir.partition": "0", "weir.offset": "2"}),
        ]
    );
}

// 8. A damaged data directory gets a clear error.

/// Item 4, configured in the pipeline file: a step's `memory_mb` sets its
/// instances' memory and so what one call may hand the host; more than the
/// run allows is refused, naming the line.
#[test]
fn a_steps_memory_mb_in_the_pipeline_file_sets_its_call_budget() {
    let d = Data::new();
    d.produce("in", 1, &["a".into(), "hoard".into(), "b".into()]);
    let file = d.dir.path().join("hoard.toml");
    let pipeline = |mb: u32| {
        std::fs::write(
            &file,
            format!(
                "name = \"hoard\"\ninput = \"in\"\noutput = \"out\"\ndead_letter = \"dlq\"\n\n\
                 [[steps]]\nname = \"hoard\"\nkind = \"processor\"\nmodule = \"hoarder.wasm\"\n\
                 stores = [\"hoard\"]\nconfig = {{ value_mb = \"20\" }}\nmemory_mb = {mb}\n"
            ),
        )
        .unwrap();
    };
    pipeline(512);
    let r = run(d
        .weir()
        .arg("run")
        .arg(&file)
        .args(["--until-caught-up", "--quiet"]));
    assert_eq!(r.status.code(), Some(1));
    assert_lines(
        "too much",
        &r.stderr,
        &format!(
            "error: {}:12: step hoard: `memory_mb` = 512 is more than the run allows (256 MiB): lower it, or run with --memory-mb 512",
            file.display()
        ),
    );
    pipeline(64);
    let r = run(d
        .weir()
        .arg("run")
        .arg(&file)
        .args(["--until-caught-up", "--quiet"]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(values(&d.consume("out")), ["a", "b"]);
    let dead = d.consume("dlq");
    assert_eq!(
        dead[0]["headers"],
        json!({"weir.error": OVER_BUDGET, "weir.error.kind": "trapped", "weir.step": "hoard", "weir.topic": "in", "weir.partition": "0", "weir.offset": "1"})
    );
}
