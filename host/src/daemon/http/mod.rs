//! The read-only HTTP API: replicas (plain reads with `ETag`, and change
//! streams), plugins, health, readiness, metrics, the OpenAPI document and
//! the operator page.
//!
//! # Layout
//! Dependencies point down this list; nothing points back up.
//! - here: the route table ([`routes`]) and the [`router`] around it;
//! - [`openapi`] — the OpenAPI document, from the handlers' attributes;
//! - handlers: [`replicas`] (`/v1/replicas/...`), [`status`] (health,
//!   readiness, metrics, plugins, reload), [`operator_page`], [`shards`];
//! - what the replica handlers use: [`watch`] (change streams, Server-Sent
//!   Events) and [`bulk`] (the bulk pages of a grain type);
//! - [`access`] (the access each route declares, checked by a route layer)
//!   and [`auth`] (bearer tokens and scopes);
//! - leaves: [`state`] ([`ApiState`], what every handler reads), [`body`]
//!   (the JSON error, a replica's JSON) and [`schema`] (the OpenAPI body
//!   schemas).

pub(crate) mod access;
pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod bulk;
pub(crate) mod openapi;
pub(crate) mod operator_page;
pub(crate) mod replicas;
pub(crate) mod schema;
pub(crate) mod shards;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod watch;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

use self::access::{Access, Routes};
use self::auth::Auth;
use self::body::{error, json_errors};
use self::replicas::{get_replica, list_keys};
pub use self::state::ApiState;
use self::status::{admin_reload, healthz, metrics, plugins, readyz};

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
        .layer(axum::middleware::from_fn(
            crate::daemon::metrics::count_requests,
        ))
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use axum::http::header;
    use sha2::{Digest, Sha256};

    use super::access::declared_only;
    use super::auth::TokenSources;
    use super::openapi::document_json;
    use super::operator_page::tests::api;
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
