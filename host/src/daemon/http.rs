//! The read-only HTTP API: replicas (plain reads with `ETag`, and change
//! streams), plugins, health, readiness, metrics, the OpenAPI document and
//! the operator page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::access::{Access, Routes};
use super::auth::Auth;
use super::consistency::{self, Freshness, Waited};
use super::metrics::MetricsExporter;
use super::plugins::{LivePlugins, PluginReloader};
use super::problems::Problems;
use super::shadow::Shadow;
use super::watch::{Target, resume_after};
use super::{bulk, openapi, operator_page, shards, watch as sse};
use crate::consumer::{self, CatchUp, Shard, shard::shard_of};
use crate::decode::DecodedBy;
use crate::plugin::breaker::Breaker;
use crate::replication_log::ReplicationLog;
use crate::shutdown::StopSignal;
use crate::store::{Replica, ReplicaStatus, ReplicaStore, now_millis};
use crate::value;

/// Most keys one page of `GET /v1/replicas/{grain_type}` returns.
pub const MAX_PAGE: usize = 1000;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// The replicas.
    pub store: Arc<ReplicaStore>,
    /// The plugins in force, with their breakers; swapped by a reload.
    pub plugins: Arc<LivePlugins>,
    /// Reloads the plugins for `POST /v1/admin/reload`; `None` when the
    /// admin endpoints are off (no admin token configured).
    pub reloader: Option<Arc<PluginReloader>>,
    /// The log, for readiness.
    pub log: Arc<dyn ReplicationLog>,
    /// Prometheus rendering.
    pub metrics: MetricsExporter,
    /// The initial catch-up's progress, for readiness and reads.
    pub catch_up: Arc<CatchUp>,
    /// How current each grain type is and the log's health, for the
    /// `Replica-Staleness-Ms` of reads and for readiness.
    pub freshness: Arc<consumer::Freshness>,
    /// `[http] max_wait_ms`: the longest a `min_sequence` read waits.
    pub max_wait: Duration,
    /// `[http] ready_during_log_outage_s`: how long a caught-up host stays
    /// ready while its listings of the log fail.
    pub ready_during_log_outage: Duration,
    /// The grains this host replicates, when sharded.
    pub shard: Option<Shard>,
    /// `[consumer] peer_url`: where each shard's host answers, `{shard}`
    /// standing for its index; the `Location` of a 421.
    pub peer_url: Option<Arc<str>>,
    /// The failing and behind grains and the lag, for the operator page.
    pub problems: Arc<Problems>,
    /// This secondary cluster's id, for the operator page.
    pub cluster_id: Arc<str>,
    /// The log's URL as the config resolves it (the fixture command of a
    /// failing grain shows it with the password hidden).
    pub log_url: Arc<str>,
    /// Becomes `true` at shutdown; ends change streams.
    pub stop: StopSignal,
    /// Becomes `true` when the drain starts (the first SIGTERM): `/readyz`
    /// answers 503 from then on.
    pub draining: StopSignal,
}

impl ApiState {
    /// The `replica-host plugin fixture` command that captures
    /// `grain_type/grain_key` at `sequence` with the grain type's plugin in
    /// force (the log URL's password hidden); `None` without a plugin.
    pub(super) fn fixture_command(
        &self,
        grain_type: &str,
        grain_key: &str,
        sequence: u64,
    ) -> Option<String> {
        let plugins = self.plugins.current();
        let in_force = plugins.get(grain_type)?;
        let path = std::path::absolute(&in_force.path).unwrap_or_else(|_| in_force.path.clone());
        Some(crate::fixture_command::command(
            &self.log_url,
            grain_type,
            grain_key,
            sequence,
            &path,
        ))
    }
}

/// Seconds a client is told to wait (`Retry-After`) while the host catches up.
const CATCHING_UP_RETRY_AFTER_SECS: u64 = 1;

/// The API's routes, each with the access it needs (checked against
/// `auth`'s tokens; everything is open without access control).
pub fn router(state: ApiState, auth: Option<Arc<Auth>>) -> Router {
    routes(auth)
        .finish(get(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint".into(),
            )
        }))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(super::metrics::count_requests))
        .with_state(state)
}

