//! `replica-host run [--config FILE]`.

use super::fail;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::daemon;

/// Exit status for an invalid config or plugin.
const EXIT_INVALID: u8 = 2;
/// Exit status when the log or the listen address cannot be used.
const EXIT_UNAVAILABLE: u8 = 1;

pub(super) fn run(config_path: Option<PathBuf>) -> ExitCode {
    let config = match super::config::load(config_path) {
        Ok(loaded) => loaded,
        Err(e) => return fail(EXIT_INVALID, &e),
    };
    // By name only: a value may be a secret.
    for o in &config.overrides {
        tracing::info!(variable = %o.variable, setting = %o.setting(), "setting from the environment");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                EXIT_UNAVAILABLE,
                &format!("cannot start the async runtime: {e}"),
            );
        }
    };
    let result = runtime.block_on(daemon::run(config, shutdown_signal(), |_| {}));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_invalid_config() => fail(EXIT_INVALID, &e.to_string()),
        Err(e) => fail(EXIT_UNAVAILABLE, &e.to_string()),
    }
}

/// Completes on SIGINT or SIGTERM, which starts the drain; a second one
/// exits at once, with status 128 + the signal's number.
pub(super) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
    tokio::spawn(async move {
        let status = tokio::select! {
            _ = int.recv() => 128 + libc::SIGINT,
            _ = term.recv() => 128 + libc::SIGTERM,
        };
        tracing::warn!("second signal: exiting now, without finishing the drain");
        std::process::exit(status);
    });
}
