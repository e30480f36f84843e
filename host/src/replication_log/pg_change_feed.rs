//! The PostgreSQL change feed: an opt-in, indexed `replica_tx xid8` column
//! that lets discovery read only new rows instead of listing every grain.
//!
//! [`enable`] (what `replica-host log enable-change-feed` runs) adds it:
//! ```sql
//! ALTER TABLE replication_log ADD COLUMN IF NOT EXISTS replica_tx xid8;
//! ALTER TABLE replication_log ALTER COLUMN replica_tx SET DEFAULT pg_current_xact_id();
//! CREATE INDEX CONCURRENTLY IF NOT EXISTS replication_log_replica_tx ON replication_log (replica_tx);
//! ```
//! Orlando's INSERT names its seven columns, so the default fills
//! `replica_tx` with the inserting transaction's id, unseen by the writer,
//! which pays one 8-byte column and one index entry per row.
//!
//! The reader (`changes_since`) takes, in one REPEATABLE READ snapshot,
//! `hi = pg_snapshot_xmin(pg_current_snapshot())`: every transaction id
//! below `hi` has committed or aborted, so the rows with
//! `prev <= replica_tx < hi` are final and visible, and each window
//! `[prev, hi)` is read exactly once. A transaction still running holds
//! `hi` back (its rows and every later one wait), which delays but loses
//! nothing. Rows written before the column existed (`replica_tx` NULL) are
//! covered by the full listing that starts every cursor.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{Connection, Executor};

use super::pg_connect::invalid_url;
use super::pg_driver::{GRAIN_HEADS, error, has_code};
use super::{ChangeCursor, CursorState, HeadChanges, LogError, redact_password, seq};

/// The change feed column.
pub const COLUMN: &str = "replica_tx";
/// The index on [`COLUMN`].
pub const INDEX: &str = "replication_log_replica_tx";
/// The column's default: the inserting transaction's id.
pub const DEFAULT: &str = "pg_current_xact_id()";

const ADD_COLUMN: &str = "ALTER TABLE replication_log ADD COLUMN IF NOT EXISTS replica_tx xid8;";
const SET_DEFAULT: &str =
    "ALTER TABLE replication_log ALTER COLUMN replica_tx SET DEFAULT pg_current_xact_id();";
const CREATE_INDEX: &str = "CREATE INDEX CONCURRENTLY IF NOT EXISTS replication_log_replica_tx \
                            ON replication_log (replica_tx);";

/// The column's type and default, if the table has it.
const COLUMN_STATE: &str = "SELECT format_type(a.atttypid, a.atttypmod),
    pg_get_expr(d.adbin, d.adrelid)
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = to_regclass('replication_log') AND a.attname = 'replica_tx'
  AND NOT a.attisdropped";

/// The index on the table by that name: whether it is valid, and its schema.
const INDEX_STATE: &str = "SELECT i.indisvalid, n.nspname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid = to_regclass('replication_log') AND c.relname = 'replication_log_replica_tx'";

const HAS_TABLE: &str = "SELECT to_regclass('replication_log') IS NOT NULL";

/// The bound of a window: every transaction id below it has finished.
const BOUND: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text";

/// The heads among the rows of the transactions in `[$2, $3)`.
const WINDOW: &str = "SELECT grain_key, MAX(sequence) FROM replication_log
WHERE grain_type = $1 AND replica_tx >= $2::text::xid8 AND replica_tx < $3::text::xid8
  AND sequence >= 0
GROUP BY grain_key";

/// How long the DDL waits for a table lock before giving up, so writers do
/// not queue behind it for long.
const LOCK_TIMEOUT: &str = "SET lock_timeout = '10s'";

/// Whether the table has the change feed column (of type `xid8`).
pub(super) async fn has_column<'e, E>(executor: E) -> Result<bool, sqlx::Error>
where
    E: Executor<'e, Database = sqlx::Postgres>,
{
    let column: Option<(String, Option<String>)> = sqlx::query_as(COLUMN_STATE)
        .fetch_optional(executor)
        .await?;
    Ok(column.is_some_and(|(kind, _)| kind == "xid8"))
}

/// [`super::ReplicationLog::changes_since`] through the change feed: the
/// full listing without a cursor, else the heads among the rows of the
/// transactions that finished since; either way a cursor at the new bound.
pub(super) async fn changes_since(
    pool: &PgPool,
    grain_type: &str,
    since: Option<u64>,
) -> Result<HeadChanges, sqlx::Error> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    // The first statement takes the snapshot the rows are read in too.
    let bound: String = sqlx::query_scalar(BOUND).fetch_one(&mut *tx).await?;
    let hi = bound.parse::<u64>().map_err(|e| {
        sqlx::Error::Decode(format!("pg_snapshot_xmin {bound:?} is not a u64: {e}").into())
    })?;
    let (heads, complete, next) = match since {
        None => {
            let heads = sqlx::query_as(GRAIN_HEADS)
                .bind(grain_type)
                .fetch_all(&mut *tx)
                .await?;
            (heads, true, hi)
        }
        Some(prev) if prev < hi => {
            let heads = sqlx::query_as(WINDOW)
                .bind(grain_type)
                .bind(prev.to_string())
                .bind(hi.to_string())
                .fetch_all(&mut *tx)
                .await?;
            (heads, false, hi)
        }
        // Nothing finished since (or a server whose bound went back, e.g.
        // after a failover): an empty window, keep the cursor.
        Some(prev) => (Vec::new(), false, prev),
    };
    tx.commit().await?;
    Ok(HeadChanges {
        heads: seq::to_heads(heads),
        complete,
        cursor: Some(ChangeCursor(CursorState::Xid8(next))),
    })
}

