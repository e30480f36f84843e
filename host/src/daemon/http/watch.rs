//! Change streams: `?watch=true` on a replica or a grain type answers with
//! Server-Sent Events, one replica per event in the same JSON as a read
//! (with its `timestamp` and `staleness_ms`).
//!
//! On every stream, per grain, sequences only grow and no (grain, sequence)
//! is sent twice as a replica event. A change that keeps the sequence (a
//! status change, or a re-decode by another plugin build after a swap) is
//! sent as an `event: status` with the same JSON; a removal as
//! `event: removed`.
//!
//! - **A grain's stream** (`/v1/replicas/{type}/{key}?watch=true`): the
//!   current replica, then each change, woken by that grain alone. `id` is
//!   the sequence; `Last-Event-ID` (or `?after=`) resumes after it, and
//!   `?min_sequence=N` holds back events below N. The store keeps only each
//!   grain's newest snapshot, so a resumed client gets the newest state,
//!   never an older one it skipped.
//! - **A grain type's stream** (`/v1/replicas/{type}?watch=true`): reads the
//!   store's change feed (`store::ReplicaStore::feed`): first every grain
//!   of the type once, then each change, each grain once at its newest
//!   state per page. `id` is a cursor (`EPOCH.VERSION`); a reconnect with
//!   `Last-Event-ID` gets only what changed since. A cursor the store cannot
//!   resume (from before a restart, not a cursor, or older than the
//!   removals it remembers) gets one `event: resync`, then every grain
//!   again: never a silent full replay, never a gap.
//!
//! A stream holds no buffer of changes: a slow client reads the feed at its
//! own pace, and a busy grain coalesces to its newest state. Streams end
//! when the daemon stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::body::render;
use super::state::ApiState;
use crate::consumer::Freshness as Confirmations;
use crate::daemon::consistency::Freshness;
use crate::shutdown::StopSignal;
use crate::store::{
    Cursor, FeedChange, FeedPage, Replica, ReplicaStatus, ReplicaStore, now_millis,
};

/// Changes one read of a grain type's feed takes.
const FEED_PAGE: usize = 256;

/// How long a grain's stream waits before looking again on its own (a
/// wake-up is what normally ends the wait).
const GRAIN_WAIT: Duration = Duration::from_secs(3600);

/// What a stream follows.
#[derive(Debug, Clone)]
pub enum Target {
    /// One grain.
    Grain {
        /// The grain's type.
        grain_type: String,
        /// The grain's key.
        grain_key: String,
        /// Resume after this sequence.
        after: Option<u64>,
        /// Send nothing below this sequence.
        min_sequence: Option<u64>,
    },
    /// Every grain of one type.
    GrainType {
        /// The grain type.
        grain_type: String,
        /// `Last-Event-ID`: resume after this cursor.
        cursor: Option<String>,
    },
}

/// What a grain's stream last sent.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    sequence: u64,
    status: ReplicaStatus,
    decoded_by: Option<String>,
}

impl Sent {
    fn of(replica: &Replica) -> Self {
        Sent {
            sequence: replica.sequence,
            status: replica.status.clone(),
            decoded_by: replica.decoded_by.as_ref().map(|d| d.sha256.clone()),
        }
    }
}

/// Where a stream stands.
enum Position {
    /// A grain's stream: what it sent last (`None`: nothing yet, or the
    /// grain was removed since).
    Grain {
        last: Option<Sent>,
        after: Option<u64>,
        min_sequence: Option<u64>,
    },
    /// A grain type's stream: the feed position after the last event.
    GrainType(Cursor),
}

/// One open stream's state.
struct Watcher {
    /// Where replicas are read.
    store: Arc<ReplicaStore>,
    /// For each event's staleness.
    confirmations: Arc<Confirmations>,
    /// The store's version, for a grain type's stream to wait on.
    versions: watch::Receiver<u64>,
    /// The daemon's shutdown.
    stop: StopSignal,
    /// The grain type, and the key of a grain's stream.
    grain_type: String,
    grain_key: Option<String>,
    /// Where the stream stands.
    position: Position,
    /// Events ready to send.
    pending: VecDeque<Event>,
}

