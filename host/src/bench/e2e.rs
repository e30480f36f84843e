//! `replica-host bench e2e`: a producer appends Orlando-format snapshots
//! for N grains at R per second while a consumer replicates them; the host
//! (discovery, the grain scheduler, the BankAccount Wasm plugin, the typed
//! store) and the baseline of Orlando's own consumer ([`super::seed`]) run one after the
//! other on fresh logs in the same invocation.
//!
//! With `--shadow`, each round also runs the host with a shadow
//! (`[[plugin]] shadow`): a second copy of the BankAccount plugin decoding
//! every snapshot beside the plugin in force on spare decode slots, so its
//! lag and CPU compare with the host alone in the same run.
//!
//! Producer, host and baseline each run in a child process of this binary,
//! so that each one's CPU time (`getrusage`) and peak RSS are its own.
//!
//! Workload: entry k goes to grain `account-(k mod N)` with sequence
//! `k div N + 1` (a ~75-byte bincode `AccountState`), due at `k / R` seconds;
//! its `timestamp_millis` is the producer's clock when it appends. Lag is
//! the consumer's apply time minus that timestamp, for every snapshot it
//! applies. A grain is current once its applied sequence is the last one
//! the producer writes for it.
//!
//! A benchmark is one file: its run, its worker processes and its report are
//! read together (feature `tools`, not part of the library's data path).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::json;

use super::seed::{RawReplicaStore, SeedConsumer};
use super::{
    Backend, BenchLog, CountingLog, cpu_time, cpu_time_of_processes, machine, peak_rss, percentile,
    sample_plugin,
};
use crate::checkpoint::{CheckpointFile, CheckpointWriter, Identity, WriterStats};
use crate::consumer::{ConsumerConfig, Replicator, SnapshotDecoder};
use crate::daemon::shadow::Shadow;
use crate::daemon::shadow::classify::Class;
use crate::demo::orlando;
use crate::plugin::{DecodeSlots, LoadedPlugin, PluginDecoder, PluginEngine, PluginLimits};
use crate::replication_log::{self, EntryType, LogEntry, ReplicationLog};
use crate::shutdown::Shutdown;
use crate::store::{ChangeKind, ReplicaStore, now_millis};

const GRAIN_TYPE: &str = "BankAccount";

/// What `bench e2e` runs.
#[derive(Debug, Clone)]
pub struct E2eOptions {
    /// Where the log lives.
    pub backend: Backend,
    /// The PostgreSQL server (for `--backend postgres`).
    pub postgres_url: String,
    /// Grains written to.
    pub grains: u64,
    /// Snapshots per second.
    pub rate: u64,
    /// How long the producer writes, in seconds.
    pub duration: f64,
    /// The consumers' poll interval, in ms.
    pub poll_ms: u64,
    /// Concurrent producer connections (grains are split between them).
    pub writers: u64,
    /// How long a consumer may take after the producer stops to make every
    /// grain current, in seconds.
    pub grace: f64,
    /// Rounds of (host, baseline).
    pub repeat: usize,
    /// Grains (`account-0` …, sequence 1) in the log before the host starts;
    /// the host catches up before the producer starts. With a prefill the
    /// seed baseline is not run (one task per grain at a million grains).
    pub prefill: u64,
    /// PostgreSQL: add the change feed before the run.
    pub change_feed: bool,
    /// The host keeps a checkpoint; its writer's CPU time is reported.
    pub checkpoint: bool,
    /// Each round also runs the host with a shadow plugin (sample 1.0).
    pub shadow: bool,
    /// The sample plugins' sources.
    pub plugins_dir: PathBuf,
}

/// The workload both sides agree on.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Grains.
    pub grains: u64,
    /// Snapshots per second.
    pub rate: u64,
    /// Producer seconds.
    pub duration: f64,
    /// The sequence every grain already has (the prefill's; 0 for none):
    /// the producer writes above it.
    pub base: u64,
}

