//! `replica-host verify --log URL --host URL [--grain-type T] [--token-file F]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::secret::Secret;
use crate::verify::{self, VerifyOptions};

use super::fail;

/// Exit status when a grain disagrees.
const EXIT_MISMATCH: u8 = 1;
/// Exit status when verify could not run.
const EXIT_ERROR: u8 = 2;

/// The arguments of `verify`.
#[derive(clap::Args)]
#[command(
    after_help = "Compares, for every grain of the log (of the host's shard), the newest \
FullState sequence the log holds with what the host serves, and the plugin build that decoded it \
with the plugin in force. The log is read read-only, in bulk, in one transaction; grains that \
disagree are checked again after --recheck-ms, since the host may have applied (or the log \
received) something after the log was read.

Reports counts and example keys of grains missing on the host, behind the log, failing, unknown \
to the log, and decoded by another plugin build. A grain type of the log without a plugin on the \
host counts as missing (use --grain-type to check one type).

Exit status: 0 when every grain matches, 1 when one does not, 2 when the log, the host or the \
token file cannot be used."
)]
pub(super) struct VerifyArgs {
    /// The replication log: sqlite://PATH or postgres://... (opened read-only).
    #[arg(long)]
    log: String,
    /// The host's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    host: String,
    /// Only this grain type.
    #[arg(long)]
    grain_type: Option<String>,
    /// A file holding the bearer token for the host (its first line).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// How long to wait before checking disagreeing grains again, in ms.
    #[arg(long, default_value_t = 2000)]
    recheck_ms: u64,
}

/// Runs `verify` and maps the outcome to its exit status.
pub(super) fn run(args: VerifyArgs) -> ExitCode {
    let token = match args.token_file.as_deref().map(read_token).transpose() {
        Ok(token) => token,
        Err(line) => return fail(EXIT_ERROR, &line),
    };
    let mut options = VerifyOptions::new(args.log, args.host);
    options.grain_type = args.grain_type;
    options.token = token;
    options.recheck_after = Duration::from_millis(args.recheck_ms);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(EXIT_ERROR, &format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(verify::run(&options)) {
        Ok(report) => {
            println!("{report}");
            if report.all_match() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_MISMATCH)
            }
        }
        Err(e) => fail(EXIT_ERROR, &e.to_string()),
    }
}

/// The token file's first line; errors name the file, never its content.
fn read_token(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!(
            "--token-file {}: the first line is empty; write the token there",
            path.display()
        ));
    }
    Ok(Secret::new(token))
}
