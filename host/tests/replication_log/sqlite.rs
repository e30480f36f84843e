//! What only the SQLite backend does: URLs and paths, a reader beside a
//! WAL writer, loosely typed rows, the rowid watermark, locks.

use crate::harness::*;

// ---------------------------------------------------------------------------
// SQLite

/// `target` as a path relative to the current directory.
fn relative_to_cwd(target: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let depth = cwd
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let mut relative: PathBuf = std::iter::repeat_n("..", depth).collect();
    relative.push(target.strip_prefix("/").unwrap());
    relative
}

#[tokio::test]
async fn sqlite_urls_open_relative_and_absolute_paths() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("sub.db");
    let relative = relative_to_cwd(&path);
    assert!(relative.is_relative());

    let log = replication_log::create(&format!("sqlite:{}", relative.display()))
        .await
        .unwrap();
    log.append(&entry(COUNTER, "a", 1, b"x")).await.unwrap();
    assert!(path.exists(), "created at the relative path");
    drop(log);

    let absolute = format!("sqlite://{}", path.display());
    assert!(absolute.starts_with("sqlite:///"));
    let log = replication_log::open(&absolute).await.unwrap();
    assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 1);
    let log = replication_log::open(&format!("sqlite://{}", relative.display()))
        .await
        .unwrap();
    assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reader_follows_a_wal_writer_and_creates_nothing() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("wal.db");
    let wal = dir.path().join("wal.db-wal");
    let writer = SqliteLog::create(&path).await.unwrap();
    writer.append(&entry(COUNTER, "a", 1, b"")).await.unwrap();
    // The last connection's close checkpoints and removes the -wal file
    // (on the connection's own worker thread, so shortly after `close`).
    writer.close().await;
    drop(writer);
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.exists() {
        assert!(Instant::now() < deadline, "the writer's -wal file stayed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let reader = SqliteLog::open(&path).await.unwrap();
    assert_eq!(reader.latest_sequence(COUNTER, "a").await.unwrap(), 1);
    let first = reader.changes_since(COUNTER, None).await.unwrap();
    assert!(first.complete && first.cursor.is_some());

    // A writer appends while the reader polls.
    let writer = SqliteLog::create(&path).await.unwrap();
    let appending = tokio::spawn(async move {
        for s in 2..=200 {
            writer.append(&entry(COUNTER, "a", s, b"")).await.unwrap();
        }
        writer.append(&entry(COUNTER, "b", 1, b"")).await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 1;
    while seen < 200 {
        let now = reader.latest_sequence(COUNTER, "a").await.unwrap();
        assert!(now >= seen, "went back from {seen} to {now}");
        seen = now;
        assert!(Instant::now() < deadline, "stuck at {seen}");
    }
    appending.await.unwrap();
    let next = reader
        .changes_since(COUNTER, first.cursor.as_ref())
        .await
        .unwrap();
    assert!(!next.complete);
    assert_eq!(sorted_heads(next.heads), heads(&[("a", 200), ("b", 1)]));
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&sqlite_pool(&path).await)
        .await
        .unwrap();
    assert_eq!(mode, "wal");

    // A reader on a path that does not exist creates nothing.
    let missing = dir.path().join("missing.db");
    assert!(matches!(
        SqliteLog::open(&missing).await,
        Err(LogError::Missing { message, .. }) if message.ends_with("missing.db: no such file")
    ));
    assert!(!missing.exists());
    // Nor a table in a database that has none.
    let empty = dir.path().join("empty.db");
    let raw = new_sqlite_file(&empty).await;
    raw.execute("CREATE TABLE other (x INTEGER)").await.unwrap();
    assert!(matches!(
        replication_log::open(&format!("sqlite://{}", empty.display())).await,
        Err(LogError::Missing { message, .. })
            if message.ends_with("empty.db: the database has no table replication_log")
    ));
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn sqlite_refuses_loosely_typed_rows() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("loose.db");
    let log = SqliteLog::create(&path).await.unwrap();
    let raw = sqlite_pool(&path).await;
    for (sequence, timestamp, entry_type, payload) in [
        ("1", "1", "0", "X'01'"),
        ("'seven'", "1", "0", "X'07'"),
        ("2", "1", "0", "'text payload'"),
        ("3", "1", "0", "X'03'"),
        ("4", "1", "'full'", "X'04'"),
        ("2.5", "1", "0", "X'25'"),
        ("5", "'yesterday'", "0", "X'05'"),
        ("6", "1", "0", "X'06'"),
    ] {
        raw.execute(
            format!(
                "INSERT INTO replication_log VALUES \
                 ('Counter', 'k', {sequence}, {timestamp}, 'us-east', {entry_type}, {payload})"
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
    let rows = log.read_from(COUNTER, "k", 0, 100).await.unwrap();
    assert_eq!(
        shape(&rows),
        ["e1", "r2", "e3", "r4", "r5", "e6", "r?", "r?"]
    );
    let reason = |i: usize| refusal(&rows[i]).reason.clone();
    assert!(
        reason(1).contains("payload: expected BLOB, found TEXT"),
        "{}",
        reason(1)
    );
    assert!(
        reason(3).contains("entry_type: expected INTEGER, found TEXT"),
        "{}",
        reason(3)
    );
    assert!(reason(4).contains("timestamp_millis"), "{}", reason(4));
    assert!(
        reason(6).contains("sequence: expected INTEGER, found REAL"),
        "{}",
        reason(6)
    );
    assert!(
        reason(7).contains("sequence: expected INTEGER, found TEXT"),
        "{}",
        reason(7)
    );
    assert_eq!(&as_entry(&rows[5]).payload[..], [0x06]);

    assert_eq!(log.latest_sequence(COUNTER, "k").await.unwrap(), 6);
    assert_eq!(log.grain_heads(COUNTER).await.unwrap(), heads(&[("k", 6)]));
    assert_eq!(
        shape(&log.read_from(COUNTER, "k", 6, 100).await.unwrap()),
        ["r?", "r?"]
    );
    log.append(&entry(COUNTER, "k", 7, b"")).await.unwrap();
    assert_eq!(log.truncate(COUNTER, "k", 100).await.unwrap(), 7);
    assert_eq!(
        shape(&log.read_from(COUNTER, "k", 0, 100).await.unwrap()),
        ["r?", "r?"]
    );
}

#[tokio::test]
async fn sqlite_changes_since_uses_the_rowid_watermark() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("log.db");
    let log = SqliteLog::create(&path).await.unwrap();
    for key in ["a", "b"] {
        log.append(&entry(COUNTER, key, 1, b"")).await.unwrap();
    }
    let first = log.changes_since(COUNTER, None).await.unwrap();
    assert!(first.complete && first.cursor.is_some());
    log.append(&entry(COUNTER, "b", 2, b"")).await.unwrap();
    let next = log
        .changes_since(COUNTER, first.cursor.as_ref())
        .await
        .unwrap();
    assert!(!next.complete, "an incremental answer");
    assert_eq!(next.heads, heads(&[("b", 2)]));

    // VACUUM may renumber rowids: the cursor notices when its row moved.
    let raw = sqlite_pool(&path).await;
    raw.execute("DELETE FROM replication_log WHERE grain_key = 'a'")
        .await
        .unwrap();
    raw.execute("VACUUM").await.unwrap();
    log.append(&entry(COUNTER, "e", 1, b"")).await.unwrap();
    let after = log
        .changes_since(COUNTER, next.cursor.as_ref())
        .await
        .unwrap();
    assert!(after.heads.contains(&heads(&[("e", 1)])[0]), "{after:?}");
}

#[tokio::test]
async fn sqlite_changes_since_lists_everything_without_a_rowid() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("norowid.db");
    let raw = new_sqlite_file(&path).await;
    raw.execute(
        "CREATE TABLE replication_log (grain_type TEXT NOT NULL, grain_key TEXT NOT NULL,
         sequence INTEGER NOT NULL, timestamp_millis INTEGER NOT NULL,
         source_cluster TEXT NOT NULL, entry_type INTEGER NOT NULL, payload BLOB NOT NULL,
         PRIMARY KEY (grain_type, grain_key, sequence)) WITHOUT ROWID",
    )
    .await
    .unwrap();
    let log = SqliteLog::create(&path).await.unwrap();
    log.append(&entry(COUNTER, "a", 1, b"")).await.unwrap();
    for _ in 0..2 {
        let changes = log.changes_since(COUNTER, None).await.unwrap();
        assert!(changes.complete);
        assert!(changes.cursor.is_none());
        assert_eq!(changes.heads, heads(&[("a", 1)]));
    }
}

#[tokio::test]
async fn sqlite_refuses_nulls_of_a_looser_table() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nullable.db");
    let raw = new_sqlite_file(&path).await;
    // An older writer's table without NOT NULL; our CREATE IF NOT EXISTS keeps it.
    raw.execute(
        "CREATE TABLE replication_log (grain_type TEXT, grain_key TEXT, sequence INTEGER,
         timestamp_millis INTEGER, source_cluster TEXT, entry_type INTEGER, payload BLOB,
         PRIMARY KEY (grain_type, grain_key, sequence))",
    )
    .await
    .unwrap();
    raw.execute(
        "INSERT INTO replication_log VALUES
         ('Counter', 'k', 1, 1, 'us-east', 0, NULL),
         ('Counter', 'k', 2, 1, X'0102', 0, X'02'),
         ('Counter', 'k', 3, 1, 'us-east', 0, X'03')",
    )
    .await
    .unwrap();
    let log = SqliteLog::open(&path).await.unwrap();
    let rows = log.read_from(COUNTER, "k", 0, 10).await.unwrap();
    assert_eq!(shape(&rows), ["r1", "r2", "e3"]);
    assert!(
        refusal(&rows[0])
            .reason
            .contains("payload: expected BLOB, found NULL")
    );
    assert!(
        refusal(&rows[1])
            .reason
            .contains("source_cluster: expected TEXT, found BLOB")
    );
}

