//! Pipelines on a real Apache Kafka broker under faults: two instances
//! sharing the work through the consumer group and a SIGKILL of one, a
//! malformed record, a broker that is down or restarted mid-run. The
//! harness and the seed's examples are in kafka_pipelines.rs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kafka_pipelines::{Place, assert_once, example, latest, lines, model_counts, suffix};
use crate::util::{guest, root, run, tempdir, weir};

#[test]
fn a_pipeline_on_kafka_that_is_down_names_the_bootstrap_servers() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
    drop(l);
    let files = tempdir();
    let wc = example(files.path(), "wordcount.toml", &[], "x");
    let started = Instant::now();
    let r = run(weir()
        .env("WEIR_MODULE_PATH", guest("count").parent().unwrap())
        .arg("run")
        .arg(&wc)
        .args(["--brokers", &down, "--data"])
        .arg(files.path().join("data")));
    assert!(!r.status.success());
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot reach Kafka at {down}: {down}/bootstrap: Connect to ipv4#{down} failed: Connection refused\n"
        )
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // A [kafka] section without servers says what to add.
    let text = std::fs::read_to_string(&wc).unwrap()
        + "\n[kafka]\n\"security.protocol\" = \"plaintext\"\n";
    std::fs::write(&wc, text).unwrap();
    let r = run(weir()
        .env("WEIR_MODULE_PATH", guest("count").parent().unwrap())
        .arg("run")
        .arg(&wc));
    assert_eq!(
        r.stderr,
        format!(
            "error: {}: the [kafka] section has no `bootstrap.servers`: add it, or give --brokers HOST:PORT\n",
            wc.display()
        )
    );
}

/// A `weir run` left running (no --until-caught-up), its stderr in a file
/// of the place's directory (returned).
pub(crate) fn start(p: &Place, file: &Path) -> (Child, PathBuf) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let log = p
        .dir
        .path()
        .join(format!("run-{}.log", N.fetch_add(1, Ordering::SeqCst)));
    let child = p
        .weir()
        .arg("run")
        .arg(file)
        .args(["--batch", "50"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// The partitions an instance said it runs last.
pub(crate) fn partitions_of(log: &Path) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .rfind(|l| l.contains("this instance runs partitions"))?;
    let list = line.split_once('[')?.1.trim_end_matches(']');
    Some(
        list.split(", ")
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().unwrap())
            .collect(),
    )
}

