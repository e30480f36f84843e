//! The log in a SQLite file, in Orlando's exact table, so the host can read
//! a database an Orlando primary writes.
//!
//! SQLite is dynamically typed: every column is read together with its
//! `typeof()` and judged by [`LooseRow`](super::record::LooseRow), so one
//! odd row is refused rather than failing the read.
//!
//! Longer than most modules: most of it is the SQL text and the loose reading
//! of each column; writes are `sqlite_writer.rs`, bulk reads
//! `sqlite_bulk.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteQueryResult, SqliteRow,
};
use sqlx::{Row, Sqlite};

use super::record::LooseColumns;
use super::sql::{Queries, Sql, SqlLog};
use super::sqlite_bulk::{BulkError, BulkReader, RowidQueries};
use super::{
    ChangeCursor, CursorState, GrainHead, HeadChanges, HeadsSnapshot, LogError, LogRecord,
    ReplicationLog, ScanPage, seq,
};

/// Orlando's table, as Orlando creates it.
pub(super) const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS replication_log (
    grain_type TEXT NOT NULL,
    grain_key TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    timestamp_millis INTEGER NOT NULL,
    source_cluster TEXT NOT NULL,
    entry_type INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (grain_type, grain_key, sequence)
)";

/// Whether Orlando's table is there.
const HAS_TABLE: &str = "SELECT 1 FROM sqlite_master
WHERE type IN ('table', 'view') AND name = 'replication_log' COLLATE NOCASE";

/// A grain's rows above a sequence: valid sequences ascending, then rows
/// whose sequence is unusable (negative or not an integer).
const READ_FROM: &str = "SELECT
    sequence, typeof(sequence) AS sequence_type,
    timestamp_millis, typeof(timestamp_millis) AS timestamp_millis_type,
    source_cluster, typeof(source_cluster) AS source_cluster_type,
    entry_type, typeof(entry_type) AS entry_type_type,
    payload, typeof(payload) AS payload_type
FROM replication_log
WHERE grain_type = ? AND grain_key = ?
  AND (sequence > ? OR sequence < 0 OR typeof(sequence) <> 'integer')
ORDER BY CASE WHEN typeof(sequence) = 'integer' AND sequence >= 0 THEN 0 ELSE 1 END, sequence
LIMIT ?";

const LATEST: &str = "SELECT sequence FROM replication_log
WHERE grain_type = ? AND grain_key = ? AND sequence >= 0 AND typeof(sequence) = 'integer'
ORDER BY sequence DESC LIMIT 1";

const TRUNCATE: &str = "DELETE FROM replication_log
WHERE grain_type = ? AND grain_key = ? AND typeof(sequence) = 'integer'
  AND sequence >= 0 AND sequence <= ?";

const GRAIN_HEADS: &str = "SELECT grain_key, MAX(sequence) AS head FROM replication_log
WHERE grain_type = ? AND typeof(grain_key) = 'text'
  AND typeof(sequence) = 'integer' AND sequence >= 0
GROUP BY grain_key ORDER BY grain_key";

/// The newest row by rowid and its identity (type, key and sequence as SQL
/// literals, whatever their storage class).
const TOP_ROW: &str = "SELECT rowid,
    quote(grain_type) || ',' || quote(grain_key) || ',' || quote(sequence)
FROM replication_log ORDER BY rowid DESC LIMIT 1";

/// The identity of the row at a rowid.
const ROW_IDENTITY: &str = "SELECT
    quote(grain_type) || ',' || quote(grain_key) || ',' || quote(sequence)
FROM replication_log WHERE rowid = ?";

/// Heads among the rows in a rowid range: a range search on the table's
/// b-tree. The unary `+` keeps the planner off the primary-key index (which
/// would scan every row of the type).
const HEADS_SINCE: &str = "SELECT grain_key, MAX(sequence) AS head FROM replication_log
WHERE rowid > ? AND rowid <= ? AND +grain_type = ? AND typeof(grain_key) = 'text'
  AND typeof(sequence) = 'integer' AND sequence >= 0
GROUP BY grain_key";

