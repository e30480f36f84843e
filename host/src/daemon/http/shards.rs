//! Shard routing over HTTP: `GET /v1/shards`, what a client or a proxy needs
//! to send each read to the host that owns the grain, and the `Location` a
//! 421 `misdirected` answer carries (`[consumer] peer_url`).

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::schema::ErrorDoc;
use super::state::ApiState;
use crate::consumer::Shard;

/// How a grain's shard is computed; see [`crate::consumer::shard`].
pub const HASH: &str = "fnv1a64(utf8(grain_type) || 0x00 || utf8(grain_key)) mod count";

/// `GET /v1/shards`: how this deployment shards its grains.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShardsDoc {
    /// Whether this host replicates one shard of several; `false`: every
    /// grain (`count` 1, `shard` 0).
    pub sharded: bool,
    /// How many shards there are.
    pub count: u32,
    /// This host's shard, `0 ≤ shard < count`.
    pub shard: u32,
    /// A grain's shard: [`HASH`].
    pub hash: &'static str,
    /// 64-bit FNV-1a's offset basis.
    pub fnv_offset_basis: &'static str,
    /// 64-bit FNV-1a's prime.
    pub fnv_prime: &'static str,
    /// `[consumer] peer_url`, `{shard}` standing for a shard's index; null
    /// when not configured.
    pub peer_url: Option<String>,
    /// Each shard's base URL, by index, from `peer_url`; empty without it.
    pub peers: Vec<String>,
}

impl ShardsDoc {
    /// The answer for a host of `shard` (every grain when `None`) with the
    /// peer URL template `peer_url`.
    pub fn new(shard: Option<Shard>, peer_url: Option<&str>) -> Self {
        let Shard { index, count } = shard.unwrap_or(Shard { index: 0, count: 1 });
        Self {
            sharded: shard.is_some(),
            count,
            shard: index,
            hash: HASH,
            fnv_offset_basis: "0xcbf29ce484222325",
            fnv_prime: "0x100000001b3",
            peer_url: peer_url.map(str::to_owned),
            peers: peer_url
                .map(|t| (0..count).map(|i| peer_base(t, i)).collect())
                .unwrap_or_default(),
        }
    }
}

/// `GET /v1/shards`.
#[utoipa::path(get, path = "/v1/shards", tag = "shards",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The shard count, this host's shard, the hash that assigns grains to shards, and where each shard's host answers", body = ShardsDoc),
        (status = 401, description = "No token or an invalid one", body = ErrorDoc),
        (status = 403, description = "The token has no `read` scope", body = ErrorDoc),
    ))]
pub(super) async fn shards(State(api): State<ApiState>) -> Response {
    axum::Json(ShardsDoc::new(api.shard, api.peer_url.as_deref())).into_response()
}

/// Shard `index`'s base URL: the template with `{shard}` filled in, without
/// a trailing `/`.
fn peer_base(template: &str, index: u32) -> String {
    template
        .replace("{shard}", &index.to_string())
        .trim_end_matches('/')
        .to_owned()
}

/// Where the owner of a grain answers the same request: shard `owner`'s
/// base URL, then the request's path and query.
pub(super) fn location(template: &str, owner: u32, uri: &Uri) -> String {
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    format!("{}{path_and_query}", peer_base(template, owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_keeps_path_and_query() {
        let uri: Uri = "/v1/replicas/Counter/a%2Fb?max_staleness_ms=5"
            .parse()
            .unwrap();
        assert_eq!(
            location("http://replica-{shard}.replica-host:8080/", 2, &uri),
            "http://replica-2.replica-host:8080/v1/replicas/Counter/a%2Fb?max_staleness_ms=5"
        );
    }

    #[test]
    fn unsharded_is_one_shard_without_peers() {
        let doc = ShardsDoc::new(None, None);
        assert!(!doc.sharded);
        assert_eq!((doc.count, doc.shard), (1, 0));
        assert!(doc.peers.is_empty());
        let doc = ShardsDoc::new(
            Some(Shard { index: 1, count: 3 }),
            Some("http://h{shard}:1"),
        );
        assert_eq!(doc.peers, ["http://h0:1", "http://h1:1", "http://h2:1"]);
    }
}
