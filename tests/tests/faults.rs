//! Faults of the log and odd data, through the real daemon: a locked or busy
//! SQLite database, the log backend down at startup, rows the host cannot
//! interpret, empty, huge and absurd payloads, odd grain keys, sequences
//! near 2^63, and many grains failing at once without flooding the log.
//! (A restarted PostgreSQL server is in `faults_pg_restart.rs`, alone in its
//! test binary.)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use replica_e2e::daemon::{self, Daemon, metric};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::payloads::counter;
use replica_host::replication_log::{EntryType, LogEntry};
use sqlx::{Connection, Executor};

const WAIT: Duration = Duration::from_secs(60);

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("replication.db").display())
}

fn plugins(dir: &Path) -> String {
    let counter = daemon::copy_plugin(dir, "counter-plugin");
    let misbehave = daemon::copy_plugin(dir, "misbehave-plugin");
    format!(
        "[[plugin]]\ngrain_type = \"Counter\"\npath = \"{counter}\"\n\n\
         [[plugin]]\ngrain_type = \"Misbehave\"\npath = \"{misbehave}\"\n"
    )
}

fn count_of(replica: &serde_json::Value) -> Option<i64> {
    replica["state"]["count"].as_i64()
}

/// Nothing reordered: every grain's applied sequences strictly increase.
fn assert_in_order(d: &Daemon, grain_type: &str, grains: usize) {
    let applied = d.applied_sequences(Some(grain_type));
    assert_eq!(applied.len(), grains, "{applied:?}");
    for (key, sequences) in &applied {
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key} applied out of order: {sequences:?}"
        );
    }
}

/// Holds the WAL read locks of `db` in another process until dropped.
struct ReadLock(std::process::Child);

impl ReadLock {
    fn hold(db: &Path) -> ReadLock {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hold-wal-read-locks"))
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start hold-wal-read-locks");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        ReadLock(child)
    }
}

impl Drop for ReadLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[test]
fn a_locked_or_busy_sqlite_log_loses_and_reorders_nothing() {
    const GRAINS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("replication.db");
    let url = sqlite_url(dir.path());
    let writer = LogWriter::open(&url);
    let keys: Vec<String> = (0..GRAINS).map(|g| format!("g-{g}")).collect();
    let write = |sequences: std::ops::RangeInclusive<u64>| {
        for s in sequences {
            for key in &keys {
                writer.full("Counter", key, s, counter(s as i64));
            }
        }
    };
    let wait_all_at = |d: &Daemon, sequence: u64| {
        for key in &keys {
            let r = d.wait_for_replica("Counter", key, WAIT, |r| r["sequence"] == sequence);
            assert_eq!(count_of(&r), Some(sequence as i64), "{r}");
        }
    };
    write(1..=3);
    let d = Daemon::start(dir.path(), &daemon::config(&url, &plugins(dir.path())));
    wait_all_at(&d, 3);

    // 1. A writer holds the database locked (`BEGIN EXCLUSIVE`, as a primary's
    // long transaction) while it appends: in WAL mode readers are not
    // blocked; the host keeps serving and sees none of the uncommitted rows.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut conn = rt.block_on(sqlx::SqliteConnection::connect(&url)).unwrap();
    rt.block_on(async {
        conn.execute("BEGIN EXCLUSIVE").await.unwrap();
        for s in 4..=6i64 {
            for key in &keys {
                sqlx::query(
                    "INSERT INTO replication_log VALUES ('Counter', ?, ?, 1, 'us-east', 0, ?)",
                )
                .bind(key)
                .bind(s)
                .bind(counter(s))
                .execute(&mut conn)
                .await
                .unwrap();
            }
        }
    });
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        assert_eq!(d.get("/healthz").status, 200);
        assert_eq!(
            d.replica("Counter", "g-0").json()["sequence"],
            3,
            "a dirty read"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    rt.block_on(conn.execute("COMMIT")).unwrap();
    wait_all_at(&d, 6);

    // 2. Another process holds the WAL read locks: no read can start.
    // SQLite retries for about 10 s, then fails the read ("locking
    // protocol"); the host logs it, backs off, and resumes from the same
    // position once the lock is gone.
    write(7..=7);
    let lock = ReadLock::hold(&db);
    let failure = d.wait_for_log(&["failed to list the grain type's grains", "Counter"], WAIT);
    assert!(
        failure.contains("replication.db"),
        "names the file: {failure}"
    );
    assert_eq!(
        d.get("/healthz").status,
        200,
        "the API answers while the log is locked"
    );
    drop(lock);
    write(8..=9);
    wait_all_at(&d, 9);
    d.wait_for_log(&["listing grains again", "Counter"], WAIT);
    assert_in_order(&d, "Counter", GRAINS);
    assert_eq!(d.terminate().code, Some(0));
}

#[test]
fn a_log_backend_down_at_startup_is_one_clear_error_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plugins = plugins(d);
    for (url, expected) in [
        (
            // Nothing listens on port 1.
            "postgres://postgres@127.0.0.1:1/test".to_string(),
            "log backend unavailable",
        ),
        (
            format!("sqlite://{}", d.join("no-such-dir/log.db").display()),
            "no-such-dir",
        ),
    ] {
        let path = d.join("host.toml");
        std::fs::write(&path, daemon::config(&url, &plugins)).unwrap();
        let started = Instant::now();
        let (code, stderr) = daemon::run_to_exit(&path);
        assert_eq!(code, 1, "{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains("host.toml: log.url: ") && errors[0].contains(expected),
            "{}",
            errors[0]
        );
        assert!(!stderr.contains("replica-host running"), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "gave up in time"
        );
    }
}

