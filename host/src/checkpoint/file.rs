//! The checkpoint file: an SQLite database with three tables.
//!
//! - `meta(key, value)`: `format`, and the `log` and `cluster_id` it was
//!   written for.
//! - `builds(id, plugin, sha256, schema_version)`: each `decoded_by` once.
//! - `replicas(grain_type, grain_key, sequence, timestamp_millis,
//!   source_cluster, build, status, status_sequence, reason, state, crc)`,
//!   keyed by (grain type, key), `WITHOUT ROWID`.
//!
//! WAL journal, `synchronous = NORMAL`: a committed flush survives the
//! process being killed at any instant (not a power loss, which costs at
//! most the last flushes: the log has them).
//!
//! Longer than most modules on purpose: this file is the on-disk format
//! (schema, row encoding, checksum, chunked read, batched write), kept whole
//! so that a change to the format is a change to one file; loading into the
//! store is `load.rs`, the background writer `writer.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::decode::DecodedBy;
use crate::store::{Replica, ReplicaStatus};

/// The format this host writes and reads. Format 1 (an earlier host's)
/// had another checksum: such a file is refused like any other format, and
/// the host catches up in full once.
const FORMAT: &str = "replica-host checkpoint 2";

/// Status codes in the `status` column.
const OK: i64 = 0;
const BEHIND: i64 = 1;
const FAILING: i64 = 2;

/// What the file was written for: a checkpoint of another log or cluster
/// is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The log URL, password hidden.
    pub log: String,
    /// The host's cluster id.
    pub cluster_id: String,
}

/// Why a checkpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// SQLite refused it: not a database, corrupt, truncated, unreadable.
    #[error("{path}: {message}")]
    Sqlite {
        /// The file.
        path: String,
        /// SQLite's reason, one line.
        message: String,
    },
    /// Written by another host version, or not a checkpoint at all.
    #[error("{path}: not a replica-host checkpoint (format {found:?})")]
    Format {
        /// The file.
        path: String,
        /// The format it names.
        found: Option<String>,
    },
    /// Written for another log or cluster.
    #[error("{path}: a checkpoint of {what}")]
    Foreign {
        /// The file.
        path: String,
        /// Which log or cluster, against which.
        what: String,
    },
    /// A row whose checksum or state does not hold.
    #[error("{path}: {grain_type}/{grain_key}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// The row's grain type.
        grain_type: String,
        /// The row's key.
        grain_key: String,
        /// What is wrong.
        reason: String,
    },
}

/// One stored replica as read back. Names are `Arc`s: a run of rows
/// shares one grain type and one source cluster, and the key goes into the
/// store as it is.
pub(super) struct StoredRow {
    pub grain_type: Arc<str>,
    pub grain_key: Arc<str>,
    pub sequence: u64,
    pub timestamp_millis: i64,
    pub source_cluster: Arc<str>,
    pub decoded_by: Option<Arc<DecodedBy>>,
    pub status: ReplicaStatus,
    pub state: Option<Vec<u8>>,
}

/// Rows [`CheckpointFile::read_all`] hands over at a time.
const READ_CHUNK: usize = 8192;

/// The test-only hook of the "SIGKILL inside a checkpoint write" test: when
/// this variable names a file, every write creates that file once half its
/// rows are inserted and then waits, inside its open transaction, until
/// the file is removed (at most [`PAUSE_LIMIT`]). Unset, nothing happens.
pub const TEST_PAUSE_ENV: &str = "REPLICA_HOST_TEST_CHECKPOINT_PAUSE";

/// Longest pause of the [`TEST_PAUSE_ENV`] hook.
const PAUSE_LIMIT: Duration = Duration::from_secs(60);

/// The connection and what is cached beside it.
struct Inner {
    conn: Connection,
    /// `decoded_by` → its `builds` id.
    builds: HashMap<DecodedBy, i64>,
}

/// An open checkpoint file. SQLite is called through rusqlite on the
/// blocking pool (one statement step costs a function call, not a message
/// to a driver thread), so a million rows load and write in about a second.
pub struct CheckpointFile {
    path: PathBuf,
    /// Locked by the one blocking task that uses it at a time.
    inner: Arc<Mutex<Inner>>,
}

