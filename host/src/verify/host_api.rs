//! The host's side of verify: the few read-only requests it makes to a
//! running `replica-host` (`/v1/shards`, `/v1/plugins`, the bulk
//! `fields=sequence` pages, and single reads to check a grain again).

use std::collections::BTreeMap;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::VerifyError;
use super::compare::Position;
use crate::secret::Secret;

/// Everything but RFC 3986's unreserved characters is percent-encoded in a
/// path segment (a key's `/` included).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How long one request may take (a bulk page of 10,000 included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of one host's API.
pub struct HostApi {
    /// The HTTP client (keeps connections open between pages).
    client: reqwest::Client,
    /// The host's base URL, without a trailing `/`.
    base: String,
    /// The bearer token, when the host needs one.
    token: Option<Secret>,
}

/// `GET /v1/shards`, the parts verify needs.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Shards {
    /// How many shards there are (1 when unsharded).
    pub count: u32,
    /// The host's shard.
    pub shard: u32,
}

#[derive(Deserialize)]
struct Plugins {
    plugins: Vec<PluginInForce>,
}

#[derive(Deserialize)]
struct PluginInForce {
    grain_type: String,
    sha256: String,
}

/// One `fields=sequence` page.
#[derive(Deserialize)]
pub struct PositionsPage {
    /// The page's replicas, in key order.
    pub replicas: Vec<Position>,
    /// The next page's `after`; `None` on the last.
    pub next_after: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

/// A single read's answer, the parts a re-check needs.
#[derive(Debug, Deserialize)]
pub struct ReplicaRead {
    /// The applied sequence.
    pub sequence: u64,
    /// `ok`, `behind` or `failing`.
    pub status: String,
}

impl HostApi {
    /// A client of the host at `base` (`http://…` or `https://…`).
    pub fn new(base: &str, token: Option<Secret>) -> Result<Self, VerifyError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(VerifyError::host(&base, "not an http:// or https:// URL"));
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| VerifyError::host(&base, format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base,
            token,
        })
    }

    /// The host's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /v1/shards`.
    pub async fn shards(&self) -> Result<Shards, VerifyError> {
        self.get_json("/v1/shards", &[]).await
    }

    /// `GET /v1/plugins`: grain type → sha256 of the plugin in force.
    pub async fn plugins(&self) -> Result<BTreeMap<String, String>, VerifyError> {
        let plugins: Plugins = self.get_json("/v1/plugins", &[]).await?;
        Ok(plugins
            .plugins
            .into_iter()
            .map(|p| (p.grain_type, p.sha256))
            .collect())
    }

    /// One `fields=sequence` page of `grain_type` after `after`.
    pub async fn positions(
        &self,
        grain_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<PositionsPage, VerifyError> {
        let path = format!("/v1/replicas/{}", segment(grain_type));
        let limit = limit.to_string();
        let mut query = vec![("fields", "sequence"), ("limit", limit.as_str())];
        if let Some(after) = after {
            query.push(("after", after));
        }
        self.get_json(&path, &query).await
    }

    /// A single read of one grain: `None` when the host serves no replica
    /// of it (404, or 503 while it is not replicated yet).
    pub async fn replica(
        &self,
        grain_type: &str,
        grain_key: &str,
    ) -> Result<Option<ReplicaRead>, VerifyError> {
        let path = format!(
            "/v1/replicas/{}/{}",
            segment(grain_type),
            segment(grain_key)
        );
        let response = self.send(&path, &[]).await?;
        match response.status().as_u16() {
            404 | 503 => Ok(None),
            _ => self.json(&path, response).await.map(Some),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, VerifyError> {
        let response = self.send(path, query).await?;
        self.json(path, response).await
    }

    async fn send(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::Response, VerifyError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.get(&url).query(query);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        request
            .send()
            .await
            .map_err(|e| VerifyError::host(&url, without_url(e)))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        response: reqwest::Response,
    ) -> Result<T, VerifyError> {
        let url = format!("{}{path}", self.base);
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| VerifyError::host(&url, without_url(e)))?;
        if !status.is_success() {
            let why = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) => format!("{} {}", e.error, e.message),
                Err(_) => String::from_utf8_lossy(&body).chars().take(200).collect(),
            };
            return Err(VerifyError::host(
                &url,
                format!("HTTP {}: {}", status.as_u16(), crate::text::escape(&why)),
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| VerifyError::host(&url, format!("unexpected answer: {e}")))
    }
}

/// A path segment, percent-encoded.
fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// reqwest's error text without the URL it appends (the error line names
/// the URL once, up front).
fn without_url(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
