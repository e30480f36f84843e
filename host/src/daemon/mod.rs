//! The `replica-host run` daemon: load and check every plugin, open the log,
//! replicate, serve HTTP, and stop cleanly on a signal.
//!
//! Startup order: config → plugins (all compiled and checked; the first
//! failure stops startup before anything else starts) → tokens and TLS
//! certificate → log → HTTP listener → consumers. SIGHUP re-reads the tokens
//! and the certificate ([`reload`]). Shutdown: consumers stop, change
//! streams end, in-flight plugin calls finish, the HTTP server closes, the
//! log is dropped.
//!
//! # Layout
//! - [`http`] — the routes and the read handlers;
//! - [`auth`] — bearer tokens and scopes, checked before every handler;
//! - [`tls`] — rustls, and a listener that handshakes off the accept loop;
//! - [`watch`] — change streams (Server-Sent Events);
//! - [`problems`] and [`operator_page`] — the operator's HTML page;
//! - [`openapi`] — the API's OpenAPI document;
//! - [`metrics`] — Prometheus;
//! - [`reload`] — what SIGHUP re-reads.

pub mod auth;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod operator_page;
pub mod problems;
pub mod reload;
pub mod tls;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use self::auth::{Auth, TokenSources};
use self::problems::Problems;
use self::reload::Reloader;
use self::tls::{TlsFiles, TlsListener};
use crate::config::Config;
use crate::consumer::{ConsumerConfig, ConsumerMetrics, Replicator, SnapshotDecoder};
use crate::log_limiter;
use crate::plugin::breaker::Breaker;
use crate::plugin::{PluginDecoder, PluginEngine};
use crate::plugin_set::PluginSet;
use crate::replication_log;
use crate::store::ReplicaStore;

/// Why the daemon did not start; each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The config or a plugin is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The log or the listen address cannot be used.
    #[error("{0}")]
    Unavailable(String),
}