impl CheckpointFile {
    /// Opens (creating) the file at `path`.
    pub async fn open(path: &Path) -> Result<Self, CheckpointError> {
        let owned = path.to_path_buf();
        let conn = blocking(path, move || {
            let conn = Connection::open_with_flags(
                &owned,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| sqlite(&owned, e))?;
            conn.busy_timeout(Duration::from_secs(5))
                .map_err(|e| sqlite(&owned, e))?;
            conn.execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS builds (id INTEGER PRIMARY KEY, plugin TEXT NOT NULL,
                     sha256 TEXT NOT NULL, schema_version TEXT NOT NULL,
                     UNIQUE (plugin, sha256, schema_version));
                 CREATE TABLE IF NOT EXISTS replicas (grain_type TEXT NOT NULL, grain_key TEXT NOT NULL,
                     sequence INTEGER NOT NULL, timestamp_millis INTEGER NOT NULL,
                     source_cluster TEXT NOT NULL, build INTEGER, status INTEGER NOT NULL,
                     status_sequence INTEGER NOT NULL, reason TEXT NOT NULL, state BLOB,
                     crc INTEGER NOT NULL, PRIMARY KEY (grain_type, grain_key)) WITHOUT ROWID;",
            )
            .map_err(|e| sqlite(&owned, e))?;
            Ok(conn)
        })
        .await?;
        Ok(Self {
            path: path.to_path_buf(),
            inner: Arc::new(Mutex::new(Inner {
                conn,
                builds: HashMap::new(),
            })),
        })
    }

    /// Deletes the file (and its WAL files) and creates it anew, empty.
    pub async fn recreate(path: &Path) -> Result<Self, CheckpointError> {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
        Self::open(path).await
    }

    /// Closes the file, folding its WAL into it.
    pub async fn close(self) -> Result<(), CheckpointError> {
        let path = self.path.clone();
        let Ok(inner) = Arc::try_unwrap(self.inner) else {
            return Ok(()); // a task still holds it: closed when it drops
        };
        let inner = inner.into_inner().unwrap_or_else(PoisonError::into_inner);
        blocking(&path.clone(), move || {
            inner.conn.close().map_err(|(_, e)| sqlite(&path, e))
        })
        .await
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner, &Path) -> Result<T, CheckpointError> + Send + 'static,
    ) -> Result<T, CheckpointError> {
        let inner = Arc::clone(&self.inner);
        let path = self.path.clone();
        blocking(&self.path, move || {
            let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut inner, &path)
        })
        .await
    }

    /// Checks the file's format and identity; an empty file is given
    /// `identity`.
    pub async fn claim(&mut self, identity: &Identity) -> Result<(), CheckpointError> {
        let identity = identity.clone();
        self.with(move |inner, path| {
            let conn = &inner.conn;
            let meta = |key: &str| -> Result<Option<String>, CheckpointError> {
                conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()
                    .map_err(|e| sqlite(path, e))
            };
            let shown = path.display().to_string();
            match meta("format")? {
                None => {
                    let count: i64 = conn
                        .query_row("SELECT count(*) FROM replicas", [], |r| r.get(0))
                        .map_err(|e| sqlite(path, e))?;
                    if count > 0 {
                        return Err(CheckpointError::Format {
                            path: shown,
                            found: None,
                        });
                    }
                    for (key, value) in [
                        ("format", FORMAT),
                        ("log", &identity.log),
                        ("cluster_id", &identity.cluster_id),
                    ] {
                        conn.execute(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                            [key, value],
                        )
                        .map_err(|e| sqlite(path, e))?;
                    }
                    return Ok(());
                }
                Some(format) if format != FORMAT => {
                    return Err(CheckpointError::Format {
                        path: shown,
                        found: Some(format),
                    });
                }
                Some(_) => {}
            }
            let log = meta("log")?.unwrap_or_default();
            if log != identity.log {
                return Err(CheckpointError::Foreign {
                    path: shown,
                    what: format!("log {log}, not {}", identity.log),
                });
            }
            let cluster = meta("cluster_id")?.unwrap_or_default();
            if cluster != identity.cluster_id {
                return Err(CheckpointError::Foreign {
                    path: shown,
                    what: format!("cluster_id {cluster:?}, not {:?}", identity.cluster_id),
                });
            }
            Ok(())
        })
        .await
    }

    /// Every row, checksums checked, handed to `each` in key order, a
    /// chunk at a time. The rows are read and checked on the blocking pool
    /// while `each` works on the previous chunk. At the first error nothing
    /// more is read or handed over.
    pub(super) async fn read_all(
        &mut self,
        mut each: impl FnMut(Vec<StoredRow>) -> Result<(), CheckpointError>,
    ) -> Result<u64, CheckpointError> {
        let (chunks, mut received) = tokio::sync::mpsc::channel(2);
        let reader = self.with(move |inner, path| read_rows(&inner.conn, path, &chunks));
        let handing = async move {
            let mut count = 0u64;
            while let Some(chunk) = received.recv().await {
                let chunk: Vec<StoredRow> = chunk;
                count += chunk.len() as u64;
                each(chunk)?;
            }
            Ok::<_, CheckpointError>(count)
        };
        // `handing` owns the receiver: when it fails, the receiver goes
        // with it and the reader stops at its next chunk.
        let (read, handed) = futures::join!(reader, handing);
        let count = handed?;
        read?;
        Ok(count)
    }

    /// Writes `replicas` in one transaction (each replaces the grain's row);
    /// returns the CPU time it took.
    pub async fn write(&mut self, replicas: Vec<Replica>) -> Result<Duration, CheckpointError> {
        let pause = std::env::var_os(TEST_PAUSE_ENV).map(PathBuf::from);
        self.with(move |inner, path| {
            let started = thread_cpu();
            let mut build_ids = Vec::with_capacity(replicas.len());
            for replica in &replicas {
                build_ids.push(match &replica.decoded_by {
                    Some(by) => Some(build_id(inner, path, by)?),
                    None => None,
                });
            }
            let tx = inner.conn.transaction().map_err(|e| sqlite(path, e))?;
            {
                let mut insert = tx
                    .prepare(
                        "INSERT OR REPLACE INTO replicas (grain_type, grain_key, sequence,
                             timestamp_millis, source_cluster, build, status, status_sequence,
                             reason, state, crc)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )
                    .map_err(|e| sqlite(path, e))?;
                for (n, (replica, build)) in replicas.iter().zip(build_ids).enumerate() {
                    if n == replicas.len() / 2
                        && let Some(marker) = &pause
                    {
                        pause_for_test(marker);
                    }
                    let (status, status_sequence, reason) = match &replica.status {
                        ReplicaStatus::Ok => (OK, 0, ""),
                        ReplicaStatus::Behind { delta_sequence } => {
                            (BEHIND, *delta_sequence as i64, "")
                        }
                        ReplicaStatus::Failing { sequence, reason } => {
                            (FAILING, *sequence as i64, reason.as_str())
                        }
                    };
                    let state = replica.state.as_ref().map(|s| s.as_bytes());
                    let crc = checksum(&RowFields {
                        grain_type: &replica.grain_type,
                        grain_key: &replica.grain_key,
                        sequence: replica.sequence as i64,
                        timestamp_millis: replica.timestamp_millis,
                        source_cluster: &replica.source_cluster,
                        decoded_by: replica.decoded_by.as_deref(),
                        status,
                        status_sequence,
                        reason,
                        state,
                    });
                    insert
                        .execute(rusqlite::params![
                            replica.grain_type,
                            replica.grain_key,
                            replica.sequence as i64,
                            replica.timestamp_millis,
                            replica.source_cluster,
                            build,
                            status,
                            status_sequence,
                            reason,
                            state,
                            crc as i64,
                        ])
                        .map_err(|e| sqlite(path, e))?;
                }
            }
            tx.commit().map_err(|e| sqlite(path, e))?;
            Ok(thread_cpu().saturating_sub(started))
        })
        .await
    }
}

