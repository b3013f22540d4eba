//! State upgrades: a step's state in a partition is kept in the format of
//! the module that wrote it. The format is a number the module declares
//! through the optional `upgrading` export of `wit/functions.wit`
//! (`state-format`; a module without it writes format 0), recorded per
//! step and partition under [`keys::state_format`] (absent: 0) and
//! committed with the state like every other key.
//!
//! When a task starts a step's module (a pipeline start or restart, a hot
//! swap, a rollback) and the module's format differs from the recorded one,
//! [`ensure_format`] brings the state over before the module's first batch:
//! - the step keeps no state in this partition: the new format is recorded;
//! - the module exports `upgrading`: every entry of the step's state (an
//!   aggregate's accumulators, of every window kind; a processor's stores)
//!   goes through its `upgrade(from, ...)` in chunks of [`CHUNK`], and what
//!   it returns is written through the task's pending changes, so that it
//!   commits with the first batch (a crash or a rolled-back swap loses
//!   nothing: the upgrade runs again, from the same committed state);
//! - otherwise, or when `upgrade` rejects an entry or traps, the switch is
//!   refused with an [`UpgradeRefused`] naming the module, the formats and
//!   the entry's key: a swap is then rolled back like one whose first batch
//!   trapped, and a start fails.
//!
//! A join's state holds input records, not the module's own encoding: it is
//! never upgraded (and a joiner may not export `upgrading`). Timers are not
//! upgraded either: their tags are the processor's own, but they carry no
//! format of their own. The upgrade is eager: the switch's pause grows with
//! the size of the step's state in the partition.

use std::sync::Arc;

use anyhow::Context;

use super::config::{Step as StepConfig, StepKind};
use super::keys;
use crate::backend::{StateRead, Txn};
use crate::codec::{self, Entry};
use crate::runtime::guest::Called;
use crate::runtime::{Call, Guest, GuestState, StepError, World};

/// Entries handed to one `upgrade` call.
pub(crate) const CHUNK: usize = 1000;

/// Why a module cannot take over a step's state.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UpgradeRefused(pub String);

/// What [`ensure_format`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Upgraded {
    /// The format the state was in.
    pub from: u32,
    /// The format it is in now.
    pub to: u32,
    /// Entries handed to `upgrade`.
    pub entries: u64,
}

/// Where one stored entry of a step's state lives.
enum Place {
    /// An aggregate's accumulator: its record key, window start and end.
    Acc {
        key: Vec<u8>,
        start: i64,
        end: i64,
        ts: i64,
    },
    /// A processor's store entry.
    Store { store: String, key: Vec<u8> },
}

