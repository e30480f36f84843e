//! `replica-host bench idle` and `replica-host bench memory`: N replicated
//! Counter grains (one snapshot each) and no writes.
//!
//! - **idle**: once every grain is applied, the host's CPU time and the
//!   queries it makes over a window, with incremental discovery
//!   (`changes_since`, the default) and with the full listing every poll
//!   (`grain_heads`, how discovery worked before), at two grain counts, to
//!   show whether the idle cost grows with the number of grains.
//! - **memory**: the host's resident memory per idle replicated grain: the
//!   slope of RSS (after catch-up, minus before the replicator started)
//!   between two grain counts, minus the state's own share (measured the
//!   same way on N clones of the decoded state).
//!
//! Each run is a child process (`bench worker idle`), so that its CPU and
//! memory are its own.
//!
//! A benchmark is one file: its run, its worker processes and its report are
//! read together (feature `tools`, not part of the library's data path).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    Backend, BenchLog, CountingLog, Workload, cpu_time, cpu_time_of_processes, current_rss,
    machine, run_worker, sample_plugin,
};
use crate::consumer::{ConsumerConfig, Replicator, SnapshotDecoder};
use crate::plugin::{DecodeSlots, LoadedPlugin, PluginDecoder, PluginEngine, PluginLimits};
use crate::replication_log::{self, ReplicationLog};
use crate::shutdown::Shutdown;
use crate::store::ReplicaStore;
use crate::value::State;

/// What `bench idle` / `bench memory` run.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// Where the log lives.
    pub backend: Backend,
    /// The PostgreSQL server (for `--backend postgres`).
    pub postgres_url: String,
    /// Grain counts to compare.
    pub grains: Vec<u64>,
    /// Measurement window, seconds.
    pub seconds: f64,
    /// Poll interval, ms.
    pub poll_ms: u64,
    /// The sample plugins' sources.
    pub plugins_dir: PathBuf,
    /// PostgreSQL: add the change feed (`log enable-change-feed`) after
    /// filling the log, as an operator would on an existing log.
    pub change_feed: bool,
}

fn run_one(
    options: &IdleOptions,
    runtime: &tokio::runtime::Runtime,
    plugin: &Path,
    grains: u64,
    incremental: bool,
) -> anyhow::Result<(serde_json::Value, f64)> {
    run_one_with(
        options,
        runtime,
        plugin,
        grains,
        WorkerMode {
            incremental,
            scan: true,
            workload: Workload::Counter,
            workers: crate::consumer::DEFAULT_WORKERS,
            native: false,
        },
    )
}

/// A fresh log holding `grains` grains of `workload`, with the change feed
/// when the options ask for it.
pub(crate) fn filled_log(
    options: &IdleOptions,
    runtime: &tokio::runtime::Runtime,
    workload: Workload,
    grains: u64,
) -> anyhow::Result<BenchLog> {
    runtime.block_on(async {
        let log = BenchLog::create(options.backend, &options.postgres_url).await?;
        log.fill_workload(workload, grains).await?;
        if options.change_feed && options.backend == Backend::Postgres {
            replication_log::pg_change_feed::enable(&log.url, false, |_| {}).await?;
        }
        anyhow::Ok(log)
    })
}

/// One worker run: a fresh log of `grains` grains of `workload`, replicated
/// with or without the catch-up scan.
pub(crate) fn run_one_with(
    options: &IdleOptions,
    runtime: &tokio::runtime::Runtime,
    plugin: &Path,
    grains: u64,
    mode: WorkerMode,
) -> anyhow::Result<(serde_json::Value, f64)> {
    let log = filled_log(options, runtime, mode.workload, grains)?;
    eprintln!(
        "bench idle: {grains} grains, {} discovery ...",
        if mode.incremental {
            "incremental"
        } else {
            "full"
        }
    );
    let result = run_worker(&worker_args(options, &log.url, grains, mode, plugin), None)?;
    // The server's CPU over the worker's quiet window (local server only).
    let pg_cpu = if options.backend == Backend::Postgres {
        result["server_cpu_s"].as_f64().unwrap_or(0.0)
    } else {
        0.0
    };
    Ok((result, pg_cpu))
}

