//! The daemon (`weir serve`): the module registry, deployments, hot swaps
//! under load (and their rollback), shadows with a diff, promote, the
//! token, and a restart after SIGKILL. Every command is the real `weir`
//! binary; the modules are real guests.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{assert_lines, guest, run, tempdir, weir};

/// A data directory and the daemon that owns it.
struct Daemon {
    tmp: tempfile::TempDir,
    data: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// WEIR_TOKEN for the daemon (else it makes its token file).
    token_env: Option<String>,
}

/// Polls `cond` every 10 ms for at most 60 s.
#[track_caller]
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Daemon {
    fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, None)
    }

    fn start_with(extra: &[&str], token_env: Option<&str>) -> Self {
        let tmp = tempdir();
        let data = tmp.path().join("data");
        let mut d = Daemon {
            tmp,
            data,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            token_env: token_env.map(String::from),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let mut cmd = weir();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&self.data)
            .args(&self.extra)
            .env_remove("WEIR_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(t) = &self.token_env {
            cmd.env("WEIR_TOKEN", t);
        }
        self.child = Some(cmd.spawn().unwrap());
        until("the daemon to answer", || {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("weir serve exited early: {st}");
            }
            self.token()
                .is_some_and(|t| self.http("GET", "/health", Some(&t), b"").0 == 200)
        });
    }

    fn token_file(&self) -> Option<String> {
        std::fs::read_to_string(self.data.join("weir.token")).ok()
    }

    fn token(&self) -> Option<String> {
        self.token_env
            .clone()
            .or_else(|| self.token_file().map(|t| t.trim().to_string()))
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// `weir` on the daemon's data directory (which gives its address and
    /// token).
    fn weir(&self) -> Command {
        let mut c = weir();
        c.env("WEIR_DATA", &self.data);
        c.env_remove("WEIR_TOKEN");
        c.env_remove("WEIR_SERVER");
        c
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let r = run(self.weir().args(args));
        assert!(r.status.success(), "weir {args:?}: {}", r.stderr);
        r.stdout
    }

    #[track_caller]
    fn fails(&self, args: &[&str]) -> String {
        let r = run(self.weir().args(args));
        assert!(
            !r.status.success(),
            "weir {args:?} should fail: {}",
            r.stdout
        );
        r.stderr
    }

    fn push(&self, file: &Path, name: &str) -> String {
        self.ok(&["module", "push", file.to_str().unwrap(), "--name", name])
            .trim()
            .to_string()
    }

    fn produce(&self, topic: &str, lines: &[String]) {
        crate::util::feed(self.weir().args(["produce", topic]), lines);
    }

    /// Every record of a topic: (partition, key, value as JSON).
    fn records(&self, topic: &str) -> Vec<(u64, String, Value)> {
        self.ok(&["consume", topic, "--from-beginning"])
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["partition"].as_u64().unwrap(),
                    v["key"].as_str().unwrap_or_default().to_string(),
                    v["value"].clone(),
                )
            })
            .collect()
    }

    fn status(&self, pipeline: &str) -> Value {
        serde_json::from_str(&self.ok(&["pipeline", "status", pipeline, "--json"])).unwrap()
    }

    /// A pipeline file in the test's directory.
    fn file(&self, name: &str, text: &str) -> String {
        let f = self.tmp.path().join(name);
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_string()
    }

    /// One HTTP request to the daemon: status and body.
    fn http(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
        let Ok(addr) = std::fs::read_to_string(self.data.join("weir.addr")) else {
            return (0, String::new());
        };
        let addr = addr.trim().trim_start_matches("http://").to_string();
        let Ok(mut s) = TcpStream::connect(&addr) else {
            return (0, String::new());
        };
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s
            .write_all(head.as_bytes())
            .and_then(|()| s.write_all(body));
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string());
        (status, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn map_pipeline(name: &str, module: &str) -> String {
    format!(
        "name = \"{name}\"\ninput = \"in\"\noutput = \"out\"\n\n[[steps]]\nname = \"case\"\nkind = \"map\"\nmodule = \"{module}\"\nkey_preserving = true\n"
    )
}

fn tally_pipeline(module: &str) -> String {
    format!(
        "name = \"tally\"\ninput = \"in\"\noutput = \"tallies\"\n\n[[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = \"{module}\"\n"
    )
}

/// Keeps producing `Rec-I` records (keys k0..k6) in chunks until stopped.
struct Producer {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producer {
    fn start(d: &Daemon) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), sent.clone());
        let data = d.data.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let from = n.load(Ordering::SeqCst);
                let lines: String = (from..from + 25)
                    .map(|i| format!("{{\"key\":\"k{}\",\"value\":\"Rec-{i}\"}}\n", i % 7))
                    .collect();
                let mut child = weir()
                    .env("WEIR_DATA", &data)
                    .args(["produce", "in"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(lines.as_bytes())
                    .unwrap();
                assert!(child.wait().unwrap().success(), "produce");
                n.store(from + 25, Ordering::SeqCst);
            }
        });
        Producer {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Stops it; how many records it produced.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn step_u64(status: &Value, step: usize, field: &str) -> u64 {
    status["steps"][step][field].as_u64().unwrap()
}

/// The number in `Rec-N` (any case).
fn rec_number(v: &Value) -> u64 {
    let s = v.as_str().unwrap();
    s[4..].parse().unwrap()
}

#[test]
fn a_swap_under_load_keeps_every_record_exactly_once_and_the_aggregate_state() {
    let d = Daemon::start(&["--swap-wait-ms", "30000"]);
    assert_eq!(d.push(&guest("uppercase"), "case"), "case@1");
    assert_eq!(d.push(&guest("lowercase"), "case"), "case@2");
    assert_eq!(d.push(&guest("count"), "tally"), "tally@1");
    assert_eq!(d.push(&guest("count-v2"), "tally"), "tally@2");
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    let live = d.file("live.toml", &map_pipeline("live", "case@latest"));
    // `@latest` resolves at deploy time to the newest version: case@2; the
    // test wants v1 first, so it names the version.
    assert_lines(
        "deploy",
        &d.ok(&["deploy", &live]),
        "deployed live: case=case@2",
    );
    let live = d.file("live.toml", &map_pipeline("live", "case@1"));
    assert_lines(
        "redeploy",
        &d.ok(&["deploy", &live]),
        "deployed live: case=case@1",
    );
    let tally = d.file("tally.toml", &tally_pipeline("tally@1"));
    assert_lines(
        "deploy",
        &d.ok(&["deploy", &tally]),
        "deployed tally: count=tally@1",
    );

    let producer = Producer::start(&d);
    let out_in_both = |d: &Daemon| {
        let parts: BTreeSet<u64> = d.records("out").iter().map(|r| r.0).collect();
        parts.len() == 2
    };
    until("outputs in both partitions", || out_in_both(&d));
    for (round, v) in [2, 1, 2].into_iter().enumerate() {
        let before = step_u64(&d.status("live"), 0, "records_out");
        until("more records through the step", || {
            step_u64(&d.status("live"), 0, "records_out") > before + 50
        });
        let from = if v == 2 { 1 } else { 2 };
        let out = d.ok(&["swap", "live", "case", &format!("case@{v}")]);
        assert!(
            out.starts_with(&format!(
                "step case of live: case@{from} -> case@{v} (its first batch committed; pause "
            )),
            "swap {round}: {out}"
        );
        let out = d.ok(&["swap", "tally", "count", &format!("tally@{v}")]);
        assert!(
            out.starts_with(&format!(
                "step count of tally: tally@{from} -> tally@{v} (its first batch committed; pause "
            )),
            "swap {round}: {out}"
        );
    }
    let before = step_u64(&d.status("live"), 0, "records_out");
    until("records after the last swap", || {
        step_u64(&d.status("live"), 0, "records_out") > before + 50
    });
    let total = producer.finish();
    until("both pipelines caught up", || {
        let (a, b) = (d.status("live"), d.status("tally"));
        step_u64(&a, 0, "records_in") == total
            && step_u64(&a, 0, "lag") == 0
            && step_u64(&b, 0, "records_in") == total
            && step_u64(&b, 0, "lag") == 0
    });

    // The map: every input exactly once, in input order per partition, in
    // v1's form, then v2's, v1's, v2's: one switch per swap.
    let out = d.records("out");
    let mut all: Vec<u64> = out.iter().map(|r| rec_number(&r.2)).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..total).collect::<Vec<_>>(),
        "every record exactly once"
    );
    for p in 0..2 {
        let mine: Vec<&(u64, String, Value)> = out.iter().filter(|r| r.0 == p).collect();
        let numbers: Vec<u64> = mine.iter().map(|r| rec_number(&r.2)).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "partition {p} in input order"
        );
        let mut forms: Vec<&str> = Vec::new();
        for r in &mine {
            let v = r.2.as_str().unwrap();
            let form = if v.starts_with("REC-") {
                "v1"
            } else {
                assert!(v.starts_with("rec-"), "{v}");
                "v2"
            };
            if forms.last() != Some(&form) {
                forms.push(form);
            }
        }
        assert_eq!(forms, ["v1", "v2", "v1", "v2"], "partition {p}");
    }

    // The aggregate: counts per key go on across the swaps (the state
    // carried over), in v1's form (a number) and v2's ("N records").
    let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..total {
        *per_key.entry(format!("k{}", i % 7)).or_default() += 1;
    }
    let tallies = d.records("tallies");
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for p in 0..2 {
        let mut forms: Vec<&str> = Vec::new();
        for (_, key, v) in tallies.iter().filter(|r| r.0 == p) {
            let (n, form) = match v {
                Value::Number(n) => (n.as_u64().unwrap(), "v1"),
                Value::String(s) => (s.strip_suffix(" records").unwrap().parse().unwrap(), "v2"),
                other => panic!("{other}"),
            };
            let prev = last.insert(key.clone(), n).unwrap_or(0);
            assert!(n > prev, "key {key}: {n} after {prev}");
            if forms.last() != Some(&form) {
                forms.push(form);
            }
        }
        assert_eq!(forms, ["v1", "v2", "v1", "v2"], "partition {p}");
    }
    assert_eq!(last, per_key, "the final count of every key");
    // Served from the live state store.
    let (code, body) = d.http(
        "GET",
        "/pipelines/tally/steps/count/state?key=k3",
        d.token().as_deref(),
        b"",
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"key": "k3", "value": per_key["k3"]}])
    );
    let (code, body) = d.http(
        "GET",
        "/pipelines/tally/steps/count/state?max=100",
        d.token().as_deref(),
        b"",
    );
    assert_eq!(code, 200, "{body}");
    let scan: Vec<Value> = serde_json::from_str(&body).unwrap();
    let scanned: BTreeMap<String, u64> = scan
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["value"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(scanned, per_key);

    // The status and the metrics say the same.
    let st = d.status("live");
    assert_eq!(st["steps"][0]["module"], "case@2");
    assert_eq!(st["steps"][0]["swaps"], 3);
    assert_eq!(st["steps"][0]["dead_letters"], 0);
    let (code, metrics) = d.http("GET", "/metrics", d.token().as_deref(), b"");
    assert_eq!(code, 200);
    for line in [
        format!("weir_step_records_in_total{{pipeline=\"live\",step=\"case\"}} {total}"),
        format!("weir_step_records_out_total{{pipeline=\"live\",step=\"case\"}} {total}"),
        "weir_step_dead_letters_total{pipeline=\"live\",step=\"case\"} 0".to_string(),
        "weir_step_lag_records{pipeline=\"live\",step=\"case\"} 0".to_string(),
        "weir_step_swaps_total{pipeline=\"live\",step=\"case\"} 3".to_string(),
        "weir_pipeline_up{pipeline=\"tally\"} 1".to_string(),
        "# TYPE weir_step_run_seconds_total counter".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.lines().any(|l| l
            .starts_with("weir_step_last_swap_pause_seconds{pipeline=\"live\",step=\"case\"} ")),
        "{metrics}"
    );
    // Guest time is told apart from the step's whole run time.
    let seconds = |name: &str| -> f64 {
        let prefix = format!("{name}{{pipeline=\"live\",step=\"case\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    let (guest, run) = (
        seconds("weir_step_guest_seconds_total"),
        seconds("weir_step_run_seconds_total"),
    );
    assert!(guest > 0.0 && guest <= run, "guest {guest} s, run {run} s");
    assert_eq!(
        st["steps"][0]["guest_us"].as_u64().map(|us| us > 0),
        Some(true),
        "{st}"
    );
}

#[test]
fn a_swap_to_a_module_that_traps_on_every_record_is_rolled_back_and_loses_nothing() {
    let d = Daemon::start(&["--swap-wait-ms", "30000"]);
    assert_eq!(d.push(&guest("uppercase"), "case"), "case@1");
    assert_eq!(d.push(&guest("trap-all"), "boom"), "boom@1");
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    let live = d.file("live.toml", &map_pipeline("live", "case@1"));
    d.ok(&["deploy", &live]);
    let producer = Producer::start(&d);
    until("records through the step", || {
        step_u64(&d.status("live"), 0, "records_out") > 50
    });
    let err = d.fails(&["swap", "live", "case", "boom@1"]);
    assert!(
        err.starts_with("error: the swap of step case of live to boom@1 was rolled back: ")
            && err.contains("trap-all traps on every record (offset ")
            && err.trim_end().ends_with(
                "; step case runs case@1 again, and nothing of the failed batch was committed"
            ),
        "{err}"
    );
    // A module of another world is refused before anything changes.
    assert_eq!(d.push(&guest("count"), "tally"), "tally@1");
    let err = d.fails(&["swap", "live", "case", "tally@1"]);
    assert!(
        err.starts_with("error: cannot swap step case of live to tally@1: ")
            && err.contains(
                "step case is a map step (`kind = \"map\"`), so its module must be a mapper"
            ),
        "{err}"
    );
    let total = producer.finish();
    until("the pipeline caught up", || {
        let s = d.status("live");
        step_u64(&s, 0, "lag") == 0 && d.records("out").len() as u64 >= total
    });
    let out = d.records("out");
    let mut values: Vec<String> = out
        .iter()
        .map(|r| r.2.as_str().unwrap().to_string())
        .collect();
    values.sort_by_key(|v| v[4..].parse::<u64>().unwrap());
    let want: Vec<String> = (0..total).map(|i| format!("REC-{i}")).collect();
    assert_eq!(values, want, "every record once, by v1");
    assert!(
        d.records("live-dead-letters").is_empty(),
        "no dead letter was committed"
    );
    let st = d.status("live");
    assert_eq!(st["steps"][0]["module"], "case@1");
    // What the thrown-away batch counted is taken back.
    assert_eq!(step_u64(&st, 0, "records_in"), total);
    assert_eq!(step_u64(&st, 0, "records_out"), total);
    assert_eq!(step_u64(&st, 0, "dead_letters"), 0);
    assert!(
        st["last_rollback"]
            .as_str()
            .unwrap()
            .starts_with("the swap of step case of live to boom@1 was rolled back"),
        "{st}"
    );
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@1",
    );
}

