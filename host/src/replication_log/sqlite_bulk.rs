//! The SQLite log's bulk reads: the catch-up scan and the listing of every
//! grain's head, through rusqlite on the blocking pool.
//!
//! Through sqlx each row is copied value by value and sent from its driver
//! thread to the task that awaits it, which costs about 10 µs a row on
//! this project's 2-core machines: a million-row scan took ~10 s, the
//! listing of a million heads ~3 s. Here a row is one `sqlite3_step` and
//! the columns are read in place, on the thread that runs the query
//! (BENCHMARKS.md has the figures). Small reads (one grain, an append)
//! stay on sqlx.
//!
//! Each read runs on a read-only connection of a small pool of its own, in
//! one read transaction where it makes several queries, so it sees one
//! snapshot of the table, as the sqlx reads do.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::record::LooseRow;
use super::{ChangeCursor, CursorState, GrainHead, HeadChanges, ScanPage, scan, seq};

/// Idle connections kept for the next read.
const IDLE: usize = 4;

/// Why a bulk read failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum BulkError {
    /// SQLite's error.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// The blocking task did not finish (a panic).
    #[error("the read task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl BulkError {
    /// SQLite's primary result code, if SQLite failed.
    pub(super) fn primary_code(&self) -> Option<i32> {
        match self {
            BulkError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => Some(e.extended_code & 0xff),
            _ => None,
        }
    }

    /// SQLite's message, if SQLite failed with one.
    pub(super) fn message(&self) -> Option<&str> {
        match self {
            BulkError::Sqlite(rusqlite::Error::SqliteFailure(_, Some(message))) => Some(message),
            _ => None,
        }
    }
}

/// The bulk reads of one log file.
#[derive(Debug)]
pub(super) struct BulkReader {
    /// The database file.
    path: PathBuf,
    /// How long a read waits for a lock before SQLite fails it.
    busy_timeout: Duration,
    /// Connections between reads.
    idle: Mutex<Vec<Connection>>,
    /// Set by [`BulkReader::close`]: no read starts after.
    closed: AtomicBool,
}

impl BulkReader {
    /// Bulk reads of the file at `path`.
    pub(super) fn new(path: &Path, busy_timeout: Duration) -> Self {
        Self {
            path: path.to_path_buf(),
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Closes the idle connections; later reads fail.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Runs `read` on a connection on the blocking pool. A connection that
    /// failed a read is dropped, not reused.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BulkError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            if this.closed.load(Ordering::Relaxed) {
                return Err(BulkError::Closed);
            }
            let idle = this
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => this.connect()?,
            };
            let result = read(&mut conn)?;
            let mut idle = this.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < IDLE && !this.closed.load(Ordering::Relaxed) {
                idle.push(conn);
            }
            Ok(result)
        })
        .await?
    }

    /// A read-only connection: SQLite still uses the `-wal` and `-shm`
    /// files, so it sees a writer's commits.
    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        Ok(conn)
    }

    /// One page of the catch-up scan (see [`scan`]).
    pub(super) async fn scan(
        self: &Arc<Self>,
        grain_type: &str,
        after: Option<&str>,
        max_rows: usize,
    ) -> Result<ScanPage, BulkError> {
        let grain_type = grain_type.to_owned();
        let after = after.map(str::to_owned);
        let max_rows = max_rows.max(1);
        self.run(move |conn| {
            // One row more than a page: whether the last grain may go on.
            let limit = seq::limit_bound(max_rows.saturating_add(1));
            let mut rows = Vec::with_capacity(max_rows.saturating_add(1).min(1 << 16));
            let mut read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<()> {
                let grain_key = text_lossy(row.get_ref(0)?);
                let loose = LooseRow {
                    grain_type: grain_type.clone(),
                    grain_key: grain_key.clone(),
                    sequence: integer(row.get_ref(1)?),
                    timestamp_millis: integer(row.get_ref(2)?),
                    source_cluster: text(row.get_ref(3)?),
                    entry_type: integer(row.get_ref(4)?),
                    payload: blob(row.get_ref(5)?).map(bytes::Bytes::from),
                };
                rows.push((grain_key, loose.interpret()));
                Ok(())
            };
            match &after {
                Some(key) => {
                    let mut statement = conn.prepare(SCAN_AFTER)?;
                    let mut found = statement.query(rusqlite::params![grain_type, key, limit])?;
                    while let Some(row) = found.next()? {
                        read(row)?;
                    }
                }
                None => {
                    let mut statement = conn.prepare(SCAN_FIRST)?;
                    let mut found = statement.query(rusqlite::params![grain_type, limit])?;
                    while let Some(row) = found.next()? {
                        read(row)?;
                    }
                }
            }
            let full = rows.len() > max_rows;
            Ok(scan::group(rows, full))
        })
        .await
    }

    /// Every grain's head (`grain_heads`, a query selecting
    /// `(grain_key, MAX(sequence))` for one grain type).
    pub(super) async fn grain_heads(
        self: &Arc<Self>,
        grain_heads: &'static str,
        grain_type: &str,
    ) -> Result<Vec<GrainHead>, BulkError> {
        let grain_type = grain_type.to_owned();
        self.run(move |conn| heads(conn, grain_heads, &grain_type, &[]))
            .await
    }

    /// The cursor of a listing that has seen every row so far, without
    /// listing (see [`top_cursor`]).
    pub(super) async fn change_cursor(
        self: &Arc<Self>,
        top_row: &'static str,
    ) -> Result<Option<ChangeCursor>, BulkError> {
        self.run(move |conn| Ok(top_cursor(conn, top_row)?.1)).await
    }

    /// `changes_since` by rowid, in one read transaction; see
    /// [`super::SqliteLog`]'s `changes_since`. `queries` are
    /// `(top row, row identity, heads since, grain heads)`.
    pub(super) async fn changes_by_rowid(
        self: &Arc<Self>,
        queries: RowidQueries,
        grain_type: &str,
        cursor: Option<(i64, Option<String>)>,
    ) -> Result<(HeadChanges, bool), BulkError> {
        let grain_type = grain_type.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let (top_rowid, next) = top_cursor(&tx, queries.top_row)?;
            let trusted = match &cursor {
                Some((0, _)) => true,
                Some((rowid, identity)) => {
                    let now: Option<String> = tx
                        .query_row(queries.row_identity, [rowid], |r| r.get(0))
                        .optional()?;
                    now.as_ref() == identity.as_ref() && *rowid <= top_rowid
                }
                None => false,
            };
            let changes = match cursor {
                Some((since, _)) if trusted && next.is_some() => {
                    let heads = if top_rowid > since {
                        heads(&tx, queries.heads_since, &grain_type, &[&since, &top_rowid])?
                    } else {
                        Vec::new()
                    };
                    HeadChanges {
                        heads,
                        complete: false,
                        cursor: next,
                    }
                }
                _ => HeadChanges {
                    heads: heads(&tx, queries.grain_heads, &grain_type, &[])?,
                    complete: true,
                    cursor: next,
                },
            };
            tx.commit()?;
            // Whether a cursor was given but could not be trusted.
            let stale = cursor.is_some() && changes.complete;
            Ok((changes, stale))
        })
        .await
    }
}

