//! The WebAssembly runtime: one wasmtime engine set up for isolation and
//! speed, component loading and validation against the four worlds of
//! `wit/functions.wit`, a precompiled cache, and [`Step`], which runs one
//! module's instance and survives its traps.
//!
//! Isolation:
//! - Each instance has a memory limit (a growth past it traps) and each call
//!   a deadline. Deadlines use epoch interruption, not fuel: an epoch check
//!   is a load and a compare at loop heads and function entries, while fuel
//!   counts every instruction and costs far more on a hot path. A ticker
//!   thread advances the epoch by wall-clock time, one per [`TICK`], so that
//!   a deadline holds on a busy machine too.
//! - WASI is linked only so that the imports every language's standard
//!   library makes resolve; its context grants nothing: no files, sockets,
//!   environment or arguments, a clock frozen at the epoch and deterministic
//!   randomness. The `weir:functions` imports a world may use are linked per
//!   world; a component importing anything else is refused at load.
//!
//! Speed: instances come from an `InstancePre` through the pooling
//! allocator, so a fresh instance (after a trap) costs microseconds; compiled
//! code is cached on disk by the component's sha256 and the engine's
//! settings, so a second load skips compilation.

mod cache;
pub mod guest;
mod host;
pub mod state;
mod step;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use self::cache::Cache;
pub use self::guest::{Call, Guest, NativeGuest};
pub use self::host::{HostState, Tags};
pub use self::state::{Clock, GuestState, StateError};
pub use self::step::{NativeFn, Step, StepError};

/// How often the epoch advances; deadlines are counted in these.
pub const TICK: Duration = Duration::from_millis(5);

/// The WIT package the host implements.
pub const PACKAGE: &str = "weir:functions@0.1.0";

/// The optional interface through which a module upgrades state written in
/// an older format (see `upgrading` in `wit/functions.wit`).
pub const UPGRADING: &str = "weir:functions/upgrading@0.1.0";

/// The functions of [`UPGRADING`].
pub const UPGRADING_FUNCTIONS: [&str; 2] = ["state-format", "upgrade"];

/// Limits and settings of a [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Where precompiled modules are kept; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// The most memory one instance may have, in bytes.
    pub memory_limit: usize,
    /// The longest one call into a guest may run.
    pub deadline: Duration,
    /// After this many calls in a row of one step ran past the deadline,
    /// the step stops with [`StepError::TimedOut`] instead of costing one
    /// deadline per record.
    pub max_timeouts: u32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: Cache::default_dir(),
            memory_limit: 256 << 20,
            deadline: Duration::from_secs(5),
            max_timeouts: 10,
        }
    }
}

/// The kind of function a component is: which world it implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum World {
    /// One record in, zero or more outputs out.
    Mapper,
    /// A windowed or global aggregate whose state the host keeps.
    Aggregator,
    /// A join whose state the host keeps.
    Joiner,
    /// Full control with state stores and timers.
    Processor,
}

impl World {
    /// Every world.
    pub const ALL: [World; 4] = [
        World::Mapper,
        World::Aggregator,
        World::Joiner,
        World::Processor,
    ];

