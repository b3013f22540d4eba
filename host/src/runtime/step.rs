//! [`Step`]: one module running as one step of a pipeline (or of `weir
//! test`). It owns a live instance, calls its exports typed, and makes a
//! fresh instance after a trap (which it reports as the call's failure).

use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{ComponentNamedList, Func, Lift, Lower};

use super::guest::{Call, Guest};
use super::state::GuestState;
use super::{HostState, Module, RuntimeOptions, TICK, Tags, World};

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
    /// Calls ran past the deadline too many times in a row.
    #[error(
        "step {step}: {module} ran past its deadline of {deadline_ms} ms on {count} calls in a row, so the step stopped (in a pipeline nothing after the last commit is written, and the next run resumes there): fix the function, or raise --deadline-ms or --max-timeouts"
    )]
    TimedOut {
        /// The module.
        module: String,
        /// The step.
        step: String,
        /// The calls in a row.
        count: u32,
        /// The deadline.
        deadline_ms: u128,
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

/// One module running as one step: the Wasm implementation of [`Guest`].
pub struct Step {
    module: Module,
    tags: Tags,
    config: Vec<(String, String)>,
    memory_limit: usize,
    deadline: Duration,
    live: Option<Live>,
    /// What the last call handed the host through state and logs, and the
    /// most one call may hand it (state, logs and outputs together).
    last_call_bytes: (usize, usize),
    /// Calls in a row that ran past the deadline, and the most allowed.
    timeouts: u32,
    max_timeouts: u32,
    instances: u64,
    last_instantiate: Duration,
    /// Time spent inside the guest's functions (and the host functions
    /// they called: state, timers, log), over all calls.
    guest_time: Duration,
    /// A native stand-in for the guest's bytes-to-bytes exports, for
    /// benchmarks that compare the same pipeline with a native step.
    native: Option<NativeFn>,
}

/// A native implementation of a world's bytes-to-bytes exports: called with
/// the export's name and the packed input, returns the packed result list.
pub type NativeFn = Box<dyn FnMut(&str, &[u8]) -> Vec<u8> + Send>;

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
            last_call_bytes: (0, 0),
            timeouts: 0,
            max_timeouts: options.max_timeouts.max(1),
            instances: 0,
            last_instantiate: Duration::ZERO,
            guest_time: Duration::ZERO,
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
        let pre = module.pre();
        let mut store = Store::new(
            pre.engine(),
            HostState::new(self.tags.clone(), self.memory_limit),
        );
        store.limiter(|s| &mut s.limits);
        let _running = super::Running::enter();
        store.set_epoch_deadline(self.deadline_ticks());
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| self.instantiate_error(format!("{e:#}")))?;
        let mut funcs = Vec::new();
        let upgrading: &[&'static str] = if module.upgrades() {
            &super::UPGRADING_FUNCTIONS
        } else {
            &[]
        };
        for f in module.world().functions().iter().chain(upgrading) {
            let func = module
                .func(f)
                .and_then(|idx| instance.get_func(&mut store, idx))
                .ok_or_else(|| self.instantiate_error(format!("export `{f}` is missing")))?;
            let checked = match *f {
                "init" => func.typed::<InitParams, InitResults>(&store).map(|_| ()),
                "merge" => func.typed::<MergeParams, MergeResults>(&store).map(|_| ()),
                "on-timer" => func.typed::<TimerParams, BytesResults>(&store).map(|_| ()),
                "state-format" => func.typed::<(), (u32,)>(&store).map(|_| ()),
                "upgrade" => func
                    .typed::<UpgradeParams, BytesResults>(&store)
                    .map(|_| ()),
                _ => func.typed::<BytesParams, BytesResults>(&store).map(|_| ()),
            };
            checked.map_err(|e| {
                let interface = if upgrading.contains(f) {
                    super::UPGRADING
                } else {
                    module.world().interface()
                };
                self.instantiate_error(format!(
                    "export `{f}` of {interface} has the wrong type: {e:#}"
                ))
            })?;
            funcs.push((*f, func));
        }
        let init = funcs
            .iter()
            .find(|(n, _)| *n == "init")
            .map(|(_, f)| *f)
            .ok_or_else(|| self.instantiate_error("export `init` is missing".into()))?;
        let result = init
            .typed::<InitParams, InitResults>(&store)
            .and_then(|f| f.call(&mut store, (self.config.clone(),)));
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

    /// Calls an export, type-checked against what the host expects, under
    /// the step's deadline, with `state` in the store for the call. A trap
    /// drops the instance and comes back as `Ok(Err(reason))`; what the guest
    /// wrote to stderr goes into that reason, or into the log when the call
    /// succeeded.
    fn call_typed<P, R>(
        &mut self,
        function: &str,
        params: P,
        state: Option<Box<dyn GuestState>>,
    ) -> Result<Typed<R>, StepError>
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
        let _running = super::Running::enter();
        live.store.set_epoch_deadline(ticks);
        live.store.data_mut().state = state;
        let started = Instant::now();
        let result = func
            .typed::<P, R>(&live.store)
            .and_then(|typed| typed.call(&mut live.store, params));
        let took = started.elapsed();
        let state = live.store.data_mut().state.take();
        let spent = live.store.data().call_bytes();
        let stderr = live.store.data_mut().drain_output();
        match result {
            Ok(r) => {
                live.store.data().log_stderr(&stderr);
                self.guest_time += took;
                self.timeouts = 0;
                self.last_call_bytes = spent;
                Ok((Ok(r), state))
            }
            Err(e) => {
                self.live = None;
                self.guest_time += took;
                if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
                    self.timeouts += 1;
                    if self.timeouts >= self.max_timeouts {
                        return Err(StepError::TimedOut {
                            module: self.module.name().to_string(),
                            step: self.tags.step.to_string(),
                            count: self.timeouts,
                            deadline_ms: deadline.as_millis(),
                        });
                    }
                } else {
                    self.timeouts = 0;
                }
                Ok((
                    Err(describe_trap(&e, &stderr, deadline, memory_limit)),
                    state,
                ))
            }
        }
    }
}

