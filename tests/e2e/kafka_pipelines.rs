//! Pipelines on a real Apache Kafka broker (the one `kafka::brokers` starts
//! once per run): the seed's examples give what they give on the embedded
//! log, state comes back from changelogs, a reset reprocesses, and
//! at-least-once counts as exactly-once does without faults. Faults (two
//! instances and a SIGKILL, a malformed record, a broker down or
//! restarted) are in kafka_faults.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::kafka::brokers;
use crate::util::{guest, root, run, tempdir, weir};

/// Names no other test (or earlier run on a kept broker) uses.
pub(crate) fn suffix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// One place a pipeline runs: Kafka (with a state directory) or the
/// embedded log (a data directory).
pub(crate) struct Place {
    kafka: Option<String>,
    pub(crate) dir: tempfile::TempDir,
}

impl Place {
    pub(crate) fn kafka() -> Place {
        Place::kafka_at(brokers())
    }

    pub(crate) fn kafka_at(brokers: &str) -> Place {
        Place {
            kafka: Some(brokers.to_string()),
            dir: tempdir(),
        }
    }

    pub(crate) fn embedded() -> Place {
        Place {
            kafka: None,
            dir: tempdir(),
        }
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn weir(&self) -> Command {
        let mut c = weir();
        c.env("WEIR_DATA", self.data());
        c.env("WEIR_MODULE_PATH", guest("count").parent().unwrap());
        if let Some(b) = &self.kafka {
            c.env("WEIR_BROKERS", b);
        }
        c
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let r = run(self.weir().args(args));
        assert!(r.status.success(), "weir {args:?} failed: {}", r.stderr);
        r.stdout
    }

    pub(crate) fn topic(&self, name: &str, partitions: u32) {
        self.ok(&[
            "topic",
            "create",
            name,
            "--partitions",
            &partitions.to_string(),
        ]);
    }

    pub(crate) fn produce(&self, topic: &str, lines: &[String]) {
        crate::util::feed(self.weir().args(["produce", topic]), lines);
    }

    pub(crate) fn run_pipeline(&self, file: &Path) -> String {
        let r = run(self
            .weir()
            .arg("run")
            .arg(file)
            .args(["--until-caught-up", "--quiet"]));
        assert!(r.status.success(), "weir run failed: {}", r.stderr);
        r.stderr
    }

    /// A topic's records without their offsets (Kafka's count transaction
    /// markers), in partition order.
    pub(crate) fn consume(&self, topic: &str) -> Vec<Value> {
        self.ok(&["consume", topic, "--from-beginning"])
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().shift_remove("offset");
                v
            })
            .collect()
    }
}

/// An example pipeline with its name and topics made unique.
pub(crate) fn example(dir: &Path, file: &str, topics: &[&str], s: &str) -> PathBuf {
    let mut text = std::fs::read_to_string(root().join("examples/pipelines").join(file)).unwrap();
    for t in topics {
        text = text.replace(&format!("\"{t}\""), &format!("\"{t}-{s}\""));
    }
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn lines(n: usize, seed: u64) -> Vec<String> {
    let vocab = [
        "river", "log", "stream", "table", "join", "window", "state", "offset", "the", "kafka",
        "wasm", "guest",
    ];
    let mut x = seed;
    (0..n)
        .map(|i| {
            let words: Vec<&str> = (0..6)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    vocab[(x >> 33) as usize % vocab.len()]
                })
                .collect();
            json!({"key": format!("line-{i}"), "value": words.join(" "), "timestamp": 1000 + i as i64})
                .to_string()
        })
        .collect()
}

pub(crate) fn model_counts(lines: &[String]) -> BTreeMap<String, Value> {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap();
        for w in v["value"].as_str().unwrap().split(' ') {
            if w != "the" {
                *m.entry(w.to_string()).or_default() += 1;
            }
        }
    }
    m.into_iter().map(|(k, n)| (k, json!(n))).collect()
}

/// The newest value per key, as a compacted topic keeps it.
pub(crate) fn latest(records: &[Value]) -> BTreeMap<String, Value> {
    records
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["value"].clone()))
        .collect()
}

