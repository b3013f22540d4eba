//! The owner of a data directory serves the CLI.
//!
//! Only one process may open a data directory for writing (RocksDB's lock).
//! While `weir run` holds it, it listens on a Unix socket inside the
//! directory, `DIR/weir.sock` (mode 0600: only the user who started it may
//! connect), and does the CLI's requests for that directory — produce,
//! consume (also `--follow`), topic and state — on its own open log. The CLI
//! looks for the socket first: a connection means an owner runs; no socket,
//! or a refused connection (a socket left by an owner that was killed),
//! means none does, and the CLI opens the directory itself.
//!
//! The protocol (one connection per request; see docs/design.md): the
//! client sends one JSON line, a [`Request`]; for a produce, the records
//! follow as JSON lines; then it shuts down its writing half. The owner
//! answers with JSON lines: `{"out": LINE}` (for standard output),
//! `{"err": LINE}` (standard error), `{"idle": true}` (a follower with
//! nothing new; ignored), and last `{"exit": CODE}`, or `{"error": MESSAGE}`
//! when the request failed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use weir::log::Log;

use super::{Out, Request, execute};

/// The socket's name inside the data directory.
pub const SOCKET: &str = "weir.sock";

/// The socket of the owner of `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// A listening owner; dropping it removes the socket.
pub struct Server {
    path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts serving requests for `dir` (whose log this process opened for
/// writing) on `dir/weir.sock`, in a thread per connection. Followers end
/// when `stop` is set.
/// Runs a reset of a pipeline (by name) unless that pipeline runs in this
/// process, keeping it from starting meanwhile: `None` when it runs (the
/// reset is refused).
pub type Runs = Arc<
    dyn Fn(&str, &mut dyn FnMut() -> anyhow::Result<u8>) -> Option<anyhow::Result<u8>>
        + Send
        + Sync,
>;

pub fn serve(
    log: Arc<Log>,
    dir: &Path,
    stop: Arc<AtomicBool>,
    runs: Runs,
) -> anyhow::Result<Server> {
    let path = socket_path(dir);
    // This process holds the directory's lock, so a socket already there was
    // left by an owner that did not exit cleanly (SIGKILL): replace it.
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!("replaced the stale socket {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot remove the old socket {}", path.display()));
        }
    }
    // Bound under a temporary name, restricted to this user, then renamed:
    // nobody can connect before the mode is 0600.
    let tmp = dir.join(format!(".{SOCKET}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).with_context(|| format!("cannot listen on {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    std::thread::Builder::new()
        .name("weir-owner".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let (log, stop, runs) = (log.clone(), stop.clone(), runs.clone());
                        let spawned = std::thread::Builder::new()
                            .name("weir-client".into())
                            .spawn(move || {
                                if let Err(e) = handle(&log, stream, &stop, &runs) {
                                    tracing::debug!("a client of the data directory: {e:#}");
                                }
                            });
                        if let Err(e) = spawned {
                            tracing::warn!("cannot start a thread for a client: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("cannot accept a client: {e}"),
                }
            }
        })
        .context("cannot start the owner's thread")?;
    Ok(Server { path })
}

/// Writes the owner's answers to a client.
struct Remote {
    out: std::io::BufWriter<UnixStream>,
}

impl Remote {
    fn send(&mut self, v: &Value) -> std::io::Result<()> {
        writeln!(self.out, "{v}")
    }
}

impl Out for Remote {
    fn out(&mut self, line: &str) -> std::io::Result<()> {
        self.send(&json!({ "out": line }))
    }

    fn err(&mut self, line: &str) -> std::io::Result<()> {
        self.send(&json!({ "err": line }))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn idle(&mut self) -> std::io::Result<()> {
        self.send(&json!({ "idle": true }))?;
        self.out.flush()
    }
}

fn handle(log: &Log, stream: UnixStream, stop: &AtomicBool, runs: &Runs) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut remote = Remote {
        out: std::io::BufWriter::new(stream),
    };
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Reset { pipeline }) => {
            let mut reset = || crate::cli::state_cmds::reset_log(log, &pipeline, &mut remote);
            match runs(&pipeline, &mut reset) {
                None => json!({
                    "error": format!(
                        "pipeline {pipeline} runs in the weir process that owns {}: stop it first (`weir pipeline stop {pipeline}` when the daemon runs it)",
                        log.dir().display()
                    )
                }),
                Some(Ok(code)) => json!({ "exit": code }),
                Some(Err(e)) => json!({ "error": format!("{e:#}") }),
            }
        }
        Ok(req) => match execute(log, req, &mut reader, &mut remote, stop) {
            Ok(code) => json!({ "exit": code }),
            Err(e) => json!({ "error": format!("{e:#}") }),
        },
        Err(e) => {
            json!({ "error": format!("the owner of the data directory cannot read the request ({e}); is this weir the same version as the running one?") })
        }
    };
    remote.send(&answer)?;
    remote.flush()?;
    Ok(())
}

