//! `weir topic`, `produce` and `consume` against a real Apache Kafka broker:
//! the harness starts one (tests/kafka/broker.sh) once per test run and it
//! dies with the test binary. `WEIR_TEST_KAFKA=HOST:PORT` uses a running
//! broker instead.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::{assert_lines, root, run, tempdir, weir};

/// A broker for the whole run. Its script stops the broker when its stdin
/// reaches its end, which happens when this process exits (the pipe's write
/// end lives in a static that is never dropped), however it exits.
struct Broker {
    bootstrap: String,
    _script: Option<Mutex<Child>>,
}

static BROKER: OnceLock<Broker> = OnceLock::new();

/// The bootstrap address of the run's broker, starting it the first time.
pub fn brokers() -> &'static str {
    &BROKER
        .get_or_init(|| {
            if let Ok(bootstrap) = std::env::var("WEIR_TEST_KAFKA") {
                return Broker {
                    bootstrap,
                    _script: None,
                };
            }
            let mut child = Command::new("bash")
                .arg(root().join("tests/kafka/broker.sh"))
                .args(["run", "--stop-on-eof"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("bash runs tests/kafka/broker.sh");
            let stdout = child.stdout.take().expect("piped stdout");
            // The script bounds the broker's start itself; the first line
            // is the bootstrap address, or nothing if the script failed.
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("read the broker's address");
            let bootstrap = line.trim().to_string();
            assert!(
                bootstrap.starts_with("127.0.0.1:"),
                "tests/kafka/broker.sh did not start a broker (its errors are above); it printed {line:?}"
            );
            Broker {
                bootstrap,
                _script: Some(Mutex::new(child)),
            }
        })
        .bootstrap
}

/// A topic name no other test (or earlier run on a kept broker) uses.
pub(crate) fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{name}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// `weir` against the broker (and, for comparisons, an embedded data dir
/// that is never used unless --brokers is removed).
pub(crate) fn kweir(args: &[&str]) -> Command {
    let mut c = weir();
    c.args(args).args(["--brokers", brokers()]);
    c
}

pub(crate) fn ok(cmd: &mut Command) -> String {
    let r = run(cmd);
    assert!(
        r.status.success(),
        "{cmd:?} failed ({}): {}",
        r.status,
        r.stderr
    );
    r.stdout
}

/// Runs `cmd` with `input` on stdin; returns (success, stdout, stderr).
pub(crate) fn with_input(cmd: &mut Command, input: &str) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("weir ends");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kafka_topics_are_created_listed_described_and_deleted() {
    let plain = unique("plain");
    let table = unique("table");
    assert_eq!(
        ok(&mut kweir(&[
            "topic",
            "create",
            &plain,
            "--partitions",
            "3"
        ])),
        format!("created topic {plain} with 3 partitions\n")
    );
    assert_eq!(
        ok(&mut kweir(&[
            "topic",
            "create",
            &table,
            "--compacted",
            "--retention",
            "2h",
            "--retention-bytes",
            "1000000",
        ])),
        format!("created topic {table} with 1 partition\n")
    );
    let again = run(&mut kweir(&["topic", "create", &plain]));
    assert!(!again.status.success());
    assert_eq!(
        again.stderr,
        format!("error: topic {plain} already exists\n")
    );

    let listed = ok(&mut kweir(&["topic", "list"]));
    let mine: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with(&plain) || l.starts_with(&table))
        .collect();
    assert_eq!(
        mine,
        [
            format!("{plain}\t3 partitions"),
            format!("{table}\t1 partitions\tcompacted")
        ]
    );

    let (fine, _, err) = with_input(
        &mut kweir(&["produce", &plain, "--partition", "1"]),
        "{\"value\": \"a\", \"timestamp\": 5}\n{\"value\": \"b\", \"timestamp\": 6}\n",
    );
    assert!(fine, "{err}");
    // A record stamped 0 stays at 0 (librdkafka would stamp it with the
    // current time); one with no timestamp gets the current time, as
    // Kafka's clients give it.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (fine, _, err) = with_input(
        &mut kweir(&["produce", &plain, "--partition", "0"]),
        "{\"value\": \"zero\", \"timestamp\": 0}\n{\"value\": \"none\"}\n",
    );
    assert!(fine, "{err}");
    let got = ok(&mut kweir(&[
        "consume",
        &plain,
        "--from-beginning",
        "--partition",
        "0",
        "--max",
        "2",
    ]));
    let got: Vec<serde_json::Value> = got
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["value"], "zero");
    assert_eq!(got[0]["timestamp"], 0);
    assert_eq!(got[1]["value"], "none");
    let stamped = got[1]["timestamp"].as_i64().unwrap();
    assert!(stamped >= before, "{stamped} < {before}");
    assert_lines(
        "describe",
        &ok(&mut kweir(&["topic", "describe", &plain])),
        &format!(
            "topic: {plain}
             partitions: 3
             compacted: false
             partition 0: start offset 0, end offset 2
             partition 1: start offset 0, end offset 2
             partition 2: start offset 0, end offset 0"
        ),
    );
    assert_lines(
        "describe",
        &ok(&mut kweir(&["topic", "describe", &table])),
        &format!(
            "topic: {table}
             partitions: 1
             compacted: true
             retention: 2h
             retention bytes: 1000000
             partition 0: start offset 0, end offset 0"
        ),
    );

    for t in [&plain, &table] {
        assert_eq!(
            ok(&mut kweir(&["topic", "delete", t])),
            format!("deleted topic {t}\n")
        );
    }
    // Deletion spreads to the brokers' metadata shortly after.
    let start = Instant::now();
    loop {
        let listed = ok(&mut kweir(&["topic", "list"]));
        if !listed
            .lines()
            .any(|l| l.starts_with(&plain) || l.starts_with(&table))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "deleted topics still listed: {listed}"
        );
    }
    let gone = run(&mut kweir(&["topic", "describe", &plain]));
    assert!(!gone.status.success());
    let prefix = format!(
        "error: no topic named {plain} on Kafka at {} (topics: ",
        brokers()
    );
    let suffix = format!(
        "); create it with `weir topic create {plain} --partitions N --brokers {}`\n",
        brokers()
    );
    assert!(
        gone.stderr.starts_with(&prefix) && gone.stderr.ends_with(&suffix),
        "{}",
        gone.stderr
    );
}

