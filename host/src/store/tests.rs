//! Unit tests of the replica store ([`super::ReplicaStore`]).

use std::sync::Arc;

use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::value::{State, Value};

#[derive(serde::Serialize)]
struct Counter {
    count: i64,
}

fn snap(sequence: u64, count: i64, timestamp_millis: i64) -> DecodedSnapshot {
    DecodedSnapshot {
        state: State::from_serialize(&Counter { count }).unwrap(),
        sequence,
        timestamp_millis,
        source_cluster: "us-east".into(),
        decoded_by: None,
    }
}

fn by(sha256: &str) -> Option<Arc<crate::decode::DecodedBy>> {
    Some(Arc::new(crate::decode::DecodedBy {
        plugin: "counter.wasm".into(),
        sha256: sha256.into(),
        schema_version: "1".into(),
    }))
}

#[test]
fn the_same_sequence_applies_again_only_from_another_plugin_build() {
    let store = ReplicaStore::new();
    let first = DecodedSnapshot {
        decoded_by: by("aa"),
        ..snap(5, 1, 1_000)
    };
    store
        .apply("Counter", "a", first.clone(), ReplicaStatus::Ok)
        .unwrap();
    let again = store.apply("Counter", "a", first, ReplicaStatus::Ok);
    assert_eq!(again.unwrap_err().current, 5, "same build, same sequence");
    let older = DecodedSnapshot {
        decoded_by: by("bb"),
        ..snap(4, 9, 1_000)
    };
    assert!(
        store
            .apply("Counter", "a", older, ReplicaStatus::Ok)
            .is_err(),
        "never backwards, whatever decoded it"
    );
    let redecoded = DecodedSnapshot {
        decoded_by: by("bb"),
        ..snap(5, 2, 1_000)
    };
    let replica = store
        .apply("Counter", "a", redecoded, ReplicaStatus::Ok)
        .unwrap();
    assert_eq!(replica.sequence, 5);
    assert_eq!(replica.decoded_by.unwrap().sha256, "bb");
    assert_eq!(
        store
            .get("Counter", "a")
            .unwrap()
            .state
            .unwrap()
            .field("count"),
        Some(Value::I64(2))
    );
}

#[test]
fn remove_type_drops_every_replica_of_the_type_and_publishes_each() {
    let store = ReplicaStore::new();
    let mut changes = store.subscribe();
    for key in ["a", "b"] {
        store
            .apply("Counter", key, snap(1, 1, 1_000), ReplicaStatus::Ok)
            .unwrap();
    }
    store
        .apply("Other", "a", snap(1, 1, 1_000), ReplicaStatus::Ok)
        .unwrap();
    while changes.try_recv().is_ok() {}
    assert_eq!(store.remove_type("Counter"), 2);
    assert!(store.get("Counter", "a").is_none());
    assert!(store.get("Other", "a").is_some());
    let removed: Vec<_> = std::iter::from_fn(|| changes.try_recv().ok())
        .map(|c| (c.kind, c.replica.grain_key))
        .collect();
    assert_eq!(
        removed,
        [
            (ChangeKind::Removed, "a".to_string()),
            (ChangeKind::Removed, "b".to_string())
        ]
    );
    assert_eq!(store.remove_type("Counter"), 0);
}

#[test]
fn apply_then_get_returns_the_snapshot() {
    let store = ReplicaStore::new();
    store
        .apply("Counter", "a", snap(3, 7, 1_000), ReplicaStatus::Ok)
        .unwrap();
    let replica = store.get("Counter", "a").unwrap();
    assert_eq!(replica.sequence, 3);
    assert_eq!(replica.timestamp_millis, 1_000);
    assert_eq!(replica.source_cluster, "us-east");
    assert_eq!(replica.status, ReplicaStatus::Ok);
    assert!(replica.applied_at.is_some());
    assert_eq!(replica.state.unwrap().field("count"), Some(Value::I64(7)));
    assert_eq!(store.applied_sequence("Counter", "a"), Some(3));
    assert!(store.get("Counter", "b").is_none());
    assert!(store.get("Other", "a").is_none());
}

#[test]
fn apply_refuses_older_and_equal_sequences() {
    let store = ReplicaStore::new();
    store
        .apply("Counter", "a", snap(5, 1, 0), ReplicaStatus::Ok)
        .unwrap();
    let err = store
        .apply("Counter", "a", snap(5, 2, 0), ReplicaStatus::Ok)
        .unwrap_err();
    assert_eq!((err.current, err.offered), (5, 5));
    let err = store
        .apply("Counter", "a", snap(4, 3, 0), ReplicaStatus::Ok)
        .unwrap_err();
    assert_eq!((err.current, err.offered), (5, 4));
    let replica = store.get("Counter", "a").unwrap();
    assert_eq!(replica.sequence, 5);
    assert_eq!(replica.state.unwrap().field("count"), Some(Value::I64(1)));
    store
        .apply("Counter", "a", snap(9, 4, 0), ReplicaStatus::Ok)
        .unwrap();
    assert_eq!(store.applied_sequence("Counter", "a"), Some(9));
}

