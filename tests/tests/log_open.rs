//! `replica-host run` is a reader: a missing SQLite file, PostgreSQL
//! database or `replication_log` table is one line and exit status 1, and
//! the daemon creates none of them. It still reads a WAL log a writer keeps
//! appending to.

use std::path::Path;
use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, CounterState};
use replica_e2e::pg;
use sqlx::{Connection, Executor};

fn plugins(dir: &Path) -> String {
    let counter = daemon::copy_plugin(dir, "counter-plugin");
    format!("[[plugin]]\ngrain_type = \"Counter\"\npath = \"{counter}\"\n")
}

/// Runs the daemon on `url` to its exit; returns its one `error:` line.
fn startup_error(dir: &Path, url: &str) -> String {
    let path = dir.join("host.toml");
    std::fs::write(&path, daemon::config(url, &plugins(dir))).unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 1, "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(!stderr.contains("replica-host running"), "{stderr}");
    errors[0].to_owned()
}

fn sqlite_tables(path: &Path) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    })
}

#[test]
fn a_missing_sqlite_file_is_one_line_exit_1_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("does-not-exist.db");
    let url = format!("sqlite://{}", db.display());
    let error = startup_error(dir.path(), &url);
    assert_eq!(
        error,
        format!(
            "error: {}: log.url: {url}: no such file",
            dir.path().join("host.toml").display()
        )
    );
    assert!(!db.exists(), "the reader created the file");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("does-not-exist"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_sqlite_file_without_the_table_is_exit_1_and_no_table_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("empty.db");
    // An existing database with some other table in it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display()))
                .await
                .unwrap();
        conn.execute("CREATE TABLE other (x INTEGER)")
            .await
            .unwrap();
    });
    assert_eq!(sqlite_tables(&db), 1);
    let url = format!("sqlite://{}", db.display());
    let error = startup_error(dir.path(), &url);
    assert!(
        error.ends_with(&format!(
            "log.url: {url}: the database has no table replication_log"
        )),
        "{error}"
    );
    assert_eq!(sqlite_tables(&db), 1, "the reader created a table");
}

#[test]
fn a_postgres_schema_without_the_table_is_exit_1_and_no_table_is_created() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(schema) = rt.block_on(pg::isolated_schema("run_no_table")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let error = startup_error(dir.path(), schema.url());
    assert!(
        error.contains("log.url: postgres://")
            && error.ends_with(": the database has no table replication_log"),
        "{error}"
    );
    let tables: i64 = rt.block_on(async {
        let mut admin = schema.admin().await;
        sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1")
            .bind(schema.name())
            .fetch_one(&mut admin)
            .await
            .unwrap()
    });
    assert_eq!(tables, 0, "the reader created a table");
}

#[test]
fn a_postgres_database_that_does_not_exist_is_exit_1_with_the_password_hidden() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Only to learn whether a server is there (skip otherwise).
    if rt.block_on(pg::isolated_schema("run_no_db")).is_none() {
        return;
    }
    let server = pg::server_url();
    let (scheme, rest) = server.split_once("://").unwrap();
    let host = rest.split('/').next().unwrap();
    let host = host.rsplit('@').next().unwrap();
    let url = format!("{scheme}://postgres:sekrit@{host}/no_such_db_for_run");
    let dir = tempfile::tempdir().unwrap();
    let error = startup_error(dir.path(), &url);
    assert!(
        error.contains(&format!(
            "log.url: {scheme}://postgres:***@{host}/no_such_db_for_run: \
             database \"no_such_db_for_run\" does not exist"
        )),
        "{error}"
    );
    assert!(!error.contains("sekrit"), "{error}");
}

#[test]
fn the_reader_follows_a_wal_log_a_writer_keeps_appending_to() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("replication.db");
    let url = format!("sqlite://{}", db.display());
    let writer = LogWriter::open(&url);
    let counter = |n: i64| orlando::bincode(&CounterState { count: n });
    writer.full("Counter", "a", 1, counter(1));
    let d = Daemon::start(dir.path(), &daemon::config(&url, &plugins(dir.path())));
    d.wait_for_replica("Counter", "a", Duration::from_secs(60), |r| {
        r["sequence"] == 1
    });
    // The writer keeps its connections open and appends while the host reads.
    for s in 2..=40u64 {
        writer.full("Counter", "a", s, counter(s as i64));
        writer.full("Counter", &format!("k{s}"), 1, counter(s as i64));
    }
    let r = d.wait_for_replica("Counter", "a", Duration::from_secs(60), |r| {
        r["sequence"] == 40
    });
    assert_eq!(r["state"]["count"], 40);
    d.wait_for_replica("Counter", "k40", Duration::from_secs(60), |r| {
        r["sequence"] == 1
    });
    assert_eq!(d.terminate().code, Some(0));
}