/// The cursor [`changes_since`] would return now, without listing: every
/// transaction below it had finished.
pub(super) async fn cursor_now(pool: &PgPool) -> Result<ChangeCursor, sqlx::Error> {
    let bound: String = sqlx::query_scalar(BOUND).fetch_one(pool).await?;
    let hi = bound.parse::<u64>().map_err(|e| {
        sqlx::Error::Decode(format!("pg_snapshot_xmin {bound:?} is not a u64: {e}").into())
    })?;
    Ok(ChangeCursor(CursorState::Xid8(hi)))
}

/// What [`enable`] did or would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enabled {
    /// The DDL statements run (or, on a dry run, that would run), in order;
    /// empty when the feed was already in place.
    pub statements: Vec<String>,
    /// Whether they were applied (false on a dry run).
    pub applied: bool,
}

/// Adds the change feed to the PostgreSQL log at `url` (idempotent): the
/// column, its default and a valid index, each only when missing; an index
/// left INVALID by an interrupted build is dropped and built again.
/// `on_statement` is called with each statement before it runs. With
/// `dry_run`, only reports what it would run.
pub async fn enable(
    url: &str,
    dry_run: bool,
    mut on_statement: impl FnMut(&str),
) -> Result<Enabled, LogError> {
    let shown = redact_password(url);
    match super::url::LogUrl::parse(url)? {
        super::url::LogUrl::Postgres(_) => {}
        _ => {
            return Err(LogError::config(format!(
                "{shown}: the change feed is for PostgreSQL logs only \
                 (SQLite discovery is already incremental)"
            )));
        }
    }
    let options = PgConnectOptions::from_str(url).map_err(|e| invalid_url(&shown, e))?;
    let mut conn = match tokio::time::timeout(
        Duration::from_secs(10),
        PgConnection::connect_with(&options),
    )
    .await
    {
        Ok(conn) => conn.map_err(|e| error(&shown, e))?,
        Err(_) => {
            return Err(LogError::unavailable(format!(
                "{shown}: no connection within 10s"
            )));
        }
    };
    let result = enable_on(&mut conn, &shown, dry_run, &mut on_statement).await;
    let _ = conn.close().await;
    result
}

async fn enable_on(
    conn: &mut PgConnection,
    shown: &str,
    dry_run: bool,
    on_statement: &mut impl FnMut(&str),
) -> Result<Enabled, LogError> {
    let fail = |e: sqlx::Error| error(shown, e);
    let has_table: bool = sqlx::query_scalar(HAS_TABLE)
        .fetch_one(&mut *conn)
        .await
        .map_err(fail)?;
    if !has_table {
        return Err(LogError::missing(format!(
            "{shown}: the database has no table replication_log"
        )));
    }
    let statements = plan(conn, shown).await?;
    if dry_run || statements.is_empty() {
        return Ok(Enabled {
            statements,
            applied: false,
        });
    }
    conn.execute(LOCK_TIMEOUT).await.map_err(fail)?;
    for statement in &statements {
        on_statement(statement);
        if let Err(e) = conn.execute(statement.as_str()).await {
            let hint = if has_code(&e, &["55P03"]) {
                " (a long transaction holds the table; try again when it is done)"
            } else {
                ""
            };
            return Err(LogError::Backend {
                message: format!("{shown}: `{statement}` failed: {e}{hint}"),
                source: Some(e.into()),
            });
        }
    }
    // `IF NOT EXISTS` skips a name taken by some other relation: check.
    let left = plan(conn, shown).await?;
    if !left.is_empty() {
        return Err(LogError::backend(format!(
            "{shown}: the change feed is still incomplete after the DDL; still needed: {}",
            left.join(" ")
        )));
    }
    Ok(Enabled {
        statements,
        applied: true,
    })
}

/// The statements still needed, from the catalog.
async fn plan(conn: &mut PgConnection, shown: &str) -> Result<Vec<String>, LogError> {
    let fail = |e: sqlx::Error| error(shown, e);
    let column: Option<(String, Option<String>)> = sqlx::query_as(COLUMN_STATE)
        .fetch_optional(&mut *conn)
        .await
        .map_err(fail)?;
    let index: Option<(bool, String)> = sqlx::query_as(INDEX_STATE)
        .fetch_optional(&mut *conn)
        .await
        .map_err(fail)?;
    let mut statements = Vec::new();
    match &column {
        None => {
            statements.push(ADD_COLUMN.to_owned());
            statements.push(SET_DEFAULT.to_owned());
        }
        Some((kind, _)) if kind != "xid8" => {
            return Err(LogError::config(format!(
                "{shown}: replication_log.{COLUMN} exists with type {kind}, not xid8; \
                 drop or rename it first"
            )));
        }
        Some((_, default)) if default.as_deref() != Some(DEFAULT) => {
            statements.push(SET_DEFAULT.to_owned());
        }
        Some(_) => {}
    }
    match index {
        None => statements.push(CREATE_INDEX.to_owned()),
        Some((true, _)) => {}
        Some((false, schema)) => {
            // An interrupted CONCURRENTLY build leaves an INVALID index,
            // which `IF NOT EXISTS` would keep.
            statements.push(format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {}.{INDEX};",
                quote_ident(&schema)
            ));
            statements.push(CREATE_INDEX.to_owned());
        }
    }
    Ok(statements)
}

/// A PostgreSQL identifier, double-quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("public"), "\"public\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
