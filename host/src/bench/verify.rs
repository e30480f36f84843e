//! `replica-host bench verify --grains N`: `verify` against a host that
//! replicates N Counter grains (one snapshot each), timed against its two
//! halves measured in the same run as the baseline: the log's one-snapshot
//! read alone, and the host's `fields=sequence` pages alone.
//!
//! The host runs in this process (`daemon::run`, the real HTTP server);
//! its catch-up is waited for and not counted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Backend, BenchLog, machine, sample_plugin};
use crate::daemon::config::Config;
use crate::verify::{self, VerifyOptions, host_api::HostApi};

/// What `bench verify` runs.
#[derive(Debug, Clone)]
pub struct VerifyBenchOptions {
    /// Where the log lives.
    pub backend: Backend,
    /// PostgreSQL server for [`Backend::Postgres`].
    pub postgres_url: String,
    /// Counter grains in the log.
    pub grains: u64,
    /// The sample plugins' sources.
    pub plugins_dir: PathBuf,
}

/// How long the host may take to catch up before the run gives up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(600);

/// Runs the benchmark and prints a Markdown table on stdout.
pub fn run(options: &VerifyBenchOptions) -> anyhow::Result<()> {
    let plugin = sample_plugin(&options.plugins_dir, "counter")?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let log = BenchLog::create(options.backend, &options.postgres_url).await?;
        eprintln!("bench verify: writing {} grains ...", options.grains);
        log.fill_counters(options.grains).await?;
        let dir = tempfile::TempDir::new()?;
        std::fs::copy(&plugin, dir.path().join("counter.wasm"))?;
        let config_path = dir.path().join("host.toml");
        std::fs::write(
            &config_path,
            format!(
                "cluster_id = \"bench\"\n\n[log]\nurl = {}\n\n[http]\nlisten = \"127.0.0.1:0\"\ndrain_ms = 0\n\n[[plugin]]\ngrain_type = \"Counter\"\npath = \"counter.wasm\"\n",
                toml::Value::String(log.url.clone())
            ),
        )?;
        let config = Config::load(&config_path).map_err(anyhow::Error::msg)?;
        let (ready, addr) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // The daemon's future is not `Send`: it runs on a thread and a
        // runtime of its own, as `replica-host run` does.
        let daemon = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(crate::daemon::run(
                config,
                async move {
                    let _ = stopped.await;
                },
                move |addr| {
                    let _ = ready.send(addr);
                },
            ))?;
            Ok(())
        });
        let addr = addr.await.context("the host did not start")?;
        let host_url = format!("http://{addr}");
        eprintln!("bench verify: the host at {host_url} catches up ...");
        let started = Instant::now();
        let client = reqwest::Client::new();
        loop {
            let ready = client.get(format!("{host_url}/readyz")).send().await?;
            if ready.status().is_success() {
                break;
            }
            anyhow::ensure!(started.elapsed() < CATCH_UP_LIMIT, "the host did not catch up");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let catch_up = started.elapsed();

        eprintln!("bench verify: the log's snapshot alone ...");
        let reader = crate::replication_log::open(&log.url).await?;
        let started = Instant::now();
        let snapshot = reader
            .heads_snapshot(None)
            .await?
            .context("the log has no one-snapshot read")?;
        let log_alone = started.elapsed();
        let log_heads: usize = snapshot.grain_types.iter().map(|(_, h)| h.len()).sum();
        drop(snapshot);

        eprintln!("bench verify: the host's pages alone ...");
        let host = HostApi::new(&host_url, None)?;
        let started = Instant::now();
        let mut after: Option<String> = None;
        let mut positions = 0usize;
        loop {
            let page = host
                .positions("Counter", after.as_deref(), crate::daemon::http::bulk::MAX_BULK_PAGE)
                .await?;
            positions += page.replicas.len();
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let host_alone = started.elapsed();

        eprintln!("bench verify: verify ...");
        let started = Instant::now();
        let report = verify::run(&VerifyOptions::new(log.url.clone(), host_url.clone())).await?;
        let whole = started.elapsed();
        let _ = stop.send(());
        let _ = tokio::task::spawn_blocking(move || daemon.join()).await;

        println!("### `bench verify`, {} Counter grains, {:?}\n", options.grains, options.backend);
        println!("{}\n", machine());
        println!("| what | grains | s |");
        println!("| --- | --- | --- |");
        println!("| host catch-up (not counted) | {} | {:.2} |", options.grains, catch_up.as_secs_f64());
        println!("| baseline: the log's one-snapshot read alone | {log_heads} | {:.2} |", log_alone.as_secs_f64());
        println!("| baseline: the host's `fields=sequence` pages alone | {positions} | {:.2} |", host_alone.as_secs_f64());
        println!(
            "| **verify** (log snapshot {:.2} s + host pages and comparison {:.2} s) | {} | **{:.2}** |",
            report.log_read.as_secs_f64(),
            report.host_read.as_secs_f64(),
            report.log_grains(),
            whole.as_secs_f64()
        );
        println!(
            "\nverify ÷ (log alone + host alone): {:.2}×; every grain matches: {}",
            whole.as_secs_f64() / (log_alone + host_alone).as_secs_f64().max(1e-9),
            report.all_match()
        );
        anyhow::ensure!(report.all_match(), "verify found disagreements:\n{report}");
        Ok(())
    })
}