/// Brings step `cfg`'s state in `partition` to the format `guest` writes,
/// reading through `txn` over `base` and writing through `txn`. An
/// [`UpgradeRefused`] in the error chain says the module cannot take the
/// state over; any other error is a storage error.
pub(crate) fn ensure_format(
    cfg: &StepConfig,
    guest: &mut dyn Guest,
    pipeline: &str,
    partition: u32,
    base: &Arc<dyn StateRead>,
    txn: &mut Txn,
) -> anyhow::Result<Upgraded> {
    if !matches!(cfg.kind, StepKind::Aggregate | StepKind::Processor) {
        return Ok(Upgraded::default());
    }
    let format_key = keys::state_format(pipeline, &cfg.name, partition);
    let from = match txn.get(base.as_ref(), &format_key)? {
        None => 0,
        Some(b) => match <[u8; 4]>::try_from(b.as_slice()) {
            Ok(a) => u32::from_be_bytes(a),
            Err(_) => anyhow::bail!(
                "the recorded state format of step {} of pipeline {pipeline} (partition {partition}) is corrupt ({} bytes)",
                cfg.name,
                b.len()
            ),
        },
    };
    let module = guest.name().to_string();
    let to = guest.state_format()?.map_err(|trap| {
        UpgradeRefused(format!(
            "{module} cannot take over step {}'s state: its state-format trapped: {trap}",
            cfg.name
        ))
    })?;
    let done = Upgraded {
        from,
        to,
        entries: 0,
    };
    if from == to {
        return Ok(done);
    }
    let prefixes = prefixes(cfg, pipeline, partition);
    let mut empty = true;
    for (_, prefix) in &prefixes {
        if !txn
            .range(base.as_ref(), prefix, &keys::prefix_end(prefix), 1)?
            .is_empty()
        {
            empty = false;
            break;
        }
    }
    if empty {
        record(txn, format_key, to);
        return Ok(done);
    }
    if !guest.upgrades() {
        return Err(UpgradeRefused(format!(
            "step {}'s state is in format {from}; {module} writes format {to} and exports no upgrade",
            cfg.name
        ))
        .into());
    }
    let mut entries = 0u64;
    for (store, prefix) in &prefixes {
        let end = keys::prefix_end(prefix);
        let mut start = prefix.clone();
        loop {
            let chunk = txn.range(base.as_ref(), &start, &end, CHUNK)?;
            let Some((last, _)) = chunk.last() else { break };
            start = last.clone();
            start.push(0);
            let mut places = Vec::with_capacity(chunk.len());
            let mut batch = Vec::with_capacity(64 * chunk.len());
            batch.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            for (k, v) in &chunk {
                let rest = &k[prefix.len()..];
                let (place, value) = match store {
                    None => {
                        let (key, rest) = keys::take_key(rest).with_context(|| {
                            format!("step {}: an accumulator's key is corrupt", cfg.name)
                        })?;
                        let (start, _) = keys::take_i64(rest).with_context(|| {
                            format!("step {}: an accumulator's key is corrupt", cfg.name)
                        })?;
                        let (end, ts, acc) = keys::agg_value_ts(v).with_context(|| {
                            format!("step {}: a stored accumulator is corrupt", cfg.name)
                        })?;
                        let place = Place::Acc {
                            key: key.to_vec(),
                            start,
                            end,
                            ts,
                        };
                        (place, acc)
                    }
                    Some(s) => {
                        let place = Place::Store {
                            store: s.clone(),
                            key: rest.to_vec(),
                        };
                        (place, v.as_slice())
                    }
                };
                let (store_name, key) = match &place {
                    Place::Acc { key, .. } => ("", key.as_slice()),
                    Place::Store { store, key } => (store.as_str(), key.as_slice()),
                };
                codec::put_bytes(&mut batch, store_name.as_bytes());
                codec::put_opt(&mut batch, Some(key));
                codec::put_bytes(&mut batch, value);
                places.push(place);
            }
            let refused = |why: String| {
                UpgradeRefused(format!(
                    "{module} cannot upgrade step {}'s state from format {from}: {why}",
                    cfg.name
                ))
            };
            let out = guest
                .upgrade(from, &batch)?
                .map_err(|trap| refused(format!("upgrade trapped: {trap}")))?;
            let mut results: Vec<Option<Result<Option<Vec<u8>>, String>>> =
                vec![None; places.len()];
            codec::read_results(&out, places.len(), |i, e| {
                let slot = &mut results[i as usize];
                match e {
                    Entry::Value(v) => *slot = Some(Ok(v.map(<[u8]>::to_vec))),
                    Entry::Rejected(m) => *slot = Some(Err(m.to_string())),
                    Entry::Output(_) | Entry::Accumulator(_) => {}
                }
            })
            .map_err(|e| refused(format!("upgrade returned a malformed result list: {e}")))?;
            for (place, result) in places.iter().zip(results) {
                match result {
                    None => {}
                    Some(Err(m)) => {
                        return Err(refused(format!("{m} ({})", describe(place))).into());
                    }
                    Some(Ok(v)) => write(cfg, pipeline, partition, txn, place, v),
                }
            }
            entries += chunk.len() as u64;
            if chunk.len() < CHUNK {
                break;
            }
        }
    }
    record(txn, format_key, to);
    Ok(Upgraded { entries, ..done })
}

