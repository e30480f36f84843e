//! Writing the SQLite log: [`SqliteWriter`], what [`SqliteLog::create`]
//! returns, appends and truncates as an Orlando primary does, and reads
//! through the [`SqliteLog`] it wraps.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::sql::{Sql, SqlLog};
use super::sqlite::{CREATE_TABLE, SqliteLog, latest};
use super::{ForwardLog, LogEntry, LogError, LogWriter, ReplicationLog, seq};

const INSERT: &str = "INSERT INTO replication_log
    (grain_type, grain_key, sequence, timestamp_millis, source_cluster, entry_type, payload)
VALUES (?, ?, ?, ?, ?, ?, ?)";

impl SqliteLog {
    /// Opens the log as a writer: creates the file (in WAL mode) and
    /// Orlando's table when missing. For the demo, benchmarks and tests.
    pub async fn create(path: impl AsRef<Path>) -> Result<SqliteWriter, LogError> {
        Self::create_with_busy_timeout(path, Self::DEFAULT_BUSY_TIMEOUT).await
    }

    /// Like [`SqliteLog::create`], waiting at most `busy_timeout` for locks.
    pub async fn create_with_busy_timeout(
        path: impl AsRef<Path>,
        busy_timeout: Duration,
    ) -> Result<SqliteWriter, LogError> {
        let path = path.as_ref().to_path_buf();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout);
        let log = Self::connect(path, options, busy_timeout).await?;
        sqlx::query(CREATE_TABLE)
            .execute(&log.pool)
            .await
            .map_err(|e| log.error(e))?;
        Ok(SqliteWriter(log))
    }
}

/// A SQLite log opened to be written (see [`SqliteLog::create`]). It reads
/// as the [`SqliteLog`] it derefs to.
#[derive(Debug, Clone)]
pub struct SqliteWriter(pub(super) SqliteLog);

impl std::ops::Deref for SqliteWriter {
    type Target = SqliteLog;

    fn deref(&self) -> &SqliteLog {
        &self.0
    }
}

impl ForwardLog for SqliteWriter {
    fn inner(&self) -> &dyn ReplicationLog {
        &self.0
    }
}

#[async_trait]
impl LogWriter for SqliteWriter {
    async fn append(&self, entry: &LogEntry) -> Result<u64, LogError> {
        let stored = seq::to_stored(entry.sequence)?;
        let conflict = |latest| LogError::SequenceConflict {
            grain_type: entry.grain_type.clone(),
            grain_key: entry.grain_key.clone(),
            sequence: entry.sequence,
            latest,
        };
        // IMMEDIATE takes the write lock first, so the check and the insert
        // cannot interleave with another writer's.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.0.error(e))?;
        let newest = latest(&mut *tx, &entry.grain_type, &entry.grain_key)
            .await
            .map_err(|e| self.0.error(e))?;
        if entry.sequence <= newest {
            let _ = tx.rollback().await;
            return Err(conflict(newest));
        }
        let inserted = sqlx::query(INSERT)
            .bind(&entry.grain_type)
            .bind(&entry.grain_key)
            .bind(stored)
            .bind(entry.timestamp_millis)
            .bind(&entry.source_cluster)
            .bind(entry.entry_type.code())
            .bind(entry.payload.as_ref())
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                let _ = tx.rollback().await;
                return Err(conflict(newest.max(entry.sequence)));
            }
            Err(e) => return Err(self.0.error(e)),
        }
        tx.commit().await.map_err(|e| self.0.error(e))?;
        Ok(entry.sequence)
    }

    async fn truncate(
        &self,
        grain_type: &str,
        grain_key: &str,
        before: u64,
    ) -> Result<u64, LogError> {
        Sql(&self.0).truncate(grain_type, grain_key, before).await
    }
}