/// The SSE response for `target`.
pub fn stream(api: &ApiState, target: Target) -> Response {
    let store = Arc::clone(&api.store);
    let mut versions = store.versions();
    versions.mark_unchanged();
    let mut pending = VecDeque::new();
    let (grain_type, grain_key, position) = match target {
        Target::Grain {
            grain_type,
            grain_key,
            after,
            min_sequence,
        } => (
            grain_type,
            Some(grain_key),
            Position::Grain {
                last: None,
                after,
                min_sequence,
            },
        ),
        Target::GrainType { grain_type, cursor } => {
            let start = store.feed_start();
            let position = match cursor.as_deref().map(str::parse::<Cursor>) {
                None => start,
                Some(Ok(cursor)) => cursor,
                // Not a cursor of ours: say so, then start over.
                Some(Err(_)) => {
                    pending.push_back(resync_event("the Last-Event-ID is not a cursor"));
                    start
                }
            };
            (grain_type, None, Position::GrainType(position))
        }
    };
    let watcher = Watcher {
        store,
        confirmations: Arc::clone(&api.freshness),
        versions,
        stop: api.stop.clone(),
        grain_type,
        grain_key,
        position,
        pending,
    };
    let events = futures::stream::unfold(watcher, |mut w| async move {
        w.next().await.map(|event| (Ok::<_, Infallible>(event), w))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

impl Watcher {
    /// The next event; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let mut stop = self.stop.clone();
            let more = match &self.position {
                Position::GrainType(_) => {
                    if self.read_feed() {
                        continue;
                    }
                    tokio::select! {
                        () = stop.stopped() => return None,
                        changed = self.versions.changed() => changed.is_ok(),
                    }
                }
                Position::Grain { .. } => tokio::select! {
                    () = stop.stopped() => return None,
                    () = self.follow_grain() => true,
                },
            };
            if !more {
                return None;
            }
        }
    }

    /// Queues the next page of the grain type's feed; whether it held any.
    fn read_feed(&mut self) -> bool {
        let Position::GrainType(cursor) = &mut self.position else {
            return false;
        };
        match self.store.feed(&self.grain_type, *cursor, FEED_PAGE) {
            FeedPage::Resync => {
                *cursor = self.store.feed_start();
                self.pending.push_back(resync_event(
                    "the cursor is from another run of the host or older than it remembers",
                ));
                true
            }
            FeedPage::Changes { changes, next } => {
                *cursor = next;
                let any = !changes.is_empty();
                for change in changes {
                    let event = match change {
                        FeedChange::Replica {
                            replica,
                            new_sequence,
                            cursor,
                        } => self
                            .replica_event(&replica, new_sequence)
                            .id(cursor.to_string()),
                        FeedChange::Removed { grain_key, cursor } => {
                            removed_event(&self.grain_type, &grain_key).id(cursor.to_string())
                        }
                    };
                    self.pending.push_back(event);
                }
                any
            }
        }
    }

    /// Waits until the grain differs from what was sent, and queues it.
    async fn follow_grain(&mut self) {
        let Position::Grain {
            last,
            after,
            min_sequence,
        } = &self.position
        else {
            return;
        };
        let (seen, floor) = (
            last.clone(),
            min_sequence.unwrap_or(0).max(after.map_or(0, |a| a + 1)),
        );
        let grain_key = self.grain_key.clone().unwrap_or_default();
        let replica = self
            .store
            .wait_for(&self.grain_type, &grain_key, GRAIN_WAIT, |r| {
                sendable(r, &seen, floor)
            })
            .await;
        if !sendable(replica.as_ref(), &seen, floor) {
            return; // the long wait ended with nothing new
        }
        let (event, sent) = match &replica {
            None => (removed_event(&self.grain_type, &grain_key), None),
            Some(r) => {
                let new_sequence = seen.as_ref().is_none_or(|l| r.sequence > l.sequence);
                let event = self.replica_event(r, new_sequence);
                let event = if new_sequence {
                    event.id(r.sequence.to_string())
                } else {
                    event
                };
                (event, Some(Sent::of(r)))
            }
        };
        if let Position::Grain { last, .. } = &mut self.position {
            *last = sent;
        }
        self.pending.push_back(event);
    }

    /// A replica's event: the default event when its sequence is new to
    /// the client, `status` when only its status or decoding changed.
    fn replica_event(&self, replica: &Replica, new_sequence: bool) -> Event {
        let freshness = Freshness::of(replica, &self.confirmations, now_millis());
        let event = match render(replica, &freshness) {
            Ok(body) => Event::default().data(body),
            Err(e) => {
                return Event::default().event("error").data(
                    serde_json::json!({
                        "grain_type": replica.grain_type,
                        "grain_key": replica.grain_key,
                        "message": format!("state cannot be rendered as JSON: {e}"),
                    })
                    .to_string(),
                );
            }
        };
        if new_sequence {
            event
        } else {
            event.event("status")
        }
    }
}

/// Whether a grain's stream has something to send: the grain was removed
/// after something was sent, or it holds a sequence at or above `floor`
/// that is newer than the last one sent, or the same one changed.
fn sendable(replica: Option<&Replica>, last: &Option<Sent>, floor: u64) -> bool {
    match replica {
        None => last.is_some(),
        Some(r) => {
            r.sequence >= floor
                && last.as_ref().is_none_or(|l| {
                    r.sequence > l.sequence || (r.sequence == l.sequence && *l != Sent::of(r))
                })
        }
    }
}

fn removed_event(grain_type: &str, grain_key: &str) -> Event {
    let data = serde_json::json!({ "grain_type": grain_type, "grain_key": grain_key });
    Event::default().event("removed").data(data.to_string())
}

fn resync_event(why: &str) -> Event {
    let data = serde_json::json!({ "reason": why });
    Event::default().event("resync").data(data.to_string())
}

/// The sequence a grain's stream resumes after: `Last-Event-ID`, else `?after=`.
pub fn resume_after(headers: &HeaderMap, after: Option<u64>) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(after)
}

/// The cursor a grain type's stream resumes after: `Last-Event-ID`, as sent.
pub fn resume_cursor(headers: &HeaderMap) -> Option<String> {
    headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|v| !v.trim().is_empty())
}