#[test]
fn set_status_keeps_state_and_creates_stateless_replicas() {
    let store = ReplicaStore::new();
    let failing = ReplicaStatus::Failing {
        sequence: 2,
        reason: "trap".into(),
    };
    assert!(store.set_status("Counter", "new", failing.clone()));
    assert!(!store.set_status("Counter", "new", failing.clone()));
    let replica = store.get("Counter", "new").unwrap();
    assert!(!replica.has_state());
    assert_eq!(replica.sequence, 0);
    assert_eq!(replica.status, failing);
    assert_eq!(store.applied_sequence("Counter", "new"), None);

    store
        .apply("Counter", "a", snap(1, 1, 0), ReplicaStatus::Ok)
        .unwrap();
    assert!(store.set_status("Counter", "a", ReplicaStatus::Behind { delta_sequence: 2 }));
    let replica = store.get("Counter", "a").unwrap();
    assert_eq!(replica.status, ReplicaStatus::Behind { delta_sequence: 2 });
    assert_eq!(replica.sequence, 1);
    assert!(replica.has_state());

    // A stateless replica accepts its first snapshot.
    store
        .apply("Counter", "new", snap(3, 3, 0), ReplicaStatus::Ok)
        .unwrap();
    assert_eq!(store.applied_sequence("Counter", "new"), Some(3));
}

#[test]
fn keys_are_sorted_and_paginated() {
    let store = ReplicaStore::new();
    for key in ["d", "a", "c", "b", "e"] {
        store
            .apply("Counter", key, snap(1, 0, 0), ReplicaStatus::Ok)
            .unwrap();
    }
    store
        .apply("Other", "z", snap(1, 0, 0), ReplicaStatus::Ok)
        .unwrap();
    assert_eq!(store.keys("Counter", None, 2), ["a", "b"]);
    assert_eq!(store.keys("Counter", Some("b"), 2), ["c", "d"]);
    assert_eq!(store.keys("Counter", Some("d"), 10), ["e"]);
    assert!(store.keys("Counter", Some("e"), 10).is_empty());
    assert_eq!(store.keys("Counter", Some("bb"), 1), ["c"]);
    assert!(store.keys("Missing", None, 10).is_empty());
    assert!(store.keys("Counter", None, 0).is_empty());
    assert_eq!(store.grain_types(), ["Counter", "Other"]);
}

#[test]
fn status_counts_per_grain_type() {
    let store = ReplicaStore::new();
    store
        .apply("Counter", "a", snap(1, 0, 0), ReplicaStatus::Ok)
        .unwrap();
    store
        .apply(
            "Counter",
            "b",
            snap(1, 0, 0),
            ReplicaStatus::Behind { delta_sequence: 2 },
        )
        .unwrap();
    store.set_status(
        "Counter",
        "c",
        ReplicaStatus::Failing {
            sequence: 1,
            reason: "x".into(),
        },
    );
    store.set_status(
        "Counter",
        "d",
        ReplicaStatus::Failing {
            sequence: 4,
            reason: "y".into(),
        },
    );
    store
        .apply("Other", "a", snap(1, 0, 0), ReplicaStatus::Ok)
        .unwrap();
    let counts = store.status_counts("Counter");
    assert_eq!(
        counts,
        StatusCounts {
            ok: 1,
            behind: 1,
            failing: 2
        }
    );
    assert_eq!(counts.total(), 4);
    assert_eq!(store.status_counts("Other").total(), 1);
    assert_eq!(store.status_counts("Missing"), StatusCounts::default());
}

#[test]
fn freshness_follows_orlando() {
    let store = ReplicaStore::new();
    store
        .apply("Counter", "a", snap(1, 0, 10_000), ReplicaStatus::Ok)
        .unwrap();
    assert!(store.is_fresh_at("Counter", "a", 500, 10_500));
    assert!(!store.is_fresh_at("Counter", "a", 500, 10_501));
    // A timestamp ahead of our clock is fresh.
    assert!(store.is_fresh_at("Counter", "a", 0, 9_000));
    // Extreme values do not overflow.
    assert!(store.is_fresh_at("Counter", "a", u64::MAX, i64::MAX));
    assert!(!store.is_fresh_at("Counter", "missing", u64::MAX, 0));
    // A grain without state is never fresh.
    store.set_status(
        "Counter",
        "b",
        ReplicaStatus::Failing {
            sequence: 1,
            reason: "x".into(),
        },
    );
    assert!(!store.is_fresh_at("Counter", "b", u64::MAX, 0));
    // Wall clock: a snapshot stamped now is fresh within a minute.
    store
        .apply(
            "Counter",
            "now",
            snap(1, 0, now_millis()),
            ReplicaStatus::Ok,
        )
        .unwrap();
    assert!(store.is_fresh("Counter", "now", 60_000));
    assert!(!store.is_fresh("Counter", "a", 60_000));
}

