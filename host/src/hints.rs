//! What to tell a user whose module file does not exist: when the path lies
//! in a guest project that `weir new` would have written (Rust, JavaScript
//! or Python), the command that builds it; inside the Weir repository, its
//! own `just` recipe.

use std::path::{Path, PathBuf};

/// A guest project recognised around a module path.
#[derive(Debug, PartialEq, Eq)]
pub struct Project {
    /// Rust, JavaScript or Python.
    pub language: &'static str,
    /// The project's directory.
    pub dir: PathBuf,
    /// The command that builds it, run in `dir`.
    pub build: String,
}

fn has(dir: &Path, file: &str) -> bool {
    dir.join(file).is_file()
}

/// The guest project a module path belongs to: the nearest directory above
/// it with a `Cargo.toml` (Rust), a `package.json` (JavaScript) or a
/// `build.sh` or `pyproject.toml` beside Python sources (Python).
pub fn project_of(module: &Path) -> Option<Project> {
    let module = if module.is_absolute() {
        module.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(module)
    };
    for dir in module.ancestors().skip(1) {
        if has(dir, "Cargo.toml") {
            if is_weir_repository(dir) {
                return None;
            }
            // A `weir new` project builds for wasm32-wasip2 by default.
            let build = if has(&dir.join(".cargo"), "config.toml") {
                "cargo build --release"
            } else {
                "cargo build --release --target wasm32-wasip2"
            };
            return Some(Project {
                language: "Rust",
                dir: dir.to_path_buf(),
                build: build.into(),
            });
        }
        if has(dir, "package.json") {
            let scripts = std::fs::read_to_string(dir.join("package.json")).unwrap_or_default();
            let build = if scripts.contains("\"build\"") {
                "npm run build".to_string()
            } else {
                "node WEIR/guest-sdk/js/build.mjs index.js -o NAME.wasm".to_string()
            };
            return Some(Project {
                language: "JavaScript",
                dir: dir.to_path_buf(),
                build,
            });
        }
        if has(dir, "app.py") || has(dir, "pyproject.toml") {
            let build = if has(dir, "build.sh") {
                "bash build.sh".to_string()
            } else {
                "bash WEIR/guest-sdk/python/build.sh . app NAME.wasm".to_string()
            };
            return Some(Project {
                language: "Python",
                dir: dir.to_path_buf(),
                build,
            });
        }
    }
    None
}

/// Whether `dir` is a checkout of the Weir repository.
fn is_weir_repository(dir: &Path) -> bool {
    has(dir, "justfile") && dir.join("guest-sdk").is_dir() && dir.join("host").is_dir()
}

/// What to do about a module file that does not exist, as one sentence
/// (without a trailing period), e.g. "build it first: `cargo build
/// --release` in /home/me/my-fn (a Rust project)".
pub fn missing_module(module: &Path) -> String {
    if let Some(p) = project_of(module) {
        let mut hint = format!(
            "build it first: `{}` in {} (a {} project)",
            p.build,
            p.dir.display(),
            p.language
        );
        // Cargo writes under CARGO_TARGET_DIR instead of the project's
        // target/ when that variable is set.
        if p.language == "Rust"
            && let Ok(target) = std::env::var("CARGO_TARGET_DIR")
            && !target.is_empty()
            && module
                .components()
                .any(|c| c.as_os_str() == std::ffi::OsStr::new("target"))
        {
            hint.push_str(&format!(
                "; CARGO_TARGET_DIR is set, so cargo writes the component under {target}, not under target/"
            ));
        }
        return hint;
    }
    let in_repo = std::env::current_dir()
        .ok()
        .is_some_and(|d| d.ancestors().any(is_weir_repository));
    if in_repo {
        "build it first (`just guests` builds the repository's examples and test guests) or fix the path".into()
    } else {
        "fix the path, or build the module first".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_are_recognised_by_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let rust = dir.path().join("my-fn");
        std::fs::create_dir_all(rust.join(".cargo")).unwrap();
        std::fs::write(rust.join("Cargo.toml"), "").unwrap();
        std::fs::write(rust.join(".cargo/config.toml"), "").unwrap();
        let p = project_of(&rust.join("target/wasm32-wasip2/release/my_fn.wasm")).unwrap();
        assert_eq!(
            (p.language, p.build.as_str()),
            ("Rust", "cargo build --release")
        );
        assert_eq!(p.dir, rust);

        let js = dir.path().join("js-fn");
        std::fs::create_dir_all(&js).unwrap();
        std::fs::write(js.join("package.json"), r#"{"scripts": {"build": "x"}}"#).unwrap();
        let p = project_of(&js.join("js-fn.wasm")).unwrap();
        assert_eq!(
            (p.language, p.build.as_str()),
            ("JavaScript", "npm run build")
        );

        let py = dir.path().join("py-fn");
        std::fs::create_dir_all(&py).unwrap();
        std::fs::write(py.join("app.py"), "").unwrap();
        std::fs::write(py.join("build.sh"), "").unwrap();
        let p = project_of(&py.join("py-fn.wasm")).unwrap();
        assert_eq!((p.language, p.build.as_str()), ("Python", "bash build.sh"));

        assert_eq!(project_of(&dir.path().join("loose.wasm")), None);
    }
}
