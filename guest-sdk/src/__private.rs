//! What the attribute macros expand to. Not a public API.

pub use wit_bindgen;

/// Bindings for the imports every world may use (log, state, timers). A
/// component only imports the ones its code calls.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "weir:functions/sdk",
        runtime_path: "crate::__private::wit_bindgen::rt",
    });
}

use crate::codec::{Reader, Writer};
use crate::{
    Aggregate, Config, Error, IntoOutputs, IntoValue, Pair, Processor, Record, StateEntry, Window,
};

/// Stores the step's settings and installs the panic hook; the generated
/// `init` export calls it.
pub fn init(config: Vec<(String, String)>) -> Result<(), String> {
    std::panic::set_hook(Box::new(report_panic));
    // A second `init` on the same instance keeps the first settings.
    let _ = crate::CONFIG.set(Config { entries: config });
    Ok(())
}

/// Reports a panic to the host before the call traps: as an error-level log
/// line `panicked at FILE:LINE:COL: MESSAGE`, which the host takes as the
/// reason of the `unreachable` trap that follows (a panic aborts in Wasm).
/// Nothing goes to stderr, which the host keeps apart as the guest's output.
fn report_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)");
    let line = match info.location() {
        Some(l) => format!(
            "panicked at {}:{}:{}: {message}",
            l.file(),
            l.line(),
            l.column()
        ),
        None => format!("panicked: {message}"),
    };
    crate::log::write(crate::log::Level::Error, &line);
}

/// Runs a per-record map function over a packed record batch.
pub fn map_batch<T, F>(batch: &[u8], f: F) -> Vec<u8>
where
    T: IntoOutputs,
    F: for<'a> Fn(Record<'a>) -> Result<T, Error>,
{
    let mut reader = Reader::new(batch);
    let count = reader.u32();
    let mut out = Writer::with_capacity(batch.len() + 64);
    for index in 0..count {
        let record = reader.record();
        let ts = record.timestamp;
        match f(record) {
            Ok(outputs) => outputs.for_each_output(|o| out.output(index, o, ts)),
            Err(e) => out.rejected(index, e.message()),
        }
    }
    out.finish()
}

/// Runs a processor's per-record function over a packed record batch.
pub fn process_batch<P: Processor>(batch: &[u8]) -> Vec<u8> {
    map_batch(batch, |r| P::process(&r))
}

/// Runs a processor's timer callback.
pub fn on_timer<P: Processor>(time: i64, tag: &[u8]) -> Vec<u8> {
    let mut out = Writer::with_capacity(64);
    match P::on_timer(time, tag) {
        Ok(outputs) => outputs.for_each_output(|o| out.output(0, o, time)),
        Err(e) => out.rejected(0, e.message()),
    }
    out.finish()
}

fn decode_acc<A: Aggregate>(bytes: Option<&[u8]>) -> Result<A::Acc, String> {
    match bytes {
        None => Ok(A::init()),
        Some(b) => serde_json::from_slice(b)
            .map_err(|e| format!("stored accumulator does not decode: {e}")),
    }
}

fn encode_acc<A: Aggregate>(acc: &A::Acc) -> Result<Vec<u8>, String> {
    serde_json::to_vec(acc).map_err(|e| format!("accumulator does not encode: {e}"))
}

/// Runs `Aggregate::add` over a packed aggregation batch.
#[allow(clippy::panic)]
pub fn aggregate_add<A: Aggregate>(batch: &[u8]) -> Vec<u8> {
    let mut reader = Reader::new(batch);
    let n = reader.u32();
    let records: Vec<Record<'_>> = (0..n).map(|_| reader.record()).collect();
    let groups: Vec<(Option<&[u8]>, Vec<u32>)> = (0..reader.u32())
        .map(|_| {
            let acc = reader.opt_bytes();
            let members = (0..reader.u32()).map(|_| reader.u32()).collect();
            (acc, members)
        })
        .collect();
    // A record rejected in one group is left out of every group; rerun until
    // no new rejection appears (one pass when nothing is rejected).
    let mut rejected: Vec<Option<String>> = vec![None; records.len()];
    loop {
        let before = rejected.iter().filter(|r| r.is_some()).count();
        let mut accs = Vec::with_capacity(groups.len());
        for (acc, members) in &groups {
            let mut acc = match decode_acc::<A>(*acc) {
                Ok(a) => a,
                Err(e) => panic!("weir-guest: {e}"),
            };
            for &i in members {
                let Some(record) = records.get(i as usize) else {
                    panic!("weir-guest: the host sent a group member {i} out of range");
                };
                if rejected[i as usize].is_some() {
                    continue;
                }
                if let Err(e) = A::add(&mut acc, record) {
                    rejected[i as usize] = Some(e.message().to_string());
                }
            }
            accs.push(acc);
        }
        let after = rejected.iter().filter(|r| r.is_some()).count();
        if after == before {
            let mut out = Writer::with_capacity(64 * groups.len());
            for (i, r) in rejected.iter().enumerate() {
                if let Some(m) = r {
                    out.rejected(i as u32, m);
                }
            }
            for (g, acc) in accs.iter().enumerate() {
                match encode_acc::<A>(acc) {
                    Ok(b) => out.accumulator(g as u32, &b),
                    Err(e) => panic!("weir-guest: {e}"),
                }
            }
            return out.finish();
        }
    }
}

