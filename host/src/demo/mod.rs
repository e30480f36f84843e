//! `replica-host demo`: the whole system on one machine with nothing but
//! Rust installed. Builds the sample plugins, creates an SQLite log, runs a
//! producer writing Orlando-format snapshots, and runs the host on it.

pub mod orlando;
pub mod producer;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::authoring::build::build_plugin;

/// The sample plugins: (grain type, crate directory under `plugins/`).
pub const SAMPLE_PLUGINS: &[(&str, &str)] = &[
    ("Counter", "counter"),
    ("BankAccount", "bank-account"),
    ("UserProfile", "user-profile"),
];

/// Builds the sample plugins from `plugins_dir` and writes a config for them
/// into `demo_dir`, with the log at `demo_dir/replication.db` (removed first).
/// Returns the config file's path.
pub fn prepare(plugins_dir: &Path, demo_dir: &Path, listen: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(demo_dir).with_context(|| format!("{}", demo_dir.display()))?;
    let mut config = format!(
        "# Written by `replica-host demo`.\ncluster_id = \"demo-secondary\"\n\n[log]\nurl = \"sqlite://replication.db\"\n\n[consumer]\npoll_interval_ms = 100\nbatch_limit = 100\n\n[http]\nlisten = \"{listen}\"\ndrain_ms = 0  # a demo stops at once; a real host drains\n"
    );
    for (grain_type, dir) in SAMPLE_PLUGINS {
        eprintln!("building plugin {dir} ...");
        let built = build_plugin(&plugins_dir.join(dir))?;
        let target = demo_dir.join(format!("{dir}.wasm"));
        std::fs::copy(&built, &target).with_context(|| format!("{}", target.display()))?;
        config.push_str(&format!(
            "\n[[plugin]]\ngrain_type = \"{grain_type}\"\npath = \"{dir}.wasm\"\n"
        ));
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(demo_dir.join(format!("replication.db{suffix}")));
    }
    let path = demo_dir.join("replica-host.toml");
    std::fs::write(&path, config).with_context(|| format!("{}", path.display()))?;
    Ok(path)
}