/// The newest rowid, and the cursor of a listing that has seen every row
/// up to it (`None` when rowids are handed out at random, at i64::MAX).
fn top_cursor(conn: &Connection, top_row: &str) -> rusqlite::Result<(i64, Option<ChangeCursor>)> {
    let top: Option<(i64, String)> = conn
        .query_row(top_row, [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (top_rowid, top_identity) = match top {
        Some((rowid, identity)) => (rowid, Some(identity)),
        None => (0, None),
    };
    // Rowids at i64::MAX are handed out at random: no watermark then.
    let cursor = (top_rowid < i64::MAX).then_some(ChangeCursor(CursorState::Rowid {
        rowid: top_rowid,
        identity: top_identity,
    }));
    Ok((top_rowid, cursor))
}

/// The queries of [`BulkReader::changes_by_rowid`].
#[derive(Debug, Clone, Copy)]
pub(super) struct RowidQueries {
    /// The newest row by rowid and its identity.
    pub top_row: &'static str,
    /// The identity of the row at a rowid.
    pub row_identity: &'static str,
    /// Heads among the rows in a rowid range: since, up to, grain type.
    pub heads_since: &'static str,
    /// Every grain's head: grain type.
    pub grain_heads: &'static str,
}

/// `(grain_key, head)` rows of `query` as heads; `bind` comes before the
/// grain type, which is bound last.
fn heads(
    conn: &Connection,
    query: &str,
    grain_type: &str,
    bind: &[&i64],
) -> rusqlite::Result<Vec<GrainHead>> {
    let mut statement = conn.prepare(query)?;
    let mut params: Vec<&dyn rusqlite::ToSql> = bind.iter().map(|b| *b as _).collect();
    params.push(&grain_type);
    let mut found = statement.query(params.as_slice())?;
    let mut heads = Vec::new();
    while let Some(row) = found.next()? {
        let ValueRef::Integer(head) = row.get_ref(1)? else {
            continue;
        };
        if let Some(latest_sequence) = seq::from_stored(head) {
            heads.push(GrainHead {
                grain_key: text_lossy(row.get_ref(0)?),
                latest_sequence,
            });
        }
    }
    Ok(heads)
}

/// The scan's queries: the columns [`LooseRow`] judges, in index order.
/// Bound: grain type, then (after a key) the key, then the limit.
macro_rules! scan_query {
    ($after:literal, $limit:literal) => {
        concat!(
            "SELECT grain_key, sequence, timestamp_millis, source_cluster, entry_type, payload
FROM replication_log
WHERE grain_type = ?1 ",
            $after,
            " AND typeof(grain_key) = 'text'
ORDER BY grain_key, sequence
LIMIT ",
            $limit
        )
    };
}
const SCAN_FIRST: &str = scan_query!("", "?2");
const SCAN_AFTER: &str = scan_query!("AND grain_key > ?2", "?3");

/// A storage class's name as `typeof()` spells it, in capitals.
fn class(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "INTEGER",
        ValueRef::Real(_) => "REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "BLOB",
    }
}

fn mismatch(expected: &str, value: ValueRef<'_>) -> String {
    format!("expected {expected}, found {}", class(value))
}

fn integer(value: ValueRef<'_>) -> Result<i64, String> {
    match value {
        ValueRef::Integer(v) => Ok(v),
        other => Err(mismatch("INTEGER", other)),
    }
}

fn text(value: ValueRef<'_>) -> Result<String, String> {
    match value {
        ValueRef::Text(bytes) => {
            String::from_utf8(bytes.to_vec()).map_err(|e| format!("text that is not UTF-8: {e}"))
        }
        other => Err(mismatch("TEXT", other)),
    }
}

fn blob(value: ValueRef<'_>) -> Result<Vec<u8>, String> {
    match value {
        ValueRef::Blob(bytes) => Ok(bytes.to_vec()),
        other => Err(mismatch("BLOB", other)),
    }
}

/// A text column's value (the queries select text keys only).
fn text_lossy(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Text(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    }
}
