//! The replication log: where an Orlando primary appends each grain's
//! snapshots, and where the host reads them from.
//!
//! [`ReplicationLog`] has Orlando's operations plus what the host needs to
//! discover grains by itself ([`ReplicationLog::grain_heads`], and its
//! incremental form [`ReplicationLog::changes_since`]). Backends:
//! in-memory, SQLite file and PostgreSQL, chosen by URL. Every backend
//! judges a stored row in one place (`record`); the two SQL backends run
//! the calls they make alike through one generic module (`sql`), each with
//! its own SQL.
//!
//! # Readers and writers
//! Reading and writing are two traits: [`ReplicationLog`] reads, and
//! [`LogWriter`] (a `ReplicationLog` too) appends and truncates. [`open`]
//! is the reader's open, the one `replica-host run` uses: it returns a
//! `ReplicationLog`, so a reader has no `append` to call, and it never
//! creates a file, a database or a table. A SQLite file is opened read-only
//! and a PostgreSQL session is read-only (`default_transaction_read_only`);
//! a missing file, database or table is a [`LogError::Missing`]. Writers
//! (the demo, the benchmarks, tests standing in for an Orlando primary) use
//! [`create`], which creates the SQLite file and Orlando's table when
//! missing, and returns a [`LogWriter`] ([`SqliteWriter`],
//! [`PostgresWriter`]; a [`MemoryLog`] is both). Wrappers that count or
//! fail some calls of another log build on [`ForwardLog`].
//!
//! # Incremental discovery (`changes_since`)
//! Listing every grain's head is O(rows of the type) per call. The consumer
//! asks every poll interval, so [`ReplicationLog::changes_since`] lets a
//! backend answer "which grains have rows I have not seen" instead, in
//! O(new rows), against Orlando's table as it is:
//! - **SQLite**: the table's implicit `rowid` is a change watermark. Writers
//!   are serialized and a new row gets `max(rowid) + 1`, so rows committed
//!   after the cursor have a larger rowid. A rowid can only be handed out
//!   again after every row at or above it was deleted, so the cursor also
//!   remembers the identity of the newest row it saw: if that row is gone
//!   or changed (truncation of the newest rows, `VACUUM` renumbering), or
//!   rowids reach `i64::MAX` (SQLite then picks them at random), the answer
//!   is a full listing and a fresh cursor. The consumer also asks for a full
//!   listing periodically as a safety net.
//! - **Memory**: a change stamp per row, never reused.
//! - **PostgreSQL**: Orlando's table has no change watermark, so by default
//!   each call is a full listing. `replica-host log enable-change-feed` adds
//!   one (an indexed `replica_tx xid8` column filled by default with the
//!   inserting transaction's id); with it the backend reads only the rows of
//!   transactions that finished since the cursor (see [`pg_change_feed`]).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::secret::Secret;

mod error;
pub mod forward;
mod memory;
pub mod pg_change_feed;
pub mod pg_connect;
mod pg_driver;
mod postgres;
mod postgres_writer;
mod record;
mod scan;
mod seq;
mod sql;
mod sqlite;
mod sqlite_bulk;
mod sqlite_writer;
mod url;

pub use error::{Cause, LogError};
pub use forward::ForwardLog;
pub use memory::{MemoryLog, RawRow};
pub use postgres::PostgresLog;
pub use postgres_writer::PostgresWriter;
pub use scan::{DEFAULT_SCAN_ROWS, ScanPage, ScannedGrain};
pub use sqlite::SqliteLog;
pub use sqlite_writer::SqliteWriter;
pub use url::redact_password;

/// What a log entry carries: a full snapshot, or a delta (reserved by Orlando,
/// never applied by this host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    /// Replaces the replica's state whole. Stored as 0.
    FullState,
    /// A partial update; refused by the host. Stored as 1.
    Delta,
}

impl EntryType {
    /// The value stored in the `entry_type` column.
    pub fn code(self) -> i64 {
        match self {
            EntryType::FullState => 0,
            EntryType::Delta => 1,
        }
    }

    /// The entry type for a stored `entry_type` value, if it is one.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(EntryType::FullState),
            1 => Some(EntryType::Delta),
            _ => None,
        }
    }
}

/// One entry of the replication log, as Orlando writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The grain's type name, e.g. `Counter`.
    pub grain_type: String,
    /// The grain's key within its type.
    pub grain_key: String,
    /// Strictly increasing per grain; gaps allowed.
    pub sequence: u64,
    /// The primary's wall clock (Unix ms) when it wrote the entry.
    pub timestamp_millis: i64,
    /// The cluster that wrote the entry.
    pub source_cluster: String,
    /// Full state or delta.
    pub entry_type: EntryType,
    /// The grain's serialized state: a shared buffer, so handing an entry
    /// on (to a decode task, into a plugin call) copies no bytes; the one
    /// copy is into the guest's memory.
    pub payload: Bytes,
}