#[tokio::test]
async fn sqlite_locked_database_is_unavailable_but_readable() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("locked.db");
    let log = SqliteLog::create_with_busy_timeout(&path, Duration::from_millis(300))
        .await
        .unwrap();
    log.append(&entry(COUNTER, "a", 1, b"")).await.unwrap();

    let mut writer = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
        .await
        .unwrap();
    writer.execute("BEGIN IMMEDIATE").await.unwrap();
    writer
        .execute("INSERT INTO replication_log VALUES ('Counter', 'a', 2, 1, 'us-east', 0, X'00')")
        .await
        .unwrap();

    let started = Instant::now();
    match log.append(&entry(COUNTER, "a", 3, b"")).await {
        Err(LogError::Unavailable { message, .. }) => {
            assert!(message.contains("locked.db"), "{message}")
        }
        other => panic!("append to a locked database: {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "busy timeout waited"
    );
    // WAL: the writer does not block readers, who see only committed rows.
    assert_eq!(
        shape(&log.read_from(COUNTER, "a", 0, 10).await.unwrap()),
        ["e1"]
    );

    writer.execute("COMMIT").await.unwrap();
    log.append(&entry(COUNTER, "a", 3, b"")).await.unwrap();
    assert_eq!(
        shape(&log.read_from(COUNTER, "a", 0, 10).await.unwrap()),
        ["e1", "e2", "e3"]
    );
}

