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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};

use crate::decode::DecodedBy;
use crate::store::{Replica, ReplicaStatus};

/// The format this host writes and reads.
const FORMAT: &str = "replica-host checkpoint 1";

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

/// One stored replica as read back.
pub(super) struct StoredRow {
    pub grain_type: String,
    pub grain_key: String,
    pub sequence: u64,
    pub timestamp_millis: i64,
    pub source_cluster: String,
    pub decoded_by: Option<Arc<DecodedBy>>,
    pub status: ReplicaStatus,
    pub state: Option<Vec<u8>>,
}

/// An open checkpoint file.
pub struct CheckpointFile {
    path: PathBuf,
    conn: SqliteConnection,
    /// `decoded_by` → its `builds` id.
    builds: HashMap<DecodedBy, i64>,
}

impl CheckpointFile {
    /// Opens (creating) the file at `path`.
    pub async fn open(path: &Path) -> Result<Self, CheckpointError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| sqlite(path, e))?;
        let mut file = Self {
            path: path.to_path_buf(),
            conn,
            builds: HashMap::new(),
        };
        file.create_tables().await?;
        Ok(file)
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
        self.conn.close().await.map_err(|e| sqlite(&path, e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn create_tables(&mut self) -> Result<(), CheckpointError> {
        let path = self.path.clone();
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS builds (id INTEGER PRIMARY KEY, plugin TEXT NOT NULL,
                 sha256 TEXT NOT NULL, schema_version TEXT NOT NULL,
                 UNIQUE (plugin, sha256, schema_version));
             CREATE TABLE IF NOT EXISTS replicas (grain_type TEXT NOT NULL, grain_key TEXT NOT NULL,
                 sequence INTEGER NOT NULL, timestamp_millis INTEGER NOT NULL,
                 source_cluster TEXT NOT NULL, build INTEGER, status INTEGER NOT NULL,
                 status_sequence INTEGER NOT NULL, reason TEXT NOT NULL, state BLOB,
                 crc INTEGER NOT NULL, PRIMARY KEY (grain_type, grain_key)) WITHOUT ROWID;",
        )
        .execute(&mut self.conn)
        .await
        .map_err(|e| sqlite(&path, e))?;
        Ok(())
    }

    async fn meta(&mut self, key: &str) -> Result<Option<String>, CheckpointError> {
        let path = self.path.clone();
        sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut self.conn)
            .await
            .map_err(|e| sqlite(&path, e))
    }

    /// Checks the file's format and identity; an empty file is given
    /// `identity`.
    pub async fn claim(&mut self, identity: &Identity) -> Result<(), CheckpointError> {
        let path = self.path.display().to_string();
        match self.meta("format").await? {
            None => {
                let count: i64 = sqlx::query_scalar("SELECT count(*) FROM replicas")
                    .fetch_one(&mut self.conn)
                    .await
                    .map_err(|e| sqlite(&self.path, e))?;
                if count > 0 {
                    return Err(CheckpointError::Format { path, found: None });
                }
                for (key, value) in [
                    ("format", FORMAT),
                    ("log", &identity.log),
                    ("cluster_id", &identity.cluster_id),
                ] {
                    sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)")
                        .bind(key)
                        .bind(value)
                        .execute(&mut self.conn)
                        .await
                        .map_err(|e| sqlite(&self.path, e))?;
                }
                return Ok(());
            }
            Some(format) if format != FORMAT => {
                return Err(CheckpointError::Format {
                    path,
                    found: Some(format),
                });
            }
            Some(_) => {}
        }
        let log = self.meta("log").await?.unwrap_or_default();
        if log != identity.log {
            return Err(CheckpointError::Foreign {
                path,
                what: format!("log {log}, not {}", identity.log),
            });
        }
        let cluster = self.meta("cluster_id").await?.unwrap_or_default();
        if cluster != identity.cluster_id {
            return Err(CheckpointError::Foreign {
                path,
                what: format!("cluster_id {cluster:?}, not {:?}", identity.cluster_id),
            });
        }
        Ok(())
    }

    /// Every row, checksums checked, handed to `each` in key order.
    pub(super) async fn read_all(
        &mut self,
        mut each: impl FnMut(StoredRow) -> Result<(), CheckpointError>,
    ) -> Result<u64, CheckpointError> {
        let path = self.path.clone();
        let mut builds: HashMap<i64, Arc<DecodedBy>> = HashMap::new();
        {
            let mut rows = sqlx::query("SELECT id, plugin, sha256, schema_version FROM builds")
                .fetch(&mut self.conn);
            while let Some(row) = rows.try_next().await.map_err(|e| sqlite(&path, e))? {
                let by = DecodedBy {
                    plugin: row.try_get(1).map_err(|e| sqlite(&path, e))?,
                    sha256: row.try_get(2).map_err(|e| sqlite(&path, e))?,
                    schema_version: row.try_get(3).map_err(|e| sqlite(&path, e))?,
                };
                builds.insert(row.try_get(0).map_err(|e| sqlite(&path, e))?, Arc::new(by));
            }
        }
        let mut rows = sqlx::query(
            "SELECT grain_type, grain_key, sequence, timestamp_millis, source_cluster, build,
                    status, status_sequence, reason, state, crc FROM replicas",
        )
        .fetch(&mut self.conn);
        let mut count = 0u64;
        while let Some(row) = rows.try_next().await.map_err(|e| sqlite(&path, e))? {
            let get_err = |e| sqlite(&path, e);
            let grain_type: String = row.try_get(0).map_err(get_err)?;
            let grain_key: String = row.try_get(1).map_err(get_err)?;
            let sequence: i64 = row.try_get(2).map_err(get_err)?;
            let timestamp_millis: i64 = row.try_get(3).map_err(get_err)?;
            let source_cluster: String = row.try_get(4).map_err(get_err)?;
            let build: Option<i64> = row.try_get(5).map_err(get_err)?;
            let status: i64 = row.try_get(6).map_err(get_err)?;
            let status_sequence: i64 = row.try_get(7).map_err(get_err)?;
            let reason: String = row.try_get(8).map_err(get_err)?;
            let state: Option<Vec<u8>> = row.try_get(9).map_err(get_err)?;
            let crc: i64 = row.try_get(10).map_err(get_err)?;
            let corrupt = |reason: &str| CheckpointError::Corrupt {
                path: path.display().to_string(),
                grain_type: crate::text::escape(&grain_type),
                grain_key: crate::text::escape(&grain_key),
                reason: reason.to_string(),
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
            each(StoredRow {
                grain_type,
                grain_key,
                sequence: sequence as u64,
                timestamp_millis,
                source_cluster,
                decoded_by,
                status,
                state,
            })?;
            count += 1;
        }
        Ok(count)
    }

    /// Writes `replicas` in one transaction (each replaces the grain's row).
    pub async fn write(&mut self, replicas: &[Replica]) -> Result<(), CheckpointError> {
        let path = self.path.clone();
        let mut build_ids = Vec::with_capacity(replicas.len());
        for replica in replicas {
            build_ids.push(match &replica.decoded_by {
                Some(by) => Some(self.build_id(by).await?),
                None => None,
            });
        }
        let mut tx = self.conn.begin().await.map_err(|e| sqlite(&path, e))?;
        for (replica, build) in replicas.iter().zip(build_ids) {
            let (status, status_sequence, reason) = match &replica.status {
                ReplicaStatus::Ok => (OK, 0, ""),
                ReplicaStatus::Behind { delta_sequence } => (BEHIND, *delta_sequence as i64, ""),
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
            sqlx::query(
                "INSERT OR REPLACE INTO replicas (grain_type, grain_key, sequence, timestamp_millis,
                     source_cluster, build, status, status_sequence, reason, state, crc)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&replica.grain_type)
            .bind(&replica.grain_key)
            .bind(replica.sequence as i64)
            .bind(replica.timestamp_millis)
            .bind(&replica.source_cluster)
            .bind(build)
            .bind(status)
            .bind(status_sequence)
            .bind(reason)
            .bind(state)
            .bind(crc as i64)
            .execute(&mut *tx)
            .await
            .map_err(|e| sqlite(&path, e))?;
        }
        tx.commit().await.map_err(|e| sqlite(&path, e))
    }

    /// The `builds` id of `by`, inserting it the first time.
    async fn build_id(&mut self, by: &DecodedBy) -> Result<i64, CheckpointError> {
        if let Some(&id) = self.builds.get(by) {
            return Ok(id);
        }
        let path = self.path.clone();
        sqlx::query(
            "INSERT OR IGNORE INTO builds (plugin, sha256, schema_version) VALUES (?, ?, ?)",
        )
        .bind(&by.plugin)
        .bind(&by.sha256)
        .bind(&by.schema_version)
        .execute(&mut self.conn)
        .await
        .map_err(|e| sqlite(&path, e))?;
        let id: i64 = sqlx::query_scalar(
            "SELECT id FROM builds WHERE plugin = ? AND sha256 = ? AND schema_version = ?",
        )
        .bind(&by.plugin)
        .bind(&by.sha256)
        .bind(&by.schema_version)
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| sqlite(&path, e))?;
        self.builds.insert(by.clone(), id);
        Ok(id)
    }
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

