//! Limits that hold against a hostile guest (tests/guests/hostile and
//! hoarder), and this file's harness: blocking calls that return at once, a
//! wall-clock deadline under load, a step that keeps timing out; and a
//! damaged data directory, `weir demo` from anywhere, `state get --data`,
//! `Error::from`. What one call may hand the host (state, outputs, logs)
//! and the host's own dead-letter reasons are in hardening_limits.rs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{assert_lines, guest, run, tempdir, weir};

/// Writes JSON-lines records with these values (keys k1, k2, ...).
pub(crate) fn input_file(dir: &Path, values: &[&str]) -> PathBuf {
    let path = dir.join("in.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for (i, v) in values.iter().enumerate() {
        writeln!(f, "{}", json!({"key": format!("k{}", i + 1), "value": v})).unwrap();
    }
    path
}

/// `weir test` of the hostile guest over these values.
pub(crate) fn hostile_test(values: &[&str], extra: &[&str]) -> (crate::util::Run, Duration) {
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
pub(crate) fn dead_letters(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A data directory with a pipeline that runs one map step.
pub(crate) struct Data {
    pub(crate) dir: tempfile::TempDir,
    path: PathBuf,
}

impl Data {
    pub(crate) fn new() -> Data {
        let dir = tempdir();
        let path = dir.path().join("data");
        Data { dir, path }
    }

    pub(crate) fn weir(&self) -> Command {
        let mut c = weir();
        c.env("WEIR_DATA", &self.path);
        c.env("WEIR_MODULE_PATH", guest("hostile").parent().unwrap());
        c
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let r = run(self.weir().args(args));
        assert!(r.status.success(), "weir {args:?} failed: {}", r.stderr);
        r.stdout
    }

    pub(crate) fn produce(&self, topic: &str, partitions: u32, values: &[String]) {
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
    pub(crate) fn pipeline(&self, module: &str, config: &str) -> PathBuf {
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

    pub(crate) fn consume(&self, topic: &str) -> Vec<Value> {
        self.ok(&["consume", topic, "--from-beginning"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every file under the data directory with its size and modification
    /// time, to show that a command changed nothing.
    pub(crate) fn listing(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
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

pub(crate) fn values(records: &[Value]) -> Vec<String> {
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
    pub(crate) fn produce_more(&self, values: &[&str]) {
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
    assert!(
        r.stdout.contains("\norder  item  user  customer\no1     pen   u3    Cy\no2     ink   u2    Bo (Oslo)\no3     cap   u4    Di\no4     mug   -     -\n"),
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
