//! `replica-host plugin build | inspect | new | test | fixture | decode`.

use super::fail;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::authoring::build::build_plugin_with_env;
use crate::authoring::scaffold::{self, NewPlugin, PayloadFormat, SdkSource};
use crate::authoring::{dry_run, fixture, golden};
use crate::contract::{CONTRACT_PACKAGE, CONTRACT_VERSION};
use crate::plugin::{LoadedPlugin, PluginEngine, PluginLimits, SnapshotRef};
use crate::replication_log::{self, redact_password};

use super::PluginCommand;

/// Exit status for a payload that does not decode.
const EXIT_DECODE_FAILED: u8 = 1;
/// Exit status for a file that is not a valid plugin.
const EXIT_BAD_PLUGIN: u8 = 2;
/// Exit status for a failing golden case or dry run.
const EXIT_TEST_FAILED: u8 = 1;
/// Exit status for fixtures or a log that cannot be used.
const EXIT_CANNOT_TEST: u8 = 2;

/// A payload format, as `--format` names it.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum Format {
    /// bincode 2, standard config, through serde (Orlando's default).
    Bincode,
    /// serde_json.
    Json,
}

pub(super) fn run(cmd: PluginCommand) -> ExitCode {
    match cmd {
        PluginCommand::Build { dir, offline } => match build_plugin_with_env(
            &dir,
            if offline {
                &[("CARGO_NET_OFFLINE", "true")]
            } else {
                &[]
            },
        ) {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_DECODE_FAILED, &format!("{e:#}")),
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
        PluginCommand::New {
            dir,
            grain_type,
            format,
            sdk,
            sdk_git,
            rev,
        } => new(&dir, grain_type, format, sdk, sdk_git.zip(rev)),
        PluginCommand::Test {
            file,
            fixtures_dir,
            log: None,
            ..
        } if fixtures_dir.as_os_str() == "-" => test_stdin(&file),
        PluginCommand::Test {
            file,
            fixtures_dir,
            log: None,
            ..
        } => test_fixtures(&file, &fixtures_dir),
        PluginCommand::Fixture {
            log,
            grain,
            sequence,
            plugin,
            out,
            name,
        } => fixture(&log, &grain, sequence, &plugin, &out, name),
        PluginCommand::Test {
            file,
            log: Some(url),
            grain_type,
            sample,
            compare,
            ..
        } => test_against_log(&file, &url, grain_type, sample, compare.as_deref()),
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
                    return fail(EXIT_DECODE_FAILED, &format!("{}: {e}", payload.display()));
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
                Err(e) => fail(EXIT_DECODE_FAILED, &e.to_string()),
            }
        }
    }
}

fn new(
    dir: &Path,
    grain_type: String,
    format: Format,
    sdk: Option<PathBuf>,
    sdk_git: Option<(String, String)>,
) -> ExitCode {
    let sdk = match (sdk, sdk_git) {
        (_, Some((url, rev))) => Ok(SdkSource::Git { url, rev }),
        (Some(path), None) => SdkSource::path(&path),
        // The SDK of the checkout this binary was built from, if still there.
        (None, None) => SdkSource::path(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../guest-sdk"
        )))
        .map_err(|_| {
            anyhow::anyhow!(
                "the replica-guest SDK this binary was built from is gone; pass --sdk PATH (the guest-sdk folder of a checkout) or --sdk-git URL"
            )
        }),
    };
    let plugin = sdk.map(|sdk| NewPlugin {
        grain_type,
        format: match format {
            Format::Bincode => PayloadFormat::Bincode,
            Format::Json => PayloadFormat::Json,
        },
        sdk,
        lock_like: Some(workspace_lock()).filter(|lock| lock.is_file()),
    });
    match plugin.and_then(|plugin| scaffold::write(dir, &plugin)) {
        Ok(files) => {
            for file in files {
                println!("{}", dir.join(file).display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_DECODE_FAILED, &format!("{e:#}")),
    }
}

/// The `Cargo.lock` of the checkout this binary was built from.
fn workspace_lock() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).to_path_buf()
}

/// `plugin test WASM -`: one payload from stdin, decoded as a golden case
/// named `stdin`; the state as JSON on stdout, or the error.
fn test_stdin(file: &Path) -> ExitCode {
    use std::io::Read;
    let plugin = match load(file) {
        Ok(plugin) => plugin,
        Err(code) => return code,
    };
    let mut payload = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut payload) {
        return fail(EXIT_CANNOT_TEST, &format!("standard input: {e}"));
    }
    let decoded = plugin.decode(SnapshotRef {
        grain_type: &plugin.description().grain_type,
        grain_key: "stdin",
        sequence: 1,
        timestamp_millis: 0,
        source_cluster: "fixtures",
        payload: &payload,
    });
    match decoded.map(|state| state.to_json()) {
        Ok(Ok(json)) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => fail(
            EXIT_TEST_FAILED,
            &format!("the state cannot be rendered: {e}"),
        ),
        Err(e) => fail(EXIT_TEST_FAILED, &e.to_string()),
    }
}

