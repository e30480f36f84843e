//! The log in PostgreSQL (or anything speaking its protocol), in Orlando's
//! table. Only plain SQL: no LISTEN/NOTIFY, no advisory locks.
//!
//! The pool tests each connection before handing it out, so a connection
//! the server dropped is replaced on the next call.
//!
//! A reader ([`PostgresLog::connect`]) runs read-only sessions
//! (`default_transaction_read_only=on`) and no DDL; a writer
//! ([`PostgresLog::create`]) creates Orlando's table when missing. Both
//! detect the change feed column (see [`super::pg_change_feed`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};

use super::pg_driver::{GRAIN_HEADS, error, has_code};
use super::sql::{Queries, Sql, SqlLog};
use super::{
    ChangeCursor, CursorState, GrainHead, HeadChanges, HeadsSnapshot, LogError, LogRecord,
    ReplicationLog, ScanPage, pg_change_feed, pg_connect, redact_password, seq,
};
use crate::secret::Secret;

/// Orlando's table, as Orlando creates it.
pub(super) const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS replication_log (
    grain_type TEXT NOT NULL,
    grain_key TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    timestamp_millis BIGINT NOT NULL,
    source_cluster TEXT NOT NULL,
    entry_type SMALLINT NOT NULL,
    payload BYTEA NOT NULL,
    PRIMARY KEY (grain_type, grain_key, sequence)
)";

/// Whether the table is there and readable.
pub(super) const PROBE: &str = "SELECT 1 FROM replication_log LIMIT 1";

/// Whether the table is there (on the search path), without touching it.
const HAS_TABLE: &str = "SELECT to_regclass('replication_log') IS NOT NULL";

/// A grain's rows above a sequence: valid sequences ascending, then the
/// negative ones.
const READ_FROM: &str = "SELECT sequence, timestamp_millis, source_cluster, entry_type, payload
FROM replication_log
WHERE grain_type = $1 AND grain_key = $2 AND (sequence > $3 OR sequence < 0)
ORDER BY CASE WHEN sequence < 0 THEN 1 ELSE 0 END, sequence
LIMIT $4";

pub(super) const LATEST: &str = "SELECT MAX(sequence) FROM replication_log
WHERE grain_type = $1 AND grain_key = $2 AND sequence >= 0";

const TRUNCATE: &str = "DELETE FROM replication_log
WHERE grain_type = $1 AND grain_key = $2 AND sequence >= 0 AND sequence <= $3";

/// One page of the catch-up scan, in primary-key order: the first page, and
/// the pages after a grain key.
const SCAN_FIRST: &str =
    "SELECT grain_key, sequence, timestamp_millis, source_cluster, entry_type, payload
FROM replication_log
WHERE grain_type = $1
ORDER BY grain_key, sequence
LIMIT $2";
const SCAN_AFTER: &str =
    "SELECT grain_key, sequence, timestamp_millis, source_cluster, entry_type, payload
FROM replication_log
WHERE grain_type = $1 AND grain_key > $2
ORDER BY grain_key, sequence
LIMIT $3";

/// The distinct grain types by a loose index scan: one index probe per type
/// rather than a pass over every row.
/// Newest FullState sequence per grain, a page in key order: the first
/// page, the pages after a key, and the whole type (unordered).
const FULL_STATE_HEADS_FIRST: &str = "SELECT grain_key, MAX(sequence) FROM replication_log
WHERE grain_type = $1 AND sequence >= 0 AND entry_type = 0
GROUP BY grain_key ORDER BY grain_key LIMIT $2";
const FULL_STATE_HEADS_AFTER: &str = "SELECT grain_key, MAX(sequence) FROM replication_log
WHERE grain_type = $1 AND grain_key > $2 AND sequence >= 0 AND entry_type = 0
GROUP BY grain_key ORDER BY grain_key LIMIT $3";
const FULL_STATE_HEADS_ALL: &str = "SELECT grain_key, MAX(sequence) FROM replication_log
WHERE grain_type = $1 AND sequence >= 0 AND entry_type = 0
GROUP BY grain_key";

const GRAIN_TYPES: &str = "WITH RECURSIVE t(g) AS (
    (SELECT grain_type FROM replication_log ORDER BY grain_type LIMIT 1)
    UNION ALL
    SELECT (SELECT grain_type FROM replication_log WHERE grain_type > t.g
            ORDER BY grain_type LIMIT 1)
    FROM t WHERE t.g IS NOT NULL
)
SELECT g FROM t WHERE g IS NOT NULL";

/// A [`ReplicationLog`] in PostgreSQL, through a self-healing pool.
#[derive(Debug, Clone)]
pub struct PostgresLog {
    pub(super) pool: PgPool,
    /// The URL without its password, for error messages.
    url: String,
    /// Whether the table has the change feed column `replica_tx`.
    change_feed: Arc<AtomicBool>,
}

impl PostgresLog {
    /// How long a call waits for a connection before it is
    /// [`LogError::Unavailable`], unless [`PostgresLog::connect_with_timeout`] says otherwise.
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

