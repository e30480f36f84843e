//! The bodies every handler answers with: the one-line JSON error, a
//! replica's JSON, a breaker's, and the 503 `catching_up` answer. Depends
//! on no handler.

use std::time::Instant;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::consumer::CatchUp;
use crate::daemon::consistency::Freshness;
use crate::decode::DecodedBy;
use crate::plugin::breaker::Breaker;
use crate::store::{Replica, ReplicaStatus};
use crate::value;

/// Seconds a client is told to wait (`Retry-After`) while the host catches up.
const CATCHING_UP_RETRY_AFTER_SECS: u64 = 1;

/// Most bytes of a non-JSON error body kept as the JSON error's message.
const MAX_ERROR_TEXT: usize = 1024;

/// Turns an error the framework answered without JSON (405, a rejected
/// path) into the one-line JSON error, keeping its status and headers.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace([' ', '-'], "_");
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text.chars().take(MAX_ERROR_TEXT).collect()
    };
    let json = error(status, &code, message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let (_, body) = json.into_parts();
    Response::from_parts(parts, body)
}

/// A one-line JSON error: `{"error": code, "message": message}`.
pub(crate) fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// A replica as the API renders it.
#[derive(Serialize)]
struct ReplicaBody<'a> {
    grain_type: &'a str,
    grain_key: &'a str,
    sequence: u64,
    timestamp_millis: i64,
    source_cluster: &'a str,
    applied_at_millis: Option<i64>,
    status: &'static str,
    status_detail: Option<serde_json::Value>,
    decoded_by: Option<&'a DecodedBy>,
    timestamp: &'a str,
    staleness_ms: u64,
    state: Option<&'a value::State>,
}

/// A replica's JSON, as change streams send it, with its position and
/// freshness.
pub(crate) fn render(
    replica: &Replica,
    freshness: &Freshness,
) -> Result<String, serde_json::Error> {
    render_with(replica, freshness, None)
}

/// A replica's JSON, as a read sends it: a failing one's `status_detail`
/// also carries `fixture_command`, when given.
pub(crate) fn render_with(
    replica: &Replica,
    freshness: &Freshness,
    fixture_command: Option<String>,
) -> Result<String, serde_json::Error> {
    let status_detail = match &replica.status {
        ReplicaStatus::Ok => None,
        ReplicaStatus::Behind { delta_sequence } => {
            Some(serde_json::json!({ "delta_sequence": delta_sequence }))
        }
        ReplicaStatus::Failing { sequence, reason } => {
            let mut detail = serde_json::json!({ "sequence": sequence, "reason": reason });
            if let Some(command) = fixture_command {
                detail["fixture_command"] = command.into();
            }
            Some(detail)
        }
    };
    serde_json::to_string(&ReplicaBody {
        grain_type: &replica.grain_type,
        grain_key: &replica.grain_key,
        sequence: replica.sequence,
        timestamp_millis: replica.timestamp_millis,
        source_cluster: &replica.source_cluster,
        applied_at_millis: replica.applied_at.and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as i64)
        }),
        status: replica.status.label(),
        status_detail,
        decoded_by: replica.decoded_by.as_deref(),
        timestamp: &freshness.timestamp,
        staleness_ms: freshness.staleness_ms,
        state: replica.state.as_ref(),
    })
}

/// Unix milliseconds of a wall-clock time (0 before 1970).
pub(crate) fn millis(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A breaker as `/v1/plugins` shows it.
pub(crate) fn breaker_json(breaker: &Breaker) -> serde_json::Value {
    let status = breaker.status(Instant::now());
    let config = breaker.config();
    serde_json::json!({
        "state": status.state.as_str(),
        "consecutive_faults": status.consecutive_faults,
        "times_opened": status.times_opened,
        "rejected_calls": status.rejected_calls,
        "retry_in_ms": status.retry_in.map(|d| d.as_millis() as u64),
        "after_faults": config.after_faults,
        "cooldown_ms": config.cooldown.as_millis() as u64,
    })
}

/// 503 `catching_up` with `Retry-After`: `what` cannot be answered until the
/// initial catch-up is complete.
pub(crate) fn catching_up(catch_up: &CatchUp, what: &str) -> Response {
    let progress = catch_up.progress();
    not_replicated_yet(
        what,
        format!(
            "the initial catch-up has read {} of {} grains",
            progress.caught_up, progress.grains
        ),
    )
}

/// 503 `catching_up` with `Retry-After`: "`what` is not replicated yet: `why`".
pub(crate) fn not_replicated_yet(what: &str, why: String) -> Response {
    retry_after(error(
        StatusCode::SERVICE_UNAVAILABLE,
        "catching_up",
        format!("{what} is not replicated yet: {why}"),
    ))
}

/// Tells the client when to ask again while the host catches up.
pub(crate) fn retry_after(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(CATCHING_UP_RETRY_AFTER_SECS),
    );
    response
}