#[test]
fn subscribers_see_changes_in_order() {
    let store = ReplicaStore::new();
    let mut rx = store.subscribe();
    store
        .apply("Counter", "a", snap(1, 1, 0), ReplicaStatus::Ok)
        .unwrap();
    let _ = store.apply("Counter", "a", snap(1, 1, 0), ReplicaStatus::Ok); // refused: no event
    store.set_status("Counter", "a", ReplicaStatus::Behind { delta_sequence: 2 });
    store.set_status("Counter", "a", ReplicaStatus::Behind { delta_sequence: 2 }); // unchanged
    store.remove("Counter", "a").unwrap();

    let first = rx.try_recv().unwrap();
    assert_eq!(first.kind, ChangeKind::Applied);
    assert_eq!(
        (first.replica.grain_key.as_str(), first.replica.sequence),
        ("a", 1)
    );
    let second = rx.try_recv().unwrap();
    assert_eq!(second.kind, ChangeKind::Status);
    assert_eq!(
        second.replica.status,
        ReplicaStatus::Behind { delta_sequence: 2 }
    );
    assert_eq!(rx.try_recv().unwrap().kind, ChangeKind::Removed);
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    assert!(store.get("Counter", "a").is_none());
    assert!(store.grain_types().is_empty());
}

#[test]
fn concurrent_appliers_never_go_backwards() {
    let store = Arc::new(ReplicaStore::new());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..500u64 {
                    let seq = i * 4 + t + 1;
                    let _ = store.apply("Counter", "a", snap(seq, 0, 0), ReplicaStatus::Ok);
                    let seen = store.applied_sequence("Counter", "a").unwrap();
                    assert!(seen >= seq);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.applied_sequence("Counter", "a"), Some(2000));
}

fn feed_of(store: &ReplicaStore, after: Cursor) -> (Vec<(String, u64, bool)>, Cursor) {
    match store.feed("Counter", after, 100) {
        FeedPage::Changes { changes, next } => (
            changes
                .into_iter()
                .map(|change| match change {
                    FeedChange::Replica {
                        replica,
                        new_sequence,
                        ..
                    } => (replica.grain_key, replica.sequence, new_sequence),
                    FeedChange::Removed { grain_key, .. } => (format!("-{grain_key}"), 0, false),
                })
                .collect(),
            next,
        ),
        FeedPage::Resync => panic!("unexpected resync"),
    }
}

#[test]
fn the_feed_gives_each_grain_once_at_its_newest_and_marks_repeated_sequences() {
    let store = ReplicaStore::new();
    store
        .apply("Counter", "a", snap(1, 1, 0), ReplicaStatus::Ok)
        .unwrap();
    store
        .apply("Counter", "b", snap(1, 1, 0), ReplicaStatus::Ok)
        .unwrap();
    store
        .apply("Counter", "a", snap(2, 2, 0), ReplicaStatus::Ok)
        .unwrap();
    let (first, cursor) = feed_of(&store, store.feed_start());
    assert_eq!(first, [("b".into(), 1, true), ("a".into(), 2, true)]);

    // A status change keeps the sequence: not new to a reader at `cursor`.
    let failing = ReplicaStatus::Failing {
        sequence: 3,
        reason: "trap".into(),
    };
    assert!(store.set_status("Counter", "a", failing));
    store
        .apply("Counter", "b", snap(5, 5, 0), ReplicaStatus::Ok)
        .unwrap();
    store.remove("Counter", "b");
    let (second, after_second) = feed_of(&store, cursor);
    assert_eq!(second, [("a".into(), 2, false), ("-b".into(), 0, false)]);
    assert_eq!(feed_of(&store, after_second).0, []);

    // A cursor of another store instance (another run) must resync.
    let other = ReplicaStore::new();
    assert!(matches!(
        other.feed("Counter", cursor, 10),
        FeedPage::Resync
    ));
    // A type removed and added again: positions before the removal resync.
    store.remove_type("Counter");
    store
        .apply("Counter", "c", snap(1, 1, 0), ReplicaStatus::Ok)
        .unwrap();
    assert!(matches!(
        store.feed("Counter", after_second, 10),
        FeedPage::Resync
    ));
}

