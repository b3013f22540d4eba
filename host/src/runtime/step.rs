//! [`Step`]: one module running as one step of a pipeline (or of `weir
//! test`). It owns a live instance, makes a fresh one after a trap, and turns
//! a trap on a batch into a dead letter for the one record that caused it.

use std::borrow::Borrow;
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{ComponentNamedList, Func, Lift, Lower, TypedFunc};

use super::{HostState, Module, RuntimeOptions, TICK, Tags, World};
use crate::codec::{self, Entry};
use crate::record::{DeadLetter, Failure, Outcome, Output, Record};

/// Why a step cannot run at all (as opposed to a record it cannot process,
/// which becomes a dead letter).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The guest's `init` refused the settings.
    #[error("{module}: init refused the settings: {message}")]
    Init {
        /// The module.
        module: String,
        /// The guest's message.
        message: String,
    },
    /// The instance could not be made or `init` trapped.
    #[error("{module}: cannot start an instance: {message}")]
    Instantiate {
        /// The module.
        module: String,
        /// Why.
        message: String,
    },
    /// The step was asked for something its world does not do.
    #[error("{module}: is {}, which {what}", world.with_article())]
    WrongWorld {
        /// The module.
        module: String,
        /// Its world.
        world: World,
        /// What was asked.
        what: String,
    },
}

struct Live {
    store: Store<HostState>,
    funcs: Vec<(&'static str, Func)>,
}

/// One module running as one step.
pub struct Step {
    module: Module,
    tags: Tags,
    config: Vec<(String, String)>,
    memory_limit: usize,
    deadline: Duration,
    live: Option<Live>,
    instances: u64,
    last_instantiate: Duration,
    /// A processor's state when it runs outside a pipeline (`weir test`):
    /// kept in memory for the life of the step.
    scratch: Option<crate::pipeline::txn::Txn>,
    /// A native stand-in for the guest's bytes-to-bytes exports, for
    /// benchmarks that compare the same pipeline with a native step.
    native: Option<NativeFn>,
}

/// A native implementation of a world's bytes-to-bytes exports: called with
/// the export's name and the packed input, returns the packed result list.
pub type NativeFn = Box<dyn FnMut(&str, &[u8]) -> Vec<u8> + Send>;

type InitFn = TypedFunc<(Vec<(String, String)>,), (Result<(), String>,)>;

impl Step {
    /// A step running `module` as `step` with these settings. No instance is
    /// made until the first call.
    pub fn new(
        module: Module,
        step: &str,
        config: Vec<(String, String)>,
        options: &RuntimeOptions,
    ) -> Self {
        let tags = Tags {
            module: module.name().into(),
            step: step.into(),
        };
        Step {
            module,
            tags,
            config,
            memory_limit: options.memory_limit,
            deadline: options.deadline,
            live: None,
            instances: 0,
            last_instantiate: Duration::ZERO,
            scratch: None,
            native: None,
        }
    }

    /// Replaces the guest's bytes-to-bytes exports with native code (for
    /// benchmarks).
    pub fn set_native(&mut self, f: NativeFn) {
        self.native = Some(f);
    }

    /// The module.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// How many instances it has made (one, plus one after each trap).
    pub fn instances(&self) -> u64 {
        self.instances
    }

    /// How long making the last instance and calling its `init` took.
    pub fn last_instantiate_time(&self) -> Duration {
        self.last_instantiate
    }

    fn deadline_ticks(&self) -> u64 {
        (self.deadline.as_nanos() / TICK.as_nanos()).max(1) as u64 + 1
    }

    /// Makes the instance now (it is otherwise made on the first call).
    pub fn start(&mut self) -> Result<(), StepError> {
        self.live().map(|_| ())
    }

    fn live(&mut self) -> Result<&mut Live, StepError> {
        if self.live.is_none() {
            let started = Instant::now();
            let live = self.instantiate()?;
            self.last_instantiate = started.elapsed();
            self.instances += 1;
            self.live = Some(live);
        }
        let module = self.module.name().to_string();
        self.live.as_mut().ok_or(StepError::Instantiate {
            module,
            message: "no instance".into(),
        })
    }

    fn instantiate_error(&self, message: String) -> StepError {
        StepError::Instantiate {
            module: self.module.name().to_string(),
            message,
        }
    }