/// Records with keys, JSON and string values, binary bytes, headers and
/// timestamps, and unkeyed ones (round-robin).
const RECORDS: &str = r#"{"key": "user-1", "value": {"level": "ERROR", "n": 1}, "headers": {"trace": "t1", "bin": {"b64": "AP8="}}, "timestamp": 1700000000000}
{"key": "user-2", "value": "plain text", "timestamp": 1700000000001}
{"key": "user-3", "value": null, "timestamp": 1700000000002}
{"key_b64": "/wAB", "value_b64": "/w==", "timestamp": 1700000000003}
{"value": "unkeyed one", "timestamp": 1700000000004}
{"value": "unkeyed two", "timestamp": 1700000000005}
{"key": "user-1", "value": [1, 2, 3], "timestamp": 1700000000006}
{"key": "kafka", "value": "hello", "headers": {"a": "1", "b": "2"}, "timestamp": 1700000000007}
"#;

#[test]
fn kafka_produce_then_consume_gives_what_the_embedded_log_gives() {
    let topic = unique("records");
    ok(&mut kweir(&[
        "topic",
        "create",
        &topic,
        "--partitions",
        "3",
    ]));
    let (fine, _, err) = with_input(&mut kweir(&["produce", &topic]), RECORDS);
    assert!(fine, "{err}");
    assert_eq!(err, format!("produced 8 records to {topic}\n"));
    let from_kafka = ok(&mut kweir(&["consume", &topic, "--from-beginning"]));

    // The same input on the embedded log.
    let dir = tempdir();
    let data = dir.path().join("data");
    let local = |args: &[&str]| {
        let mut c = weir();
        c.args(args).env("WEIR_DATA", &data);
        c
    };
    ok(&mut local(&[
        "topic",
        "create",
        &topic,
        "--partitions",
        "3",
    ]));
    let (fine, _, err) = with_input(&mut local(&["produce", &topic]), RECORDS);
    assert!(fine, "{err}");
    let from_log = ok(&mut local(&["consume", &topic, "--from-beginning"]));
    assert_lines("Kafka vs the embedded log", &from_kafka, &from_log);

    // And exactly these: murmur2 partitions, offsets, every field.
    assert_lines(
        "consumed from Kafka",
        &from_kafka,
        r#"{"partition":0,"offset":0,"key_b64":"/wAB","value_b64":"/w==","timestamp":1700000000003}
           {"partition":0,"offset":1,"key":null,"value":"unkeyed one","timestamp":1700000000004}
           {"partition":1,"offset":0,"key":null,"value":"unkeyed two","timestamp":1700000000005}
           {"partition":1,"offset":1,"key":"kafka","value":"hello","headers":{"a":"1","b":"2"},"timestamp":1700000000007}
           {"partition":2,"offset":0,"key":"user-1","value":{"level":"ERROR","n":1},"headers":{"trace":"t1","bin":{"b64":"AP8="}},"timestamp":1700000000000}
           {"partition":2,"offset":1,"key":"user-2","value":"plain text","timestamp":1700000000001}
           {"partition":2,"offset":2,"key":"user-3","value":null,"timestamp":1700000000002}
           {"partition":2,"offset":3,"key":"user-1","value":[1,2,3],"timestamp":1700000000006}"#,
    );

    // One partition, and --max.
    assert_lines(
        "partition 2, at most 2",
        &ok(&mut kweir(&[
            "consume",
            &topic,
            "--from-beginning",
            "--partition",
            "2",
            "--max",
            "2",
        ])),
        r#"{"partition":2,"offset":0,"key":"user-1","value":{"level":"ERROR","n":1},"headers":{"trace":"t1","bin":{"b64":"AP8="}},"timestamp":1700000000000}
           {"partition":2,"offset":1,"key":"user-2","value":"plain text","timestamp":1700000000001}"#,
    );
    // Without --from-beginning there is nothing new: it ends at once.
    assert_eq!(ok(&mut kweir(&["consume", &topic])), "");
}

