//! Live streams on the embedded log: `weir run` owns the data directory and
//! serves the CLI (produce, consume, topic, state) over `DIR/weir.sock`
//! while its pipeline picks up what is produced.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{assert_lines, guest, run, tempdir, weir};

/// A data directory and its commands.
pub(crate) struct Data {
    _tmp: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

impl Data {
    pub(crate) fn new() -> Self {
        let tmp = tempdir();
        let path = tmp.path().join("data");
        Data { _tmp: tmp, path }
    }

    pub(crate) fn weir(&self) -> Command {
        let mut c = weir();
        c.env("WEIR_DATA", &self.path);
        c.env("WEIR_MODULE_PATH", guest("count").parent().unwrap());
        c
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let r = run(self.weir().args(args));
        assert!(r.status.success(), "weir {args:?}: {}", r.stderr);
        r.stdout
    }

    /// `weir run PIPELINE --until-caught-up --quiet`, which must succeed.
    pub(crate) fn run_caught_up(&self, pipeline: &Path) -> String {
        let file = pipeline.to_str().expect("a test's pipeline path is UTF-8");
        self.ok(&["run", "--until-caught-up", "--quiet", file])
    }

    /// `weir produce topic` from another process, with `lines` on stdin;
    /// returns its standard error.
    pub(crate) fn produce(&self, topic: &str, lines: &[String]) -> String {
        crate::util::feed(self.weir().args(["produce", topic]), lines)
    }

