//! `replica-host config check [--config FILE]`, and where `run` finds its
//! config: `--config`, else `REPLICA_CONFIG`, with the environment's
//! `REPLICA_<SECTION>__<KEY>` overrides applied.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::daemon;
use crate::daemon::config::{Config, env};
use crate::plugin::PluginEngine;
use clap::Subcommand;

/// What `run --help` and `config check --help` say about the environment.
pub(super) const ENV_HELP: &str = "Environment: REPLICA_CONFIG names the config file when --config \
is not given. REPLICA_<SECTION>__<KEY>=VALUE overrides any setting of the file, e.g. \
REPLICA_LOG__URL=postgres://... or REPLICA_CONSUMER__SHARD=2/3 (REPLICA_CLUSTER_ID for \
cluster_id, REPLICA_PLUGIN__0__SHA256 for a [[plugin]] entry); VALUE is read as TOML, else as a \
string. Each override is logged by name at startup, never its value. PGPASSWORD is the log's \
password when neither log.url nor [log] password_file holds one.";

/// `replica-host config …`
#[derive(Subcommand)]
pub(super) enum ConfigCommand {
    /// Load and check the config as `run` does at startup (every plugin
    /// compiled and checked, tokens, TLS files, the log's password file),
    /// print the effective configuration with secrets masked, and exit: 0
    /// when `run` would start on it, 2 when not. The log is not opened.
    #[command(after_help = ENV_HELP)]
    Check {
        /// The TOML config file (default: $REPLICA_CONFIG).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Exit status for an invalid config.
const EXIT_INVALID: u8 = 2;

/// The config `run` and `config check` use: `path`, else `REPLICA_CONFIG`,
/// with the environment's overrides (kept in [`Config::overrides`]); an
/// error is one line.
pub(super) fn load(path: Option<PathBuf>) -> Result<Config, String> {
    let path = path
        .or_else(|| {
            std::env::var_os("REPLICA_CONFIG")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .ok_or("no config file: pass --config FILE or set REPLICA_CONFIG")?;
    Config::load_with(&path, &env::overrides())
}

/// Runs a `config` subcommand.
pub(super) fn run(cmd: ConfigCommand) -> ExitCode {
    let ConfigCommand::Check { config } = cmd;
    let config = match load(config) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&e),
    };
    let engine = match PluginEngine::new() {
        Ok(engine) => engine,
        Err(e) => return fail(&format!("cannot start the Wasm engine: {e:#}")),
    };
    let checked = match daemon::check(&config, &engine) {
        Ok(checked) => checked,
        Err(e) => return fail(&e.to_string()),
    };
    println!("# {}: ok", config.source.display());
    let overrides = &config.overrides;
    for o in overrides {
        println!("# {} from {}", o.setting(), o.variable);
    }
    print!("{}", config.render());
    eprintln!(
        "config ok: {} plugin(s) checked{}; the log was not opened",
        checked.plugins.len(),
        if overrides.is_empty() {
            String::new()
        } else {
            format!(", {} setting(s) from the environment", overrides.len())
        }
    );
    ExitCode::SUCCESS
}

fn fail(line: &str) -> ExitCode {
    eprintln!("error: {}", line.replace('\n', " "));
    ExitCode::from(EXIT_INVALID)
}