#[test]
fn two_instances_share_the_work_and_a_sigkill_loses_and_repeats_nothing() {
    let s = suffix();
    let (a, b) = (Place::kafka(), Place::kafka());
    let files = tempdir();
    let wc = example(
        files.path(),
        "wordcount.toml",
        &["wordcount", "lines", "counts", "wordcount-dlq"],
        &s,
    );
    let input = lines(3000, 17);
    a.topic(&format!("lines-{s}"), 4);
    a.produce(&format!("lines-{s}"), &input);
    let want = model_counts(&input);
    let total: u64 = want.values().map(|v| v.as_u64().unwrap()).sum();
    let counts = format!("counts-{s}");
    let (mut ia, mut la) = start(&a, &wc);
    let (mut ib, lb) = start(&b, &wc);
    // SIGKILL one instance twice mid-run, restarting it each time.
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    let got = loop {
        assert!(
            Instant::now() < deadline,
            "the counts did not reach the model"
        );
        // Nothing until the instances made the output topic.
        let out = if run(a.weir().args(["topic", "describe", &counts]))
            .status
            .success()
        {
            a.consume(&counts)
        } else {
            Vec::new()
        };
        // Killed at a third and at two thirds of the words counted.
        let counted: u64 = latest(&out).values().map(|v| v.as_u64().unwrap()).sum();
        if kills < 2 && counted * 3 > total * (kills + 1) {
            ia.kill().unwrap();
            ia.wait().unwrap();
            (ia, la) = start(&a, &wc);
            kills += 1;
        }
        if kills == 2 && latest(&out) == want {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // With both running, the group splits the 4 partitions between them.
    let split = Instant::now();
    loop {
        let (pa, pb) = (partitions_of(&la), partitions_of(&lb));
        if let (Some(pa), Some(pb)) = (&pa, &pb)
            && pa.len() == 2
            && pb.len() == 2
        {
            let mut all: Vec<u32> = pa.iter().chain(pb).copied().collect();
            all.sort_unstable();
            assert_eq!(all, [0, 1, 2, 3], "{pa:?} and {pb:?}");
            break;
        }
        assert!(
            split.elapsed() < Duration::from_secs(90),
            "the partitions were not split: {pa:?} and {pb:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in [&mut ia, &mut ib] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    assert_once(&got, &want);
}

#[test]
fn a_malformed_record_from_kafka_is_dead_lettered_with_its_topic_partition_and_offset() {
    let s = suffix();
    let k = Place::kafka();
    let files = tempdir();
    let st = example(
        files.path(),
        "stock-stats.toml",
        &["stock-stats", "trades"],
        &s,
    );
    let trades = format!("trades-{s}");
    k.topic(&trades, 2);
    k.produce(
        &trades,
        &[
            r#"{"key": "ACME", "value": {"ask": 10.5}, "timestamp": 1000, "partition": 1}"#
                .to_string(),
            r#"{"key": "ACME", "value": "oops", "timestamp": 1100, "partition": 1}"#.to_string(),
            r#"{"key": "GLOB", "value_b64": "/w==", "timestamp": 1200, "partition": 0}"#
                .to_string(),
            r#"{"key": "ACME", "value": {"ask": 11.5}, "timestamp": 9000, "partition": 1}"#
                .to_string(),
        ],
    );
    k.run_pipeline(&st);
    let dead: Vec<String> = k
        .consume(&format!("stock-stats-{s}-dead-letters"))
        .iter()
        .map(Value::to_string)
        .collect();
    assert_eq!(
        dead,
        [
            format!(
                r#"{{"partition":0,"key":"GLOB","value_b64":"/w==","headers":{{"weir.error":"not a trade: expected a JSON object with a numeric \"ask\"","weir.error.kind":"rejected","weir.step":"stats","weir.topic":"{trades}","weir.partition":"0","weir.offset":"0"}},"timestamp":1200}}"#
            ),
            format!(
                r#"{{"partition":1,"key":"ACME","value":"oops","headers":{{"weir.error":"not a trade: expected a JSON object with a numeric \"ask\"","weir.error.kind":"rejected","weir.step":"stats","weir.topic":"{trades}","weir.partition":"1","weir.offset":"1"}},"timestamp":1100}}"#
            ),
        ]
    );
}

/// A broker of the test's own, stopped when dropped.
struct OwnBroker {
    dir: tempfile::TempDir,
    address: String,
}

impl OwnBroker {
    fn start() -> OwnBroker {
        let dir = tempdir();
        let out = broker_sh("start", dir.path());
        OwnBroker {
            address: out.trim().to_string(),
            dir,
        }
    }

    fn restart(&self) {
        assert_eq!(broker_sh("restart", self.dir.path()).trim(), self.address);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        broker_sh("stop", self.dir.path());
    }
}

fn broker_sh(cmd: &str, dir: &Path) -> String {
    let r = run(Command::new("bash")
        .arg(root().join("tests/kafka/broker.sh"))
        .arg(cmd)
        .arg(dir));
    assert!(r.status.success(), "broker.sh {cmd}: {}", r.stderr);
    r.stdout
}

#[test]
fn a_broker_restarted_mid_run_is_survived_with_nothing_lost() {
    let broker = OwnBroker::start();
    let s = suffix();
    let k = Place::kafka_at(&broker.address);
    let files = tempdir();
    let wc = example(
        files.path(),
        "wordcount.toml",
        &["wordcount", "lines", "counts", "wordcount-dlq"],
        &s,
    );
    let (first, second) = (lines(1500, 23), lines(1500, 29));
    let lines_topic = format!("lines-{s}");
    let counts = format!("counts-{s}");
    k.topic(&lines_topic, 2);
    k.produce(&lines_topic, &first);
    // Its log tells what happened if the test fails.
    let log_path = files.path().join("weir.log");
    let mut instance = k
        .weir()
        .env("WEIR_LOG", "warn,weir::kafka=info")
        .arg("run")
        .arg(&wc)
        .args(["--quiet", "--batch", "50"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(300);
    let out_now = |k: &Place| {
        if run(k.weir().args(["topic", "describe", &counts]))
            .status
            .success()
        {
            k.consume(&counts)
        } else {
            Vec::new()
        }
    };
    while out_now(&k).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no counts before the restart; weir run said:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.restart();
    k.produce(&lines_topic, &second);
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let want = model_counts(&all);
    let got = loop {
        assert!(
            Instant::now() < deadline,
            "the counts did not reach the model; weir run said:\n{}",
            log()
        );
        assert!(
            instance.try_wait().unwrap().is_none(),
            "weir run stopped when the broker restarted; it said:\n{}",
            log()
        );
        let out = out_now(&k);
        if latest(&out) == want {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    instance.kill().unwrap();
    instance.wait().unwrap();
    assert_once(&got, &want);
}