impl Plan {
    /// Entries the producer writes.
    pub fn total(&self) -> u64 {
        (self.rate as f64 * self.duration).round() as u64
    }

    /// The last sequence grain `g` receives (0: none).
    pub fn final_sequence(&self, g: u64) -> u64 {
        let total = self.total();
        let written = total / self.grains + u64::from(g < total % self.grains);
        if written == 0 { 0 } else { self.base + written }
    }

    /// Grains that receive at least one entry.
    pub fn grains_written(&self) -> u64 {
        self.grains.min(self.total())
    }
}

fn key(g: u64) -> String {
    format!("account-{g}")
}

fn grain_of(key: &str) -> Option<u64> {
    key.strip_prefix("account-")?.parse().ok()
}

fn unix_millis(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Runs the benchmark and prints its tables (Markdown) on stdout.
pub fn run(options: &E2eOptions) -> anyhow::Result<()> {
    let plugin = sample_plugin(&options.plugins_dir, "bank-account")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let plan = Plan {
        grains: options.grains,
        rate: options.rate,
        duration: options.duration,
        base: u64::from(options.prefill > 0),
    };
    let mut results = Vec::new();
    let mut kinds = vec!["host"];
    if options.shadow {
        kinds.push("host-shadow");
    }
    if options.prefill == 0 {
        kinds.push("seed");
    }
    for round in 0..options.repeat {
        for &kind in &kinds {
            let log = runtime.block_on(async {
                let log = BenchLog::create(options.backend, &options.postgres_url).await?;
                if options.prefill > 0 {
                    eprintln!("bench e2e: prefilling {} grains ...", options.prefill);
                    let payload = orlando::bincode(&orlando::sample_account(0));
                    log.fill(GRAIN_TYPE, "account-", 1, options.prefill, &payload)
                        .await?;
                }
                if options.change_feed && options.backend == Backend::Postgres {
                    replication_log::pg_change_feed::enable(&log.url, false, |_| {}).await?;
                }
                anyhow::Ok(log)
            })?;
            eprintln!(
                "bench e2e: round {} of {}: {kind} ...",
                round + 1,
                options.repeat
            );
            let pg_before = cpu_time_of_processes("postgres");
            let (consumer, producer) = run_pair(options, &plan, kind, &log.url, &plugin)?;
            let pg_cpu = cpu_time_of_processes("postgres")
                .saturating_sub(pg_before)
                .as_secs_f64();
            results.push((kind, consumer, producer, pg_cpu));
            drop(log);
        }
    }

    println!("## bench e2e, {:?} ({})", options.backend, machine());
    println!();
    if options.prefill > 0 {
        println!(
            "{} grains in the log before the host starts (caught up before the producer starts).",
            options.prefill
        );
        println!();
    }
    if options.change_feed && options.backend == Backend::Postgres {
        println!("PostgreSQL change feed on (`log enable-change-feed`).");
        println!();
    }
    println!(
        "N = {} grains, R = {}/s for {} s ({} snapshots), poll {} ms, {} producer connection(s), grace {} s.",
        plan.grains,
        plan.rate,
        plan.duration,
        plan.total(),
        options.poll_ms,
        options.writers,
        options.grace
    );
    println!();
    let pg = options.backend == Backend::Postgres;
    println!(
        "| consumer | produced/s | applied | applied/s | lag p50 ms | lag p99 ms | lag max ms | all {} current (s after producer end) | CPU, cores | applied per CPU-s | peak RSS MiB | queries/s |{}",
        plan.grains_written(),
        if pg {
            " PostgreSQL server CPU, cores |"
        } else {
            ""
        }
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|{}",
        if pg { "---:|" } else { "" }
    );
    let mut efficiency: Vec<(&str, f64)> = Vec::new();
    for (kind, c, p, pg_cpu) in &results {
        let f = |k: &str| c[k].as_f64().unwrap_or(0.0);
        let wall = f("wall_s");
        let cpu = f("cpu_s");
        let applied = f("applied");
        let current = if c["all_current"].as_bool() == Some(true) {
            format!("yes ({:.2})", f("current_after_s"))
        } else {
            format!(
                "**no**: {} of {}",
                f("grains_current"),
                plan.grains_written()
            )
        };
        efficiency.push((kind, applied / cpu.max(1e-9)));
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.2} | {:.0} | {:.0} | {:.0} |{}",
            match *kind {
                "host" => "host (Wasm, default isolation)",
                "host-shadow" => "host with a shadow (sample 1.0)",
                _ => "seed baseline",
            },
            p["written"].as_f64().unwrap_or(0.0) / p["seconds"].as_f64().unwrap_or(1.0),
            applied,
            applied / p["seconds"].as_f64().unwrap_or(plan.duration).max(1e-9),
            f("lag_p50_ms"),
            f("lag_p99_ms"),
            f("lag_max_ms"),
            current,
            cpu / wall.max(1e-9),
            applied / cpu.max(1e-9),
            f("peak_rss") / (1024.0 * 1024.0),
            f("queries") / wall.max(1e-9),
            if pg {
                format!(" {:.2} |", pg_cpu / wall.max(1e-9))
            } else {
                String::new()
            },
        );
    }
    for (kind, c, _, _) in &results {
        let Some(cpu) = c["checkpoint_cpu_s"].as_f64() else {
            continue;
        };
        let wall = c["wall_s"].as_f64().unwrap_or(0.0).max(1e-9);
        let scan = c["checkpoint_scan_cpu_s"].as_f64().unwrap_or(0.0);
        println!();
        println!(
            "Checkpoint writer ({kind}): {cpu:.2} s CPU in {wall:.1} s = **{:.2} % of a core** (looking for changed replicas {scan:.2} s = {:.2} %, writing {:.2} s); {} rows in {} flushes.",
            100.0 * cpu / wall,
            100.0 * scan / wall,
            cpu - scan,
            c["checkpoint_rows"],
            c["checkpoint_flushes"],
        );
    }
    shadow_report(&results);
    let host: Vec<f64> = efficiency
        .iter()
        .filter(|(k, _)| *k == "host")
        .map(|(_, e)| *e)
        .collect();
    let seed: Vec<f64> = efficiency
        .iter()
        .filter(|(k, _)| *k == "seed")
        .map(|(_, e)| *e)
        .collect();
    let ratios: Vec<f64> = host.iter().zip(&seed).map(|(h, s)| h / s).collect();
    if ratios.is_empty() {
        return Ok(()); // no baseline ran (a prefilled log)
    }
    println!();
    println!(
        "Host ÷ baseline, snapshots applied per CPU-second: {} (per round: {}).",
        ratios
            .iter()
            .map(|r| format!("{r:.1}×"))
            .collect::<Vec<_>>()
            .join(", "),
        ratios.len()
    );
    Ok(())
}

