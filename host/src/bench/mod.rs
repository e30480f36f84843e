//! The benchmarks behind `replica-host bench …` (see BENCHMARKS.md).
//!
//! Every benchmark measures its baseline in the same run and reports
//! ratios; absolute figures are context only (the machine is small and
//! shared). Runs that need their own CPU and memory accounting (end to end,
//! idle, memory) run each side in a child process of the same binary
//! (`replica-host bench worker …`) so that `getrusage` and peak RSS belong
//! to that side alone.
//!
//! Longer than most modules: the helpers every benchmark shares (the logs,
//! `CountingLog`, CPU and RSS readings, percentiles, the sample plugins) are
//! here once rather than copied per benchmark.

pub mod catchup;
pub mod decode;
pub mod e2e;
pub mod idle;
mod restart;
pub mod scaleout;
pub mod seed;
pub mod startup;
pub mod verify;
pub mod waiters;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;

use crate::authoring::build::build_plugin;
use crate::replication_log::{
    ChangeCursor, ForwardLog, GrainHead, HeadChanges, LogError, LogRecord, ReplicationLog, ScanPage,
};

/// Builds the sample plugin in `plugins_dir/dir` (cargo, release, then
/// componentized) and returns the component's path.
pub fn sample_plugin(plugins_dir: &Path, dir: &str) -> anyhow::Result<PathBuf> {
    build_plugin(&plugins_dir.join(dir)).with_context(|| format!("building plugin {dir}"))
}

/// This process's CPU time (user + system) so far.
pub fn cpu_time() -> Duration {
    let usage = rusage();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// This process's peak resident set size, in bytes.
pub fn peak_rss() -> u64 {
    rusage().ru_maxrss as u64 * 1024
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage writes into the struct we pass; all-zero is a valid rusage.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}

/// This process's current resident set size, in bytes (`/proc/self/statm`).
pub fn current_rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}

/// CPU time (user + system, own and reaped children's) of every process
/// whose command name is `name` (e.g. the local PostgreSQL server's), from
/// `/proc`.
pub fn cpu_time_of_processes(name: &str) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // utime, stime, cutime, cstime are fields 14–17 (1-based) of the
        // whole line; after the name they are at 11–14 (0-based). Children's
        // times count too: a server's exited backends end up there once the
        // server has reaped them.
        total += (11..=14)
            .map(|i| {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum::<u64>();
    }
    Duration::from_secs_f64(total as f64 / ticks)
}

/// The `p`-th percentile (0–100) of sorted values; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Median of values (sorted inside).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

/// `min–max` of values, formatted with `digits` decimals.
pub fn spread(values: &[f64], digits: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.digits$}–{max:.digits$}")
}

/// The machine, as BENCHMARKS.md shows it: `nproc` and the CPU model.
pub fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("nproc={nproc}, {model}")
}

