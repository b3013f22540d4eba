//! The `weir` command. Everything it does is in the library; this parses the
//! command line, calls it, and prints the error chain once if it fails.

mod cli;

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