/// A typed call's result (or why it failed) and the state handed in.
type Typed<R> = (Result<R, String>, Option<Box<dyn GuestState>>);
type InitParams = (Vec<(String, String)>,);
type InitResults = (Result<(), String>,);
type BytesParams<'a> = (&'a [u8],);
type BytesResults = (Vec<u8>,);
type MergeParams<'a> = (&'a [u8], &'a [u8]);
type MergeResults = (Result<Vec<u8>, String>,);
type TimerParams<'a> = (i64, &'a [u8]);
type UpgradeParams<'a> = (u32, &'a [u8]);

impl Guest for Step {
    fn name(&self) -> &str {
        self.module.name()
    }

    fn world(&self) -> World {
        self.module.world()
    }

    fn guest_time(&self) -> Duration {
        self.guest_time
    }

    fn call(
        &mut self,
        call: Call<'_>,
        state: Option<Box<dyn GuestState>>,
    ) -> Result<(Result<Vec<u8>, String>, Option<Box<dyn GuestState>>), StepError> {
        if let (Some(f), Call::Export(export, input)) = (self.native.as_mut(), &call) {
            return Ok((Ok(f(export, input)), state));
        }
        let (r, s) = match call {
            Call::Export(export, input) => {
                let (r, s) =
                    self.call_typed::<BytesParams, BytesResults>(export, (input,), state)?;
                (r.map(|(out,)| out), s)
            }
            Call::Timer(time, tag) => {
                let (r, s) =
                    self.call_typed::<TimerParams, BytesResults>("on-timer", (time, tag), state)?;
                (r.map(|(out,)| out), s)
            }
            Call::Merge(a, b) => {
                let (r, s) =
                    self.call_typed::<MergeParams, MergeResults>("merge", (a, b), state)?;
                (r.and_then(|(r,)| r), s)
            }
        };
        // What the call returned counts toward what it may hand the host.
        let (spent, limit) = self.last_call_bytes;
        if let Ok(out) = &r
            && limit > 0
            && spent.saturating_add(out.len()) > limit
        {
            let e = super::host::CallBytesExceeded {
                limit_mib: limit >> 20,
            };
            return Ok((Err(e.to_string()), s));
        }
        Ok((r, s))
    }

    fn upgrades(&self) -> bool {
        self.module.upgrades()
    }

    fn state_format(&mut self) -> Result<Result<u32, String>, StepError> {
        if !self.module.upgrades() {
            return Ok(Ok(0));
        }
        let (r, _) = self.call_typed::<(), (u32,)>("state-format", (), None)?;
        Ok(r.map(|(f,)| f))
    }

    fn upgrade(&mut self, from: u32, batch: &[u8]) -> Result<Result<Vec<u8>, String>, StepError> {
        if !self.module.upgrades() {
            return Ok(Err(format!("{} exports no upgrade", self.module.name())));
        }
        let (r, _) =
            self.call_typed::<UpgradeParams, BytesResults>("upgrade", (from, batch), None)?;
        Ok(r.map(|(out,)| out))
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
