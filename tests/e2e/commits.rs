//! Commits at scale (issue 14): a task runs several batches into one
//! commit (the commit interval), reads state through a bounded cache, and
//! emits an updated aggregate once per key per commit. Whatever the batch
//! size, commit interval and cache bound, the results are the same; a
//! failed commit, or a kill -9, between commits replays the uncommitted
//! batches and loses and repeats nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use weir::backend::memory::MemoryBackend;
use weir::backend::{Backend, Commit, TopicConfig};
use weir::pipeline::{self, RunOptions};
use weir::record::Record;
use weir::runtime::{Runtime, RuntimeOptions};

use crate::util::{guest, run, shared_cache, tempdir, weir};

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        cache_dir: Some(shared_cache()),
        ..RuntimeOptions::default()
    })
    .unwrap()
}

/// A count per key over `in` (one partition), into `out`.
fn count_pipeline(dir: &Path, interval: Option<&str>, cache: Option<u64>) -> pipeline::Pipeline {
    let file = dir.join("count.toml");
    let mut text = "name = \"counter\"\ninput = \"in\"\noutput = \"out\"\n".to_string();
    if let Some(i) = interval {
        text.push_str(&format!("commit_interval = {i:?}\n"));
    }
    if let Some(c) = cache {
        text.push_str(&format!("cache_max_bytes = {c}\n"));
    }
    text.push_str(&format!(
        "[[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = {:?}\n",
        guest("count").display().to_string()
    ));
    std::fs::write(&file, text).unwrap();
    pipeline::config::load(&file).unwrap()
}

/// The keys of the input: `k0` .. `k6`, record `i` keyed
/// `k((i*i + i/3) % 7)`.
fn key_of(i: u64) -> String {
    format!("k{}", (i * i + i / 3) % 7)
}

fn produce(backend: &dyn Backend, from: u64, to: u64) {
    let topic = backend.topic("in").unwrap().unwrap();
    let mut c = Commit::default();
    for i in from..to {
        let r = Record {
            offset: 0,
            timestamp: 1_000 + i as i64,
            key: Some(key_of(i).into_bytes()),
            value: Some(format!("r{i}").into_bytes()),
            headers: Vec::new(),
        };
        c.append(&topic, 0, &r);
    }
    backend.commit(c).unwrap();
}

/// `key=value` of every output, in order.
fn outputs(backend: &dyn Backend) -> Vec<String> {
    let Some(t) = backend.topic("out").unwrap() else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for p in 0..t.config.partitions {
        for s in backend.read(&t, p, 0, usize::MAX).unwrap() {
            let r = s.record().unwrap();
            all.push(format!(
                "{}={}",
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()),
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
            ));
        }
    }
    all
}

/// The count of every key over records `0..n`.
fn model(n: u64) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..n {
        *m.entry(key_of(i)).or_default() += 1;
    }
    m.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

/// The last output of every key, checking on the way that a key's counts
/// only grow (an output repeated or lost would break it or the total).
fn last_per_key(outs: &[String]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for o in outs {
        let (k, v) = o.split_once('=').unwrap();
        if let Some(prev) = m.get(k) {
            assert!(
                prev.parse::<u64>().unwrap() < v.parse::<u64>().unwrap(),
                "{k}: {prev} then {v} in {outs:?}"
            );
        }
        m.insert(k.to_string(), v.to_string());
    }
    m
}

