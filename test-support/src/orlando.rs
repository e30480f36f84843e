//! Orlando's own SQL, verbatim, as a primary runs it: tests that stand in
//! for a primary create and fill the table with exactly this.

use sqlx::postgres::PgPool;
use sqlx::{Executor, Postgres};

use crate::pg::PgSchema;

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

/// Orlando's INSERT of one `Counter` row (FullState, payload `[1]`),
/// through `executor`.
pub async fn postgres_insert<'e, E>(executor: E, grain_key: &str, sequence: i64)
where
    E: Executor<'e, Database = Postgres>,
{
    sqlx::query(POSTGRES_INSERT)
        .bind("Counter")
        .bind(grain_key)
        .bind(sequence)
        .bind(1_700_000_000_000_i64)
        .bind("us-east")
        .bind(0_i16)
        .bind(vec![1_u8])
        .execute(executor)
        .await
        .unwrap();
}

/// A schema with Orlando's table (created as Orlando does), or `None` when
/// the server is unreachable and not required.
pub async fn postgres_schema(label: &str) -> Option<(PgSchema, PgPool)> {
    let schema = crate::pg::isolated_schema(label).await?;
    let primary = PgPool::connect(schema.url()).await.unwrap();
    primary.execute(POSTGRES_DDL).await.unwrap();
    Some((schema, primary))
}
