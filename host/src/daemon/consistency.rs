//! What a replica answer says about its position and freshness, and the
//! reads that wait for a position or refuse a stale answer.
//!
//! - **Position and freshness** ([`Freshness::of`]): every replica answer
//!   carries `Replica-Sequence`, `Replica-Timestamp` (the snapshot's own
//!   time, RFC 3339) and `Replica-Staleness-Ms`: how long ago the host last
//!   knew this grain current with the log. That is the start of its type's
//!   newest listing whose grains are all read (`consumer::freshness`), or
//!   the snapshot's own time when that is later (the snapshot was the
//!   newest when the primary wrote it). A grain that is failing or behind
//!   is known not current: its staleness counts from its snapshot's time.
//! - **Read-your-writes** ([`wait_for_sequence`]): `min_sequence=N` answers
//!   once the applied sequence is at least N, waiting up to `wait_ms`
//!   (capped by `[http] max_wait_ms`) on the grain's own wake-up, holding
//!   no thread; then 409 `not_yet`, or at once 409 `failing`.
//! - **Bounded staleness**: `max_staleness_ms=S` answers 409 `stale` when
//!   the staleness exceeds S.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::consumer::Freshness as TypeConfirmations;
use crate::store::{Replica, ReplicaStatus, ReplicaStore};

/// `Replica-Sequence`: the applied sequence.
pub const SEQUENCE: HeaderName = HeaderName::from_static("replica-sequence");
/// `Replica-Timestamp`: the applied snapshot's own time, RFC 3339.
pub const TIMESTAMP: HeaderName = HeaderName::from_static("replica-timestamp");
/// `Replica-Staleness-Ms`: how long since the host last knew the grain
/// current with the log.
pub const STALENESS_MS: HeaderName = HeaderName::from_static("replica-staleness-ms");

/// Seconds a client is told to wait (`Retry-After`) before asking again for
/// a sequence the host does not hold yet.
const NOT_YET_RETRY_AFTER_SECS: u64 = 1;

/// A replica's position and freshness, as an answer states them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// The applied sequence.
    pub sequence: u64,
    /// The applied snapshot's time, RFC 3339 (UTC, milliseconds).
    pub timestamp: String,
    /// Milliseconds since the host last knew the grain current.
    pub staleness_ms: u64,
}

impl Freshness {
    /// The position and freshness of `replica` at `now_millis`, given what
    /// the consumer confirmed of its grain type.
    pub fn of(replica: &Replica, confirmations: &TypeConfirmations, now_millis: i64) -> Self {
        let confirmed = match replica.status {
            ReplicaStatus::Ok if replica.has_state() => confirmations
                .grain_type(&replica.grain_type)
                .and_then(|t| t.confirmed_millis()),
            _ => None,
        };
        let current_at = confirmed.map_or(replica.timestamp_millis, |at| {
            at.max(replica.timestamp_millis)
        });
        Freshness {
            sequence: replica.sequence,
            timestamp: rfc3339(replica.timestamp_millis),
            staleness_ms: u64::try_from(now_millis.saturating_sub(current_at)).unwrap_or(0),
        }
    }