#[test]
fn kafka_refuses_a_record_stamped_hours_ahead_and_the_error_names_its_line() {
    let topic = unique("future");
    ok(&mut kweir(&["topic", "create", &topic]));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let input = format!(
        "{{\"value\": \"fine\", \"timestamp\": {now}}}\n{{\"value\": \"too late\", \"timestamp\": {}}}\n{{\"value\": \"fine too\", \"timestamp\": 5}}\n",
        now + 3 * 3_600_000
    );
    let (fine, _, err) = with_input(&mut kweir(&["produce", &topic]), &input);
    assert!(!fine);
    assert_eq!(
        err,
        format!(
            "error: stdin:2: Kafka refused the record: Broker: Invalid timestamp\nproduced 2 records to {topic}\nerror: Kafka refused 1 record of stdin\n"
        )
    );
    let values: Vec<String> = ok(&mut kweir(&["consume", &topic, "--from-beginning"]))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["value"].to_string())
        .collect();
    assert_eq!(values, ["\"fine\"", "\"fine too\""]);
}

#[test]
fn kafka_consume_follow_sees_a_record_produced_after_it_started() {
    let topic = unique("follow");
    ok(&mut kweir(&[
        "topic",
        "create",
        &topic,
        "--partitions",
        "2",
    ]));
    let produce = |line: &str| {
        let (fine, _, err) = with_input(&mut kweir(&["produce", &topic]), line);
        assert!(fine, "{err}");
    };
    produce("{\"key\": \"a\", \"value\": \"before\", \"timestamp\": 1}\n");
    let mut follower = kweir(&["consume", &topic, "--from-beginning", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir runs");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("a line")).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a line from consume --follow within 30 s")
    };
    // The record from before proves it is reading; the next one comes after.
    assert_eq!(
        next(),
        r#"{"partition":0,"offset":0,"key":"a","value":"before","timestamp":1}"#
    );
    produce("{\"key\": \"a\", \"value\": \"after\", \"timestamp\": 2}\n");
    assert_eq!(
        next(),
        r#"{"partition":0,"offset":1,"key":"a","value":"after","timestamp":2}"#
    );
    follower.kill().expect("stop the follower");
    follower.wait().expect("the follower ends");
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
}