/// The arguments of `bench worker idle` for one run.
pub(crate) fn worker_args(
    options: &IdleOptions,
    url: &str,
    grains: u64,
    mode: WorkerMode,
    plugin: &Path,
) -> Vec<String> {
    let WorkerMode {
        incremental,
        scan,
        workload,
        workers,
        native,
    } = mode;
    vec![
        "idle".to_owned(),
        "--log".to_owned(),
        url.to_owned(),
        "--grains".to_owned(),
        grains.to_string(),
        "--seconds".to_owned(),
        options.seconds.to_string(),
        "--poll-ms".to_owned(),
        options.poll_ms.to_string(),
        "--discovery".to_owned(),
        if incremental { "incremental" } else { "full" }.to_owned(),
        "--catch-up".to_owned(),
        if scan { "scan" } else { "per-grain" }.to_owned(),
        "--workload".to_owned(),
        match workload {
            Workload::Counter => "counter",
            Workload::Bank => "bank",
        }
        .to_owned(),
        "--workers".to_owned(),
        workers.to_string(),
        "--decoder".to_owned(),
        if native { "native" } else { "plugin" }.to_owned(),
        "--plugin".to_owned(),
        plugin.display().to_string(),
    ]
}

/// `bench idle`: prints the table (Markdown) on stdout.
pub fn run_idle(options: &IdleOptions) -> anyhow::Result<()> {
    let plugin = sample_plugin(&options.plugins_dir, "counter")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let pg = options.backend == Backend::Postgres;
    let mut rows = Vec::new();
    let mut cpu_by: Vec<(bool, u64, f64)> = Vec::new();
    for &grains in &options.grains {
        for incremental in [true, false] {
            let (r, pg_cpu) = run_one(options, &runtime, &plugin, grains, incremental)?;
            let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
            let window = f("window_s");
            let cpu = f("cpu_s") / window;
            cpu_by.push((incremental, grains, cpu + pg_cpu / window));
            rows.push(format!(
                "| {} | {} | {:.1} | {:.2}% | {:.1} | {:.1} | {:.1} | {:.1} |{}",
                grains,
                if incremental {
                    "incremental (`changes_since`, default)"
                } else {
                    "full listing every poll (`grain_heads`)"
                },
                f("catch_up_s"),
                100.0 * cpu,
                f("queries") / window,
                f("listings") / window,
                f("change_queries") / window,
                f("reads") / window,
                if pg {
                    format!(" {:.2}% |", 100.0 * pg_cpu / window)
                } else {
                    String::new()
                }
            ));
        }
    }
    println!("## bench idle, {:?} ({})", options.backend, machine());
    println!();
    println!(
        "Counter grains, one snapshot each, no writes; poll {} ms; window {} s after catch-up.",
        options.poll_ms, options.seconds
    );
    println!();
    println!(
        "| grains | discovery | catch-up s | host CPU (% of a core) | queries/s | full listings/s | incremental queries/s | reads/s |{}",
        if pg { " PostgreSQL server CPU |" } else { "" }
    );
    println!(
        "|---:|---|---:|---:|---:|---:|---:|---:|{}",
        if pg { "---:|" } else { "" }
    );
    for row in rows {
        println!("{row}");
    }
    if let (Some(&small), Some(&large)) = (options.grains.first(), options.grains.last())
        && small != large
    {
        println!();
        for incremental in [true, false] {
            let cpu = |n| {
                cpu_by
                    .iter()
                    .find(|(i, g, _)| *i == incremental && *g == n)
                    .map_or(f64::NAN, |(_, _, c)| *c)
            };
            println!(
                "- {} discovery: idle CPU{} at {large} grains ÷ at {small} grains = {:.2} (grains ×{:.0}).",
                if incremental {
                    "incremental"
                } else {
                    "full-listing"
                },
                if pg { " (host + server)" } else { "" },
                cpu(large) / cpu(small),
                large as f64 / small as f64
            );
        }
    }
    Ok(())
}

/// `bench memory`: prints the table (Markdown) on stdout.
pub fn run_memory(options: &IdleOptions) -> anyhow::Result<()> {
    let plugin = sample_plugin(&options.plugins_dir, "counter")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut points = Vec::new();
    for &grains in &options.grains {
        let (r, _) = run_one(options, &runtime, &plugin, grains, true)?;
        points.push((grains, r));
    }
    println!("## bench memory, {:?} ({})", options.backend, machine());
    println!();
    println!(
        "| grains | RSS before replicating, MiB | RSS idle (after malloc_trim), MiB | RSS idle, untrimmed, MiB | growth per grain, bytes | state's share per grain, bytes | per grain excluding state, bytes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let growth = |r: &serde_json::Value| {
        r["rss_idle"].as_f64().unwrap_or(0.0) - r["rss_before"].as_f64().unwrap_or(0.0)
    };
    for (grains, r) in &points {
        let per = growth(r) / *grains as f64;
        let state = r["state_bytes_per_grain"].as_f64().unwrap_or(0.0);
        println!(
            "| {grains} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
            r["rss_before"].as_f64().unwrap_or(0.0) / 1048576.0,
            r["rss_idle"].as_f64().unwrap_or(0.0) / 1048576.0,
            r["rss_idle_untrimmed"].as_f64().unwrap_or(0.0) / 1048576.0,
            per,
            state,
            per - state
        );
    }
    if let [(n1, r1), .., (n2, r2)] = points.as_slice() {
        let slope = (growth(r2) - growth(r1)) / (*n2 as f64 - *n1 as f64);
        let state = r2["state_bytes_per_grain"].as_f64().unwrap_or(0.0);
        println!();
        println!(
            "Slope between {n1} and {n2} grains: {slope:.0} bytes per grain; excluding the state ({state:.0} bytes): **{:.0} bytes ({:.2} KiB)** per idle replicated grain.",
            slope - state,
            (slope - state) / 1024.0
        );
    }
    Ok(())
}