#[test]
fn shadow_and_diff_report_exactly_the_changed_records_and_promote_moves_readers() {
    let d = Daemon::start(&["--swap-wait-ms", "200"]);
    assert_eq!(d.push(&guest("uppercase"), "case"), "case@1");
    assert_eq!(d.push(&guest("lowercase"), "case"), "case@2");
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    let live = d.file("live.toml", &map_pipeline("live", "case@1"));
    d.ok(&["deploy", &live]);
    // v2 lower-cases where v1 upper-cases: only values with letters differ.
    let inputs = [
        ("k1", "abc"),
        ("k2", "123-456"),
        ("k3", "Xy"),
        ("k4", "7!"),
        ("k5", "--"),
    ];
    let lines: Vec<String> = inputs
        .iter()
        .map(|(k, v)| format!("{{\"key\":\"{k}\",\"value\":\"{v}\"}}"))
        .collect();
    d.produce("in", &lines);
    until("the outputs", || d.records("out").len() == 5);

    assert_lines(
        "status",
        &d.ok(&["pipeline", "status", "live"]),
        "
        pipeline live: running (application id live)
          input in, outputs out
          step case: module case@1, in 5, out 5, dead letters 0, lag 0, state 0 entries (0 bytes), swaps 0 (last: none, pause 0 us)
        ",
    );
    assert_lines(
        "shadow",
        &d.ok(&["shadow", "live", "case", "case@2"]),
        "shadow of live started: step case on case@2, application id live-shadow, outputs out-shadow",
    );
    assert_lines(
        "diff",
        &d.ok(&["diff", "live"]),
        r#"
        live against its shadow (step case on case@2)
        equal     3
        changed   2
        only-old  0
        only-new  0
        changed   out k1: "ABC" -> "abc"
        changed   out k3: "XY" -> "xy"
        "#,
    );
    let json: Value = serde_json::from_str(&d.ok(&["diff", "live", "--json"])).unwrap();
    assert_eq!(
        (
            &json["equal"],
            &json["changed"],
            &json["only_old"],
            &json["only_new"]
        ),
        (&3.into(), &2.into(), &0.into(), &0.into())
    );
    assert_eq!(
        json["samples"]["changed"],
        serde_json::json!([
            {"topic": "out", "key": "k1", "old": "ABC", "new": "abc"},
            {"topic": "out", "key": "k3", "old": "XY", "new": "xy"},
        ])
    );
    // The original kept running beside it.
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@1  shadow case=case@2",
    );
    // A version a shadow runs is in use.
    let err = d.fails(&["module", "delete", "case@2"]);
    assert_lines(
        "delete",
        &err,
        "error: case@2 is in use by step case of the shadow of pipeline live: swap the step to another version (or delete the pipeline) first",
    );

    assert_lines(
        "promote",
        &d.ok(&["promote", "live"]),
        "promoted the shadow of live: step case runs case@2 (application id live-shadow)\nreaders of out now read out-shadow",
    );
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@2",
    );
    // New records go to the promoted pipeline's topic, in v2's form; the
    // old topic gets nothing more.
    d.produce("in", &["{\"key\":\"k6\",\"value\":\"New\"}".to_string()]);
    until("the new record", || d.records("out-shadow").len() == 6);
    let promoted = d.records("out-shadow");
    assert!(
        promoted.iter().any(|r| r.1 == "k6" && r.2 == "new"),
        "{promoted:?}"
    );
    assert_eq!(d.records("out").len(), 5);
    let st = d.status("live");
    assert_eq!(st["outputs"], serde_json::json!(["out-shadow"]));
    // The version the pipeline no longer runs can go.
    assert_lines(
        "delete",
        &d.ok(&["module", "delete", "case@1"]),
        "deleted case@1",
    );

    // A second shadow, discarded.
    d.ok(&["shadow", "live", "case", "case@2"]);
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@2  shadow case=case@2",
    );
    assert_lines(
        "discard",
        &d.ok(&["discard", "live"]),
        "discarded the shadow of live",
    );
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@2",
    );
    let err = d.fails(&["diff", "live"]);
    assert_lines(
        "diff",
        &err,
        "error: pipeline live has no running shadow: `weir shadow live STEP NAME@VERSION` starts one",
    );
}

