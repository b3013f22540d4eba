//! The engine as a library: a handle on a running pipeline (status, swap,
//! stop), the in-memory backend (assignment changes, storage errors), and
//! what a damaged position reads as.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use weir::backend::memory::MemoryBackend;
use weir::backend::{Backend, Commit, Topic, TopicConfig};
use weir::log::Log;
use weir::pipeline::{self, RunOptions, engine};
use weir::record::Record;
use weir::runtime::{Runtime, RuntimeOptions};

use crate::util::{guest, shared_cache, tempdir};

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        cache_dir: Some(shared_cache()),
        ..RuntimeOptions::default()
    })
    .unwrap()
}

fn map_pipeline(dir: &Path, module: &Path) -> pipeline::Pipeline {
    let file = dir.join("map.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"swapper\"\ninput = \"in\"\noutput = \"out\"\n[[steps]]\nname = \"case\"\nkind = \"map\"\nmodule = {:?}\n",
            module.display().to_string()
        ),
    )
    .unwrap();
    pipeline::config::load(&file).unwrap()
}

fn record(i: u64) -> Record {
    Record {
        offset: 0,
        timestamp: 1_000 + i as i64,
        key: Some(format!("k{}", i % 13).into_bytes()),
        value: Some(format!("Rec-{i}").into_bytes()),
        headers: Vec::new(),
    }
}

fn produce(backend: &dyn Backend, topic: &Topic, from: u64, to: u64) {
    let mut c = Commit::default();
    for i in from..to {
        let r = record(i);
        let p = weir::log::partitioner::partition_for_key(r.key.as_deref().unwrap(), 2);
        c.append(topic, p, &r);
    }
    backend.commit(c).unwrap();
}

/// Waits (bounded) until `cond` holds.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn values(backend: &dyn Backend, topic: &str, partition: u32) -> Vec<String> {
    let t = backend.topic(topic).unwrap().unwrap();
    backend
        .read(&t, partition, 0, usize::MAX)
        .unwrap()
        .iter()
        .map(|s| String::from_utf8(s.record().unwrap().value.unwrap()).unwrap())
        .collect()
}

/// Every input comes out exactly once per partition, in input order, first
/// in v1's form and, from one point on, in v2's.
fn assert_switched_once(backend: &dyn Backend, total: u64) -> usize {
    let mut switched = 0;
    let mut seen = 0;
    for p in 0..2 {
        let out = values(backend, "out", p);
        let expected: Vec<String> = (0..total)
            .map(record)
            .filter(|r| {
                weir::log::partitioner::partition_for_key(r.key.as_deref().unwrap(), 2) == p
            })
            .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
            .collect();
        assert_eq!(
            out.len(),
            expected.len(),
            "partition {p}: every record exactly once"
        );
        let cut = out
            .iter()
            .position(|v| v.starts_with("rec-"))
            .unwrap_or(out.len());
        for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
            let form = if i < cut {
                want.to_uppercase()
            } else {
                want.to_lowercase()
            };
            assert_eq!(got, &form, "partition {p}, record {i} (switch at {cut})");
        }
        if cut < out.len() {
            switched += 1;
        }
        seen += out.len();
    }
    assert_eq!(seen as u64, total);
    switched
}