/// The prefixes of a step's upgradable state in a partition, with the store
/// each belongs to (`None`: an aggregate's accumulators).
fn prefixes(cfg: &StepConfig, pipeline: &str, partition: u32) -> Vec<(Option<String>, Vec<u8>)> {
    match cfg.kind {
        StepKind::Aggregate => vec![(None, keys::step(pipeline, b'a', &cfg.name, partition))],
        StepKind::Processor => cfg
            .stores
            .iter()
            .map(|s| {
                (
                    Some(s.clone()),
                    keys::store_prefix(pipeline, &cfg.name, s, partition),
                )
            })
            .collect(),
        StepKind::Map | StepKind::Join => Vec::new(),
    }
}

fn record(txn: &mut Txn, key: Vec<u8>, format: u32) {
    if format == 0 {
        txn.delete(key);
    } else {
        txn.put(key, format.to_be_bytes().to_vec());
    }
}

/// `key "apple"` or `store "seen", key "apple"`, for messages.
fn describe(place: &Place) -> String {
    let show = |k: &[u8]| format!("{:?}", String::from_utf8_lossy(k));
    match place {
        Place::Acc { key, .. } => format!("key {}", show(key)),
        Place::Store { store, key } => format!("store {store:?}, key {}", show(key)),
    }
}

/// Writes an upgraded entry (`None`: deletes it, with an aggregate
/// window's close index entry).
fn write(
    cfg: &StepConfig,
    pipeline: &str,
    partition: u32,
    txn: &mut Txn,
    place: &Place,
    value: Option<Vec<u8>>,
) {
    match place {
        Place::Acc {
            key,
            start,
            end,
            ts,
        } => {
            let k = keys::agg(pipeline, &cfg.name, partition, key, *start);
            match value {
                Some(acc) => txn.put(k, keys::agg_entry(*end, *ts, &acc)),
                None => {
                    txn.delete(k);
                    // Indexed at its end (a session's: its end + gap).
                    let close = match cfg.window {
                        Some(super::config::Window::Session { gap }) => end.saturating_add(gap),
                        _ => *end,
                    };
                    if cfg.window.is_some() {
                        txn.delete(keys::agg_close(
                            pipeline, &cfg.name, partition, close, key, *start,
                        ));
                    }
                }
            }
        }
        Place::Store { store, key } => {
            let k = keys::store(pipeline, &cfg.name, store, partition, key);
            match value {
                Some(v) => txn.put(k, v),
                None => txn.delete(k),
            }
        }
    }
}

/// Stands in for an operator's guest while [`ensure_format`] runs the real
/// one (an operator lends its guest only by swapping it out).
pub(crate) struct Lent;

impl Guest for Lent {
    fn name(&self) -> &str {
        "(lent)"
    }

    fn world(&self) -> World {
        World::Mapper
    }