    /// `weir consume topic --from-beginning --follow` in the background;
    /// its stdout and stderr lines, as they come, on the channel.
    fn follow(&self, topic: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
        let mut child = self
            .weir()
            .args(["consume", topic, "--from-beginning", "--follow"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        (child, rx)
    }

    fn socket(&self) -> PathBuf {
        self.path.join("weir.sock")
    }

    /// Starts `weir run pipeline` in the background and waits (bounded) for
    /// it to serve its socket.
    pub(crate) fn start(&self, pipeline: &Path) -> Owner {
        let child = self
            .weir()
            .args(["run", "--quiet"])
            .arg(pipeline)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut owner = Owner { child };
        let sock = self.socket();
        until("the owner's socket", || {
            if let Ok(Some(st)) = owner.child.try_wait() {
                panic!("weir run exited early: {st}");
            }
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        owner
    }

    /// Every record of `topic` read by a new process, as (key, value).
    fn records(&self, topic: &str) -> Vec<(String, String)> {
        self.ok(&["consume", topic, "--from-beginning"])
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["key"].as_str().unwrap_or_default().to_string(),
                    v["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

/// A `weir run` in the background; killed if the test ends early.
pub(crate) struct Owner {
    child: Child,
}

impl Owner {
    /// Ctrl-C, then waits for it to exit; returns its standard error.
    pub(crate) fn interrupt(mut self) -> String {
        let st = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).unwrap();
        }
        let st = self.child.wait().unwrap();
        assert!(st.success(), "weir run: {st}: {err}");
        err
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 10 ms for at most 20 s.
#[track_caller]
pub(crate) fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn map_pipeline(dir: &Path) -> PathBuf {
    let file = dir.join("upper.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"upper\"\ninput = \"in\"\noutput = \"out\"\n[[steps]]\nname = \"case\"\nkind = \"map\"\nmodule = {:?}\n",
            guest("uppercase")
        ),
    )
    .unwrap();
    file
}

fn lines(from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| format!(r#"{{"key":"k{i}","value":"v{i}"}}"#))
        .collect()
}

#[test]
fn a_running_pipeline_takes_records_produced_from_other_processes_exactly_once() {
    let d = Data::new();
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    let owner = d.start(&map_pipeline(d._tmp.path()));

    // A follower, started before anything is produced.
    let (mut follow, rx) = d.follow("out");

    // Three produces, each a process of its own, while the pipeline runs:
    // each is in the log when it returns, and reaches the output.
    let mut want = BTreeSet::new();
    for round in 0..3 {
        let batch = lines(round * 40, round * 40 + 40);
        let err = d.produce("in", &batch);
        assert_lines("produce", &err, "produced 40 records to in");
        for i in round * 40..round * 40 + 40 {
            want.insert((format!("k{i}"), format!("V{i}")));
        }
        until("the outputs of the produce", || {
            d.records("out").len() == want.len()
        });
    }
    let got = d.records("out");
    assert_eq!(got.len(), 120, "every record once");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);

    // The follower saw the same records, as they came.
    let followed = followed_records(&rx, 120).unwrap_or_else(|(n, said)| {
        panic!("the follower stalled after {n} of 120 records; it said {said:?}")
    });
    assert_eq!(followed, want);
    let _ = follow.kill();
    let _ = follow.wait();

    // topic describe and list, served by the owner.
    let r = run(d.weir().args(["topic", "describe", "in"]));
    assert!(r.status.success(), "{}", r.stderr);
    // Each partition's records, read from offset 0: its end offset.
    let per: Vec<usize> = (0..2)
        .map(|p| {
            let part = p.to_string();
            d.ok(&["consume", "in", "--from-beginning", "--partition", &part])
                .lines()
                .count()
        })
        .collect();
    assert_eq!(per[0] + per[1], 120);
    assert_lines(
        "topic describe",
        &r.stdout,
        &format!(
            "topic: in\npartitions: 2\ncompacted: false\npartition 0: start offset 0, end offset {}\npartition 1: start offset 0, end offset {}",
            per[0], per[1]
        ),
    );
    assert_lines(
        "topic list",
        &d.ok(&["topic", "list"]),
        "in\t2 partitions\nout\t2 partitions\nupper-dead-letters\t2 partitions",
    );

    let err = owner.interrupt();
    assert!(err.contains("upper: 120 records in, 120 out"), "{err}");
    assert!(!d.socket().exists(), "the socket is removed on exit");
    // With no owner, the CLI opens the directory itself.
    assert_eq!(d.records("out").len(), 120);
}

/// The (key, value) of records a follower printed.
type Followed = BTreeSet<(String, String)>;

/// A follower that stopped short: how many records it printed, and the
/// other lines it said.
type Stalled = (usize, Vec<String>);

/// The (key, value) of the first `n` records a follower prints within 20 s;
/// else how many it printed and the other lines it said.
fn followed_records(rx: &std::sync::mpsc::Receiver<String>, n: usize) -> Result<Followed, Stalled> {
    let (records, _) = followed_lines(rx, n)?;
    Ok(records
        .iter()
        .map(|v| {
            (
                v["key"].as_str().unwrap().to_string(),
                v["value"].as_str().unwrap().to_string(),
            )
        })
        .collect())
}

/// The first `n` records a follower prints within 20 s, as it printed them,
/// and the other lines it said meanwhile; else how many it printed and the
/// other lines.
fn followed_lines(
    rx: &std::sync::mpsc::Receiver<String>,
    n: usize,
) -> Result<(Vec<Value>, Vec<String>), Stalled> {
    let mut records = Vec::new();
    let mut said = Vec::new();
    let started = Instant::now();
    while records.len() < n {
        let left = Duration::from_secs(20).saturating_sub(started.elapsed());
        let Ok(l) = rx.recv_timeout(left) else {
            return Err((records.len(), said));
        };
        match serde_json::from_str::<Value>(&l) {
            Ok(v) => records.push(v),
            Err(_) => said.push(l),
        }
    }
    Ok((records, said))
}

/// Records by partition, each partition's as (offset, key, value) in the
/// order given.
type ByPartition = BTreeMap<u64, Vec<(u64, String, String)>>;

fn by_partition(records: &[Value]) -> ByPartition {
    let mut by = ByPartition::new();
    for v in records {
        by.entry(v["partition"].as_u64().unwrap())
            .or_default()
            .push((
                v["offset"].as_u64().unwrap(),
                v["key"].as_str().unwrap().to_string(),
                v["value"].as_str().unwrap().to_string(),
            ));
    }
    by
}

/// Followers from the beginning, started while small produces land one
/// partition at a time (each of the first eight into an empty partition),
/// each print every record exactly once, each partition's in offset order:
/// what a consume prints after the fact. (A follower that started as a
/// commit landed in an empty partition used to skip that commit and then
/// wait for ever; `cli::log_cmds::records::tests` forces that race.)
#[test]
fn followers_started_while_small_produces_land_print_every_record_once_in_offset_order() {
    let d = Data::new();
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    d.ok(&["topic", "create", "many", "--partitions", "8"]);
    let _owner = d.start(&map_pipeline(d._tmp.path()));
    let mut followers = Vec::new();
    for i in 0..24 {
        if i % 6 == 0 {
            followers.push(d.follow("many"));
        }
        let part = (i % 8).to_string();
        let err = crate::util::feed(
            d.weir().args(["produce", "many", "--partition", &part]),
            &lines(i * 5, i * 5 + 5),
        );
        assert_lines("produce", &err, "produced 5 records to many");
    }
    let all: Vec<Value> = d
        .ok(&["consume", "many", "--from-beginning"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want = by_partition(&all);
    assert_eq!(want.len(), 8, "every partition has records");
    for (p, records) in &want {
        let offsets: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert_eq!(offsets, (0..15).collect::<Vec<u64>>(), "partition {p}");
    }
    for (i, (follow, rx)) in followers.into_iter().enumerate() {
        let (got, said) = followed_lines(&rx, 120).unwrap_or_else(|(n, said)| {
            panic!("follower {i} stalled after {n} of 120 records; it said {said:?}")
        });
        // Ctrl-C: it ends, and nothing more comes (no record twice).
        let follow = Owner { child: follow };
        follow.interrupt();
        let mut more = Vec::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(20)) {
            more.push(l);
        }
        assert_eq!((said, more), (vec![], vec![]), "follower {i} said");
        assert_eq!(by_partition(&got), want, "follower {i}");
    }
}

/// A follower started before its topic exists says it waits for it and
/// then prints what reaches it: here, the output topic of a pipeline started
/// after the follower.
#[test]
fn a_follower_started_before_its_topic_exists_waits_for_it() {
    let d = Data::new();
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    let (mut follow, rx) = d.follow("out");
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a line from the follower")
    };
    assert_eq!(next(), "waiting for topic out to be created");
    let owner = d.start(&map_pipeline(d._tmp.path()));
    d.produce("in", &lines(0, 3));
    let mut got = BTreeSet::new();
    while got.len() < 3 {
        let v: Value = serde_json::from_str(&next()).unwrap();
        got.insert(v["value"].as_str().unwrap().to_string());
    }
    assert_eq!(got, ["V0", "V1", "V2"].map(String::from).into());
    let _ = follow.kill();
    let _ = follow.wait();
    drop(owner);
}

/// Ctrl-C ends a follower served by the owner (exit 0, as without an
/// owner), here while it waits for a topic that is not there; the owner
/// runs on.
#[test]
fn ctrl_c_ends_a_follower_served_by_the_owner() {
    let d = Data::new();
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    let owner = d.start(&map_pipeline(d._tmp.path()));
    let mut follow = d
        .weir()
        .args(["consume", "later", "--follow"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(follow.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert_eq!(line, "waiting for topic later to be created\n");
    let st = Command::new("kill")
        .args(["-INT", &follow.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let started = Instant::now();
    let exited = loop {
        if let Some(st) = follow.try_wait().unwrap() {
            break Some(st);
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = follow.kill();
            let _ = follow.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        exited.is_some_and(|st| st.success()),
        "the follower after Ctrl-C: {exited:?}"
    );
    // The owner still serves.
    d.produce("in", &lines(0, 1));
    owner.interrupt();
}

/// The owner's threads serving the CLI (`weir-client`).
fn client_threads(owner: &Owner) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", owner.child.id())) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "weir-client")
        })
        .count()
}

/// A follower that goes away ends its thread in the owner even while the
/// log is busy with other topics (records produced all along): one that
/// waited for a topic not there and one that followed a quiet topic.
#[test]
fn a_follower_that_goes_away_ends_its_thread_in_the_owner_while_the_log_is_busy() {
    let d = Data::new();
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    d.ok(&["topic", "create", "quiet"]);
    let owner = d.start(&map_pipeline(d._tmp.path()));
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let producer = {
        let (busy, path) = (busy.clone(), d.path.clone());
        std::thread::spawn(move || {
            let d = Data {
                _tmp: tempdir(),
                path,
            };
            let mut i = 0;
            while busy.load(std::sync::atomic::Ordering::SeqCst) {
                d.produce("in", &lines(i, i + 1));
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    d.produce("quiet", &lines(0, 1));
    for (topic, first) in [
        ("later", "waiting for topic later to be created"),
        ("quiet", "\"value\":\"v0\""),
    ] {
        // Its first line says it is being served.
        let (mut follow, rx) = d.follow(topic);
        let line = rx.recv_timeout(Duration::from_secs(20));
        let _ = follow.kill();
        let _ = follow.wait();
        let line = line.expect("a line from the follower");
        assert!(line.contains(first), "{line}");
        // Producers come and go; the follower's thread must end.
        until("the owner to end the thread of a follower gone", || {
            client_threads(&owner) == 0
        });
    }
    busy.store(false, std::sync::atomic::Ordering::SeqCst);
    producer.join().unwrap();
    owner.interrupt();
}

#[test]
fn state_get_and_a_new_topic_are_served_by_the_running_owner() {
    let d = Data::new();
    d.ok(&["topic", "create", "lines", "--partitions", "2"]);
    let pipeline = crate::util::root().join("examples/pipelines/wordcount.toml");
    let owner = d.start(&pipeline);
    d.produce(
        "lines",
        &[
            r#"{"value":"live streams stream live"}"#.to_string(),
            r#"{"value":"live"}"#.to_string(),
        ],
    );
    until("the count of live", || {
        let r = run(d
            .weir()
            .args(["state", "get", "wordcount", "count", "live"]));
        r.status.success() && r.stdout.trim() == r#"{"key":"live","value":3}"#
    });
    let r = run(d
        .weir()
        .args(["state", "get", "wordcount", "count", "absent"]));
    assert!(!r.status.success());
    assert_lines(
        "state get of a key with no state",
        &r.stderr,
        r#"no state for key "absent" in step count of pipeline wordcount"#,
    );
    // The walkthrough's form, with the data directory first.
    let dir = d.path.display().to_string();
    let r = run(d
        .weir()
        .args(["state", "get", &dir, "wordcount", "count", "live"]));
    assert_lines(
        "state get DATA PIPELINE STEP KEY",
        &r.stdout,
        r#"{"key":"live","value":3}"#,
    );
    let r = run(d.weir().args(["state", "get", "wordcount", "cnt", "live"]));
    assert_eq!(r.status.code(), Some(1));
    assert_lines(
        "state get of a step with no state",
        &r.stderr,
        "pipeline wordcount has no state for a step cnt; its steps with state: count",
    );
    let r = run(d.weir().args(["state", "scan", "wordcnt", "count"]));
    assert_eq!(r.status.code(), Some(1));
    assert_lines(
        "state scan of an unknown pipeline",
        &r.stderr,
        &format!(
            "pipeline wordcnt has no state in {dir} (is the name right? it is the pipeline file's `name`)"
        ),
    );
    assert_lines(
        "topic create",
        &d.ok(&["topic", "create", "more", "--partitions", "3"]),
        "created topic more with 3 partitions",
    );
    let r = run(d.weir().args(["produce", "nosuch"]).stdin(Stdio::null()));
    assert!(!r.status.success());
    assert_lines(
        "produce to a missing topic",
        &r.stderr,
        &format!(
            "error: no topic named nosuch in {} (topics: counts, lines, more, wordcount-count-repartition, wordcount-dlq); create it with `weir topic create nosuch --partitions N`",
            d.path.display()
        ),
    );
    // A reset of the pipeline the owner runs is refused, and changes
    // nothing; one of another pipeline is served by the owner.
    let r = run(d.weir().args(["reset", "wordcount"]));
    assert_eq!(r.status.code(), Some(1));
    assert_lines(
        "reset while running",
        &r.stderr,
        &format!(
            "error: pipeline wordcount runs in the weir process that owns {}: stop it first (`weir pipeline stop wordcount` when the daemon runs it)",
            d.path.display()
        ),
    );
    let r = run(d.weir().args(["reset", "stocks"]));
    assert_eq!(r.status.code(), Some(1));
    assert_lines(
        "reset of a pipeline with nothing, through the owner",
        &r.stderr,
        &format!(
            "pipeline stocks has no positions, state or repartition topics in {} (is the name right? it is the pipeline file's `name`)",
            d.path.display()
        ),
    );
    let r = run(d
        .weir()
        .args(["state", "get", "wordcount", "count", "live"]));
    assert_eq!(r.stdout.trim(), r#"{"key":"live","value":3}"#);
    owner.interrupt();
}

#[test]
fn a_client_without_permission_on_the_owner_is_refused() {
    let d = Data::new();
    d.ok(&["topic", "create", "in", "--partitions", "1"]);
    let owner = d.start(&map_pipeline(d._tmp.path()));
    // A copy of weir that user nobody may run.
    let bin = tempdir();
    let exe = bin.path().join("weir");
    std::fs::copy(env!("CARGO_BIN_EXE_weir"), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["produce", "in", "--data"])
        .arg(&d.path)
        .stdin(Stdio::null()));
    assert!(!r.status.success());
    assert_lines(
        "produce as nobody",
        &r.stderr,
        &format!(
            "error: permission denied on {}: the data directory {} belongs to another user; run weir as the user who owns it (or give another --data)",
            d.socket().display(),
            d.path.display()
        ),
    );
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    owner.interrupt();
}

#[test]
fn an_owner_killed_with_sigkill_leaves_a_directory_the_next_produce_opens() {
    let d = Data::new();
    d.ok(&["topic", "create", "in", "--partitions", "2"]);
    let mut owner = d.start(&map_pipeline(d._tmp.path()));
    let err = d.produce("in", &lines(0, 25));
    assert_lines("produce", &err, "produced 25 records to in");
    owner.child.kill().unwrap();
    owner.child.wait().unwrap();
    assert!(d.socket().exists(), "a killed owner leaves its socket");

    // The stale socket refuses connections: produce opens the directory.
    let err = d.produce("in", &lines(25, 50));
    assert_lines("produce", &err, "produced 25 records to in");
    let got: BTreeSet<_> = d.records("in").into_iter().collect();
    let want: BTreeSet<_> = (0..50)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    assert_eq!(got, want);

    // A new owner replaces the stale socket and carries on.
    let owner = d.start(&map_pipeline(d._tmp.path()));
    until("every output", || d.records("out").len() == 50);
    let out: BTreeSet<_> = d.records("out").into_iter().collect();
    let want: BTreeSet<_> = (0..50)
        .map(|i| (format!("k{i}"), format!("V{i}")))
        .collect();
    assert_eq!(out, want);
    owner.interrupt();
}
