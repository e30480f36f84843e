//! Change streams: `?watch=true` on a replica or a grain type answers with
//! Server-Sent Events, one replica per event in the same JSON as a read,
//! with `id` = the replica's sequence.
//!
//! A stream subscribes to the store's changes first and reads the current
//! state second, so nothing applied in between is missed. A grain's stream
//! resumes after `Last-Event-ID` (or `?after=`): it starts with the current
//! replica when its sequence is above that, then follows. The store keeps
//! only each grain's newest snapshot, so a resumed client gets the newest
//! state, never an older one it skipped. A grain type's stream starts with
//! the current replica of every grain of the type, then follows.
//!
//! A client that reads slower than replicas change falls behind the
//! store's change channel (`[http] watch_buffer` changes): it is sent a
//! `resync` event and the current state, and the host buffers nothing more
//! for it. Streams end when the daemon stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::{self, error::RecvError};

use super::http::render;
use crate::shutdown::StopSignal;
use crate::store::{ChangeKind, Replica, ReplicaChange, ReplicaStatus, ReplicaStore};

/// Grains one step of a grain type's listing reads from the store.
const LIST_PAGE: usize = 256;

/// What a stream follows.
#[derive(Debug, Clone)]
pub enum Target {
    /// One grain; events after this sequence (all when `None`).
    Grain {
        /// The grain's type.
        grain_type: String,
        /// The grain's key.
        grain_key: String,
        /// Resume after this sequence.
        after: Option<u64>,
    },
    /// Every grain of one type.
    GrainType(String),
}

/// One open stream's state.
struct Watcher {
    /// Where replicas are read.
    store: Arc<ReplicaStore>,
    /// Every change, subscribed before the first read.
    changes: broadcast::Receiver<ReplicaChange>,
    /// The daemon's shutdown.
    stop: StopSignal,
    /// What is followed.
    target: Target,
    /// Events ready to send.
    pending: VecDeque<Event>,
    /// A grain type's listing in progress: the last key listed (`Some(None)`
    /// before the first page).
    listing: Option<Option<String>>,
    /// The last replica sent, so a change seen twice (read, then heard) is
    /// sent once.
    last_sent: Option<(String, u64, ReplicaStatus)>,
}

/// The SSE response for `target`.
pub fn stream(store: Arc<ReplicaStore>, stop: StopSignal, target: Target) -> Response {
    let changes = store.subscribe();
    let mut watcher = Watcher {
        store,
        changes,
        stop,
        target,
        pending: VecDeque::new(),
        listing: None,
        last_sent: None,
    };
    watcher.start();
    let events = futures::stream::unfold(watcher, |mut w| async move {
        w.next().await.map(|event| (Ok::<_, Infallible>(event), w))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

impl Watcher {
    /// Queues the current state.
    fn start(&mut self) {
        match &self.target {
            Target::Grain {
                grain_type,
                grain_key,
                after,
            } => {
                if let Some(replica) = self.store.get(grain_type, grain_key)
                    && after.is_none_or(|after| replica.sequence > after)
                {
                    self.send(&replica);
                }
            }
            Target::GrainType(_) => self.listing = Some(None),
        }
    }

    /// The next event; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.listing.is_some() {
                self.list_page();
                continue;
            }
            let change = tokio::select! {
                change = self.changes.recv() => change,
                _ = self.stop.stopped() => return None,
            };
            match change {
                Ok(change) => self.on_change(change),
                Err(RecvError::Lagged(missed)) => self.resync(missed),
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Queues the next page of a grain type's listing.
    fn list_page(&mut self) {
        let (Target::GrainType(grain_type), Some(after)) = (&self.target, self.listing.take())
        else {
            return;
        };
        let grain_type = grain_type.clone();
        let keys = self.store.keys(&grain_type, after.as_deref(), LIST_PAGE);
        for key in &keys {
            if let Some(replica) = self.store.get(&grain_type, key) {
                self.send(&replica);
            }
        }
        if keys.len() == LIST_PAGE {
            self.listing = Some(keys.last().cloned());
        }
    }

    fn on_change(&mut self, change: ReplicaChange) {
        let r = &change.replica;
        let wanted = match &self.target {
            Target::Grain {
                grain_type,
                grain_key,
                ..
            } => &r.grain_type == grain_type && &r.grain_key == grain_key,
            Target::GrainType(grain_type) => &r.grain_type == grain_type,
        };
        if !wanted {
            return;
        }
        if change.kind == ChangeKind::Removed {
            let data = serde_json::json!({ "grain_type": r.grain_type, "grain_key": r.grain_key });
            self.pending
                .push_back(Event::default().event("removed").data(data.to_string()));
            return;
        }
        self.send(r);
    }

    /// The client fell behind: say so and send the current state again.
    fn resync(&mut self, missed: u64) {
        let data = serde_json::json!({ "missed_changes": missed });
        self.pending.clear();
        self.pending
            .push_back(Event::default().event("resync").data(data.to_string()));
        self.last_sent = None;
        if let Target::Grain { after, .. } = &mut self.target {
            *after = None;
        }
        self.start();
    }

    /// Queues one replica, unless it is the one just sent.
    fn send(&mut self, replica: &Replica) {
        let sent = (
            replica.grain_key.clone(),
            replica.sequence,
            replica.status.clone(),
        );
        if self.last_sent.as_ref() == Some(&sent) {
            return;
        }
        let event = match render(replica) {
            Ok(body) => Event::default().id(replica.sequence.to_string()).data(body),
            Err(e) => Event::default().event("error").data(
                serde_json::json!({
                    "grain_type": replica.grain_type,
                    "grain_key": replica.grain_key,
                    "message": format!("state cannot be rendered as JSON: {e}"),
                })
                .to_string(),
            ),
        };
        self.pending.push_back(event);
        self.last_sent = Some(sent);
    }
}

/// The sequence to resume after: `Last-Event-ID`, else `?after=`.
pub fn resume_after(headers: &axum::http::HeaderMap, after: Option<u64>) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(after)
}