/// Runs this binary as a benchmark worker (`replica-host bench worker ARGS`)
/// and returns the JSON object it prints last on stdout.
pub fn run_worker(args: &[String], stdin_lines: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe().context("locating the replica-host binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench")
        .arg("worker")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(if stdin_lines.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().context("starting a benchmark worker")?;
    if let Some(lines) = stdin_lines {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(lines.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "benchmark worker {args:?} failed: {}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("worker {args:?} printed no result"))?;
    Ok(serde_json::from_str(last)?)
}

/// Counts the queries a consumer makes, and can hide a backend's incremental
/// discovery (`incremental: false`: every poll lists every grain, as before
/// `changes_since` existed). A [`ForwardLog`]: the calls it does not count
/// (`ping`, the anti-entropy reads) pass through.
pub struct CountingLog {
    inner: Arc<dyn ReplicationLog>,
    incremental: bool,
    /// Whether the catch-up scan is passed through (else the consumer
    /// reads each grain by itself, as before the scan existed).
    scan: bool,
    /// Catch-up scan pages read.
    pub scans: AtomicU64,
    /// `read_from` calls.
    pub reads: AtomicU64,
    /// `grain_heads` / full listings.
    pub listings: AtomicU64,
    /// Incremental `changes_since` calls.
    pub change_queries: AtomicU64,
    /// Other calls.
    pub other: AtomicU64,
}

impl CountingLog {
    /// Wraps `inner`, passing its catch-up scan through.
    pub fn new(inner: Arc<dyn ReplicationLog>, incremental: bool) -> Self {
        Self::with_scan(inner, incremental, true)
    }

    /// Wraps `inner`; `scan: false` hides its catch-up scan.
    pub fn with_scan(inner: Arc<dyn ReplicationLog>, incremental: bool, scan: bool) -> Self {
        Self {
            inner,
            incremental,
            scan,
            scans: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            listings: AtomicU64::new(0),
            change_queries: AtomicU64::new(0),
            other: AtomicU64::new(0),
        }
    }

    /// (reads, full listings, incremental change queries, other).
    pub fn counts(&self) -> [u64; 4] {
        [
            self.reads.load(Ordering::Relaxed),
            self.listings.load(Ordering::Relaxed),
            self.change_queries.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        ]
    }
}

#[async_trait]
impl ForwardLog for CountingLog {
    fn inner(&self) -> &dyn ReplicationLog {
        &*self.inner
    }

    async fn read_from(
        &self,
        grain_type: &str,
        grain_key: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner
            .read_from(grain_type, grain_key, after, limit)
            .await
    }
    async fn latest_sequence(&self, grain_type: &str, grain_key: &str) -> Result<u64, LogError> {
        self.other.fetch_add(1, Ordering::Relaxed);
        self.inner.latest_sequence(grain_type, grain_key).await
    }
    async fn grain_heads(&self, grain_type: &str) -> Result<Vec<GrainHead>, LogError> {
        self.listings.fetch_add(1, Ordering::Relaxed);
        self.inner.grain_heads(grain_type).await
    }
    async fn changes_since(
        &self,
        grain_type: &str,
        cursor: Option<&ChangeCursor>,
    ) -> Result<HeadChanges, LogError> {
        if !self.incremental {
            return Ok(HeadChanges {
                heads: ForwardLog::grain_heads(self, grain_type).await?,
                complete: true,
                cursor: None,
            });
        }
        let changes = self.inner.changes_since(grain_type, cursor).await?;
        if changes.complete {
            self.listings.fetch_add(1, Ordering::Relaxed);
        } else {
            self.change_queries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(changes)
    }
    async fn grain_types(&self) -> Result<Vec<String>, LogError> {
        self.other.fetch_add(1, Ordering::Relaxed);
        self.inner.grain_types().await
    }
    async fn scan(
        &self,
        grain_type: &str,
        after: Option<&str>,
        max_rows: usize,
    ) -> Result<Option<ScanPage>, LogError> {
        if !self.scan {
            return Ok(None);
        }
        self.scans.fetch_add(1, Ordering::Relaxed);
        self.inner.scan(grain_type, after, max_rows).await
    }
}

/// The grains a scale benchmark replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// `Counter` grains: a few bytes of state each.
    Counter,
    /// `BankAccount` grains with a ~100-byte bincode payload each.
    Bank,
}

impl Workload {
    /// The grain type.
    pub fn grain_type(self) -> &'static str {
        match self {
            Workload::Counter => "Counter",
            Workload::Bank => "BankAccount",
        }
    }

    /// The sample plugin's directory under `plugins/`.
    pub fn plugin_dir(self) -> &'static str {
        match self {
            Workload::Counter => "counter",
            Workload::Bank => "bank-account",
        }
    }

    /// One grain's snapshot payload.
    pub fn payload(self) -> Vec<u8> {
        match self {
            Workload::Counter => {
                crate::demo::orlando::bincode(&crate::demo::orlando::CounterState { count: 42 })
            }
            Workload::Bank => crate::demo::orlando::bincode(&workload::account_state(7, 100)),
        }
    }
}

/// Where a benchmark's log lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema on the PostgreSQL server (`--postgres-url`).
    Postgres,
}

