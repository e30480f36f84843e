//! What every part of the suite uses: the backends under test behind one
//! [`Harness`], and small helpers to build and judge rows.

pub(crate) use std::path::{Component, Path, PathBuf};
pub(crate) use std::sync::Arc;
pub(crate) use std::time::{Duration, Instant};

pub(crate) use async_trait::async_trait;
pub(crate) use replica_host::replication_log::{
    self, ChangeCursor, EntryType, GrainHead, LogEntry, LogError, LogRecord, LogWriter, MemoryLog,
    PostgresLog, PostgresWriter, RawRow, RefusedRow, ReplicationLog, SqliteLog, SqliteWriter,
};
pub(crate) use replica_test_support::orlando;
pub(crate) use replica_test_support::pg::{self, PgSchema};
pub(crate) use replica_test_support::relay::{self, Relay};
pub(crate) use sqlx::postgres::PgPool;
pub(crate) use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool};
pub(crate) use sqlx::{Connection, Executor};
pub(crate) use tempfile::TempDir;

pub(crate) const COUNTER: &str = "Counter";

// ---------------------------------------------------------------------------
// Helpers

pub(crate) fn entry(grain_type: &str, grain_key: &str, sequence: u64, payload: &[u8]) -> LogEntry {
    LogEntry {
        grain_type: grain_type.to_owned(),
        grain_key: grain_key.to_owned(),
        sequence,
        timestamp_millis: 1_700_000_000_000 + (sequence % 1_000_000) as i64,
        source_cluster: "us-east".to_owned(),
        entry_type: EntryType::FullState,
        payload: payload.to_vec().into(),
    }
}

pub(crate) fn raw(grain_type: &str, grain_key: &str, sequence: i64, entry_type: i64) -> RawRow {
    RawRow {
        grain_type: grain_type.to_owned(),
        grain_key: grain_key.to_owned(),
        sequence,
        timestamp_millis: 1_700_000_000_000,
        source_cluster: "us-east".to_owned(),
        entry_type,
        payload: b"raw".to_vec(),
    }
}

/// Records as `e<seq>` (entry), `r<seq>` (refused) or `r?` (refused, no sequence).
pub(crate) fn shape(records: &[LogRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| match r {
            LogRecord::Entry(e) => format!("e{}", e.sequence),
            LogRecord::Refused(RefusedRow {
                sequence: Some(s), ..
            }) => format!("r{s}"),
            LogRecord::Refused(_) => "r?".to_owned(),
        })
        .collect()
}

pub(crate) fn refusal(record: &LogRecord) -> &RefusedRow {
    match record {
        LogRecord::Refused(r) => r,
        other => panic!("expected a refused row, got {other:?}"),
    }
}

pub(crate) fn as_entry(record: &LogRecord) -> &LogEntry {
    match record {
        LogRecord::Entry(e) => e,
        other => panic!("expected an entry, got {other:?}"),
    }
}

pub(crate) fn heads(pairs: &[(&str, u64)]) -> Vec<GrainHead> {
    pairs
        .iter()
        .map(|(k, s)| GrainHead {
            grain_key: (*k).to_owned(),
            latest_sequence: *s,
        })
        .collect()
}

pub(crate) fn sorted_heads(mut heads: Vec<GrainHead>) -> Vec<GrainHead> {
    heads.sort_by(|a, b| a.grain_key.cmp(&b.grain_key));
    heads
}

/// Deterministic bytes covering every value.
pub(crate) fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Backends under test

/// A backend, in a table made by Orlando's own DDL: its writer, a reader
/// opened as `replica-host run` opens one, and Orlando's own INSERT (which
/// also stores rows our writer never would).
#[async_trait]
pub(crate) trait Harness: Send + Sync {
    /// The backend's writer (`create`).
    fn log(&self) -> Arc<dyn LogWriter>;
    /// A reader of the same log, opened by URL (`replication_log::open`).
    async fn reader(&self) -> Arc<dyn ReplicationLog>;
    /// Stores `row` as an Orlando primary does, bypassing our writer.
    async fn insert_raw(&self, row: RawRow);
}

pub(crate) struct MemoryHarness(Arc<MemoryLog>);