    fn instantiate(&self) -> Result<Live, StepError> {
        let module = &self.module;
        let Some(pre) = module.pre() else {
            return Err(StepError::WrongWorld {
                module: module.name().to_string(),
                world: module.world(),
                what: "needs state stores and timers, which only pipelines (`weir run`) provide"
                    .into(),
            });
        };
        let mut store = Store::new(
            pre.engine(),
            HostState::new(self.tags.clone(), self.memory_limit),
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| self.instantiate_error(format!("{e:#}")))?;
        let mut funcs = Vec::new();
        for f in module.world().functions() {
            let func = module
                .func(f)
                .and_then(|idx| instance.get_func(&mut store, idx))
                .ok_or_else(|| self.instantiate_error(format!("export `{f}` is missing")))?;
            let checked = if *f == "init" {
                func.typed::<(Vec<(String, String)>,), (Result<(), String>,)>(&store)
                    .map(|_| ())
            } else if *f == "merge" {
                func.typed::<(&[u8], &[u8]), (Result<Vec<u8>, String>,)>(&store)
                    .map(|_| ())
            } else if *f == "on-timer" {
                func.typed::<(i64, &[u8]), (Vec<u8>,)>(&store).map(|_| ())
            } else {
                func.typed::<(&[u8],), (Vec<u8>,)>(&store).map(|_| ())
            };
            checked.map_err(|e| {
                self.instantiate_error(format!(
                    "export `{f}` of {} has the wrong type: {e:#}",
                    module.world().interface()
                ))
            })?;
            funcs.push((*f, func));
        }
        let init = funcs
            .iter()
            .find(|(n, _)| *n == "init")
            .map(|(_, f)| *f)
            .ok_or_else(|| self.instantiate_error("export `init` is missing".into()))?;
        // SAFETY: checked with `typed` above.
        let init: InitFn = unsafe { TypedFunc::new_unchecked(init) };
        let result = init.call(&mut store, (self.config.clone(),));
        let stderr = store.data_mut().drain_output();
        match result {
            Ok((Ok(()),)) => {
                store.data().log_stderr(&stderr);
                Ok(Live { store, funcs })
            }
            Ok((Err(message),)) => Err(StepError::Init {
                module: module.name().to_string(),
                message,
            }),
            Err(e) => Err(self.instantiate_error(format!(
                "init {}",
                describe_trap(&e, &stderr, self.deadline, self.memory_limit)
            ))),
        }
    }

    /// Calls a `list<u8> -> list<u8>` export. `Ok(Err(reason))` is a trap:
    /// the instance is gone, and the next call makes a fresh one.
    pub fn call_bytes(
        &mut self,
        function: &str,
        input: &[u8],
    ) -> Result<Result<Vec<u8>, String>, StepError> {
        if let Some(f) = self.native.as_mut() {
            return Ok(Ok(f(function, input)));
        }
        Ok(self
            .call::<(&[u8],), (Vec<u8>,)>(function, (input,))?
            .map(|(out,)| out))
    }

    /// Calls an export with the types it was checked to have when the
    /// instance was made, under the step's deadline. A trap drops the
    /// instance and comes back as `Ok(Err(reason))`; what the guest wrote to
    /// stderr goes into that reason, or into the log when the call succeeded.
    fn call<P, R>(&mut self, function: &str, params: P) -> Result<Result<R, String>, StepError>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let (deadline, memory_limit) = (self.deadline, self.memory_limit);
        let ticks = self.deadline_ticks();
        let world = self.module.world();
        let name = self.module.name().to_string();
        let live = self.live()?;
        let Some(func) = live
            .funcs
            .iter()
            .find(|(n, _)| *n == function)
            .map(|(_, f)| *f)
        else {
            return Err(StepError::WrongWorld {
                module: name,
                world,
                what: format!("has no `{function}` function"),
            });
        };
        live.store.set_epoch_deadline(ticks);
        // SAFETY: every export was checked with `typed` when the instance was
        // made, with the types its callers here use.
        let typed: TypedFunc<P, R> = unsafe { TypedFunc::new_unchecked(func) };
        let result = typed.call(&mut live.store, params);
        let stderr = live.store.data_mut().drain_output();
        match result {
            Ok(r) => {
                live.store.data().log_stderr(&stderr);
                Ok(Ok(r))
            }
            Err(e) => {
                self.live = None;
                Ok(Err(describe_trap(&e, &stderr, deadline, memory_limit)))
            }
        }
    }

    /// Calls the aggregator's `merge`. `Ok(Err(reason))` is the guest's error
    /// or a trap (after which the next call makes a fresh instance).
    pub fn merge(&mut self, a: &[u8], b: &[u8]) -> Result<Result<Vec<u8>, String>, StepError> {
        Ok(self
            .call::<(&[u8], &[u8]), (Result<Vec<u8>, String>,)>("merge", (a, b))?
            .and_then(|(r,)| r))
    }