    /// Adds the three `Replica-*` headers.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        headers.insert(SEQUENCE, HeaderValue::from(self.sequence));
        if let Ok(timestamp) = HeaderValue::from_str(&self.timestamp) {
            headers.insert(TIMESTAMP, timestamp);
        }
        headers.insert(STALENESS_MS, HeaderValue::from(self.staleness_ms));
    }
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds
/// (`2026-12-05T03:15:33.123Z`).
pub fn rfc3339(millis: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    // Always three fractional digits, so every timestamp has one width and
    // sorts as text (the well-known RFC 3339 format drops trailing zeros).
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Whether a read asking for `min_sequence` can be answered from `replica`
/// now: it holds that sequence, or it is failing below it (answered at once).
fn settles(replica: Option<&Replica>, min_sequence: u64) -> bool {
    replica.is_some_and(|r| {
        (r.has_state() && r.sequence >= min_sequence) || failing_below(r, min_sequence)
    })
}

/// The grain is failing and holds less than `min_sequence`.
fn failing_below(replica: &Replica, min_sequence: u64) -> bool {
    matches!(replica.status, ReplicaStatus::Failing { .. })
        && (!replica.has_state() || replica.sequence < min_sequence)
}

/// What a `min_sequence` read found.
pub enum Waited {
    /// The replica holds the sequence: answer it as a plain read.
    Holds(Replica),
    /// The store has no replica of the grain, even after the wait.
    Absent,
    /// The answer is a 409 (`not_yet` or `failing`).
    Refused(Response),
}

/// Waits up to `wait` for the grain to hold `min_sequence`.
pub async fn wait_for_sequence(
    store: &ReplicaStore,
    grain_type: &str,
    grain_key: &str,
    min_sequence: u64,
    wait: Duration,
) -> Waited {
    let replica = if settles(store.get(grain_type, grain_key).as_ref(), min_sequence) {
        store.get(grain_type, grain_key)
    } else {
        store
            .wait_for(grain_type, grain_key, wait, |r| settles(r, min_sequence))
            .await
    };
    let Some(replica) = replica else {
        return Waited::Absent;
    };
    if replica.has_state() && replica.sequence >= min_sequence {
        return Waited::Holds(replica);
    }
    if let ReplicaStatus::Failing { sequence, reason } = &replica.status {
        return Waited::Refused(conflict(
            serde_json::json!({
                "error": "failing",
                "message": format!(
                    "{grain_type}/{grain_key} holds sequence {} and fails to decode sequence {sequence}: {reason}",
                    replica.sequence
                ),
                "sequence": replica.sequence,
                "wanted": min_sequence,
                "failing_sequence": sequence,
                "reason": reason,
            }),
            false,
        ));
    }
    Waited::Refused(not_yet(
        grain_type,
        grain_key,
        replica.sequence,
        min_sequence,
    ))
}

/// 409 `not_yet` with `Retry-After`: the grain holds `held`, less than `wanted`.
pub fn not_yet(grain_type: &str, grain_key: &str, held: u64, wanted: u64) -> Response {
    conflict(
        serde_json::json!({
            "error": "not_yet",
            "message": format!("{grain_type}/{grain_key} holds sequence {held}, not yet {wanted}"),
            "sequence": held,
            "wanted": wanted,
        }),
        true,
    )
}

/// 409 `stale`: the replica's staleness is above what the client accepts.
pub fn stale(replica: &Replica, freshness: &Freshness, max_staleness_ms: u64) -> Response {
    let mut answer = conflict(
        serde_json::json!({
            "error": "stale",
            "message": format!(
                "{}/{} was last known current {} ms ago, more than {max_staleness_ms} ms",
                replica.grain_type, replica.grain_key, freshness.staleness_ms
            ),
            "sequence": freshness.sequence,
            "staleness_ms": freshness.staleness_ms,
            "max_staleness_ms": max_staleness_ms,
        }),
        false,
    );
    freshness.add_headers(answer.headers_mut());
    answer
}

fn conflict(body: serde_json::Value, retry: bool) -> Response {
    let mut answer = (StatusCode::CONFLICT, axum::Json(body)).into_response();
    if retry {
        answer.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(NOT_YET_RETRY_AFTER_SECS),
        );
    }
    answer
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::DecodedSnapshot;
    use crate::value::State;

    fn replica(sequence: u64, timestamp_millis: i64, status: ReplicaStatus) -> Replica {
        Replica {
            grain_type: "Counter".into(),
            grain_key: "c-1".into(),
            state: Some(State::from_serialize(&1u32).unwrap()),
            sequence,
            timestamp_millis,
            source_cluster: "east".into(),
            applied_at: None,
            decoded_by: None,
            status,
        }
    }

    #[test]
    fn staleness_counts_from_the_confirmation_or_the_snapshot_whichever_is_later() {
        let confirmations = TypeConfirmations::default();
        let ok = replica(3, 10_000, ReplicaStatus::Ok);
        assert_eq!(
            Freshness::of(&ok, &confirmations, 12_000).staleness_ms,
            2_000
        );
        confirmations.register("Counter");
        assert_eq!(
            Freshness::of(&ok, &confirmations, 12_000).staleness_ms,
            2_000
        );

        let failing = ReplicaStatus::Failing {
            sequence: 4,
            reason: "bad".into(),
        };
        let freshness = Freshness::of(&replica(3, 10_000, failing), &confirmations, 15_000);
        assert_eq!(freshness.staleness_ms, 5_000, "failing: from the snapshot");
        assert_eq!(freshness.timestamp, "1970-01-01T00:00:10.000Z");
        assert_eq!(rfc3339(1_764_904_533_123), "2025-12-05T03:15:33.123Z");
        assert_eq!(rfc3339(1_764_904_533_330), "2025-12-05T03:15:33.330Z");
    }

    #[tokio::test]
    async fn a_waiting_read_is_answered_when_the_sequence_arrives() {
        let store = Arc::new(ReplicaStore::new());
        let snap = |sequence| DecodedSnapshot {
            state: State::from_serialize(&sequence).unwrap(),
            sequence,
            timestamp_millis: 1,
            source_cluster: "east".into(),
            decoded_by: None,
        };
        store
            .apply("Counter", "c-1", snap(1), ReplicaStatus::Ok)
            .unwrap();
        let waiting = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                wait_for_sequence(&store, "Counter", "c-1", 2, Duration::from_secs(30)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.waiting(), 1);
        store
            .apply("Counter", "c-1", snap(2), ReplicaStatus::Ok)
            .unwrap();
        match waiting.await.unwrap() {
            Waited::Holds(replica) => assert_eq!(replica.sequence, 2),
            _ => panic!("expected the replica"),
        }
        assert_eq!(store.waiting(), 0, "the waiter unregistered");

        let timed_out =
            wait_for_sequence(&store, "Counter", "c-1", 9, Duration::from_millis(10)).await;
        let Waited::Refused(answer) = timed_out else {
            panic!("expected 409")
        };
        assert_eq!(answer.status(), StatusCode::CONFLICT);
        assert!(answer.headers().contains_key(header::RETRY_AFTER));

        store.set_status(
            "Counter",
            "c-1",
            ReplicaStatus::Failing {
                sequence: 3,
                reason: "trap".into(),
            },
        );
        let started = std::time::Instant::now();
        let failing = wait_for_sequence(&store, "Counter", "c-1", 5, Duration::from_secs(30)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered at once"
        );
        assert!(matches!(failing, Waited::Refused(_)));
    }
}
