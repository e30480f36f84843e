//! `replica-host bench waiters`: many concurrent read-your-writes reads
//! (`?min_sequence=N&wait_ms=M`) parked on a real `replica-host run`, then
//! the writes they wait for.
//!
//! The host runs as a child process (`replica-host run` on an SQLite log
//! with the Counter sample plugin), so its resident memory is its own. The
//! bench opens the connections first and measures them idle, then sends a
//! waiting read on each, so the waiting itself is measured apart from the
//! connections. The wake-up latency of each read is from the commit of the
//! append it waits for to its answer's arrival; the baseline, in the same
//! run, is the same latency with a single waiter.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{machine, sample_plugin};
use crate::demo::orlando::{self, CounterState};
use crate::replication_log::{self, EntryType, LogEntry, LogWriter};
use crate::store::now_millis;

/// What `bench waiters` runs.
#[derive(Debug, Clone)]
pub struct WaitersOptions {
    /// Concurrent waiting reads.
    pub waiters: usize,
    /// Grains they wait on (waiter i waits on grain i mod grains).
    pub grains: usize,
    /// The sample plugins' sources.
    pub plugins_dir: PathBuf,
}

/// Runs the benchmark and prints its JSON report.
pub fn run(options: &WaitersOptions) -> anyhow::Result<()> {
    if options.waiters == 0 || options.grains == 0 {
        bail!("--waiters and --grains must be at least 1");
    }
    raise_open_files();
    let runtime = tokio::runtime::Runtime::new()?;
    let plugin = sample_plugin(&options.plugins_dir, "counter")?;
    let dir = std::env::temp_dir().join(format!("replica-bench-waiters-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = runtime.block_on(measure(options, &plugin, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The host under test, killed on drop.
struct Host {
    child: Child,
    addr: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// Resident memory of the host process, bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }
}

async fn measure(
    options: &WaitersOptions,
    plugin: &Path,
    dir: &Path,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let log = replication_log::create(&url).await?;
    let key = |i: usize| format!("w-{i:06}");
    for i in 0..options.grains {
        append(log.as_ref(), &key(i), 1).await?;
    }
    let host = start_host(dir, &url, plugin).await?;
    wait_ready(&host.addr).await?;
    let rss_idle = host.rss();

    // The baseline: one waiter at a time, five times.
    let mut single = Vec::new();
    for i in 0..5.min(options.grains) {
        let mut stream = TcpStream::connect(&host.addr).await?;
        let path = format!(
            "/v1/replicas/Counter/{}?min_sequence=2&wait_ms=120000",
            key(i)
        );
        send(&mut stream, &path).await?;
        wait_waiting(&host.addr, 1).await?;
        append(log.as_ref(), &key(i), 2).await?;
        let committed = Instant::now();
        let status = read_response(&mut stream).await?;
        if status != 200 {
            bail!("a single waiter got {status}");
        }
        single.push(committed.elapsed());
    }
    single.sort();

    // Every connection first, idle; then a waiting read on each.
    let mut streams = Vec::with_capacity(options.waiters);
    for chunk in (0..options.waiters).collect::<Vec<_>>().chunks(500) {
        let connects = chunk
            .iter()
            .map(|_| TcpStream::connect(&host.addr))
            .collect::<Vec<_>>();
        for stream in futures::future::join_all(connects).await {
            streams.push(stream.context("connecting to the host")?);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = host.rss();
    for (i, stream) in streams.iter_mut().enumerate() {
        let path = format!(
            "/v1/replicas/Counter/{}?min_sequence=3&wait_ms=120000",
            key(i % options.grains)
        );
        send(stream, &path).await?;
    }
    wait_waiting(&host.addr, options.waiters).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_waiting = host.rss();

    // Each waiter's answer, with the time it arrived.
    let readers = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            tokio::spawn(async move {
                let status = read_response(&mut stream).await;
                (i, status, Instant::now())
            })
        })
        .collect::<Vec<_>>();
    let mut committed = Vec::with_capacity(options.grains);
    let writes_started = Instant::now();
    for i in 0..options.grains {
        append(log.as_ref(), &key(i), 3).await?;
        committed.push(Instant::now());
    }
    let writes_took = writes_started.elapsed();
    let mut latencies = Vec::with_capacity(options.waiters);
    let mut failed = 0;
    for reader in readers {
        let (i, status, arrived) = reader.await?;
        match status {
            Ok(200) => latencies.push(arrived.duration_since(committed[i % options.grains])),
            _ => failed += 1,
        }
    }
    latencies.sort();
    let pct = |sorted: &[Duration], p: f64| -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[at].as_secs_f64() * 1000.0
    };
    let p99 = pct(&latencies, 0.99);
    let single_median = pct(&single, 0.5);
    let per = |bytes: i64| bytes as f64 / options.waiters as f64;
    Ok(json!({
        "benchmark": "waiters",
        "machine": machine(),
        "waiters": options.waiters,
        "grains": options.grains,
        "answered_200": latencies.len(),
        "failed": failed,
        "host_rss_bytes": {
            "idle": rss_idle,
            "connections_open": rss_connected,
            "reads_waiting": rss_waiting,
        },
        "bytes_per_connection": per(rss_connected as i64 - rss_idle as i64),
        "bytes_per_waiting_read": per(rss_waiting as i64 - rss_connected as i64),
        "appends_took_ms": writes_took.as_secs_f64() * 1000.0,
        "wake_latency_ms": {
            "p50": pct(&latencies, 0.5),
            "p99": p99,
            "max": pct(&latencies, 1.0),
        },
        "baseline_single_waiter_ms": {
            "median": single_median,
            "max": pct(&single, 1.0),
        },
        "p99_over_single_waiter_median": if single_median > 0.0 { p99 / single_median } else { 0.0 },
    }))
}

/// Appends a Counter FullState at `sequence`.
async fn append(log: &dyn LogWriter, key: &str, sequence: u64) -> anyhow::Result<()> {
    log.append(&LogEntry {
        grain_type: "Counter".into(),
        grain_key: key.into(),
        sequence,
        timestamp_millis: now_millis(),
        source_cluster: "bench".into(),
        entry_type: EntryType::FullState,
        payload: orlando::bincode(&CounterState {
            count: sequence as i64,
        })
        .into(),
    })
    .await?;
    Ok(())
}

/// Starts `replica-host run` on the log, on a free port.
async fn start_host(dir: &Path, url: &str, plugin: &Path) -> anyhow::Result<Host> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("host.toml");
    std::fs::write(
        &config,
        format!(
            "cluster_id = \"bench\"\n\n[log]\nurl = \"{url}\"\n\n[consumer]\npoll_interval_ms = 50\n\n\
             [http]\nlisten = \"{addr}\"\nmax_wait_ms = 120000\ndrain_ms = 0\n\n\
             [store]\nstate_dir = \"{}\"\n\n\
             [[plugin]]\ngrain_type = \"Counter\"\npath = \"{}\"\n",
            dir.join("state").display(),
            plugin.display()
        ),
    )?;
    let child = Command::new(std::env::current_exe()?)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting replica-host run")?;
    Ok(Host { child, addr })
}

async fn wait_ready(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(addr).await
            && send(&mut stream, "/readyz").await.is_ok()
            && read_response(&mut stream).await.ok() == Some(200)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the host at {addr} was not ready within 120 s")
}

/// Waits until the host reports `n` waiting reads (`/metrics`).
async fn wait_waiting(addr: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stream = TcpStream::connect(addr).await?;
    while Instant::now() < deadline {
        send(&mut stream, "/metrics").await?;
        let body = read_body(&mut stream).await?;
        let waiting = body
            .lines()
            .find_map(|l| l.strip_prefix("replica_http_waiting_reads "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if waiting as usize >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("fewer than {n} reads were waiting after 120 s")
}

async fn send(stream: &mut TcpStream, path: &str) -> std::io::Result<()> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    stream.write_all(request.as_bytes()).await
}

/// Reads one response; returns its status.
async fn read_response(stream: &mut TcpStream) -> std::io::Result<u16> {
    Ok(read(stream).await?.0)
}

async fn read_body(stream: &mut TcpStream) -> std::io::Result<String> {
    Ok(read(stream).await?.1)
}

/// Reads one HTTP/1.1 response with a `Content-Length` body.
async fn read(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Raises this process's soft limit on open files to the hard limit (each
/// waiter is a connection).
fn raise_open_files() {
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
