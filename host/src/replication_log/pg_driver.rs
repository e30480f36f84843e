//! What both PostgreSQL modules (the log and its change feed) share: the
//! driver's errors judged, its rows read loosely, and the heads query.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, TypeInfo, ValueRef};

use super::record::LooseColumns;
use super::{LogError, pg_connect};

/// Every grain of a type with its newest valid sequence, in key order.
pub(super) const GRAIN_HEADS: &str = "SELECT grain_key, MAX(sequence) FROM replication_log
WHERE grain_type = $1 AND sequence >= 0
GROUP BY grain_key ORDER BY grain_key";

/// Whether `err` is a database error with one of these SQLSTATEs.
pub(super) fn has_code(err: &sqlx::Error, codes: &[&str]) -> bool {
    match err {
        sqlx::Error::Database(db) => db.code().is_some_and(|c| codes.contains(&c.as_ref())),
        _ => false,
    }
}

/// Maps a sqlx error, naming the server: a lost, refused or timed-out
/// connection is [`LogError::Unavailable`]; a database that does not exist
/// is [`LogError::Missing`].
pub(super) fn error(url: &str, err: sqlx::Error) -> LogError {
    if let sqlx::Error::Database(db) = &err
        && db.code().as_deref() == Some("3D000")
    {
        return LogError::Missing {
            message: format!("{url}: {}", db.message()),
            source: Some(err.into()),
        };
    }
    let message = match pg_connect::tls_reason(&err) {
        Some(reason) => format!("{url}: TLS: {reason}"),
        None => format!("{url}: {err}"),
    };
    let unavailable = match &err {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P0x: the server shut down or is
            // starting; 53300: too many connections.
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    };
    LogError::from_driver(unavailable, message, err)
}

/// What a column holds, if it cannot be read: `NULL` or its SQL type.
fn unreadable(row: &PgRow, column: &str) -> Option<String> {
    match row.try_get_raw(column) {
        Ok(raw) if raw.is_null() => Some("found NULL".to_owned()),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// An integer column of any width, read loosely.
fn loose_int(row: &PgRow, column: &str) -> Result<i64, String> {
    if let Some(why) = unreadable(row, column) {
        return Err(why);
    }
    let type_name = row
        .try_get_raw(column)
        .map(|raw| raw.type_info().name().to_owned())
        .map_err(|e| e.to_string())?;
    let value = match type_name.as_str() {
        "INT8" => row.try_get::<i64, _>(column),
        "INT4" => row.try_get::<i32, _>(column).map(i64::from),
        "INT2" => row.try_get::<i16, _>(column).map(i64::from),
        other => return Err(format!("expected an integer, found {other}")),
    };
    value.map_err(|e| e.to_string())
}

/// Any other column, read loosely.
fn loose<'r, T>(row: &'r PgRow, column: &str) -> Result<T, String>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    if let Some(why) = unreadable(row, column) {
        return Err(why);
    }
    row.try_get(column).map_err(|e| e.to_string())
}

/// Integers of any width; NULL or another SQL type is the column's fault.
impl LooseColumns for PgRow {
    fn integer(&self, column: &str) -> Result<i64, String> {
        loose_int(self, column)
    }

    fn text(&self, column: &str) -> Result<String, String> {
        loose(self, column)
    }

    fn blob(&self, column: &str) -> Result<Vec<u8>, String> {
        loose(self, column)
    }
}