/// A connection to the owner of a data directory.
pub struct Client {
    stream: UnixStream,
    dir: PathBuf,
}

/// Connects to the owner of `dir`, if one runs.
pub fn connect(dir: &Path) -> anyhow::Result<Option<Client>> {
    let path = socket_path(dir);
    match UnixStream::connect(&path) {
        Ok(stream) => Ok(Some(Client {
            stream,
            dir: dir.to_path_buf(),
        })),
        // No owner; or a socket left by one that was killed.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "permission denied on {}: the data directory {} belongs to another user; run weir as the user who owns it (or give another --data)",
            path.display(),
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot connect to the weir process that owns {} ({})",
                dir.display(),
                path.display()
            )
        }),
    }
}

impl Client {
    /// Sends `req` (and `input`, a produce's records), prints the answers as
    /// they come, and returns the exit code; a follower ends with 0 once
    /// `stop` is set (Ctrl-C), as it does without an owner.
    pub fn call(
        self,
        req: &Request,
        input: Option<Box<dyn BufRead + Send>>,
        stop: &AtomicBool,
    ) -> anyhow::Result<u8> {
        let gone = || {
            format!(
                "lost the connection to the weir process that owns {}",
                self.dir.display()
            )
        };
        let mut w = self.stream.try_clone().with_context(gone)?;
        writeln!(w, "{}", serde_json::to_string(req)?).with_context(gone)?;
        // The records go in their own thread, so that answers (a malformed
        // line's error) never wait for the whole input to be sent.
        let sender = input.map(|mut input| {
            std::thread::spawn(move || {
                let r = std::io::copy(&mut input, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
                r
            })
        });
        if sender.is_none() {
            self.stream
                .shutdown(std::net::Shutdown::Write)
                .with_context(gone)?;
        }
        let read = self.stream.try_clone().with_context(gone)?;
        // Reads wake up now and then to look at `stop` (a follower may wait
        // long for its next line).
        read.set_read_timeout(Some(Duration::from_millis(200)))
            .with_context(gone)?;
        let mut reader = BufReader::new(read);
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        let mut buf = Vec::new();
        let result = loop {
            // A read that times out keeps what it got in `buf`.
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => {
                    break Err(anyhow::anyhow!(
                        "the weir process that owns {} ended before it answered",
                        self.dir.display()
                    ));
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    if stop.load(Ordering::SeqCst) {
                        break Ok(0);
                    }
                    continue;
                }
                Err(e) => return Err(e).with_context(gone),
            }
            let line = String::from_utf8_lossy(&buf).into_owned();
            buf.clear();
            let v: Value = serde_json::from_str(&line).with_context(|| {
                format!("the owner of {} answered {line:?}", self.dir.display())
            })?;
            if let Some(s) = v.get("out").and_then(Value::as_str) {
                writeln!(stdout, "{s}")?;
            } else if let Some(s) = v.get("err").and_then(Value::as_str) {
                stdout.flush()?;
                eprintln!("{s}");
            } else if let Some(code) = v.get("exit").and_then(Value::as_u64) {
                break Ok(u8::try_from(code).unwrap_or(1));
            } else if let Some(msg) = v.get("error").and_then(Value::as_str) {
                break Err(anyhow::anyhow!("{msg}"));
            }
            // Nothing more buffered: show what came (a follower's records).
            if reader.buffer().is_empty() {
                stdout.flush()?;
            }
        };
        stdout.flush()?;
        if let Some(s) = sender {
            match s.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if result.is_ok() => {
                    return Err(e).context("cannot send the records to the owner");
                }
                _ => {}
            }
        }
        result
    }
}
