//! What the SQLite and PostgreSQL backends do alike: the calls whose steps
//! are the same in both (bind, run, map the error, read the rows), written
//! once over sqlx's generic [`Database`]. Each backend keeps its own SQL
//! (handed over as [`Queries`]), its error mapping and how it reads a column
//! ([`LooseColumns`]).

use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Row, Type,
};

use super::record::{LooseColumns, LooseRow};
use super::{GrainHead, HeadsSnapshot, LogError, LogRecord, ScanPage, scan, seq};

/// A backend's SQL for the shared calls, each binding its parameters in the
/// order given.
pub(super) struct Queries {
    /// A grain's rows above a sequence, [`super::ReplicationLog::read_from`]
    /// order: grain type, grain key, `after` bound, limit.
    pub read_from: &'static str,
    /// Deletes a grain's valid rows up to a sequence: grain type, grain key,
    /// last sequence deleted.
    pub truncate: &'static str,
    /// `(grain_key, MAX(sequence))` over a type's valid rows: grain type.
    pub grain_heads: &'static str,
    /// The distinct grain types (text only).
    pub grain_types: &'static str,
    /// The scan's first page: grain type, limit.
    pub scan_first: &'static str,
    /// A scan page after a grain key: grain type, key, limit.
    pub scan_after: &'static str,
    /// `(grain_key, MAX(sequence))` over a type's valid FullState rows, in
    /// key order, first page: grain type, limit.
    pub full_state_heads_first: &'static str,
    /// The same after a grain key: grain type, key, limit.
    pub full_state_heads_after: &'static str,
    /// `(grain_key, MAX(sequence))` over a type's valid FullState rows, in
    /// no particular order: grain type.
    pub full_state_heads_all: &'static str,
    /// Starts the read-only transaction of [`super::HeadsSnapshot`]: one
    /// snapshot of the whole log for every statement that follows.
    pub snapshot_begin: &'static str,
}

/// A SQL backend, as the shared calls see it.
pub(super) trait SqlLog: Sync {
    /// The sqlx driver.
    type Db: Database;
    /// The backend's SQL for the shared calls.
    const QUERIES: Queries;
    /// The connection pool.
    fn pool(&self) -> &Pool<Self::Db>;
    /// A driver error as a [`LogError`] naming the file or server.
    fn error(&self, err: sqlx::Error) -> LogError;
    /// How many rows a statement changed.
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;
}

/// The shared calls on one backend: `Sql(log).truncate(...)`.
pub(super) struct Sql<'a, L>(pub(super) &'a L);

