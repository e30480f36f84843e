//! `replica-host plugin build`: compile a plugin crate for
//! `wasm32-unknown-unknown` with cargo and wrap the core module into a
//! component with `wit-component`. No tool beyond cargo and rustup.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The target plugins build for: no WASI, nothing to import but our contract.
pub const PLUGIN_TARGET: &str = "wasm32-unknown-unknown";

/// How every plugin is built, on top of the crate's release profile (as
/// cargo's environment overrides of it): link-time optimisation and one
/// codegen unit, so that LLVM inlines the standard library's and the SDK's
/// small functions (UTF-8 checks, the arena, the encoder's writes) into the
/// decode. About 4 % fewer instructions per decode of the ~1 KiB sample
/// BankAccount and a 10 % smaller module, in about the same build time
/// (BENCHMARKS.md, section 20). The
/// target already aborts on panic (the SDK's hook logs first). A variable
/// already set in the environment wins.
pub const PLUGIN_PROFILE: [(&str, &str); 2] = [
    ("CARGO_PROFILE_RELEASE_LTO", "true"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
];

/// The `PLUGIN_PROFILE` variables the environment does not set already.
pub fn plugin_profile_env() -> Vec<(&'static str, &'static str)> {
    PLUGIN_PROFILE
        .into_iter()
        .filter(|(key, _)| std::env::var_os(key).is_none())
        .collect()
}

/// Builds the plugin crate in `dir` (release profile, with
/// `PLUGIN_PROFILE`) and returns the path of the component it wrote.
/// Cargo's own diagnostics go to stderr.
pub fn build_plugin(dir: &Path) -> anyhow::Result<PathBuf> {
    build_plugin_with_env(dir, &[])
}

/// Like [`build_plugin`], with extra environment for cargo (e.g. another
/// `CARGO_TARGET_DIR` and `RUSTFLAGS`, for a benchmark's variant build).
pub fn build_plugin_with_env(dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{}: no Cargo.toml, not a plugin crate directory",
            dir.display()
        );
    }
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("{}", manifest.display()))?;
    ensure_target()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(dir)
        .envs(plugin_profile_env())
        .envs(env.iter().copied())
        .args(["build", "--release", "--lib", "--target", PLUGIN_TARGET])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;

    let mut core_module = None;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        if let Some(path) = cdylib_artifact(&line, &manifest) {
            core_module = Some(path);
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        if !target_installed() {
            bail!(
                "the {PLUGIN_TARGET} target is not installed: run `rustup target add {PLUGIN_TARGET}`"
            );
        }
        bail!(
            "cargo build failed for {} (see the errors above)",
            manifest.display()
        );
    }
    let Some(core_module) = core_module else {
        bail!(
            "{}: no cdylib was built; add `[lib] crate-type = [\"cdylib\", \"rlib\"]` to the plugin's Cargo.toml",
            manifest.display()
        );
    };
    let output = componentize(&core_module)?;
    Ok(output)
}

/// The `.wasm` file of a `compiler-artifact` message for our crate's cdylib.
fn cdylib_artifact(line: &str, manifest: &Path) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" {
        return None;
    }
    if Path::new(msg["manifest_path"].as_str()?) != manifest {
        return None;
    }
    let kinds = msg["target"]["kind"].as_array()?;
    if !kinds.iter().any(|k| k == "cdylib") {
        return None;
    }
    msg["filenames"]
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
}

/// Wraps a core module into a component next to it, under `plugin/`.
pub fn componentize(core_module: &Path) -> anyhow::Result<PathBuf> {
    let bytes = std::fs::read(core_module).with_context(|| format!("{}", core_module.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| {
            let text = format!("{e:#}").replace('\n', " ");
            if text.contains("wasi") {
                anyhow::anyhow!(
                    "{}: the module imports WASI ({text}); plugins must build for {PLUGIN_TARGET} and use no WASI",
                    core_module.display()
                )
            } else {
                anyhow::anyhow!("{}: cannot make a component: {text}", core_module.display())
            }
        })?;
    let dir = core_module
        .parent()
        .unwrap_or(Path::new("."))
        .join("plugin");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let output = dir.join(core_module.file_name().expect("a file name"));
    std::fs::write(&output, component).with_context(|| format!("{}", output.display()))?;
    Ok(output)
}

/// Installs the `PLUGIN_TARGET` with rustup when it is missing, so that a
/// fresh machine with only Rust can build plugins.
pub fn ensure_target() -> anyhow::Result<()> {
    if target_installed() {
        return Ok(());
    }
    eprintln!("installing the {PLUGIN_TARGET} target with rustup ...");
    let status = Command::new("rustup")
        .args(["target", "add", PLUGIN_TARGET])
        .status()
        .context("cannot run rustup")?;
    if !status.success() {
        bail!("`rustup target add {PLUGIN_TARGET}` failed");
    }
    Ok(())
}

fn target_installed() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == PLUGIN_TARGET)
        })
        // Without rustup we cannot tell; do not claim it is missing.
        .unwrap_or(true)
}