    fn call(
        &mut self,
        _call: Call<'_>,
        _state: Option<Box<dyn GuestState>>,
    ) -> Result<Called, StepError> {
        Err(StepError::Instantiate {
            module: "(lent)".into(),
            message: "the step's guest is upgrading its state".into(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::codec::Reader;
    use crate::operators::testing::{Results, step};

    /// Committed state: a sorted map.
    struct Committed(BTreeMap<Vec<u8>, Vec<u8>>);

    impl StateRead for Committed {
        fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
            Ok(self.0.get(key).cloned())
        }
        fn range(
            &self,
            start: &[u8],
            end: &[u8],
            limit: usize,
        ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
            Ok(self
                .0
                .range(start.to_vec()..end.to_vec())
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        }
    }

    /// A module of format `format` that upper-cases values, drops the
    /// entry of key "drop", rejects the key "bad", and counts its calls.
    struct Upper {
        format: u32,
        exports: bool,
        calls: Vec<(u32, usize, Vec<String>)>,
    }

    impl Guest for Upper {
        fn name(&self) -> &str {
            "upper@2"
        }
        fn world(&self) -> World {
            World::Processor
        }
        fn call(
            &mut self,
            _call: Call<'_>,
            state: Option<Box<dyn GuestState>>,
        ) -> Result<Called, StepError> {
            Ok((Err("not called".into()), state))
        }
        fn upgrades(&self) -> bool {
            self.exports
        }
        fn state_format(&mut self) -> Result<Result<u32, String>, StepError> {
            Ok(Ok(if self.exports { self.format } else { 0 }))
        }
        fn upgrade(
            &mut self,
            from: u32,
            batch: &[u8],
        ) -> Result<Result<Vec<u8>, String>, StepError> {
            let mut r = Reader::new(batch);
            let n = r.u32("n").unwrap();
            let mut out = Results::new();
            let mut stores = Vec::new();
            for i in 0..n {
                let store = r.string("store").unwrap().to_string();
                let key = r.opt_bytes("key").unwrap().unwrap().to_vec();
                let value = r.bytes("value").unwrap().to_ascii_uppercase();
                match key.as_slice() {
                    b"drop" => out.value(i, None),
                    b"bad" => out.rejected(i, "cannot read it"),
                    _ => out.value(i, Some(&value)),
                }
                if !stores.contains(&store) {
                    stores.push(store);
                }
            }
            self.calls.push((from, n as usize, stores));
            Ok(Ok(out.finish()))
        }
    }

    fn processor() -> StepConfig {
        step(
            "name = \"proc\"\nkind = \"processor\"\nmodule = \"proc.wasm\"\nstores = [\"a\", \"b\"]",
        )
    }

    #[test]
    fn every_store_entry_goes_through_upgrade_in_chunks_with_pending_writes_and_once() {
        let cfg = processor();
        let mut committed = BTreeMap::new();
        for i in 0..2500u32 {
            committed.insert(
                keys::store("p", "proc", "a", 3, format!("k{i:04}").as_bytes()),
                b"v".to_vec(),
            );
        }
        committed.insert(keys::store("p", "proc", "b", 3, b"drop"), b"x".to_vec());
        // Another partition's and another step's entries stay as they are.
        committed.insert(keys::store("p", "proc", "a", 4, b"k"), b"v".to_vec());
        committed.insert(keys::store("p", "other", "a", 3, b"k"), b"v".to_vec());
        let base: Arc<dyn StateRead> = Arc::new(Committed(committed));
        let mut txn = Txn::default();
        // An uncommitted write is upgraded as the task sees it.
        txn.put(
            keys::store("p", "proc", "b", 3, b"new"),
            b"pending".to_vec(),
        );
        let mut g = Upper {
            format: 2,
            exports: true,
            calls: Vec::new(),
        };
        let done = ensure_format(&cfg, &mut g, "p", 3, &base, &mut txn).unwrap();
        assert_eq!(
            done,
            Upgraded {
                from: 0,
                to: 2,
                entries: 2502
            }
        );
        let calls: Vec<(u32, usize)> = g.calls.iter().map(|c| (c.0, c.1)).collect();
        assert_eq!(calls, [(0, 1000), (0, 1000), (0, 500), (0, 2)]);
        assert_eq!(g.calls[3].2, ["b"]);
        let get = |txn: &Txn, store: &str, p: u32, step: &str, k: &[u8]| {
            txn.get(base.as_ref(), &keys::store("p", step, store, p, k))
                .unwrap()
        };
        assert_eq!(get(&txn, "a", 3, "proc", b"k0000"), Some(b"V".to_vec()));
        assert_eq!(get(&txn, "a", 3, "proc", b"k2499"), Some(b"V".to_vec()));
        assert_eq!(get(&txn, "b", 3, "proc", b"new"), Some(b"PENDING".to_vec()));
        assert_eq!(get(&txn, "b", 3, "proc", b"drop"), None);
        assert_eq!(get(&txn, "a", 4, "proc", b"k"), Some(b"v".to_vec()));
        assert_eq!(get(&txn, "a", 3, "other", b"k"), Some(b"v".to_vec()));
        assert_eq!(
            txn.get(base.as_ref(), &keys::state_format("p", "proc", 3))
                .unwrap(),
            Some(2u32.to_be_bytes().to_vec())
        );
        // Recorded: a second start changes nothing.
        let again = ensure_format(&cfg, &mut g, "p", 3, &base, &mut txn).unwrap();
        assert_eq!(again.entries, 0);
        assert_eq!(g.calls.len(), 4);
    }

    #[test]
    fn a_step_without_state_records_the_format_and_one_with_state_needs_an_upgrade() {
        let cfg = processor();
        let base: Arc<dyn StateRead> = Arc::new(Committed(BTreeMap::new()));
        let mut txn = Txn::default();
        let mut g = Upper {
            format: 5,
            exports: true,
            calls: Vec::new(),
        };
        ensure_format(&cfg, &mut g, "p", 0, &base, &mut txn).unwrap();
        assert!(g.calls.is_empty());
        assert_eq!(
            txn.get(base.as_ref(), &keys::state_format("p", "proc", 0))
                .unwrap(),
            Some(5u32.to_be_bytes().to_vec())
        );
        // State in format 5; a module of format 0 without the export.
        txn.put(keys::store("p", "proc", "a", 0, b"k"), b"v".to_vec());
        let mut old = Upper {
            format: 0,
            exports: false,
            calls: Vec::new(),
        };
        let e = ensure_format(&cfg, &mut old, "p", 0, &base, &mut txn).unwrap_err();
        assert!(e.is::<UpgradeRefused>());
        assert_eq!(
            e.to_string(),
            "step proc's state is in format 5; upper@2 writes format 0 and exports no upgrade"
        );
    }

    #[test]
    fn a_rejected_accumulator_refuses_the_switch_naming_its_key() {
        let cfg = step("name = \"count\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"");
        let mut committed = BTreeMap::new();
        for (k, start) in [(&b"apple"[..], 0), (b"bad", 10)] {
            let v = keys::agg_entry(20, 15, b"1");
            committed.insert(keys::agg("p", "count", 1, k, start), v);
        }
        let base: Arc<dyn StateRead> = Arc::new(Committed(committed));
        let mut txn = Txn::default();
        let mut g = Upper {
            format: 1,
            exports: true,
            calls: Vec::new(),
        };
        let e = ensure_format(&cfg, &mut g, "p", 1, &base, &mut txn).unwrap_err();
        assert_eq!(
            e.to_string(),
            "upper@2 cannot upgrade step count's state from format 0: cannot read it (key \"bad\")"
        );
        assert_eq!(g.calls[0].2, [""]);
    }

    #[test]
    fn an_upgraded_session_keeps_its_end_and_timestamp_and_a_dropped_one_leaves_no_close_entry() {
        let cfg = step(
            "name = \"count\"\nkind = \"aggregate\"\nmodule = \"count.wasm\"\nwindow = { type = \"session\", gap = \"5s\" }\nemit = \"close\"",
        );
        let mut committed = BTreeMap::new();
        for k in [&b"keep"[..], b"drop"] {
            committed.insert(
                keys::agg("p", "count", 1, k, 1_000),
                keys::agg_entry(3_000, 3_000, b"2"),
            );
            // Indexed at its end + gap.
            committed.insert(
                keys::agg_close("p", "count", 1, 8_000, k, 1_000),
                Vec::new(),
            );
        }
        let base: Arc<dyn StateRead> = Arc::new(Committed(committed));
        let mut txn = Txn::default();
        let mut g = Upper {
            format: 1,
            exports: true,
            calls: Vec::new(),
        };
        ensure_format(&cfg, &mut g, "p", 1, &base, &mut txn).unwrap();
        let written = txn.take();
        assert_eq!(
            written.get(&keys::agg("p", "count", 1, b"keep", 1_000)),
            Some(&Some(keys::agg_entry(3_000, 3_000, b"2")))
        );
        assert_eq!(
            written.get(&keys::agg("p", "count", 1, b"drop", 1_000)),
            Some(&None)
        );
        assert_eq!(
            written.get(&keys::agg_close("p", "count", 1, 8_000, b"drop", 1_000)),
            Some(&None)
        );
    }
}