impl<L, DB> Sql<'_, L>
where
    L: SqlLog<Db = DB>,
    DB: Database,
    DB::Row: LooseColumns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB> + Send,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    /// [`super::ReplicationLog::read_from`].
    pub(super) async fn read_from(
        self,
        grain_type: &str,
        grain_key: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        let rows = sqlx::query(L::QUERIES.read_from)
            .bind(grain_type)
            .bind(grain_key)
            .bind(seq::after_bound(after))
            .bind(seq::limit_bound(limit))
            .fetch_all(self.0.pool())
            .await
            .map_err(|e| self.0.error(e))?;
        Ok(rows
            .iter()
            .map(|row| LooseRow::read(grain_type, grain_key, row).interpret())
            .collect())
    }

    /// [`super::ReplicationLog::truncate`].
    pub(super) async fn truncate(
        self,
        grain_type: &str,
        grain_key: &str,
        before: u64,
    ) -> Result<u64, LogError> {
        let Some(last) = seq::last_below(before) else {
            return Ok(0);
        };
        let done = sqlx::query(L::QUERIES.truncate)
            .bind(grain_type)
            .bind(grain_key)
            .bind(last)
            .execute(self.0.pool())
            .await
            .map_err(|e| self.0.error(e))?;
        Ok(L::rows_affected(&done))
    }

    /// [`super::ReplicationLog::grain_heads`].
    pub(super) async fn grain_heads(self, grain_type: &str) -> Result<Vec<GrainHead>, LogError> {
        let heads: Vec<(String, i64)> = sqlx::query_as(L::QUERIES.grain_heads)
            .bind(grain_type)
            .fetch_all(self.0.pool())
            .await
            .map_err(|e| self.0.error(e))?;
        Ok(seq::to_heads(heads))
    }

    /// [`super::ReplicationLog::grain_types`].
    pub(super) async fn grain_types(self) -> Result<Vec<String>, LogError> {
        sqlx::query_scalar(L::QUERIES.grain_types)
            .fetch_all(self.0.pool())
            .await
            .map_err(|e| self.0.error(e))
    }

    /// [`super::ReplicationLog::ping`].
    pub(super) async fn ping(self) -> Result<(), LogError> {
        sqlx::query("SELECT 1")
            .execute(self.0.pool())
            .await
            .map(drop)
            .map_err(|e| self.0.error(e))
    }

    /// [`super::ReplicationLog::scan`]; the queries select `grain_key` as
    /// well as the row's columns.
    pub(super) async fn scan(
        self,
        grain_type: &str,
        after: Option<&str>,
        max_rows: usize,
    ) -> Result<Option<ScanPage>, LogError> {
        let max_rows = max_rows.max(1);
        let query = match after {
            Some(key) => sqlx::query(L::QUERIES.scan_after)
                .bind(grain_type)
                .bind(key),
            None => sqlx::query(L::QUERIES.scan_first).bind(grain_type),
        };
        // One row more than a page: whether the last grain may go on.
        let rows = query
            .bind(seq::limit_bound(max_rows.saturating_add(1)))
            .fetch_all(self.0.pool())
            .await
            .map_err(|e| self.0.error(e))?;
        Ok(Some(scan::page(&rows, max_rows, |row| {
            let grain_key: String = row.try_get("grain_key").unwrap_or_default();
            let record = LooseRow::read(grain_type, &grain_key, row).interpret();
            (grain_key, record)
        })))
    }

    /// [`super::ReplicationLog::full_state_heads`].
    pub(super) async fn full_state_heads(
        self,
        grain_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<GrainHead>>, LogError> {
        let query = match after {
            Some(key) => sqlx::query_as(L::QUERIES.full_state_heads_after)
                .bind(grain_type)
                .bind(key),
            None => sqlx::query_as(L::QUERIES.full_state_heads_first).bind(grain_type),
        };
        let heads: Vec<(String, i64)> = query
            .bind(seq::limit_bound(limit.max(1)))
            .fetch_all(self.0.pool())
            .await
            .map_err(|e| self.0.error(e))?;
        Ok(Some(seq::to_heads(heads)))
    }

    /// [`super::ReplicationLog::heads_snapshot`]: one read-only
    /// transaction, so every grain type is read as of one instant.
    pub(super) async fn heads_snapshot(
        self,
        only: Option<&str>,
    ) -> Result<Option<HeadsSnapshot>, LogError> {
        let mut tx = self
            .0
            .pool()
            .begin_with(L::QUERIES.snapshot_begin)
            .await
            .map_err(|e| self.0.error(e))?;
        let grain_types: Vec<String> = match only {
            Some(grain_type) => vec![grain_type.to_owned()],
            None => sqlx::query_scalar(L::QUERIES.grain_types)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.0.error(e))?,
        };
        let mut snapshot = HeadsSnapshot::default();
        for grain_type in grain_types {
            let heads: Vec<(String, i64)> = sqlx::query_as(L::QUERIES.full_state_heads_all)
                .bind(grain_type.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.0.error(e))?;
            snapshot
                .grain_types
                .push((grain_type, seq::to_heads(heads)));
        }
        // Read-only: nothing to commit; ending it releases the snapshot.
        tx.rollback().await.map_err(|e| self.0.error(e))?;
        Ok(Some(snapshot))
    }
}
