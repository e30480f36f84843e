//! The replication log backends: one behavioural suite run against the
//! in-memory log, a SQLite file and a real PostgreSQL (`shared`), then what
//! is special to each backend (`memory`, `sqlite`, `postgres`). The
//! backends under test and the helpers are in `harness`.

mod harness;
mod memory;
mod postgres;
mod shared;
mod sqlite;

use crate::harness::*;

// ---------------------------------------------------------------------------
// open()

#[tokio::test]
async fn open_memory_url_gives_a_working_log() {
    let log = replication_log::create("memory://").await.unwrap();
    log.append(&entry(COUNTER, "a", 1, b"x")).await.unwrap();
    assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 1);
    // The reader's open of `memory://` is a log of its own, empty.
    let reader = replication_log::open("memory://").await.unwrap();
    assert_eq!(reader.latest_sequence(COUNTER, "a").await.unwrap(), 0);
}

#[tokio::test]
async fn open_rejects_unknown_schemes_naming_them() {
    for (url, named) in [
        ("redis://user:pw@localhost/0", "redis"),
        ("mysql://localhost/db", "mysql"),
    ] {
        match replication_log::open(url).await {
            Err(LogError::Config { message, .. }) => {
                assert!(message.contains(named), "{message}");
                assert!(!message.contains(":pw@"), "password shown: {message}");
            }
            Err(other) => panic!("{url}: {other:?}"),
            Ok(_) => panic!("{url}: opened"),
        }
    }
    for url in ["no-scheme-here", "sqlite://", ""] {
        assert!(
            matches!(
                replication_log::open(url).await,
                Err(LogError::Config { .. })
            ),
            "{url:?}"
        );
    }
}
