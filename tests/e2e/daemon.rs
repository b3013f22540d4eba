//! The daemon (`weir serve`): its test harness (a daemon on a data
//! directory, a producer under load) and hot swaps under load (and their
//! rollback). Shadows, diff and promote are in daemon_shadow.rs, swaps to a
//! new state format in daemon_upgrade.rs, the token, refused uploads and a
//! restart after SIGKILL in daemon_admin.rs. Every command is the real
//! `weir` binary; the modules are real guests.

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
pub(crate) struct Daemon {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) data: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// WEIR_TOKEN for the daemon (else it makes its token file).
    token_env: Option<String>,
}

/// Polls `cond` every 10 ms for at most 60 s.
#[track_caller]
pub(crate) fn until(what: &str, mut cond: impl FnMut() -> bool) {
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
    pub(crate) fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, None)
    }

    pub(crate) fn start_with(extra: &[&str], token_env: Option<&str>) -> Self {
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

    pub(crate) fn spawn(&mut self) {
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

    pub(crate) fn token_file(&self) -> Option<String> {
        std::fs::read_to_string(self.data.join("weir.token")).ok()
    }

    pub(crate) fn token(&self) -> Option<String> {
        self.token_env
            .clone()
            .or_else(|| self.token_file().map(|t| t.trim().to_string()))
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// `weir` on the daemon's data directory (which gives its address and
    /// token).
    pub(crate) fn weir(&self) -> Command {
        let mut c = weir();
        c.env("WEIR_DATA", &self.data);
        c.env_remove("WEIR_TOKEN");
        c.env_remove("WEIR_SERVER");
        c
    }

    #[track_caller]
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let r = run(self.weir().args(args));
        assert!(r.status.success(), "weir {args:?}: {}", r.stderr);
        r.stdout
    }

    #[track_caller]
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let r = run(self.weir().args(args));
        assert!(
            !r.status.success(),
            "weir {args:?} should fail: {}",
            r.stdout
        );
        r.stderr
    }

    pub(crate) fn push(&self, file: &Path, name: &str) -> String {
        self.ok(&["module", "push", file.to_str().unwrap(), "--name", name])
            .trim()
            .to_string()
    }

    pub(crate) fn produce(&self, topic: &str, lines: &[String]) {
        crate::util::feed(self.weir().args(["produce", topic]), lines);
    }

    /// Every record of a topic: (partition, key, value as JSON).
    pub(crate) fn records(&self, topic: &str) -> Vec<(u64, String, Value)> {
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

    pub(crate) fn status(&self, pipeline: &str) -> Value {
        serde_json::from_str(&self.ok(&["pipeline", "status", pipeline, "--json"])).unwrap()
    }

    /// A pipeline file in the test's directory.
    pub(crate) fn file(&self, name: &str, text: &str) -> String {
        let f = self.tmp.path().join(name);
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_string()
    }

    /// One HTTP request to the daemon: status and body.
    pub(crate) fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (u16, String) {
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

pub(crate) fn map_pipeline(name: &str, module: &str) -> String {
    format!(
        "name = \"{name}\"\ninput = \"in\"\noutput = \"out\"\n\n[[steps]]\nname = \"case\"\nkind = \"map\"\nmodule = \"{module}\"\nkey_preserving = true\n"
    )
}

pub(crate) fn tally_pipeline(module: &str) -> String {
    format!(
        "name = \"tally\"\ninput = \"in\"\noutput = \"tallies\"\n\n[[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = \"{module}\"\n"
    )
}

/// Keeps producing `Rec-I` records (keys k0..k6) in chunks until stopped.
pub(crate) struct Producer {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producer {
    pub(crate) fn start(d: &Daemon) -> Self {
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
    pub(crate) fn finish(mut self) -> u64 {
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

pub(crate) fn step_u64(status: &Value, step: usize, field: &str) -> u64 {
    status["steps"][step][field].as_u64().unwrap()
}

/// The number in `Rec-N` (any case).
pub(crate) fn rec_number(v: &Value) -> u64 {
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