#[test]
fn requests_without_a_token_or_with_a_wrong_one_get_401_and_change_nothing() {
    let d = Daemon::start(&["--max-body-mb", "1"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.data.join("weir.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the token file is the user's only");
    let wasm = std::fs::read(guest("uppercase")).unwrap();
    for token in [None, Some("not-the-token-at-all")] {
        let (code, body) = d.http("POST", "/modules?name=case", token, &wasm);
        assert_eq!(code, 401, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["error"],
            "a valid bearer token is needed (Authorization: Bearer TOKEN): the daemon's token is in DATA/weir.token, or WEIR_TOKEN"
        );
        let (code, _) = d.http("GET", "/modules", token, b"");
        assert_eq!(code, 401);
    }
    let r = run(d.weir().env("WEIR_TOKEN", "not-the-token-at-all").args([
        "module",
        "push",
        guest("uppercase").to_str().unwrap(),
        "--name",
        "case",
    ]));
    assert!(!r.status.success());
    assert!(r.stderr.contains("refused the token (401)"), "{}", r.stderr);
    assert_eq!(d.ok(&["module", "list"]), "", "nothing was stored");

    // Oversized and malformed requests: a 4xx with a JSON error.
    let big = vec![0u8; (1 << 20) + 10];
    let (code, body) = d.http("POST", "/modules?name=big", d.token().as_deref(), &big);
    assert_eq!(code, 413, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["error"],
        "the request body (1048586 bytes) is larger than the limit (1048576 bytes); start the daemon with a larger --max-body-mb"
    );
    let (code, body) = d.http("POST", "/pipelines", d.token().as_deref(), b"{not json");
    assert_eq!(code, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("the request body is not valid JSON: "),
        "{v}"
    );
    let (code, body) = d.http("GET", "/nothing/here", d.token().as_deref(), b"");
    assert_eq!(code, 404, "{body}");
    assert_eq!(d.ok(&["module", "list"]), "");
}

#[test]
fn a_garbage_upload_is_refused_with_the_reason_and_the_registry_is_unchanged() {
    let d = Daemon::start(&[]);
    assert_eq!(d.push(&guest("uppercase"), "case"), "case@1");
    let before = d.ok(&["module", "list"]);
    let modules = d.data.join("weir-daemon/modules");
    let files = || {
        let mut v: Vec<String> = std::fs::read_dir(&modules)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let stored = files();
    assert_eq!(stored.len(), 2, "{stored:?}");

    let garbage = d.tmp.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").unwrap();
    let err = d.fails(&[
        "module",
        "push",
        garbage.to_str().unwrap(),
        "--name",
        "case",
    ]);
    assert_lines(
        "garbage",
        &err,
        &format!(
            "error: {} was refused: case@2: not a WebAssembly component: it does not start with the bytes \\0asm (it starts with \"this is \")",
            garbage.display()
        ),
    );
    // A component of no world: refused with the missing export named.
    let err = d.fails(&[
        "module",
        "push",
        guest("half-mapper").to_str().unwrap(),
        "--name",
        "case",
    ]);
    assert!(err.contains("process"), "{err}");
    assert_eq!(d.ok(&["module", "list"]), before);
    assert_eq!(files(), stored, "nothing stored");
    // The next good upload takes the next version.
    assert_eq!(d.push(&guest("lowercase"), "case"), "case@2");
    assert_lines(
        "show",
        &d.ok(&["module", "show", "case"])
            .lines()
            .map(|l| l.split("  ").next().unwrap().to_string() + "\n")
            .collect::<String>(),
        "case@1\ncase@2",
    );
    let err = d.fails(&["module", "show", "nope"]);
    assert_lines(
        "show",
        &err,
        "error: no module named nope in the registry (`weir module list` shows them; `weir module push FILE.wasm --name nope` adds one)",
    );
}

#[test]
fn the_daemon_killed_with_sigkill_resumes_every_pipeline_at_its_last_versions() {
    let mut d = Daemon::start(&["--swap-wait-ms", "30000"]);
    assert_eq!(d.push(&guest("uppercase"), "case"), "case@1");
    assert_eq!(d.push(&guest("lowercase"), "case"), "case@2");
    assert_eq!(d.push(&guest("count"), "tally"), "tally@1");
    assert_eq!(d.push(&guest("faulty"), "logger"), "logger@1");
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    d.ok(&[
        "deploy",
        &d.file("live.toml", &map_pipeline("live", "case@1")),
    ]);
    d.ok(&["deploy", &d.file("tally.toml", &tally_pipeline("tally@1"))]);
    let logged = "name = \"logged\"\ninput = \"in\"\noutput = \"logged-out\"\n\n[[steps]]\nname = \"echo\"\nkind = \"map\"\nmodule = \"logger@1\"\n";
    d.ok(&["deploy", &d.file("logged.toml", logged)]);
    d.ok(&["pipeline", "stop", "logged"]);
    d.produce("in", &["{\"key\":\"a\",\"value\":\"Hello\"}".to_string()]);
    until("the first output", || d.records("out").len() == 1);
    // Swapped while records flow: its first batch confirms it.
    // Keys on both partitions: each task's first batch confirms it.
    let lines: Vec<String> = (0..20)
        .map(|i| format!("{{\"key\":\"m{i}\",\"value\":\"Mid-{i}\"}}"))
        .collect();
    let out = std::thread::scope(|s| {
        let swap = s.spawn(|| d.ok(&["swap", "live", "case", "case@2"]));
        let mut n = 0;
        while !swap.is_finished() {
            d.produce("in", &lines);
            n += 1;
            assert!(n < 1000, "the swap never confirmed");
        }
        swap.join().unwrap()
    });
    assert!(
        out.starts_with("step case of live: case@1 -> case@2 (its first batch committed"),
        "{out}"
    );
    until("the tally caught up", || {
        step_u64(&d.status("tally"), 0, "lag") == 0
    });
    let count_of = |d: &Daemon, key: &str| {
        d.records("tallies")
            .into_iter()
            .rfind(|r| r.1 == key)
            .and_then(|r| r.2.as_u64())
    };
    assert_eq!(count_of(&d, "a"), Some(1));

    d.kill9();
    d.spawn();
    assert_lines(
        "after the restart",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@2\nlogged  stopped  echo=logger@1\ntally  running  count=tally@1",
    );
    d.produce("in", &["{\"key\":\"a\",\"value\":\"After\"}".to_string()]);
    until("the output after the restart", || {
        d.records("out").iter().any(|r| r.2 == "after")
    });
    until("the tally after the restart", || {
        count_of(&d, "a") == Some(2)
    });
    // Guest log lines of a pipeline started again.
    d.ok(&["pipeline", "start", "logged"]);
    d.produce("in", &["{\"key\":\"b\",\"value\":\"log\"}".to_string()]);
    until("the guest's log line", || {
        d.ok(&["logs", "logged", "--step", "echo"])
            .contains("hello from offset")
    });
    let logs = d.ok(&["logs", "logged"]);
    assert!(
        logs.lines()
            .all(|l| l.starts_with("INFO echo logger@1: hello from offset ")),
        "{logs}"
    );
    assert_eq!(d.ok(&["logs", "live"]), "", "live's guest logs nothing");
    // The lines are kept in the data directory: a daemon killed and
    // started again still shows them.
    d.kill9();
    d.spawn();
    assert_eq!(
        d.ok(&["logs", "logged"]),
        logs,
        "the guest's lines after a restart"
    );
    // Delete refuses a version in use, and a pipeline can be deleted.
    let err = d.fails(&["module", "delete", "case@2"]);
    assert!(
        err.contains("case@2 is in use by step case of pipeline live"),
        "{err}"
    );
    assert_lines(
        "delete",
        &d.ok(&["pipeline", "delete", "logged"]),
        "deleted logged",
    );
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@2\ntally  running  count=tally@1",
    );
}

#[test]
fn a_registry_module_outside_the_daemon_is_refused_with_a_hint() {
    let tmp = tempdir();
    let file = tmp.path().join("live.toml");
    std::fs::write(&file, map_pipeline("live", "case@1")).unwrap();
    let r = run(weir()
        .args(["run", "--data"])
        .arg(tmp.path().join("data"))
        .arg(&file));
    assert!(!r.status.success());
    assert_lines(
        "run",
        &r.stderr,
        &format!(
            "error: {}:8: step case: `module` = \"case@1\" names a module of the daemon's registry: deploy the pipeline to `weir serve` with `weir deploy` (or give the .wasm file's path)",
            file.display()
        ),
    );
}

#[test]
fn a_pending_swap_blocks_neither_status_nor_metrics_and_rollback_goes_back() {
    let d = Daemon::start(&["--swap-wait-ms", "60000"]);
    assert_eq!(d.push(&guest("uppercase"), "case"), "case@1");
    assert_eq!(d.push(&guest("lowercase"), "case"), "case@2");
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    d.ok(&[
        "deploy",
        &d.file("live.toml", &map_pipeline("live", "case@1")),
    ]);
    std::thread::scope(|s| {
        // No records yet: the swap waits for its first batch.
        let swap = s.spawn(|| d.ok(&["swap", "live", "case", "case@2"]));
        until("the swap to be pending", || {
            d.status("live")["steps"][0]["last_swap"] == "pending"
        });
        let (code, _) = d.http("GET", "/metrics", d.token().as_deref(), b"");
        assert_eq!(code, 200);
        let err = d.fails(&["swap", "live", "case", "case@1"]);
        assert_lines(
            "second swap",
            &err,
            "error: a swap of pipeline live is under way: try again when it answered",
        );
        let lines: Vec<String> = (0..20)
            .map(|i| format!("{{\"key\":\"k{i}\",\"value\":\"After-{i}\"}}"))
            .collect();
        d.produce("in", &lines);
        let out = swap.join().unwrap();
        assert!(
            out.starts_with("step case of live: case@1 -> case@2 (its first batch committed"),
            "{out}"
        );
    });
    let out = d.records("out");
    assert_eq!(out.len(), 20);
    assert!(
        out.iter()
            .all(|r| r.2.as_str().unwrap().starts_with("after-")),
        "{out:?}"
    );

    // Rollback: back to the version before, while records flow.
    let out = std::thread::scope(|s| {
        let rollback = s.spawn(|| d.ok(&["rollback", "live", "case"]));
        let lines: Vec<String> = (0..20)
            .map(|i| format!("{{\"key\":\"k{i}\",\"value\":\"Back-{i}\"}}"))
            .collect();
        let mut n = 0;
        while !rollback.is_finished() {
            d.produce("in", &lines);
            n += 1;
            assert!(n < 1000, "the rollback never confirmed");
        }
        rollback.join().unwrap()
    });
    assert!(
        out.starts_with("step case of live: case@2 -> case@1 (its first batch committed"),
        "{out}"
    );
    d.produce("in", &["{\"key\":\"z\",\"value\":\"Last\"}".to_string()]);
    until("the last record", || {
        d.records("out").iter().any(|r| r.2 == "LAST")
    });
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "live  running  case=case@1",
    );
    let err = d.fails(&["rollback", "live", "case"]);
    assert_lines(
        "rollback",
        &err,
        "error: step case of live has no earlier version to go back to (it ran only case@1)",
    );
}

#[test]
fn an_aggregate_and_its_shadow_are_compared_by_their_final_results() {
    let d = Daemon::start(&[]);
    assert_eq!(d.push(&guest("count"), "tally"), "tally@1");
    assert_eq!(d.push(&guest("count-v2"), "tally"), "tally@2");
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    d.ok(&["deploy", &d.file("tally.toml", &tally_pipeline("tally@1"))]);
    // Three produces, each taken in its own batches: the live run emits
    // more intermediate counts than a reprocessing of the whole history.
    for round in 1..=3 {
        d.produce(
            "in",
            &[
                "{\"key\":\"a\",\"value\":\"x\"}".to_string(),
                "{\"key\":\"b\",\"value\":\"y\"}".to_string(),
            ],
        );
        until("the counts", || d.records("tallies").len() == 2 * round);
    }
    assert_lines(
        "shadow",
        &d.ok(&["shadow", "tally", "count", "tally@1"]),
        "shadow of tally started: step count on tally@1, application id tally-shadow, outputs tallies-shadow",
    );
    assert_lines(
        "diff",
        &d.ok(&["diff", "tally"]),
        "tally against its shadow (step count on tally@1)\nequal     2\nchanged   0\nonly-old  0\nonly-new  0",
    );
    d.ok(&["discard", "tally"]);
    // A later shadow gets an application id and topics of its own.
    assert_lines(
        "shadow",
        &d.ok(&["shadow", "tally", "count", "tally@2"]),
        "shadow of tally started: step count on tally@2, application id tally-shadow2, outputs tallies-shadow2",
    );
    assert_lines(
        "diff",
        &d.ok(&["diff", "tally"]),
        r#"
        tally against its shadow (step count on tally@2)
        equal     0
        changed   2
        only-old  0
        only-new  0
        changed   tallies a: "3" -> "3 records"
        changed   tallies b: "3" -> "3 records"
        "#,
    );
    // Reprocessing by resetting: refused while the daemon runs the
    // pipeline; once stopped, reset, and started again, it counts the
    // history again from nothing (3, not 6).
    let r = run(d.weir().args(["reset", "tally"]));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr.trim(),
        format!(
            "error: pipeline tally runs in the weir process that owns {}: stop it first (`weir pipeline stop tally` when the daemon runs it)",
            d.data.display()
        )
    );
    let r = run(d.weir().args(["pipeline", "reset", "tally"]));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr.trim(),
        "error: pipeline tally runs: stop it first (`weir pipeline stop tally`)"
    );
    d.ok(&["pipeline", "stop", "tally"]);
    // Stopped, its shadow's state goes through the daemon's socket.
    let out = d.ok(&["reset", "tally-shadow2"]);
    assert!(
        out.starts_with("reset pipeline tally-shadow2: forgot its input positions and state ("),
        "{out}"
    );
    let out = d.ok(&["pipeline", "reset", "tally"]);
    assert!(
        out.starts_with("reset tally: forgot ")
            && out.trim_end().ends_with(" entries of positions and state; `weir pipeline start tally` reprocesses its inputs from the start"),
        "{out}"
    );
    d.ok(&["pipeline", "start", "tally"]);
    // Each key reaches 3 a second time (not 6).
    let threes = |key: &str| {
        d.records("tallies")
            .iter()
            .filter(|(_, k, v)| k == key && v.as_u64() == Some(3))
            .count()
    };
    until("the counts again", || threes("a") == 2 && threes("b") == 2);
    let values: BTreeSet<String> = d
        .records("tallies")
        .into_iter()
        .map(|(_, _, v)| v.to_string())
        .collect();
    assert_eq!(
        values,
        ["1", "2", "3"].map(String::from).into(),
        "a count went past 3"
    );
}

