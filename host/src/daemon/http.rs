//! The read-only HTTP API: replicas, plugins, health, readiness, metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::metrics::MetricsExporter;
use crate::consumer::{CatchUp, Shard, shard::shard_of};
use crate::plugin::breaker::Breaker;
use crate::plugin_set::PluginSet;
use crate::replication_log::ReplicationLog;
use crate::store::{Replica, ReplicaStatus, ReplicaStore, now_millis};
use crate::value;

/// Most keys one page of `GET /v1/replicas/{grain_type}` returns.
pub const MAX_PAGE: usize = 1000;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// The replicas.
    pub store: Arc<ReplicaStore>,
    /// The loaded plugins.
    pub plugins: PluginSet,
    /// The circuit breakers, by grain type (plugins without one are absent).
    pub breakers: Arc<BTreeMap<String, Arc<Breaker>>>,
    /// The log, for readiness.
    pub log: Arc<dyn ReplicationLog>,
    /// Prometheus rendering.
    pub metrics: MetricsExporter,
    /// The initial catch-up's progress, for readiness and reads.
    pub catch_up: Arc<CatchUp>,
    /// The grains this host replicates, when sharded.
    pub shard: Option<Shard>,
}

/// Seconds a client is told to wait (`Retry-After`) while the host catches up.
const CATCHING_UP_RETRY_AFTER_SECS: u64 = 1;

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/plugins", get(plugins))
        .route("/v1/replicas/{grain_type}", get(list_keys))
        .route("/v1/replicas/{grain_type}/{*grain_key}", get(get_replica))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint".into(),
            )
        })
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
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
    state: Option<&'a value::State>,
}

fn render(replica: &Replica) -> Result<String, serde_json::Error> {
    let status_detail = match &replica.status {
        ReplicaStatus::Ok => None,
        ReplicaStatus::Behind { delta_sequence } => {
            Some(serde_json::json!({ "delta_sequence": delta_sequence }))
        }
        ReplicaStatus::Failing { sequence, reason } => {
            Some(serde_json::json!({ "sequence": sequence, "reason": reason }))
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
        state: replica.state.as_ref(),
    })
}

#[derive(Deserialize)]
struct ReplicaQuery {
    max_staleness_ms: Option<u64>,
}

async fn get_replica(
    State(api): State<ApiState>,
    Path((grain_type, grain_key)): Path<(String, String)>,
    query: Result<Query<ReplicaQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "max_staleness_ms must be a non-negative integer".into(),
        );
    };
    if let Some(shard) = api.shard
        && api.plugins.get(&grain_type).is_some()
        && !shard.owns(&grain_type, &grain_key)
    {
        let owner = shard_of(&grain_type, &grain_key, shard.count);
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            format!(
                "{grain_type}/{grain_key} belongs to shard {owner}/{}; this host replicates shard {shard}",
                shard.count
            ),
        );
    }
    let Some(replica) = api.store.get(&grain_type, &grain_key) else {
        if api.catch_up.is_catching_up(&grain_type) {
            return catching_up(&api.catch_up, &format!("{grain_type}/{grain_key}"));
        }
        return error(
            StatusCode::NOT_FOUND,
            "unknown_grain",
            format!("no replica of {grain_type}/{grain_key}"),
        );
    };
    if let Some(max) = query.max_staleness_ms {
        let staleness = now_millis().saturating_sub(replica.timestamp_millis);
        if !replica.has_state() || staleness > max as i64 {
            return error(
                StatusCode::CONFLICT,
                "stale",
                format!(
                    "{grain_type}/{grain_key} is {staleness} ms behind the primary, more than {max} ms"
                ),
            );
        }
    }
    match render(&replica) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "render",
            format!("state cannot be rendered as JSON: {e}"),
        ),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_keys(
    State(api): State<ApiState>,
    Path(grain_type): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(page)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit must be a positive integer".into(),
        );
    };
    if api.plugins.get(&grain_type).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_grain_type",
            format!("no plugin replicates grain type {grain_type}"),
        );
    }
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let mut keys = api
        .store
        .keys(&grain_type, page.after.as_deref(), limit + 1);
    let next_after = if keys.len() > limit {
        keys.truncate(limit);
        keys.last().cloned()
    } else {
        None
    };
    axum::Json(
        serde_json::json!({ "grain_type": grain_type, "keys": keys, "next_after": next_after }),
    )
    .into_response()
}

async fn plugins(State(api): State<ApiState>) -> Response {
    let list: Vec<_> = api
        .plugins
        .iter()
        .map(|(grain_type, p)| {
            serde_json::json!({
                "grain_type": grain_type,
                "name": p.name(),
                "schema_name": p.description().schema_name,
                "schema_version": p.description().schema_version,
                "sdk_version": p.description().sdk_version,
                "state_versions": p.description().state_versions,
                "sha256": p.sha256(),
                "size": p.size(),
                "calls": p.stats().calls(),
                "failures": p.stats().failures(),
                "limits": {
                    "timeout_ms": p.limits().timeout.as_millis() as u64,
                    "max_memory_bytes": p.limits().max_memory_bytes,
                    "max_output_nodes": p.limits().output.max_nodes,
                    "max_output_bytes": p.limits().output.max_bytes,
                    "max_output_depth": p.limits().output.max_depth,
                },
                "breaker": api.breakers.get(grain_type).map(|b| breaker_json(b)),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "plugins": list })).into_response()
}

/// A breaker as `/v1/plugins` shows it.
fn breaker_json(breaker: &Breaker) -> serde_json::Value {
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
fn catching_up(catch_up: &CatchUp, what: &str) -> Response {
    let progress = catch_up.progress();
    retry_after(error(
        StatusCode::SERVICE_UNAVAILABLE,
        "catching_up",
        format!(
            "{what} is not replicated yet: the initial catch-up has read {} of {} grains",
            progress.caught_up, progress.grains
        ),
    ))
}

/// Tells the client when to ask again while the host catches up.
fn retry_after(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(CATCHING_UP_RETRY_AFTER_SECS),
    );
    response
}

async fn readyz(State(api): State<ApiState>) -> Response {
    let progress = api.catch_up.progress();
    if let Err(e) = api.log.ping().await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "log_unreachable",
            e.to_string(),
        );
    }
    let body = serde_json::json!({
        "ready": progress.complete,
        "caught_up": progress.caught_up,
        "grains": progress.grains,
        "plugins": api.plugins.len(),
    });
    let status = if progress.complete {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let response = (status, axum::Json(body)).into_response();
    if progress.complete {
        response
    } else {
        retry_after(response)
    }
}

async fn metrics(State(api): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(&api.store, &api.plugins, &api.breakers),
    )
        .into_response()
}
