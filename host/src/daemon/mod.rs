//! The `replica-host run` daemon: load and check every plugin, open the log,
//! replicate, serve HTTP, and stop cleanly on a signal.
//!
//! Startup order: config → plugins (all compiled and checked; the first
//! failure stops startup before anything else starts) → tokens and TLS
//! certificate → log → HTTP listener → consumers. SIGHUP re-reads the tokens,
//! the certificate (`reload`) and the config's `[[plugin]]` entries
//! (`plugins`). Shutdown is a drain: on the signal `/readyz` answers 503
//! while reads are still served for `[http] drain_ms`; then consumers stop,
//! change streams end, the HTTP server closes, in-flight plugin calls
//! finish, the log is dropped.
//!
//! # Layout
//! - `config` — the TOML config and its environment overrides;
//! - `plugins` — loading and checking every `[[plugin]]` entry, the
//!   plugins in force, and swapping them (SIGHUP and
//!   `POST /v1/admin/reload`); `shadow` — a candidate decoding beside one;
//! - `http` — the HTTP API: routes, handlers, bodies, tokens, change
//!   streams, the OpenAPI document and the operator page (`problems`
//!   feeds it); `consistency` — position and freshness of an answer;
//! - `server` — accepting connections, TLS, HTTP/1.1 and HTTP/2;
//!   `connections` — the connection limit, shedding, header and idle
//!   timeouts; `tls` and `cert_expiry` — rustls, and the certificate's
//!   expiry;
//! - `metrics` — Prometheus;
//! - `reload` — what SIGHUP re-reads;
//! - `checkpoint` — the durable checkpoint's load and writer, wired in.

pub(crate) mod cert_expiry;
mod checkpoint;
pub(crate) mod config;
pub(crate) mod connections;
pub(crate) mod consistency;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod plugins;
pub(crate) mod problems;
pub(crate) mod reload;
mod running;
pub(crate) mod server;
pub(crate) mod shadow;
pub(crate) mod tls;

pub use self::config::Config;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use self::config::HttpSection;
use self::connections::{ConnectionLimits, Connections, default_max_connections};
use self::http::auth::{Auth, TokenSources};
use self::plugins::{LivePlugins, PluginReloader};
use self::problems::Problems;
use self::reload::Reloader;
use self::running::Running;
use self::tls::TlsFiles;
use crate::consumer::{ConsumerMetrics, Replicator};
use crate::daemon::plugins::set::{PluginSet, PluginSetError};
use crate::plugin::crash_guard::CrashGuard;
use crate::plugin::{DecodeSlots, PluginEngine};
use crate::repeat_limiter;
use crate::replication_log::{self, LogError, ReplicationLog};
use crate::secret::Secret;
use crate::shutdown::Shutdown;
use crate::store::ReplicaStore;
use crate::text;

