//! The embedded partitioned log: Weir's default source and sink, and the
//! store of everything a pipeline keeps (state, timers, offsets), all in one
//! RocksDB database per data directory — so that a task commits its outputs,
//! state changes, timers and input offsets in one atomic write batch.
//!
//! Keys (big-endian numbers, so that RocksDB's byte order is numeric order;
//! records in their own column family, the rest in the default one: see
//! [`layout`]):
//!
//! ```text
//! R topic-id:u32 partition:u32 offset:u64   -> a record, in the packed layout of wit/functions.wit
//! M name                                    -> a topic's settings (JSON)
//! K ...                                     -> pipeline keys (state, timers, stream time): see `pipeline::keys`
//! K pipeline 0 'o' topic 0 partition:u32    -> a pipeline's next offset in a source partition (u64)
//! ```
//!
//! This is the only module that touches RocksDB; tasks reach it through the
//! [`crate::backend::Backend`] trait.
//!
//! Offsets are assigned when a commit is written, under one lock, so that
//! every partition's offsets are dense and appear in order to readers.

mod backend;
mod layout;
use layout::{has_database, open_error, records_family, require_data_dir};
pub mod partitioner;
mod retention;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use rocksdb::{DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions};

use crate::backend::DataSignal;
pub use crate::backend::{Commit, Stored, Topic, TopicConfig};

/// A data directory's log and stores.
pub struct Log {
    db: DB,
    dir: PathBuf,
    /// Next offset per (topic id, partition), filled on first use; the lock
    /// also serialises commits.
    heads: Mutex<HashMap<(u32, u32), u64>>,
    topics: Mutex<HashMap<String, Topic>>,
    secondary: Option<tempfile::TempDir>,
    writer: bool,
    /// The column family of records: [`layout::RECORDS`], or the default
    /// one in a directory written before the split that a reader opened.
    records: &'static str,
    /// Bumped by every commit that appends: idle tasks wait on it.
    signal: DataSignal,
}

impl Drop for Log {
    /// A writer flushes its memtables when it closes, so that what it wrote
    /// is in table files and not only in the write-ahead log (a crash still
    /// recovers from the log).
    fn drop(&mut self) {
        if self.writer
            && let Err(e) = self.flush_all()
        {
            tracing::warn!("flushing {} on close: {e}", self.dir.display());
        }
    }
}

