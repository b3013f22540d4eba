//! A backend in memory: topics, state and positions in maps behind one lock.
//! It serves operator unit tests and in-memory runs, and can be told to fail
//! (a storage error on the next commit or read) and to change which
//! partitions the process owns, as a Kafka rebalance would.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::bail;

use super::{
    Assignment, Assignor, Backend, Commit, DataSignal, StateRead, Stored, TaskId, TaskSpec, Topic,
    TopicConfig,
};

#[derive(Default)]
struct Inner {
    topics: BTreeMap<String, Topic>,
    /// (topic id, partition) -> packed records from offset 0.
    logs: HashMap<(u32, u32), Vec<Vec<u8>>>,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    positions: HashMap<(String, String, u32), u64>,
    fail_commits: Vec<String>,
    fail_reads: Vec<String>,
    /// A task's reads deliver at most this many records (Kafka's fetches).
    deliver_at_most: Option<usize>,
    fail_gets: Vec<String>,
    commits: u64,
    /// Tasks opened and not closed yet.
    open_tasks: usize,
}

#[derive(Default)]
struct Assigned {
    set: Option<BTreeSet<u32>>,
    version: u64,
    /// The next poll fails with this (a consumer group gone).
    fail: Option<String>,
}

/// A backend in memory. Cheap to clone (clones share the same data).
#[derive(Clone, Default)]
pub struct MemoryBackend {
    inner: Arc<Mutex<Inner>>,
    assignment: Arc<(Mutex<Assigned>, Condvar)>,
    signal: Arc<DataSignal>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The next commit fails with `message` (and writes nothing).
    pub fn fail_next_commit(&self, message: &str) {
        self.lock().fail_commits.push(message.to_string());
    }

    /// The next read fails with `message`.
    pub fn fail_next_read(&self, message: &str) {
        self.lock().fail_reads.push(message.to_string());
    }

    /// A task's reads (`read_from`) deliver at most `n` records from now on,
    /// as a Kafka consumer delivers part of what is there while its fetch
    /// is on its way; `None` delivers all that is asked for.
    pub fn deliver_at_most(&self, n: Option<usize>) {
        self.lock().deliver_at_most = n;
    }

    /// The next state read fails with `message`.
    pub fn fail_next_get(&self, message: &str) {
        self.lock().fail_gets.push(message.to_string());
    }

    /// The assignor's next poll fails with `message`.
    pub fn fail_next_poll(&self, message: &str) {
        let (lock, cv) = &*self.assignment;
        let mut a = match lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        a.fail = Some(message.to_string());
        a.version += 1;
        cv.notify_all();
    }

    /// How many tasks are open (opened and not closed yet).
    pub fn open_tasks(&self) -> usize {
        self.lock().open_tasks
    }