#[test]
fn kafka_that_is_down_gives_an_error_naming_the_brokers_at_once() {
    let down = format!("127.0.0.1:{}", closed_port());
    for args in [
        &["topic", "list"][..],
        &["topic", "create", "t", "--partitions", "2"],
        &["produce", "t"],
        &["consume", "t", "--from-beginning"],
    ] {
        let start = Instant::now();
        let (fine, out, err) = with_input(weir().args(args).args(["--brokers", &down]), "");
        assert!(!fine);
        assert_eq!(out, "");
        assert_eq!(
            err,
            format!(
                "error: cannot reach Kafka at {down}: {down}/bootstrap: Connect to ipv4#{down} failed: Connection refused\n"
            ),
            "weir {args:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "weir {args:?} took {:?}",
            start.elapsed()
        );
    }
    // librdkafka properties pass through, and a wrong one is named.
    let r = run(weir().args([
        "topic",
        "list",
        "--brokers",
        &down,
        "--kafka-config",
        "no.such=1",
    ]));
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot make a Kafka consumer for {down}: Client config error: No such configuration property: \"no.such\" no.such 1\n"
        )
    );
    // WEIR_BROKERS names it as well as --brokers.
    let r = run(weir().args(["topic", "list"]).env("WEIR_BROKERS", &down));
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot reach Kafka at {down}: {down}/bootstrap: Connect to ipv4#{down} failed: Connection refused\n"
        )
    );
}

#[test]
fn kafka_consume_reads_committed_records_and_does_not_wait_for_an_open_transaction() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

    let topic = unique("txn");
    ok(&mut kweir(&["topic", "create", &topic]));
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", unique("weir-test-txn"))
        .create()
        .unwrap();
    let t = Duration::from_secs(30);
    producer.init_transactions(t).unwrap();
    let send = |value: &str| {
        producer
            .send(
                BaseRecord::<str, str>::to(&topic)
                    .key("k")
                    .payload(value)
                    .timestamp(1000),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    };
    producer.begin_transaction().unwrap();
    send("committed");
    producer.commit_transaction(t).unwrap();
    producer.begin_transaction().unwrap();
    send("aborted");
    producer.flush(t).unwrap();
    producer.abort_transaction(t).unwrap();
    producer.begin_transaction().unwrap();
    send("open");
    producer.flush(t).unwrap();

    // read_committed: the committed record only; the open transaction's
    // record is past the end as of the start, so consume does not wait.
    assert_lines(
        "read_committed",
        &ok(&mut kweir(&["consume", &topic, "--from-beginning"])),
        r#"{"partition":0,"offset":0,"key":"k","value":"committed","timestamp":1000}"#,
    );
    // Offsets 1 and 3 are the transaction markers.
    assert_lines(
        "read_uncommitted",
        &ok(&mut kweir(&[
            "consume",
            &topic,
            "--from-beginning",
            "--read-uncommitted",
        ])),
        r#"{"partition":0,"offset":0,"key":"k","value":"committed","timestamp":1000}
           {"partition":0,"offset":2,"key":"k","value":"aborted","timestamp":1000}
           {"partition":0,"offset":4,"key":"k","value":"open","timestamp":1000}"#,
    );
    producer.commit_transaction(t).unwrap();
    assert_lines(
        "read_committed after the commit",
        &ok(&mut kweir(&["consume", &topic, "--from-beginning"])),
        r#"{"partition":0,"offset":0,"key":"k","value":"committed","timestamp":1000}
           {"partition":0,"offset":4,"key":"k","value":"open","timestamp":1000}"#,
    );
}