#[test]
fn a_map_step_swapped_mid_run_emits_every_record_once_old_form_then_new() {
    let dir = tempdir();
    let log = Log::open(&dir.path().join("data")).unwrap();
    let backend: Arc<dyn Backend> = log.clone();
    let topic = backend
        .create_topic("in", TopicConfig::partitions(2))
        .unwrap();
    produce(&*backend, &topic, 0, 2_000);
    let rt = runtime();
    let pipeline = map_pipeline(dir.path(), &guest("uppercase"));
    let options = RunOptions {
        batch: 10,
        ..RunOptions::default()
    };
    let handle = engine::start(
        backend.clone(),
        &pipeline,
        &rt,
        &options,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    until("some records went through v1", || {
        handle.status().records_in >= 200
    });
    let v2 = rt.load_file(&guest("lowercase")).unwrap();
    let sha = v2.sha256().to_string();
    handle.swap("case", v2, Duration::from_secs(10)).unwrap();
    let status = handle.status();
    assert_eq!(status.steps[0].module_sha256, sha);
    assert_eq!(status.steps[0].swaps, 1);
    produce(&*backend, &topic, 2_000, 3_000);
    until("every record went through", || {
        handle.status().records_in == 3_000
    });
    handle.stop();
    let summary = handle.wait().unwrap();
    assert_eq!(summary.records_out, 3_000);
    assert_eq!(
        assert_switched_once(&*backend, 3_000),
        2,
        "both partitions switched"
    );
}

#[test]
fn a_swap_to_a_module_of_another_world_or_that_fails_init_changes_nothing() {
    let dir = tempdir();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    backend
        .create_topic("in", TopicConfig::partitions(2))
        .unwrap();
    let rt = runtime();
    let pipeline = map_pipeline(dir.path(), &guest("uppercase"));
    let handle = engine::start(
        backend.clone(),
        &pipeline,
        &rt,
        &RunOptions::default(),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let count = rt.load_file(&guest("count")).unwrap();
    let err = handle
        .swap("case", count, Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "{}:6: step case is a map step (`kind = \"map\"`), so its module must be a mapper, but {} is an aggregator: set `kind = \"aggregate\"`, or build the module as a mapper",
            dir.path().join("map.toml").display(),
            guest("count").display()
        )
    );
    let err = handle
        .swap(
            "nope",
            rt.load_file(&guest("lowercase")).unwrap(),
            Duration::from_secs(1),
        )
        .unwrap_err();
    assert_eq!(format!("{err:#}"), "pipeline swapper has no step nope");
    assert_eq!(handle.status().steps[0].swaps, 0);
    handle.stop();
    handle.wait().unwrap();
}

#[test]
fn tasks_come_and_go_with_the_assignment_and_a_failed_commit_loses_nothing() {
    let dir = tempdir();
    let memory = MemoryBackend::new();
    let backend: Arc<dyn Backend> = Arc::new(memory.clone());
    let topic = backend
        .create_topic("in", TopicConfig::partitions(2))
        .unwrap();
    produce(&*backend, &topic, 0, 500);
    memory.assign([0]);
    let rt = runtime();
    let pipeline = map_pipeline(dir.path(), &guest("uppercase"));
    let options = RunOptions {
        batch: 7,
        ..RunOptions::default()
    };
    // The first commits fail: the batch is retried from what was committed.
    memory.fail_next_commit("disk full");
    memory.fail_next_commit("disk full");
    let handle = engine::start(
        backend.clone(),
        &pipeline,
        &rt,
        &options,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let in_partition = |p: u32| values(&*backend, "in", p).len();
    until("partition 0 is done", || {
        values(&*backend, "out", 0).len() == in_partition(0)
    });
    assert_eq!(handle.status().partitions, [0]);
    assert!(
        values(&*backend, "out", 1).is_empty(),
        "partition 1 is not assigned"
    );
    memory.assign([1]);
    until("partition 1 is done", || {
        values(&*backend, "out", 1).len() == in_partition(1)
    });
    assert_eq!(handle.status().partitions, [1]);
    produce(&*backend, &topic, 500, 600);
    memory.assign([0, 1]);
    until("all is done", || {
        values(&*backend, "out", 0).len() + values(&*backend, "out", 1).len() == 600
    });
    handle.stop();
    handle.wait().unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for p in 0..2 {
        for v in values(&*backend, "out", p) {
            *seen.entry(v).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 600);
    assert!(seen.values().all(|n| *n == 1), "no record twice");
    assert_eq!(seen.keys().next().map(String::as_str), Some("REC-0"));
}

/// A lost assignment (the consumer group gone) ends the run with the error,
/// and only once every task has stopped: none goes on alone.
#[test]
fn a_lost_assignment_stops_every_task_before_the_run_ends_with_the_error() {
    let dir = tempdir();
    let memory = MemoryBackend::new();
    let backend: Arc<dyn Backend> = Arc::new(memory.clone());
    let topic = backend
        .create_topic("in", TopicConfig::partitions(2))
        .unwrap();
    produce(&*backend, &topic, 0, 100);
    let rt = runtime();
    let pipeline = map_pipeline(dir.path(), &guest("uppercase"));
    let handle = engine::start(
        backend.clone(),
        &pipeline,
        &rt,
        &RunOptions::default(),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    until("both partitions are done", || {
        values(&*backend, "out", 0).len() + values(&*backend, "out", 1).len() == 100
    });
    assert_eq!(memory.open_tasks(), 2);
    memory.fail_next_poll("the consumer group is gone");
    let err = handle.wait().unwrap_err();
    assert_eq!(format!("{err:#}"), "the consumer group is gone");
    assert_eq!(memory.open_tasks(), 0, "a task outlived its run");
}

#[test]
fn a_corrupt_stored_offset_is_an_error_naming_it() {
    let dir = tempdir();
    let data: PathBuf = dir.path().join("data");
    let log = Log::open(&data).unwrap();
    log.create_topic("in", TopicConfig::partitions(1)).unwrap();
    log.put_raw(&weir::log::position_key("swapper", "in", 0), b"oops")
        .unwrap();
    let rt = runtime();
    let pipeline = map_pipeline(dir.path(), &guest("uppercase"));
    let err = pipeline::run(
        log,
        &pipeline,
        &rt,
        &RunOptions {
            until_caught_up: true,
            ..RunOptions::default()
        },
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "task 0-0: pipeline swapper: the stored offset of pipeline swapper in in partition 0 is corrupt (4 bytes where 8 belong) in {}; restore the data directory from a backup",
            data.display()
        )
    );
}

/// Every record of `topic`, partition by partition.
fn all_records(log: &Log, topic: &str) -> Vec<Vec<(u64, Vec<u8>)>> {
    let topic = log.require_topic(topic).unwrap();
    (0..topic.config.partitions)
        .map(|p| {
            log.read(&topic, p, 0, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|s| (s.offset, s.bytes))
                .collect()
        })
        .collect()
}

#[test]
fn a_data_directory_from_before_the_records_column_family_is_read_and_moved_at_open() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let log = Log::open(&data).unwrap();
    let topic = log.create_topic("in", TopicConfig::partitions(2)).unwrap();
    produce(&*log, &topic, 0, 25_000);
    let before = all_records(&log, "in");
    assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 25_000);
    drop(log);

    // Puts the records back where Weir kept them before: in the default
    // column family, with no `records` one.
    {
        let db_dir = data.join("db");
        let opts = rocksdb::Options::default();
        let db = rocksdb::DB::open_cf(&opts, &db_dir, ["default", "records"]).unwrap();
        let records = db.cf_handle("records").unwrap();
        let mut batch = rocksdb::WriteBatch::default();
        for kv in db.iterator_cf(&records, rocksdb::IteratorMode::Start) {
            let (k, v) = kv.unwrap();
            batch.put(k, v);
        }
        db.write(batch).unwrap();
        db.drop_cf("records").unwrap();
    }

    let reader = Log::open_reader(&data).unwrap();
    assert_eq!(all_records(&reader, "in"), before);
    drop(reader);

    let log = Log::open(&data).unwrap();
    assert_eq!(all_records(&log, "in"), before);
    // Appends continue from each partition's end.
    let ends: Vec<u64> = before.iter().map(|p| p.last().unwrap().0 + 1).collect();
    produce(&*log, &topic, 25_000, 25_010);
    let after = all_records(&log, "in");
    for p in 0..2 {
        assert_eq!(after[p][..before[p].len()], before[p][..]);
        assert_eq!(after[p][before[p].len()].0, ends[p]);
    }
    assert_eq!(after.iter().map(Vec::len).sum::<usize>(), 25_010);
    drop(log);

    // Nothing is left in the default column family.
    let db = rocksdb::DB::open_cf_for_read_only(
        &rocksdb::Options::default(),
        data.join("db"),
        ["default", "records"],
        false,
    )
    .unwrap();
    let left = db
        .prefix_iterator(b"R")
        .take_while(|kv| kv.as_ref().is_ok_and(|(k, _)| k.starts_with(b"R")))
        .count();
    assert_eq!(left, 0);
}
