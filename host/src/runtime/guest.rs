//! [`Guest`]: what runs a step's function — a Wasm [`super::Step`], or a
//! native stand-in in tests and benchmarks — and the rules for its failures
//! that every caller shares: a batch that traps is retried record by record,
//! so that only the record that traps goes to the dead letters, and a trap
//! leaves no state change behind.

use std::borrow::Borrow;

use super::state::GuestState;
use super::{StepError, World};
use crate::codec::{self, Entry};
use crate::record::{Failure, Packed};

/// One call into a guest.
#[derive(Clone, Copy, Debug)]
pub enum Call<'a> {
    /// A `list<u8> -> list<u8>` export (`process`, `add`, `present`, `join`).
    Export(&'static str, &'a [u8]),
    /// The aggregator's `merge`.
    Merge(&'a [u8], &'a [u8]),
    /// The processor's `on-timer`.
    Timer(i64, &'a [u8]),
}

/// What the return value of [`Guest::call`] is: the call's result (its bytes,
/// or why it failed: a trap, or the guest's own error from `merge`) and the
/// state handed in.
pub type Called = (Result<Vec<u8>, String>, Option<Box<dyn GuestState>>);

/// What one input record led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emitted {
    /// An output: its named output (`None`: the step's default) and the
    /// record, with the input's offset.
    Output(Option<String>, Packed),
    /// The input goes to the dead letters, for this reason.
    Failed(Failure),
}

/// What [`process_batch`] returns: what each record led to, with the index
/// of the record, and the state handed in.
pub type Processed = (Vec<(usize, Emitted)>, Option<Box<dyn GuestState>>);

/// A step's function.
pub trait Guest: Send {
    /// Its name, for messages (the module's file or registry name).
    fn name(&self) -> &str;

    /// The world it implements.
    fn world(&self) -> World;

    /// Time spent inside its calls so far (the guest's own code and the
    /// host functions it called), as opposed to the host's work around them.
    fn guest_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Calls it, with `state` available to a processor during the call.
    /// `Err` is a step that cannot run at all (its instance cannot be made).
    fn call(
        &mut self,
        call: Call<'_>,
        state: Option<Box<dyn GuestState>>,
    ) -> Result<Called, StepError>;

    /// Whether it exports `upgrading` (it can convert older state).
    fn upgrades(&self) -> bool {
        false
    }

    /// The format of the state it writes: its `state-format`, or 0 when it
    /// does not export `upgrading`. `Ok(Err)` is a trap.
    fn state_format(&mut self) -> Result<Result<u32, String>, StepError> {
        Ok(Ok(0))
    }

    /// Calls its `upgrade` with state entries written in format `from`
    /// (packed as `wit/functions.wit` says); `Ok(Err)` is a trap.
    fn upgrade(&mut self, from: u32, batch: &[u8]) -> Result<Result<Vec<u8>, String>, StepError> {
        let _ = (from, batch);
        Ok(Err(format!("{} exports no upgrade", self.name())))
    }
}

/// Runs a mapper (or a processor, with `state`) over records. Outcomes come
/// back in input order, each with the index of the record it came from.
/// When the batch fails, it is retried one record at a time, so that only
/// the records that fail on their own become dead letters; a failed call's
/// state changes are rolled back.
pub fn process_batch(
    guest: &mut dyn Guest,
    records: &[impl Borrow<Packed>],
    state: Option<Box<dyn GuestState>>,
) -> Result<Processed, StepError> {
    if records.is_empty() {
        return Ok((Vec::new(), state));
    }
    let batch = codec::pack_batch(records.iter().map(|r| r.borrow().bytes()));
    let (result, mut state) = guest.call(Call::Export("process", &batch), state)?;
    let failure = match result {
        Ok(out) => match decode_map(&out, records) {
            Ok(outcomes) => {
                if let Some(s) = state.as_mut() {
                    s.keep();
                }
                return Ok((outcomes, state));
            }
            Err(e) => e.to_string(),
        },
        Err(trap) => trap,
    };
    if let Some(s) = state.as_mut() {
        s.rollback();
    }
    if records.len() == 1 {
        return Ok((vec![(0, Emitted::Failed(Failure::Trapped(failure)))], state));
    }
    tracing::debug!(module = %guest.name(), "batch of {} failed ({failure}); retrying record by record", records.len());
    let mut outcomes = Vec::with_capacity(records.len());
    for (j, r) in records.iter().enumerate() {
        let (o, s) = process_batch(guest, std::slice::from_ref(r), state)?;
        state = s;
        outcomes.extend(o.into_iter().map(|(_, o)| (j, o)));
    }
    Ok((outcomes, state))
}