#[test]
fn odd_rows_payloads_keys_and_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let writer = LogWriter::open(&url);
    let text = daemon::config(&url, &plugins(dir.path()))
        .replace("max_backoff_ms = 400", "max_backoff_ms = 3000");

    // Rows the host cannot interpret, between good ones.
    writer.full("Counter", "odd", 1, counter(1));
    writer.block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        conn.execute(
            "INSERT INTO replication_log VALUES
             ('Counter', 'odd', 2, 1, 'us-east', 7, X'00'),
             ('Counter', 'odd', 3, 'yesterday', 'us-east', 0, X'00'),
             ('Counter', 'odd', -5, 1, 'us-east', 0, X'00')",
        )
        .await
        .unwrap();
    });
    writer.full("Counter", "odd", 4, counter(4));
    // A key with unicode, slashes, quotes and URL syntax.
    let key = "ключ/with \"double\" and 'single' quotes/😀 %2F?#&=+";
    writer.full("Counter", key, 1, counter(42));
    // Sequences near 2^63: the column is a signed 64-bit integer.
    let max = i64::MAX as u64;
    writer.full("Counter", "max-seq", max - 1, counter(1));
    writer.full("Misbehave", "empty", 1, counter(1));
    writer.full("Misbehave", "absurd", 1, counter(1));

    let d = Daemon::start(dir.path(), &text);

    let r = d.wait_for_replica("Counter", "odd", WAIT, |r| r["sequence"] == 4);
    assert_eq!(
        (r["status"].as_str(), count_of(&r)),
        (Some("ok"), Some(4)),
        "{r}"
    );
    d.wait_for_log(&["refused a log row", "entry_type: unknown value 7"], WAIT);

    let r = d.wait_for_replica("Counter", key, WAIT, |r| r["sequence"] == 1);
    assert_eq!(
        (r["grain_key"].as_str(), count_of(&r)),
        (Some(key), Some(42))
    );
    let listed = d.get("/v1/replicas/Counter?limit=1000").json();
    assert!(
        listed["keys"].as_array().unwrap().iter().any(|k| k == key),
        "{listed}"
    );

    d.wait_for_replica("Counter", "max-seq", WAIT, |r| r["sequence"] == max - 1);
    writer.full("Counter", "max-seq", max, counter(2));
    let r = d.wait_for_replica("Counter", "max-seq", WAIT, |r| r["sequence"] == max);
    assert_eq!(count_of(&r), Some(2));
    assert!(
        r.to_string().contains("\"sequence\":9223372036854775807"),
        "{r}"
    );
    // Past 2^63 - 1 a sequence cannot be stored: the append is refused.
    let past = LogEntry {
        grain_type: "Counter".into(),
        grain_key: "max-seq".into(),
        sequence: max + 1,
        timestamp_millis: 1,
        source_cluster: "us-east".into(),
        entry_type: EntryType::FullState,
        payload: counter(3).into(),
    };
    let err = writer.block_on(writer.log.append(&past)).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");

    // A zero-byte payload: malformed, the replica keeps its state.
    d.wait_for_replica("Misbehave", "empty", WAIT, |r| r["sequence"] == 1);
    writer.full("Misbehave", "empty", 2, Vec::new());
    let r = d.wait_for_replica("Misbehave", "empty", WAIT, |r| r["status"] == "failing");
    let reason = r["status_detail"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("malformed_payload: bincode"), "{reason}");
    assert_eq!((r["sequence"].as_u64(), count_of(&r)), (Some(1), Some(1)));

    // Several MiB through the plugin with the default limits (64 MiB of
    // memory, 32 MiB of output text): stored, decoded and served whole.
    let big = "é".repeat(4 << 20); // 8 MiB of UTF-8
    writer.full("Misbehave", "big", 1, format!("echo:{big}").into_bytes());
    let r = d.wait_for_replica("Misbehave", "big", Duration::from_secs(120), |r| {
        r["sequence"] == 1
    });
    assert_eq!(r["state"].as_str().map(str::len), Some(big.len()));
    assert!(r["state"].as_str() == Some(big.as_str()));

    // An absurd one (96 MiB, more than the plugin's memory): refused with a
    // clear error before any guest code runs; the replica keeps its state.
    d.wait_for_replica("Misbehave", "absurd", WAIT, |r| r["sequence"] == 1);
    writer.full("Misbehave", "absurd", 2, vec![b'x'; 96 << 20]);
    let r = d.wait_for_replica("Misbehave", "absurd", Duration::from_secs(120), |r| {
        r["status"] == "failing"
    });
    assert_eq!(
        r["status_detail"]["reason"],
        "out_of_memory: the payload is 100663296 bytes, more than the plugin's memory limit of 67108864 bytes; refused without calling the plugin"
    );
    assert_eq!((r["sequence"].as_u64(), count_of(&r)), (Some(1), Some(1)));

    let metrics = d.get("/metrics").body;
    assert_eq!(
        metric(
            &metrics,
            r#"replica_rows_refused_total{grain_type="Counter"}"#
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(d.get("/healthz").status, 200);
    assert_eq!(d.terminate().code, Some(0));
}

#[test]
fn many_failing_grains_do_not_flood_the_log() {
    const GRAINS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let writer = LogWriter::open(&url);
    writer.block_on(async {
        // One transaction: 200 grains whose snapshot does not decode, and
        // 50 whose newest entry is a Delta.
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        for g in 0..GRAINS {
            sqlx::query(
                "INSERT INTO replication_log VALUES ('Counter', ?, 1, 1, 'us-east', 0, X'FFFF')",
            )
            .bind(format!("bad-{g:03}"))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        for g in 0..50 {
            sqlx::query(
                "INSERT INTO replication_log VALUES ('Counter', ?, 1, 1, 'us-east', 1, X'01')",
            )
            .bind(format!("delta-{g:02}"))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    });
    writer.full("Counter", "good", 1, counter(1));
    let text = daemon::config(&url, &plugins(dir.path())).replace(
        "max_backoff_ms = 400",
        "max_backoff_ms = 400\nlog_summary_interval_ms = 1000",
    );
    let started = Instant::now();
    let d = Daemon::start(dir.path(), &text);
    d.wait_for("/metrics", WAIT, |r| {
        metric(
            &r.body,
            r#"replica_replicas{grain_type="Counter",status="failing"}"#,
        ) == Some(GRAINS as f64)
    });
    let summary = d.wait_for_log(
        &[
            "more `malformed_payload` errors of grain type Counter",
            "not logged one by one",
        ],
        WAIT,
    );
    assert!(summary.contains("examples=["), "{summary}");
    // Failing grains keep retrying; the log stays quiet.
    std::thread::sleep(Duration::from_millis(1500));
    writer.full("Counter", "good", 2, counter(2));
    let r = d.wait_for_replica("Counter", "good", WAIT, |r| r["sequence"] == 2);
    assert_eq!(count_of(&r), Some(2));
    let failures = metric(
        &d.get("/metrics").body,
        r#"replica_decode_failures_total{grain_type="Counter",kind="malformed_payload"}"#,
    )
    .unwrap();
    assert!(failures >= GRAINS as f64, "{failures}");
    let exited = d.terminate();
    let full = exited
        .stderr
        .iter()
        .filter(|l| l.contains("snapshot did not decode"))
        .count();
    let deltas = exited
        .stderr
        .iter()
        .filter(|l| l.contains("refused a Delta entry"))
        .count();
    // One full line per interval (1 s) at most, against hundreds of failures.
    let windows = started.elapsed().as_secs() as usize + 1;
    assert!(
        (1..=windows).contains(&full),
        "{full} full lines for {failures} failures"
    );
    assert_eq!(deltas, 1, "50 Deltas, one line");
    assert!(
        exited
            .stderr
            .iter()
            .any(|l| l.contains("more `delta` errors of grain type Counter")),
        "summarised at shutdown at the latest"
    );
    let loud: Vec<&String> = exited
        .stderr
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        loud.len() < 40,
        "{} warnings and errors: {loud:#?}",
        loud.len()
    );
}