/// A run that fails (its module's init never returns) shows as failed with
/// the reason, naming the module by its registry name; it is reset as it
/// is, with no stop first, and is then stopped.
#[test]
fn a_failed_run_says_why_and_is_reset_without_a_stop() {
    let d = Daemon::start(&["--deadline-ms", "300"]);
    assert_eq!(d.push(&guest("hostile"), "hostile"), "hostile@1");
    d.ok(&["topic", "create", "in"]);
    let file = d.file(
        "h.toml",
        "name = \"h\"\ninput = \"in\"\noutput = \"out\"\n\n[[steps]]\nname = \"attack\"\nkind = \"map\"\nmodule = \"hostile@latest\"\nconfig = { init = \"sleep-loop\" }\n",
    );
    d.ok(&["deploy", &file]);
    d.produce("in", &["{\"value\":\"a\"}".to_string()]);
    until("the run to fail", || {
        d.ok(&["pipeline", "list"]).starts_with("h  failed")
    });
    assert_lines(
        "status",
        &d.ok(&["pipeline", "status", "h"]),
        r#"
        pipeline h: failed (application id h)
          error: task 0-0: step attack of pipeline h: hostile@1: cannot start an instance: init deadline exceeded: the call ran longer than 300 ms
          input in, outputs out
          step attack: module hostile@1, in 0, out 0, dead letters 0, lag 1, state 0 entries (0 bytes), swaps 0 (last: none, pause 0 us)
        "#,
    );
    assert_lines(
        "reset",
        &d.ok(&["pipeline", "reset", "h"]),
        "reset h: forgot 0 entries of positions and state; `weir pipeline start h` reprocesses its inputs from the start",
    );
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "h  stopped  attack=hostile@1",
    );
}