/// `plugin fixture`: see [`fixture::capture`].
fn fixture(
    url: &str,
    grain: &str,
    sequence: Option<u64>,
    plugin_file: &Path,
    out: &Path,
    name: Option<String>,
) -> ExitCode {
    let Some((grain_type, grain_key)) = grain.split_once('/') else {
        return fail(
            EXIT_CANNOT_TEST,
            &format!("--grain {grain}: give TYPE/KEY, e.g. Counter/user-42"),
        );
    };
    let plugin = match load(plugin_file) {
        Ok(plugin) => plugin,
        Err(code) => return code,
    };
    let shown_url = replication_log::redact_password(url);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(EXIT_CANNOT_TEST, &format!("cannot start a runtime: {e}")),
    };
    let request = fixture::FixtureRequest {
        grain_type: grain_type.to_string(),
        grain_key: grain_key.to_string(),
        sequence,
        name,
    };
    let log = match runtime.block_on(replication_log::open(url)) {
        Ok(log) => log,
        Err(e) => return fail(EXIT_CANNOT_TEST, &format!("{shown_url}: {e}")),
    };
    match runtime.block_on(fixture::capture(&*log, &plugin, &request, out)) {
        Ok(captured) => {
            for file in &captured.files {
                println!("{}", file.display());
            }
            println!(
                "case {} (sequence {}): {}",
                captured.name, captured.sequence, captured.outcome
            );
            ExitCode::SUCCESS
        }
        Err(e) if e.is::<fixture::NoSuchSnapshot>() => {
            fail(EXIT_TEST_FAILED, &format!("{shown_url}: {e:#}"))
        }
        Err(e) => fail(EXIT_CANNOT_TEST, &format!("{shown_url}: {e:#}")),
    }
}

fn test_fixtures(file: &Path, fixtures_dir: &Path) -> ExitCode {
    let plugin = match load(file) {
        Ok(plugin) => plugin,
        Err(code) => return code,
    };
    let results = match golden::run(&plugin, fixtures_dir) {
        Ok(results) => results,
        Err(e) => return fail(EXIT_CANNOT_TEST, &format!("{e:#}")),
    };
    for line in results.iter().flat_map(|r| r.lines()) {
        println!("{line}");
    }
    let failed = results.iter().filter(|r| !r.passed()).count();
    println!(
        "{} cases: {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_TEST_FAILED)
    }
}

fn test_against_log(
    file: &Path,
    url: &str,
    grain_type: Option<String>,
    sample: Option<u64>,
    compare: Option<&Path>,
) -> ExitCode {
    let candidate = match load(file) {
        Ok(plugin) => plugin,
        Err(code) => return code,
    };
    let other = match compare.map(load).transpose() {
        Ok(other) => other,
        Err(code) => return code,
    };
    let grain_type = grain_type.unwrap_or_else(|| candidate.description().grain_type.clone());
    let shown_url = redact_password(url);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(EXIT_CANNOT_TEST, &format!("cannot start a runtime: {e}"));
        }
    };
    let d = candidate.description();
    println!(
        "dry run of {} ({} version {}) on grain type {grain_type} in {shown_url} (read-only)",
        candidate.name(),
        d.schema_name,
        d.schema_version
    );
    let report = runtime.block_on(async {
        let log = replication_log::open(url).await?;
        dry_run::dry_run(&*log, &grain_type, sample, &candidate, other.as_ref()).await
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => return fail(EXIT_CANNOT_TEST, &format!("{shown_url}: {e}")),
    };
    for line in report.lines(candidate.name()) {
        println!("{line}");
    }
    if report.grains == 0 {
        return fail(
            EXIT_TEST_FAILED,
            &format!(
                "no grain of type {grain_type} has a FullState in {shown_url}: nothing was checked"
            ),
        );
    }
    if report.failed() > 0 {
        ExitCode::from(EXIT_TEST_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

fn load(file: &Path) -> Result<LoadedPlugin, ExitCode> {
    let engine = PluginEngine::new().map_err(|e| {
        fail(
            EXIT_BAD_PLUGIN,
            &format!("cannot start the Wasm engine: {e:#}"),
        )
    })?;
    LoadedPlugin::load(&engine, file, PluginLimits::default())
        .map_err(|e| fail(EXIT_BAD_PLUGIN, &format!("invalid plugin {e}")))
}