/// The shadow's classes per round, and the host with a shadow against the
/// host alone of the same round: lag p99 and CPU.
fn shadow_report(results: &[(&str, serde_json::Value, serde_json::Value, f64)]) {
    let mut alone = None;
    for (kind, c, _, _) in results {
        match *kind {
            "host" => alone = Some(c),
            "host-shadow" => {
                println!();
                println!("Shadow decodes (host with a shadow): {}.", c["shadow"]);
                if let Some(a) = alone {
                    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
                    println!(
                        "With a shadow ÷ alone, same round: lag p99 {:.2}×, lag p50 {:.2}×, CPU {:.2}×.",
                        f(c, "lag_p99_ms") / f(a, "lag_p99_ms"),
                        f(c, "lag_p50_ms") / f(a, "lag_p50_ms"),
                        f(c, "cpu_s") / f(a, "cpu_s"),
                    );
                }
            }
            _ => {}
        }
    }
}

/// Runs one consumer worker and the producer against `url`; returns their
/// results.
fn run_pair(
    options: &E2eOptions,
    plan: &Plan,
    kind: &str,
    url: &str,
    plugin: &std::path::Path,
) -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
    let exe = std::env::current_exe()?;
    let common = [
        "--log".to_owned(),
        url.to_owned(),
        "--grains".to_owned(),
        plan.grains.to_string(),
        "--rate".to_owned(),
        plan.rate.to_string(),
        "--duration".to_owned(),
        plan.duration.to_string(),
        "--base".to_owned(),
        plan.base.to_string(),
    ];
    let mut consumer = Command::new(&exe)
        .args(["bench", "worker", "e2e-consumer", "--kind", kind])
        .args(&common)
        .args(["--poll-ms", &options.poll_ms.to_string()])
        .args(["--grace", &options.grace.to_string()])
        .args(["--catch-up-first", &(options.prefill > 0).to_string()])
        .args(["--checkpoint", &options.checkpoint.to_string()])
        .arg("--plugin")
        .arg(plugin)
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the consumer worker")?;
    let mut lines = BufReader::new(consumer.stdout.take().expect("piped")).lines();
    // Wait until the consumer is set up.
    loop {
        let line = lines
            .next()
            .context("the consumer worker exited before it was ready")??;
        if line.trim() == "READY" {
            break;
        }
    }
    let producer = super::run_worker(
        &[
            vec![
                "e2e-producer".to_owned(),
                "--writers".to_owned(),
                options.writers.to_string(),
            ],
            common.to_vec(),
        ]
        .concat(),
        None,
    )?;
    // Tell the consumer the producer is done.
    if let Some(mut stdin) = consumer.stdin.take() {
        let _ = writeln!(stdin, "DONE");
    }
    let mut last = None;
    for line in lines {
        let line = line?;
        if line.starts_with('{') {
            last = Some(line);
        }
    }
    let status = consumer.wait()?;
    anyhow::ensure!(status.success(), "the consumer worker failed: {status}");
    let consumer: serde_json::Value =
        serde_json::from_str(&last.context("the consumer printed no result")?)?;
    Ok((consumer, producer))
}