#[tokio::test]
async fn sqlite_unopenable_file_is_unavailable() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("missing-dir").join("log.db");
    match SqliteLog::create(&path).await {
        Err(LogError::Unavailable { message, .. }) => {
            assert!(message.contains("missing-dir"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A reader does not even try: the file is missing.
    match SqliteLog::open(&path).await {
        Err(LogError::Missing { message, .. }) => {
            assert!(
                message.contains("missing-dir/log.db: no such file"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sqlite_closed_log_is_unavailable() {
    let dir = TempDir::new().unwrap();
    let log = SqliteLog::create(dir.path().join("closed.db"))
        .await
        .unwrap();
    log.ping().await.unwrap();
    log.close().await;
    let err = log.ping().await.unwrap_err();
    assert!(matches!(err, LogError::Unavailable { .. }), "{err:?}");
    // One line naming the file, and the driver's error kept as the source.
    let path = dir.path().join("closed.db");
    assert_eq!(
        err.to_string(),
        format!(
            "log backend unavailable: sqlite {}: {}",
            path.display(),
            sqlx::Error::PoolClosed
        )
    );
    let source = std::error::Error::source(&err).expect("the cause is kept");
    assert!(
        matches!(
            source.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::PoolClosed)
        ),
        "{source:?}"
    );
}
