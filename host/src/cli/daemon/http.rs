//! The daemon's HTTP API (docs/api.md): bearer token, body limit, routes.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

use super::{Daemon, Failure, Reply, fail};

/// The token file in the data directory (mode 0600).
pub const TOKEN_FILE: &str = "weir.token";
/// Where the daemon writes the address it listens on, in the data directory.
pub const ADDR_FILE: &str = "weir.addr";

/// The token: `WEIR_TOKEN` when given, else the data directory's token file,
/// made (mode 0600) with 32 random bytes on the first start.
pub fn token(dir: &Path, given: Option<String>) -> anyhow::Result<String> {
    if let Some(t) = given {
        if t.len() < 16 {
            bail!("WEIR_TOKEN is too short: give at least 16 characters");
        }
        return Ok(t);
    }
    let path = dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a token")?;
    let t = hex::encode(bytes);
    let tmp = dir.join(format!(".{TOKEN_FILE}.{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, t.as_bytes())?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(t)
}

/// Compares in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Settings of the HTTP server.
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The bearer token.
    pub token: String,
    /// The largest request body, in bytes.
    pub max_body: usize,
}

/// Serves the API until `stop` is set.
pub fn serve(daemon: Arc<Daemon>, settings: Settings, stop: &AtomicBool) -> anyhow::Result<()> {
    let server = Server::http(settings.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
    let addr = match server.server_addr().to_ip() {
        Some(a) => a,
        None => bail!("the server is not listening on an IP address"),
    };
    let addr_file: PathBuf = daemon.dir().join(ADDR_FILE);
    super::registry::write_atomic(&addr_file, format!("http://{addr}\n").as_bytes())?;
    eprintln!(
        "weir serve: listening on http://{addr} (data {})",
        daemon.dir().display()
    );
    let settings = Arc::new(settings);
    while !stop.load(Ordering::SeqCst) {
        let req = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("cannot accept a request: {e}");
                continue;
            }
        };
        let (d, s) = (daemon.clone(), settings.clone());
        let spawned = std::thread::Builder::new()
            .name("weir-http".into())
            .spawn(move || handle(&d, &s, req));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread for a request: {e}");
        }
    }
    let _ = std::fs::remove_file(&addr_file);
    Ok(())
}

fn json_response(status: u16, v: &Value) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::from_data(body).with_status_code(status);
    if let Ok(h) = Header::from_bytes("Content-Type", "application/json") {
        r.add_header(h);
    }
    r
}

fn error_body(f: &Failure) -> Value {
    let mut v = json!({ "error": f.message });
    if let Some(Value::Object(extra)) = &f.extra
        && let Value::Object(m) = &mut v
    {
        for (k, x) in extra {
            m.insert(k.clone(), x.clone());
        }
    }
    v
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// Reads the body, up to `max` bytes; `Err` (413) past it. The rest of an
/// oversized body is read and dropped (up to 1 GiB), so that the client
/// gets the answer rather than a reset connection.
fn body(req: &mut Request, max: usize) -> Result<Vec<u8>, Failure> {
    let too_big = |n: String| {
        fail(
            413,
            format!(
                "the request body ({n}) is larger than the limit ({max} bytes); start the daemon with a larger --max-body-mb"
            ),
        )
    };
    if let Some(n) = req.body_length()
        && n > max
    {
        if n <= 1 << 30 {
            let _ = std::io::copy(&mut req.as_reader().take(n as u64), &mut std::io::sink());
        }
        return Err(too_big(format!("{n} bytes")));
    }
    let mut buf = Vec::new();
    req.as_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| fail(400, format!("cannot read the request body: {e}")))?;
    if buf.len() > max {
        let _ = std::io::copy(&mut req.as_reader().take(1 << 30), &mut std::io::sink());
        return Err(too_big("more bytes".into()));
    }
    Ok(buf)
}

