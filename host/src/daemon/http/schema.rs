//! The OpenAPI schemas of the API's bodies: types that only describe
//! (nothing constructs them), held to what the handlers render by
//! `openapi`'s tests.

use serde::Serialize;
use utoipa::ToSchema;

/// A replica, as a read answers and each change-stream event carries.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct ReplicaDoc {
    /// The grain's type.
    grain_type: String,
    /// The grain's key.
    grain_key: String,
    /// The applied snapshot's sequence (0 when none).
    sequence: u64,
    /// The primary's Unix ms when it wrote the applied snapshot.
    timestamp_millis: i64,
    /// The cluster that wrote it.
    source_cluster: String,
    /// When this host applied it (Unix ms).
    applied_at_millis: Option<i64>,
    /// `ok`, `behind` or `failing`.
    status: String,
    /// `behind`: `{delta_sequence}`; `failing`: `{sequence, reason,
    /// fixture_command}`, the last the `replica-host plugin fixture` command
    /// that captures the failing snapshot as a test case.
    #[schema(value_type = Option<Object>)]
    status_detail: Option<serde_json::Value>,
    /// The plugin build that decoded the state: `{plugin, sha256,
    /// schema_version}`; null before any snapshot decoded.
    #[schema(value_type = Option<Object>)]
    decoded_by: Option<serde_json::Value>,
    /// The applied snapshot's time, RFC 3339 (as `Replica-Timestamp`).
    timestamp: String,
    /// Milliseconds since the host last knew this grain current with the
    /// log (as `Replica-Staleness-Ms`): its type's newest listing whose
    /// grains are all read, or the snapshot's own time when later; for a
    /// failing or behind grain, the snapshot's time.
    staleness_ms: u64,
    /// The typed state, exactly as `serde_json` renders the plugin's Rust
    /// value; null before any snapshot decoded.
    #[schema(value_type = Option<Object>)]
    state: Option<serde_json::Value>,
}

/// One event of a change stream (`text/event-stream`).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct SseEventDoc {
    /// A grain's stream: the replica's sequence. A grain type's stream: a
    /// cursor `EPOCH.VERSION` to send back as `Last-Event-ID`. Absent on
    /// `resync` and `status` events of a grain's stream.
    id: Option<String>,
    /// `message` (a replica whose sequence is new to the stream), `status`
    /// (the same sequence with a new status or decoding), `removed`, or
    /// `resync` (the cursor cannot be resumed: every grain follows again).
    event: Option<String>,
    /// A replica as a read renders it (`ReplicaDoc`); on `removed`
    /// `{"grain_type", "grain_key"}`; on `resync` `{"reason"}`.
    data: String,
}

/// Every error: one line of JSON.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct ErrorDoc {
    /// A stable snake_case code (`unauthorized`, `forbidden`, `unknown_grain`, …).
    error: String,
    /// What went wrong, for people.
    message: String,
}

/// A page of a grain type's keys.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct KeysDoc {
    /// The grain type.
    grain_type: String,
    /// Keys, sorted.
    keys: Vec<String>,
    /// Pass as `after` for the next page; null on the last.
    next_after: Option<String>,
}

/// One replica's position in a `fields=sequence` page.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct PositionDoc {
    /// The grain's key.
    grain_key: String,
    /// The applied snapshot's sequence (0 when none).
    sequence: u64,
    /// `ok`, `behind` or `failing`.
    status: String,
    /// The sha256 of the plugin build that decoded the state; null before
    /// any snapshot decoded.
    sha256: Option<String>,
}

/// A page of `fields=sequence`: every replica's position, in key order.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct PositionsDoc {
    /// The grain type.
    grain_type: String,
    /// Positions, sorted by key.
    replicas: Vec<PositionDoc>,
    /// Pass as `after` for the next page; null on the last.
    next_after: Option<String>,
}

/// `GET /v1/replicas/{grain_type}` as JSON: a page of keys, or with
/// `fields=sequence` a page of positions.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ListingDoc {
    /// Without `fields`.
    Keys(KeysDoc),
    /// With `fields=sequence`.
    Positions(PositionsDoc),
}

/// Readiness; when not ready, also `error` and `message` (the error shape).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct ReadyDoc {
    /// Not ready: `catching_up`, `log_unreachable` or `draining`.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Not ready: why, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// The initial catch-up is complete.
    ready: bool,
    /// Grains caught up so far.
    caught_up: u64,
    /// Grains the first listings named.
    grains: u64,
    /// Plugins loaded.
    plugins: usize,
}