/// Reads every row of `conn`'s checkpoint, checks its checksum and sends
/// it on in chunks; stops when the receiver is gone.
fn read_rows(
    conn: &Connection,
    path: &Path,
    chunks: &tokio::sync::mpsc::Sender<Vec<StoredRow>>,
) -> Result<(), CheckpointError> {
    let mut builds: HashMap<i64, Arc<DecodedBy>> = HashMap::new();
    {
        let mut statement = conn
            .prepare("SELECT id, plugin, sha256, schema_version FROM builds")
            .map_err(|e| sqlite(path, e))?;
        let mut rows = statement.query([]).map_err(|e| sqlite(path, e))?;
        while let Some(row) = rows.next().map_err(|e| sqlite(path, e))? {
            let get = |i| row.get::<_, String>(i).map_err(|e| sqlite(path, e));
            let by = DecodedBy {
                plugin: get(1)?,
                sha256: get(2)?,
                schema_version: get(3)?,
            };
            let id: i64 = row.get(0).map_err(|e| sqlite(path, e))?;
            builds.insert(id, Arc::new(by));
        }
    }
    let mut statement = conn
        .prepare(
            "SELECT grain_type, grain_key, sequence, timestamp_millis, source_cluster, build,
                    status, status_sequence, reason, state, crc FROM replicas",
        )
        .map_err(|e| sqlite(path, e))?;
    let mut rows = statement.query([]).map_err(|e| sqlite(path, e))?;
    let mut chunk = Vec::with_capacity(READ_CHUNK);
    let mut shared = Shared::default();
    while let Some(row) = rows.next().map_err(|e| sqlite(path, e))? {
        chunk.push(stored_row(row, path, &builds, &mut shared)?);
        if chunk.len() == READ_CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(READ_CHUNK));
            if chunks.blocking_send(full).is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        let _ = chunks.blocking_send(chunk);
    }
    Ok(())
}