    /// Connects as a reader: read-only sessions, no DDL. A database that
    /// does not exist, or one without Orlando's table, is
    /// [`LogError::Missing`].
    pub async fn connect(url: &str) -> Result<Self, LogError> {
        Self::connect_with_timeout(url, Self::DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// Like [`PostgresLog::connect`], giving up on a connection after
    /// `acquire_timeout` (here and in every later call).
    pub async fn connect_with_timeout(
        url: &str,
        acquire_timeout: Duration,
    ) -> Result<Self, LogError> {
        Self::connect_with(url, None, acquire_timeout).await
    }

    /// Like [`PostgresLog::connect_with_timeout`], with the password kept
    /// out of the URL (`[log] password_file`); without one, a password in
    /// the URL or `PGPASSWORD` applies. The URL's `sslmode`, `sslrootcert`,
    /// `sslcert` and `sslkey` choose TLS (see [`super::pg_connect`]); a
    /// refused handshake is [`LogError::Unavailable`] naming the URL and
    /// the TLS reason.
    pub async fn connect_with(
        url: &str,
        password: Option<&Secret>,
        acquire_timeout: Duration,
    ) -> Result<Self, LogError> {
        let (log, options) = Self::open_pool(url, password, acquire_timeout, true).await?;
        let has_table: bool = sqlx::query_scalar(HAS_TABLE)
            .fetch_one(&log.pool)
            .await
            .map_err(|e| log.error(e))?;
        if !has_table {
            log.close().await;
            return Err(LogError::missing(format!(
                "{}: the database has no table replication_log",
                log.url
            )));
        }
        sqlx::query(PROBE)
            .execute(&log.pool)
            .await
            .map_err(|e| log.error(e))?;
        log.detect_change_feed().await?;
        log.report_transport(&options).await;
        if log.change_feed_enabled() {
            tracing::info!(url = %log.url, "PostgreSQL discovery: change feed (replica_tx)");
        } else {
            tracing::info!(
                url = %log.url,
                "PostgreSQL discovery: full listing each poll; run replica-host log \
                 enable-change-feed to make idle polls cheap"
            );
        }
        Ok(log)
    }

    /// Whether discovery uses the change feed (the table has the
    /// `replica_tx` column, see `replica-host log enable-change-feed`) rather
    /// than listing every grain each poll. Detected when the log is opened.
    pub fn change_feed_enabled(&self) -> bool {
        self.change_feed.load(Ordering::Relaxed)
    }

    pub(super) async fn open_pool(
        url: &str,
        password: Option<&Secret>,
        acquire_timeout: Duration,
        read_only: bool,
    ) -> Result<(Self, PgConnectOptions), LogError> {
        let shown = redact_password(url);
        let mut options = pg_connect::options(url, &shown, password)?;
        if read_only {
            options = options.options([("default_transaction_read_only", "on")]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .min_connections(0)
            .acquire_timeout(acquire_timeout)
            .test_before_acquire(true)
            .connect_with(options.clone())
            .await
            .map_err(|e| error(&shown, e))?;
        let log = Self {
            pool,
            url: shown,
            change_feed: Arc::new(AtomicBool::new(false)),
        };
        Ok((log, options))
    }

    /// Logs whether the connection is encrypted and what was verified;
    /// warns when a plaintext connection leaves the host.
    async fn report_transport(&self, options: &PgConnectOptions) {
        let transport = pg_connect::describe_transport(&self.pool, options).await;
        let sslmode = pg_connect::sslmode_name(options);
        if transport == "plaintext" && pg_connect::leaves_the_host(options) {
            tracing::warn!(
                url = %self.url,
                sslmode,
                "the log connection is not encrypted; add sslmode=verify-full (and sslrootcert) to log.url"
            );
        } else {
            tracing::info!(url = %self.url, sslmode, transport = %transport, "PostgreSQL connection");
        }
    }

    pub(super) async fn detect_change_feed(&self) -> Result<(), LogError> {
        let enabled = pg_change_feed::has_column(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        self.change_feed.store(enabled, Ordering::Relaxed);
        Ok(())
    }

    /// Closes every connection; later calls are [`LogError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl SqlLog for PostgresLog {
    type Db = Postgres;
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
        // One snapshot for the whole transaction (READ COMMITTED would take
        // one per statement).
        snapshot_begin: "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    };

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn error(&self, err: sqlx::Error) -> LogError {
        error(&self.url, err)
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

#[async_trait]
impl ReplicationLog for PostgresLog {
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
        let newest: Option<i64> = sqlx::query_scalar(LATEST)
            .bind(grain_type)
            .bind(grain_key)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(newest.and_then(seq::from_stored).unwrap_or(0))
    }

    async fn grain_heads(&self, grain_type: &str) -> Result<Vec<GrainHead>, LogError> {
        Sql(self).grain_heads(grain_type).await
    }

    async fn changes_since(
        &self,
        grain_type: &str,
        cursor: Option<&ChangeCursor>,
    ) -> Result<HeadChanges, LogError> {
        if self.change_feed_enabled() {
            let since = match cursor {
                Some(ChangeCursor(CursorState::Xid8(xid))) => Some(*xid),
                _ => None,
            };
            match pg_change_feed::changes_since(&self.pool, grain_type, since).await {
                Ok(changes) => return Ok(changes),
                // The column was dropped since the log was opened.
                Err(e) if has_code(&e, &["42703"]) => {
                    tracing::info!(
                        url = %self.url,
                        "the change feed column replica_tx is gone; listing every grain each poll"
                    );
                    self.change_feed.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(self.error(e)),
            }
        }
        Ok(HeadChanges::listing(self.grain_heads(grain_type).await?))
    }

    async fn change_cursor(&self, _grain_type: &str) -> Result<Option<ChangeCursor>, LogError> {
        if !self.change_feed_enabled() {
            return Ok(None);
        }
        match pg_change_feed::cursor_now(&self.pool).await {
            Ok(cursor) => Ok(Some(cursor)),
            // Without the feed's column the caller lists everything.
            Err(e) if has_code(&e, &["42703"]) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
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
        Sql(self).scan(grain_type, after, max_rows).await
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