#[async_trait]
impl Harness for MemoryHarness {
    fn log(&self) -> Arc<dyn LogWriter> {
        self.0.clone()
    }
    async fn reader(&self) -> Arc<dyn ReplicationLog> {
        // A memory log has no URL to open again: it reads itself.
        self.0.clone()
    }
    async fn insert_raw(&self, row: RawRow) {
        self.0.insert_raw(row).expect("insert raw row");
    }
}

pub(crate) async fn memory(_case: &str) -> Option<Box<dyn Harness>> {
    Some(Box::new(MemoryHarness(Arc::new(MemoryLog::new()))))
}

pub(crate) struct SqliteHarness {
    log: Arc<SqliteWriter>,
    raw: SqlitePool,
    _dir: TempDir,
}

#[async_trait]
impl Harness for SqliteHarness {
    fn log(&self) -> Arc<dyn LogWriter> {
        self.log.clone()
    }
    async fn reader(&self) -> Arc<dyn ReplicationLog> {
        replication_log::open(&format!("sqlite://{}", self.log.path().display()))
            .await
            .expect("open the SQLite log as a reader")
    }
    async fn insert_raw(&self, row: RawRow) {
        sqlx::query(orlando::SQLITE_INSERT)
            .bind(row.grain_type)
            .bind(row.grain_key)
            .bind(row.sequence)
            .bind(row.timestamp_millis)
            .bind(row.source_cluster)
            .bind(row.entry_type)
            .bind(row.payload)
            .execute(&self.raw)
            .await
            .expect("insert raw row");
    }
}

pub(crate) async fn sqlite_pool(path: &Path) -> SqlitePool {
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .expect("raw SQLite connection")
}

/// A raw connection to a new SQLite file at `path`, for a test that makes
/// its own table before the log opens it.
pub(crate) async fn new_sqlite_file(path: &Path) -> SqlitePool {
    SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true),
    )
    .await
    .expect("raw SQLite connection")
}

pub(crate) async fn sqlite(_case: &str) -> Option<Box<dyn Harness>> {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("log.db");
    let raw = new_sqlite_file(&path).await;
    raw.execute(orlando::SQLITE_DDL)
        .await
        .expect("Orlando's DDL");
    let log = Arc::new(SqliteLog::create(&path).await.expect("create SQLite log"));
    Some(Box::new(SqliteHarness {
        log,
        raw,
        _dir: dir,
    }))
}

pub(crate) struct PostgresHarness {
    log: Arc<PostgresWriter>,
    raw: PgPool,
    _schema: PgSchema,
}

#[async_trait]
impl Harness for PostgresHarness {
    fn log(&self) -> Arc<dyn LogWriter> {
        self.log.clone()
    }
    async fn reader(&self) -> Arc<dyn ReplicationLog> {
        // Through the `postgresql://` spelling of the scheme.
        let url = format!(
            "postgresql://{}",
            self._schema.url().split_once("://").unwrap().1
        );
        replication_log::open(&url)
            .await
            .expect("open the PostgreSQL log as a reader")
    }
    async fn insert_raw(&self, row: RawRow) {
        sqlx::query(orlando::POSTGRES_INSERT)
            .bind(row.grain_type)
            .bind(row.grain_key)
            .bind(row.sequence)
            .bind(row.timestamp_millis)
            .bind(row.source_cluster)
            .bind(i16::try_from(row.entry_type).expect("entry_type fits SMALLINT"))
            .bind(row.payload)
            .execute(&self.raw)
            .await
            .expect("insert raw row");
    }
}

pub(crate) async fn postgres(case: &str) -> Option<Box<dyn Harness>> {
    let schema = pg::isolated_schema(case).await?;
    let raw = PgPool::connect(schema.url())
        .await
        .expect("raw PostgreSQL pool");
    raw.execute(orlando::POSTGRES_DDL)
        .await
        .expect("Orlando's DDL");
    let log = Arc::new(
        PostgresLog::create(schema.url())
            .await
            .expect("create PostgreSQL log"),
    );
    Some(Box::new(PostgresHarness {
        log,
        raw,
        _schema: schema,
    }))
}
