//! A real PostgreSQL restart while the daemon replicates from it: nothing
//! lost, nothing reordered.
//!
//! Alone in its test binary, with a single test: cargo runs test binaries
//! one after another, so the restart cannot disturb the other PostgreSQL
//! tests. Needs `pg_ctlcluster` (Debian's postgresql-common) and the right
//! to use it; without it the test prints `SKIPPED: …` and passes, unless
//! `CI` or `REPLICA_REQUIRE_POSTGRES=1` is set.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use replica_e2e::daemon::{self, Daemon, metric};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::payloads::counter;
use replica_e2e::pg;
use replica_host::replication_log::{EntryType, LogEntry};
use replica_host::store::now_millis;

const WAIT: Duration = Duration::from_secs(60);
const GRAINS: usize = 5;

/// The local cluster's version directory under /etc/postgresql, when
/// `pg_ctlcluster` can manage it.
fn cluster_version() -> Result<String, String> {
    Command::new("pg_ctlcluster")
        .arg("--help")
        .output()
        .map_err(|e| format!("pg_ctlcluster: {e}"))?;
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .map_err(|e| format!("/etc/postgresql: {e}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|v| std::path::Path::new(&format!("/etc/postgresql/{v}/main")).is_dir())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| "no cluster under /etc/postgresql/*/main".to_string())
}

fn skip_or_fail(why: &str) {
    if pg::postgres_required() {
        panic!(
            "cannot restart PostgreSQL ({why}); required here (CI or REPLICA_REQUIRE_POSTGRES=1)"
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: cannot restart PostgreSQL with pg_ctlcluster ({why})"
    );
}

fn pg_ctlcluster(version: &str, action: &str) -> Result<(), String> {
    let out = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, "main", action])
        .output()
        .map_err(|e| format!("pg_ctlcluster: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pg_ctlcluster {version} main {action}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The server, stopped; started again on drop (also when the test fails),
/// waiting until it accepts connections.
struct Stopped(String);

impl Stopped {
    fn stop(version: &str) -> Result<Stopped, String> {
        pg_ctlcluster(version, "stop")?;
        Ok(Stopped(version.to_string()))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Err(e) = pg_ctlcluster(&self.0, "start") {
            eprintln!("could not start PostgreSQL again: {e}");
            return;
        }
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect("127.0.0.1:5432").is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Appends, retrying while the server is still coming back.
fn append(writer: &LogWriter, key: &str, sequence: u64) {
    let entry = LogEntry {
        grain_type: "Counter".into(),
        grain_key: key.into(),
        sequence,
        timestamp_millis: now_millis(),
        source_cluster: "us-east".into(),
        entry_type: EntryType::FullState,
        payload: counter(sequence as i64).into(),
    };
    let deadline = Instant::now() + WAIT;
    loop {
        match writer.block_on(writer.log.append(&entry)) {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("append {key}/{sequence}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("append {key}/{sequence}: {e}"),
        }
    }
}

#[test]
fn a_postgres_restart_while_running_loses_and_reorders_nothing() {
    let url = pg::server_url();
    if !(url.contains("@127.0.0.1") || url.contains("@localhost")) {
        return skip_or_fail(&format!(
            "{} is not the local cluster that pg_ctlcluster restarts",
            replica_host::replication_log::redact_password(&url)
        ));
    }
    let version = match cluster_version() {
        Ok(v) => v,
        Err(why) => return skip_or_fail(&why),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(schema) = rt.block_on(pg::isolated_schema("pg_restart")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(schema.url());
    let keys: Vec<String> = (0..GRAINS).map(|g| format!("g-{g}")).collect();
    for s in 1..=3 {
        for key in &keys {
            append(&writer, key, s);
        }
    }
    let counter_plugin = daemon::copy_plugin(dir.path(), "counter-plugin");
    let d = Daemon::start(
        dir.path(),
        &daemon::config(
            schema.url(),
            &format!("[[plugin]]\ngrain_type = \"Counter\"\npath = \"{counter_plugin}\"\n"),
        ),
    );
    let wait_all_at = |sequence: u64| {
        for key in &keys {
            let r = d.wait_for_replica("Counter", key, WAIT, |r| r["sequence"] == sequence);
            assert_eq!(r["state"]["count"].as_i64(), Some(sequence as i64), "{r}");
        }
    };
    wait_all_at(3);

    // Entries written just before the restart, the restart itself, and
    // entries written once the server is back.
    for key in &keys {
        append(&writer, key, 4);
    }
    // A restart in two steps, so that the daemon surely sees the server
    // gone: stop, wait until the daemon reports it, start.
    let stopped = match Stopped::stop(&version) {
        Ok(stopped) => stopped,
        Err(why) => return skip_or_fail(&why),
    };
    d.wait_for_log(&["failed to list the grain type's grains", "Counter"], WAIT);
    assert_eq!(
        d.get("/healthz").status,
        200,
        "the API answers during the outage"
    );
    // A caught-up host stays ready through an outage shorter than
    // `[http] ready_during_log_outage_s` (60 s by default), serving what
    // it holds with a growing staleness.
    assert_eq!(
        d.get("/readyz").status,
        200,
        "ready through a short log outage"
    );
    drop(stopped);
    for s in 5..=6 {
        for key in &keys {
            append(&writer, key, s);
        }
    }
    wait_all_at(6);

    // The outage was seen (a failed listing or read), and recovered from.
    let metrics = d.get("/metrics").body;
    let errors = metric(
        &metrics,
        r#"replica_log_read_errors_total{grain_type="Counter"}"#,
    )
    .unwrap_or(0.0);
    assert!(errors >= 1.0, "the restart went unnoticed:\n{metrics}");
    assert_eq!(d.get("/readyz").status, 200);

    // Nothing reordered: per grain, applied sequences only increase.
    let applied = d.applied_sequences(None);
    assert_eq!(applied.len(), GRAINS, "{applied:?}");
    for (key, sequences) in &applied {
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]) && sequences.last() == Some(&6),
            "{key}: {sequences:?}"
        );
    }
    assert_eq!(d.terminate().code, Some(0));
    drop(schema);
}
