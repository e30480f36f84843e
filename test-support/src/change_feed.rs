//! The PostgreSQL change feed as the tests check it: the DDL that
//! `replica-host log enable-change-feed` prints, and what the catalog says
//! it did.

use crate::pg::PgSchema;

/// The statements `enable-change-feed` runs, in order, as it prints them.
pub const DDL_LINES: [&str; 3] = [
    "ALTER TABLE replication_log ADD COLUMN IF NOT EXISTS replica_tx xid8;",
    "ALTER TABLE replication_log ALTER COLUMN replica_tx SET DEFAULT pg_current_xact_id();",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS replication_log_replica_tx ON replication_log (replica_tx);",
];

/// The column's type and default, and whether its index is valid.
pub async fn catalog(schema: &PgSchema) -> (Option<(String, Option<String>)>, Option<bool>) {
    let mut admin = schema.admin().await;
    let column: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid)
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = $1 AND c.relname = 'replication_log'
           AND a.attname = 'replica_tx' AND NOT a.attisdropped",
    )
    .bind(schema.name())
    .fetch_optional(&mut admin)
    .await
    .unwrap();
    let index: Option<bool> = sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_index i
         JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = 'replication_log_replica_tx'",
    )
    .bind(schema.name())
    .fetch_optional(&mut admin)
    .await
    .unwrap();
    (column, index)
}