/// `bench worker e2e-producer`: appends the plan's entries on schedule.
pub fn producer(url: &str, plan: Plan, writers: u64) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let log = replication_log::create(url).await?;
        let total = plan.total();
        let started = tokio::time::Instant::now();
        let late_max = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let writers = writers.max(1);
        for w in 0..writers {
            let log = Arc::clone(&log);
            let late_max = Arc::clone(&late_max);
            tasks.push(tokio::spawn(async move {
                let mut written = 0u64;
                let mut k = w;
                // Writer w owns the grains g with g mod writers == w; with
                // grains a multiple of writers, that is every writers-th k.
                while k < total {
                    let g = k % plan.grains;
                    if g % writers != w {
                        k += 1;
                        continue;
                    }
                    let due = started + Duration::from_secs_f64(k as f64 / plan.rate as f64);
                    let now = tokio::time::Instant::now();
                    if now < due {
                        tokio::time::sleep_until(due).await;
                    } else {
                        late_max.fetch_max((now - due).as_millis() as u64, Ordering::Relaxed);
                    }
                    let sequence = plan.base + k / plan.grains + 1;
                    let entry = LogEntry {
                        grain_type: GRAIN_TYPE.into(),
                        grain_key: key(g),
                        sequence,
                        timestamp_millis: now_millis(),
                        source_cluster: "us-east".into(),
                        entry_type: EntryType::FullState,
                        payload: orlando::bincode(&orlando::sample_account(sequence)).into(),
                    };
                    log.append(&entry).await?;
                    written += 1;
                    k += if plan.grains.is_multiple_of(writers) {
                        writers
                    } else {
                        1
                    };
                }
                anyhow::Ok(written)
            }));
        }
        let mut written = 0;
        for task in tasks {
            written += task.await??;
        }
        Ok(json!({
            "written": written,
            "seconds": started.elapsed().as_secs_f64(),
            "late_max_ms": late_max.load(Ordering::Relaxed),
        }))
    })
}

