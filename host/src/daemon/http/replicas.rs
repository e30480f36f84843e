//! `GET /v1/replicas/{grain_type}/{grain_key}` (a replica, or its change
//! stream) and `GET /v1/replicas/{grain_type}` (keys, bulk pages, or the
//! type's change stream).

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::body::{catching_up, error, not_replicated_yet, render_with};
use super::state::ApiState;
use super::watch::{self as sse, Target, resume_after};
use super::{bulk, schema, shards};
use crate::consumer::shard::shard_of;
use crate::daemon::consistency::{self, Freshness, Waited};
use crate::store::{Replica, ReplicaStatus, now_millis};

/// Most keys one page of `GET /v1/replicas/{grain_type}` returns.
pub const MAX_PAGE: usize = 1000;

/// The query of a replica read.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReplicaQuery {
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
            content((schema::ReplicaDoc = "application/json"), (schema::SseEventDoc = "text/event-stream"))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag",
            headers(
                ("Replica-Sequence" = u64, description = "The applied sequence"),
                ("Replica-Timestamp" = String, description = "The applied snapshot's own time, RFC 3339"),
                ("Replica-Staleness-Ms" = u64, description = "Milliseconds since the host last knew this grain current with the log"),
            )),
        (status = 400, description = "A bad query, or a path segment that is not percent-encoded UTF-8", body = schema::ErrorDoc),
        (status = 401, description = "No token or an invalid one", body = schema::ErrorDoc),
        (status = 403, description = "The token lacks `read` or `read:{grain_type}`", body = schema::ErrorDoc),
        (status = 404, description = "No such grain, or (with `watch`) no plugin for the grain type", body = schema::ErrorDoc),
        (status = 409, description = "`stale`: `Replica-Staleness-Ms` is above `max_staleness_ms` (with `staleness_ms`, `max_staleness_ms`); `not_yet`: the grain holds less than `min_sequence` after `wait_ms` (with `sequence` held and `wanted`, and `Retry-After`); `failing`: the grain fails to decode below `min_sequence` (with `reason`), answered at once",
            headers(("Retry-After" = u64, description = "With `not_yet`: seconds before asking again")),
            body = schema::ErrorDoc),
        (status = 421, description = "The grain belongs to another shard; with `[consumer] peer_url`, `Location` is the same request at its owner",
            headers(("Location" = String, description = "The owner's URL for this request (with `peer_url`)")),
            body = schema::ErrorDoc),
        (status = 500, description = "The state cannot be rendered as JSON", body = schema::ErrorDoc),
        (status = 503, description = "Not replicated yet: the initial catch-up, or the re-read after a plugin swap, is running (`Retry-After`)", body = schema::ErrorDoc),
    ))]
pub(crate) async fn get_replica(
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
pub(crate) struct PageQuery {
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
            content((schema::ListingDoc = "application/json"), (schema::ReplicaDoc = "application/x-ndjson"), (schema::SseEventDoc = "text/event-stream"))),
        (status = 400, description = "A bad query, or a grain type that is not percent-encoded UTF-8", body = schema::ErrorDoc),
        (status = 401, description = "No token or an invalid one", body = schema::ErrorDoc),
        (status = 403, description = "The token lacks `read` or `read:{grain_type}`", body = schema::ErrorDoc),
        (status = 404, description = "No plugin replicates this grain type", body = schema::ErrorDoc),
        (status = 503, description = "The listing would be partial: the type's initial catch-up, or its re-read after a plugin swap or add, is running (`catching_up`, with `Retry-After`)",
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again")),
            body = schema::ErrorDoc),
    ))]
pub(crate) async fn list_keys(
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