fn run_count(
    backend: &MemoryBackend,
    pipeline: &pipeline::Pipeline,
    batch: usize,
) -> pipeline::Summary {
    let backend: Arc<dyn Backend> = Arc::new(backend.clone());
    let options = RunOptions {
        until_caught_up: true,
        batch,
        ..RunOptions::default()
    };
    pipeline::run(
        backend,
        pipeline,
        &runtime(),
        &options,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap()
}

fn memory_with_input(n: u64) -> MemoryBackend {
    let memory = MemoryBackend::new();
    memory
        .create_topic("in", TopicConfig::partitions(1))
        .unwrap();
    produce(&memory, 0, n);
    memory
}

#[test]
fn emit_update_is_once_per_key_per_commit_and_the_last_is_the_final_state() {
    let dir = tempdir();
    // A commit interval longer than the run: the task commits when it has
    // read everything (it idles), once for all of its batches.
    let pipeline = count_pipeline(dir.path(), Some("1h"), None);
    let memory = memory_with_input(40);
    let summary = run_count(&memory, &pipeline, 3);
    assert_eq!(summary.records_in, 40);
    assert_eq!(
        outputs(&memory),
        ["k3=9", "k5=8", "k4=4", "k6=2", "k2=4", "k0=7", "k1=6"],
        "one output per key, in the order of last update (as Kafka Streams' cache flushes)"
    );
    assert_eq!(last_per_key(&outputs(&memory)), model(40));
    // A second run over more input: one more output per key it updated.
    produce(&memory, 40, 45);
    run_count(&memory, &pipeline, 2);
    assert_eq!(outputs(&memory)[7..], ["k3=10", "k0=9", "k1=7", "k4=5"]);
    assert_eq!(last_per_key(&outputs(&memory)), model(45));
}

#[test]
fn a_cache_of_zero_bytes_emits_once_per_batch_as_before() {
    let dir = tempdir();
    let pipeline = count_pipeline(dir.path(), Some("1h"), Some(0));
    let memory = memory_with_input(12);
    run_count(&memory, &pipeline, 5);
    // Batches of 5: every key a batch updated, once, in order of last
    // update (Kafka Streams' uncached output less the superseded updates),
    // with its count after the batch.
    let mut expected = Vec::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for batch in (0..12u64).collect::<Vec<_>>().chunks(5) {
        let mut order = Vec::new();
        for &i in batch {
            *counts.entry(key_of(i)).or_default() += 1;
            order.retain(|k| *k != key_of(i));
            order.push(key_of(i));
        }
        expected.extend(order.iter().map(|k| format!("{k}={}", counts[k])));
    }
    assert_eq!(
        expected,
        [
            "k0=1", "k1=1", "k4=1", "k3=2", // records 0-4
            "k5=1", "k2=1", "k3=4", "k0=2", // 5-9
            "k5=3", // 10, 11
        ]
    );
    assert_eq!(outputs(&memory), expected);
}

#[test]
fn results_are_the_same_at_every_batch_size_commit_interval_and_cache_bound() {
    let dir = tempdir();
    let n = 300;
    let want = model(n);
    for interval in ["0ms", "1h"] {
        // No cache, one smaller than the key space (a few entries), and the
        // default.
        for cache in [Some(0), Some(300), None] {
            for batch in [1, 7, 500] {
                let pipeline = count_pipeline(dir.path(), Some(interval), cache);
                let memory = memory_with_input(n);
                run_count(&memory, &pipeline, batch);
                let outs = outputs(&memory);
                assert_eq!(
                    last_per_key(&outs),
                    want,
                    "interval {interval}, cache {cache:?}, batch {batch}"
                );
                if interval == "1h" && cache.is_none() {
                    // One commit: one output per key.
                    assert_eq!(outs.len(), 7, "batch {batch}: {outs:?}");
                }
            }
        }
    }
}

#[test]
fn a_failed_commit_of_several_batches_replays_them_and_loses_and_repeats_nothing() {
    let dir = tempdir();
    let pipeline = count_pipeline(dir.path(), Some("1h"), None);
    let memory = memory_with_input(40);
    // The one commit of the run (all its batches) fails twice: the task
    // starts again from what was committed (nothing) each time.
    memory.fail_next_commit("disk full");
    memory.fail_next_commit("disk full");
    let summary = run_count(&memory, &pipeline, 3);
    // Every batch ran three times, and counted once.
    assert_eq!(summary.records_in, 120);
    assert_eq!(
        outputs(&memory),
        ["k3=9", "k5=8", "k4=4", "k6=2", "k2=4", "k0=7", "k1=6"]
    );
    assert_eq!(memory.commits(), 2, "the input, then the run's one commit");
}

/// A word-count pipeline file over `lines` (2 partitions), into `counts`.
fn wordcount_file(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("wordcount.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"wc\"\ninput = \"lines\"\noutput = \"counts\"\n\
             [[steps]]\nname = \"split\"\nkind = \"map\"\nmodule = {:?}\n\
             [[steps]]\nname = \"count\"\nkind = \"aggregate\"\nmodule = {:?}\n",
            guest("split-words").display().to_string(),
            guest("count").display().to_string()
        ),
    )
    .unwrap();
    file
}

