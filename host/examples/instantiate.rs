//! Prints how long a module takes to load from the precompiled cache and to
//! instantiate (a fresh instance from its `InstancePre`, plus `init`), the
//! figures `bench/languages.sh` reports per guest language:
//!
//! ```sh
//! cargo run --release -p weir --example instantiate -- MODULE.wasm [CACHE_DIR]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use weir::runtime::{Runtime, RuntimeOptions, Step};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(module) = args.next().map(PathBuf::from) else {
        anyhow::bail!("usage: instantiate MODULE.wasm [CACHE_DIR]");
    };
    let mut options = RuntimeOptions::default();
    if let Some(dir) = args.next() {
        options.cache_dir = Some(PathBuf::from(dir));
    }
    let runtime = Runtime::new(options.clone())?;
    // The first load may compile; the next ones come from the cache.
    let first = runtime.load_file(&module)?;
    let loads: Vec<Duration> = (0..10)
        .map(|_| runtime.load_file(&module).map(|m| m.load_time()))
        .collect::<Result<_, _>>()?;
    let mut instantiations = Vec::new();
    for _ in 0..50 {
        let mut step = Step::new(first.clone(), "bench", Vec::new(), &options);
        step.start()?;
        instantiations.push(step.last_instantiate_time());
    }
    println!(
        "{}: load from the cache {:.2} ms (median of 10); instantiate {:.3} ms (median of 50, first {:.3} ms)",
        module.display(),
        median(loads).as_secs_f64() * 1e3,
        median(instantiations.clone()).as_secs_f64() * 1e3,
        instantiations
            .first()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3,
    );
    Ok(())
}