/// Every route and the access it declares.
pub fn routes(auth: Option<Arc<Auth>>) -> Routes<ApiState> {
    Routes::new(auth)
        .route("/", Access::ReadAll, get(operator_page::page))
        .route("/healthz", Access::Open, get(healthz))
        .route("/readyz", Access::Open, get(readyz))
        .route("/v1/openapi.json", Access::Token, get(openapi::document))
        .route("/metrics", Access::Metrics, get(metrics))
        .route("/v1/plugins", Access::AnyRead, get(plugins))
        .route("/v1/shards", Access::AnyRead, get(shards::shards))
        .route("/v1/admin/reload", Access::Admin, post(admin_reload))
        .route(
            "/v1/replicas/{grain_type}",
            Access::ReadGrainType,
            get(list_keys),
        )
        .route(
            "/v1/replicas/{grain_type}/{*grain_key}",
            Access::ReadGrainType,
            get(get_replica),
        )
}

/// Most bytes of a non-JSON error body kept as the JSON error's message.
const MAX_ERROR_TEXT: usize = 1024;

/// Turns an error the framework answered without JSON (405, a rejected
/// path) into the one-line JSON error, keeping its status and headers.
async fn json_errors(response: Response) -> Response {
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
pub(super) fn error(status: StatusCode, code: &str, message: String) -> Response {
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
pub(super) fn render(
    replica: &Replica,
    freshness: &Freshness,
) -> Result<String, serde_json::Error> {
    render_with(replica, freshness, None)
}

/// A replica's JSON, as a read sends it: a failing one's `status_detail`
/// also carries `fixture_command`, when given.
pub(super) fn render_with(
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

/// The query of a replica read.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ReplicaQuery {
    /// Answer 409 `stale` when `Replica-Staleness-Ms` (how long since the
    /// host last knew the grain current with the log) is above this.
    max_staleness_ms: Option<u64>,
    /// Answer once the applied sequence is at least this (read-your-writes);
    /// 409 `not_yet` after `wait_ms`, 409 `failing` at once when the grain
    /// fails below it. With `watch`: the first event is at least this.
    min_sequence: Option<u64>,
    /// With `min_sequence`: wait up to this many ms (capped by the host's
    /// `[http] max_wait_ms`, 10000 by default); 0 or absent: answer at once.
    wait_ms: Option<u64>,
    /// `true`: a Server-Sent Events stream of this replica's changes.
    watch: Option<bool>,
    /// With `watch`: resume after this sequence (as `Last-Event-ID` does).
    after: Option<u64>,
}

/// `GET /healthz`: the process is up. Open to everyone, for probes.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = String, content_type = "text/plain")))]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /v1/replicas/{grain_type}/{grain_key}`: one replica, or its changes.
#[utoipa::path(get, path = "/v1/replicas/{grain_type}/{grain_key}", tag = "replicas",
    security(("bearer" = [])),
    params(
        ("grain_type" = String, Path, description = "The grain type", example = "Counter"),
        ("grain_key" = String, Path, description = "The grain key, percent-encoded; may contain `/`", example = "c-1"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag of an earlier read: 304 when unchanged"),
        ("Last-Event-ID" = Option<String>, Header, description = "With `watch`: resume after this sequence"),
        ReplicaQuery,
    ),
    responses(
        (status = 200, description = "The replica; with `watch=true` a `text/event-stream` of its changes (`id` = sequence; per grain, sequences only grow; `status` events for a change that keeps the sequence)",
            headers(
                ("ETag" = String, description = "Grain type, key, sequence, status and the plugin's sha256"),
                ("Replica-Sequence" = u64, description = "The applied sequence"),
                ("Replica-Timestamp" = String, description = "The applied snapshot's own time, RFC 3339"),
                ("Replica-Staleness-Ms" = u64, description = "Milliseconds since the host last knew this grain current with the log"),
            ),
            content((openapi::ReplicaDoc = "application/json"), (openapi::SseEventDoc = "text/event-stream"))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag",
            headers(
                ("Replica-Sequence" = u64, description = "The applied sequence"),
                ("Replica-Timestamp" = String, description = "The applied snapshot's own time, RFC 3339"),
                ("Replica-Staleness-Ms" = u64, description = "Milliseconds since the host last knew this grain current with the log"),
            )),
        (status = 400, description = "A bad query, or a path segment that is not percent-encoded UTF-8", body = openapi::ErrorDoc),
        (status = 401, description = "No token or an invalid one", body = openapi::ErrorDoc),
        (status = 403, description = "The token lacks `read` or `read:{grain_type}`", body = openapi::ErrorDoc),
        (status = 404, description = "No such grain, or (with `watch`) no plugin for the grain type", body = openapi::ErrorDoc),
        (status = 409, description = "`stale`: `Replica-Staleness-Ms` is above `max_staleness_ms` (with `staleness_ms`, `max_staleness_ms`); `not_yet`: the grain holds less than `min_sequence` after `wait_ms` (with `sequence` held and `wanted`, and `Retry-After`); `failing`: the grain fails to decode below `min_sequence` (with `reason`), answered at once",
            headers(("Retry-After" = u64, description = "With `not_yet`: seconds before asking again")),
            body = openapi::ErrorDoc),
        (status = 421, description = "The grain belongs to another shard; with `[consumer] peer_url`, `Location` is the same request at its owner",
            headers(("Location" = String, description = "The owner's URL for this request (with `peer_url`)")),
            body = openapi::ErrorDoc),
        (status = 500, description = "The state cannot be rendered as JSON", body = openapi::ErrorDoc),
        (status = 503, description = "Not replicated yet: the initial catch-up, or the re-read after a plugin swap, is running (`Retry-After`)", body = openapi::ErrorDoc),
    ))]
pub(super) async fn get_replica(
    State(api): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    query: Result<Query<ReplicaQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (grain_type, grain_key) = match path {
        Ok(Path(path)) => path,
        Err(rejection) => return bad_path(rejection),
    };
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "max_staleness_ms, min_sequence, wait_ms and after must be non-negative integers, watch true or false".into(),
        );
    };
    if let Some(shard) = api.shard
        && api.plugins.contains(&grain_type)
        && !shard.owns(&grain_type, &grain_key)
    {
        let owner = shard_of(&grain_type, &grain_key, shard.count);
        let mut answer = error(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            format!(
                "{grain_type}/{grain_key} belongs to shard {owner}/{}; this host replicates shard {shard}",
                shard.count
            ),
        );
        if let Some(template) = &api.peer_url
            && let Ok(location) = shards::location(template, owner, &uri).parse()
        {
            answer.headers_mut().insert(header::LOCATION, location);
        }
        return answer;
    }
    if query.watch == Some(true) {
        if !api.plugins.contains(&grain_type) {
            return unknown_grain_type(&grain_type);
        }
        let after = resume_after(&headers, query.after);
        return sse::stream(
            &api,
            Target::Grain {
                grain_type,
                grain_key,
                after,
                min_sequence: query.min_sequence,
            },
        );
    }
    let replica = match query.min_sequence {
        Some(min_sequence) => {
            if !api.plugins.contains(&grain_type) {
                return unknown_grain_type(&grain_type);
            }
            let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(api.max_wait);
            match consistency::wait_for_sequence(
                &api.store,
                &grain_type,
                &grain_key,
                min_sequence,
                wait,
            )
            .await
            {
                Waited::Holds(replica) => Some(replica),
                Waited::Refused(answer) => return answer,
                Waited::Absent if api.catch_up.is_catching_up(&grain_type) => None,
                Waited::Absent => {
                    return consistency::not_yet(&grain_type, &grain_key, 0, min_sequence);
                }
            }
        }
        None => api.store.get(&grain_type, &grain_key),
    };
    let Some(replica) = replica else {
        if api.catch_up.is_catching_up(&grain_type) {
            return catching_up(&api.catch_up, &format!("{grain_type}/{grain_key}"));
        }
        if let Some(progress) = api.plugins.reading_again(&grain_type) {
            return not_replicated_yet(
                &format!("{grain_type}/{grain_key}"),
                format!(
                    "the grain type's plugin was swapped or added, and {} of {} grains are read again",
                    progress.caught_up, progress.grains
                ),
            );
        }
        return error(
            StatusCode::NOT_FOUND,
            "unknown_grain",
            format!("no replica of {grain_type}/{grain_key}"),
        );
    };
    let freshness = Freshness::of(&replica, &api.freshness, now_millis());
    if let Some(max) = query.max_staleness_ms
        && (!replica.has_state() || freshness.staleness_ms > max)
    {
        return consistency::stale(&replica, &freshness, max);
    }
    let tag = etag(
        &replica,
        replica
            .decoded_by
            .as_ref()
            .map_or("", |d| d.sha256.as_str()),
    );
    let mut answer = if if_none_match(&headers, &tag) {
        (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response()
    } else {
        let fixture_command = match &replica.status {
            ReplicaStatus::Failing { sequence, .. } => {
                api.fixture_command(&grain_type, &grain_key, *sequence)
            }
            _ => None,
        };
        match render_with(&replica, &freshness, fixture_command) {
            Ok(body) => (
                [
                    (header::CONTENT_TYPE, "application/json".to_owned()),
                    (header::ETAG, tag),
                ],
                body,
            )
                .into_response(),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "render",
                    format!("state cannot be rendered as JSON: {e}"),
                );
            }
        }
    };
    freshness.add_headers(answer.headers_mut());
    answer
}