/// A stored row the host cannot interpret (unknown `entry_type`, a sequence
/// out of range, a column of the wrong type, ...). It is refused like a
/// Delta: logged, counted and passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRow {
    /// The row's grain type.
    pub grain_type: String,
    /// The row's grain key.
    pub grain_key: String,
    /// The row's sequence, where it could be read as a valid `u64`.
    pub sequence: Option<u64>,
    /// Why the row was refused, naming the column at fault.
    pub reason: String,
}

/// One row read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    /// A well-formed entry.
    Entry(LogEntry),
    /// A row that could not be interpreted.
    Refused(RefusedRow),
}

/// The newest sequence of one grain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrainHead {
    /// The grain's key.
    pub grain_key: String,
    /// The grain's newest sequence in the log.
    pub latest_sequence: u64,
}

/// Where an incremental listing of a grain type's heads stands. Opaque:
/// only the backend that made it can read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeCursor(pub(crate) CursorState);

/// What a backend remembers between two incremental listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CursorState {
    /// SQLite: the newest rowid seen and that row's identity (its grain
    /// type, key and sequence as SQL literals), `None` for an empty table.
    Rowid {
        rowid: i64,
        identity: Option<String>,
    },
    /// Memory: the newest change stamp seen.
    Stamp(u64),
    /// PostgreSQL change feed: every transaction id below this one had
    /// finished (committed or aborted) when the last window was read.
    Xid8(u64),
}

/// The answer of [`ReplicationLog::changes_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadChanges {
    /// Every grain that has a row (with a valid sequence) the cursor had not
    /// seen, with its newest sequence; every grain of the type when
    /// `complete`. In no particular order.
    pub heads: Vec<GrainHead>,
    /// Whether `heads` lists every grain of the type, like
    /// [`ReplicationLog::grain_heads`].
    pub complete: bool,
    /// What to pass to the next call; `None` when the backend cannot answer
    /// incrementally (the next call lists everything again).
    pub cursor: Option<ChangeCursor>,
}

/// Every grain's newest FullState sequence, per grain type, as of one
/// instant of the log (one read-only transaction): what `replica-host
/// verify` compares a host with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadsSnapshot {
    /// Each grain type read, with its grains' newest FullState sequence (in
    /// no particular order; grains without a FullState left out).
    pub grain_types: Vec<(String, Vec<GrainHead>)>,
}

impl HeadChanges {
    /// A full listing of `heads`, with no cursor: what a backend answers
    /// when it has no incremental form.
    pub(crate) fn listing(heads: Vec<GrainHead>) -> Self {
        Self {
            heads,
            complete: true,
            cursor: None,
        }
    }
}

