//! The module registry: components uploaded to the daemon, checked against
//! the worlds and precompiled at upload, stored under their sha256 with a
//! version number per name.
//!
//! On disk, in the data directory: `weir-daemon/modules/SHA256.wasm` (the
//! bytes) and `weir-daemon/modules/index.json` (names, versions, worlds),
//! written to a temporary file and renamed into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use weir::runtime::Runtime;

/// One stored version of a module.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Version {
    /// Its number (1, 2, ...).
    pub version: u32,
    /// The sha256 of its bytes.
    pub sha256: String,
    /// Its world (mapper, aggregator, joiner, processor).
    pub world: String,
    /// Its size in bytes.
    pub size: usize,
    /// When it was uploaded (ms since the epoch).
    pub uploaded_ms: i64,
}

#[derive(Default, Serialize, Deserialize)]
struct Index {
    /// Per name: its versions, oldest first, and the next number.
    modules: BTreeMap<String, Entry>,
}

#[derive(Default, Serialize, Deserialize)]
struct Entry {
    next: u32,
    versions: Vec<Version>,
}

/// The registry of one data directory.
pub struct Registry {
    dir: PathBuf,
    index: Index,
}

/// What an upload gave.
pub struct Pushed {
    /// The stored version.
    pub version: Version,
    /// The time to check and precompile it.
    pub precompile_ms: f64,
}

/// Why a reference does not resolve, or an upload or delete is refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not NAME@VERSION.
    #[error("{0:?} is not a module reference: write NAME@VERSION or NAME@latest")]
    BadRef(String),
    /// No such module or version.
    #[error("{0}")]
    NotFound(String),
    /// The upload is not a valid component of one of the worlds.
    #[error("{0}")]
    Invalid(String),
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

impl Registry {
    /// Opens (or creates) the registry under `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("index.json");
        let index = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("the module index {} is corrupt", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Registry {
            dir: dir.to_path_buf(),
            index,
        })
    }

    fn save(&self) -> anyhow::Result<()> {
        write_atomic(
            &self.dir.join("index.json"),
            &serde_json::to_vec_pretty(&self.index)?,
        )
    }

    /// The file of a stored component.
    pub fn blob(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.wasm"))
    }

    /// Checks `bytes` against the worlds, precompiles it, and stores it as
    /// the next version of `name`. Stores nothing when it is refused.
    pub fn push(&mut self, runtime: &Runtime, name: &str, bytes: &[u8]) -> anyhow::Result<Pushed> {
        if !name_ok(name) {
            return Err(RegistryError::Invalid(format!(
                "module name {name:?}: use 1 to 100 of the characters A-Z a-z 0-9 . _ -"
            ))
            .into());
        }
        let next = self.index.modules.get(name).map_or(1, |e| e.next.max(1));
        let started = Instant::now();
        let module = runtime
            .load(&format!("{name}@{next}"), bytes)
            .map_err(|e| RegistryError::Invalid(format!("{e:#}")))?;
        let precompile_ms = started.elapsed().as_secs_f64() * 1e3;
        let sha256 = hex::encode(Sha256::digest(bytes));
        debug_assert_eq!(sha256, module.sha256());
        let blob = self.blob(&sha256);
        if !blob.exists() {
            write_atomic(&blob, bytes)?;
        }
        let version = Version {
            version: next,
            sha256,
            world: module.world().name().to_string(),
            size: bytes.len(),
            uploaded_ms: now_ms(),
        };
        let entry = self.index.modules.entry(name.to_string()).or_default();
        entry.versions.push(version.clone());
        entry.next = next + 1;
        self.save()?;
        Ok(Pushed {
            version,
            precompile_ms,
        })
    }

    /// Every module: (name, its versions).
    pub fn list(&self) -> Vec<(String, Vec<Version>)> {
        self.index
            .modules
            .iter()
            .filter(|(_, e)| !e.versions.is_empty())
            .map(|(n, e)| (n.clone(), e.versions.clone()))
            .collect()
    }

    /// The versions of `name`.
    pub fn versions(&self, name: &str) -> Result<Vec<Version>, RegistryError> {
        match self.index.modules.get(name) {
            Some(e) if !e.versions.is_empty() => Ok(e.versions.clone()),
            _ => Err(RegistryError::NotFound(format!(
                "no module named {name} in the registry (`weir module list` shows them; `weir module push FILE.wasm --name {name}` adds one)"
            ))),
        }
    }

    /// Resolves `NAME@VERSION` or `NAME@latest` to (NAME@VERSION, version).
    pub fn resolve(&self, reference: &str) -> Result<(String, Version), RegistryError> {
        let Some((name, v)) = reference.split_once('@') else {
            return Err(RegistryError::BadRef(reference.to_string()));
        };
        let versions = self.versions(name)?;
        let found = if v == "latest" {
            versions.last().cloned()
        } else {
            let n: u32 = v
                .parse()
                .map_err(|_| RegistryError::BadRef(reference.to_string()))?;
            versions.into_iter().find(|x| x.version == n)
        };
        match found {
            Some(x) => Ok((format!("{name}@{}", x.version), x)),
            None => Err(RegistryError::NotFound(format!(
                "module {name} has no version {v} (`weir module show {name}` lists its versions)"
            ))),
        }
    }

    /// NAME@VERSION of a stored component, by its sha256 (the newest).
    pub fn name_of(&self, sha256: &str) -> Option<String> {
        self.index.modules.iter().find_map(|(n, e)| {
            e.versions
                .iter()
                .rev()
                .find(|v| v.sha256 == sha256)
                .map(|v| format!("{n}@{}", v.version))
        })
    }

    /// `text` with each stored component's file in it replaced by its
    /// NAME@VERSION (a module's messages name it by its file).
    pub fn name_blobs(&self, text: &str) -> String {
        let dir = format!("{}{}", self.dir.display(), std::path::MAIN_SEPARATOR);
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(&dir) {
            out.push_str(&rest[..at]);
            let after = &rest[at + dir.len()..];
            let sha = after
                .get(..64)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
            match sha.zip(after.get(64..).filter(|t| t.starts_with(".wasm"))) {
                Some((sha, tail)) => {
                    match self.name_of(sha) {
                        Some(n) => out.push_str(&n),
                        None => out.push_str(&rest[at..at + dir.len() + 64 + 5]),
                    }
                    rest = &tail[5..];
                }
                None => {
                    out.push_str(&dir);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Deletes one version (the caller checked it is not in use). Its bytes
    /// go too unless another version shares them.
    pub fn delete(&mut self, name: &str, version: u32) -> anyhow::Result<Version> {
        let entry = self.index.modules.get_mut(name).ok_or_else(|| {
            RegistryError::NotFound(format!("no module named {name} in the registry"))
        })?;
        let Some(i) = entry.versions.iter().position(|v| v.version == version) else {
            return Err(
                RegistryError::NotFound(format!("module {name} has no version {version}")).into(),
            );
        };
        let gone = entry.versions.remove(i);
        self.save()?;
        let shared = self
            .index
            .modules
            .values()
            .any(|e| e.versions.iter().any(|v| v.sha256 == gone.sha256));
        if !shared {
            let _ = std::fs::remove_file(self.blob(&gone.sha256));
        }
        Ok(gone)
    }
}
