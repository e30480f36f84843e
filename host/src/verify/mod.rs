//! `replica-host verify`: proof that a host serves what the log holds.
//!
//! For every grain of the log (of the host's shard, `GET /v1/shards`),
//! the newest FullState sequence the log holds is compared with what the
//! host serves (`GET /v1/replicas/{type}?fields=sequence`, a page of
//! 10,000 at a time), and with the plugin in force (`GET /v1/plugins`).
//!
//! # Layout
//! - [`compare`] — the comparison, pure: log snapshot and host pages in,
//!   [`compare::Findings`] out;
//! - [`host_api`] — the requests made to the host;
//! - [`report`] — counts and example keys, as printed.
//!
//! # Consistency
//! The log is read once, read-only, in bulk, in one transaction
//! ([`ReplicationLog::heads_snapshot`]: one consistent snapshot), *before*
//! the host is read. A host ahead of the snapshot is therefore fine (it
//! applied something written since). A host behind it, a grain the host
//! does not serve, or one the snapshot does not know, may be the snapshot's
//! age or the host's replication lag: those few grains are checked again
//! after [`VerifyOptions::recheck_after`] (the host read again, or the log
//! asked for the grain's newest sequence) before they count.

pub mod compare;
pub mod host_api;
pub mod report;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use self::compare::{Disagreement, Finding, Findings, TypeCheck};
use self::host_api::HostApi;
use self::report::{Report, TypeReport};
use crate::consumer::shard::shard_of;
use crate::replication_log::{self, LogError, ReplicationLog, redact_password};
use crate::secret::Secret;

/// What to verify, and how.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The log's URL (`sqlite://…`, `postgres://…`); opened read-only.
    pub log_url: String,
    /// The host's base URL (`http://…`, `https://…`).
    pub host_url: String,
    /// Only this grain type (default: every type of the log or the host).
    pub grain_type: Option<String>,
    /// The bearer token for the host, when it needs one.
    pub token: Option<Secret>,
    /// How long to wait before checking again the grains that disagree.
    pub recheck_after: Duration,
    /// Replicas per host page (the host allows at most 10,000).
    pub page: usize,
}

impl VerifyOptions {
    /// The defaults for a log and a host.
    pub fn new(log_url: impl Into<String>, host_url: impl Into<String>) -> Self {
        Self {
            log_url: log_url.into(),
            host_url: host_url.into(),
            grain_type: None,
            token: None,
            recheck_after: Duration::from_secs(2),
            page: crate::daemon::http::bulk::MAX_BULK_PAGE,
        }
    }
}

/// Most grains of one kind checked again per grain type; the rest count
/// as found (a host that far behind is behind).
pub const MAX_RECHECKS: usize = 1_000;

/// Re-checks running at once.
const RECHECKS_IN_FLIGHT: usize = 16;

/// Why verify could not run (exit status 2). Each names the URL or file at
/// fault, in one line.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The host did not answer as expected.
    #[error("--host {url}: {message}")]
    Host {
        /// The request's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The log could not be read.
    #[error("--log {url}: {source}")]
    Log {
        /// The log's URL, password hidden.
        url: String,
        /// The backend's error.
        #[source]
        source: LogError,
    },
}

impl VerifyError {
    pub(crate) fn host(url: &str, message: impl Into<String>) -> Self {
        Self::Host {
            url: url.to_owned(),
            message: message.into(),
        }
    }
}

