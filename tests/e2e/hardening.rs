//! Limits that hold against a hostile guest (tests/guests/hostile and
//! hoarder): blocking calls that return at once, a wall-clock deadline under
//! load, a bound on what one call hands the host, bounded logs, the host's
//! own dead-letter reasons; and a damaged data directory,
//! `weir demo` from anywhere, `state get --data`, `Error::from`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{assert_lines, guest, run, tempdir, weir};

/// Writes JSON-lines records with these values (keys k1, k2, ...).
fn input_file(dir: &Path, values: &[&str]) -> PathBuf {
    let path = dir.join("in.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for (i, v) in values.iter().enumerate() {
        writeln!(f, "{}", json!({"key": format!("k{}", i + 1), "value": v})).unwrap();
    }
    path
}

/// `weir test` of the hostile guest over these values.
fn hostile_test(values: &[&str], extra: &[&str]) -> (crate::util::Run, Duration) {
    let dir = tempdir();
    let input = input_file(dir.path(), values);
    let started = Instant::now();
    let r = run(weir()
        .arg("test")
        .arg(guest("hostile"))
        .arg("--input")
        .arg(&input)
        .args(extra));
    (r, started.elapsed())
}

/// The dead-letter lines `weir test` printed, as JSON.
fn dead_letters(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A data directory with a pipeline that runs one map step.
struct Data {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Data {
    fn new() -> Data {
        let dir = tempdir();
        let path = dir.path().join("data");
        Data { dir, path }
    }

    fn weir(&self) -> Command {
        let mut c = weir();
        c.env("WEIR_DATA", &self.path);
        c.env("WEIR_MODULE_PATH", guest("hostile").parent().unwrap());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = run(self.weir().args(args));
        assert!(r.status.success(), "weir {args:?} failed: {}", r.stderr);
        r.stdout
    }

    fn produce(&self, topic: &str, partitions: u32, values: &[String]) {
        self.ok(&[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ]);
        let mut child = self
            .weir()
            .args(["produce", topic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for (i, v) in values.iter().enumerate() {
            writeln!(stdin, "{}", json!({"key": format!("k{i}"), "value": v})).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A pipeline `in` -> module -> `out`, dead letters to `dlq`.
    fn pipeline(&self, module: &str, config: &str) -> PathBuf {
        let file = self.dir.path().join("p.toml");
        std::fs::write(
            &file,
            format!(
                "name = \"hostile\"\ninput = \"in\"\noutput = \"out\"\ndead_letter = \"dlq\"\n\n\
                 [[steps]]\nname = \"attack\"\nkind = \"map\"\nmodule = \"{module}\"\nconfig = {{ {config} }}\n"
            ),
        )
        .unwrap();
        file
    }

    fn consume(&self, topic: &str) -> Vec<Value> {
        self.ok(&["consume", topic, "--from-beginning"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every file under the data directory with its size and modification
    /// time, to show that a command changed nothing.
    fn listing(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut out = Vec::new();
        let mut dirs = vec![self.path.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    dirs.push(e.path());
                } else {
                    out.push((e.path(), m.len(), m.modified().unwrap()));
                }
            }
        }
        out.sort();
        out
    }
}

fn values(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect()
}

// 1. Blocking calls obey the deadline.

#[test]
fn a_guest_that_sleeps_does_not_hold_the_host() {
    let (r, took) = hostile_test(
        &["a", "sleep", "sleep-hour", "sleep-loop", "b"],
        &["--deadline-ms", "1000"],
    );
    assert!(r.status.success(), "{}", r.stderr);
    // A sleep returns at once (the guest's clock is frozen); a guest that
    // keeps sleeping runs into its deadline: once in the batch, once alone.
    assert_lines(
        "stdout",
        &r.stdout,
        r#"
        {"output":null,"key":"k1","value":"a","timestamp":0}
        {"output":null,"key":"k2","value":"sleep","timestamp":0}
        {"output":null,"key":"k3","value":"sleep-hour","timestamp":0}
        {"output":null,"key":"k5","value":"b","timestamp":0}
        "#,
    );
    assert_lines(
        "stderr",
        &r.stderr,
        r#"{"offset":3,"key":"k4","value":"sleep-loop","headers":{"weir.error":"deadline exceeded: the call ran longer than 1000 ms","weir.error.kind":"trapped"},"timestamp":0}"#,
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[test]
fn a_guest_that_sleeps_in_init_starts_at_once_or_hits_the_deadline() {
    let (r, took) = hostile_test(&["a"], &["--config", "init=sleep-hour"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stdout",
        &r.stdout,
        r#"{"output":null,"key":"k1","value":"a","timestamp":0}"#,
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let (r, took) = hostile_test(
        &["a"],
        &["--config", "init=sleep-loop", "--deadline-ms", "500"],
    );
    assert_eq!(r.status.code(), Some(1));
    assert_lines(
        "stderr",
        &r.stderr,
        &format!(
            "error: {}: cannot start an instance: init deadline exceeded: the call ran longer than 500 ms",
            guest("hostile").display()
        ),
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_pipeline_with_a_sleeping_guest_runs_and_stops_on_ctrl_c_within_a_second() {
    let d = Data::new();
    let mut input: Vec<String> = (0..20).map(|_| "sleep-hour".to_string()).collect();
    input.push("sleep-loop".into());
    input.push("last".into());
    d.produce("in", 1, &input);
    d.ok(&["topic", "create", "out"]);
    d.ok(&["topic", "create", "dlq"]);
    let file = d.pipeline("hostile.wasm", "");
    let started = Instant::now();
    let summary = run(d.weir().arg("run").arg(&file).args([
        "--until-caught-up",
        "--quiet",
        "--deadline-ms",
        "1000",
    ]));
    let took = started.elapsed();
    assert!(summary.status.success(), "{}", summary.stderr);
    assert_lines(
        "summary",
        &summary.stderr,
        "hostile: 22 records in, 21 out, 1 dead letter, 0 late records dropped\n\
         step attack: 1 record went to the dead-letter topic dlq; the first because: deadline exceeded: the call ran longer than 1000 ms",
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let dead = d.consume("dlq");
    assert_eq!(values(&dead), ["sleep-loop"]);
    assert_eq!(
        dead[0]["headers"],
        json!({
            "weir.error": "deadline exceeded: the call ran longer than 1000 ms",
            "weir.error.kind": "trapped",
            "weir.step": "attack",
            "weir.topic": "in",
            "weir.partition": "0",
            "weir.offset": "20",
        })
    );

    // Running on (no --until-caught-up) over more sleeping records: Ctrl-C
    // (SIGINT) ends it within a second, with its summary.
    d.produce_more(&["sleep-hour", "sleep"]);
    let mut child = d
        .weir()
        .arg("run")
        .arg(&file)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bound = Instant::now() + Duration::from_secs(30);
    while d.consume("out").len() < 23 {
        assert!(
            Instant::now() < bound,
            "the run did not process the new records"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "weir run did not stop within a second of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_lines(
        "summary",
        &String::from_utf8_lossy(&out.stderr),
        "hostile: 2 records in, 2 out, 0 dead letters, 0 late records dropped",
    );
}

impl Data {
    fn produce_more(&self, values: &[&str]) {
        let mut child = self
            .weir()
            .args(["produce", "in"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for v in values {
            writeln!(stdin, "{}", json!({"key": "more", "value": v})).unwrap();
        }
        drop(stdin);
        assert!(child.wait_with_output().unwrap().status.success());
    }
}

// 2. The deadline is wall-clock time.

#[test]
fn the_deadline_holds_in_wall_clock_time_on_a_busy_machine() {
    // One spinning thread per core, for as long as the test runs.
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spinners: Vec<_> = (0..cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            })
        })
        .collect();
    // The same command with a record that returns at once, then with one
    // that loops: the difference is the deadline.
    let (quick, quick_took) = hostile_test(&["a"], &["--deadline-ms", "3000"]);
    let (slow, slow_took) = hostile_test(&["fake-panic-loop"], &["--deadline-ms", "3000"]);
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    assert!(quick.status.success() && slow.status.success());
    assert_eq!(
        dead_letters(&slow.stderr)[0]["headers"]["weir.error"],
        "deadline exceeded: the call ran longer than 3000 ms"
    );
    let deadline = slow_took.saturating_sub(quick_took);
    assert!(
        deadline > Duration::from_millis(2700) && deadline < Duration::from_millis(3300),
        "a 3000 ms deadline took {deadline:?} under load"
    );
}

// 4. Host memory is bounded per call (state puts and log lines).

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

#[test]
fn a_data_directory_without_current_is_refused_and_left_unchanged() {
    let d = Data::new();
    d.produce("in", 1, &["a".into(), "b".into()]);
    std::fs::remove_file(d.path.join("db/CURRENT")).unwrap();
    let before = d.listing();
    let file = d.pipeline("hostile.wasm", "");
    let expected = format!(
        "error: the data directory {} is damaged: {} is missing, so the database's files cannot be told apart from stale ones. Nothing was changed; restore the data directory from a backup",
        d.path.display(),
        d.path.join("db/CURRENT").display()
    );
    let runs = [
        run(d
            .weir()
            .arg("run")
            .arg(&file)
            .args(["--until-caught-up", "--quiet"])),
        run(d.weir().args(["consume", "in", "--from-beginning"])),
        run(d.weir().args(["topic", "describe", "in"])),
        run(d.weir().args(["topic", "create", "other"])),
    ];
    for r in runs {
        assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
        assert_eq!(r.stdout, "");
        assert_lines("stderr", &r.stderr, &expected);
    }
    assert_eq!(
        d.listing(),
        before,
        "a command wrote into the damaged directory"
    );
}

#[test]
fn a_corrupted_block_names_the_topic_partition_and_offset() {
    let d = Data::new();
    // Values that do not compress, so that the records fill many blocks.
    let mut x: u64 = 7;
    let input: Vec<String> = (0..5000)
        .map(|_| {
            (0..12)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    format!("{:x}", x >> 16)
                })
                .collect::<String>()
        })
        .collect();
    d.produce("in", 1, &input);
    // Damage the middle of the table file that holds the records.
    let sst = std::fs::read_dir(d.path.join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a table file");
    let mut bytes = std::fs::read(&sst).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&sst, bytes).unwrap();

    let r = run(d.weir().args(["consume", "in", "--from-beginning"]));
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    // consume prints what it read in chunks of up to 1,000 records; the
    // error names the first offset that could not be read.
    let printed = r.stdout.lines().count();
    let data = d.path.display();
    let stderr = r.stderr.trim_end();
    let prefix = "error: cannot read topic in partition 0 from offset ";
    assert!(stderr.starts_with(prefix), "{stderr}");
    let offset: usize = stderr[prefix.len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in: {stderr}"));
    assert!(
        offset > 0 && offset < 5000 && printed <= offset && offset < printed + 1000,
        "printed {printed}, error at offset {offset}"
    );
    let head = format!(
        "{prefix}{offset} in the data directory {data}: it is damaged (RocksDB: Corruption: "
    );
    let tail = format!(
        "). Records before offset {offset} were readable; restore the data directory from a backup, and see each partition's offsets with `weir topic describe in --data {data}`"
    );
    assert!(
        stderr.starts_with(&head) && stderr.ends_with(&tail) && !stderr.contains('\n'),
        "{stderr}"
    );

    // A pipeline over it stops with the same error, and exits non-zero.
    d.ok(&["topic", "create", "out"]);
    d.ok(&["topic", "create", "dlq"]);
    let file = d.pipeline("hostile.wasm", "");
    let r = run(d
        .weir()
        .arg("run")
        .arg(&file)
        .args(["--until-caught-up", "--quiet"]));
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("cannot read topic in partition 0 from offset ")
            && r.stderr.contains(": it is damaged (RocksDB: Corruption: "),
        "{}",
        r.stderr
    );
}

// 9. Small things seen by a new user.

#[test]
fn demo_runs_from_anywhere_with_its_modules_built_in() {
    let dir = tempdir();
    let r = run(weir()
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("WEIR_MODULE_PATH"));
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("\nword           count\na                  5\nand                3\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("distinct words; the data is in a temporary directory, deleted on exit: `weir demo --data DIR` keeps it for `weir consume counts --from-beginning --data DIR`)"),
        "{}",
        r.stdout
    );
    let kept = dir.path().join("kept");
    let r = run(weir()
        .arg("demo")
        .arg("--data")
        .arg(&kept)
        .current_dir(dir.path())
        .env_remove("WEIR_MODULE_PATH"));
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "distinct words; `weir consume counts --from-beginning --data {}` shows them all)",
            kept.display()
        )),
        "{}",
        r.stdout
    );
    let counts = run(weir()
        .args(["consume", "counts", "--from-beginning", "--data"])
        .arg(&kept));
    assert!(counts.status.success(), "{}", counts.stderr);
    assert!(counts.stdout.lines().count() > 10);
}

#[test]
fn state_get_takes_the_data_directory_as_data_like_every_command() {
    let d = Data::new();
    d.produce("lines", 1, &["the weir and the river".into()]);
    let file = d.dir.path().join("wc.toml");
    std::fs::write(
        &file,
        "name = \"wc\"\ninput = \"lines\"\noutput = \"counts\"\n\n\
         [[steps]]\nname = \"split\"\nkind = \"map\"\nmodule = \"split_words.wasm\"\n\n\
         [[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"\n",
    )
    .unwrap();
    d.ok(&[
        "run",
        file.to_str().unwrap(),
        "--until-caught-up",
        "--quiet",
    ]);
    let r = run(weir()
        .args(["state", "get", "wc", "count", "weir", "--data"])
        .arg(&d.path));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines("state get", &r.stdout, r#"{"key":"weir","value":1}"#);
    let r = run(weir()
        .args(["state", "scan", "wc", "count", "--data"])
        .arg(&d.path));
    assert_lines(
        "state scan",
        &r.stdout,
        r#"
        {"key":"and","value":1}
        {"key":"weir","value":1}
        {"key":"river","value":1}
        "#,
    );
}

#[test]
fn error_from_a_str_or_a_string_rejects_the_record() {
    let dir = tempdir();
    let input = input_file(dir.path(), &["reject-str", "reject-string"]);
    let r = run(weir()
        .arg("test")
        .arg(guest("faulty"))
        .arg("--input")
        .arg(&input));
    assert!(r.status.success(), "{}", r.stderr);
    assert_lines(
        "stderr",
        &r.stderr,
        r#"
        {"offset":0,"key":"k1","value":"reject-str","headers":{"weir.error":"rejected with a &str","weir.error.kind":"rejected"},"timestamp":0}
        {"offset":1,"key":"k2","value":"reject-string","headers":{"weir.error":"rejected with a String at offset 1","weir.error.kind":"rejected"},"timestamp":0}
        "#,
    );
}

/// Item 3: a step whose calls keep running past the deadline stops after
/// `--max-timeouts` of them in a row instead of costing one deadline per
/// record; in a pipeline nothing of the batch is committed, so a run with a
/// fixed module (here: a longer deadline for the records that finish) would
/// resume there.
#[test]
fn a_step_that_keeps_timing_out_stops_after_max_timeouts_in_a_row() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    let lines: String = ["ok", "loop", "loop", "loop", "loop", "loop", "ok"]
        .iter()
        .map(|v| format!("{}\n", json!({"key": "k", "value": v})))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let faulty = guest("faulty");
    let started = Instant::now();
    let r = run(weir()
        .arg("test")
        .arg(&faulty)
        .arg("--input")
        .arg(&input)
        .args(["--deadline-ms", "100", "--max-timeouts", "3"]));
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    let message = format!(
        "step test: {} ran past its deadline of 100 ms on 3 calls in a row, so the step stopped (in a pipeline nothing after the last commit is written, and the next run resumes there): fix the function, or raise --deadline-ms or --max-timeouts",
        faulty.display()
    );
    assert_lines("weir test", &r.stderr, &format!("error: {message}"));
    // The batch, then two of its records: not five deadlines and a retry each.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // In a pipeline: the run stops with the error and commits nothing.
    let d = Data::new();
    let values: Vec<String> = ["ok", "loop", "loop", "loop", "loop", "loop", "ok"]
        .iter()
        .map(|v| v.to_string())
        .collect();
    d.produce("in", 1, &values);
    let file = d.pipeline(&faulty.display().to_string(), "");
    let r = run(d.weir().arg("run").arg(&file).args([
        "--until-caught-up",
        "-q",
        "--deadline-ms",
        "100",
        "--max-timeouts",
        "3",
    ]));
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert_lines(
        "weir run",
        &r.stderr,
        &format!(
            "error: task 0-0: {}",
            message.replace("step test:", "step attack:")
        ),
    );
    assert!(d.consume("out").is_empty(), "nothing was committed");
    assert!(d.consume("dlq").is_empty(), "no dead letter was committed");
}

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