/// A replica's entity tag: grain type, key, sequence, status and the sha256
/// of the plugin that decoded it, so a new snapshot, a status change or a
/// re-decode by another plugin build each change it.
fn etag(replica: &Replica, plugin_sha256: &str) -> String {
    let mut hash = Sha256::new();
    for part in [
        replica.grain_type.as_bytes(),
        replica.grain_key.as_bytes(),
        &replica.sequence.to_le_bytes(),
        plugin_sha256.as_bytes(),
        format!("{:?}", replica.status).as_bytes(),
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    format!("\"{}\"", hex::encode(&hash.finalize()[..16]))
}

/// Whether `If-None-Match` names `tag` (or is `*`); weak tags compare too.
fn if_none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == tag)
}

/// 400 `bad_path`: a path segment is not valid percent-encoded UTF-8.
fn bad_path(rejection: PathRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad_path",
        format!("the path cannot be read: {}", rejection.body_text()),
    )
}

/// 404 `unknown_grain_type`.
fn unknown_grain_type(grain_type: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_grain_type",
        format!("no plugin replicates grain type {grain_type}"),
    )
}

/// The query of a grain type's key listing.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// List the keys (or replicas) after this one.
    after: Option<String>,
    /// Most keys in the page (1 to 1000, default 100); with `fields`, most
    /// replicas (1 to 10000, default 1000).
    limit: Option<usize>,
    /// `true`: a Server-Sent Events stream of every grain of the type (the
    /// current replicas first, then each change).
    watch: Option<bool>,
    /// The bulk form: `sequence`, each replica's key, applied sequence,
    /// status and decoding plugin's sha256 (JSON); `state`, each replica
    /// whole as a read renders it, one per line (`application/x-ndjson`,
    /// the next page's `after` in the `Replica-Next-After` header).
    fields: Option<bulk::Fields>,
}