/// Calls a processor's `on-timer`: its outputs (named output, record), or
/// why it failed (its changes are then rolled back).
#[allow(clippy::type_complexity)]
pub fn fire_timer(
    guest: &mut dyn Guest,
    time: i64,
    tag: &[u8],
    state: Box<dyn GuestState>,
) -> Result<
    (
        Result<Vec<(Option<String>, Packed)>, String>,
        Option<Box<dyn GuestState>>,
    ),
    StepError,
> {
    let (result, mut state) = guest.call(Call::Timer(time, tag), Some(state))?;
    let outcome = result.and_then(|out| {
        let mut outputs = Vec::new();
        let mut rejected = None;
        codec::read_results(&out, 1, |_, e| match e {
            Entry::Output(o) => {
                outputs.push((o.to.map(str::to_string), Packed::from_output(&o, 0)))
            }
            Entry::Rejected(m) => rejected = Some(m.to_string()),
            _ => {}
        })
        .map_err(|e| e.to_string())?;
        match rejected {
            Some(m) => Err(m),
            None => Ok(outputs),
        }
    });
    if let Some(s) = state.as_mut() {
        if outcome.is_ok() {
            s.keep();
        } else {
            s.rollback();
        }
    }
    Ok((outcome, state))
}

fn decode_map(
    out: &[u8],
    records: &[impl Borrow<Packed>],
) -> Result<Vec<(usize, Emitted)>, codec::Malformed> {
    let mut outcomes = Vec::with_capacity(records.len());
    let mut bad_tag = None;
    codec::read_results(out, records.len(), |i, entry| {
        let input: &Packed = records[i as usize].borrow();
        match entry {
            Entry::Output(o) => {
                // An output that names no headers keeps its input's, as
                // Kafka Streams' map, flatMap and process (record.withKey,
                // withValue) forward the input record's headers.
                let rec = if o.headers().next().is_none() && input.headers().next().is_some() {
                    Packed::new(input.offset(), o.timestamp, o.key, o.value, input.headers())
                } else {
                    Packed::from_output(&o, input.offset())
                };
                outcomes.push((i as usize, Emitted::Output(o.to.map(str::to_string), rec)))
            }
            Entry::Rejected(m) => outcomes.push((
                i as usize,
                Emitted::Failed(Failure::Rejected(m.to_string())),
            )),
            Entry::Accumulator(_) | Entry::Value(_) => bad_tag = Some(i),
        }
    })?;
    match bad_tag {
        Some(i) => Err(codec::Malformed(format!(
            "input {i} got an accumulator or value entry, which a mapper does not return"
        ))),
        None => Ok(outcomes),
    }
}

/// A native function standing in for a guest: tests run operators with it,
/// without Wasm. `f` gets the call and the state (for a processor) and
/// returns the call's result.
pub struct NativeGuest<F> {
    name: String,
    world: World,
    f: F,
}

impl<F> NativeGuest<F>
where
    F: FnMut(Call<'_>, Option<&mut dyn GuestState>) -> Result<Vec<u8>, String> + Send,
{
    /// A stand-in of `world` called `name`.
    pub fn new(name: &str, world: World, f: F) -> Self {
        NativeGuest {
            name: name.to_string(),
            world,
            f,
        }
    }
}

impl<F> Guest for NativeGuest<F>
where
    F: FnMut(Call<'_>, Option<&mut dyn GuestState>) -> Result<Vec<u8>, String> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn world(&self) -> World {
        self.world
    }

    fn call(
        &mut self,
        call: Call<'_>,
        mut state: Option<Box<dyn GuestState>>,
    ) -> Result<Called, StepError> {
        let r = (self.f)(call, state.as_deref_mut());
        Ok((r, state))
    }
}
