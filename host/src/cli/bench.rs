//! `replica-host bench …`: the benchmarks of BENCHMARKS.md. Build in release
//! mode: `cargo run --release -p replica-host -- bench <name>`.
//!
//! Long because it is a table: each benchmark's arguments and their docs,
//! which `--help` prints; the benchmarks themselves are in `bench/`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::bench::{
    self, Backend, Workload, decode::DecodeOptions, e2e::E2eOptions, idle::IdleOptions,
    startup::StartupOptions, waiters::WaitersOptions,
};

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Decode cost: each sample plugin at ~100 B, 1 KiB and 64 KiB, plugin
    /// (fresh pooled instance, fresh on-demand instance, warm instance)
    /// against the same decode done natively in the host.
    Decode {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 0.3)]
        seconds: f64,
        /// Interleaved rounds.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Only the cases whose name, grain type and payload size (e.g.
        /// `BankAccount ~1 KiB`), contains this.
        #[arg(long, default_value = "")]
        only: String,
        /// Only run the default path (batches in one fresh instance, crash
        /// guard on), for a profiler.
        #[arg(long, hide = true)]
        profile: bool,
        /// The sample plugins' sources.
        #[arg(long, default_value_os_t = super::sample_plugins_dir())]
        plugins_dir: PathBuf,
    },
    /// Startup: load N plugins cold (compile) and warm (precompiled cache).
    Startup {
        /// How many plugin files.
        #[arg(long, default_value_t = 20)]
        plugins: usize,
        /// Rounds.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// The sample plugins' sources.
        #[arg(long, default_value_os_t = super::sample_plugins_dir())]
        plugins_dir: PathBuf,
    },
    /// End to end: a producer writes N grains at R/s; the host and the
    /// seed-style baseline replicate, one after the other.
    E2e {
        /// Where the log lives.
        #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
        backend: Backend,
        /// PostgreSQL server for `--backend postgres` (a schema of its own is made).
        #[arg(long, default_value = DEFAULT_POSTGRES)]
        postgres_url: String,
        /// Grains.
        #[arg(long, default_value_t = 10_000)]
        grains: u64,
        /// Snapshots per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// Producer seconds.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// Poll interval, ms.
        #[arg(long, default_value_t = 100)]
        poll_ms: u64,
        /// Producer connections.
        #[arg(long, default_value_t = 4)]
        writers: u64,
        /// Seconds allowed after the producer stops for every grain to be current.
        #[arg(long, default_value_t = 20.0)]
        grace: f64,
        /// Rounds of (host, baseline).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Grains in the log before the host starts (host only; caught up
        /// before the producer starts).
        #[arg(long, default_value_t = 0)]
        prefill: u64,
        /// PostgreSQL: add the change feed before the run.
        #[arg(long)]
        change_feed: bool,
        /// Keep a checkpoint (written in full before the clock starts) and
        /// report its writer's CPU time over the run.
        #[arg(long)]
        checkpoint: bool,
        /// Each round also runs the host with a shadow plugin (a second
        /// copy of the BankAccount plugin, `shadow_sample` 1.0), to compare
        /// its lag and CPU with the host alone.
        #[arg(long)]
        shadow: bool,
        /// The sample plugins' sources.
        #[arg(long, default_value_os_t = super::sample_plugins_dir())]
        plugins_dir: PathBuf,
    },
    /// Idle scale: N replicated grains, no writes: CPU and queries per second.
    Idle {
        /// Where the log lives.
        #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
        backend: Backend,
        /// PostgreSQL server for `--backend postgres`.
        #[arg(long, default_value = DEFAULT_POSTGRES)]
        postgres_url: String,
        /// Grain counts, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        grains: Vec<u64>,
        /// PostgreSQL: add the change feed after filling the log.
        #[arg(long)]
        change_feed: bool,
        /// Measurement window, seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Poll interval, ms.
        #[arg(long, default_value_t = 100)]
        poll_ms: u64,
        /// The sample plugins' sources.
        #[arg(long, default_value_os_t = super::sample_plugins_dir())]
        plugins_dir: PathBuf,
    },
    /// Read scale-out: 1, 2, 3 … identical hosts on one PostgreSQL log;
    /// the server's idle cost per host count.
    Scaleout {
        /// PostgreSQL server (a schema of its own is made).
        #[arg(long, default_value = DEFAULT_POSTGRES)]
        postgres_url: String,
        /// Grains in the log.
        #[arg(long, default_value_t = 100_000)]
        grains: u64,
        /// Host counts, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        hosts: Vec<usize>,
        /// Without the change feed (every poll lists every grain).
        #[arg(long)]
        no_change_feed: bool,
        /// Idle measurement window, seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Poll interval, ms.
        #[arg(long, default_value_t = 100)]
        poll_ms: u64,
        /// The sample plugins' sources.
        #[arg(long, default_value_os_t = super::sample_plugins_dir())]
        plugins_dir: PathBuf,
    },
    /// Memory per idle replicated grain, excluding its state.
    Memory {
        /// Grain counts, comma separated (the slope is taken between the first and last).
        #[arg(long, value_delimiter = ',', default_value = "20000,100000")]
        grains: Vec<u64>,
        /// Poll interval, ms.
        #[arg(long, default_value_t = 100)]
        poll_ms: u64,
        /// The sample plugins' sources.
        #[arg(long, default_value_os_t = super::sample_plugins_dir())]
        plugins_dir: PathBuf,
    },
    /// `verify` against a host of N Counter grains, against the log's
    /// one-snapshot read alone and the host's pages alone.
    Verify {
        /// Where the log lives.
        #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
        backend: Backend,
        /// PostgreSQL server for `--backend postgres` (a schema of its own is made).
        #[arg(long, default_value = DEFAULT_POSTGRES)]
        postgres_url: String,
        /// Grains.
        #[arg(long, default_value_t = 1_000_000)]
        grains: u64,
        /// The sample plugins' sources.
        #[arg(long, default_value_os_t = super::sample_plugins_dir())]
        plugins_dir: PathBuf,
    },
    /// Catch-up at scale: a cold start with N grains (one snapshot each),
    /// bulk scan against per-grain reads; time, memory per grain, idle CPU.
    Catchup {
        /// Where the log lives.
        #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
        backend: Backend,
        /// PostgreSQL server for `--backend postgres`.
        #[arg(long, default_value = DEFAULT_POSTGRES)]
        postgres_url: String,
        /// Grains caught up with the bulk scan.
        #[arg(long, default_value_t = 1_000_000)]
        grains: u64,
        /// Grains caught up by per-grain reads, the baseline (0: skip).
        #[arg(long, default_value_t = 100_000)]
        baseline_grains: u64,
        /// Which grains.
        #[arg(long, value_enum, default_value_t = Workload::Counter)]
        workload: Workload,
        /// Idle measurement window after catch-up, seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Also catch up with native decoding (no plugin): the consumer's own cost.
        #[arg(long)]
        native: bool,
        /// PostgreSQL: add the change feed after filling the log.
        #[arg(long)]
        change_feed: bool,
        /// Poll interval, ms.
        #[arg(long, default_value_t = 100)]
        poll_ms: u64,
        /// The sample plugins' sources.
        #[arg(long, default_value_os_t = super::sample_plugins_dir())]
        plugins_dir: PathBuf,
    },
    /// Read-your-writes at scale: concurrent `?min_sequence` reads parked
    /// on a real host, then the appends they wait for; the host's memory
    /// per waiting read and the wake-up latency, against one waiter alone.
    Waiters {
        /// Concurrent waiting reads (each its own connection).
        #[arg(long, default_value_t = 10_000)]
        waiters: usize,
        /// Grains they wait on.
        #[arg(long, default_value_t = 1_000)]
        grains: usize,
        /// The sample plugins' sources.
        #[arg(long, default_value_os_t = super::sample_plugins_dir())]
        plugins_dir: PathBuf,
    },
    /// Internal: one side of a benchmark, in its own process.
    #[command(subcommand, hide = true)]
    Worker(WorkerCommand),
}

