//! What only the PostgreSQL backend does: schemas and roles, read-only
//! sessions, connections lost and healed.

use crate::harness::*;

// ---------------------------------------------------------------------------
// PostgreSQL

#[tokio::test]
async fn postgres_table_is_created_in_the_isolated_schema() {
    let Some(schema) = pg::isolated_schema("table_in_schema").await else {
        return;
    };
    let log = replication_log::create(schema.url()).await.unwrap();
    log.ping().await.unwrap();
    let mut admin = schema.admin().await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
         WHERE table_schema = $1 AND table_name = 'replication_log'",
    )
    .bind(schema.name())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(tables, 1);
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = $1 AND table_name = 'replication_log' ORDER BY ordinal_position",
    )
    .bind(schema.name())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let columns: Vec<(&str, &str)> = columns
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("grain_type", "text"),
            ("grain_key", "text"),
            ("sequence", "bigint"),
            ("timestamp_millis", "bigint"),
            ("source_cluster", "text"),
            ("entry_type", "smallint"),
            ("payload", "bytea"),
        ]
    );
}

/// `url` with `user:password@` as its user info.
fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{scheme}://{user}:{password}@{host}")
}

#[tokio::test]
async fn postgres_reader_without_create_rights_opens_the_primary_table() {
    let Some(schema) = pg::isolated_schema("reader_role").await else {
        return;
    };
    let owner = PostgresLog::create(schema.url()).await.unwrap();
    owner.append(&entry(COUNTER, "a", 1, b"one")).await.unwrap();
    let role = format!("{}_reader", schema.name());
    let mut admin = schema.admin().await;
    for sql in [
        format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'reader-pw'"),
        format!("GRANT USAGE ON SCHEMA \"{}\" TO \"{role}\"", schema.name()),
        format!(
            "GRANT SELECT ON \"{}\".replication_log TO \"{role}\"",
            schema.name()
        ),
    ] {
        admin.execute(sql.as_str()).await.unwrap();
    }

    // The host as a pure reader: CREATE TABLE is denied, the table is there.
    let reader_url = with_user(schema.url(), &role, "reader-pw");
    let outcome = async {
        let reader = PostgresLog::connect(&reader_url).await?;
        let rows = reader.read_from(COUNTER, "a", 0, 10).await?;
        reader.close().await;
        Ok::<_, LogError>(rows)
    }
    .await;
    for sql in [
        format!("DROP OWNED BY \"{role}\""),
        format!("DROP ROLE \"{role}\""),
    ] {
        admin.execute(sql.as_str()).await.unwrap();
    }

    let rows = outcome.expect("a reader opens and reads the log");
    assert_eq!(shape(&rows), ["e1"]);
    // A reader has no `append` to call (`PostgresLog` is no `LogWriter`),
    // and its sessions are read-only besides.
}

/// The backend pids of the connections made through `schema`'s URL.
async fn schema_backends(schema: &PgSchema) -> Vec<i32> {
    let mut admin = schema.admin().await;
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
        .bind(schema.name())
        .fetch_all(&mut admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_recovers_after_its_connections_are_terminated() {
    let Some(schema) = pg::isolated_schema("terminated").await else {
        return;
    };
    let log = PostgresLog::create(schema.url()).await.unwrap();
    for s in 1..=3 {
        log.append(&entry(COUNTER, "a", s, &[s as u8]))
            .await
            .unwrap();
    }
    assert_eq!(log.read_from(COUNTER, "a", 0, 10).await.unwrap().len(), 3);

    let before = schema_backends(&schema).await;
    assert!(!before.is_empty(), "the pool holds connections");
    let mut admin = schema.admin().await;
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(schema.name())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(terminated.iter().any(|t| *t), "terminated {terminated:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while schema_backends(&schema)
        .await
        .iter()
        .any(|p| before.contains(p))
    {
        assert!(Instant::now() < deadline, "backends did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The next call finds the dead connections and opens new ones.
    let rows = log.read_from(COUNTER, "a", 0, 10).await.unwrap();
    assert_eq!(shape(&rows), ["e1", "e2", "e3"], "nothing lost");
    assert_eq!(&as_entry(&rows[2]).payload[..], [3]);
    log.append(&entry(COUNTER, "a", 4, b"")).await.unwrap();
    assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 4);
    let after = schema_backends(&schema).await;
    assert!(!after.is_empty() && after.iter().all(|p| !before.contains(p)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_unavailable_then_heals() {
    let Some(schema) = pg::isolated_schema("outage").await else {
        return;
    };
    let relay = Relay::start(relay::upstream_of(schema.url()).await, 0).await;
    let url = relay::via_port(schema.url(), relay.port);
    let log = PostgresLog::create_with_timeout(&url, Duration::from_millis(1500))
        .await
        .unwrap();
    log.append(&entry(COUNTER, "a", 1, b"one")).await.unwrap();
    log.append(&entry(COUNTER, "a", 2, b"two")).await.unwrap();

    let (upstream, port) = relay.cut().await;
    for attempt in [
        log.read_from(COUNTER, "a", 0, 10).await.map(drop),
        log.ping().await,
        log.append(&entry(COUNTER, "a", 3, b"")).await.map(drop),
    ] {
        match attempt {
            Err(LogError::Unavailable { message, .. }) => {
                assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}")
            }
            other => panic!("during the outage: {other:?}"),
        }
    }

    let relay = Relay::start(upstream, port).await;
    let rows = log.read_from(COUNTER, "a", 0, 10).await.unwrap();
    assert_eq!(
        shape(&rows),
        ["e1", "e2"],
        "nothing lost, nothing half-written"
    );
    log.append(&entry(COUNTER, "a", 3, b"three")).await.unwrap();
    assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 3);
    relay.cut().await;
}

#[tokio::test]
async fn postgres_unreachable_server_is_unavailable_without_the_password() {
    // Nothing listens on port 1; no server is needed for this one.
    let url = "postgres://orlando:hunter2@127.0.0.1:1/replication";
    let started = Instant::now();
    match PostgresLog::connect_with_timeout(url, Duration::from_millis(300)).await {
        Err(LogError::Unavailable { message, .. }) => {
            assert!(message.contains("127.0.0.1:1/replication"), "{message}");
            assert!(!message.contains("hunter2"), "password shown: {message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}