/// Returns freed heap memory to the OS (glibc's `malloc_trim`; musl has
/// none, and the static build's benchmark figures are then untrimmed).
fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How a `bench worker idle` replicates.
#[derive(Debug, Clone, Copy)]
pub struct WorkerMode {
    /// Incremental discovery (`changes_since`), else a full listing every poll.
    pub incremental: bool,
    /// The bulk catch-up scan, else per-grain reads.
    pub scan: bool,
    /// Which grains.
    pub workload: Workload,
    /// The consumer's worker pool size.
    pub workers: usize,
    /// Decode natively in the host instead of through the Wasm plugin: the
    /// consumer's own cost, apart from the plugin call.
    pub native: bool,
}

/// Waits until `progress` says complete; an error after 15 minutes.
async fn until_complete(
    what: &str,
    progress: impl Fn() -> crate::consumer::CatchUpProgress,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !progress().complete {
        tokio::time::sleep(Duration::from_millis(20)).await;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "{what} took over 15 minutes ({:?})",
            progress()
        );
    }
    Ok(())
}

/// The sample grains' decode done natively in the host, into the same
/// [`State`] the plugin returns.
struct NativeDecoder(Workload);

#[async_trait::async_trait]
impl SnapshotDecoder for NativeDecoder {
    async fn decode(
        &self,
        entry: &crate::replication_log::LogEntry,
    ) -> Result<State, crate::decode::CallError> {
        use crate::demo::orlando::{AccountState, CounterState};
        let config = bincode::config::standard();
        let value = match self.0 {
            Workload::Counter => {
                bincode::serde::decode_from_slice::<CounterState, _>(&entry.payload, config)
                    .map(|(state, _)| State::from_serialize(&state))
            }
            Workload::Bank => {
                bincode::serde::decode_from_slice::<AccountState, _>(&entry.payload, config)
                    .map(|(state, _)| State::from_serialize(&state))
            }
        };
        match value {
            Ok(Ok(value)) => Ok(value),
            _ => Err(crate::decode::CallError {
                plugin: "native".into(),
                grain_type: entry.grain_type.clone(),
                grain_key: entry.grain_key.clone(),
                sequence: entry.sequence,
                kind: crate::decode::CallErrorKind::MalformedPayload,
                message: "native decode failed".into(),
            }),
        }
    }
}

