//! A real PostgreSQL for tests, each in a schema of its own.
//!
//! The server comes from `REPLICA_TEST_POSTGRES_URL` (default
//! [`DEFAULT_URL`]). When it cannot be reached, [`isolated_schema`] returns
//! `None` after printing a `SKIPPED:` line, or panics when `CI` is set or
//! `REPLICA_REQUIRE_POSTGRES=1`.

use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use replica_host::replication_log::redact_password;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};

/// The server tests use unless `REPLICA_TEST_POSTGRES_URL` names another.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test server's URL.
pub fn server_url() -> String {
    std::env::var("REPLICA_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// Whether an unreachable server must fail the test rather than skip it.
pub fn postgres_required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty());
    ci || std::env::var("REPLICA_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// A freshly created schema, dropped (with its tables) on drop.
pub struct PgSchema {
    name: String,
    url: String,
    admin_url: String,
}

impl PgSchema {
    /// The schema's name; also the `application_name` of connections made
    /// through [`PgSchema::url`], to find them in `pg_stat_activity`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server URL with `search_path` set to this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server URL as configured, for admin work outside the schema.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// An admin connection (plain server URL).
    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.admin_url)
            .await
            .expect("admin connection to the test PostgreSQL")
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let drop_sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .execute("SET lock_timeout = '10s'")
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .execute(drop_sql.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = dropped.map_err(|_| "panicked".to_owned()) {
            eprintln!("warning: could not drop test schema {}: {e}", self.name);
        }
    }
}

/// A new schema named after `label` on the test server, with a URL whose
/// connections use it, or `None` (test skipped) when the server is
/// unreachable and not required.
pub async fn isolated_schema(label: &str) -> Option<PgSchema> {
    let admin_url = server_url();
    let mut admin = match connect(&admin_url).await {
        Ok(admin) => admin,
        Err(cause) => {
            let shown = redact_password(&admin_url);
            if postgres_required() {
                panic!(
                    "PostgreSQL not reachable at {shown} ({cause}); it is required here \
                     (CI or REPLICA_REQUIRE_POSTGRES=1): start it or set REPLICA_TEST_POSTGRES_URL"
                );
            }
            // Straight to stderr: libtest would swallow eprintln! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL not reachable at {shown} (set REPLICA_TEST_POSTGRES_URL)\n  \
                 cause: {cause}"
            );
            return None;
        }
    };
    let name = unique_name(label);
    admin
        .execute(format!("CREATE SCHEMA \"{name}\"").as_str())
        .await
        .expect("create test schema");
    let separator = if admin_url.contains('?') { '&' } else { '?' };
    let url =
        format!("{admin_url}{separator}options=-c%20search_path%3D{name}&application_name={name}");
    let schema = PgSchema {
        name,
        url,
        admin_url,
    };
    // The isolation rests on the server honouring the URL's search_path.
    let mut conn = connect(&schema.url)
        .await
        .expect("connect to the test schema");
    let current: Option<String> = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut conn)
        .await
        .expect("current_schema()");
    assert_eq!(
        current.as_deref(),
        Some(schema.name()),
        "search_path from the URL"
    );
    Some(schema)
}

async fn connect(url: &str) -> Result<PgConnection, String> {
    let options = PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("timed out after 5s".to_owned()),
    }
}

/// `rt_<label>_<pid>_<n>_<time>`: lower case, at most 63 bytes.
fn unique_name(label: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "rt_{label}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