/// `GET /v1/replicas/{grain_type}`: the grain type's keys, or its changes.
#[utoipa::path(get, path = "/v1/replicas/{grain_type}", tag = "replicas",
    security(("bearer" = [])),
    params(
        ("grain_type" = String, Path, description = "The grain type", example = "Counter"),
        ("Last-Event-ID" = Option<String>, Header, description = "With `watch`: resume after this cursor (an event's `id`); a cursor the host cannot resume gets a `resync` event, then every grain"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page of keys; with `fields=sequence` a page of positions; with `fields=state` one replica per line (NDJSON); with `watch=true` a `text/event-stream` of the type's replicas: every grain once, then each change (`id` = cursor; per grain, sequences only grow and none is sent twice)",
            headers(("Replica-Next-After" = String, description = "With `fields=state`: the `after` of the next page, percent-encoded; absent on the last page")),
            content((openapi::ListingDoc = "application/json"), (openapi::ReplicaDoc = "application/x-ndjson"), (openapi::SseEventDoc = "text/event-stream"))),
        (status = 400, description = "A bad query, or a grain type that is not percent-encoded UTF-8", body = openapi::ErrorDoc),
        (status = 401, description = "No token or an invalid one", body = openapi::ErrorDoc),
        (status = 403, description = "The token lacks `read` or `read:{grain_type}`", body = openapi::ErrorDoc),
        (status = 404, description = "No plugin replicates this grain type", body = openapi::ErrorDoc),
        (status = 503, description = "The listing would be partial: the type's initial catch-up, or its re-read after a plugin swap or add, is running (`catching_up`, with `Retry-After`)",
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again")),
            body = openapi::ErrorDoc),
    ))]