#[test]
fn a_token_given_by_weir_token_is_the_one_the_daemon_takes() {
    let d = Daemon::start_with(&[], Some("a-token-from-the-environment"));
    assert!(d.token_file().is_none(), "no token file is made");
    let r = run(d.weir().args(["module", "list"]));
    assert!(!r.status.success());
    assert_lines(
        "no token",
        &r.stderr,
        &format!(
            "error: no token: give --token or WEIR_TOKEN, or run on the daemon's data directory (cannot read {}): No such file or directory (os error 2)",
            d.data.join("weir.token").display()
        ),
    );
    let r = run(d
        .weir()
        .env("WEIR_TOKEN", "a-token-from-the-environment")
        .args([
            "module",
            "push",
            guest("uppercase").to_str().unwrap(),
            "--name",
            "case",
        ]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stdout, "case@1\n");
    // --server instead of the address file.
    let addr = std::fs::read_to_string(d.data.join("weir.addr")).unwrap();
    let r = run(d
        .weir()
        .env("WEIR_DATA", d.tmp.path().join("elsewhere"))
        .args([
            "module",
            "show",
            "case",
            "--server",
            addr.trim(),
            "--token",
            "a-token-from-the-environment",
        ]));
    assert!(r.status.success(), "{}", r.stderr);
    assert!(r.stdout.starts_with("case@1  mapper  "), "{}", r.stdout);
}

#[test]
fn a_pipeline_on_kafka_is_hot_swapped_with_every_record_once_and_shadowed() {
    let kafka = crate::kafka::brokers();
    let d = Daemon::start(&["--swap-wait-ms", "30000"]);
    assert_eq!(d.push(&guest("uppercase"), "case"), "case@1");
    assert_eq!(d.push(&guest("lowercase"), "case"), "case@2");
    let n = std::process::id();
    let (input, output) = (format!("kin-{n}"), format!("kout-{n}"));
    let app = format!("kcase-{n}");
    let k = |args: &[&str]| {
        let mut c = d.weir();
        c.args(args).args(["--brokers", kafka]);
        c
    };
    let ok = |c: &mut Command| {
        let r = run(c);
        assert!(r.status.success(), "{c:?}: {}", r.stderr);
        r.stdout
    };
    ok(&mut k(&["topic", "create", &input, "--partitions", "2"]));
    let text = map_pipeline(&app, "case@1")
        .replace("input = \"in\"", &format!("input = \"{input}\""))
        .replace("output = \"out\"", &format!("output = \"{output}\""))
        + &format!("\n[kafka]\n\"bootstrap.servers\" = \"{kafka}\"\n");
    let file = d.file("kafka.toml", &text);
    d.ok(&["deploy", &file]);
    let produce = |from: u64, to: u64| {
        let mut child = k(&["produce", &input])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines: String = (from..to)
            .map(|i| format!("{{\"key\":\"k{i}\",\"value\":\"Rec-{i}\"}}\n"))
            .collect();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    let values = || -> Vec<String> {
        let r = run(&mut k(&["consume", &output, "--from-beginning"]));
        r.stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["value"].as_str().unwrap().to_string()
            })
            .collect()
    };
    produce(0, 300);
    until("v1's outputs on Kafka", || values().len() >= 300);
    let status = d.ok(&["pipeline", "status", &app]);
    assert!(
        status.contains(&format!("  on Kafka at {kafka}, partitions [0, 1]\n")),
        "{status}"
    );
    d.ok(&["swap", &app, "case", "case@2"]);
    produce(300, 600);
    until("v2's outputs on Kafka", || values().len() >= 600);
    let mut got = values();
    got.sort_by_key(|v| v[4..].parse::<u64>().unwrap());
    let want: Vec<String> = (0..600)
        .map(|i| {
            if i < 300 {
                format!("REC-{i}")
            } else {
                format!("rec-{i}")
            }
        })
        .collect();
    assert_eq!(
        got, want,
        "each record once: v1's form before the swap, v2's after"
    );
    // A shadow of v1 reprocesses the same history on Kafka; the diff shows
    // that every record differs by case.
    d.ok(&["shadow", &app, "case", "case@1"]);
    until("the shadow to catch up", || {
        run(d.weir().args(["diff", &app, "--json"]))
            .status
            .success()
    });
    let diff: Value = serde_json::from_str(&d.ok(&["diff", &app, "--json"])).unwrap();
    assert_eq!(diff["changed"], 300, "{diff}");
    assert_eq!(diff["equal"], 300, "{diff}");
}