/// Runs `Aggregate::merge` on two encoded accumulators.
pub fn aggregate_merge<A: Aggregate>(a: &[u8], b: &[u8]) -> Result<Vec<u8>, String> {
    let a = decode_acc::<A>(Some(a))?;
    let b = decode_acc::<A>(Some(b))?;
    encode_acc::<A>(&A::merge(a, b))
}

/// Runs `Aggregate::present` over a packed present batch.
pub fn aggregate_present<A: Aggregate>(batch: &[u8]) -> Vec<u8> {
    let mut reader = Reader::new(batch);
    let n = reader.u32();
    let mut out = Writer::with_capacity(64 * n as usize);
    for i in 0..n {
        let key = reader.opt_bytes();
        let start = reader.i64();
        let end = reader.i64();
        let acc = reader.bytes();
        let window = (start != 0 || end != 0).then_some(Window { start, end });
        let result = decode_acc::<A>(Some(acc))
            .map_err(Error::new)
            .and_then(|acc| A::present(&acc, key, window));
        match result {
            Ok(v) => out.value(i, v.as_deref()),
            Err(e) => out.rejected(i, e.message()),
        }
    }
    out.finish()
}

/// Runs a join function over a packed join batch.
pub fn join_batch<T, F>(batch: &[u8], f: F) -> Vec<u8>
where
    T: IntoValue,
    F: for<'a> Fn(Pair<'a>) -> Result<T, Error>,
{
    let mut reader = Reader::new(batch);
    let n = reader.u32();
    let mut out = Writer::with_capacity(batch.len() + 64);
    for i in 0..n {
        let key = reader.opt_bytes();
        let timestamp = reader.i64();
        let left = reader.opt_bytes();
        let right = reader.opt_bytes();
        match f(Pair {
            key,
            timestamp,
            left,
            right,
        }) {
            Ok(v) => out.value(i, v.into_value().as_deref()),
            Err(e) => out.rejected(i, e.message()),
        }
    }
    out.finish()
}

/// Runs an upgrade function over a packed upgrade batch (see `upgrading`
/// in `wit/functions.wit`): a value per entry, or the rejection.
pub fn upgrade_batch<F>(from: u32, batch: &[u8], f: F) -> Vec<u8>
where
    F: for<'a> Fn(u32, &StateEntry<'a>) -> Result<Option<Vec<u8>>, Error>,
{
    let mut reader = Reader::new(batch);
    let n = reader.u32();
    let mut out = Writer::with_capacity(batch.len() + 64);
    for i in 0..n {
        let store = std::str::from_utf8(reader.bytes()).unwrap_or("");
        let key = reader.opt_bytes();
        let value = reader.bytes();
        match f(from, &StateEntry { store, key, value }) {
            Ok(v) => out.value(i, v.as_deref()),
            Err(e) => out.rejected(i, e.message()),
        }
    }
    out.finish()
}

/// Runs `Aggregate::upgrade` over a packed upgrade batch.
pub fn aggregate_upgrade<A: Aggregate>(from: u32, batch: &[u8]) -> Vec<u8> {
    upgrade_batch(from, batch, |from, entry| match A::upgrade(from, entry)? {
        None => Ok(None),
        Some(acc) => encode_acc::<A>(&acc).map(Some).map_err(Error::new),
    })
}

/// Runs `Processor::upgrade` over a packed upgrade batch.
pub fn processor_upgrade<P: Processor>(from: u32, batch: &[u8]) -> Vec<u8> {
    upgrade_batch(from, batch, P::upgrade)
}