/// `key=value` of every record of `topic`, read with `weir consume`.
fn consume(data: &Path, topic: &str) -> Vec<String> {
    let r = run(weir()
        .args(["consume", topic, "--from-beginning", "--data"])
        .arg(data));
    assert!(r.status.success(), "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let value = match &v["value"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{}={value}", v["key"].as_str().unwrap_or_default())
        })
        .collect()
}

#[test]
fn a_kill_9_between_commits_replays_the_uncommitted_batches_and_loses_and_repeats_nothing() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let lines = 30_000u64;
    let words = [
        "ash", "beech", "cedar", "elm", "fir", "hazel", "larch", "oak", "pine",
    ];
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut input = String::new();
    for i in 0..lines {
        let line: Vec<&str> = (0..8)
            .map(|j| words[((i * 5 + j * j * 3 + i / 7) % 9) as usize])
            .collect();
        for w in &line {
            *expected.entry(w.to_string()).or_default() += 1;
        }
        input.push_str(
            &serde_json::json!({"key": format!("l{i}"), "value": line.join(" ")}).to_string(),
        );
        input.push('\n');
    }
    let file = dir.path().join("lines.jsonl");
    std::fs::write(&file, input).unwrap();
    for topic in ["lines", "counts"] {
        let r = run(weir()
            .args(["topic", "create", topic, "--partitions", "2", "--data"])
            .arg(&data));
        assert!(r.status.success(), "{}", r.stderr);
    }
    let r = run(weir()
        .args(["produce", "lines", "--input"])
        .arg(&file)
        .arg("--data")
        .arg(&data));
    assert!(r.status.success(), "{}", r.stderr);
    let pipeline = wordcount_file(dir.path());
    // Batches of one line and a commit every 100 ms: each commit holds
    // many batches. Killed once its first commits are out.
    let mut child = weir()
        .arg("run")
        .arg(&pipeline)
        .args([
            "--quiet",
            "--batch",
            "1",
            "--commit-interval",
            "100ms",
            "--data",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bound = Instant::now() + Duration::from_secs(60);
    while consume(&data, "counts").is_empty() {
        assert!(Instant::now() < bound, "no output within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = consume(&data, "counts");
    // The rest, from what was committed.
    let r = run(weir()
        .arg("run")
        .arg(&pipeline)
        .args(["--quiet", "--until-caught-up", "--batch", "7", "--data"])
        .arg(&data));
    assert!(r.status.success(), "{}", r.stderr);
    let all = consume(&data, "counts");
    assert!(
        all.len() > at_kill.len(),
        "the killed run had not finished: the restart emitted more ({} then {})",
        at_kill.len(),
        all.len()
    );
    // What the killed run committed stays as it was: per key, its outputs
    // begin the outputs of the whole.
    let per_key = |outs: &[String]| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for o in outs {
            let (k, v) = o.split_once('=').unwrap();
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        m
    };
    let (before, after) = (per_key(&at_kill), per_key(&all));
    for (k, vs) in &before {
        assert_eq!(after[k][..vs.len()], vs[..], "{k}");
    }
    let expected: BTreeMap<String, String> = expected
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    assert_eq!(last_per_key(&all), expected);
    // The state holds the same counts.
    for (word, count) in &expected {
        let r = run(weir()
            .args(["state", "get", "wc", "count", word, "--data"])
            .arg(&data));
        assert!(r.status.success(), "{}", r.stderr);
        assert_eq!(
            r.stdout.trim(),
            format!("{{\"key\":\"{word}\",\"value\":{count}}}"),
            "{word}"
        );
    }
}

#[test]
fn status_shows_what_the_state_cache_holds() {
    let dir = tempdir();
    let pipeline = count_pipeline(dir.path(), Some("1h"), None);
    let memory = MemoryBackend::new();
    memory
        .create_topic("in", TopicConfig::partitions(1))
        .unwrap();
    let backend: Arc<dyn Backend> = Arc::new(memory.clone());
    let handle = pipeline::engine::start(
        backend,
        &pipeline,
        &runtime(),
        &RunOptions::default(),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    // Every key's count: new at the first round (nothing to keep), read
    // from the store at the second (noted), kept from the third on.
    let mut expected = 0;
    for round in 0..3u64 {
        produce(&memory, round * 21, round * 21 + 21);
        let started = Instant::now();
        // Until the round is committed.
        while memory.position("counter", "in", 0).unwrap() != Some(round * 21 + 21) {
            assert!(started.elapsed() < Duration::from_secs(60), "round {round}");
            std::thread::sleep(Duration::from_millis(5));
        }
        if round == 2 {
            // Each kept entry: one heap block of its key and value and 5
            // bytes of framing (jemalloc's size classes: 8, then multiples
            // of 16 up to 128, then four per doubling), and 40 bytes of the
            // set's.
            let heap = |n: usize| match n {
                0 => 0,
                1..=8 => 8,
                9..=128 => n.div_ceil(16) * 16,
                _ => n.div_ceil(n.next_power_of_two() / 8) * (n.next_power_of_two() / 8),
            };
            let prefix = weir::pipeline::keys::agg("counter", "count", 0, b"", 0);
            expected = memory
                .state()
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix[..prefix.len() - 12]))
                .map(|(k, v)| heap(4 + k.len() + 1 + v.len()) + 40)
                .sum::<usize>() as u64;
        }
    }
    let started = Instant::now();
    while handle.status().cache_bytes != expected {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cache {} bytes, expected {expected}",
            handle.status().cache_bytes
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(expected > 7 * 40, "{expected}");
    handle.stop();
    handle.wait().unwrap();
}

/// `weir bench --pipelines` runs word count over 100, 100,000 and 1,000,000
/// distinct words and prints, for each, how many of them the lines hold,
/// the rate, the outputs emitted and peak memory. With a commit interval
/// longer than the run, each of the two split tasks commits once, at its
/// end, so a count task commits at most twice: every word in the input is
/// emitted once or twice, never once per occurrence.
#[test]
fn bench_pipelines_counts_words_over_three_key_spaces_and_emits_each_at_most_once_per_commit() {
    let r = run(weir()
        .args([
            "bench",
            "--pipelines",
            "--records",
            "4000",
            "--commit-interval",
            "1h",
        ])
        .arg("--module")
        .arg(guest("uppercase")));
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    let rows = |header: &str| -> Vec<Vec<String>> {
        let lines: Vec<&str> = r.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == header)
            .unwrap_or_else(|| panic!("no table {header:?} in\n{}", r.stdout));
        lines[at + 2..]
            .iter()
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                l.split('|')
                    .map(|c| c.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .map(|c| c[1..c.len() - 1].to_vec())
            .collect()
    };
    let pipelines = rows(
        "| pipeline      | steps  | input records/s | peak memory | ratio to native | ratio to storage |",
    );
    let names: Vec<(&str, &str)> = pipelines
        .iter()
        .map(|c| (c[0].as_str(), c[1].as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("storage limit", "none"),
            ("map", "native"),
            ("map", "wasm"),
            ("wordcount", "native"),
            ("wordcount", "wasm"),
            ("bursts", "wasm"),
        ]
    );
    let words = rows(
        "| distinct words | in the input | lines/s | vs 100 words | outputs emitted | peak memory |",
    );
    assert_eq!(words.len(), 3, "{}", r.stdout);
    let number = |s: &str| -> f64 {
        s.trim_end_matches(" MB")
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {s:?}"))
    };
    // 1,000 lines of 8 words: 8,000 draws from N words hold about
    // N (1 - e^(-8000/N)) of them.
    for (row, n) in words.iter().zip([100.0, 100_000.0, 1_000_000.0]) {
        assert_eq!(number(&row[0]), n);
        let seen = number(&row[1]);
        let expected = n * (1.0 - (-8000.0 / n).exp());
        assert!(
            (seen - expected).abs() <= expected * 0.02,
            "{n} words: {seen} in the input, expected about {expected:.0}"
        );
        assert!(number(&row[2]) > 0.0, "{n} words: rate {}", row[2]);
        let outputs = number(&row[4]);
        assert!(
            outputs >= seen && outputs <= 2.0 * seen,
            "{n} words: {outputs} outputs for {seen} words in the input"
        );
        assert!(number(&row[5]) > 0.0, "{n} words: memory {}", row[5]);
    }
    assert_eq!(number(&words[0][1]), 100.0);
    assert_eq!(words[0][3], "1.00");
    assert!(
        r.stdout
            .contains("so its outputs lie between that and the 8000 words)"),
        "{}",
        r.stdout
    );
}
