//! Builds the guests `weir demo` runs (examples/split-words, count,
//! stock-stats and merge-json) to WebAssembly components and embeds them in the binary, so
//! that the demo works from an installed `weir` with no modules around.
//!
//! They are built by a nested `cargo build --target wasm32-wasip2` into a
//! target directory of their own under OUT_DIR (sharing the outer build's
//! would wait on its lock). When that build fails (say the wasm32-wasip2
//! target is not installed), the binary is built without them, with a
//! warning, and `weir demo` looks for the modules in WEIR_MODULE_PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, component file name) of each demo guest.
const GUESTS: [(&str, &str); 4] = [
    ("split-words", "split_words.wasm"),
    ("count", "count.wasm"),
    ("stock-stats", "stock_stats.wasm"),
    ("merge-json", "merge_json.wasm"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.parent().expect("host/ is inside the workspace");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    for dir in ["guest-sdk", "wit", ".cargo"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for (package, _) in GUESTS {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("examples").join(package).display()
        );
    }
    println!("cargo:rerun-if-env-changed=WEIR_DEMO_GUESTS");

    let built = if std::env::var_os("WEIR_DEMO_GUESTS").is_some_and(|v| v == "skip") {
        Err("WEIR_DEMO_GUESTS=skip".to_string())
    } else {
        build_guests(root, &out.join("demo-guests"))
    };
    let mut code = String::from(
        "/// The demo's guests, (file name, component), when they could be built.\n\
         pub const DEMO_GUESTS: &[(&str, &[u8])] = &[\n",
    );
    match built {
        Ok(dir) => {
            for (_, file) in GUESTS {
                let path = dir.join(file);
                code.push_str(&format!(
                    "    ({file:?}, include_bytes!({:?})),\n",
                    path.display().to_string()
                ));
            }
        }
        Err(why) => println!(
            "cargo:warning=the demo's guests are not embedded in weir ({why}); `weir demo` will need WEIR_MODULE_PATH"
        ),
    }
    code.push_str("];\n");
    std::fs::write(out.join("demo_guests.rs"), code).expect("OUT_DIR is writable");
}

/// Builds the guests; returns the directory their components are in.
fn build_guests(root: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--quiet", "--profile", "guest"])
        .args(["--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", target_dir)
        // The outer build's flags are for the host; the guests take theirs
        // from .cargo/config.toml (SIMD).
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        // Under `cargo clippy`, lint only the outer build.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS");
    for (package, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    let output = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        return Err(format!("building them failed: {last}"));
    }
    Ok(target_dir.join("wasm32-wasip2").join("guest"))
}
