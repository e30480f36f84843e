//! `replica-host plugin build | inspect | decode`.

use std::path::Path;
use std::process::ExitCode;

use replica_host::contract::{CONTRACT_PACKAGE, CONTRACT_VERSION};
use replica_host::plugin::build::build_plugin;
use replica_host::plugin::{LoadedPlugin, PluginEngine, PluginLimits, SnapshotRef};

use super::PluginCommand;

/// Exit status for a payload that does not decode.
const EXIT_DECODE_FAILED: u8 = 1;
/// Exit status for a file that is not a valid plugin.
const EXIT_BAD_PLUGIN: u8 = 2;

pub(super) fn run(cmd: PluginCommand) -> ExitCode {
    match cmd {
        PluginCommand::Build { dir } => match build_plugin(&dir) {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_DECODE_FAILED, &format!("error: {e:#}")),
        },
        PluginCommand::Inspect { file } => match load(&file) {
            Ok(plugin) => {
                let d = plugin.description();
                println!("file:           {}", file.display());
                println!("grain type:     {}", d.grain_type);
                println!(
                    "state schema:   {} version {}",
                    d.schema_name, d.schema_version
                );
                println!("decodes states: {}", d.state_versions.join(", "));
                println!(
                    "contract:       {CONTRACT_PACKAGE}@{CONTRACT_VERSION} (sdk {})",
                    d.sdk_version
                );
                println!("imports:        {}", plugin.imports().join(", "));
                println!("size:           {} bytes", plugin.size());
                println!("sha256:         {}", plugin.sha256());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        PluginCommand::Decode {
            file,
            payload,
            grain_key,
            sequence,
        } => {
            let plugin = match load(&file) {
                Ok(plugin) => plugin,
                Err(code) => return code,
            };
            let bytes = match std::fs::read(&payload) {
                Ok(bytes) => bytes,
                Err(e) => {
                    return fail(
                        EXIT_DECODE_FAILED,
                        &format!("error: {}: {e}", payload.display()),
                    );
                }
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let snapshot = SnapshotRef {
                grain_type: &plugin.description().grain_type,
                grain_key: &grain_key,
                sequence,
                timestamp_millis: now,
                source_cluster: "cli",
                payload: &bytes,
            };
            match plugin
                .decode(snapshot)
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    v.to_json().map_err(|e| {
                        format!(
                            "plugin {}: state cannot be rendered as JSON: {e}",
                            plugin.name()
                        )
                    })
                }) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_DECODE_FAILED, &format!("error: {e}")),
            }
        }
    }
}

fn load(file: &Path) -> Result<LoadedPlugin, ExitCode> {
    let engine = PluginEngine::new().map_err(|e| {
        fail(
            EXIT_BAD_PLUGIN,
            &format!("error: cannot start the Wasm engine: {e:#}"),
        )
    })?;
    LoadedPlugin::load(&engine, file, PluginLimits::default())
        .map_err(|e| fail(EXIT_BAD_PLUGIN, &format!("error: invalid plugin {e}")))
}

fn fail(code: u8, line: &str) -> ExitCode {
    eprintln!("{}", line.replace('\n', " "));
    ExitCode::from(code)
}
