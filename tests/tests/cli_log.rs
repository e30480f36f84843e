//! `replica-host log ...` through the real binary: `enable-change-feed`
//! applies its DDL once (a dry run changes nothing, an invalid index is
//! rebuilt) and fails in one line without the password.

use replica_e2e::pg;
use replica_e2e::run_host;
use replica_host::replication_log::PostgresLog;
use replica_test_support::{change_feed, orlando};

/// Runs `replica-host log enable-change-feed` with `args`.
fn enable_change_feed(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["log", "enable-change-feed"];
    all.extend_from_slice(args);
    run_host(&all, &[])
}

#[tokio::test]
async fn enable_change_feed_is_idempotent_and_dry_run_changes_nothing() {
    let Some((schema, primary)) = orlando::postgres_schema("feed_cli").await else {
        return;
    };
    orlando::postgres_insert(&primary, "a", 1).await;
    let url = schema.url().to_owned();

    let (code, stdout, stderr) = enable_change_feed(&["--url", &url, "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    for line in change_feed::DDL_LINES {
        assert!(stdout.lines().any(|l| l == line), "{line} in {stdout}");
    }
    assert_eq!(
        change_feed::catalog(&schema).await,
        (None, None),
        "dry run applied DDL"
    );

    let (code, stdout, stderr) = enable_change_feed(&["--url", &url]);
    assert_eq!(code, 0, "{stderr}");
    let printed: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("change feed"))
        .collect();
    assert_eq!(printed, change_feed::DDL_LINES, "{stdout}");
    let enabled = (
        Some(("xid8".to_owned(), Some("pg_current_xact_id()".to_owned()))),
        Some(true),
    );
    assert_eq!(change_feed::catalog(&schema).await, enabled);

    let (code, stdout, stderr) = enable_change_feed(&["--url", &url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("nothing to do"), "{stdout}");
    assert!(
        !stdout.contains("ALTER") && !stdout.contains("CREATE"),
        "{stdout}"
    );
    assert_eq!(change_feed::catalog(&schema).await, enabled);

    // An index left INVALID (an interrupted CONCURRENTLY build) is rebuilt.
    let mut admin = schema.admin().await;
    sqlx::query(
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid =
         (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relname = 'replication_log_replica_tx')",
    )
    .bind(schema.name())
    .execute(&mut admin)
    .await
    .unwrap();
    assert_eq!(change_feed::catalog(&schema).await.1, Some(false));
    let (code, stdout, stderr) = enable_change_feed(&["--url", &url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("DROP INDEX CONCURRENTLY IF EXISTS"),
        "{stdout}"
    );
    assert!(stdout.contains(change_feed::DDL_LINES[2]), "{stdout}");
    assert!(!stdout.contains("ALTER"), "{stdout}");
    assert_eq!(change_feed::catalog(&schema).await, enabled);

    // Orlando's INSERT keeps working and the reader runs in feed mode.
    orlando::postgres_insert(&primary, "a", 2).await;
    let reader = PostgresLog::connect(&url).await.unwrap();
    assert!(reader.change_feed_enabled());
}

#[tokio::test]
async fn enable_change_feed_errors_are_one_line_without_the_password() {
    // A database that does not exist; the password must not show.
    let server = pg::server_url();
    let (scheme, rest) = server.split_once("://").unwrap();
    let host = rest.split('/').next().unwrap();
    let host = host.rsplit('@').next().unwrap();
    let url = format!("{scheme}://postgres:sekrit@{host}/no_such_db_for_feed");
    if pg::isolated_schema("feed_errors").await.is_none() {
        return;
    }
    let (code, stdout, stderr) = enable_change_feed(&["--url", &url]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("database \"no_such_db_for_feed\" does not exist")
            && lines[0].contains("postgres:***@"),
        "{stderr}"
    );
    assert!(!stderr.contains("sekrit"), "{stderr}");

    // Not PostgreSQL: refused in one line.
    let (code, _, stderr) = enable_change_feed(&["--url", "sqlite://some.db"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("PostgreSQL logs only"), "{stderr}");
    assert!(!std::path::Path::new("some.db").exists());

    // No table: nothing created.
    let schema = pg::isolated_schema("feed_no_table").await.unwrap();
    let (code, _, stderr) = enable_change_feed(&["--url", schema.url()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the database has no table replication_log"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
