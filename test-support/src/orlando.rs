//! Orlando's own SQL, verbatim, as a primary runs it: tests that stand in
//! for a primary create and fill the table with exactly this.

/// Orlando's DDL for SQLite, verbatim, as a primary would run it.
pub const SQLITE_DDL: &str = "CREATE TABLE IF NOT EXISTS replication_log (
    grain_type TEXT NOT NULL,
    grain_key TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    timestamp_millis INTEGER NOT NULL,
    source_cluster TEXT NOT NULL,
    entry_type INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (grain_type, grain_key, sequence)
)";

/// Orlando's DDL for PostgreSQL, verbatim.
pub const POSTGRES_DDL: &str = "CREATE TABLE IF NOT EXISTS replication_log (
    grain_type TEXT NOT NULL,
    grain_key TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    timestamp_millis BIGINT NOT NULL,
    source_cluster TEXT NOT NULL,
    entry_type SMALLINT NOT NULL,
    payload BYTEA NOT NULL,
    PRIMARY KEY (grain_type, grain_key, sequence)
)";

/// Orlando's INSERT for SQLite: seven named columns.
pub const SQLITE_INSERT: &str = "INSERT INTO replication_log
    (grain_type, grain_key, sequence, timestamp_millis, source_cluster, entry_type, payload)
VALUES (?, ?, ?, ?, ?, ?, ?)";

/// Orlando's INSERT for PostgreSQL: seven named columns.
pub const POSTGRES_INSERT: &str = "INSERT INTO replication_log
    (grain_type, grain_key, sequence, timestamp_millis, source_cluster, entry_type, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7)";