/// Runs the verification and reports what it found.
pub async fn run(options: &VerifyOptions) -> Result<Report, VerifyError> {
    let log_url = redact_password(&options.log_url);
    let log_error = |source| VerifyError::Log {
        url: log_url.clone(),
        source,
    };
    let host = HostApi::new(&options.host_url, options.token.clone())?;
    let shards = host.shards().await?;
    let plugins = host.plugins().await?;
    let log = replication_log::open(&options.log_url)
        .await
        .map_err(log_error)?;

    let started = Instant::now();
    let snapshot = log
        .heads_snapshot(options.grain_type.as_deref())
        .await
        .map_err(log_error)?
        .ok_or_else(|| {
            log_error(LogError::config(
                "this log backend cannot be read in one snapshot (use sqlite:// or postgres://)",
            ))
        })?;
    let log_read = started.elapsed();

    let mut types: BTreeSet<String> = snapshot
        .grain_types
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    types.extend(plugins.keys().cloned());
    if let Some(only) = &options.grain_type {
        types.retain(|t| t == only);
    }
    let mut log_heads: std::collections::HashMap<String, Vec<_>> =
        snapshot.grain_types.into_iter().collect();

    let started = Instant::now();
    let mut checked = Vec::new();
    for grain_type in types {
        let heads = log_heads.remove(&grain_type).unwrap_or_default();
        let mine = heads
            .into_iter()
            .filter(|h| shard_of(&grain_type, &h.grain_key, shards.count) == shards.shard)
            .map(|h| (h.grain_key, h.latest_sequence));
        let in_force = plugins.get(&grain_type).cloned();
        let mut check = TypeCheck::new(mine, in_force.clone());
        if in_force.is_some() {
            // The last key compared; a page may repeat keys up to it when
            // `after` had to be shortened.
            let mut last: Option<String> = None;
            loop {
                let after = last.as_deref().map(short_after);
                let mut page = host.positions(&grain_type, after, options.page).await?;
                if let Some(last) = &last {
                    page.replicas
                        .retain(|p| p.grain_key.as_str() > last.as_str());
                }
                check.host(page.replicas);
                match page.next_after {
                    Some(next) if last.as_ref().is_some_and(|l| next <= *l) => {
                        return Err(VerifyError::host(
                            host.base(),
                            format!(
                                "cannot page past a key of {grain_type} longer than {MAX_AFTER_BYTES} bytes: more than a page of keys shares its first {MAX_AFTER_BYTES} bytes"
                            ),
                        ));
                    }
                    Some(next) => last = Some(next),
                    None => break,
                }
            }
        }
        checked.push((grain_type, in_force.is_some(), check.finish()));
    }
    let host_read = started.elapsed();

    let candidates: usize = checked
        .iter()
        .flat_map(|(_, _, f)| f.candidates.values())
        .map(Vec::len)
        .sum();
    let mut rechecked = 0;
    if candidates > 0 {
        tokio::time::sleep(options.recheck_after).await;
        for (grain_type, _, findings) in &mut checked {
            rechecked += recheck(&host, &log, &log_url, grain_type, findings).await?;
        }
    }
    Ok(Report {
        log_url,
        host_url: host.base().to_owned(),
        shard: (shards.shard, shards.count),
        types: checked
            .into_iter()
            .map(|(grain_type, has_plugin, findings)| TypeReport {
                grain_type,
                has_plugin,
                findings,
            })
            .collect(),
        log_read,
        host_read,
        rechecked,
    })
}

/// Longest `after` sent, in bytes: percent-encoded (at most three times
/// longer) it stays under HTTP/2's 16 KiB header list and HTTP/1.1's
/// 64 KiB request target.
pub const MAX_AFTER_BYTES: usize = 4096;

/// `after` for the page that follows `key`: the key itself, or for a key
/// longer than [`MAX_AFTER_BYTES`] a prefix of it (which sorts before it,
/// so the page starts at or before the key and the caller drops what it
/// already compared).
fn short_after(key: &str) -> &str {
    if key.len() <= MAX_AFTER_BYTES {
        return key;
    }
    let mut end = MAX_AFTER_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// Checks the candidates of one grain type again: the host read again for
/// missing and behind grains, the log asked for grains it did not know.
/// Those that now agree are matches; the rest are confirmed. Returns how
/// many grains were checked again.
async fn recheck(
    host: &HostApi,
    log: &Arc<dyn ReplicationLog>,
    log_url: &str,
    grain_type: &str,
    findings: &mut Findings,
) -> Result<usize, VerifyError> {
    let mut rechecked = 0;
    for (kind, candidates) in std::mem::take(&mut findings.candidates) {
        let (now, later) = candidates.split_at(candidates.len().min(MAX_RECHECKS));
        rechecked += now.len();
        let outcomes: Vec<Result<Option<(Finding, Disagreement)>, VerifyError>> =
            futures::stream::iter(
                now.iter()
                    .cloned()
                    .map(|d| again(host, log, log_url, grain_type, kind, d)),
            )
            .buffered(RECHECKS_IN_FLIGHT)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome? {
                None => findings.matching += 1,
                Some((kind, d)) => findings.confirmed.entry(kind).or_default().push(d),
            }
        }
        findings
            .confirmed
            .entry(kind)
            .or_default()
            .extend(later.iter().cloned());
    }
    findings.confirmed.retain(|_, found| !found.is_empty());
    Ok(rechecked)
}

/// One candidate checked again: `None` when it now agrees.
async fn again(
    host: &HostApi,
    log: &Arc<dyn ReplicationLog>,
    log_url: &str,
    grain_type: &str,
    kind: Finding,
    mut d: Disagreement,
) -> Result<Option<(Finding, Disagreement)>, VerifyError> {
    if kind == Finding::UnknownToLog {
        let latest = log
            .latest_sequence(grain_type, &d.grain_key)
            .await
            .map_err(|source| VerifyError::Log {
                url: log_url.to_owned(),
                source,
            })?;
        return Ok((latest == 0).then_some((kind, d)));
    }
    match host.replica(grain_type, &d.grain_key).await? {
        None => Ok(Some((kind, d))),
        Some(read) if read.status == "failing" => {
            d.host_sequence = read.sequence;
            Ok(Some((Finding::Failing, d)))
        }
        Some(read) if read.sequence >= d.log_sequence => Ok(None),
        Some(read) => {
            d.host_sequence = read.sequence;
            Ok(Some((Finding::Behind, d)))
        }
    }
}