/// Word count with `split` and a `count` step of the given module, and
/// the count step's settings.
fn word_count_pipeline(count: &str, settings: &str) -> String {
    format!(
        "name = \"wc\"\ninput = \"lines\"\noutput = \"counts\"\n\n[[steps]]\nname = \"split\"\nkind = \"map\"\nmodule = \"split@1\"\n\n[[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = \"{count}\"\n{settings}"
    )
}

/// A line for `weir produce`.
fn text(line: &str) -> Vec<String> {
    vec![serde_json::json!({"key": "l", "value": line}).to_string()]
}

/// The outputs of word count from the `from`th on, as "KEY VALUE".
fn counts_from(d: &Daemon, from: usize) -> Vec<String> {
    d.records("counts")[from..]
        .iter()
        .map(|(_, k, v)| format!("{k} {v}"))
        .collect()
}

/// The newest count per word.
fn newest(d: &Daemon) -> BTreeMap<String, Value> {
    d.records("counts")
        .into_iter()
        .map(|(_, k, v)| (k, v))
        .collect()
}

#[test]
fn a_swap_to_a_module_of_a_new_state_format_upgrades_the_counts_and_one_without_an_upgrade_is_refused()
 {
    let d = Daemon::start(&["--swap-wait-ms", "60000"]);
    assert_eq!(d.push(&guest("split-words"), "split"), "split@1");
    assert_eq!(d.push(&guest("count"), "tally"), "tally@1");
    assert_eq!(d.push(&guest("count-v3"), "tally"), "tally@2");
    assert_eq!(d.push(&guest("count-v2"), "tally"), "tally@3");
    d.ok(&["topic", "create", "lines", "--partitions", "1"]);
    d.ok(&[
        "deploy",
        &d.file("wc.toml", &word_count_pipeline("tally@1", "")),
    ]);
    d.produce("lines", &text("the river and the log"));
    d.produce("lines", &text("a log of the river"));
    let before: BTreeMap<String, Value> =
        [("a", 1), ("and", 1), ("log", 2), ("of", 1), ("river", 2)]
            .into_iter()
            .map(|(k, n)| (k.to_string(), Value::from(n)))
            .collect();
    until("the first counts", || newest(&d) == before);
    let seen = d.records("counts").len();

    // count-v3 keeps {"count": N} (format 1) and upgrades the numbers of
    // examples/count (format 0) at the switch: the counts go on.
    let out = std::thread::scope(|s| {
        let swap = s.spawn(|| d.ok(&["swap", "wc", "count", "tally@2"]));
        until("the swap to be pending", || {
            d.status("wc")["steps"][1]["last_swap"] == "pending"
        });
        d.produce("lines", &text("the log and the sea"));
        swap.join().unwrap()
    });
    assert!(
        out.starts_with("step count of wc: tally@1 -> tally@2 (its first batch committed"),
        "{out}"
    );
    until("the counts after the swap", || {
        d.records("counts").len() == seen + 3
    });
    assert_eq!(
        counts_from(&d, seen),
        [
            r#"log {"count":3}"#,
            r#"and {"count":2}"#,
            r#"sea {"count":1}"#
        ]
    );
    // A word the batch did not touch was upgraded too.
    let (code, body) = d.http(
        "GET",
        "/pipelines/wc/steps/count/state?key=river",
        d.token().as_deref(),
        b"",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!([{"key": "river", "value": {"count": 2}}])
    );

    // count-v2 writes format 0 and exports no upgrade: refused, rolled back.
    let err = d.fails(&["swap", "wc", "count", "tally@3"]);
    assert_lines(
        "swap to v2",
        &err,
        "error: the swap of step count of wc to tally@3 was rolled back: step count's state is in format 1; tally@3 writes format 0 and exports no upgrade; step count runs tally@2 again, and nothing of the failed batch was committed",
    );
    // So is a rollback to examples/count.
    let err = d.fails(&["rollback", "wc", "count"]);
    assert_lines(
        "rollback",
        &err,
        "error: the swap of step count of wc to tally@1 was rolled back: step count's state is in format 1; tally@1 writes format 0 and exports no upgrade; step count runs tally@2 again, and nothing of the failed batch was committed",
    );

    // Nothing lost: count-v3 goes on.
    let seen = d.records("counts").len();
    d.produce("lines", &text("a river"));
    until("the last counts", || d.records("counts").len() == seen + 2);
    assert_eq!(
        counts_from(&d, seen),
        [r#"a {"count":2}"#, r#"river {"count":3}"#]
    );
    let st = d.status("wc");
    assert_eq!(st["steps"][1]["module"], "tally@2");
    assert_eq!(st["steps"][1]["dead_letters"], 0);
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "wc  running  count=tally@2 split=split@1",
    );
}