fn json_body(req: &mut Request, max: usize) -> Result<Value, Failure> {
    let b = body(req, max)?;
    serde_json::from_slice(&b)
        .map_err(|e| fail(400, format!("the request body is not valid JSON: {e}")))
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, Failure> {
    v.get(name).and_then(Value::as_str).ok_or_else(|| {
        fail(
            400,
            format!("the request body needs a string field {name:?}"),
        )
    })
}

/// Decodes %XX and + in a query value.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn handle(daemon: &Daemon, settings: &Settings, mut req: Request) {
    let authorized = header(&req, "Authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim().as_bytes(), settings.token.as_bytes()));
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect();
    let param = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(unescape)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = req.method().clone();
    if !authorized {
        // The body is read (to answer rather than reset the connection) only
        // up to the limit.
        if req.body_length().is_some_and(|n| n <= settings.max_body) {
            let _ = std::io::copy(
                &mut req.as_reader().take(settings.max_body as u64),
                &mut std::io::sink(),
            );
        }
        let mut r = json_response(
            401,
            &json!({"error": "a valid bearer token is needed (Authorization: Bearer TOKEN): the daemon's token is in DATA/weir.token, or WEIR_TOKEN"}),
        );
        if let Ok(h) = Header::from_bytes("WWW-Authenticate", "Bearer") {
            r.add_header(h);
        }
        let _ = req.respond(r);
        return;
    }
    if method == Method::Get && segs == ["metrics"] {
        let mut r = Response::from_data(daemon.metrics().into_bytes());
        if let Ok(h) = Header::from_bytes("Content-Type", "text/plain; version=0.0.4") {
            r.add_header(h);
        }
        let _ = req.respond(r);
        return;
    }
    let max = settings.max_body;
    let reply: Reply = (|| match (&method, segs.as_slice()) {
        (Method::Get, ["health"]) => Ok(json!({"ok": true})),
        (Method::Post, ["modules"]) => {
            let name = param("name")
                .ok_or_else(|| fail(400, "give the module's name: POST /modules?name=NAME"))?;
            let bytes = body(&mut req, max)?;
            daemon.push(&name, &bytes)
        }
        (Method::Get, ["modules"]) => daemon.modules(None),
        (Method::Get, ["modules", name]) => daemon.modules(Some(name)),
        (Method::Delete, ["modules", name, version]) => daemon.delete_module(name, version),
        (Method::Get, ["pipelines"]) => daemon.list(),
        (Method::Post, ["pipelines"]) => {
            let v = json_body(&mut req, max)?;
            let file = PathBuf::from(field(&v, "file")?);
            daemon.deploy(&file, field(&v, "text")?)
        }
        (Method::Get, ["pipelines", p]) => daemon.status(p),
        (Method::Delete, ["pipelines", p]) => daemon.delete(p),
        (Method::Post, ["pipelines", p, "stop"]) => daemon.stop(p),
        (Method::Post, ["pipelines", p, "start"]) => daemon.start(p),
        (Method::Post, ["pipelines", p, "reset"]) => daemon.reset(p),
        (Method::Post, ["pipelines", p, "steps", s, "swap"]) => {
            let v = json_body(&mut req, max)?;
            daemon.swap(p, s, field(&v, "module")?, false)
        }
        (Method::Post, ["pipelines", p, "steps", s, "rollback"]) => daemon.rollback(p, s),
        (Method::Post, ["pipelines", p, "shadow"]) => {
            let v = json_body(&mut req, max)?;
            daemon.shadow(p, field(&v, "step")?, field(&v, "module")?)
        }
        (Method::Get, ["pipelines", p, "diff"]) => {
            let wait = param("wait_ms")
                .and_then(|w| w.parse().ok())
                .unwrap_or(30_000);
            let samples = param("samples").and_then(|w| w.parse().ok()).unwrap_or(5);
            daemon.diff(p, Duration::from_millis(wait), samples)
        }
        (Method::Post, ["pipelines", p, "promote"]) => daemon.promote(p),
        (Method::Post, ["pipelines", p, "discard"]) => daemon.discard(p),
        (Method::Get, ["pipelines", p, "logs"]) => {
            let max = param("max").and_then(|w| w.parse().ok()).unwrap_or(1000);
            daemon.logs(p, param("step").as_deref(), max)
        }
        (Method::Get, ["pipelines", p, "steps", s, "state"]) => {
            let num = |n: &str| -> Result<Option<i64>, Failure> {
                param(n)
                    .map(|v| {
                        v.parse()
                            .map_err(|_| fail(400, format!("{n}={v:?} is not a number")))
                    })
                    .transpose()
            };
            let max = num("max")?.map_or(1000, |m| m.max(0) as usize);
            daemon.state(p, s, param("key"), num("from")?, num("to")?, max)
        }
        _ => Err(fail(
            404,
            format!(
                "no such endpoint: {method} /{} (docs/api.md lists them)",
                segs.join("/")
            ),
        )),
    })();
    let response = match reply {
        Ok(v) => json_response(200, &v),
        Err(f) => json_response(f.status, &error_body(&f)),
    };
    let _ = req.respond(response);
}
