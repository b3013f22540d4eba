//! The `weir` command. Everything it does is in the library; this parses the
//! command line, calls it, and prints the error chain once if it fails.

mod cli;

/// jemalloc rather than the system's malloc: with a large key space (a
/// million words counted) a run allocates a key, a value and map entries per
/// key, and glibc's malloc spent a sixth of the task threads' time; jemalloc
/// runs that word count a sixth faster in less memory (README, "What it
/// costs"). The state cache counts its blocks by jemalloc's size classes
/// (`backend::txn::heap_bytes`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cli::init_tracing();
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
