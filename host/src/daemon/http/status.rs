//! The host's own endpoints: `/healthz`, `/readyz`, `/metrics`,
//! `/v1/plugins` and `POST /v1/admin/reload`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::body::{breaker_json, error, millis, retry_after};
use super::schema;
use super::state::ApiState;
use crate::daemon::shadow::Shadow;
use crate::store::now_millis;

/// `GET /healthz`: the process is up. Open to everyone, for probes.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /v1/plugins`: the loaded plugins.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Grain type, schema, sha256, size, limits, calls, failures and breaker of each plugin, and its `shadow` (null without one): `{file, name, sha256, schema_version, sample, counts: {same, fields_added, differs, candidate_failed, candidate_recovers, shed}, examples: {CLASS: [{grain_key, sequence, differences, more_differences, served_error, candidate_error}]}}` for every class but `same`", body = Object),
        (status = 401, description = "No token or an invalid one", body = schema::ErrorDoc),
        (status = 403, description = "The token has no `read` scope", body = schema::ErrorDoc),
    ))]
pub(crate) async fn plugins(State(api): State<ApiState>) -> Response {
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
        (status = 401, description = "No token or an invalid one", body = schema::ErrorDoc),
        (status = 403, description = "The token has no `admin` scope, or no admin token is configured", body = schema::ErrorDoc),
        (status = 422, description = "Refused: a new plugin failed a check; nothing changed", body = Object),
    ))]
pub(crate) async fn admin_reload(State(api): State<ApiState>) -> Response {
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

/// `GET /readyz`: ready once the initial catch-up is complete, and while
/// the log answers or has not answered for less than
/// `[http] ready_during_log_outage_s` (read from the consumer's listings,
/// never a query per probe). Open to everyone, for load balancers; it
/// shows only counts.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = schema::ReadyDoc),
        (status = 503, description = "Not ready: `error` says why (`catching_up`, with `Retry-After`; `log_unreachable`; `draining`, after SIGTERM)", body = schema::ReadyDoc),
    ))]
pub(crate) async fn readyz(State(api): State<ApiState>) -> Response {
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
        (status = 401, description = "No token or an invalid one", body = schema::ErrorDoc),
        (status = 403, description = "The token lacks `metrics`", body = schema::ErrorDoc),
    ))]
pub(crate) async fn metrics(State(api): State<ApiState>) -> Response {
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
