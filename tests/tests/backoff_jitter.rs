//! Retries after a log outage are spread by full jitter, through the real
//! `replica-host run` on a real PostgreSQL: the grains that failed together
//! do not come back together.
//!
//! The outage is a privilege taken away: the host's role may still list
//! grains (the key and sequence columns) but not read their payloads, so
//! every grain with a new snapshot fails its reads and backs off, until
//! the privilege is given back.

use std::time::{Duration, Instant};

use replica_e2e::daemon::{self, Daemon, metric};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::payloads::counter;
use replica_e2e::pg;
use sqlx::Executor;

const WAIT: Duration = Duration::from_secs(60);
const GRAINS: usize = 40;

/// `url` with `user:password@` as its credentials.
fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host_start = rest
        .find('@')
        .filter(|at| rest.find('/').is_none_or(|slash| at < &slash))
        .map_or(0, |at| at + 1);
    format!("{scheme}://{user}:{password}@{}", &rest[host_start..])
}

#[test]
fn retries_after_a_log_outage_are_spread_by_jitter() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(schema) = rt.block_on(pg::isolated_schema("jitter")) else {
        return;
    };
    let writer = LogWriter::open(schema.url());
    for i in 0..GRAINS {
        writer.full("Counter", &format!("c-{i}"), 1, counter(1));
    }
    let role = format!("{}_reader", schema.name());
    let table = format!("\"{}\".replication_log", schema.name());
    let admin = |sql: String| {
        rt.block_on(async {
            let mut conn = schema.admin().await;
            conn.execute(sql.as_str())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        })
    };
    admin(format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'reader'"));
    admin(format!(
        "GRANT USAGE ON SCHEMA \"{}\" TO \"{role}\"",
        schema.name()
    ));
    admin(format!("GRANT SELECT ON {table} TO \"{role}\""));

    let dir = tempfile::tempdir().unwrap();
    let plugins = daemon::plugins(dir.path(), &[("Counter", "counter-plugin")]);
    let config = daemon::config(&with_user(schema.url(), &role, "reader"), &plugins)
        .replace("max_backoff_ms = 400", "max_backoff_ms = 2000");
    let d = Daemon::start(dir.path(), &config);
    d.wait_for("/readyz", WAIT, |r| r.status == 200);

    // The outage: listing works, reading payloads does not.
    admin(format!("REVOKE SELECT ON {table} FROM \"{role}\""));
    admin(format!(
        "GRANT SELECT (grain_type, grain_key, sequence) ON {table} TO \"{role}\""
    ));
    for i in 0..GRAINS {
        writer.full("Counter", &format!("c-{i}"), 2, counter(2));
    }
    // Let every grain fail a few times, its ceiling grow to the cap.
    let failing = Instant::now();
    loop {
        let errors = metric(
            &d.get("/metrics").body,
            r#"replica_log_read_errors_total{grain_type="Counter"}"#,
        )
        .unwrap_or(0.0);
        if errors >= 4.0 * GRAINS as f64 && failing.elapsed() > Duration::from_secs(4) {
            break;
        }
        assert!(failing.elapsed() < WAIT, "reads did not fail: {errors}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The log is back: when does each grain retry and apply?
    admin(format!("GRANT SELECT ON {table} TO \"{role}\""));
    let mut applied: Vec<i64> = (0..GRAINS)
        .map(|i| {
            d.wait_for_replica("Counter", &format!("c-{i}"), WAIT, |r| r["sequence"] == 2)
                ["applied_at_millis"]
                .as_i64()
                .unwrap()
        })
        .collect();
    applied.sort();
    let spread = applied[GRAINS - 1] - applied[0];
    let mut quarters: Vec<i64> = applied.iter().map(|t| (t - applied[0]) / 250).collect();
    quarters.dedup();
    eprintln!(
        "after the outage {GRAINS} grains applied over {spread} ms, in {} distinct 250 ms windows (ms after the first: {:?})",
        quarters.len(),
        applied.iter().map(|t| t - applied[0]).collect::<Vec<_>>()
    );
    drop(d);
    admin(format!("DROP OWNED BY \"{role}\""));
    admin(format!("DROP ROLE \"{role}\""));
    // In lockstep every grain would come back within one retry, a few ms
    // apart; with full jitter under a ceiling near 2 s they spread.
    assert!(spread >= 400, "spread {spread} ms");
    assert!(quarters.len() >= 3, "{quarters:?}");
}
