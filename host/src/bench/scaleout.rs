//! `replica-host bench scaleout`: 1, 2, 3 … identical hosts replicating
//! every grain of one PostgreSQL log at once (read scale-out / high
//! availability), idle after catch-up: what each extra host costs the
//! server, against one host measured in the same run.
//!
//! Every host is a child process (`bench worker idle`) started at the same
//! moment on the same log; each reports its own CPU and the server's CPU
//! over its quiet window (the windows overlap: they start once each host has
//! caught up and waited 2 s).

use super::idle::{IdleOptions, WorkerMode, filled_log, worker_args};
use super::{Workload, machine, median, run_worker, sample_plugin};

/// Runs the benchmark and prints a Markdown table on stdout.
pub fn run(options: &IdleOptions, hosts: &[usize]) -> anyhow::Result<()> {
    let plugin = sample_plugin(&options.plugins_dir, "counter")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let grains = options.grains.first().copied().unwrap_or(100_000);
    let mode = WorkerMode {
        incremental: true,
        scan: true,
        workload: Workload::Counter,
        workers: crate::consumer::DEFAULT_WORKERS,
        native: false,
    };
    let mut rows = Vec::new();
    for &n in hosts {
        let log = filled_log(options, &runtime, Workload::Counter, grains)?;
        eprintln!("bench scaleout: {n} host(s) on one log of {grains} grains ...");
        let args = worker_args(options, &log.url, grains, mode, &plugin);
        let results: Vec<serde_json::Value> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .map(|_| scope.spawn(|| run_worker(&args, None)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker thread"))
                .collect::<anyhow::Result<_>>()
        })?;
        let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(0.0);
        let server: Vec<f64> = results
            .iter()
            .map(|r| f(r, "server_cpu_s") / f(r, "window_s").max(1e-9))
            .collect();
        let host: f64 = results
            .iter()
            .map(|r| f(r, "cpu_s") / f(r, "window_s").max(1e-9))
            .sum();
        let catch_up = results
            .iter()
            .map(|r| f(r, "catch_up_s"))
            .fold(0.0, f64::max);
        let queries: f64 = results
            .iter()
            .map(|r| f(r, "queries") / f(r, "window_s").max(1e-9))
            .sum();
        rows.push((n, median(&server), host, catch_up, queries));
        drop(log);
    }
    println!(
        "## bench scaleout, PostgreSQL, {grains} Counter grains ({})",
        machine()
    );
    println!();
    println!(
        "Identical hosts replicating every grain of one log, started together; idle window {} s after catch-up; poll {} ms; change feed {}.",
        options.seconds,
        options.poll_ms,
        if options.change_feed { "on" } else { "off" }
    );
    println!();
    println!(
        "| hosts | slowest catch-up s | server CPU, idle (% of a core) | ÷ one host | all hosts' CPU, idle | queries/s, all hosts |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let one = rows.first().map_or(f64::NAN, |r| r.1);
    for (n, server, host, catch_up, queries) in &rows {
        println!(
            "| {n} | {catch_up:.1} | {:.2}% | {:.2} | {:.2}% | {queries:.1} |",
            100.0 * server,
            server / one,
            100.0 * host,
        );
    }
    Ok(())
}