/// `bench worker idle`: replicates `grains` Counter grains, waits for every
/// one, then measures a quiet window; prints a JSON result.
pub fn worker(
    url: &str,
    grains: u64,
    window: Duration,
    poll: Duration,
    mode: WorkerMode,
    plugin: &Path,
) -> anyhow::Result<serde_json::Value> {
    let WorkerMode {
        incremental,
        scan,
        workload,
        workers,
        native,
    } = mode;
    let grain_type = workload.grain_type();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let counting = Arc::new(CountingLog::with_scan(
            replication_log::open(url).await?,
            incremental,
            scan,
        ));
        let log: Arc<dyn ReplicationLog> = counting.clone();
        let engine = PluginEngine::new()?;
        let plugin_path = plugin;
        let plugin = Arc::new(LoadedPlugin::load(
            &engine,
            plugin_path,
            PluginLimits::default(),
        )?);
        let slots = DecodeSlots::per_core();
        let decoder: Arc<dyn SnapshotDecoder> = if native {
            Arc::new(NativeDecoder(workload))
        } else {
            Arc::new(PluginDecoder::new(plugin, slots.clone()))
        };
        let scan_alone = if scan {
            Some(super::restart::scan_alone(url, grain_type).await?)
        } else {
            None
        };
        let store = Arc::new(ReplicaStore::new());
        let stopping = Shutdown::new();
        // Settle the allocator and the runtime before the baseline reading.
        tokio::time::sleep(Duration::from_millis(300)).await;
        trim();
        let rss_before = current_rss();
        let started = Instant::now();
        let config = ConsumerConfig {
            poll_interval: poll,
            workers,
            ..ConsumerConfig::default()
        };
        let decoders = [(grain_type.to_owned(), Arc::clone(&decoder))]
            .into_iter()
            .collect();
        let replicator = Replicator::new(log, Arc::clone(&store), decoders, config.clone());
        let progress = replicator.catch_up();
        let control = replicator.control();
        let handle = replicator.spawn(stopping.signal());
        let cpu_start = cpu_time();
        let server_start = cpu_time_of_processes("postgres");
        until_complete("catch-up", || progress.progress()).await?;
        let catch_up = started.elapsed();
        let catch_up_cpu = cpu_time() - cpu_start;
        let catch_up_server = cpu_time_of_processes("postgres").saturating_sub(server_start);
        let rss_caught_up = current_rss();
        let held = store.status_counts(grain_type).ok as u64;
        anyhow::ensure!(
            held == grains,
            "caught up with {held} of {grains} replicas ok"
        );
        let catch_up_reads = counting.counts()[0];
        // Let in-flight work finish, then measure a quiet window.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu0 = cpu_time();
        let server0 = cpu_time_of_processes("postgres");
        let q0 = counting.counts();
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        let window = t0.elapsed();
        let cpu = cpu_time() - cpu0;
        let server = cpu_time_of_processes("postgres").saturating_sub(server0);
        let q1 = counting.counts();
        let rss_idle_untrimmed = current_rss();
        // Give memory freed after catch-up back to the OS, so that RSS is
        // what the idle grains hold, not what the allocator kept.
        trim();
        let rss_idle = current_rss();

        // The state's share: N clones of one replica's state, measured alike.
        let state: State = store
            .get(grain_type, "counter-0")
            .and_then(|r| r.state)
            .ok_or_else(|| anyhow::anyhow!("counter-0 not replicated"))?;
        let before_states = current_rss();
        let states: Vec<State> = (0..grains)
            .map(|_| State::validate(state.as_bytes(), &Default::default()).expect("valid"))
            .collect();
        let state_bytes =
            (current_rss().saturating_sub(before_states)) as f64 / grains.max(1) as f64;
        drop(states);

        // A plugin swap: the same component under another name, so every
        // replica's `decoded_by` differs and all are decoded again.
        let mut current_decoder = decoder;
        let (redecode, redecode_cpu) = if native {
            (None, None)
        } else {
            let bytes = std::fs::read(plugin_path)?;
            let swapped = Arc::new(LoadedPlugin::from_bytes(
                &engine,
                "swapped.wasm",
                &bytes,
                PluginLimits::default(),
            )?);
            let cpu0 = cpu_time();
            let started = Instant::now();
            current_decoder = Arc::new(PluginDecoder::new(swapped, slots));
            let progress = control
                .replace(grain_type, Arc::clone(&current_decoder))
                .await
                .ok_or_else(|| anyhow::anyhow!("the replicator stopped"))?;
            until_complete("re-decode", || progress.progress()).await?;
            let took = started.elapsed();
            let by = store
                .get(grain_type, "counter-0")
                .and_then(|r| r.decoded_by)
                .map(|d| d.plugin.clone());
            anyhow::ensure!(
                by.as_deref() == Some("swapped.wasm"),
                "counter-0 not decoded again: {by:?}"
            );
            (
                Some(took.as_secs_f64()),
                Some((cpu_time() - cpu0).as_secs_f64()),
            )
        };

        stopping.stop();
        let _ = handle.await;
        let restart = if scan {
            super::restart::checkpoint_and_restart(
                url,
                Arc::clone(&store),
                grain_type,
                grains,
                current_decoder,
                config,
            )
            .await?
        } else {
            json!({})
        };
        Ok(json!({
            "restart": restart,
            "scan_alone_s": scan_alone.map(|(s, _)| s),
            "grains": grains,
            "catch_up_s": catch_up.as_secs_f64(),
            "redecode_s": redecode,
            "redecode_cpu_s": redecode_cpu,
            "catch_up_cpu_s": catch_up_cpu.as_secs_f64(),
            "catch_up_server_cpu_s": catch_up_server.as_secs_f64(),
            "rss_caught_up": rss_caught_up,
            "scans": counting.scans.load(std::sync::atomic::Ordering::Relaxed),
            "catch_up_reads": catch_up_reads,
            "window_s": window.as_secs_f64(),
            "cpu_s": cpu.as_secs_f64(),
            "server_cpu_s": server.as_secs_f64(),
            "reads": q1[0] - q0[0],
            "listings": q1[1] - q0[1],
            "change_queries": q1[2] - q0[2],
            "queries": (q1[0] + q1[1] + q1[2] + q1[3]) - (q0[0] + q0[1] + q0[2] + q0[3]),
            "rss_before": rss_before,
            "rss_idle": rss_idle,
            "rss_idle_untrimmed": rss_idle_untrimmed,
            "state_bytes_per_grain": state_bytes,
        }))
    })
}