#[derive(Subcommand)]
pub enum WorkerCommand {
    E2eProducer {
        #[arg(long, default_value_t = 0)]
        base: u64,
        #[arg(long)]
        log: String,
        #[arg(long)]
        grains: u64,
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        duration: f64,
        #[arg(long)]
        writers: u64,
    },
    E2eConsumer {
        #[arg(long, default_value_t = 0)]
        base: u64,
        #[arg(long)]
        kind: String,
        #[arg(long)]
        log: String,
        #[arg(long)]
        grains: u64,
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        duration: f64,
        #[arg(long)]
        poll_ms: u64,
        #[arg(long)]
        grace: f64,
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        catch_up_first: bool,
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        checkpoint: bool,
        #[arg(long)]
        plugin: PathBuf,
    },
    Idle {
        #[arg(long)]
        log: String,
        #[arg(long)]
        grains: u64,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        poll_ms: u64,
        #[arg(long)]
        discovery: String,
        #[arg(long, default_value = "scan")]
        catch_up: String,
        #[arg(long, value_enum, default_value_t = Workload::Counter)]
        workload: Workload,
        #[arg(long, default_value_t = crate::consumer::DEFAULT_WORKERS)]
        workers: usize,
        #[arg(long, default_value = "plugin")]
        decoder: String,
        #[arg(long)]
        plugin: PathBuf,
    },
}