fn record_key(topic: u32, partition: u32, offset: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'R';
    k[1..5].copy_from_slice(&topic.to_be_bytes());
    k[5..9].copy_from_slice(&partition.to_be_bytes());
    k[9..17].copy_from_slice(&offset.to_be_bytes());
    k
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![b'M'];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Checks a topic or pipeline name: 1 to 200 of `A-Z a-z 0-9 . _ -`.
pub fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 200
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        bail!("invalid {what} name {name:?}: use 1 to 200 of the characters A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

impl Log {
    fn wrap(
        db: DB,
        dir: &Path,
        secondary: Option<tempfile::TempDir>,
        writer: bool,
        records: &'static str,
    ) -> Arc<Log> {
        Arc::new(Log {
            records,
            db,
            dir: dir.to_path_buf(),
            heads: Mutex::new(HashMap::new()),
            topics: Mutex::new(HashMap::new()),
            secondary,
            writer,
            signal: DataSignal::default(),
        })
    }

    /// Opens (creating if needed) the log in `dir`, for reading and writing.
    /// One process at a time may do so. A damaged directory is refused with
    /// an error saying what is wrong, and nothing in it is changed.
    pub fn open(dir: &Path) -> anyhow::Result<Arc<Log>> {
        Log::open_tuned(dir, 32 << 20, 3)
    }

    /// Opens (creating if needed) a store of state only, such as a Kafka
    /// pipeline's local copy of its changelogs: smaller memtables (2 x 8
    /// MiB), since its writes are a fraction of a log's.
    pub fn open_state(dir: &Path) -> anyhow::Result<Arc<Log>> {
        Log::open_tuned(dir, 8 << 20, 2)
    }

    fn open_tuned(dir: &Path, memtable: usize, memtables: i32) -> anyhow::Result<Arc<Log>> {
        let fresh = !has_database(dir)?;
        if fresh {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        }
        let mut opts = Options::default();
        // Only a directory with no database yet gets a new one: RocksDB
        // would otherwise start afresh beside files it cannot account for.
        opts.create_if_missing(fresh);
        opts.set_max_open_files(256);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Fresh data is not compressed on its way out of memory: on a small
        // machine, compressing every flush competes with the tasks for the
        // CPU; what survives into the lower levels is.
        use rocksdb::DBCompressionType::{Lz4, None as Plain};
        opts.set_compression_per_level(&[Plain, Plain, Lz4, Lz4, Lz4, Lz4, Lz4]);
        // Tasks commit from several threads into one write-ahead log:
        // pipelined writes let one batch's memtable insert overlap the next
        // one's log write. Two 32 MiB memtables and background flushes and
        // compactions in parallel keep writers from stalling while bounding
        // the memory a data directory holds.
        opts.set_enable_pipelined_write(true);
        opts.set_write_buffer_size(memtable);
        opts.set_max_write_buffer_number(memtables);
        opts.set_max_background_jobs(4);
        // A bloom filter over each memtable's keys lets a state read of a
        // key absent from memory skip the memtable's skip list.
        opts.set_memtable_prefix_bloom_ratio(0.05);
        opts.set_memtable_whole_key_filtering(true);
        // Bloom filters (10 bits a key, ~1% false positives) let a state
        // read of a key that was never written skip the table files: with a
        // large key space most reads are of new keys.
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        // The default column family is opened by name, so that a handle on
        // it serves batched reads (`StateRead::get_many`).
        let default =
            rocksdb::ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, opts.clone());
        let records =
            rocksdb::ColumnFamilyDescriptor::new(layout::RECORDS, layout::records_options(&opts));
        let old = !fresh
            && !layout::families(&dir.join("db"))?
                .iter()
                .any(|f| f == layout::RECORDS);
        opts.create_missing_column_families(true);
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), [default, records]).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("lock") {
                anyhow::anyhow!(
                    "the data directory {} is in use by another weir process (RocksDB: {msg}); stop it first, or give another --data",
                    dir.display()
                )
            } else {
                open_error(dir, &msg)
            }
        })?;
        let log = Log::wrap(db, dir, None, true, layout::RECORDS);
        if old {
            let moved = log.move_old_records()?;
            tracing::info!(
                "moved {moved} records of {} to their column family",
                dir.display()
            );
        }
        Ok(log)
    }

    /// Opens the log for reading as of now (read-only: it takes no lock, so
    /// a writing process may run beside it).
    pub fn open_reader(dir: &Path) -> anyhow::Result<Arc<Log>> {
        require_data_dir(dir)?;
        let opts = Options::default();
        let families = layout::families(&dir.join("db"))?;
        let db = DB::open_cf_for_read_only(&opts, dir.join("db"), &families, false)
            .map_err(|e| open_error(dir, e.as_ref()))?;
        Ok(Log::wrap(db, dir, None, false, records_family(&families)))
    }

    /// Opens the log for following, beside a process that may be writing it
    /// (a RocksDB secondary instance); [`Log::catch_up`] sees newer writes.
    pub fn open_follower(dir: &Path) -> anyhow::Result<Arc<Log>> {
        require_data_dir(dir)?;
        let secondary = tempfile::tempdir().context("cannot make a temporary directory")?;
        let mut opts = Options::default();
        opts.set_max_open_files(-1);
        let families = layout::families(&dir.join("db"))?;
        let db = DB::open_cf_as_secondary(
            &opts,
            dir.join("db"),
            secondary.path().to_path_buf(),
            &families,
        )
        .map_err(|e| open_error(dir, e.as_ref()))?;
        Ok(Log::wrap(
            db,
            dir,
            Some(secondary),
            false,
            records_family(&families),
        ))
    }

    /// Whether it follows another process's writes (a secondary instance):
    /// its own appends never signal, so a follower polls with [`Log::catch_up`].
    pub fn follows(&self) -> bool {
        self.secondary.is_some()
    }

    /// For a reader: sees what the writing process committed since.
    pub fn catch_up(&self) -> anyhow::Result<()> {
        if self.secondary.is_some() {
            self.db.try_catch_up_with_primary()?;
            self.lock_heads().clear();
        }
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> anyhow::Result<Topic> {
        check_name("topic", name)?;
        if config.partitions == 0 || config.partitions > 10_000 {
            bail!(
                "topic {name}: {} partitions; give between 1 and 10000",
                config.partitions
            );
        }
        let _guard = self.lock_heads();
        if self.topic(name)?.is_some() {
            bail!("topic {name} already exists");
        }
        let id = self
            .topics()?
            .iter()
            .map(|t| t.id)
            .max()
            .map_or(1, |m| m + 1);
        let topic = Topic {
            name: name.to_string(),
            id,
            config,
        };
        self.db
            .put(meta_key(name), serde_json::to_vec(&topic)?)
            .with_context(|| format!("cannot create topic {name}"))?;
        // A follower waiting for the topic looks again.
        self.signal.bump();
        Ok(topic)
    }

    /// The topic called `name`, if it exists.
    pub fn topic(&self, name: &str) -> anyhow::Result<Option<Topic>> {
        if let Some(t) = self.lock_topics().get(name) {
            return Ok(Some(t.clone()));
        }
        let Some(bytes) = self.db.get(meta_key(name))? else {
            return Ok(None);
        };
        let t: Topic = serde_json::from_slice(&bytes)
            .with_context(|| format!("the settings of topic {name} are corrupt"))?;
        self.lock_topics().insert(name.to_string(), t.clone());
        Ok(Some(t))
    }

    /// The topic called `name`, or an error naming the topics there are.
    pub fn require_topic(&self, name: &str) -> anyhow::Result<Topic> {
        match self.topic(name)? {
            Some(t) => Ok(t),
            None => {
                let names: Vec<String> = self.topics()?.into_iter().map(|t| t.name).collect();
                bail!(
                    "no topic named {name} in {} (topics: {}); create it with `weir topic create {name} --partitions N`",
                    self.dir.display(),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            }
        }
    }

    /// Every topic, by name.
    pub fn topics(&self) -> anyhow::Result<Vec<Topic>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(b"M", Direction::Forward))
        {
            let (k, v) = item?;
            if k.first() != Some(&b'M') {
                break;
            }
            out.push(serde_json::from_slice(&v).context("corrupt topic settings")?);
        }
        Ok(out)
    }

    /// Deletes a topic and its records.
    pub fn delete_topic(&self, name: &str) -> anyhow::Result<()> {
        let topic = self.require_topic(name)?;
        let mut heads = self.lock_heads();
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            &self.rcf()?,
            record_key(topic.id, 0, 0),
            record_key(topic.id, u32::MAX, u64::MAX),
        );
        batch.delete(meta_key(name));
        self.db.write(batch)?;
        heads.retain(|(id, _), _| *id != topic.id);
        self.lock_topics().remove(name);
        Ok(())
    }

    /// The column family records are in.
    fn rcf(&self) -> anyhow::Result<Arc<rocksdb::BoundColumnFamily<'_>>> {
        self.db.cf_handle(self.records).with_context(|| {
            format!(
                "the column family {} is missing from {}",
                self.records,
                self.dir.display()
            )
        })
    }

    /// Writes both column families' memtables to table files.
    fn flush_all(&self) -> anyhow::Result<()> {
        self.db.flush()?;
        if self.records != rocksdb::DEFAULT_COLUMN_FAMILY_NAME {
            self.db.flush_cf(&self.rcf()?)?;
        }
        Ok(())
    }

    fn lock_heads(&self) -> std::sync::MutexGuard<'_, HashMap<(u32, u32), u64>> {
        match self.heads.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn lock_topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        match self.topics.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn first_last(&self, topic: u32, partition: u32) -> anyhow::Result<Option<(u64, u64)>> {
        let lo = record_key(topic, partition, 0);
        let hi = record_key(topic, partition, u64::MAX);
        let mut it = self.db.raw_iterator_cf(&self.rcf()?);
        it.seek(lo);
        let first = match it.key() {
            Some(k) if k.len() == 17 && k[..9] == lo[..9] => offset_of(k),
            _ => {
                it.status()?;
                return Ok(None);
            }
        };
        it.seek_for_prev(hi);
        let last = match it.key() {
            Some(k) if k.len() == 17 && k[..9] == lo[..9] => offset_of(k),
            _ => first,
        };
        Ok(Some((first, last)))
    }

    /// The offset of the first record still kept (after retention).
    pub fn start_offset(&self, topic: &Topic, partition: u32) -> anyhow::Result<u64> {
        Ok(match self.first_last(topic.id, partition)? {
            Some((first, _)) => first,
            None => self.end_offset(topic, partition)?,
        })
    }

    /// The offset of the first record kept, if the partition has any.
    /// (Unlike [`Log::start_offset`], an empty partition has none: a reader
    /// must not skip to the end, where records may be landing right now.)
    pub fn first_offset(&self, topic: &Topic, partition: u32) -> anyhow::Result<Option<u64>> {
        Ok(self
            .first_last(topic.id, partition)?
            .map(|(first, _)| first))
    }

    /// The offset the next record appended will get.
    pub fn end_offset(&self, topic: &Topic, partition: u32) -> anyhow::Result<u64> {
        let mut heads = self.lock_heads();
        self.head(&mut heads, topic.id, partition)
    }

    fn head(
        &self,
        heads: &mut HashMap<(u32, u32), u64>,
        topic: u32,
        partition: u32,
    ) -> anyhow::Result<u64> {
        if let Some(h) = heads.get(&(topic, partition)) {
            return Ok(*h);
        }
        // After the last record; an empty (or emptied) partition keeps its
        // end in a marker so that offsets never go back.
        let marker = self.db.get(end_marker(topic, partition))?;
        let from_marker = marker
            .as_deref()
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let from_records = self
            .first_last(topic, partition)?
            .map_or(0, |(_, last)| last + 1);
        let h = from_marker.max(from_records);
        heads.insert((topic, partition), h);
        Ok(h)
    }

    /// Reads up to `max` records of a partition from `from` on.
    pub fn read(
        &self,
        topic: &Topic,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<Vec<Stored>> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(record_key(topic.id, partition, u64::MAX).to_vec());
        let mut it = self.db.raw_iterator_cf_opt(&self.rcf()?, opts);
        it.seek(record_key(topic.id, partition, from));
        let mut out: Vec<Stored> = Vec::new();
        while out.len() < max && it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            out.push(Stored {
                offset: offset_of(k),
                bytes: v.to_vec(),
            });
            it.next();
        }
        if let Err(e) = it.status() {
            let at = out.last().map_or(from, |s| s.offset + 1);
            return Err(self.read_error(topic, partition, at, e.as_ref()));
        }
        Ok(out)
    }

    /// Why a partition cannot be read from `offset` on, and what to do.
    fn read_error(&self, topic: &Topic, partition: u32, offset: u64, msg: &str) -> anyhow::Error {
        let dir = self.dir.display();
        let what = if msg.contains("Corruption") || msg.contains("checksum") {
            "it is damaged"
        } else {
            "RocksDB failed"
        };
        anyhow::anyhow!(
            "cannot read topic {name} partition {partition} from offset {offset} in the data directory {dir}: {what} (RocksDB: {msg}). Records before offset {offset} were readable; restore the data directory from a backup, and see each partition's offsets with `weir topic describe {name} --data {dir}`",
            name = topic.name
        )
    }

    /// Writes a commit atomically: appends get the next offsets of their
    /// partitions. Returns the offsets assigned, in append order.
    pub fn commit(&self, commit: Commit) -> anyhow::Result<Vec<u64>> {
        let mut heads = self.lock_heads();
        let mut batch = WriteBatch::default();
        let records = self.rcf()?;
        let mut offsets = Vec::with_capacity(commit.appends.len());
        // The next offset of each partition appended to (a fast hash: it is
        // looked up for every append).
        let mut next: rustc_hash::FxHashMap<(u32, u32), u64> = Default::default();
        for (topic, partition, mut packed) in commit.appends {
            let n = match next.get(&(topic, partition)) {
                Some(n) => *n,
                None => self.head(&mut heads, topic, partition)?,
            };
            match packed.get_mut(..8) {
                Some(head) => head.copy_from_slice(&(n as i64).to_le_bytes()),
                None => bail!("an appended record is not in the packed layout"),
            }
            batch.put_cf(&records, record_key(topic, partition, n), &packed);
            offsets.push(n);
            next.insert((topic, partition), n + 1);
        }
        for (k, v) in commit.puts {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        for p in commit.positions {
            batch.put(
                position_key(&p.group, &p.topic, p.partition),
                p.next.to_be_bytes(),
            );
        }
        for (topic, partition, offsets) in commit.purges {
            // One range deletion per partition: readers skip the records
            // at once, and compactions drop them from disk as they pass
            // over them. The end marker keeps the partition's end should it
            // become empty.
            let end = match next.get(&(topic, partition)) {
                Some(n) => *n,
                None => self.head(&mut heads, topic, partition)?,
            };
            let to = offsets.end.min(end);
            if offsets.start < to {
                batch.delete_range_cf(
                    &records,
                    record_key(topic, partition, offsets.start),
                    record_key(topic, partition, to),
                );
                batch.put(end_marker(topic, partition), end.to_be_bytes());
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db
            .write_opt(batch, &wo)
            .context("cannot write to the log")?;
        heads.extend(next);
        drop(heads);
        if !offsets.is_empty() {
            self.signal.bump();
        }
        Ok(offsets)
    }

    /// Writes what is in memory to table files (what a writer also does when
    /// it closes).
    pub fn flush(&self) -> anyhow::Result<()> {
        self.flush_all()
            .with_context(|| format!("cannot flush {}", self.dir.display()))
    }

    /// The committed position of `group` in a source partition.
    pub fn position(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> anyhow::Result<Option<u64>> {
        let key = position_key(group, topic, partition);
        match self.db.get(&key)? {
            None => Ok(None),
            Some(b) => match <[u8; 8]>::try_from(b.as_slice()) {
                Ok(a) => Ok(Some(u64::from_be_bytes(a))),
                Err(_) => bail!(
                    "the stored offset of pipeline {group} in {topic} partition {partition} is corrupt ({} bytes where 8 belong) in {}; restore the data directory from a backup",
                    b.len(),
                    self.dir.display()
                ),
            },
        }
    }

    /// Sets the committed position of `group` in a source partition (tests
    /// and tools; pipelines commit positions with their batches).
    pub fn put_raw(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.db.put(key, value)?;
        Ok(())
    }

    /// Deletes every entry whose key starts with `prefix` (a pipeline's
    /// positions and state, for `weir reset`); returns how many there were.
    pub fn delete_prefix(&self, prefix: &[u8]) -> anyhow::Result<u64> {
        let end = crate::pipeline::keys::prefix_end(prefix);
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(end.clone());
        let mut it = self.db.raw_iterator_opt(opts);
        it.seek(prefix);
        let mut n = 0u64;
        while it.valid() {
            n += 1;
            it.next();
        }
        it.status()?;
        if n > 0 {
            let mut batch = WriteBatch::default();
            batch.delete_range(prefix, &end);
            self.db.write(batch)?;
        }
        Ok(n)
    }

    /// State entries whose keys start with `prefix`, in key order, up to `limit`.
    pub fn scan(&self, prefix: &[u8], limit: usize) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.range_raw(prefix, &crate::pipeline::keys::prefix_end(prefix), limit)
    }

    fn range_raw(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if start >= end || limit == 0 {
            return Ok(out);
        }
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(end.to_vec());
        let mut it = self.db.raw_iterator_opt(opts);
        it.seek(start);
        while it.valid() && out.len() < limit {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                out.push((k.to_vec(), v.to_vec()));
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }
}

/// Where a pipeline's position in a source partition is kept.
pub fn position_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(group.len() + topic.len() + 12);
    k.push(b'K');
    k.extend_from_slice(group.as_bytes());
    k.push(0);
    k.push(b'o');
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn end_marker(topic: u32, partition: u32) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'E';
    k[1..5].copy_from_slice(&topic.to_be_bytes());
    k[5..9].copy_from_slice(&partition.to_be_bytes());
    k
}

fn offset_of(key: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&key[9..17]);
    u64::from_be_bytes(a)
}
