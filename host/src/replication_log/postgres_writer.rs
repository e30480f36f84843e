//! Writing the PostgreSQL log: [`PostgresWriter`], what
//! [`PostgresLog::create`] returns, appends and truncates as an Orlando
//! primary does, and reads through the [`PostgresLog`] it wraps.

use std::time::Duration;

use async_trait::async_trait;

use super::pg_driver::has_code;
use super::postgres::{CREATE_TABLE, LATEST, PROBE, PostgresLog};
use super::sql::{Sql, SqlLog};
use super::{ForwardLog, LogEntry, LogError, LogWriter, ReplicationLog, seq};

/// How many times an append is retried after a serialization failure.
const APPEND_RETRIES: u32 = 12;

const INSERT: &str = "INSERT INTO replication_log
    (grain_type, grain_key, sequence, timestamp_millis, source_cluster, entry_type, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

impl PostgresLog {
    /// Connects as a writer and creates Orlando's table when missing. For
    /// the demo, benchmarks and tests that stand in for an Orlando primary.
    pub async fn create(url: &str) -> Result<PostgresWriter, LogError> {
        Self::create_with_timeout(url, Self::DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// Like [`PostgresLog::create`], giving up on a connection after
    /// `acquire_timeout` (here and in every later call).
    pub async fn create_with_timeout(
        url: &str,
        acquire_timeout: Duration,
    ) -> Result<PostgresWriter, LogError> {
        let (log, _) = Self::open_pool(url, None, acquire_timeout, false).await?;
        if let Err(e) = sqlx::query(CREATE_TABLE).execute(&log.pool).await {
            // Two processes creating the table at once: one loses the race
            // on the catalog. A writer without CREATE rights is fine too, as
            // long as the table is there.
            let raced = has_code(&e, &["23505", "42P07"]);
            if !raced && sqlx::query(PROBE).execute(&log.pool).await.is_err() {
                return Err(log.error(e));
            }
        }
        log.detect_change_feed().await?;
        Ok(PostgresWriter(log))
    }
}

/// A PostgreSQL log opened to be written (see [`PostgresLog::create`]):
/// read-write sessions. It reads as the [`PostgresLog`] it derefs to.
#[derive(Debug, Clone)]
pub struct PostgresWriter(pub(super) PostgresLog);

impl std::ops::Deref for PostgresWriter {
    type Target = PostgresLog;

    fn deref(&self) -> &PostgresLog {
        &self.0
    }
}

impl ForwardLog for PostgresWriter {
    fn inner(&self) -> &dyn ReplicationLog {
        &self.0
    }
}

impl PostgresWriter {
    /// One attempt at an append in a serializable transaction: `Ok(None)`
    /// when stored, `Ok(Some(latest))` on a sequence conflict.
    async fn try_append(&self, entry: &LogEntry, stored: i64) -> Result<Option<u64>, sqlx::Error> {
        let mut tx = self.0.pool.begin().await?;
        // Serializable: two appends to one grain cannot both pass the check.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            .execute(&mut *tx)
            .await?;
        let newest: Option<i64> = sqlx::query_scalar(LATEST)
            .bind(&entry.grain_type)
            .bind(&entry.grain_key)
            .fetch_one(&mut *tx)
            .await?;
        let newest = newest.and_then(seq::from_stored).unwrap_or(0);
        if entry.sequence <= newest {
            let _ = tx.rollback().await;
            return Ok(Some(newest));
        }
        let entry_type = i16::try_from(entry.entry_type.code()).unwrap_or(i16::MAX);
        sqlx::query(INSERT)
            .bind(&entry.grain_type)
            .bind(&entry.grain_key)
            .bind(stored)
            .bind(entry.timestamp_millis)
            .bind(&entry.source_cluster)
            .bind(entry_type)
            .bind(entry.payload.as_ref())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(None)
    }
}

#[async_trait]
impl LogWriter for PostgresWriter {
    async fn append(&self, entry: &LogEntry) -> Result<u64, LogError> {
        let stored = seq::to_stored(entry.sequence)?;
        let conflict = |latest| LogError::SequenceConflict {
            grain_type: entry.grain_type.clone(),
            grain_key: entry.grain_key.clone(),
            sequence: entry.sequence,
            latest,
        };
        let mut attempt = 0;
        loop {
            match self.try_append(entry, stored).await {
                Ok(None) => return Ok(entry.sequence),
                Ok(Some(latest)) => return Err(conflict(latest)),
                // A concurrent append of the same sequence committed first.
                Err(e) if has_code(&e, &["23505"]) => {
                    let latest = self
                        .0
                        .latest_sequence(&entry.grain_type, &entry.grain_key)
                        .await
                        .unwrap_or(entry.sequence);
                    return Err(conflict(latest.max(entry.sequence)));
                }
                // Another transaction got in the way: check again.
                Err(e) if has_code(&e, &["40001", "40P01"]) && attempt < APPEND_RETRIES => {
                    attempt += 1;
                    // Full jitter: racing writers do not collide again in step.
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(
                        1..=1 << attempt.min(6),
                    )))
                    .await;
                }
                Err(e) => return Err(self.0.error(e)),
            }
        }
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
