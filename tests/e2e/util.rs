//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The cargo target directory this test binary was built in.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/e2e-<hash>
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// A guest component built by `just guests`.
pub fn guest(name: &str) -> PathBuf {
    let file = format!("{}.wasm", name.replace('-', "_"));
    let path = target_dir().join("wasm32-wasip2/guest").join(&file);
    assert!(
        path.exists(),
        "guest {} is not built: run `just guests` (or `just test`, which builds them first)",
        path.display()
    );
    path
}

/// A precompiled-module cache shared by the tests of one run.
pub fn shared_cache() -> PathBuf {
    target_dir().join("weir-test-cache")
}

/// `weir` with the shared cache.
pub fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env("WEIR_CACHE", shared_cache());
    c.env_remove("WEIR_LOG");
    // The embedded log unless a test names Kafka.
    c.env_remove("WEIR_BROKERS");
    c
}

/// What a finished command printed.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("weir runs");
    Run {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Asserts that `actual` has exactly the lines `expected` (trimmed of the
/// indentation of a raw string), showing both in full when not.
#[track_caller]
pub fn assert_lines(what: &str, actual: &str, expected: &str) {
    let want: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let got: Vec<&str> = actual
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if want != got {
        panic!(
            "{what}: lines differ\n--- expected ({} lines)\n{}\n--- actual ({} lines)\n{}\n",
            want.len(),
            want.join("\n"),
            got.len(),
            got.join("\n")
        );
    }
}

/// A temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Runs `cmd` (a `weir produce ...`) with `lines` on its standard input, one
/// a line; asserts it succeeded and returns what it printed on stderr.
#[track_caller]
pub fn feed(cmd: &mut Command, lines: &[String]) -> String {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir runs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    for l in lines {
        writeln!(stdin, "{l}").expect("write stdin");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("weir ends");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?}: {err}");
    err
}

/// A guest in another language than Rust, built by `just guests`.
pub fn lang_guest(lang: &str, name: &str) -> PathBuf {
    let path = target_dir()
        .join("guests")
        .join(lang)
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "guest {} is not built: run `just guests` (or `just test`, which builds them first)",
        path.display()
    );
    path
}
