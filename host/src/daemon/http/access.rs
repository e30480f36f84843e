//! Access declared per route: every route states the scope it needs where
//! it is routed ([`Routes::route`]), and a route layer checks it after
//! routing, on the route's own path parameters.
//!
//! The route layer marks each response it let through or refused
//! ([`Checked`]); the server refuses to send a response without the mark
//! ([`declared_only`]: 500 `undeclared_route`), so a route added to the
//! router any other way fails at its first request. Paths no route serves
//! (404) need any valid token.

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::MethodRouter;
use percent_encoding::percent_decode_str;

use super::auth::{Auth, Need};
use super::body::error;

/// What a route needs, as declared where it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: probes (`/healthz`, `/readyz`).
    Open,
    /// Any valid token.
    Token,
    /// `read`, or `read:T` for the route's `{grain_type}`.
    ReadGrainType,
    /// `read` (every grain type).
    ReadAll,
    /// Any read scope.
    AnyRead,
    /// `metrics`.
    Metrics,
    /// `admin`.
    Admin,
}

impl Access {
    /// What a request for `path` (raw, percent-encoded), routed to
    /// `template`, needs.
    pub fn need(self, template: &str, path: &str) -> Need {
        match self {
            Access::Open => Need::Open,
            Access::Token => Need::Token,
            Access::ReadGrainType => {
                Need::ReadType(path_param(template, path, "grain_type").unwrap_or_default())
            }
            Access::ReadAll => Need::ReadAll,
            Access::AnyRead => Need::AnyRead,
            Access::Metrics => Need::Metrics,
            Access::Admin => Need::Admin,
        }
    }
}

/// The percent-decoded value of the `{name}` segment of `template` in
/// `path` (invalid UTF-8 replaced: the handler refuses such a path).
pub fn path_param(template: &str, path: &str, name: &str) -> Option<String> {
    let wanted = format!("{{{name}}}");
    let index = template.split('/').position(|segment| segment == wanted)?;
    let raw = path.split('/').nth(index)?;
    Some(percent_decode_str(raw).decode_utf8_lossy().into_owned())
}

/// The router under construction, with each route's declared access.
pub struct Routes<S> {
    router: Router<S>,
    auth: Option<Arc<Auth>>,
    declared: Vec<(&'static str, Access)>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet; `auth` is `None` without access control.
    pub fn new(auth: Option<Arc<Auth>>) -> Self {
        Self {
            router: Router::new(),
            auth,
            declared: Vec::new(),
        }
    }

    /// Routes `path` to `handler`, which needs `access`.
    pub fn route(mut self, path: &'static str, access: Access, handler: MethodRouter<S>) -> Self {
        let guard = Guard {
            auth: self.auth.clone(),
            access,
        };
        self.router = self
            .router
            .route(path, handler.route_layer(from_fn_with_state(guard, check)));
        self.declared.push((path, access));
        self
    }

    /// The declared routes, in order.
    #[cfg(test)]
    pub fn declared(&self) -> &[(&'static str, Access)] {
        &self.declared
    }

    /// The router: the declared routes, and `fallback` for other paths
    /// (behind any valid token).
    pub fn finish(self, fallback: MethodRouter<S>) -> Router<S> {
        let guard = Guard {
            auth: self.auth.clone(),
            access: Access::Token,
        };
        self.router
            .fallback(fallback.layer(from_fn_with_state(guard, check)))
    }
}

/// The mark of a response whose route declared its access.
#[derive(Debug, Clone, Copy)]
pub struct Checked;

/// A route's declared access, and the tokens to check it against.
#[derive(Clone)]
struct Guard {
    auth: Option<Arc<Auth>>,
    access: Access,
}

/// The route layer: serves the request if the route's access allows it.
async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let mut response = match &guard.auth {
        None => next.run(request).await,
        Some(auth) => {
            let template = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("", MatchedPath::as_str);
            let need = guard.access.need(template, request.uri().path());
            match auth.check(&need, request.headers()) {
                Ok(()) => next.run(request).await,
                Err(denied) => denied.into_response(),
            }
        }
    };
    response.extensions_mut().insert(Checked);
    response
}

/// `response`, if its route declared its access; otherwise 500
/// `undeclared_route` instead (a route added around [`Routes::route`]).
/// A 405 is let through: no handler ran.
pub fn declared_only(response: Response) -> Response {
    if response.extensions().get::<Checked>().is_some()
        || response.status() == StatusCode::METHOD_NOT_ALLOWED
    {
        return response;
    }
    tracing::error!("a route declares no access: its response is refused");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "undeclared_route",
        "this route declares no access and is refused".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grain_type_comes_from_the_routed_segment_percent_decoded() {
        let t = "/v1/replicas/{grain_type}/{*grain_key}";
        assert_eq!(
            Access::ReadGrainType.need(t, "/v1/replicas/Bank%41ccount/a%2Fb"),
            Need::ReadType("BankAccount".into())
        );
        assert_eq!(
            Access::ReadGrainType.need("/v1/replicas/{grain_type}", "/v1/replicas/Counter"),
            Need::ReadType("Counter".into())
        );
        assert_eq!(
            path_param(t, "/v1/replicas/%FF/k", "grain_type").as_deref(),
            Some("\u{FFFD}")
        );
        assert_eq!(
            Access::Admin.need("/v1/admin/reload", "/v1/admin/reload"),
            Need::Admin
        );
    }
}
