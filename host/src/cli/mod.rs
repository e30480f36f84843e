//! Command-line parsing and dispatch.

mod bench;
mod demo;
mod log;
mod plugin;
mod run;

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
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
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
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Build the plugin crate in DIR into a loadable component; prints its path last.
    Build {
        /// The plugin crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Show what a plugin file is: grain type, schema, contract, imports, size, sha256.
    Inspect {
        /// The plugin component.
        file: PathBuf,
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
        Command::Bench(_) => "warn,sqlx=error",
        Command::Log(_) => "warn,sqlx=error",
    };
    init_tracing(cli.log_format, default_filter);
    match cli.command {
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Run { config } => run::run(&config),
        Command::Demo {
            dir,
            listen,
            plugins_dir,
        } => demo::run(dir, listen, plugins_dir),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Log(cmd) => log::run(cmd),
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