    /// How many commits were written.
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// Every record of a partition, decoded, in offset order.
    pub fn records(&self, topic: &str, partition: u32) -> Vec<crate::record::Record> {
        let inner = self.lock();
        let Some(t) = inner.topics.get(topic) else {
            return Vec::new();
        };
        inner
            .logs
            .get(&(t.id, partition))
            .map(|l| {
                l.iter()
                    .filter_map(|b| crate::codec::Reader::new(b).record().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Appends records to a partition now (a producer).
    pub fn produce(&self, topic: &Topic, partition: u32, records: &[crate::record::Record]) {
        let mut c = Commit::default();
        for r in records {
            c.append(topic, partition, r);
        }
        let mut inner = self.lock();
        Self::apply(&mut inner, c);
        drop(inner);
        self.signal.bump();
    }

    /// Every committed state entry.
    pub fn state(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.lock().state.clone()
    }

    /// Sets the partitions this process owns (a rebalance); the assignor
    /// returned by [`Backend::assignor`] reports it.
    pub fn assign(&self, partitions: impl IntoIterator<Item = u32>) {
        let (lock, cv) = &*self.assignment;
        let mut a = match lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        a.set = Some(partitions.into_iter().collect());
        a.version += 1;
        cv.notify_all();
    }

    fn apply(inner: &mut Inner, commit: Commit) {
        for (topic, partition, mut bytes) in commit.appends {
            let log = inner.logs.entry((topic, partition)).or_default();
            if let Some(head) = bytes.get_mut(..8) {
                head.copy_from_slice(&(log.len() as i64).to_le_bytes());
            }
            log.push(bytes);
        }
        for (k, v) in commit.puts {
            match v {
                Some(v) => {
                    inner.state.insert(k, v);
                }
                None => {
                    inner.state.remove(&k);
                }
            }
        }
        for p in commit.positions {
            inner
                .positions
                .insert((p.group, p.topic, p.partition), p.next);
        }
        inner.commits += 1;
    }
}

impl StateRead for MemoryBackend {
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let mut inner = self.lock();
        if !inner.fail_gets.is_empty() {
            let m = inner.fail_gets.remove(0);
            bail!("the in-memory backend: {m}");
        }
        Ok(inner.state.get(key).cloned())
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(self
            .lock()
            .state
            .range(start.to_vec()..end.to_vec())
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

struct MemoryAssignor {
    assignment: Arc<(Mutex<Assigned>, Condvar)>,
    /// The assignment version last reported.
    seen: Option<u64>,
    sources: Vec<(String, u32)>,
}

impl Assignor for MemoryAssignor {
    fn poll(&mut self, wait: Duration) -> anyhow::Result<Option<Assignment>> {
        let (lock, cv) = &*self.assignment;
        let mut a = match lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(message) = a.fail.take() {
            bail!("{message}");
        }
        let Some(seen) = self.seen else {
            // The first poll: what was assigned, or every partition.
            self.seen = Some(a.version);
            return Ok(Some(match &a.set {
                Some(set) => Assignment::numbered(&self.sources, set),
                None => Assignment::all(&self.sources),
            }));
        };
        if a.version == seen {
            a = match cv.wait_timeout(a, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        if a.version == seen {
            return Ok(None);
        }
        self.seen = Some(a.version);
        Ok(a.set
            .as_ref()
            .map(|set| Assignment::numbered(&self.sources, set)))
    }
}

impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        "the in-memory backend".into()
    }

    fn topic(&self, name: &str) -> anyhow::Result<Option<Topic>> {
        Ok(self.lock().topics.get(name).cloned())
    }

    fn create_topic(&self, name: &str, config: TopicConfig) -> anyhow::Result<Topic> {
        crate::log::check_name("topic", name)?;
        let mut inner = self.lock();
        if inner.topics.contains_key(name) {
            bail!("topic {name} already exists");
        }
        let id = inner
            .topics
            .values()
            .map(|t| t.id)
            .max()
            .map_or(1, |m| m + 1);
        let t = Topic {
            name: name.to_string(),
            id,
            config,
        };
        inner.topics.insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn read_from(
        &self,
        topic: &Topic,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<(Vec<Stored>, u64)> {
        let max = self.lock().deliver_at_most.map_or(max, |n| n.min(max));
        let records = self.read(topic, partition, from, max)?;
        let next = records.last().map_or(from, |r| r.offset + 1);
        Ok((records, next))
    }

    fn read(
        &self,
        topic: &Topic,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<Vec<Stored>> {
        let mut inner = self.lock();
        if !inner.fail_reads.is_empty() {
            let m = inner.fail_reads.remove(0);
            bail!("reading {} partition {partition}: {m}", topic.name);
        }
        let Some(log) = inner.logs.get(&(topic.id, partition)) else {
            return Ok(Vec::new());
        };
        Ok(log
            .iter()
            .enumerate()
            .skip(from as usize)
            .take(max)
            .map(|(o, b)| Stored {
                offset: o as u64,
                bytes: b.clone(),
            })
            .collect())
    }

    fn first_offset(&self, topic: &Topic, partition: u32) -> anyhow::Result<Option<u64>> {
        let inner = self.lock();
        Ok(inner
            .logs
            .get(&(topic.id, partition))
            .filter(|l| !l.is_empty())
            .map(|_| 0))
    }

    fn end_offset(&self, topic: &Topic, partition: u32) -> anyhow::Result<u64> {
        let inner = self.lock();
        Ok(inner
            .logs
            .get(&(topic.id, partition))
            .map_or(0, |l| l.len() as u64))
    }

    fn position(&self, group: &str, topic: &str, partition: u32) -> anyhow::Result<Option<u64>> {
        Ok(self
            .lock()
            .positions
            .get(&(group.to_string(), topic.to_string(), partition))
            .copied())
    }

    fn commit(&self, commit: Commit) -> anyhow::Result<()> {
        let mut inner = self.lock();
        if !inner.fail_commits.is_empty() {
            let m = inner.fail_commits.remove(0);
            bail!("cannot commit to the in-memory backend: {m}");
        }
        let appends = !commit.appends.is_empty();
        Self::apply(&mut inner, commit);
        drop(inner);
        if appends {
            self.signal.bump();
        }
        Ok(())
    }

    fn data_version(&self) -> u64 {
        self.signal.version()
    }

    fn wait_for_data(&self, since: u64, timeout: Duration) -> u64 {
        self.signal.wait(since, timeout)
    }

    fn wake(&self) {
        self.signal.bump();
    }

    fn open_task(&self, _spec: &TaskSpec) -> anyhow::Result<()> {
        self.lock().open_tasks += 1;
        Ok(())
    }

    fn close_task(&self, _task: TaskId) {
        let mut inner = self.lock();
        inner.open_tasks = inner.open_tasks.saturating_sub(1);
    }

    fn assignor(
        &self,
        _group: &str,
        sources: &[(String, u32)],
    ) -> anyhow::Result<Box<dyn Assignor>> {
        Ok(Box::new(MemoryAssignor {
            assignment: self.assignment.clone(),
            seen: None,
            sources: sources.to_vec(),
        }))
    }
}