/// The grain type and source cluster of the previous row, shared with the
/// next while they are the same.
#[derive(Default)]
struct Shared {
    grain_type: Option<Arc<str>>,
    source_cluster: Option<Arc<str>>,
}

/// `text`, as the `Arc` of `last` when it is the same, else a new one
/// that becomes `last`.
fn shared_text(last: &mut Option<Arc<str>>, text: &str) -> Arc<str> {
    match last {
        Some(known) if **known == *text => Arc::clone(known),
        _ => {
            let new: Arc<str> = Arc::from(text);
            *last = Some(Arc::clone(&new));
            new
        }
    }
}

/// A text column read in place (no copy unless it is kept).
fn text_ref<'a>(row: &'a rusqlite::Row<'_>, column: usize) -> rusqlite::Result<&'a str> {
    row.get_ref(column)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// One row, its checksum checked.
fn stored_row(
    row: &rusqlite::Row<'_>,
    path: &Path,
    builds: &HashMap<i64, Arc<DecodedBy>>,
    shared: &mut Shared,
) -> Result<StoredRow, CheckpointError> {
    let get_err = |e| sqlite(path, e);
    let grain_type = shared_text(&mut shared.grain_type, text_ref(row, 0).map_err(get_err)?);
    let grain_key: Arc<str> = Arc::from(text_ref(row, 1).map_err(get_err)?);
    let sequence: i64 = row.get(2).map_err(get_err)?;
    let timestamp_millis: i64 = row.get(3).map_err(get_err)?;
    let source_cluster = shared_text(
        &mut shared.source_cluster,
        text_ref(row, 4).map_err(get_err)?,
    );
    let build: Option<i64> = row.get(5).map_err(get_err)?;
    let status: i64 = row.get(6).map_err(get_err)?;
    let status_sequence: i64 = row.get(7).map_err(get_err)?;
    let reason: String = row.get(8).map_err(get_err)?;
    let crc: i64 = row.get(10).map_err(get_err)?;
    let corrupt = |reason: &str| CheckpointError::Corrupt {
        path: path.display().to_string(),
        grain_type: crate::text::escape(&grain_type),
        grain_key: crate::text::escape(&grain_key),
        reason: reason.to_string(),
    };
    // Read as bytes whatever SQLite's storage class (a value edited with
    // SQL's `||` becomes text): the checksum then says what is wrong.
    let state = match row.get_ref(9).map_err(get_err)? {
        ValueRef::Null => None,
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => Some(bytes.to_vec()),
        ValueRef::Integer(_) | ValueRef::Real(_) => return Err(corrupt("checksum mismatch")),
    };
    let decoded_by = match build {
        Some(id) => {
            Some(Arc::clone(builds.get(&id).ok_or_else(|| {
                corrupt("names a plugin build the file does not hold")
            })?))
        }
        None => None,
    };
    let expected = checksum(&RowFields {
        grain_type: &grain_type,
        grain_key: &grain_key,
        sequence,
        timestamp_millis,
        source_cluster: &source_cluster,
        decoded_by: decoded_by.as_deref(),
        status,
        status_sequence,
        reason: &reason,
        state: state.as_deref(),
    });
    if expected as i64 != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let status = match status {
        OK => ReplicaStatus::Ok,
        BEHIND => ReplicaStatus::Behind {
            delta_sequence: status_sequence as u64,
        },
        FAILING => ReplicaStatus::Failing {
            sequence: status_sequence as u64,
            reason,
        },
        _ => return Err(corrupt("unknown status")),
    };
    Ok(StoredRow {
        grain_type,
        grain_key,
        sequence: sequence as u64,
        timestamp_millis,
        source_cluster,
        decoded_by,
        status,
        state,
    })
}

/// The `builds` id of `by`, inserting it the first time.
fn build_id(inner: &mut Inner, path: &Path, by: &DecodedBy) -> Result<i64, CheckpointError> {
    if let Some(&id) = inner.builds.get(by) {
        return Ok(id);
    }
    inner
        .conn
        .execute(
            "INSERT OR IGNORE INTO builds (plugin, sha256, schema_version) VALUES (?1, ?2, ?3)",
            [&by.plugin, &by.sha256, &by.schema_version],
        )
        .map_err(|e| sqlite(path, e))?;
    let id: i64 = inner
        .conn
        .query_row(
            "SELECT id FROM builds WHERE plugin = ?1 AND sha256 = ?2 AND schema_version = ?3",
            [&by.plugin, &by.sha256, &by.schema_version],
            |r| r.get(0),
        )
        .map_err(|e| sqlite(path, e))?;
    inner.builds.insert(by.clone(), id);
    Ok(id)
}

/// The [`TEST_PAUSE_ENV`] hook: `marker` created, then a wait until it is gone.
fn pause_for_test(marker: &Path) {
    if std::fs::write(marker, b"inside a checkpoint write\n").is_err() {
        return;
    }
    let started = std::time::Instant::now();
    while marker.exists() && started.elapsed() < PAUSE_LIMIT {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on the blocking pool; a task that failed to finish is an error
/// naming `path`.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T, CheckpointError> + Send + 'static,
) -> Result<T, CheckpointError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(CheckpointError::Sqlite {
            path: path.display().to_string(),
            message: format!("the checkpoint task failed: {e}"),
        })
    })
}