/// FNV-1a (64 bits, kept to 63 so SQLite's signed integer holds it) of
/// every field, each length-prefixed: catches a changed byte anywhere in a
/// row. Not a defence against someone forging rows, who could write the
/// file anyway; only against damage.
fn checksum(r: &RowFields<'_>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut bytes = |b: &[u8]| {
        for &byte in (b.len() as u64).to_le_bytes().iter().chain(b) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    bytes(r.grain_type.as_bytes());
    bytes(r.grain_key.as_bytes());
    bytes(&r.sequence.to_le_bytes());
    bytes(&r.timestamp_millis.to_le_bytes());
    bytes(r.source_cluster.as_bytes());
    match r.decoded_by {
        Some(by) => {
            bytes(by.plugin.as_bytes());
            bytes(by.sha256.as_bytes());
            bytes(by.schema_version.as_bytes());
        }
        None => bytes(b"\xff"),
    }
    bytes(&r.status.to_le_bytes());
    bytes(&r.status_sequence.to_le_bytes());
    bytes(r.reason.as_bytes());
    match r.state {
        Some(state) => bytes(state),
        None => bytes(b"\xff\xff"),
    }
    h >> 1
}

/// SQLite's error, one line, naming the file.
fn sqlite(path: &Path, e: sqlx::Error) -> CheckpointError {
    CheckpointError::Sqlite {
        path: path.display().to_string(),
        message: e.to_string().replace('\n', " "),
    }
}