pub(crate) fn sorted(mut v: Vec<Value>) -> Vec<String> {
    let mut out: Vec<String> = v.drain(..).map(|r| r.to_string()).collect();
    out.sort();
    out
}

#[test]
fn the_seeds_three_examples_give_on_kafka_what_they_give_on_the_embedded_log() {
    let s = suffix();
    let (k, e) = (Place::kafka(), Place::embedded());
    let files = tempdir();

    // Word count: a repartition, an aggregate emitting updates.
    let wc = example(
        files.path(),
        "wordcount.toml",
        &["wordcount", "lines", "counts", "wordcount-dlq"],
        &s,
    );
    let input = lines(400, 7);
    for p in [&k, &e] {
        p.topic(&format!("lines-{s}"), 2);
        p.produce(&format!("lines-{s}"), &input);
        p.run_pipeline(&wc);
    }
    let (kc, ec) = (
        k.consume(&format!("counts-{s}")),
        e.consume(&format!("counts-{s}")),
    );
    assert_eq!(latest(&kc), model_counts(&input));
    assert_eq!(latest(&kc), latest(&ec));
    // Both purge the repartition topic behind its reader: each partition
    // starts where it ends.
    for p in [&k, &e] {
        let text = p.ok(&[
            "topic",
            "describe",
            &format!("wordcount-{s}-count-repartition"),
        ]);
        let parts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("partition "))
            .collect();
        assert_eq!(parts.len(), 2, "{text}");
        for l in parts {
            let (_, offsets) = l.split_once(": start offset ").unwrap();
            let (start, end) = offsets.split_once(", end offset ").unwrap();
            assert_eq!(start, end.trim(), "{text}");
            assert_ne!(start, "0", "{text}");
        }
    }
    // On Kafka it is made as Kafka Streams makes its repartition topics:
    // kept until purged, in segments small enough for a purge to free them.
    let conn = weir::kafka::Connection::new(crate::kafka::brokers());
    let topic = format!("wordcount-{s}-count-repartition");
    let config = |key: &str| weir::kafka::admin::topic_config(&conn, &topic, key).unwrap();
    assert_eq!(config("retention.ms").as_deref(), Some("-1"));
    assert_eq!(config("segment.bytes").as_deref(), Some("52428800"));
    assert_eq!(config("segment.ms").as_deref(), Some("600000"));
    // The output topic keeps the cluster's defaults.
    let out = format!("counts-{s}");
    let out_config = weir::kafka::admin::topic_config(&conn, &out, "segment.bytes").unwrap();
    assert_eq!(out_config.as_deref(), Some("1073741824"));

    // Stock statistics: hopping windows over out-of-order trades, emitted on close.
    let st = example(
        files.path(),
        "stock-stats.toml",
        &["stock-stats", "trades"],
        &s,
    );
    let mut x: u64 = 99;
    let trades: Vec<String> = (0..300i64)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let t = ["ACME", "GLOB", "INIT"][(x >> 40) as usize % 3];
            let ask = 100.0 + ((x >> 20) % 400) as f64 * 0.25;
            let ts = 100_000 + i * 100 - ((x >> 50) % 1500) as i64;
            json!({"key": t, "value": {"ask": ask}, "timestamp": ts}).to_string()
        })
        .collect();
    for p in [&k, &e] {
        p.topic(&format!("trades-{s}"), 2);
        p.produce(&format!("trades-{s}"), &trades);
        p.run_pipeline(&st);
    }
    let (ks, es) = (
        k.consume(&format!("stock-stats-{s}")),
        e.consume(&format!("stock-stats-{s}")),
    );
    assert!(ks.len() > 50, "{} windows closed", ks.len());
    assert_eq!(sorted(ks), sorted(es));

    // Clickstream enrichment: a stream-table and a windowed stream-stream join.
    let cl = example(
        files.path(),
        "clicks.toml",
        &["clicks", "enriched-clicks", "profiles", "searches"],
        &s,
    );
    let users = ["ann", "bob", "cid", "dee"];
    let (mut profiles, mut searches, mut clicks) = (Vec::new(), Vec::new(), Vec::new());
    let mut x: u64 = 5;
    for i in 0..200i64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = users[(x >> 33) as usize % users.len()];
        let ts = 10_000 + i * 250;
        let rec = |v: Value| json!({"key": u, "value": v, "timestamp": ts}).to_string();
        match (x >> 45) % 4 {
            0 => profiles.push(rec(json!({"user": u, "tier": format!("tier-{}", i % 3)}))),
            1 => searches.push(rec(json!({"q": format!("query-{i}")}))),
            _ => clicks.push(rec(json!({"page": format!("/p/{i}")}))),
        }
    }
    for u in users {
        searches.push(
            json!({"key": u, "value": {"q": "closing"}, "timestamp": 10_000_000}).to_string(),
        );
    }
    for p in [&k, &e] {
        for (t, recs) in [
            ("profiles", &profiles),
            ("searches", &searches),
            ("clicks", &clicks),
        ] {
            p.topic(&format!("{t}-{s}"), 2);
            p.produce(&format!("{t}-{s}"), recs);
        }
        p.run_pipeline(&cl);
    }
    let (kj, ej) = (
        k.consume(&format!("enriched-clicks-{s}")),
        e.consume(&format!("enriched-clicks-{s}")),
    );
    assert!(
        kj.len() >= clicks.len(),
        "{} joined of {} clicks",
        kj.len(),
        clicks.len()
    );
    assert_eq!(sorted(kj), sorted(ej));
}