/// A task's records sent ahead of its commit (inside its open transaction)
/// are seen by read_committed readers only once the commit is; abandoned
/// (the task replays its batches), they are never seen.
#[test]
fn records_sent_ahead_of_a_commit_count_only_once_it_commits() {
    use weir::backend::{Backend, Commit, TaskId, TaskSpec};
    use weir::kafka::Connection;
    use weir::kafka::backend::KafkaBackend;
    use weir::pipeline::config::Guarantee;
    use weir::record::Record;

    let data = tempdir();
    let app = unique("ahead");
    let backend = KafkaBackend::open(
        Connection::new(brokers()),
        &app,
        Guarantee::ExactlyOnce,
        data.path(),
    )
    .unwrap();
    let name = unique("ahead-out");
    let topic = backend
        .create_topic(&name, weir::backend::TopicConfig::partitions(1))
        .unwrap();
    let task = TaskId {
        segment: 0,
        partition: 0,
    };
    backend
        .open_task(&TaskSpec {
            id: task,
            changelogs: Vec::new(),
            partitions: 1,
        })
        .unwrap();
    let appends = |values: &[&str]| {
        let mut c = Commit::default();
        for v in values {
            c.append(
                &topic,
                0,
                &Record {
                    key: Some(b"k".to_vec()),
                    value: Some(v.as_bytes().to_vec()),
                    timestamp: 1000,
                    ..Record::default()
                },
            );
        }
        c.appends
    };
    let consume = |committed: bool| {
        let mut args = vec!["consume", name.as_str(), "--from-beginning"];
        if !committed {
            args.push("--read-uncommitted");
        }
        ok(&mut kweir(&args))
    };

    let mut first = appends(&["thrown away"]);
    backend.send_ahead(task, &mut first).unwrap();
    assert!(first.is_empty(), "sent ahead, the records leave the commit");
    // Sent ahead is sent, not yet delivered: it shows once the broker has
    // it (read_uncommitted), before any commit.
    let sent = r#"{"partition":0,"offset":0,"key":"k","value":"thrown away","timestamp":1000}"#;
    crate::daemon::until("the record sent ahead (read_uncommitted)", || {
        !consume(false).trim().is_empty()
    });
    assert_lines(
        "sent ahead, before the commit (read_uncommitted)",
        &consume(false),
        sent,
    );
    assert_lines("sent ahead, not committed", &consume(true), "");
    backend.abandon(task).unwrap();
    assert_lines("abandoned", &consume(true), "");

    let mut ahead = appends(&["a", "b"]);
    backend.send_ahead(task, &mut ahead).unwrap();
    let commit = Commit {
        task: Some(task),
        appends: appends(&["c"]),
        ..Commit::default()
    };
    backend.commit(commit).unwrap();
    // Offset 1 is the aborted transaction's marker.
    assert_lines(
        "committed",
        &consume(true),
        r#"{"partition":0,"offset":2,"key":"k","value":"a","timestamp":1000}
           {"partition":0,"offset":3,"key":"k","value":"b","timestamp":1000}
           {"partition":0,"offset":4,"key":"k","value":"c","timestamp":1000}"#,
    );
    // A commit with nothing sent ahead opens its own transaction.
    let commit = Commit {
        task: Some(task),
        appends: appends(&["d"]),
        ..Commit::default()
    };
    backend.commit(commit).unwrap();
    assert_lines(
        "committed again",
        &consume(true),
        r#"{"partition":0,"offset":2,"key":"k","value":"a","timestamp":1000}
           {"partition":0,"offset":3,"key":"k","value":"b","timestamp":1000}
           {"partition":0,"offset":4,"key":"k","value":"c","timestamp":1000}
           {"partition":0,"offset":6,"key":"k","value":"d","timestamp":1000}"#,
    );
    backend.close_task(task);

    // A task's transaction stays open from its first batch to the commit:
    // a task commits at least every half transaction timeout, Weir's 60 s
    // or the pipeline's own.
    assert_eq!(backend.longest_commit_interval(), Duration::from_secs(30));
    let mut conn = Connection::new(brokers());
    conn.properties
        .push(("transaction.timeout.ms".into(), "20000".into()));
    let own_data = tempdir();
    let own = KafkaBackend::open(conn, &app, Guarantee::ExactlyOnce, own_data.path()).unwrap();
    assert_eq!(own.longest_commit_interval(), Duration::from_secs(10));
    let alo = KafkaBackend::open(
        Connection::new(brokers()),
        &unique("ahead-alo"),
        Guarantee::AtLeastOnce,
        data.path(),
    )
    .unwrap();
    assert_eq!(alo.longest_commit_interval(), Duration::MAX);
}