/// One page of the catch-up scan, in primary-key order: the first page, and
/// the pages after a grain key.
macro_rules! scan_query {
    ($after:literal) => {
        concat!(
            "SELECT grain_key,
    sequence, typeof(sequence) AS sequence_type,
    timestamp_millis, typeof(timestamp_millis) AS timestamp_millis_type,
    source_cluster, typeof(source_cluster) AS source_cluster_type,
    entry_type, typeof(entry_type) AS entry_type_type,
    payload, typeof(payload) AS payload_type
FROM replication_log
WHERE grain_type = ? ",
            $after,
            " AND typeof(grain_key) = 'text'
ORDER BY grain_key, sequence
LIMIT ?"
        )
    };
}
const SCAN_FIRST: &str = scan_query!("");
/// A page of newest FullState sequences in key order (index range, then
/// grouped as it streams, so the LIMIT stops the read).
macro_rules! full_state_heads_query {
    ($after:literal, $order:literal) => {
        concat!(
            "SELECT grain_key, MAX(sequence) AS head FROM replication_log
WHERE grain_type = ? ",
            $after,
            " AND typeof(grain_key) = 'text'
  AND typeof(sequence) = 'integer' AND sequence >= 0
  AND typeof(entry_type) = 'integer' AND entry_type = 0
GROUP BY grain_key",
            $order
        )
    };
}
const FULL_STATE_HEADS_FIRST: &str = full_state_heads_query!("", " ORDER BY grain_key LIMIT ?");
const FULL_STATE_HEADS_AFTER: &str =
    full_state_heads_query!("AND grain_key > ?", " ORDER BY grain_key LIMIT ?");
const FULL_STATE_HEADS_ALL: &str = full_state_heads_query!("", "");
const SCAN_AFTER: &str = scan_query!("AND grain_key > ?");

/// The distinct grain types by a loose index scan: one index probe per type
/// rather than a pass over every row. Text affinity stores every value but
/// a blob as text, and blobs sort after text.
const GRAIN_TYPES: &str = "WITH RECURSIVE t(g) AS (
    SELECT (SELECT grain_type FROM replication_log ORDER BY grain_type LIMIT 1)
    UNION ALL
    SELECT (SELECT grain_type FROM replication_log WHERE grain_type > t.g
            ORDER BY grain_type LIMIT 1)
    FROM t WHERE t.g IS NOT NULL
)
SELECT g FROM t WHERE typeof(g) = 'text'";

/// A [`ReplicationLog`] in a SQLite file (busy timeout; a reader opens it
/// read-only, a writer creates it in WAL mode).
#[derive(Debug, Clone)]
pub struct SqliteLog {
    pub(super) pool: SqlitePool,
    /// The catch-up scan and full listings, off sqlx (`sqlite_bulk.rs`).
    bulk: Arc<BulkReader>,
    path: PathBuf,
    /// Set when the table has no rowid (a `WITHOUT ROWID` table): discovery
    /// then always lists every grain.
    no_rowid: Arc<AtomicBool>,
}

impl SqliteLog {
    /// How long a call waits for a locked database before it is
    /// [`LogError::Unavailable`], unless [`SqliteLog::open_with_busy_timeout`] says otherwise.
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