#[test]
fn a_state_store_deleted_on_disk_is_restored_from_its_changelog() {
    let s = suffix();
    let k = Place::kafka();
    let files = tempdir();
    let wc = example(
        files.path(),
        "wordcount.toml",
        &["wordcount", "lines", "counts", "wordcount-dlq"],
        &s,
    );
    let first = lines(200, 3);
    k.topic(&format!("lines-{s}"), 2);
    k.produce(&format!("lines-{s}"), &first);
    k.run_pipeline(&wc);
    // The local copy is gone (a new machine); the counts go on from the changelog.
    std::fs::remove_dir_all(k.data()).unwrap();
    let second = lines(150, 11);
    k.produce(&format!("lines-{s}"), &second);
    k.run_pipeline(&wc);
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(
        latest(&k.consume(&format!("counts-{s}"))),
        model_counts(&all)
    );
    // And the restored state answers queries as the embedded log's does.
    let scan = k.ok(&["state", "scan", &format!("wordcount-{s}"), "count"]);
    let state: BTreeMap<String, Value> = scan
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["key"].as_str().unwrap().to_string(), v["value"].clone())
        })
        .collect();
    assert_eq!(state, model_counts(&all));
}

/// `weir reset` on Kafka (the application reset tool): the consumer group,
/// the internal topics and the local state go; the next run counts the
/// same input again from nothing.
#[test]
fn a_pipeline_reset_on_kafka_reprocesses_its_input_from_the_start() {
    let s = suffix();
    let k = Place::kafka();
    let files = tempdir();
    let wc = example(
        files.path(),
        "wordcount.toml",
        &["wordcount", "lines", "counts", "wordcount-dlq"],
        &s,
    );
    let input = lines(120, 5);
    k.topic(&format!("lines-{s}"), 2);
    k.produce(&format!("lines-{s}"), &input);
    k.run_pipeline(&wc);
    let first = k.consume(&format!("counts-{s}"));
    assert_eq!(latest(&first), model_counts(&input));
    let app = format!("wordcount-{s}");
    let internal: Vec<String> = k
        .ok(&["topic", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|t| t.starts_with(&format!("{app}-")))
        .map(String::from)
        .collect();
    assert!(
        internal.contains(&format!("{app}-count-repartition"))
            && internal.contains(&format!("{app}-count-changelog")),
        "{internal:?}"
    );
    // Another application whose name starts with `APP-` over the same
    // input: its internal topics are not the reset's.
    let other_files = tempdir();
    let other = example(
        other_files.path(),
        "wordcount.toml",
        &["wordcount", "counts", "wordcount-dlq"],
        &format!("{s}-2"),
    );
    let text = std::fs::read_to_string(&other)
        .unwrap()
        .replace("\"lines\"", &format!("\"lines-{s}\""));
    std::fs::write(&other, text).unwrap();
    k.run_pipeline(&other);
    let others = |k: &Place| -> Vec<String> {
        k.ok(&["topic", "list"])
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|t| t.starts_with(&format!("{app}-")))
            .map(String::from)
            .collect()
    };
    let other_topics: Vec<String> = others(&k)
        .into_iter()
        .filter(|t| t.starts_with(&format!("{app}-2-")))
        .collect();
    assert!(
        other_topics.contains(&format!("{app}-2-count-repartition"))
            && other_topics.contains(&format!("{app}-2-count-changelog")),
        "{other_topics:?}"
    );
    let out = k.ok(&["reset", &app]);
    assert_eq!(
        out.trim(),
        format!(
            "reset pipeline {app} on Kafka: deleted its consumer group {app} (its input positions); deleted its internal topics {}; deleted its local state {}; its next run reads its inputs from the start. Its output topics are kept",
            internal.join(", "),
            k.data().join("kafka").join(&app).display()
        )
    );
    assert_eq!(others(&k), other_topics);
    // Nothing is left to reset.
    let r = run(k.weir().args(["reset", &app]));
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        r.stderr.trim(),
        format!(
            "pipeline {app} has no consumer group or internal topics on Kafka at {} and no local state in {} (is the name right? it is the pipeline file's `name`)",
            brokers(),
            k.data().join("kafka").join(&app).display()
        )
    );
    // The next run counts everything again from nothing: each count comes
    // out again, ending at the model (not twice the model).
    k.run_pipeline(&wc);
    let all = k.consume(&format!("counts-{s}"));
    assert!(
        all.len() >= first.len() + model_counts(&input).len(),
        "{} then {}",
        first.len(),
        all.len()
    );
    assert_eq!(latest(&all), model_counts(&input));
}