/// A replication log, read: what the host needs of a backend. All methods
/// are safe to call concurrently. Writing is [`LogWriter`]'s, which only
/// [`create`] hands out.
#[async_trait]
pub trait ReplicationLog: Send + Sync + 'static {
    /// Rows of one grain with `sequence > after`, ascending, at most `limit`.
    /// Rows that cannot be interpreted come back as [`LogRecord::Refused`];
    /// they never fail the whole read. Rows whose sequence is unusable
    /// (negative, not an integer) sort after every valid one and, having no
    /// position to read past, come back in every read with room for them.
    async fn read_from(
        &self,
        grain_type: &str,
        grain_key: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, LogError>;

    /// The grain's newest sequence, 0 when it has none.
    async fn latest_sequence(&self, grain_type: &str, grain_key: &str) -> Result<u64, LogError>;

    /// Every grain of `grain_type` with its newest sequence: how the host
    /// discovers grains and learns which have new entries. Grains without a
    /// valid sequence are left out.
    async fn grain_heads(&self, grain_type: &str) -> Result<Vec<GrainHead>, LogError>;

    /// The heads of the grains of `grain_type` that have rows appended since
    /// `cursor` was returned, and a cursor for the next call. With no cursor
    /// (or one the backend can no longer trust) it lists every grain, as
    /// [`ReplicationLog::grain_heads`] does, with `complete` set.
    ///
    /// The default has no incremental form: always the full listing and no
    /// cursor. Backends override it where a cheap watermark exists (see the
    /// module docs).
    async fn changes_since(
        &self,
        grain_type: &str,
        cursor: Option<&ChangeCursor>,
    ) -> Result<HeadChanges, LogError> {
        let _ = cursor;
        Ok(HeadChanges::listing(self.grain_heads(grain_type).await?))
    }

    /// Where an incremental listing of `grain_type` would start if it ran
    /// now, without listing anything: a cold catch-up that finds every
    /// grain through [`Self::scan`] takes this cursor first and lists from
    /// it afterwards. `None` when the backend cannot list incrementally
    /// (the default), so the caller lists everything instead.
    async fn change_cursor(&self, grain_type: &str) -> Result<Option<ChangeCursor>, LogError> {
        let _ = grain_type;
        Ok(None)
    }

    /// The distinct grain types present in the log.
    async fn grain_types(&self) -> Result<Vec<String>, LogError>;

    /// Checks that the backend is reachable.
    async fn ping(&self) -> Result<(), LogError>;

    /// One page of the bulk catch-up scan of `grain_type`: its grains in key
    /// order after `after` (from the first when `None`), with their rows,
    /// reading at most `max_rows` rows (see [`ScanPage`]). `None` when the
    /// backend has no such scan: the consumer then reads each grain by
    /// itself. The default has none.
    async fn scan(
        &self,
        grain_type: &str,
        after: Option<&str>,
        max_rows: usize,
    ) -> Result<Option<ScanPage>, LogError> {
        let _ = (grain_type, after, max_rows);
        Ok(None)
    }

    /// A page of `grain_type`'s grains in key order after `after`, each
    /// with its newest FullState sequence (`latest_sequence`), at most
    /// `limit`; grains without a FullState are left out. What the host's
    /// anti-entropy checks a slice of its grains against. `None` when the
    /// backend has no such read (the default).
    async fn full_state_heads(
        &self,
        grain_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<GrainHead>>, LogError> {
        let _ = (grain_type, after, limit);
        Ok(None)
    }

    /// Every grain's newest FullState sequence, of `only` or of every grain
    /// type in the log, read in bulk in one read-only transaction (one
    /// consistent snapshot). `None` when the backend has no such read (the
    /// default).
    async fn heads_snapshot(&self, only: Option<&str>) -> Result<Option<HeadsSnapshot>, LogError> {
        let _ = only;
        Ok(None)
    }
}

/// A replication log that can also be written: what an Orlando primary
/// does. Only [`create`] (and the backends' own `create`) hands one out;
/// [`open`] returns a reader, which has no `append` to call. An
/// `Arc<dyn LogWriter>` coerces to `Arc<dyn ReplicationLog>` where a
/// reader is wanted.
#[async_trait]
pub trait LogWriter: ReplicationLog {
    /// Appends an entry; refuses a sequence not above the grain's newest with
    /// [`LogError::SequenceConflict`]. Returns the sequence.
    async fn append(&self, entry: &LogEntry) -> Result<u64, LogError>;

    /// Deletes the grain's rows with `sequence < before`; returns how many.
    /// Rows whose sequence is unusable are kept.
    async fn truncate(
        &self,
        grain_type: &str,
        grain_key: &str,
        before: u64,
    ) -> Result<u64, LogError>;
}

/// Opens the log a URL names, as a reader: `memory://`, `sqlite://PATH` or
/// `sqlite:PATH` (the file opened read-only), or `postgres://...` /
/// `postgresql://...` (read-only sessions). Creates nothing: a missing file,
/// database or table is [`LogError::Missing`], naming the URL (password
/// hidden) and what is missing.
///
/// A reader cannot write: the log it returns has no `append`.
///
/// ```compile_fail
/// # async fn f(entry: replica_host::replication_log::LogEntry) {
/// let log = replica_host::replication_log::open("memory://").await.unwrap();
/// log.append(&entry).await; // no `append` on a `dyn ReplicationLog`
/// # }
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn ReplicationLog>, LogError> {
    open_with(url, &OpenOptions::default()).await
}

/// What opening a log may need beyond its URL.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The PostgreSQL password when it is not in the URL (`[log]
    /// password_file`); without it, the driver falls back to `PGPASSWORD`.
    pub password: Option<Secret>,
}

/// Checks a log URL without connecting: a known scheme, and for
/// PostgreSQL a URL the driver reads whose TLS files (`sslrootcert`,
/// `sslcert`, `sslkey`) can be opened.
pub fn check_url(url: &str) -> Result<(), LogError> {
    match url::LogUrl::parse(url)? {
        url::LogUrl::Postgres(url) => {
            pg_connect::options(url, &redact_password(url), None).map(|_| ())
        }
        url::LogUrl::Memory | url::LogUrl::Sqlite(_) => Ok(()),
    }
}

/// Like [`open`], with [`OpenOptions`].
pub async fn open_with(
    url: &str,
    options: &OpenOptions,
) -> Result<Arc<dyn ReplicationLog>, LogError> {
    Ok(match url::LogUrl::parse(url)? {
        url::LogUrl::Memory => Arc::new(MemoryLog::new()),
        url::LogUrl::Sqlite(path) => Arc::new(
            SqliteLog::open_reader(path, &redact_password(url), SqliteLog::DEFAULT_BUSY_TIMEOUT)
                .await?,
        ),
        url::LogUrl::Postgres(url) => Arc::new(
            PostgresLog::connect_with(
                url,
                options.password.as_ref(),
                PostgresLog::DEFAULT_ACQUIRE_TIMEOUT,
            )
            .await?,
        ),
    })
}

/// Opens the log a URL names, as a writer: like [`open`], but creates the
/// SQLite file (in WAL mode) and Orlando's table when missing. For the demo,
/// the benchmarks and tests that stand in for an Orlando primary.
pub async fn create(url: &str) -> Result<Arc<dyn LogWriter>, LogError> {
    Ok(match url::LogUrl::parse(url)? {
        url::LogUrl::Memory => Arc::new(MemoryLog::new()),
        url::LogUrl::Sqlite(path) => Arc::new(SqliteLog::create(path).await?),
        url::LogUrl::Postgres(url) => Arc::new(PostgresLog::create(url).await?),
    })
}
