//! The precompiled cache: compiled components on disk, keyed by the
//! component's sha256 and a hash of the engine's settings (wasmtime version,
//! target, compiler flags), so that a second load skips compilation and a
//! changed engine never loads stale code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of `<sha256>-<engine>.cwasm` files.
pub struct Cache {
    dir: PathBuf,
    engine_key: String,
}

struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

impl Cache {
    /// `$WEIR_CACHE`, else `$XDG_CACHE_HOME/weir/modules`, else
    /// `$HOME/.cache/weir/modules`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("WEIR_CACHE") {
            return Some(PathBuf::from(d));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("weir").join("modules"))
    }

    /// A cache in `dir` for code compiled by `engine`.
    pub fn new(dir: &Path, engine: &Engine) -> Self {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex::encode(&h.0.finalize()[..8]);
        Cache {
            dir: dir.to_path_buf(),
            engine_key,
        }
    }

    /// Where the compiled form of the component with this sha256 lives.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The compiled component, from the cache when it is there (`true`), or
    /// compiled now and stored (`false`). A cache that cannot be read or
    /// written is skipped, never fatal.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.path(sha256);
        if path.exists() {
            // SAFETY: the file is one this cache wrote from a component whose
            // bytes hash to `sha256`, under a name that includes the engine's
            // compatibility hash; wasmtime also checks its header.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "precompiled module unusable, recompiling: {e:#}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), "cannot write the precompiled cache: {e:#}");
        }
        Ok((component, false))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let data = component.serialize().map_err(anyhow::Error::from)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