    /// Runs a processor over records with state: `ctx` holds the task's
    /// pending state changes, and comes back with the batch's changes added.
    /// A trap discards the changes of the call that trapped; the batch is
    /// then retried record by record, so the trapping record is a dead letter
    /// and leaves no state change behind.
    pub fn process(
        &mut self,
        records: &[impl Borrow<Record>],
        ctx: super::StateCtx,
    ) -> Result<(Vec<(usize, Outcome)>, super::StateCtx), StepError> {
        if records.is_empty() {
            return Ok((Vec::new(), ctx));
        }
        let batch = codec::encode_batch(records.iter().map(Borrow::borrow));
        self.live()?.store.data_mut().state = Some(ctx.clone());
        let result = self.call_bytes("process", &batch)?;
        let after = self
            .live
            .as_mut()
            .and_then(|l| l.store.data_mut().state.take());
        let failure = match (result, after) {
            (Ok(out), Some(new_ctx)) => match decode_map(&out, records) {
                Ok(outcomes) => return Ok((outcomes, new_ctx)),
                Err(e) => e.to_string(),
            },
            (Ok(_), None) => "the instance lost its state context".to_string(),
            (Err(trap), _) => trap,
        };
        if let [record] = records {
            let record: &Record = record.borrow();
            return Ok((
                vec![(
                    0,
                    Outcome::Dead(DeadLetter {
                        record: record.clone(),
                        failure: Failure::Trapped(failure),
                    }),
                )],
                ctx,
            ));
        }
        let mut outcomes = Vec::with_capacity(records.len());
        let mut ctx = ctx;
        for (j, r) in records.iter().enumerate() {
            let (o, c) = self.process(std::slice::from_ref(r), ctx)?;
            outcomes.extend(o.into_iter().map(|(_, o)| (j, o)));
            ctx = c;
        }
        Ok((outcomes, ctx))
    }

    /// Calls a processor's `on-timer`. Returns its outputs (or why it failed)
    /// and the state context (unchanged when it failed).
    #[allow(clippy::type_complexity)]
    pub fn on_timer(
        &mut self,
        time: i64,
        tag: &[u8],
        ctx: super::StateCtx,
    ) -> Result<
        (
            Result<Vec<(Option<String>, Record)>, String>,
            super::StateCtx,
        ),
        StepError,
    > {
        let name = self.module.name().to_string();
        self.live()?.store.data_mut().state = Some(ctx.clone());
        let result = self.call::<(i64, &[u8]), (Vec<u8>,)>("on-timer", (time, tag))?;
        let after = self
            .live
            .as_mut()
            .and_then(|l| l.store.data_mut().state.take());
        match (result, after) {
            (Ok((out,)), Some(new_ctx)) => {
                let mut outputs = Vec::new();
                let mut rejected = None;
                codec::read_results(&out, 1, |_, e| match e {
                    Entry::Output(o) => outputs.push(o.to_owned(0)),
                    Entry::Rejected(m) => rejected = Some(m.to_string()),
                    _ => {}
                })
                .map_err(|e| StepError::Instantiate {
                    module: name.clone(),
                    message: e.to_string(),
                })?;
                match rejected {
                    Some(m) => Ok((Err(m), ctx)),
                    None => Ok((Ok(outputs), new_ctx)),
                }
            }
            (Ok(_), None) => Ok((Err("the instance lost its state context".into()), ctx)),
            (Err(trap), _) => Ok((Err(trap), ctx)),
        }
    }

    /// Runs a mapper over records. Outputs and dead letters come back in
    /// input order. When the guest traps on the batch, the batch is retried
    /// one record at a time on fresh instances, so that only the records
    /// that trap on their own become dead letters.
    pub fn map(&mut self, records: &[Record]) -> Result<Vec<Outcome>, StepError> {
        if self.module.world() == World::Processor {
            let ctx = super::StateCtx {
                log: None,
                pipeline: "test".into(),
                step: self.tags.step.to_string(),
                partition: 0,
                stores: Vec::new(),
                txn: self.scratch.take().unwrap_or_default(),
            };
            let (outcomes, ctx) = self.process(records, ctx)?;
            self.scratch = Some(ctx.txn);
            return Ok(outcomes.into_iter().map(|(_, o)| o).collect());
        }
        Ok(self
            .map_indexed(records)?
            .into_iter()
            .map(|(_, o)| o)
            .collect())
    }