/// The fields a row's checksum covers.
struct RowFields<'a> {
    grain_type: &'a str,
    grain_key: &'a str,
    sequence: i64,
    timestamp_millis: i64,
    source_cluster: &'a str,
    decoded_by: Option<&'a DecodedBy>,
    status: i64,
    status_sequence: i64,
    reason: &'a str,
    state: Option<&'a [u8]>,
}

/// A 64-bit checksum (kept to 63 bits so SQLite's signed integer holds
/// it) of every field, each length-prefixed: catches a changed byte
/// anywhere in a row. Not a defence against someone forging rows, who
/// could write the file anyway; only against damage.
fn checksum(r: &RowFields<'_>) -> u64 {
    let mut sum = Sum::default();
    sum.bytes(r.grain_type.as_bytes());
    sum.bytes(r.grain_key.as_bytes());
    sum.word(r.sequence as u64);
    sum.word(r.timestamp_millis as u64);
    sum.bytes(r.source_cluster.as_bytes());
    match r.decoded_by {
        Some(by) => {
            sum.bytes(by.plugin.as_bytes());
            sum.bytes(by.sha256.as_bytes());
            sum.bytes(by.schema_version.as_bytes());
        }
        None => sum.bytes(b"\xff"),
    }
    sum.word(r.status as u64);
    sum.word(r.status_sequence as u64);
    sum.bytes(r.reason.as_bytes());
    match r.state {
        Some(state) => sum.bytes(state),
        None => sum.bytes(b"\xff\xff"),
    }
    sum.0 >> 1
}

/// The checksum's state, fed eight bytes at a time (the first format fed
/// FNV-1a a byte at a time: a third of a million-row load). Each step is a
/// bijection of the word for a given state, and of the state for a given
/// word, so a change within any one word always changes the result.
struct Sum(u64);

impl Default for Sum {
    fn default() -> Self {
        Sum(0xcbf2_9ce4_8422_2325)
    }
}

impl Sum {
    fn word(&mut self, word: u64) {
        let h = (self.0 ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.word(bytes.len() as u64);
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.word(u64::from_le_bytes(word.try_into().expect("eight bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(last));
        }
    }
}

/// SQLite's error, one line, naming the file.
fn sqlite(path: &Path, e: rusqlite::Error) -> CheckpointError {
    CheckpointError::Sqlite {
        path: path.display().to_string(),
        message: e.to_string().replace('\n', " "),
    }
}
/// CPU time of the calling thread so far.
pub(super) fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`, which lives on
    // this stack frame for the whole call.
    let done = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if done != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}
