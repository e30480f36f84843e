//! Command-line parsing and dispatch.

mod bench;
mod config;
mod demo;
mod log;
mod plugin;
mod run;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// replica-host: keeps typed read-only replicas of Orlando grains, decoding
/// each grain type's snapshots with a WebAssembly plugin.
#[derive(Parser)]
#[command(name = "replica-host", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Build, inspect and try out plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run the host: load and check every plugin, replicate, serve HTTP.
    #[command(after_help = config::ENV_HELP)]
    Run {
        /// The TOML config file (default: $REPLICA_CONFIG).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check the configuration as `run` would, without replicating.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Run everything locally: build the sample plugins, create an SQLite
    /// log, write Orlando-format snapshots into it, and replicate them.
    Demo {
        /// Where the demo's log, plugins and config go.
        #[arg(long, default_value = "target/demo")]
        dir: PathBuf,
        /// Address of the HTTP API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The sample plugins' sources.
        #[arg(long, default_value_os_t = sample_plugins_dir())]
        plugins_dir: PathBuf,
    },
    /// Run a benchmark (see BENCHMARKS.md); build with --release.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Work on the replication log itself (schema changes an operator runs once).
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Check that a running host serves what the log holds, grain by grain.
    Verify(verify::VerifyArgs),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Build the plugin crate in DIR into a loadable component; prints its path last.
    Build {
        /// The plugin crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Build without the network (cargo's `--offline`): every dependency
        /// must be in cargo's cache, as it is for a scaffold whose lock
        /// follows this workspace's.
        #[arg(long)]
        offline: bool,
    },
    /// Show what a plugin file is: grain type, schema, contract, imports, size, sha256.
    Inspect {
        /// The plugin component.
        file: PathBuf,
    },
    /// Write a new plugin crate into DIR (new or empty) that builds as it is with
    /// `plugin build DIR`: a state type stub, a native unit test, golden fixtures.
    #[command(
        after_help = "The crate depends on the replica-guest SDK by path: by default \
the guest-sdk folder of the checkout this binary was built from, if it is still there; \
--sdk or --sdk-git (with --rev) choose another. The crate is a workspace of its own and builds from any \
folder; its Cargo.lock is resolved from the lock of the checkout this binary was built from, so it builds \
with the versions replica-host is tested with (offline, where cargo has them cached)."
    )]
    New {
        /// The folder to write the crate into.
        dir: PathBuf,
        /// The Orlando grain type: an ASCII letter, then letters, digits or `_`.
        #[arg(long)]
        grain_type: String,
        /// How the grain's payloads are encoded.
        #[arg(long, value_enum, default_value_t = plugin::Format::Bincode)]
        format: plugin::Format,
        /// The SDK's folder (the `guest-sdk` folder of a checkout of this repository).
        #[arg(long, conflicts_with = "sdk_git")]
        sdk: Option<PathBuf>,
        /// A git URL of this repository, to depend on the SDK by git instead of by path.
        #[arg(long, requires = "rev")]
        sdk_git: Option<String>,
        /// The commit or tag of --sdk-git to build against (required with it).
        #[arg(long, requires = "sdk_git")]
        rev: Option<String>,
    },
    /// Run golden tests through a plugin; with --log, try it against a real
    /// replication log instead (read-only dry run).
    #[command(
        after_help = "Golden tests: each NAME.payload in FIXTURES_DIR pairs with NAME.json \
(the expected state, compared as JSON values) or NAME.error (the expected error kind: malformed, \
unsupported_schema_version, rejected, trap, timeout, out_of_memory, bad_output). One line per case, \
a summary last.

Dry run (--log URL): decodes the newest FullState of each grain of the type (at most --sample \
grains, in key order) and reports how many decode and how many fail, grouped by error, with \
example keys; with --compare, how many decode to a different state under the other plugin. \
The log is opened read-only (a SQLite file read-only, PostgreSQL in read-only sessions); \
nothing is written.