#[test]
fn an_upgrade_that_rejects_an_entry_rolls_the_swap_back_in_every_partition_and_loses_nothing() {
    let d = Daemon::start(&["--swap-wait-ms", "60000"]);
    assert_eq!(d.push(&guest("split-words"), "split"), "split@1");
    assert_eq!(d.push(&guest("count"), "tally"), "tally@1");
    assert_eq!(d.push(&guest("count-v3"), "tally"), "tally@2");
    d.ok(&["topic", "create", "lines", "--partitions", "2"]);
    d.ok(&[
        "deploy",
        &d.file(
            "wc.toml",
            &word_count_pipeline("tally@1", "config = { refuse_upgrade = \"banana\" }\n"),
        ),
    ]);
    let words = [
        "apple", "banana", "cherry", "date", "fig", "grape", "kiwi", "lemon",
    ];
    d.produce("lines", &text(&words.join(" ")));
    let counts = |n: u64| -> BTreeMap<String, Value> {
        words
            .iter()
            .map(|w| (w.to_string(), Value::from(n)))
            .collect()
    };
    until("the first counts", || newest(&d) == counts(1));
    // The words are counted in both partitions: one of them upgrades
    // nothing it may commit while the other rejects banana's count.
    let parts: BTreeSet<u64> = d.records("counts").iter().map(|r| r.0).collect();
    assert_eq!(parts, BTreeSet::from([0, 1]));
    let seen = d.records("counts").len();
    let err = d.fails(&["swap", "wc", "count", "tally@2"]);
    assert_lines(
        "swap",
        &err,
        "error: the swap of step count of wc to tally@2 was rolled back: tally@2 cannot upgrade step count's state from format 0: refused by the setting refuse_upgrade (key \"banana\"); step count runs tally@1 again, and nothing of the failed batch was committed",
    );
    d.produce("lines", &text(&words.join(" ")));
    until("the counts after", || {
        d.records("counts").len() == seen + words.len()
    });
    // (Each partition's records in order, one partition after the other.)
    let mut all = counts_from(&d, 0);
    all.sort();
    let mut want: Vec<String> = words
        .iter()
        .flat_map(|w| [format!("{w} 1"), format!("{w} 2")])
        .collect();
    want.sort();
    assert_eq!(all, want, "every count goes on in examples/count's form");
    let st = d.status("wc");
    assert_eq!(st["steps"][1]["module"], "tally@1");
    assert_eq!(st["steps"][1]["dead_letters"], 0);
    assert!(d.records("wc-dead-letters").is_empty());
    assert_lines(
        "list",
        &d.ok(&["pipeline", "list"]),
        "wc  running  count=tally@1 split=split@1",
    );
}