#[test]
fn at_least_once_from_the_kafka_section_counts_as_exactly_once_does_without_faults() {
    let s = suffix();
    let k = Place::kafka();
    let files = tempdir();
    let wc = example(
        files.path(),
        "wordcount.toml",
        &["wordcount", "lines", "counts", "wordcount-dlq"],
        &s,
    );
    // The cluster and the guarantee from the file, not the command line.
    let text = std::fs::read_to_string(&wc).unwrap()
        + &format!(
            "\n[kafka]\n\"bootstrap.servers\" = \"{}\"\nguarantee = \"at-least-once\"\n",
            brokers()
        );
    std::fs::write(&wc, text).unwrap();
    let input = lines(300, 41);
    k.topic(&format!("lines-{s}"), 2);
    k.produce(&format!("lines-{s}"), &input);
    let r = run(weir()
        .env("WEIR_MODULE_PATH", guest("count").parent().unwrap())
        .env("WEIR_DATA", k.data())
        .arg("run")
        .arg(&wc)
        .args(["--until-caught-up", "--quiet"]));
    assert!(r.status.success(), "{}", r.stderr);
    assert_once(&k.consume(&format!("counts-{s}")), &model_counts(&input));
}

/// Every committed update of a word is a new, higher count (a batch
/// committed twice would repeat or overshoot one), and the last ones are
/// the model's.
#[track_caller]
pub(crate) fn assert_once(got: &[Value], want: &BTreeMap<String, Value>) {
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for r in got {
        let (w, n) = (r["key"].as_str().unwrap(), r["value"].as_u64().unwrap());
        let before = last.insert(w.to_string(), n).unwrap_or(0);
        assert!(n > before, "{w}: {before} then {n}");
    }
    let last: BTreeMap<String, Value> = last.into_iter().map(|(k, v)| (k, json!(v))).collect();
    assert_eq!(&last, want);
}