    /// The world's name in the WIT package.
    pub fn name(self) -> &'static str {
        match self {
            World::Mapper => "mapper",
            World::Aggregator => "aggregator",
            World::Joiner => "joiner",
            World::Processor => "processor",
        }
    }

    /// "a mapper", "an aggregator", ...
    pub fn with_article(self) -> &'static str {
        match self {
            World::Mapper => "a mapper",
            World::Aggregator => "an aggregator",
            World::Joiner => "a joiner",
            World::Processor => "a processor",
        }
    }

    /// The interface a component of this world exports.
    pub fn interface(self) -> &'static str {
        match self {
            World::Mapper => "weir:functions/mapping@0.1.0",
            World::Aggregator => "weir:functions/aggregation@0.1.0",
            World::Joiner => "weir:functions/joining@0.1.0",
            World::Processor => "weir:functions/processing@0.1.0",
        }
    }

    /// The functions that interface has.
    pub fn functions(self) -> &'static [&'static str] {
        match self {
            World::Mapper => &["init", "process"],
            World::Aggregator => &["init", "add", "merge", "present"],
            World::Joiner => &["init", "join"],
            World::Processor => &["init", "process", "on-timer"],
        }
    }

    /// The `weir:functions` interfaces a component of this world may import.
    pub fn allowed_imports(self) -> &'static [&'static str] {
        match self {
            World::Processor => &[
                "weir:functions/log@0.1.0",
                "weir:functions/types@0.1.0",
                "weir:functions/state@0.1.0",
                "weir:functions/timers@0.1.0",
            ],
            _ => &["weir:functions/log@0.1.0", "weir:functions/types@0.1.0"],
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a module was refused. Each message names the module and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{module}: cannot read it")]
    Read {
        /// The module.
        module: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not WebAssembly at all.
    #[error(
        "{module}: not a WebAssembly component: it does not start with the bytes \\0asm (it starts with {start})"
    )]
    NotWasm {
        /// The module.
        module: String,
        /// Its first bytes, escaped.
        start: String,
    },
    /// A core module rather than a component.
    #[error(
        "{module}: this is a core WebAssembly module, not a component. Build the guest for the target wasm32-wasip2 (cargo build --target wasm32-wasip2), or wrap a core module with `wasm-tools component new`"
    )]
    CoreModule {
        /// The module.
        module: String,
    },
    /// wasmtime could not compile it.
    #[error("{module}: invalid component: {message}")]
    Invalid {
        /// The module.
        module: String,
        /// wasmtime's message (it names the offset).
        message: String,
    },
    /// It exports none of the four function interfaces.
    #[error(
        "{module}: exports none of the Weir worlds' interfaces (mapper: {m}, aggregator: {a}, joiner: {j}, processor: {p}); it exports: {exports}. Implement one world of wit/functions.wit",
        m = World::Mapper.interface(),
        a = World::Aggregator.interface(),
        j = World::Joiner.interface(),
        p = World::Processor.interface()
    )]
    UnknownWorld {
        /// The module.
        module: String,
        /// What it does export.
        exports: String,
    },
    /// It exports more than one.
    #[error(
        "{module}: implements several worlds at once ({worlds}); a module implements exactly one"
    )]
    SeveralWorlds {
        /// The module.
        module: String,
        /// The worlds.
        worlds: String,
    },
    /// The interface lacks a function.
    #[error("{module}: {} must export `{function}` in {interface}, and this module does not", world.with_article())]
    MissingExport {
        /// The module.
        module: String,
        /// Its world.
        world: World,
        /// The interface.
        interface: &'static str,
        /// The missing function.
        function: &'static str,
    },
    /// It exports `upgrading` where that cannot be, or only part of it.
    #[error("{module}: {message}")]
    Upgrading {
        /// The module.
        module: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// It imports something its world does not provide.
    #[error("{module}: imports {import}, which {} cannot use{hint}", world.with_article())]
    ForbiddenImport {
        /// The module.
        module: String,
        /// Its world.
        world: World,
        /// The import.
        import: String,
        /// What to do instead.
        hint: &'static str,
    },
}