pub(super) async fn list_keys(
    State(api): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let grain_type = match path {
        Ok(Path(grain_type)) => grain_type,
        Err(rejection) => return bad_path(rejection),
    };
    let Ok(Query(page)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit must be a positive integer, watch true or false, fields sequence or state"
                .into(),
        );
    };
    if !api.plugins.contains(&grain_type) {
        return unknown_grain_type(&grain_type);
    }
    if page.watch == Some(true) {
        return sse::stream(
            &api,
            Target::GrainType {
                grain_type,
                cursor: sse::resume_cursor(&headers),
            },
        );
    }
    if let Some(partial) = listing_not_ready(&api, &grain_type) {
        return partial;
    }
    if let Some(fields) = page.fields {
        return bulk::page(
            &api.store,
            &api.freshness,
            &grain_type,
            page.after.as_deref(),
            page.limit,
            fields,
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

/// 503 `catching_up` while a listing of `grain_type` would be partial:
/// during its initial catch-up, or its re-read after a plugin swap or add.
fn listing_not_ready(api: &ApiState, grain_type: &str) -> Option<Response> {
    let what = format!("the listing of grain type {grain_type}");
    if api.catch_up.is_catching_up(grain_type) {
        return Some(catching_up(&api.catch_up, &what));
    }
    let progress = api.plugins.reading_again(grain_type)?;
    Some(not_replicated_yet(
        &what,
        format!(
            "the grain type's plugin was swapped or added, and {} of {} grains are read again",
            progress.caught_up, progress.grains
        ),
    ))
}

/// `GET /v1/plugins`: the loaded plugins.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Grain type, schema, sha256, size, limits, calls, failures and breaker of each plugin, and its `shadow` (null without one): `{file, name, sha256, schema_version, sample, counts: {same, fields_added, differs, candidate_failed, candidate_recovers, shed}, examples: {CLASS: [{grain_key, sequence, differences, more_differences, served_error, candidate_error}]}}` for every class but `same`", body = Object),
        (status = 401, description = "No token or an invalid one", body = openapi::ErrorDoc),
        (status = 403, description = "The token has no `read` scope", body = openapi::ErrorDoc),
    ))]
pub(super) async fn plugins(State(api): State<ApiState>) -> Response {
    let quarantined = api.plugins.quarantined();
    let list: Vec<_> = api
        .plugins
        .current()
        .iter()
        .map(|(grain_type, in_force)| {
            let p = &in_force.plugin;
            serde_json::json!({
                "grain_type": grain_type,
                "name": p.name(),
                "schema_name": p.description().schema_name,
                "schema_version": p.description().schema_version,
                "sdk_version": p.description().sdk_version,
                "state_versions": p.description().state_versions,
                "sha256": p.sha256(),
                "size": p.size(),
                "loaded_at_millis": millis(p.loaded_at()),
                "redecode": in_force.redecode.as_ref().map(|r| {
                    let progress = r.progress();
                    serde_json::json!({
                        "done": progress.caught_up,
                        "total": progress.grains,
                        "complete": progress.complete,
                    })
                }),
                "calls": p.stats().calls(),
                "failures": p.stats().failures(),
                "limits": {
                    "timeout_ms": p.limits().timeout.as_millis() as u64,
                    "max_memory_bytes": p.limits().max_memory_bytes,
                    "max_output_nodes": p.limits().output.max_nodes,
                    "max_output_bytes": p.limits().output.max_bytes,
                    "max_rendered_bytes": p.limits().output.max_rendered_bytes,
                    "max_output_depth": p.limits().output.max_depth,
                },
                "breaker": in_force.breaker.as_deref().map(breaker_json),
                "quarantined_snapshots": quarantined.get(grain_type).copied().unwrap_or(0),
                "shadow": in_force.shadow.as_deref().map(Shadow::json),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "plugins": list })).into_response()
}

/// `POST /v1/admin/reload`: re-reads the config's `[[plugin]]` entries and
/// swaps what changed, as SIGHUP does; answers the outcome.
#[utoipa::path(post, path = "/v1/admin/reload", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Applied (or nothing changed): `{result, added, changed, removed, restart_needed, error}`", body = Object),
        (status = 401, description = "No token or an invalid one", body = openapi::ErrorDoc),
        (status = 403, description = "The token has no `admin` scope, or no admin token is configured", body = openapi::ErrorDoc),
        (status = 422, description = "Refused: a new plugin failed a check; nothing changed", body = Object),
    ))]