/// Completes once `stop` is `true` or its sender is gone. Holds no borrow of
/// the value, so it can sit in a `select!` across awaits.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Longest wait for in-flight plugin calls at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the daemon until `shutdown` completes; `on_ready` is called with the
/// bound HTTP address once everything runs.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), StartupError> {
    // Poll the shutdown future once before anything else: a future that
    // installs signal handlers when first polled (as `replica-host run`'s
    // does) has them in place before readiness is announced, so a SIGTERM
    // right after "replica-host running" stops the daemon cleanly instead of
    // killing it.
    let mut shutdown = Box::pin(shutdown);
    let stop_early = futures::poll!(shutdown.as_mut()).is_ready();
    let engine = PluginEngine::new()
        .map_err(|e| StartupError::Unavailable(format!("cannot start the Wasm engine: {e:#}")))?;
    let plugins = PluginSet::load(&config, &engine).map_err(StartupError::Invalid)?;
    let mut reloader = Reloader::default();
    let auth = match &config.http.auth {
        Some(section) => {
            let auth = Arc::new(
                Auth::load(TokenSources {
                    config: config.source.clone(),
                    files: config.token_files(),
                    env: section.token_env.clone(),
                })
                .map_err(StartupError::Invalid)?,
            );
            reloader.register(Arc::clone(&auth) as _);
            Some(auth)
        }
        None => None,
    };
    let tls = match config.tls_files() {
        Some((cert, key)) => {
            let files =
                Arc::new(TlsFiles::load(&config.source, cert, key).map_err(StartupError::Invalid)?);
            reloader.register(Arc::clone(&files) as _);
            Some(files)
        }
        None => None,
    };

    let url = config.log_url();
    let log = replication_log::open(&url).await.map_err(|e| {
        StartupError::Unavailable(format!("{}: log.url: {e}", config.source.display()))
    })?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| {
            StartupError::Unavailable(format!(
                "{}: http.listen {}: {e}",
                config.source.display(),
                config.http.listen
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartupError::Unavailable(e.to_string()))?;

    let store = Arc::new(ReplicaStore::with_change_capacity(config.http.watch_buffer));
    let consumer_metrics = Arc::new(ConsumerMetrics::default());
    let limiter = PluginDecoder::default_limiter();
    let breakers: BTreeMap<String, Arc<Breaker>> = config
        .plugins
        .iter()
        .filter_map(|entry| {
            let breaker = config.plugin_breaker(entry)?;
            Some((entry.grain_type.clone(), Arc::new(Breaker::new(breaker))))
        })
        .collect();
    let decoders: HashMap<String, Arc<dyn SnapshotDecoder>> = plugins
        .iter()
        .map(|(grain_type, plugin)| {
            let mut decoder = PluginDecoder::new(Arc::clone(plugin), Arc::clone(&limiter));
            if let Some(breaker) = breakers.get(grain_type) {
                decoder = decoder.with_breaker(Arc::clone(breaker));
            }
            let decoder: Arc<dyn SnapshotDecoder> = Arc::new(decoder);
            (grain_type.clone(), decoder)
        })
        .collect();
    log_limiter::global().set_interval(Duration::from_millis(
        config.consumer.log_summary_interval_ms.max(1),
    ));
    let consumer_config = ConsumerConfig {
        poll_interval: Duration::from_millis(config.consumer.poll_interval_ms),
        batch_limit: config.consumer.batch_limit,
        max_backoff: Duration::from_millis(config.consumer.max_backoff_ms),
        ..ConsumerConfig::default()
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let lag = tokio::spawn(metrics::record_lag(Arc::clone(&store), stop_rx.clone()));
    let problems = Arc::new(Problems::default());
    let problems_task =
        tokio::spawn(Arc::clone(&problems).follow(Arc::clone(&store), stop_rx.clone()));
    let sighup = reloader.spawn_on_sighup(stop_rx.clone()).map_err(|e| {
        StartupError::Unavailable(format!("cannot install the SIGHUP handler: {e}"))
    })?;
    let replicator = Replicator::new(
        Arc::clone(&log),
        Arc::clone(&store),
        decoders,
        consumer_config,
    )
    .with_metrics(Arc::clone(&consumer_metrics))
    .with_workers(config.consumer.workers)
    .with_shard(config.consumer.shard);
    let catch_up = replicator.catch_up();
    let replicator = replicator.spawn(stop_rx.clone());

    let api = http::ApiState {
        store: Arc::clone(&store),
        plugins: plugins.clone(),
        breakers: Arc::new(breakers),
        log: Arc::clone(&log),
        metrics: metrics::MetricsExporter::new(consumer_metrics),
        catch_up,
        shard: config.consumer.shard,
        problems,
        cluster_id: config.cluster_id.as_str().into(),
        stop: stop_rx.clone(),
    };
    let mut router = http::router(api);
    if let Some(auth) = auth {
        router = router.layer(axum::middleware::from_fn_with_state(auth, auth::enforce));
    }
    let mut http_stop = stop_rx.clone();
    let stopped = async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    };
    let server = match &tls {
        Some(files) => {
            let listener = TlsListener::spawn(listener, Arc::clone(files), stop_rx.clone())
                .map_err(|e| StartupError::Unavailable(e.to_string()))?;
            tokio::spawn(
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .into_future(),
            )
        }
        None => tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .into_future(),
        ),
    };

    tracing::info!(
        cluster_id = %config.cluster_id,
        log = %replication_log::redact_password(&url),
        http = %addr,
        tls = tls.is_some(),
        auth = config.http.auth.is_some(),
        plugins = plugins.len(),
        "replica-host running"
    );
    on_ready(addr);

    if !stop_early {
        shutdown.await;
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = replicator.await;
    // Let plugin calls already running on the blocking pool finish.
    let permits = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2) as u32;
    if tokio::time::timeout(DRAIN_TIMEOUT, limiter.acquire_many(permits))
        .await
        .is_err()
    {
        tracing::warn!("plugin calls still running after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
    }
    let _ = lag.await;
    let _ = problems_task.await;
    let _ = sighup.await;
    log_limiter::flush_all();
    drop(log);
    tracing::info!("stopped");
    Ok(())
}