Exit status: 0 when every case passes (golden) or every newest FullState decodes (dry run; \
different states under --compare do not fail it); 1 when a case fails, a snapshot does not \
decode, or the log holds no FullState of the type; 2 when the plugin, the fixtures folder or \
the log cannot be used."
    )]
    Test {
        /// The plugin component.
        file: PathBuf,
        /// The golden fixtures folder, or `-` to decode one payload read
        /// from standard input and print its state (or error).
        #[arg(default_value = "fixtures", conflicts_with = "log")]
        fixtures_dir: PathBuf,
        /// Dry run against this replication log: sqlite://PATH or postgres://...
        #[arg(long)]
        log: Option<String>,
        /// The grain type to read (default: the plugin's).
        #[arg(long, requires = "log")]
        grain_type: Option<String>,
        /// Read at most N grains (default: all).
        #[arg(long, requires = "log", value_parser = clap::value_parser!(u64).range(1..))]
        sample: Option<u64>,
        /// Another plugin (e.g. the one running now) to compare states with.
        #[arg(long, requires = "log")]
        compare: Option<PathBuf>,
    },
    /// Turn a snapshot of the live log into a golden case for `plugin test`:
    /// NAME.payload, and NAME.json or NAME.error as PLUGIN decodes it.
    #[command(
        after_help = "The log is opened read-only. Without --sequence, the grain's newest FullState is \
taken. The case is decoded as `plugin test` decodes it (grain key NAME, sequence 1), so the files \
written are what PLUGIN does today: capture a failing snapshot with the plugin in force, then edit \
NAME.error into the NAME.json the fixed plugin must produce. Exit status: 0 when written, 1 when \
the log holds no such FullState, 2 when the log, the plugin or the folder cannot be used."
    )]
    Fixture {
        /// The replication log: sqlite://PATH or postgres://...
        #[arg(long)]
        log: String,
        /// The grain, as TYPE/KEY (the first `/` separates them).
        #[arg(long)]
        grain: String,
        /// The snapshot's sequence (default: the grain's newest FullState).
        #[arg(long)]
        sequence: Option<u64>,
        /// The plugin component that decodes it.
        #[arg(long)]
        plugin: PathBuf,
        /// The fixtures folder to write into (created when missing).
        #[arg(long)]
        out: PathBuf,
        /// The case's name (default: the key and the sequence).
        #[arg(long)]
        name: Option<String>,
    },
    /// Decode one payload with a plugin and print the typed state as one line of JSON.
    Decode {
        /// The plugin component.
        file: PathBuf,
        /// File holding the snapshot payload.
        #[arg(long)]
        payload: PathBuf,
        /// Grain key passed to the plugin.
        #[arg(long, default_value = "cli")]
        grain_key: String,
        /// Sequence passed to the plugin.
        #[arg(long, default_value_t = 1)]
        sequence: u64,
    },
}

/// The sample plugins' sources in the checkout this binary was built from,
/// the default for `demo` and `bench`, which run from a clone of the
/// repository.
fn sample_plugins_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins"))
}

/// Parses arguments, sets up logging and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The plugin tools print their result on stdout and one error line on
    // stderr; guest logs show only when RUST_LOG asks for them.
    let default_filter = match cli.command {
        Command::Plugin(_) => "off",
        Command::Run { .. } | Command::Demo { .. } => "info",
        Command::Config(_) => "warn",
        Command::Bench(_) => "warn,sqlx=error",
        Command::Log(_) => "warn,sqlx=error",
        Command::Verify(_) => "warn,sqlx=error",
    };
    init_tracing(cli.log_format, default_filter);
    match cli.command {
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Run { config } => run::run(config),
        Command::Config(cmd) => config::run(cmd),
        Command::Demo {
            dir,
            listen,
            plugins_dir,
        } => demo::run(dir, listen, plugins_dir),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Log(cmd) => log::run(cmd),
        Command::Verify(args) => verify::run(args),
    }
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Prints `error: LINE` on stderr, escaped to one line (the line may carry
/// a plugin's text), and returns `code` as the exit status.
fn fail(code: u8, line: &str) -> ExitCode {
    eprintln!("error: {}", crate::text::escape(line));
    ExitCode::from(code)
}