pub(super) async fn admin_reload(State(api): State<ApiState>) -> Response {
    let Some(reloader) = &api.reloader else {
        return error(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin endpoints are off: set [admin] token_file, or give a token of [http.auth] the `admin` scope".into(),
        );
    };
    let outcome = reloader.reload().await;
    let status = if outcome.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, axum::Json(outcome)).into_response()
}

/// Unix milliseconds of a wall-clock time (0 before 1970).
fn millis(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A breaker as `/v1/plugins` shows it.
pub(super) fn breaker_json(breaker: &Breaker) -> serde_json::Value {
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
    not_replicated_yet(
        what,
        format!(
            "the initial catch-up has read {} of {} grains",
            progress.caught_up, progress.grains
        ),
    )
}

/// 503 `catching_up` with `Retry-After`: "`what` is not replicated yet: `why`".
fn not_replicated_yet(what: &str, why: String) -> Response {
    retry_after(error(
        StatusCode::SERVICE_UNAVAILABLE,
        "catching_up",
        format!("{what} is not replicated yet: {why}"),
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

/// `GET /readyz`: ready once the initial catch-up is complete, and while
/// the log answers or has not answered for less than
/// `[http] ready_during_log_outage_s` (read from the consumer's listings,
/// never a query per probe). Open to everyone, for load balancers; it
/// shows only counts.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = openapi::ReadyDoc),
        (status = 503, description = "Not ready: `error` says why (`catching_up`, with `Retry-After`; `log_unreachable`; `draining`, after SIGTERM)", body = openapi::ReadyDoc),
    ))]
pub(super) async fn readyz(State(api): State<ApiState>) -> Response {
    let progress = api.catch_up.progress();
    let mut body = serde_json::json!({
        "ready": false,
        "caught_up": progress.caught_up,
        "grains": progress.grains,
        "plugins": api.plugins.current().len(),
    });
    let not_ready = if api.draining.is_stopped() {
        Some((
            "draining",
            "the host is shutting down and drains its connections".to_owned(),
        ))
    } else if let Some(why) = log_outage(&api, progress.complete).await {
        Some(("log_unreachable", why))
    } else if !progress.complete {
        Some((
            "catching_up",
            format!(
                "the initial catch-up has read {} of {} grains",
                progress.caught_up, progress.grains
            ),
        ))
    } else {
        None
    };
    match not_ready {
        None => {
            body["ready"] = true.into();
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Some((code, message)) => {
            body["error"] = code.into();
            body["message"] = message.into();
            let response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
            if code == "catching_up" {
                retry_after(response)
            } else {
                response
            }
        }
    }
}

/// Why the host counts as cut off from its log, if it does. The consumer's
/// own listings tell: a caught-up host whose listings fail stays ready for
/// `[http] ready_during_log_outage_s`, serving replicas whose
/// `Replica-Staleness-Ms` grows; one still catching up is not ready at the
/// first failure. Only a host that replicates no grain type (and so lists
/// nothing) asks the log itself.
async fn log_outage(api: &ApiState, caught_up: bool) -> Option<String> {
    if !api.freshness.is_listing() {
        return api.log.ping().await.err().map(|e| e.to_string());
    }
    let since = api.freshness.log_health().failing_since_millis?;
    let failing_ms = u64::try_from(now_millis().saturating_sub(since)).unwrap_or(0);
    let allowance_ms = api.ready_during_log_outage.as_millis() as u64;
    if caught_up && failing_ms <= allowance_ms {
        return None;
    }
    Some(format!(
        "the log has not answered the host's listings for {failing_ms} ms{}",
        if caught_up {
            format!(
                " (ready_during_log_outage_s allows {} s)",
                allowance_ms / 1000
            )
        } else {
            String::new()
        }
    ))
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "health",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "No token or an invalid one", body = openapi::ErrorDoc),
        (status = 403, description = "The token lacks `metrics`", body = openapi::ErrorDoc),
    ))]