/// What a consumer worker measures.
struct Observed {
    /// (the entry's timestamp, its lag) of every applied snapshot.
    lags: Mutex<Vec<(i64, f64)>>,
    current: AtomicU64,
    plan: Plan,
}

impl Observed {
    fn applied(&self, grain_key: &str, sequence: u64, timestamp_millis: i64, at_millis: f64) {
        if sequence <= self.plan.base {
            return; // prefilled before the clock started
        }
        self.lags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((timestamp_millis, at_millis - timestamp_millis as f64));
        if let Some(g) = grain_of(grain_key)
            && sequence == self.plan.final_sequence(g)
        {
            self.current.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Lag above this is a slow snapshot for [`slow_seconds`].
const SLOW_MS: f64 = 250.0;

/// Prints on stderr, per second of write time, the snapshots slower than
/// [`SLOW_MS`] and the slowest: where a lag tail comes from (a stall every
/// few seconds, or one long one).
fn slow_seconds(timed: &[(i64, f64)]) {
    let Some(first) = timed.iter().map(|(ts, _)| *ts).min() else {
        return;
    };
    let mut seconds: std::collections::BTreeMap<i64, (u64, u64, f64)> = Default::default();
    for (ts, lag) in timed {
        let second = seconds.entry((ts - first) / 1000).or_default();
        second.0 += 1;
        if *lag > SLOW_MS {
            second.1 += 1;
        }
        second.2 = second.2.max(*lag);
    }
    let slow: Vec<String> = seconds
        .iter()
        .filter(|(_, (_, n, _))| *n > 0)
        .map(|(s, (all, n, max))| format!("{s}s: {n}/{all} (max {max:.0} ms)"))
        .collect();
    eprintln!(
        "bench e2e: seconds with snapshots slower than {SLOW_MS} ms: {}",
        if slow.is_empty() {
            "none".to_owned()
        } else {
            slow.join(", ")
        }
    );
}

/// What the checkpoint writer did so far, as its flushes leave it.
type SharedStats = Arc<Mutex<WriterStats>>;

/// Writes every replica into a checkpoint at `path` (as the first flush
/// after a cold catch-up does), then flushes in the background as the
/// daemon does until `stop`. Returns the writer's running figures and
/// those of the first write.
async fn start_checkpoint(
    path: &std::path::Path,
    url: &str,
    store: &Arc<ReplicaStore>,
    stop: crate::shutdown::StopSignal,
) -> anyhow::Result<(SharedStats, WriterStats)> {
    let mut file = CheckpointFile::open(path).await?;
    file.claim(&Identity {
        log: replication_log::redact_password(url),
        cluster_id: "bench".into(),
    })
    .await?;
    let mut writer = CheckpointWriter::new(file, Arc::clone(store), vec![GRAIN_TYPE.to_owned()], 0);
    let started = Instant::now();
    writer.finish().await?;
    let first = writer.stats();
    eprintln!(
        "bench e2e: checkpoint of {} replicas written in {:.1} s ({:.1} s CPU)",
        first.rows,
        started.elapsed().as_secs_f64(),
        first.cpu.as_secs_f64()
    );
    let stats: SharedStats = Arc::new(Mutex::new(first));
    let shared = Arc::clone(&stats);
    tokio::spawn(async move {
        let mut stop = stop;
        loop {
            tokio::select! {
                () = stop.stopped() => return,
                () = tokio::time::sleep(CheckpointWriter::INTERVAL) => {}
            }
            if let Err(e) = writer.flush(CheckpointWriter::MAX_ROWS_PER_FLUSH).await {
                eprintln!("warning: checkpoint flush failed: {e}");
            }
            *shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = writer.stats();
        }
    });
    Ok((stats, first))
}

/// How an e2e consumer worker paces itself.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerTiming {
    /// Poll interval.
    pub poll: Duration,
    /// How long after the producer ends every grain may take to be current.
    pub grace: Duration,
    /// Wait for the initial catch-up (a prefilled log) before `READY`.
    pub catch_up_first: bool,
    /// Keep a checkpoint: written in full before `READY`, then in the
    /// background as the daemon does; its writer's CPU is reported.
    pub checkpoint: bool,
}

/// `bench worker e2e-consumer`: replicates until every grain is current (or
/// the grace period after the producer ends is over); prints `READY` once set
/// up, then a JSON result.
pub fn consumer(
    kind: &str,
    url: &str,
    plan: Plan,
    timing: ConsumerTiming,
    plugin: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let ConsumerTiming {
        poll,
        grace,
        catch_up_first,
        checkpoint,
    } = timing;
    let checkpoint_dir = tempfile::tempdir()?;
    let mut writer_task = None;
    let mut shadow_tally = None;
    let runtime = tokio::runtime::Runtime::new()?;
    let observed = Arc::new(Observed {
        lags: Mutex::new(Vec::new()),
        current: AtomicU64::new(0),
        plan,
    });
    runtime.block_on(async {
        let counting = Arc::new(CountingLog::new(replication_log::open(url).await?, true));
        let log: Arc<dyn ReplicationLog> = counting.clone();
        let stopping = Shutdown::new();
        // Orlando's consumer (the baseline) takes the watch channel its API has.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut handles = Vec::new();
        match kind {
            "host" | "host-shadow" => {
                let engine = PluginEngine::new()?;
                let path = plugin;
                let plugin = Arc::new(LoadedPlugin::load(&engine, path, PluginLimits::default())?);
                let slots = DecodeSlots::per_core();
                let mut decoder: Arc<dyn SnapshotDecoder> =
                    Arc::new(PluginDecoder::new(Arc::clone(&plugin), slots.clone()));
                if kind == "host-shadow" {
                    // The candidate is a second load of the same file, as an
                    // operator's `shadow` entry would be.
                    let candidate = LoadedPlugin::load(&engine, path, PluginLimits::default())?;
                    let shadow =
                        Shadow::new(GRAIN_TYPE, Arc::new(candidate), path.to_path_buf(), 1.0);
                    decoder = shadow.wrap(decoder, &slots);
                    shadow_tally = Some(Arc::clone(&shadow.tally));
                }
                let store = Arc::new(ReplicaStore::with_change_capacity(1 << 16));
                let mut changes = store.subscribe();
                let seen = Arc::clone(&observed);
                handles.push(tokio::spawn(async move {
                    loop {
                        match changes.recv().await {
                            Ok(change) if change.kind == ChangeKind::Applied => {
                                let r = &change.replica;
                                let at = r.applied_at.map_or(0.0, unix_millis);
                                seen.applied(&r.grain_key, r.sequence, r.timestamp_millis, at);
                            }
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                eprintln!("warning: {n} change events lost");
                            }
                            Err(_) => return,
                        }
                    }
                }));
                let config = ConsumerConfig {
                    poll_interval: poll,
                    ..ConsumerConfig::default()
                };
                let decoders = [(GRAIN_TYPE.to_owned(), decoder)].into_iter().collect();
                let replicator = Replicator::new(log, Arc::clone(&store), decoders, config);
                let catch_up = replicator.catch_up();
                handles.push(replicator.spawn(stopping.signal()));
                if catch_up_first {
                    let started = Instant::now();
                    while !catch_up.progress().complete {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    eprintln!(
                        "bench e2e: caught up with {} grains in {:.1} s",
                        catch_up.progress().grains,
                        started.elapsed().as_secs_f64()
                    );
                }
                if checkpoint {
                    writer_task = Some(
                        start_checkpoint(
                            &checkpoint_dir.path().join("replicas.ckpt"),
                            url,
                            &store,
                            stopping.signal(),
                        )
                        .await?,
                    );
                }
                // The store's sender lives on in `store`; keep it until the end.
                std::mem::forget(store);
            }
            "seed" => {
                let seen = Arc::clone(&observed);
                let store = Arc::new(RawReplicaStore::with_observer(move |grain_key, replica| {
                    seen.applied(
                        grain_key,
                        replica.sequence,
                        replica.timestamp_millis,
                        unix_millis(SystemTime::now()),
                    );
                }));
                // The seed is told which grains to follow.
                for g in 0..plan.grains {
                    let consumer = SeedConsumer {
                        grain_type: GRAIN_TYPE.into(),
                        grain_key: key(g),
                        log: Arc::clone(&log),
                        replica_store: Arc::clone(&store),
                        poll_interval: poll,
                        shutdown_rx: stop_rx.clone(),
                    };
                    handles.push(tokio::spawn(consumer.run()));
                }
            }
            other => anyhow::bail!("unknown consumer kind {other}"),
        }
        // Let every task reach its first sleep before the clock starts.
        tokio::time::sleep(Duration::from_millis(200)).await;

        let cpu_start = cpu_time();
        let started = Instant::now();
        let [r0, l0, c0, o0] = counting.counts();
        println!("READY");
        std::io::stdout().flush()?;
        let producer_done = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            Instant::now()
        });
        let mut producer_end: Option<Instant> = None;
        let mut producer_done = Some(producer_done);
        let target = plan.grains_written();
        let mut current_at = None;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(done) = producer_done.as_mut()
                && done.is_finished()
            {
                producer_end = Some(done.await?);
                producer_done = None;
            }
            if observed.current.load(Ordering::Relaxed) >= target {
                current_at = Some(Instant::now());
                if producer_end.is_some() {
                    break;
                }
            }
            if let Some(end) = producer_end
                && end.elapsed() > grace
            {
                break;
            }
        }
        let wall = started.elapsed();
        let cpu = cpu_time() - cpu_start;
        let [r1, l1, c1, o1] = counting.counts();
        let writer = writer_task.as_ref().map(|(stats, before)| {
            let now = *stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                now.cpu.saturating_sub(before.cpu).as_secs_f64(),
                now.scan_cpu.saturating_sub(before.scan_cpu).as_secs_f64(),
                now.rows - before.rows,
                now.flushes - before.flushes,
            )
        });
        stopping.stop();
        let _ = stop_tx.send(true);
        for handle in handles {
            handle.abort();
        }
        let timed = std::mem::take(
            &mut *observed
                .lags
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        slow_seconds(&timed);
        let mut lags: Vec<f64> = timed.iter().map(|(_, lag)| *lag).collect();
        lags.sort_by(f64::total_cmp);
        let end = producer_end.unwrap_or(started);
        let current = observed.current.load(Ordering::Relaxed);
        Ok(json!({
            "kind": kind,
            "applied": lags.len(),
            "lag_p50_ms": percentile(&lags, 50.0),
            "lag_p99_ms": percentile(&lags, 99.0),
            "lag_max_ms": lags.last().copied().unwrap_or(0.0),
            "grains_current": current,
            "all_current": current >= target,
            "current_after_s": current_at.map_or(f64::NAN, |at| at.saturating_duration_since(end).as_secs_f64()),
            "wall_s": wall.as_secs_f64(),
            "cpu_s": cpu.as_secs_f64(),
            "peak_rss": peak_rss(),
            "queries": (r1 - r0) + (l1 - l0) + (c1 - c0) + (o1 - o0),
            "reads": r1 - r0,
            "listings": l1 - l0,
            "change_queries": c1 - c0,
            "checkpoint_cpu_s": writer.map(|w| w.0),
            "checkpoint_scan_cpu_s": writer.map(|w| w.1),
            "checkpoint_rows": writer.map(|w| w.2),
            "checkpoint_flushes": writer.map(|w| w.3),
            "shadow": shadow_tally.map(|t| {
                Class::ALL
                    .iter()
                    .map(|c| (c.as_str().to_owned(), json!(t.count(*c))))
                    .collect::<serde_json::Map<_, _>>()
            }),
        }))
    })
}