#[tokio::test]
async fn wait_for_wakes_on_its_grain_and_unregisters() {
    let store = Arc::new(ReplicaStore::new());
    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .wait_for("Counter", "a", std::time::Duration::from_secs(60), |r| {
                    r.is_some_and(|r| r.sequence >= 2)
                })
                .await
        })
    };
    while store.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    store
        .apply("Counter", "other", snap(9, 9, 0), ReplicaStatus::Ok)
        .unwrap();
    store
        .apply("Counter", "a", snap(1, 1, 0), ReplicaStatus::Ok)
        .unwrap();
    assert!(!waiter.is_finished());
    store
        .apply("Counter", "a", snap(2, 2, 0), ReplicaStatus::Ok)
        .unwrap();
    assert_eq!(waiter.await.unwrap().unwrap().sequence, 2);
    assert_eq!(store.waiting(), 0);
}

fn restored(key: &str, sequence: u64, count: i64) -> Restored {
    Restored {
        grain_key: key.into(),
        state: Some(State::from_serialize(&Counter { count }).unwrap()),
        sequence,
        timestamp_millis: 1_000,
        source_cluster: "eu".into(),
        decoded_by: None,
        status: ReplicaStatus::Ok,
    }
}

#[test]
fn a_restore_into_an_empty_type_in_key_order_holds_every_replica_and_feeds_it() {
    let store = ReplicaStore::new();
    let mut replicas: Vec<Restored> = (0..100)
        .map(|n| restored(&format!("k{n:04}"), n + 1, n as i64))
        .collect();
    replicas[7] = Restored {
        state: None,
        status: ReplicaStatus::Failing {
            sequence: 3,
            reason: "trap".into(),
        },
        ..restored("k0007", 0, 0)
    };
    assert_eq!(store.restore("Counter", replicas), 100);
    assert_eq!(store.version(), 100);
    assert_eq!(store.get("Counter", "k0050").unwrap().sequence, 51);
    assert_eq!(store.get("Counter", "k0050").unwrap().source_cluster, "eu");
    let never = store.get("Counter", "k0007").unwrap();
    assert!(!never.has_state());
    assert_eq!((never.sequence, never.source_cluster.as_str()), (0, ""));
    assert_eq!(store.status_counts("Counter").failing, 1);
    assert_eq!(store.keys("Counter", Some("k0097"), 10), ["k0098", "k0099"]);
    // The feed holds each in restore order, and later changes after them.
    let (changes, next) = feed_of(&store, store.feed_start());
    assert_eq!(changes.len(), 100);
    assert_eq!(changes[0].0, "k0000");
    assert_eq!(changes[99].0, "k0099");
    store
        .apply("Counter", "k0001", snap(9, 9, 1), ReplicaStatus::Ok)
        .unwrap();
    let (changes, _) = feed_of(&store, next);
    assert_eq!(changes, [("k0001".to_owned(), 9, true)]);
}

#[test]
fn a_restore_beside_existing_replicas_keeps_their_state() {
    let store = ReplicaStore::new();
    store
        .apply("Counter", "b", snap(5, 5, 1), ReplicaStatus::Ok)
        .unwrap();
    // Not in key order, and the type holds a replica: one at a time.
    let restored_count = store.restore(
        "Counter",
        vec![
            restored("c", 2, 2),
            restored("b", 1, 1),
            restored("a", 3, 3),
        ],
    );
    assert_eq!(restored_count, 2);
    assert_eq!(store.get("Counter", "b").unwrap().sequence, 5);
    assert_eq!(store.get("Counter", "a").unwrap().sequence, 3);
    assert_eq!(store.keys("Counter", None, 10), ["a", "b", "c"]);
}

#[test]
fn a_quiet_apply_still_reaches_subscribers_and_the_feed() {
    let store = ReplicaStore::new();
    store
        .apply_quietly("Counter", "a", snap(1, 1, 1), ReplicaStatus::Ok)
        .unwrap();
    let mut changes = store.subscribe();
    store
        .apply_quietly("Counter", "a", snap(2, 2, 1), ReplicaStatus::Ok)
        .unwrap();
    let change = changes.try_recv().unwrap();
    assert_eq!(
        (change.kind, change.replica.sequence),
        (ChangeKind::Applied, 2)
    );
    assert!(
        store
            .apply_quietly("Counter", "a", snap(1, 9, 1), ReplicaStatus::Ok)
            .is_err()
    );
    let (fed, _) = feed_of(&store, store.feed_start());
    assert_eq!(fed, [("a".to_owned(), 2, true)]);
    assert_eq!(*store.versions().borrow(), 2);
}
