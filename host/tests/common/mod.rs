//! Helpers shared by the integration tests.

pub mod pg;
pub mod relay;

use replica_host::replication_log::LogError;

/// The database's own code for the driver error beneath `err` (the
/// SQLSTATE for PostgreSQL, the extended result code for SQLite), if the
/// error kept one as its source.
pub fn db_code(err: &LogError) -> Option<String> {
    let source = std::error::Error::source(err)?;
    match source.downcast_ref::<sqlx::Error>()? {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}