/// Why the daemon did not start; each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The Wasm engine could not be set up.
    #[error("cannot start the Wasm engine: {}", format!("{_0:#}").replace('\n', " "))]
    Engine(#[source] anyhow::Error),
    /// A `[[plugin]]` entry was refused.
    #[error("{0}")]
    Plugin(#[from] PluginSetError),
    /// The access tokens could not be read.
    #[error("{0}")]
    Tokens(String),
    /// The TLS certificate or key could not be used.
    #[error("{0}")]
    Tls(String),
    /// `[log]` names a file that cannot be used (the password file, a TLS
    /// file of the URL) or a URL of no known scheme.
    #[error("{0}")]
    LogSettings(String),
    /// The replication log could not be opened.
    #[error("{}: log.url: {source}", config.display())]
    Log {
        /// The config file.
        config: PathBuf,
        /// What the log backend said.
        #[source]
        source: LogError,
    },
    /// The HTTP address could not be bound.
    #[error("{}: http.listen {addr}: {source}", config.display())]
    Listen {
        /// The config file.
        config: PathBuf,
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The SIGHUP handler could not be installed.
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(#[source] std::io::Error),
    /// The listening socket failed before serving.
    #[error("{0}")]
    Socket(#[source] std::io::Error),
}

impl StartupError {
    /// Whether the config (or a file it names) is at fault, rather than
    /// something the host could not reach or use: what the exit status says.
    pub fn is_invalid_config(&self) -> bool {
        matches!(
            self,
            Self::Plugin(_) | Self::Tokens(_) | Self::Tls(_) | Self::LogSettings(_)
        )
    }
}

/// What startup loads and checks before it touches the log or the network.
pub(crate) struct Checked {
    /// Every `[[plugin]]`, compiled and checked.
    pub plugins: PluginSet,
    /// The access tokens, when `[http.auth]` or `[admin]` is set.
    pub auth: Option<Arc<Auth>>,
    /// The HTTP certificate and key, when TLS is on.
    pub tls: Option<Arc<TlsFiles>>,
    /// The log's password from `[log] password_file`.
    pub log_password: Option<Secret>,
}

/// Loads and checks everything startup does before it opens the log: every
/// plugin, the tokens, the TLS certificate and key, the log's password file,
/// and the log URL's scheme and TLS files. `replica-host config check` runs
/// this; `run` runs it first. Each failure is a [`StartupError`] that
/// [`StartupError::is_invalid_config`].
pub(crate) fn check(config: &Config, engine: &PluginEngine) -> Result<Checked, StartupError> {
    let plugins = PluginSet::load(config, engine)?;
    let auth = if config.http.auth.is_some() || config.admin.token_file.is_some() {
        Some(Arc::new(
            Auth::load(TokenSources {
                config: config.source.clone(),
                files: config.token_files(),
                env: config
                    .http
                    .auth
                    .as_ref()
                    .map(|a| a.token_env.clone())
                    .unwrap_or_default(),
                admin_file: config.admin_token_file(),
                admin_only: config.http.auth.is_none(),
            })
            .map_err(StartupError::Tokens)?,
        ))
    } else {
        None
    };
    let tls = match config.tls_files() {
        Some((cert, key)) => Some(Arc::new(
            TlsFiles::load(&config.source, cert, key).map_err(StartupError::Tls)?,
        )),
        None => None,
    };
    let log_password = config.log_password().map_err(StartupError::LogSettings)?;
    replication_log::check_url(&config.log_url()).map_err(|e| {
        StartupError::LogSettings(format!("{}: log.url: {e}", config.source.display()))
    })?;
    Ok(Checked {
        plugins,
        auth,
        tls,
        log_password,
    })
}

/// The connection bounds of `[http]`.
pub(crate) fn connection_limits(http: &HttpSection) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: http.max_connections.unwrap_or_else(default_max_connections),
        header_timeout: Duration::from_millis(http.header_timeout_ms),
        idle_timeout: Duration::from_millis(http.idle_timeout_ms),
    }
}

/// Runs the daemon until `shutdown` completes and the drain (`[http]
/// drain_ms`) is over; `on_ready` is called with the bound HTTP address once
/// everything runs.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), StartupError> {
    let store = Arc::new(ReplicaStore::with_change_capacity(config.http.watch_buffer));
    run_with_store(config, store, shutdown, on_ready).await
}

/// Like [`run`], replicating into and serving from `store`, which the
/// caller keeps: an embedder (or a test injecting a fault) reads and
/// changes the daemon's replicas through it.
pub async fn run_with_store(
    config: Config,
    store: Arc<ReplicaStore>,
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
    metrics::install();
    let engine = PluginEngine::new().map_err(StartupError::Engine)?;
    let Checked {
        plugins,
        auth,
        tls,
        log_password,
    } = check(&config, &engine)?;
    let mut reloader = Reloader::default();
    auth.iter()
        .for_each(|a| reloader.register(Arc::clone(a) as _));
    tls.iter()
        .for_each(|f| reloader.register(Arc::clone(f) as _));
    let url = config.log_url();
    let log = open_log(&config, &url, log_password).await?;
    let (listener, addr) = bind(&config)?;

    let consumer_metrics = Arc::new(ConsumerMetrics::default());
    let (crash_guard, slots, live) = plugins_in_force(&config, &plugins);
    let decoders = live.decoders(&slots);
    repeat_limiter::global().set_interval(Duration::from_millis(
        config.consumer.log_summary_interval_ms.max(1),
    ));
    let consumer_config = config.consumer.consumer_config();

    // Loaded before anything reads the store or the consumers start; the
    // log's heads are listed meanwhile, so a warm start waits for the
    // longer of the two, not for both.
    let (checkpoint, first_listings) = match config.checkpoint_path() {
        Some(path) => {
            tokio::join!(
                checkpoint::open(&config, &path, &plugins, &decoders, &store),
                crate::consumer::list_first(log.as_ref(), decoders.keys().cloned()),
            )
        }
        None => (None, std::collections::HashMap::new()),
    };

    let stopping = Shutdown::new();
    let draining = Shutdown::new();
    let lag = tokio::spawn(metrics::record_lag(Arc::clone(&store), stopping.signal()));
    let problems = Arc::new(Problems::default());
    let problems_task =
        tokio::spawn(Arc::clone(&problems).follow(Arc::clone(&store), stopping.signal()));
    let redecode_decoders = decoders.clone();
    let replicator = Replicator::new(
        Arc::clone(&log),
        Arc::clone(&store),
        decoders,
        consumer_config,
    )
    .with_metrics(Arc::clone(&consumer_metrics))
    .with_first_listings(first_listings);
    let catch_up = replicator.catch_up();
    let freshness = replicator.freshness();
    let plugin_reloader = Arc::new(PluginReloader::new(
        &config,
        engine.clone(),
        slots.clone(),
        Arc::clone(&live),
        replicator.control(),
        Arc::clone(&store),
    ));
    let sighup = reloader
        .with_plugins(Arc::clone(&plugin_reloader))
        .spawn_on_sighup(stopping.signal())
        .map_err(StartupError::Signal)?;
    let control = replicator.control();
    let replicator = replicator.spawn(stopping.signal());
    // The writer stops after the consumers, so its last flush has all.
    let writer_stop = Shutdown::new();
    let writer = checkpoint.map(|opened| {
        let catch_up = Arc::clone(&catch_up);
        opened.start(catch_up, control, redecode_decoders, writer_stop.signal())
    });

    let api = http::ApiState {
        store: Arc::clone(&store),
        plugins: live,
        reloader: config.admin_enabled().then(|| Arc::clone(&plugin_reloader)),
        log: Arc::clone(&log),
        metrics: metrics::MetricsExporter::new(consumer_metrics),
        catch_up,
        freshness,
        max_wait: Duration::from_millis(config.http.max_wait_ms),
        ready_during_log_outage: Duration::from_secs(config.http.ready_during_log_outage_s),
        shard: config.consumer.shard,
        peer_url: config.consumer.peer_url.as_deref().map(Arc::from),
        problems,
        cluster_id: config.cluster_id.as_str().into(),
        log_url: url.as_str().into(),
        stop: stopping.signal(),
        draining: draining.signal(),
    };
    let router = http::router(api, auth);
    let limits = connection_limits(&config.http);
    let server = tokio::spawn(server::serve(
        listener,
        tls.clone(),
        router,
        Connections::new(limits),
        stopping.signal(),
    ));

    tracing::info!(
        cluster_id = %config.cluster_id,
        log = %replication_log::redact_password(&url),
        http = %addr,
        tls = tls.is_some(),
        auth = config.http.auth.is_some(),
        plugins = plugins.len(),
        max_connections = limits.max_connections,
        "replica-host running"
    );
    on_ready(addr);

    let running = Running {
        draining,
        drain: Duration::from_millis(config.http.drain_ms),
        stopping,
        replicator,
        writer_stop,
        writer,
        server,
        slots,
        tasks: vec![lag, problems_task, sighup],
        log,
        crash_guard,
    };
    if !stop_early {
        shutdown.await;
    }
    running.stop().await;
    Ok(())
}

/// Binds `[http] listen`; the address it got (a port 0 resolved).
fn bind(config: &Config) -> Result<(tokio::net::TcpListener, SocketAddr), StartupError> {
    let listener = server::bind(config.http.listen).map_err(|source| StartupError::Listen {
        config: config.source.clone(),
        addr: config.http.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(StartupError::Socket)?;
    Ok((listener, addr))
}

/// The crash guard (when `[store] state_dir` allows one), the decode slots
/// that mark every call in it, and the plugins in force over them.
fn plugins_in_force(
    config: &Config,
    plugins: &PluginSet,
) -> (Option<Arc<CrashGuard>>, DecodeSlots, Arc<LivePlugins>) {
    let crash_guard = open_crash_guard(config, plugins);
    let slots = match &crash_guard {
        Some(guard) => DecodeSlots::per_core().with_crash_guard(Arc::clone(guard)),
        None => DecodeSlots::per_core(),
    };
    let live = Arc::new(LivePlugins::new(config, plugins).with_crash_guard(crash_guard.clone()));
    (crash_guard, slots, live)
}

/// Opens the log as a reader, with the password of `[log] password_file`.
async fn open_log(
    config: &Config,
    url: &str,
    password: Option<Secret>,
) -> Result<Arc<dyn ReplicationLog>, StartupError> {
    replication_log::open_with(url, &replication_log::OpenOptions { password })
        .await
        .map_err(|source| StartupError::Log {
            config: config.source.clone(),
            source,
        })
}

/// Opens the crash guard in the state directory and reports what the
/// previous run left: snapshots it died decoding, and those quarantined
/// now. A directory that cannot be used leaves the guard off, with a warning.
fn open_crash_guard(config: &Config, plugins: &PluginSet) -> Option<Arc<CrashGuard>> {
    let dir = config.state_dir();
    let shas = plugins.sha256s();
    let (guard, recovery) = match CrashGuard::open(&dir, &shas) {
        Ok(opened) => opened,
        Err(e) => {
            tracing::warn!(error = %e, "crash guard off: a snapshot that kills the host will not be quarantined");
            return None;
        }
    };
    for r in &recovery.in_flight {
        tracing::warn!(
            grain_type = %text::escape(&r.grain_type),
            grain_key = %text::escape(&r.grain_key),
            sequence = r.sequence,
            unclean_exits_in_a_row = r.crashes,
            "the previous run died while decoding this snapshot"
        );
    }
    for r in &recovery.newly_quarantined {
        tracing::error!(
            grain_type = %text::escape(&r.grain_type),
            grain_key = %text::escape(&r.grain_key),
            sequence = r.sequence,
            "snapshot quarantined: the host died twice in a row while decoding it; the grain keeps its last good state until a newer snapshot or another plugin build"
        );
    }
    Some(Arc::new(guard))
}
