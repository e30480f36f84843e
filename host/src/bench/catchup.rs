//! `replica-host bench catchup`: a cold start with N grains (one snapshot
//! each) caught up with the bulk scan, against the baseline measured in the
//! same run: the same host reading each grain by itself (the scan hidden),
//! at a smaller N. Then, once caught up, RSS per replicated grain (all in,
//! and the state's share) and the idle cost over a quiet window.
//!
//! With `--native`, a third run decodes natively in the host instead of
//! through the plugin: what the consumer itself costs.
//!
//! Each plugin run then swaps the plugin for the same component under
//! another name and times the background re-decode of every replica
//! against the catch-up of the same run.
//!
//! Each side runs in its own child process (`bench worker idle`), so CPU
//! and RSS are its own.

use serde_json::Value as Json;

use super::idle::{IdleOptions, WorkerMode, run_one_with};
use super::{Backend, Workload, machine, sample_plugin};

/// Runs the benchmark and prints a Markdown table on stdout.
pub fn run(
    options: &IdleOptions,
    baseline_grains: u64,
    workload: Workload,
    native: bool,
) -> anyhow::Result<()> {
    let plugin = sample_plugin(&options.plugins_dir, workload.plugin_dir())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let grains = options.grains.first().copied().unwrap_or(1_000_000);
    let mut runs: Vec<(&str, u64, Json, f64)> = Vec::new();
    let mode = |scan: bool, native: bool| WorkerMode {
        incremental: true,
        scan,
        workload,
        workers: crate::consumer::DEFAULT_WORKERS,
        native,
    };
    if baseline_grains > 0 {
        eprintln!("bench catchup: baseline, {baseline_grains} grains read one by one ...");
        let (r, server) = run_one_with(
            options,
            &runtime,
            &plugin,
            baseline_grains,
            mode(false, false),
        )?;
        runs.push(("per-grain reads (baseline)", baseline_grains, r, server));
    }
    eprintln!("bench catchup: {grains} grains with the bulk scan ...");
    let (r, server) = run_one_with(options, &runtime, &plugin, grains, mode(true, false))?;
    runs.push(("bulk scan (default)", grains, r, server));
    if native {
        eprintln!("bench catchup: {grains} grains, bulk scan, native decoding ...");
        let (r, server) = run_one_with(options, &runtime, &plugin, grains, mode(true, true))?;
        runs.push(("bulk scan, native decode (no plugin)", grains, r, server));
    }

    let pg = options.backend == Backend::Postgres;
    println!(
        "## bench catchup, {:?}, {} grains ({})",
        options.backend,
        workload.grain_type(),
        machine()
    );
    println!();
    println!(
        "Cold start, one snapshot per grain ({} bytes), poll {} ms; idle window {} s after catch-up.",
        workload.payload().len(),
        options.poll_ms,
        options.seconds
    );
    println!();
    println!(
        "| catch-up | grains | catch-up s | grains/s | host CPU s{} | scan pages | grain reads | RSS per grain, all in, bytes | state's share, bytes | bookkeeping, bytes | idle host CPU{} | idle queries/s |",
        if pg { " (+ server)" } else { "" },
        if pg { " (+ server)" } else { "" },
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let f = |r: &Json, k: &str| r[k].as_f64().unwrap_or(0.0);
    let mut rates = Vec::new();
    for (label, n, r, idle_server) in &runs {
        let n = *n as f64;
        let per_grain = (f(r, "rss_idle") - f(r, "rss_before")) / n;
        let state = f(r, "state_bytes_per_grain");
        let window = f(r, "window_s").max(1e-9);
        let rate = n / f(r, "catch_up_s").max(1e-9);
        rates.push(rate);
        let cpu = if pg {
            format!(
                "{:.1} + {:.1}",
                f(r, "catch_up_cpu_s"),
                f(r, "catch_up_server_cpu_s")
            )
        } else {
            format!("{:.1}", f(r, "catch_up_cpu_s"))
        };
        let idle = if pg {
            format!(
                "{:.2}% + {:.2}%",
                100.0 * f(r, "cpu_s") / window,
                100.0 * idle_server / window
            )
        } else {
            format!("{:.2}%", 100.0 * f(r, "cpu_s") / window)
        };
        println!(
            "| {label} | {n} | {:.1} | {rate:.0} | {cpu} | {} | {} | {per_grain:.0} | {state:.0} | {:.0} | {idle} | {:.1} |",
            f(r, "catch_up_s"),
            f(r, "scans"),
            f(r, "catch_up_reads"),
            per_grain - state,
            f(r, "queries") / window,
        );
    }
    if let [baseline, scan, ..] = rates.as_slice() {
        println!();
        println!(
            "Catch-up throughput, bulk scan ÷ per-grain reads: **{:.1}×**.",
            scan / baseline
        );
    }
    println!();
    println!(
        "The same runs against the scan alone (every page of the ordered scan, nothing decoded), then the durable checkpoint: written whole (as at SIGTERM), and two restarts from it into a new store and replicator (the daemon's code paths, in the worker): nothing changed (after SIGTERM), and {} snapshots appended since the checkpoint (what a SIGKILL after the last flush leaves), timed until every grain is caught up.",
        10_000u64.min(grains)
    );
    println!();
    println!(
        "| run | grains | scan alone s | catch-up s | catch-up ÷ scan alone | checkpoint write s | checkpoint bytes per grain | warm restart, nothing changed, s (of which loading) | warm restart, 10,000 appended, s (of which loading) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, n, r, _) in &runs {
        let Some(scan) = r["scan_alone_s"].as_f64() else {
            continue;
        };
        let w = &r["restart"];
        let g = |k: &str| w[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {label} | {n} | {scan:.2} | {:.1} | {:.1}× | {:.1} | {:.0} | {:.2} ({:.2}) | {:.2} ({:.2}) |",
            f(r, "catch_up_s"),
            f(r, "catch_up_s") / scan.max(1e-9),
            g("checkpoint_write_s"),
            g("checkpoint_bytes_per_grain"),
            g("warm_s"),
            g("warm_load_s"),
            g("killed_s"),
            g("killed_load_s"),
        );
    }
    let time_of = |label: &str| {
        runs.iter()
            .find(|(l, ..)| *l == label)
            .map(|(_, _, r, _)| f(r, "catch_up_s"))
    };
    if let (Some(plugin), Some(native)) = (
        time_of("bulk scan (default)"),
        time_of("bulk scan, native decode (no plugin)"),
    ) {
        println!();
        println!(
            "Catch-up time, plugin ÷ native decoding: **{:.2}×** (goal ≤ 1.5×).",
            plugin / native.max(1e-9)
        );
    }
    println!();
    println!(
        "Then a plugin swap: the same component under another name, so every replica is decoded again in the background (reads keep being served)."
    );
    println!();
    println!(
        "| run | grains | catch-up s | re-decode s | re-decode host CPU s | re-decode ÷ catch-up time |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, n, r, _) in &runs {
        let Some(redecode) = r["redecode_s"].as_f64() else {
            continue;
        };
        println!(
            "| {label} | {n} | {:.1} | {redecode:.1} | {:.1} | {:.2}× |",
            f(r, "catch_up_s"),
            f(r, "redecode_cpu_s"),
            redecode / f(r, "catch_up_s").max(1e-9),
        );
    }
    Ok(())
}