    /// Opens an existing log file as a reader: read-only, creating nothing
    /// (no file, no table, no journal mode change). A missing file or table
    /// is [`LogError::Missing`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, LogError> {
        Self::open_with_busy_timeout(path, Self::DEFAULT_BUSY_TIMEOUT).await
    }

    /// Like [`SqliteLog::open`], waiting at most `busy_timeout` for locks.
    pub async fn open_with_busy_timeout(
        path: impl AsRef<Path>,
        busy_timeout: Duration,
    ) -> Result<Self, LogError> {
        let path = path.as_ref();
        let shown = format!("sqlite {}", path.display());
        Self::open_reader(path, &shown, busy_timeout).await
    }

    /// The reader's open; errors name the file as `shown` (the URL when
    /// opened through [`super::open`]).
    pub(crate) async fn open_reader(
        path: impl AsRef<Path>,
        shown: &str,
        busy_timeout: Duration,
    ) -> Result<Self, LogError> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            let what = if path.exists() {
                "not a regular file"
            } else {
                "no such file"
            };
            return Err(LogError::missing(format!("{shown}: {what}")));
        }
        // Read-only: SQLite still uses the `-wal` and `-shm` files of a WAL
        // database (creating them beside it when the last writer removed
        // them), which is how a reader sees a writer's concurrent commits.
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(busy_timeout);
        let log = Self::connect(path, options, busy_timeout).await?;
        let table: Option<i64> = sqlx::query_scalar(HAS_TABLE)
            .fetch_optional(&log.pool)
            .await
            .map_err(|e| log.error(e))?;
        if table.is_none() {
            log.close().await;
            return Err(LogError::missing(format!(
                "{shown}: the database has no table replication_log"
            )));
        }
        Ok(log)
    }

    pub(super) async fn connect(
        path: PathBuf,
        options: SqliteConnectOptions,
        busy_timeout: Duration,
    ) -> Result<Self, LogError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(busy_timeout.max(Duration::from_secs(5)))
            .connect_with(options)
            .await
            .map_err(|e| error(&path, e))?;
        Ok(Self {
            pool,
            bulk: Arc::new(BulkReader::new(&path, busy_timeout)),
            path,
            no_rowid: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection; later calls are [`LogError::Unavailable`].
    pub async fn close(&self) {
        self.bulk.close();
        self.pool.close().await;
    }
}

/// The queries of the rowid watermark (`changes_since`).
const ROWID_QUERIES: RowidQueries = RowidQueries {
    top_row: TOP_ROW,
    row_identity: ROW_IDENTITY,
    heads_since: HEADS_SINCE,
    grain_heads: GRAIN_HEADS,
};

/// Maps a bulk read's error, naming the file: locked, busy, unopenable or
/// closed is [`LogError::Unavailable`].
fn bulk_error(path: &Path, err: BulkError) -> LogError {
    let message = format!("sqlite {}: {err}", path.display());
    let unavailable =
        matches!(err, BulkError::Closed) || matches!(err.primary_code(), Some(5 | 6 | 14));
    let source = Some(Box::new(err) as super::Cause);
    if unavailable {
        LogError::Unavailable { message, source }
    } else {
        LogError::Backend { message, source }
    }
}

/// Maps a sqlx error, naming the file: locked, busy or unopenable is
/// [`LogError::Unavailable`].
fn error(path: &Path, err: sqlx::Error) -> LogError {
    let message = format!("sqlite {}: {err}", path.display());
    let unavailable = match &err {
        sqlx::Error::Database(db) => {
            // Extended result codes; the low byte is the primary code:
            // SQLITE_BUSY 5, SQLITE_LOCKED 6, SQLITE_CANTOPEN 14.
            let primary = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff);
            matches!(primary, Some(5 | 6 | 14))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    };
    LogError::from_driver(unavailable, message, err)
}

/// One column read loosely: its value if its storage class is `expected`.
fn column<'r, T>(row: &'r SqliteRow, name: &str, expected: &str) -> Result<T, String>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    let found: String = row
        .try_get(format!("{name}_type").as_str())
        .map_err(|e| e.to_string())?;
    if found != expected {
        return Err(format!(
            "expected {}, found {}",
            expected.to_uppercase(),
            found.to_uppercase()
        ));
    }
    row.try_get(name).map_err(|e| e.to_string())
}

/// Each column checked against its storage class, which the queries select
/// beside it as `{column}_type`.
impl LooseColumns for SqliteRow {
    fn integer(&self, name: &str) -> Result<i64, String> {
        column(self, name, "integer")
    }

    fn text(&self, name: &str) -> Result<String, String> {
        column(self, name, "text")
    }

    fn blob(&self, name: &str) -> Result<Vec<u8>, String> {
        column(self, name, "blob")
    }
}

