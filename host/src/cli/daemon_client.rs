//! How the CLI talks to the daemon: where it is and its token
//! (`ServerArgs`), and a small HTTP/1.1 client over one connection per
//! request (`Client`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::http;

/// How the CLI finds the daemon.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// The daemon's address [default: DIR/weir.addr when the daemon runs on
    /// --data, else http://127.0.0.1:7878].
    #[arg(long, env = "WEIR_SERVER", value_name = "URL")]
    server: Option<String>,
    /// The bearer token [default: DIR/weir.token].
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The daemon's data directory, where its address and token files are.
    #[arg(long, env = "WEIR_DATA", default_value = ".weir", value_name = "DIR")]
    data: PathBuf,
}

pub(super) struct Client {
    url: String,
    addr: String,
    token: String,
}

impl ServerArgs {
    pub(super) fn client(&self) -> anyhow::Result<Client> {
        let url = match &self.server {
            Some(s) => s.clone(),
            None => std::fs::read_to_string(self.data.join(http::ADDR_FILE))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "http://127.0.0.1:7878".into()),
        };
        let addr = url
            .strip_prefix("http://")
            .with_context(|| format!("--server {url:?}: give http://HOST:PORT"))?
            .trim_end_matches('/')
            .to_string();
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let path = self.data.join(http::TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .map(|s| s.trim().to_string())
                    .with_context(|| {
                        format!(
                            "no token: give --token or WEIR_TOKEN, or run on the daemon's data directory (cannot read {})",
                            path.display()
                        )
                    })?
            }
        };
        Ok(Client { url, addr, token })
    }
}

/// Escapes a path segment or query value.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// One request; the status and the body.
    pub(super) fn raw(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let unreachable = || {
            format!(
                "cannot reach the weir daemon at {} (is `weir serve` running? give --server or WEIR_SERVER)",
                self.url
            )
        };
        let addrs: Vec<SocketAddr> = self
            .addr
            .to_socket_addrs()
            .with_context(unreachable)?
            .collect();
        let mut stream = TcpStream::connect(&addrs[..]).with_context(unreachable)?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            self.token,
            body.len()
        );
        // The daemon may answer (and close) before it read all of an
        // oversized body: its answer still counts.
        let sent = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body));
        let mut buf = Vec::new();
        let read = stream.read_to_end(&mut buf);
        if buf.is_empty() {
            sent.with_context(unreachable)?;
            read.with_context(unreachable)?;
        }
        let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            bail!("the daemon at {} sent an incomplete answer", self.url);
        };
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("the daemon at {} answered {head:?}", self.url))?;
        let mut content = buf[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            content = dechunk(&content);
        }
        Ok((status, content))
    }

    /// A JSON request; the JSON answer, or its error as an error.
    pub(super) fn call(&self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Value> {
        let (status, content) = self.raw(method, path, body)?;
        let v: Value = serde_json::from_slice(&content).unwrap_or_else(
            |_| json!({"error": String::from_utf8_lossy(&content).trim().to_string()}),
        );
        if status == 401 {
            bail!(
                "the daemon at {} refused the token (401): give the token in DIR/weir.token (--token or WEIR_TOKEN)",
                self.url
            );
        }
        if !(200..300).contains(&status) {
            let msg = v.get("error").and_then(Value::as_str).unwrap_or("failed");
            bail!("{msg}");
        }
        Ok(v)
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}