pub fn run(command: BenchCommand) -> ExitCode {
    let result = match command {
        BenchCommand::Decode {
            seconds,
            repeat,
            only,
            profile,
            plugins_dir,
        } => bench::decode::run(&DecodeOptions {
            plugins_dir,
            seconds,
            repeat: repeat.max(1),
            only,
            profile,
        }),
        BenchCommand::Startup {
            plugins,
            repeat,
            plugins_dir,
        } => bench::startup::run(&StartupOptions {
            plugins_dir,
            plugins: plugins.max(1),
            repeat: repeat.max(1),
        }),
        BenchCommand::E2e {
            backend,
            postgres_url,
            grains,
            rate,
            duration,
            poll_ms,
            writers,
            grace,
            repeat,
            prefill,
            change_feed,
            checkpoint,
            shadow,
            plugins_dir,
        } => bench::e2e::run(&E2eOptions {
            backend,
            postgres_url,
            grains: grains.max(1),
            rate: rate.max(1),
            duration,
            poll_ms,
            writers,
            grace,
            repeat: repeat.max(1),
            prefill,
            change_feed,
            checkpoint,
            shadow,
            plugins_dir,
        }),
        BenchCommand::Idle {
            backend,
            postgres_url,
            grains,
            change_feed,
            seconds,
            poll_ms,
            plugins_dir,
        } => bench::idle::run_idle(&IdleOptions {
            backend,
            postgres_url,
            grains,
            seconds,
            poll_ms,
            plugins_dir,
            change_feed,
        }),
        BenchCommand::Scaleout {
            postgres_url,
            grains,
            hosts,
            no_change_feed,
            seconds,
            poll_ms,
            plugins_dir,
        } => bench::scaleout::run(
            &IdleOptions {
                backend: Backend::Postgres,
                postgres_url,
                grains: vec![grains.max(1)],
                seconds,
                poll_ms,
                plugins_dir,
                change_feed: !no_change_feed,
            },
            &hosts,
        ),
        BenchCommand::Memory {
            grains,
            poll_ms,
            plugins_dir,
        } => bench::idle::run_memory(&IdleOptions {
            backend: Backend::Sqlite,
            postgres_url: String::new(),
            grains,
            seconds: 1.0,
            poll_ms,
            plugins_dir,
            change_feed: false,
        }),
        BenchCommand::Catchup {
            backend,
            postgres_url,
            grains,
            baseline_grains,
            workload,
            seconds,
            native,
            change_feed,
            poll_ms,
            plugins_dir,
        } => bench::catchup::run(
            &IdleOptions {
                backend,
                postgres_url,
                grains: vec![grains.max(1)],
                seconds,
                poll_ms,
                plugins_dir,
                change_feed,
            },
            baseline_grains,
            workload,
            native,
        ),
        BenchCommand::Waiters {
            waiters,
            grains,
            plugins_dir,
        } => bench::waiters::run(&WaitersOptions {
            waiters,
            grains,
            plugins_dir,
        }),
        BenchCommand::Verify {
            backend,
            postgres_url,
            grains,
            plugins_dir,
        } => bench::verify::run(&bench::verify::VerifyBenchOptions {
            backend,
            postgres_url,
            grains,
            plugins_dir,
        }),
        BenchCommand::Worker(worker) => run_worker(worker),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replica-host bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_worker(worker: WorkerCommand) -> anyhow::Result<()> {
    let result = match worker {
        WorkerCommand::E2eProducer {
            base,
            log,
            grains,
            rate,
            duration,
            writers,
        } => bench::e2e::producer(
            &log,
            bench::e2e::Plan {
                grains,
                rate,
                duration,
                base,
            },
            writers,
        )?,
        WorkerCommand::E2eConsumer {
            base,
            kind,
            log,
            grains,
            rate,
            duration,
            poll_ms,
            grace,
            catch_up_first,
            checkpoint,
            plugin,
        } => bench::e2e::consumer(
            &kind,
            &log,
            bench::e2e::Plan {
                grains,
                rate,
                duration,
                base,
            },
            bench::e2e::ConsumerTiming {
                poll: Duration::from_millis(poll_ms),
                grace: Duration::from_secs_f64(grace),
                catch_up_first,
                checkpoint,
            },
            &plugin,
        )?,
        WorkerCommand::Idle {
            log,
            grains,
            seconds,
            poll_ms,
            discovery,
            catch_up,
            workload,
            workers,
            decoder,
            plugin,
        } => bench::idle::worker(
            &log,
            grains,
            Duration::from_secs_f64(seconds),
            Duration::from_millis(poll_ms),
            bench::idle::WorkerMode {
                incremental: discovery != "full",
                scan: catch_up != "per-grain",
                workload,
                workers,
                native: decoder == "native",
            },
            &plugin,
        )?,
    };
    println!("{result}");
    Ok(())
}