pub(super) async fn metrics(State(api): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(
            &api.store,
            &api.plugins.current(),
            api.plugins.quarantined(),
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::super::access::{Access, declared_only};
    use super::super::auth::{Auth, TokenSources};
    use super::super::openapi::document_json;
    use super::super::operator_page::tests::api;
    use super::*;

    fn auth(dir: &std::path::Path) -> Arc<Auth> {
        let file = dir.join("tokens");
        let hash = hex::encode(Sha256::digest(b"reader"));
        std::fs::write(&file, format!("{hash} read\n")).unwrap();
        Arc::new(
            Auth::load(TokenSources {
                config: "host.toml".into(),
                files: vec![file],
                env: vec![],
                admin_file: None,
                admin_only: false,
            })
            .unwrap(),
        )
    }

    /// `{*x}` (axum's catch-all) as OpenAPI writes it, `{x}`.
    fn as_openapi(template: &str) -> String {
        template.replace("{*", "{")
    }

    fn concrete(template: &str) -> String {
        template
            .replace("{grain_type}", "Counter")
            .replace("{*grain_key}", "k")
    }

    #[test]
    fn every_documented_operation_is_a_declared_route_and_needs_a_token_unless_open() {
        let declared: BTreeMap<String, Access> = routes(None)
            .declared()
            .iter()
            .map(|(path, access)| (as_openapi(path), *access))
            .collect();
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        let documented: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
        assert_eq!(
            declared.keys().collect::<Vec<_>>(),
            documented,
            "every route is documented and every documented path is routed"
        );
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let secured = operation["security"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty());
                assert_eq!(
                    secured,
                    declared[path] != Access::Open,
                    "{method} {path}: the document's security disagrees with the route's access"
                );
            }
        }
        assert!(
            doc.get("security").is_none(),
            "no global security requirement"
        );
    }

    #[tokio::test]
    async fn every_route_but_the_probes_refuses_a_request_without_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let auth = auth(dir.path());
        let router = router(api(Arc::default(), Arc::default()), Some(Arc::clone(&auth)));
        for (template, access) in routes(Some(auth)).declared() {
            let method = if *template == "/v1/admin/reload" {
                "POST"
            } else {
                "GET"
            };
            let request = Request::builder()
                .method(method)
                .uri(concrete(template))
                .body(Body::empty())
                .unwrap();
            let response = declared_only(router.clone().oneshot(request).await.unwrap());
            let refused = response.status() == StatusCode::UNAUTHORIZED;
            assert_eq!(
                refused,
                *access != Access::Open,
                "{method} {template}: {}",
                response.status()
            );
            assert_ne!(
                response.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{template}"
            );
        }
    }

    #[tokio::test]
    async fn a_route_added_around_the_declarations_is_refused() {
        let router: Router = router(api(Arc::default(), Arc::default()), None)
            .route("/v1/undeclared", get(|| async { "secret" }));
        let request = Request::builder()
            .uri("/v1/undeclared")
            .body(Body::empty())
            .unwrap();
        let response = declared_only(router.oneshot(request).await.unwrap());
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("undeclared_route"));
    }

    #[tokio::test]
    async fn framework_errors_are_json_too() {
        let router = router(api(Arc::default(), Arc::default()), None);
        for (method, uri, status) in [
            ("POST", "/healthz", StatusCode::METHOD_NOT_ALLOWED),
            ("GET", "/v1/replicas/Counter/%FF", StatusCode::BAD_REQUEST),
            ("GET", "/v1/replicas/%C3%28", StatusCode::BAD_REQUEST),
            ("GET", "/nowhere", StatusCode::NOT_FOUND),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            let response = declared_only(router.clone().oneshot(request).await.unwrap());
            assert_eq!(response.status(), status, "{method} {uri}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/json",
                "{method} {uri}"
            );
            let allow = response.headers().get(header::ALLOW).cloned();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(
                json["error"].is_string() && json["message"].is_string(),
                "{json}"
            );
            if status == StatusCode::METHOD_NOT_ALLOWED {
                assert!(allow.is_some(), "405 keeps its Allow header");
            }
        }
    }
}
