//! Helpers for the end-to-end tests: build the real plugins from source
//! (once per test process), find the real `replica-host` binary, and encode
//! payloads exactly as Orlando does.

pub mod daemon;
pub mod http;
pub mod in_process;
pub mod log_writer;
pub mod payloads;
pub mod pg_server;
pub mod sse;
pub mod wat_plugin;
pub use replica_host::test_seam::orlando;
/// A real PostgreSQL server for tests, each test in a schema of its own.
pub use replica_test_support::pg;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
}

/// The target directory the tests build into (`CARGO_TARGET_DIR`, or the
/// workspace's `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace());
    cmd
}

/// Every plugin crate the tests use: `(crate name, directory)`.
pub const PLUGINS: &[(&str, &str)] = &[
    ("counter-plugin", "plugins/counter"),
    ("counter-v2-plugin", "plugins/counter-v2"),
    ("bank-account-plugin", "plugins/bank-account"),
    ("user-profile-plugin", "plugins/user-profile"),
    ("misbehave-plugin", "tests/plugins/misbehave"),
    ("wasi-import-plugin", "tests/plugins/wasi-import"),
    ("contract-v1-plugin", "tests/plugins/contract-v1"),
    ("unknown-import-plugin", "tests/plugins/unknown-import"),
    ("no-decoder-plugin", "tests/plugins/no-decoder"),
    ("raw-output-plugin", "tests/plugins/raw-output"),
];

/// Builds every plugin in [`PLUGINS`] with one cargo invocation and
/// componentizes each; returns the component path of the crate `name`.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        replica_host::test_seam::ensure_target().expect("the wasm32-unknown-unknown target");
        let mut cmd = cargo();
        // Built as `replica-host plugin build` builds them.
        cmd.envs(replica_host::test_seam::plugin_profile_env());
        cmd.args([
            "build",
            "--release",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
        ]);
        for (krate, _) in PLUGINS {
            cmd.args(["-p", krate]);
        }
        let status = cmd.status().expect("run cargo");
        assert!(status.success(), "building the test plugins failed");
        PLUGINS
            .iter()
            .map(|(krate, _)| {
                let core = target_dir()
                    .join("wasm32-unknown-unknown/release")
                    .join(format!("{}.wasm", krate.replace('-', "_")));
                let component = replica_host::test_seam::componentize(&core)
                    .unwrap_or_else(|e| panic!("componentize {krate}: {e:#}"));
                (krate.to_string(), component)
            })
            .collect()
    });
    built
        .iter()
        .find(|(krate, _)| krate == name)
        .map(|(_, path)| path.clone())
        .unwrap_or_else(|| panic!("unknown test plugin {name}"))
}

/// The core module (not a component) cargo built for the crate `name`.
pub fn core_module(name: &str) -> PathBuf {
    plugin(name);
    target_dir()
        .join("wasm32-unknown-unknown/release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// The `replica-host` binary, built (or brought up to date) on first use.
pub fn host_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = cargo()
            .args(["build", "-p", "replica-host", "--bin", "replica-host"])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building replica-host failed");
        target_dir().join("debug/replica-host")
    })
    .clone()
}

/// The binary of the `replica-host` example `name`, built on first use.
pub fn example_bin(name: &str) -> PathBuf {
    let status = cargo()
        .args(["build", "-p", "replica-host", "--example", name])
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the example {name} failed");
    target_dir().join("debug/examples").join(name)
}

/// Runs `replica-host` with `args`; returns (exit code, stdout, stderr).
pub fn run_host(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(host_bin());
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run replica-host");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