/// The engine, its linkers and its cache: build one per process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<Cache>,
    options: RuntimeOptions,
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    /// An engine with the pooling allocator, epoch interruption and a
    /// ticker thread.
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // Traps carry no wasm backtrace: the guest's own message (its panic
        // or exception, captured from stderr) says more, for less.
        config.wasm_backtrace_max_frames(None);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(256)
            .total_core_instances(1024)
            .total_memories(256)
            .total_tables(1024)
            .max_memories_per_component(8)
            .max_tables_per_component(64)
            .max_core_instances_per_component(64)
            .max_component_instance_size(4 << 20)
            .max_core_instance_size(4 << 20)
            .max_memory_size(options.memory_limit.max(64 << 20));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        host::link_frozen_clock(&mut linker).map_err(anyhow::Error::from)?;
        crate::bindings::weir::functions::log::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut linker, |s| s)
        .map_err(anyhow::Error::from)?;
        // Linked for every world, but only a processor may import them: the
        // load check refuses any other component that does.
        crate::bindings::weir::functions::state::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut linker, |s| s)
        .map_err(anyhow::Error::from)?;
        crate::bindings::weir::functions::timers::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut linker, |s| s)
        .map_err(anyhow::Error::from)?;
        host::link_call_budget(&mut linker).map_err(anyhow::Error::from)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (e, stop) = (engine.clone(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || epoch_ticker(&e, &stop))?;

        let cache = options.cache_dir.as_ref().map(|d| Cache::new(d, &engine));
        Ok(Runtime {
            engine,
            linker,
            cache,
            options,
            ticker_stop,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The settings it was made with.
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// Loads a component from a file, named after the file.
    pub fn load_file(&self, path: &Path) -> Result<Module, LoadError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            module: name.clone(),
            source,
        })?;
        self.load(&name, &bytes)
    }

    /// Loads a component from bytes: checks that it is a component of one of
    /// the worlds, compiles it (or loads it from the cache) and prepares its
    /// instantiation.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Module, LoadError> {
        let module = name.to_string();
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            let start: String = bytes
                .iter()
                .take(8)
                .flat_map(|b| std::ascii::escape_default(*b))
                .map(char::from)
                .collect();
            return Err(LoadError::NotWasm {
                module,
                start: format!("\"{start}\""),
            });
        }
        // Bytes 6..8 are the layer: 0 for a core module, 1 for a component.
        if bytes[6..8] == [0, 0] {
            return Err(LoadError::CoreModule { module });
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let started = Instant::now();
        let (component, from_cache) = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, &sha256, bytes),
            None => Component::new(&self.engine, bytes).map(|c| (c, false)),
        }
        .map_err(|e| LoadError::Invalid {
            module: module.clone(),
            message: format!("{e:#}"),
        })?;
        let load_time = started.elapsed();

        let ty = component.component_type();
        let mut exports = Vec::new();
        let mut worlds = Vec::new();
        let mut upgrading: Option<Vec<String>> = None;
        for (export, item) in ty.exports(&self.engine) {
            exports.push(export.to_string());
            if export == UPGRADING
                && let ComponentItem::ComponentInstance(inst) = &item.ty
            {
                upgrading = Some(
                    inst.exports(&self.engine)
                        .map(|(n, _)| n.to_string())
                        .collect(),
                );
            }
            if let Some(w) = World::ALL.iter().find(|w| w.interface() == export) {
                let functions: Vec<String> = match item.ty {
                    ComponentItem::ComponentInstance(inst) => inst
                        .exports(&self.engine)
                        .map(|(n, _)| n.to_string())
                        .collect(),
                    _ => Vec::new(),
                };
                worlds.push((*w, functions));
            }
        }
        let (world, functions) = match worlds.len() {
            0 => {
                return Err(LoadError::UnknownWorld {
                    module,
                    exports: if exports.is_empty() {
                        "nothing".into()
                    } else {
                        exports.join(", ")
                    },
                });
            }
            1 => worlds.remove(0),
            _ => {
                return Err(LoadError::SeveralWorlds {
                    module,
                    worlds: worlds
                        .iter()
                        .map(|(w, _)| w.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        };
        for f in world.functions() {
            if !functions.iter().any(|n| n == f) {
                return Err(LoadError::MissingExport {
                    module,
                    world,
                    interface: world.interface(),
                    function: f,
                });
            }
        }
        if let Some(functions) = &upgrading {
            if !matches!(world, World::Aggregator | World::Processor) {
                return Err(LoadError::Upgrading {
                    module,
                    message: format!(
                        "exports {UPGRADING}, but it is {}, which keeps no state to upgrade: only an aggregator or a processor may export it; remove the export",
                        world.with_article()
                    ),
                });
            }
            if let Some(f) = UPGRADING_FUNCTIONS
                .iter()
                .find(|f| !functions.iter().any(|n| n == *f))
            {
                return Err(LoadError::Upgrading {
                    module,
                    message: format!(
                        "exports {UPGRADING} without its function `{f}`: implement both `state-format` and `upgrade`"
                    ),
                });
            }
        }
        let mut imports = Vec::new();
        for (import, _) in ty.imports(&self.engine) {
            imports.push(import.to_string());
            if import.starts_with("wasi:") || world.allowed_imports().contains(&import) {
                continue;
            }
            let hint = if import.starts_with("weir:functions/state")
                || import.starts_with("weir:functions/timers")
            {
                ": only a processor has state stores and timers (an aggregator or joiner gets its state kept by the host)"
            } else if import.starts_with("weir:functions/") {
                ": it is not in weir:functions@0.1.0, which this host implements"
            } else {
                ": Weir provides weir:functions@0.1.0 and capability-free WASI only"
            };
            return Err(LoadError::ForbiddenImport {
                module,
                world,
                import: import.to_string(),
                hint,
            });
        }

        let lookup = |f: &str| -> Result<ComponentExportIndex, LoadError> {
            let missing = || LoadError::MissingExport {
                module: module.clone(),
                world,
                interface: world.interface(),
                function: world
                    .functions()
                    .iter()
                    .find(|n| **n == f)
                    .copied()
                    .unwrap_or("?"),
            };
            let iface = component
                .get_export_index(None, world.interface())
                .ok_or_else(missing)?;
            component
                .get_export_index(Some(&iface), f)
                .ok_or_else(missing)
        };
        let mut funcs = Vec::new();
        for f in world.functions() {
            funcs.push((*f, lookup(f)?));
        }
        if upgrading.is_some() {
            let iface = component.get_export_index(None, UPGRADING);
            for f in UPGRADING_FUNCTIONS {
                let idx = iface
                    .as_ref()
                    .and_then(|i| component.get_export_index(Some(i), f))
                    .ok_or_else(|| LoadError::Upgrading {
                        module: module.clone(),
                        message: format!("exports {UPGRADING} without its function `{f}`"),
                    })?;
                funcs.push((f, idx));
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Invalid {
                module: module.clone(),
                message: format!("{e:#}"),
            })?;
        Ok(Module {
            inner: Arc::new(ModuleInner {
                name: module,
                world,
                sha256,
                size: bytes.len(),
                from_cache,
                load_time,
                imports,
                exports,
                upgrades: upgrading.is_some(),
                funcs,
                pre,
            }),
        })
    }
}

/// Guest code running now in this process (instantiations and calls): the
/// epoch tickers only tick while there is some, so that an idle process
/// does not wake every [`TICK`].
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// The tickers, to wake when guest code starts running.
static TICKERS: Mutex<Vec<std::thread::Thread>> = Mutex::new(Vec::new());

/// Held while guest code runs under an epoch deadline.
pub(crate) struct Running;

impl Running {
    /// Guest code starts: wakes the tickers if none ran.
    pub(crate) fn enter() -> Running {
        if RUNNING.fetch_add(1, Ordering::SeqCst) == 0 {
            for t in TICKERS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                t.unpark();
            }
        }
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Advances the engine's epoch so that it counts wall-clock [`TICK`]s since
/// the ticker started. A sleep on a busy machine wakes late (5 ms became
/// ~8.4 ms under load), so one increment per wake-up would stretch every
/// deadline; instead each wake-up adds as many ticks as wall time says are
/// due. A deadline then holds to within one late wake-up. While no guest
/// code runs, the ticker sleeps (a deadline counts from the epoch at the
/// call's start, so the ticks not counted meanwhile change none), and starts
/// counting afresh when woken.
fn epoch_ticker(engine: &Engine, stop: &AtomicBool) {
    TICKERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(std::thread::current());
    let mut started = Instant::now();
    let mut ticks: u128 = 0;
    while !stop.load(Ordering::Relaxed) {
        if RUNNING.load(Ordering::SeqCst) == 0 {
            std::thread::park_timeout(Duration::from_secs(1));
            started = Instant::now();
            ticks = 0;
            continue;
        }
        std::thread::sleep(TICK);
        let due = started.elapsed().as_nanos() / TICK.as_nanos();
        while ticks < due {
            engine.increment_epoch();
            ticks += 1;
        }
    }
    let me = std::thread::current().id();
    TICKERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|t| t.id() != me);
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A loaded, validated component, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    name: String,
    world: World,
    sha256: String,
    size: usize,
    from_cache: bool,
    load_time: Duration,
    imports: Vec<String>,
    exports: Vec<String>,
    /// Whether it exports [`UPGRADING`].
    upgrades: bool,
    funcs: Vec<(&'static str, ComponentExportIndex)>,
    pre: InstancePre<HostState>,
}

impl Module {
    /// Its name (the file it came from).
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// The world it implements.
    pub fn world(&self) -> World {
        self.inner.world
    }
    /// The sha256 of its bytes, in hex.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }
    /// Its size in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }
    /// Whether its compiled code came from the precompiled cache.
    pub fn from_cache(&self) -> bool {
        self.inner.from_cache
    }
    /// How long compiling (or loading from the cache) took.
    pub fn load_time(&self) -> Duration {
        self.inner.load_time
    }
    /// What it imports.
    pub fn imports(&self) -> &[String] {
        &self.inner.imports
    }
    /// What it exports.
    pub fn exports(&self) -> &[String] {
        &self.inner.exports
    }
    /// Whether it exports `upgrading` (it can upgrade older state).
    pub fn upgrades(&self) -> bool {
        self.inner.upgrades
    }
    pub(crate) fn func(&self, name: &str) -> Option<&ComponentExportIndex> {
        self.inner
            .funcs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, i)| i)
    }
    pub(crate) fn pre(&self) -> &InstancePre<HostState> {
        &self.inner.pre
    }
}