impl SqlLog for SqliteLog {
    type Db = Sqlite;
    const QUERIES: Queries = Queries {
        read_from: READ_FROM,
        truncate: TRUNCATE,
        grain_heads: GRAIN_HEADS,
        grain_types: GRAIN_TYPES,
        scan_first: SCAN_FIRST,
        scan_after: SCAN_AFTER,
        full_state_heads_first: FULL_STATE_HEADS_FIRST,
        full_state_heads_after: FULL_STATE_HEADS_AFTER,
        full_state_heads_all: FULL_STATE_HEADS_ALL,
        // A deferred transaction: its first read fixes the WAL snapshot
        // every later read of it sees.
        snapshot_begin: "BEGIN",
    };

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn error(&self, err: sqlx::Error) -> LogError {
        error(&self.path, err)
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// The grain's newest valid sequence (0 when none), through `executor`.
pub(super) async fn latest<'e, E>(
    executor: E,
    grain_type: &str,
    grain_key: &str,
) -> Result<u64, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let newest: Option<i64> = sqlx::query_scalar(LATEST)
        .bind(grain_type)
        .bind(grain_key)
        .fetch_optional(executor)
        .await?;
    Ok(newest.and_then(seq::from_stored).unwrap_or(0))
}

#[async_trait]
impl ReplicationLog for SqliteLog {
    async fn read_from(
        &self,
        grain_type: &str,
        grain_key: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        Sql(self)
            .read_from(grain_type, grain_key, after, limit)
            .await
    }

    async fn latest_sequence(&self, grain_type: &str, grain_key: &str) -> Result<u64, LogError> {
        latest(&self.pool, grain_type, grain_key)
            .await
            .map_err(|e| self.error(e))
    }

    async fn grain_heads(&self, grain_type: &str) -> Result<Vec<GrainHead>, LogError> {
        self.bulk
            .grain_heads(GRAIN_HEADS, grain_type)
            .await
            .map_err(|e| bulk_error(&self.path, e))
    }

    async fn changes_since(
        &self,
        grain_type: &str,
        cursor: Option<&ChangeCursor>,
    ) -> Result<HeadChanges, LogError> {
        let full = || async { Ok(HeadChanges::listing(self.grain_heads(grain_type).await?)) };
        if self.no_rowid.load(Ordering::Relaxed) {
            return full().await;
        }
        let cursor = match cursor {
            Some(ChangeCursor(CursorState::Rowid { rowid, identity })) => {
                Some((*rowid, identity.clone()))
            }
            _ => None,
        };
        match self
            .bulk
            .changes_by_rowid(ROWID_QUERIES, grain_type, cursor)
            .await
        {
            Ok((changes, stale)) => {
                if stale {
                    tracing::debug!(
                        path = %self.path.display(),
                        grain_type,
                        "rowid watermark no longer valid (rows deleted or renumbered); listing every grain"
                    );
                }
                Ok(changes)
            }
            Err(e)
                if e.message()
                    .is_some_and(|m| m.contains("no such column: rowid")) =>
            {
                tracing::info!(
                    path = %self.path.display(),
                    "the log table has no rowid; discovery lists every grain each poll"
                );
                self.no_rowid.store(true, Ordering::Relaxed);
                full().await
            }
            Err(e) => Err(bulk_error(&self.path, e)),
        }
    }

    async fn change_cursor(&self, _grain_type: &str) -> Result<Option<ChangeCursor>, LogError> {
        if self.no_rowid.load(Ordering::Relaxed) {
            return Ok(None);
        }
        self.bulk
            .change_cursor(TOP_ROW)
            .await
            .map_err(|e| bulk_error(&self.path, e))
    }

    async fn grain_types(&self) -> Result<Vec<String>, LogError> {
        Sql(self).grain_types().await
    }

    async fn ping(&self) -> Result<(), LogError> {
        Sql(self).ping().await
    }

    async fn scan(
        &self,
        grain_type: &str,
        after: Option<&str>,
        max_rows: usize,
    ) -> Result<Option<ScanPage>, LogError> {
        self.bulk
            .scan(grain_type, after, max_rows)
            .await
            .map(Some)
            .map_err(|e| bulk_error(&self.path, e))
    }

    async fn full_state_heads(
        &self,
        grain_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<GrainHead>>, LogError> {
        Sql(self).full_state_heads(grain_type, after, limit).await
    }

    async fn heads_snapshot(&self, only: Option<&str>) -> Result<Option<HeadsSnapshot>, LogError> {
        Sql(self).heads_snapshot(only).await
    }
}