    /// As [`Step::map`], with each outcome paired with the index of the
    /// input record it came from.
    pub fn map_indexed(
        &mut self,
        records: &[impl Borrow<Record>],
    ) -> Result<Vec<(usize, Outcome)>, StepError> {
        if self.module.world() != World::Mapper {
            return Err(StepError::WrongWorld {
                module: self.module.name().to_string(),
                world: self.module.world(),
                what: "does not map records one by one; run it in a pipeline (`weir run`)".into(),
            });
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let batch = codec::encode_batch(records.iter().map(Borrow::borrow));
        let failure = match self.call_bytes("process", &batch)? {
            Ok(out) => match decode_map(&out, records) {
                Ok(outcomes) => return Ok(outcomes),
                Err(e) => e.to_string(),
            },
            Err(trap) => trap,
        };
        if let [record] = records {
            let record: &Record = record.borrow();
            return Ok(vec![(
                0,
                Outcome::Dead(DeadLetter {
                    record: record.clone(),
                    failure: Failure::Trapped(failure),
                }),
            )]);
        }
        tracing::debug!(module = %self.module.name(), "batch of {} failed ({failure}); retrying record by record", records.len());
        let mut outcomes = Vec::with_capacity(records.len());
        for (j, r) in records.iter().enumerate() {
            outcomes.extend(
                self.map_indexed(std::slice::from_ref(r))?
                    .into_iter()
                    .map(|(_, o)| (j, o)),
            );
        }
        Ok(outcomes)
    }
}

fn decode_map(
    out: &[u8],
    records: &[impl Borrow<Record>],
) -> Result<Vec<(usize, Outcome)>, codec::Malformed> {
    let mut outcomes = Vec::with_capacity(records.len());
    let mut bad_tag = None;
    codec::read_results(out, records.len(), |i, entry| {
        let input: &Record = records[i as usize].borrow();
        match entry {
            Entry::Output(o) => {
                let (to, record) = o.to_owned(input.offset);
                outcomes.push((i as usize, Outcome::Output(Output { to, record })));
            }
            Entry::Rejected(m) => outcomes.push((
                i as usize,
                Outcome::Dead(DeadLetter {
                    record: input.clone(),
                    failure: Failure::Rejected(m.to_string()),
                }),
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

/// The host's reason for a trap: the deadline, the memory limit, the bytes a
/// call may hand the host, the panic
/// the SDK's panic hook reported (a panic traps with `unreachable`), or the
/// trap itself, with a hint when the guest's stack likely overflowed. What
/// the guest wrote to stderr never stands in for it: it follows after
/// [`crate::record::GUEST_OUTPUT`], and the dead letter carries it in a header of its own
/// (`weir.error.stderr`).
fn describe_trap(
    e: &wasmtime::Error,
    out: &super::host::GuestOutput,
    deadline: Duration,
    memory: usize,
) -> String {
    use crate::record::GUEST_OUTPUT;
    let full = format!("{e:#}");
    let reason = if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        // wasmtime says "wasm trap: out of bounds memory access".
        let said = trap.to_string();
        let what = said.strip_prefix("wasm trap: ").unwrap_or(&said);
        match trap {
            wasmtime::Trap::Interrupt => format!(
                "deadline exceeded: the call ran longer than {} ms",
                deadline.as_millis()
            ),
            wasmtime::Trap::UnreachableCodeReached => match panic_message(out) {
                Some(panic) => panic,
                None => format!("trapped: {what}"),
            },
            // A Rust guest's stack sits below its data (`--stack-first`), so
            // a stack that overflows runs below address 0 and the next access
            // is out of bounds; safe code does not reach that otherwise.
            wasmtime::Trap::MemoryOutOfBounds => format!(
                "trapped: {what} (the guest's stack may have overflowed: deep recursion or large local variables)"
            ),
            wasmtime::Trap::StackOverflow => {
                format!("trapped: {what} (the guest's calls nested too deeply)")
            }
            _ => format!("trapped: {what}"),
        }
    } else if let Some(over) = e.downcast_ref::<super::host::CallBytesExceeded>() {
        over.to_string()
    } else if full.contains("forcing trap when growing memory") {
        format!(
            "memory limit exceeded: the guest tried to grow its memory past {} MiB",
            memory >> 20
        )
    } else {
        format!("trapped: {full}")
    };
    let reason = reason.replace(GUEST_OUTPUT, " ");
    let said = out.stderr_tail().replace(GUEST_OUTPUT, " ");
    if said.is_empty() {
        reason
    } else {
        format!("{reason}{GUEST_OUTPUT}{said}")
    }
}

/// "panicked at src/lib.rs:12:20: boom", as the SDK's panic hook reported it.
fn panic_message(out: &super::host::GuestOutput) -> Option<String> {
    out.panic.clone()
}