/// A log for one benchmark run: a SQLite file in a temporary directory or a
/// schema of its own on PostgreSQL, removed on drop.
pub struct BenchLog {
    /// The URL to open it with.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<(String, String)>,
}

impl BenchLog {
    /// Creates the log (and Orlando's table).
    pub async fn create(backend: Backend, postgres_url: &str) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::TempDir::new()?;
                let path = dir.path().join("replication.db");
                crate::replication_log::SqliteLog::create(&path).await?;
                Ok(Self {
                    url: format!("sqlite://{}", path.display()),
                    _dir: Some(dir),
                    schema: None,
                })
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let name = format!(
                    "bench_{}_{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos())
                );
                let mut admin = sqlx::PgConnection::connect(postgres_url)
                    .await
                    .with_context(|| {
                        format!(
                            "PostgreSQL at {}",
                            crate::replication_log::redact_password(postgres_url)
                        )
                    })?;
                sqlx::query(&format!("CREATE SCHEMA \"{name}\""))
                    .execute(&mut admin)
                    .await?;
                let separator = if postgres_url.contains('?') { '&' } else { '?' };
                let url = format!(
                    "{postgres_url}{separator}options=-c%20search_path%3D{name}&application_name={name}"
                );
                crate::replication_log::PostgresLog::create(&url).await?;
                Ok(Self {
                    url,
                    _dir: None,
                    schema: Some((name, postgres_url.to_owned())),
                })
            }
        }
    }

    /// Stores `grains` Counter grains (`counter-0` …), one snapshot each, in
    /// one statement.
    pub async fn fill_counters(&self, grains: u64) -> anyhow::Result<()> {
        let payload =
            crate::demo::orlando::bincode(&crate::demo::orlando::CounterState { count: 42 });
        self.fill(
            Workload::Counter.grain_type(),
            "counter-",
            1,
            grains,
            &payload,
        )
        .await
    }

    /// Stores `grains` grains of `workload`, one snapshot each.
    pub async fn fill_workload(&self, workload: Workload, grains: u64) -> anyhow::Result<()> {
        self.fill(
            workload.grain_type(),
            "counter-",
            1,
            grains,
            &workload.payload(),
        )
        .await
    }

    /// Stores `grains` grains of `grain_type` (`{prefix}0` …), one snapshot
    /// each at `sequence` holding `payload`, in one statement.
    pub async fn fill(
        &self,
        grain_type: &str,
        prefix: &str,
        sequence: i64,
        grains: u64,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let now = crate::store::now_millis();
        if let Some(path) = self.url.strip_prefix("sqlite://") {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}")).await?;
            sqlx::query(
                "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i + 1 < ?)
                 INSERT INTO replication_log
                 SELECT ?, ? || i, ?, ?, 'us-east', 0, ? FROM g",
            )
            .bind(grains as i64)
            .bind(grain_type)
            .bind(prefix)
            .bind(sequence)
            .bind(now)
            .bind(payload)
            .execute(&mut conn)
            .await?;
        } else {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&self.url).await?;
            sqlx::query(
                "INSERT INTO replication_log
                 SELECT $4, $5 || i, $6, $2, 'us-east', 0, $3
                 FROM generate_series(0, $1 - 1) AS i",
            )
            .bind(grains as i64)
            .bind(now)
            .bind(payload)
            .bind(grain_type)
            .bind(prefix)
            .bind(sequence)
            .execute(&mut conn)
            .await?;
            sqlx::query("VACUUM ANALYZE replication_log")
                .execute(&mut conn)
                .await?;
        }
        Ok(())
    }
}

impl Drop for BenchLog {
    fn drop(&mut self) {
        if let Some((name, admin_url)) = self.schema.take() {
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                runtime.block_on(async {
                    use sqlx::Connection;
                    let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .execute(&mut admin)
                        .await
                        .ok()
                })
            })
            .join();
            if !matches!(dropped, Ok(Some(_))) {
                eprintln!("warning: could not drop the benchmark schema");
            }
        }
    }
}
