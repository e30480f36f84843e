//! The bulk forms of `GET /v1/replicas/{grain_type}`: a page of every
//! replica's position (`fields=sequence`, what `replica-host verify`
//! compares with the log), or of whole replicas as NDJSON (`fields=state`,
//! a client's initial sync). Both page in key order like the key listing,
//! with a larger page, and hold the store's lock only to copy one page.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::body::render;
use crate::consumer::Freshness as Confirmations;
use crate::daemon::consistency::Freshness;
use crate::store::{Replica, ReplicaStore, now_millis};

/// Most replicas one bulk page holds. A `fields=sequence` row is about 150
/// bytes of JSON, so a page stays near 1.5 MB; a million grains are 100
/// pages.
pub const MAX_BULK_PAGE: usize = 10_000;

/// Replicas in a bulk page when `limit` is not given.
pub const DEFAULT_BULK_PAGE: usize = 1_000;

/// The response header that carries the `after` of the next NDJSON page,
/// percent-encoded (absent on the last page).
pub const NEXT_AFTER_HEADER: &str = "replica-next-after";

/// What a bulk page holds per replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fields {
    /// Key, applied sequence, status and the decoding plugin's sha256, as
    /// one JSON document.
    Sequence,
    /// Each replica whole, as a read renders it, one per line (NDJSON).
    State,
}

/// One replica's position in a `fields=sequence` page.
#[derive(Serialize)]
struct Position<'a> {
    grain_key: &'a str,
    sequence: u64,
    status: &'static str,
    sha256: Option<&'a str>,
}

/// A `fields=sequence` page.
#[derive(Serialize)]
struct PositionsPage<'a> {
    grain_type: &'a str,
    replicas: Vec<Position<'a>>,
    next_after: Option<&'a str>,
}

/// One page of `grain_type`'s replicas after `after`, at most `limit`
/// (clamped to 1..=[`MAX_BULK_PAGE`]), in the form `fields` asks for.
pub(super) fn page(
    store: &ReplicaStore,
    confirmations: &Arc<Confirmations>,
    grain_type: &str,
    after: Option<&str>,
    limit: Option<usize>,
    fields: Fields,
) -> Response {
    let limit = limit.unwrap_or(DEFAULT_BULK_PAGE).clamp(1, MAX_BULK_PAGE);
    // Every stored replica has a version above 0: this copies the page whole.
    let (replicas, next_after) = store.changed_since(grain_type, after, limit, 0);
    match fields {
        Fields::Sequence => positions(grain_type, &replicas, next_after.as_deref()),
        Fields::State => ndjson(replicas, next_after.as_deref(), Arc::clone(confirmations)),
    }
}

fn positions(grain_type: &str, replicas: &[Replica], next_after: Option<&str>) -> Response {
    let page = PositionsPage {
        grain_type,
        replicas: replicas
            .iter()
            .map(|r| Position {
                grain_key: &r.grain_key,
                sequence: r.sequence,
                status: r.status.label(),
                sha256: r.decoded_by.as_deref().map(|d| d.sha256.as_str()),
            })
            .collect(),
        next_after,
    };
    axum::Json(page).into_response()
}

/// The replicas as NDJSON, rendered one at a time as the body is sent, so
/// a page of large states is never held rendered whole.
fn ndjson(
    replicas: Vec<Replica>,
    next_after: Option<&str>,
    confirmations: Arc<Confirmations>,
) -> Response {
    let lines = futures::stream::iter(replicas.into_iter().map(move |replica| {
        let freshness = Freshness::of(&replica, &confirmations, now_millis());
        render(&replica, &freshness).map(|mut line| {
            line.push('\n');
            line
        })
    }));
    let mut response = Body::from_stream(lines).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Some(next) = next_after
        && let Ok(value) =
            HeaderValue::from_str(&utf8_percent_encode(next, NON_ALPHANUMERIC).to_string())
    {
        headers.insert(NEXT_AFTER_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DecodedSnapshot, ReplicaStatus};
    use crate::value::State;

    fn store(keys: usize) -> ReplicaStore {
        let store = ReplicaStore::new();
        for i in 0..keys {
            let snapshot = DecodedSnapshot {
                state: State::from_serialize(&i).unwrap(),
                sequence: i as u64 + 1,
                timestamp_millis: 0,
                source_cluster: "c".into(),
                decoded_by: None,
            };
            store
                .apply("T", &format!("k{i:03}"), snapshot, ReplicaStatus::Ok)
                .unwrap();
        }
        store
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn sequence_pages_cover_every_replica_once_in_key_order() {
        let store = store(25);
        let mut after: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let response = page(
                &store,
                &Arc::default(),
                "T",
                after.as_deref(),
                Some(10),
                Fields::Sequence,
            );
            let json: serde_json::Value = serde_json::from_str(&body(response).await).unwrap();
            for r in json["replicas"].as_array().unwrap() {
                seen.push((
                    r["grain_key"].as_str().unwrap().to_owned(),
                    r["sequence"].as_u64().unwrap(),
                ));
                assert_eq!(r["status"], "ok");
            }
            match json["next_after"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        let expected: Vec<(String, u64)> = (0..25)
            .map(|i| (format!("k{i:03}"), i as u64 + 1))
            .collect();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn ndjson_is_one_rendered_replica_per_line_with_the_next_page_in_a_header() {
        let store = store(3);
        let response = page(&store, &Arc::default(), "T", None, Some(2), Fields::State);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/x-ndjson"
        );
        assert_eq!(response.headers()[NEXT_AFTER_HEADER], "k001");
        let text = body(response).await;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["grain_key"], "k001");
        assert_eq!(lines[1]["state"], 1);
        let last = page(
            &store,
            &Arc::default(),
            "T",
            Some("k001"),
            Some(2),
            Fields::State,
        );
        assert!(last.headers().get(NEXT_AFTER_HEADER).is_none());
        assert_eq!(body(last).await.lines().count(), 1);
    }
}
