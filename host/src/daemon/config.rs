//! The daemon's TOML configuration file, and the settings the environment
//! overrides (`REPLICA_<SECTION>__<KEY>`, see [`env`]).
//!
//! Unknown keys and wrong types are errors naming the key and the line (or
//! the environment variable). Plugin paths, relative `sqlite://` paths, the
//! PostgreSQL URL's `sslrootcert`, `sslcert` and `sslkey`, and every other
//! file named here are relative to the file.
//!
//! `Serialize` renders the effective configuration for `replica-host
//! config check`, with the log URL's password masked.
//!
//! Long (about 750 lines before its tests) on purpose: it is the schema, one
//! struct per TOML section and one documented field per key, read as the
//! operator's reference; split, a key's default and its doc would part.

pub mod env;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::consumer::{ConsumerConfig, DEFAULT_WORKERS, Shard};
use crate::plugin::PluginLimits;
use crate::plugin::breaker::BreakerConfig;
use crate::replication_log::{pg_connect, redact_password};
use crate::secret::Secret;
use crate::value::OutputLimits;

pub use env::Override;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This secondary cluster's id.
    pub cluster_id: String,
    /// Where the replication log is.
    pub log: LogSection,
    /// How consumers poll.
    #[serde(default)]
    pub consumer: ConsumerSection,
    /// The read-only HTTP API.
    #[serde(default)]
    pub http: HttpSection,
    /// Defaults for every plugin's limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The precompiled-plugin cache.
    #[serde(default)]
    pub cache: CacheSection,
    /// The host's own durable files.
    #[serde(default)]
    pub store: StoreSection,
    /// Access to the admin endpoints.
    #[serde(default)]
    pub admin: AdminSection,
    /// One entry per replicated grain type.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginEntry>,
    /// The directory of the config file; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The config file itself, for error messages.
    #[serde(skip)]
    pub source: PathBuf,
    /// The settings the environment overrode, applied again when the file
    /// is re-read (a plugin reload).
    #[serde(skip)]
    pub overrides: Vec<Override>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `sqlite://PATH`, `postgres://…` or `memory://`. PostgreSQL URLs take
    /// libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey`. Rendered
    /// with its password masked.
    #[serde(serialize_with = "masked_url")]
    pub url: String,
    /// A file holding the PostgreSQL password (one line), relative to the
    /// config file, for a URL without one. Without either, `PGPASSWORD`
    /// applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// Renders a log URL without its password.
fn masked_url<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_password(url))
}

/// `[consumer]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSection {
    /// Time between polls of the log, in ms.
    pub poll_interval_ms: u64,
    /// Most entries read per grain per poll.
    pub batch_limit: usize,
    /// Longest wait between retries of a failing grain or log, in ms.
    pub max_backoff_ms: u64,
    /// Repeated identical errors (same grain type and kind) are logged in
    /// full once per this many ms, with a count of those left out between.
    pub log_summary_interval_ms: u64,
    /// Most grain steps (reads and decodes) running at once.
    pub workers: usize,
    /// `"i/n"`: replicate only the grains of shard `i` of `n` (see
    /// [`Shard`]); every grain when absent.
    #[serde(
        deserialize_with = "shard_from_str",
        serialize_with = "shard_to_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub shard: Option<Shard>,
    /// Where each shard's host answers, `{shard}` standing for its index,
    /// e.g. `http://replica-{shard}.replica-host:8080`: a read of another
    /// shard's grain answers 421 with a `Location` built from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_url: Option<String>,
    /// Continuous anti-entropy: every this many seconds, each grain type
    /// re-checks a slice of its grains against the log (off when absent
    /// or 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_interval_s: Option<u64>,
    /// Grains each grain type re-checks per `verify_interval_s`: the bound
    /// on what anti-entropy costs the log (one indexed range read of this
    /// many grains per type and interval).
    pub verify_grains: usize,
}

impl ConsumerSection {
    /// The consumer's settings from `[consumer]`: the one place a setting
    /// of the section becomes a [`ConsumerConfig`] field (the rest keep
    /// [`ConsumerConfig::default`]).
    pub fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            batch_limit: self.batch_limit,
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            verify: self.verify_settings(),
            workers: self.workers,
            shard: self.shard,
            ..ConsumerConfig::default()
        }
    }

    /// The anti-entropy settings, `None` when off.
    pub fn verify_settings(&self) -> Option<crate::consumer::VerifySettings> {
        let interval = self.verify_interval_s.filter(|s| *s > 0)?;
        Some(crate::consumer::VerifySettings {
            interval: std::time::Duration::from_secs(interval),
            grains: self.verify_grains.max(1),
        })
    }
}

impl Default for ConsumerSection {
    fn default() -> Self {
        Self {
            poll_interval_ms: 100,
            batch_limit: 100,
            max_backoff_ms: 30_000,
            log_summary_interval_ms: 10_000,
            workers: DEFAULT_WORKERS,
            shard: None,
            peer_url: None,
            verify_interval_s: None,
            verify_grains: crate::consumer::VerifySettings::DEFAULT_GRAINS,
        }
    }
}

/// Reads `shard = "i/n"`.
fn shard_from_str<'de, D>(deserializer: D) -> Result<Option<Shard>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// Writes `shard` back as `"i/n"`.
fn shard_to_str<S: serde::Serializer>(
    shard: &Option<Shard>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match shard {
        Some(shard) => serializer.collect_str(shard),
        None => serializer.serialize_none(),
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Serve a non-loopback `listen` without `[http.auth]`: must be said
    /// explicitly, since anyone who reaches the port then reads every replica.
    pub allow_unauthenticated: bool,
    /// Bearer-token access control; off when absent (allowed on loopback only).
    pub auth: Option<AuthSection>,
    /// PEM certificate chain; with `tls_key`, the API is served over TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Changes (of any grain) a change-stream watcher may fall behind before
    /// it is sent a `resync` event and the current state: bounds what a slow
    /// client costs the host.
    pub watch_buffer: usize,
    /// Most connections open at once; at the limit the oldest connection
    /// that has not sent a complete request head is shed. Default: the
    /// soft limit on open files less a quarter (at least 128).
    pub max_connections: Option<usize>,
    /// Longest a client may take, from connecting, to finish its TLS
    /// handshake and send a complete request head (ms).
    pub header_timeout_ms: u64,
    /// Longest a connection may stay open with no request in flight (ms).
    pub idle_timeout_ms: u64,
    /// After the first SIGTERM or SIGINT: how long reads are still served,
    /// with `/readyz` answering 503, before the server closes (ms).
    pub drain_ms: u64,
    /// The longest a read with `min_sequence` waits for the sequence (ms),
    /// whatever its `wait_ms` asks.
    pub max_wait_ms: u64,
    /// How long a caught-up host stays ready while its listings of the log
    /// fail (s): it serves its replicas with a growing
    /// `Replica-Staleness-Ms`, then `/readyz` answers 503 `log_unreachable`.
    pub ready_during_log_outage_s: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allow_unauthenticated: false,
            auth: None,
            tls_cert: None,
            tls_key: None,
            watch_buffer: crate::store::DEFAULT_CHANGE_CAPACITY,
            max_connections: None,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            drain_ms: 5_000,
            max_wait_ms: 10_000,
            ready_during_log_outage_s: 60,
        }
    }
}

/// `[http.auth]`: where the token hashes and their scopes are. Tokens never
/// live in the config file itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Files of `sha256-hex scope…` lines, relative to the config file.
    pub token_files: Vec<PathBuf>,
    /// Environment variables holding the same lines.
    pub token_env: Vec<String>,
}

/// `[admin]`: access to the admin endpoints (`/v1/admin/…`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// A file holding the admin token itself (one line), relative to the
    /// config file. Calls carry it as `Authorization: Bearer TOKEN`. Without
    /// it (or an `admin` token of `[http.auth]`), the admin endpoints are off.
    pub token_file: Option<PathBuf>,
}

/// `[limits]`: defaults for every plugin, each overridable per plugin.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Time one decode call may take, in ms.
    pub timeout_ms: u64,
    /// Memory a plugin instance may grow to, in MiB.
    pub max_memory_mib: u64,
    /// Most values (scalars and containers) in one decoded state.
    pub max_output_nodes: usize,
    /// Most bytes of one encoded state (plus 64 KiB: the most copied out of the guest at once).
    pub max_output_bytes: usize,
    /// Most bytes of JSON one state may render as; by default four times
    /// the plugin's `max_output_bytes`. A state over it is `bad_output`.
    pub max_rendered_bytes: Option<u64>,
    /// Circuit breaker: after this many consecutive guest faults (traps,
    /// timeouts, out-of-memory, bad output) the plugin is paused; 0 is off.
    pub breaker_after_faults: u32,
    /// How long a paused plugin stays paused before one trial call, in ms.
    pub breaker_cooldown_ms: u64,
    /// Most snapshots one fresh instance decodes one after another before
    /// it is dropped (64); 1 is one instance per snapshot.
    pub batch_max: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = PluginLimits::default();
        Self {
            timeout_ms: d.timeout.as_millis() as u64,
            max_memory_mib: (d.max_memory_bytes >> 20) as u64,
            max_output_nodes: d.output.max_nodes,
            max_output_bytes: d.output.max_bytes,
            max_rendered_bytes: None,
            breaker_after_faults: 0,
            breaker_cooldown_ms: BreakerConfig::DEFAULT_COOLDOWN.as_millis() as u64,
            batch_max: d.batch_max,
        }
    }
}

/// `[cache]`: where compiled plugins are kept between runs. Off unless
/// `dir` is set; relative to the config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// The cache directory (created `0700`; must be owned by the host's user
    /// and not writable by others).
    pub dir: Option<PathBuf>,
}

/// `[store]`: the host's own durable files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// The state directory, relative to the config file (default `state`):
    /// the crash guard's files (which snapshot each decode runs, and the
    /// snapshots quarantined for killing the host). Created `0700` at
    /// startup; when it cannot be, the host runs without the guard and says so.
    pub state_dir: PathBuf,
    /// The durable checkpoint of the replicas, relative to the config file
    /// (e.g. `replicas.ckpt`); off when absent. Loaded at startup, written
    /// in the background and at SIGTERM.
    pub checkpoint: Option<PathBuf>,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("state"),
            checkpoint: None,
        }
    }
}

/// `[[plugin]]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The grain type this plugin must decode.
    pub grain_type: String,
    /// The component file, relative to the config file.
    pub path: PathBuf,
    /// Optional pin: the file's hex sha256.
    pub sha256: Option<String>,
    /// Optional override of `[limits] max_memory_mib`.
    pub max_memory_mib: Option<u64>,
    /// Optional override of `[limits] timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// Optional override of `[limits] max_output_nodes`.
    pub max_output_nodes: Option<usize>,
    /// Optional override of `[limits] max_output_bytes`.
    pub max_output_bytes: Option<usize>,
    /// Optional override of `[limits] max_rendered_bytes`.
    pub max_rendered_bytes: Option<u64>,
    /// Optional override of `[limits] breaker_after_faults`.
    pub breaker_after_faults: Option<u32>,
    /// Optional override of `[limits] breaker_cooldown_ms`.
    pub breaker_cooldown_ms: Option<u64>,
    /// Optional override of `[limits] batch_max`.
    pub batch_max: Option<usize>,
    /// Optional candidate plugin, relative to the config file, decoded
    /// beside this one on spare capacity and compared, never served
    /// (README.md, "Shadow decoding").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<PathBuf>,
    /// Optional pin of the candidate: its file's hex sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_sha256: Option<String>,
    /// The share of snapshots the candidate decodes, 0.0 to 1.0 (1.0 when
    /// unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_sample: Option<f64>,
}

impl PluginEntry {
    /// The entry without its shadow settings: what decides whether the
    /// plugin in force itself changed.
    pub fn without_shadow(&self) -> PluginEntry {
        PluginEntry {
            shadow: None,
            shadow_sha256: None,
            shadow_sample: None,
            ..self.clone()
        }
    }
}

impl Config {
    /// Reads and parses the file; errors are one line naming file, line and key.
    pub fn load(path: &Path) -> Result<Self, String> {
        Self::load_with(path, &[])
    }

    /// Reads the file and applies `overrides` (settings from the
    /// environment, `env::overrides`) over it; an override naming no
    /// setting, or with a value the setting cannot take, is one line naming
    /// the variable.
    pub fn load_with(path: &Path, overrides: &[Override]) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse_with(&text, path, overrides)
    }

    /// Parses config text that was read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, String> {
        Self::parse_with(text, path, &[])
    }

    /// Parses config text that was read from `path`, with `overrides` applied.
    pub fn parse_with(text: &str, path: &Path, overrides: &[Override]) -> Result<Self, String> {
        let spanned = |e: toml::de::Error| {
            let location = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!(":{line}")
                })
                .unwrap_or_default();
            format!(
                "{}{location}: {}",
                path.display(),
                e.message().trim().replace('\n', " ")
            )
        };
        let mut config: Config = if overrides.is_empty() {
            toml::from_str(text).map_err(spanned)?
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(spanned)?;
            env::apply_all(&mut table, overrides)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            table.try_into().map_err(|e: toml::de::Error| {
                // The file's own mistake keeps its line; anything else
                // came with the overrides.
                match toml::from_str::<Config>(text) {
                    Err(own) if own.message() == e.message() => spanned(own),
                    _ => format!(
                        "{} with the settings from the environment ({}): {}",
                        path.display(),
                        overrides
                            .iter()
                            .map(|o| o.variable.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        e.message().trim().replace('\n', " ")
                    ),
                }
            })?
        };
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.source = path.to_path_buf();
        config.overrides = overrides.to_vec();
        config.validate()?;
        Ok(config)
    }

    /// The effective configuration as TOML, the log URL's password masked.
    pub fn render(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    fn validate(&self) -> Result<(), String> {
        let at = |what: String| format!("{}: {what}", self.source.display());
        if self.cluster_id.trim().is_empty() {
            return Err(at("cluster_id must not be empty".into()));
        }
        if self.consumer.poll_interval_ms == 0 {
            return Err(at("consumer.poll_interval_ms must be at least 1".into()));
        }
        if self.consumer.batch_limit == 0 {
            return Err(at("consumer.batch_limit must be at least 1".into()));
        }
        if self.consumer.workers == 0 {
            return Err(at("consumer.workers must be at least 1".into()));
        }
        if self.http.watch_buffer == 0 {
            return Err(at("http.watch_buffer must be at least 1".into()));
        }
        if self.http.max_connections == Some(0) {
            return Err(at("http.max_connections must be at least 1".into()));
        }
        if self.http.header_timeout_ms == 0 || self.http.idle_timeout_ms == 0 {
            return Err(at(
                "http.header_timeout_ms and http.idle_timeout_ms must be at least 1".into(),
            ));
        }
        self.validate_http_access().map_err(at)?;
        self.validate_log().map_err(at)?;
        self.validate_peer_url().map_err(at)?;
        if self.limits.timeout_ms == 0 {
            return Err(at("limits.timeout_ms must be at least 1".into()));
        }
        if self.limits.batch_max == 0 {
            return Err(at("limits.batch_max must be at least 1".into()));
        }
        for (i, p) in self.plugins.iter().enumerate() {
            if let Some(first) = self.plugins[..i]
                .iter()
                .position(|q| q.grain_type == p.grain_type)
            {
                return Err(at(format!(
                    "plugin[{i}]: grain type {:?} is configured twice (also plugin[{first}])",
                    p.grain_type
                )));
            }
            if p.batch_max == Some(0) {
                return Err(at(format!(
                    "plugin[{i}] ({}): batch_max must be at least 1",
                    p.grain_type
                )));
            }
            if p.timeout_ms == Some(0) {
                return Err(at(format!(
                    "plugin[{i}] ({}): timeout_ms must be at least 1",
                    p.grain_type
                )));
            }
            for (key, pin) in [("sha256", &p.sha256), ("shadow_sha256", &p.shadow_sha256)] {
                if let Some(pin) = pin
                    && (pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()))
                {
                    return Err(at(format!(
                        "plugin[{i}] ({}): {key} must be 64 hex digits",
                        p.grain_type
                    )));
                }
            }
            if p.shadow.is_none() && (p.shadow_sha256.is_some() || p.shadow_sample.is_some()) {
                return Err(at(format!(
                    "plugin[{i}] ({}): shadow_sha256 and shadow_sample need shadow, the candidate plugin's file",
                    p.grain_type
                )));
            }
            if let Some(sample) = p.shadow_sample
                && !(0.0..=1.0).contains(&sample)
            {
                return Err(at(format!(
                    "plugin[{i}] ({}): shadow_sample must be between 0.0 and 1.0, not {sample}",
                    p.grain_type
                )));
            }
        }
        Ok(())
    }

    /// `[log]`: one place for the password.
    fn validate_log(&self) -> Result<(), String> {
        if self.log.password_file.is_some() && redact_password(&self.log.url) != self.log.url {
            return Err(
                "log.password_file is set, but log.url holds a password too: keep one".into(),
            );
        }
        Ok(())
    }

    /// `[consumer] peer_url`: an http(s) URL with `{shard}`, for a sharded host.
    fn validate_peer_url(&self) -> Result<(), String> {
        let Some(template) = &self.consumer.peer_url else {
            return Ok(());
        };
        if self.consumer.shard.is_none() {
            return Err("consumer.peer_url is set, but consumer.shard is not".into());
        }
        if !template.contains("{shard}") {
            return Err(format!(
                "consumer.peer_url {template:?} must contain {{shard}}, e.g. \"http://replica-{{shard}}.replica-host:8080\""
            ));
        }
        let example = template.replace("{shard}", "0");
        match ::url::Url::parse(&example) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.query().is_none() => Ok(()),
            _ => Err(format!(
                "consumer.peer_url {template:?} is not an http:// or https:// URL without a query"
            )),
        }
    }

    /// The access rules of `[http]` and `[admin]`.
    fn validate_http_access(&self) -> Result<(), String> {
        match (&self.http.tls_cert, &self.http.tls_key) {
            (Some(_), None) => return Err("http.tls_cert is set but http.tls_key is not".into()),
            (None, Some(_)) => return Err("http.tls_key is set but http.tls_cert is not".into()),
            _ => {}
        }
        if let Some(auth) = &self.http.auth {
            if auth.token_files.is_empty() && auth.token_env.is_empty() {
                return Err("http.auth: name at least one of token_files or token_env".into());
            }
            if let Some(name) = auth
                .token_env
                .iter()
                .find(|n| n.is_empty() || n.contains('='))
            {
                return Err(format!(
                    "http.auth.token_env: {name:?} is not an environment variable name"
                ));
            }
        } else if !self.http.listen.ip().is_loopback() && !self.http.allow_unauthenticated {
            return Err(format!(
                "http.listen {} is not a loopback address: set [http.auth] token_files or \
                 token_env, or http.allow_unauthenticated = true to serve every replica to \
                 anyone who reaches the port",
                self.http.listen
            ));
        }
        Ok(())
    }

    /// The token files of `[http.auth]`, resolved against the config file.
    pub fn token_files(&self) -> Vec<PathBuf> {
        self.http
            .auth
            .iter()
            .flat_map(|a| &a.token_files)
            .map(|f| self.base_dir.join(f))
            .collect()
    }

    /// `[admin] token_file`, resolved against the config file.
    pub fn admin_token_file(&self) -> Option<PathBuf> {
        self.admin
            .token_file
            .as_ref()
            .map(|f| self.base_dir.join(f))
    }

    /// Whether the admin endpoints are on: some token can carry the `admin`
    /// scope (`[admin] token_file`, or `[http.auth]`'s tokens).
    pub fn admin_enabled(&self) -> bool {
        self.admin.token_file.is_some() || self.http.auth.is_some()
    }

    /// The TLS certificate and key files, resolved against the config file;
    /// `None` when TLS is off.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        let (cert, key) = (self.http.tls_cert.as_ref()?, self.http.tls_key.as_ref()?);
        Some((self.base_dir.join(cert), self.base_dir.join(key)))
    }

    /// The PostgreSQL password of `[log] password_file` (its first line),
    /// `None` when unset. Errors name the file, never its content.
    pub fn log_password(&self) -> Result<Option<Secret>, String> {
        let Some(file) = &self.log.password_file else {
            return Ok(None);
        };
        let file = self.base_dir.join(file);
        let at = |what: String| {
            format!(
                "{}: log.password_file: {}: {what}",
                self.source.display(),
                file.display()
            )
        };
        let text = std::fs::read_to_string(&file).map_err(|e| at(e.to_string()))?;
        let password = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if password.is_empty() {
            return Err(at("the first line is empty".into()));
        }
        Ok(Some(Secret::new(password)))
    }

    /// The log URL, with a relative `sqlite://` path, and the relative
    /// `sslrootcert`, `sslcert` and `sslkey` of a PostgreSQL URL, resolved
    /// against the config file.
    pub fn log_url(&self) -> String {
        let url = &self.log.url;
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return pg_connect::resolve_files(url, &self.base_dir);
        }
        for prefix in ["sqlite://", "sqlite:"] {
            if let Some(rest) = url.strip_prefix(prefix) {
                let (path, query) = rest
                    .split_once('?')
                    .map_or((rest, None), |(p, q)| (p, Some(q)));
                if !path.is_empty() && Path::new(path).is_relative() && path != ":memory:" {
                    let resolved = self.base_dir.join(path);
                    return match query {
                        Some(q) => format!("sqlite://{}?{q}", resolved.display()),
                        None => format!("sqlite://{}", resolved.display()),
                    };
                }
            }
        }
        url.clone()
    }

    /// The precompiled-plugin cache directory, resolved against the config
    /// file; `None` when the cache is off.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        self.cache.dir.as_ref().map(|dir| self.base_dir.join(dir))
    }

    /// The state directory, resolved against the config file.
    pub fn state_dir(&self) -> PathBuf {
        self.base_dir.join(&self.store.state_dir)
    }

    /// The checkpoint file, resolved against the config file; `None` when off.
    pub fn checkpoint_path(&self) -> Option<PathBuf> {
        self.store
            .checkpoint
            .as_ref()
            .map(|f| self.base_dir.join(f))
    }

    /// A plugin entry's file, resolved against the config file.
    pub fn plugin_path(&self, entry: &PluginEntry) -> PathBuf {
        self.base_dir.join(&entry.path)
    }

    /// A plugin entry's shadow candidate file, relative paths resolved
    /// against the config file's directory; `None` without `shadow`.
    pub fn shadow_path(&self, entry: &PluginEntry) -> Option<PathBuf> {
        entry.shadow.as_ref().map(|path| self.base_dir.join(path))
    }

    /// A plugin entry's limits: its overrides over `[limits]`.
    pub fn plugin_limits(&self, entry: &PluginEntry) -> PluginLimits {
        let mut limits = PluginLimits::default();
        limits.timeout = Duration::from_millis(entry.timeout_ms.unwrap_or(self.limits.timeout_ms));
        limits.max_memory_bytes = (entry.max_memory_mib.unwrap_or(self.limits.max_memory_mib)
            as usize)
            .saturating_mul(1 << 20);
        limits.output.max_nodes = entry
            .max_output_nodes
            .unwrap_or(self.limits.max_output_nodes);
        limits.output.max_bytes = entry
            .max_output_bytes
            .unwrap_or(self.limits.max_output_bytes);
        limits.output.max_rendered_bytes = entry
            .max_rendered_bytes
            .or(self.limits.max_rendered_bytes)
            .unwrap_or_else(|| OutputLimits::default_rendered(limits.output.max_bytes));
        limits.batch_max = entry.batch_max.unwrap_or(self.limits.batch_max);
        limits
    }

    /// A plugin entry's circuit breaker, `None` when off (the default).
    pub fn plugin_breaker(&self, entry: &PluginEntry) -> Option<BreakerConfig> {
        let after_faults = entry
            .breaker_after_faults
            .unwrap_or(self.limits.breaker_after_faults);
        let cooldown = entry
            .breaker_cooldown_ms
            .unwrap_or(self.limits.breaker_cooldown_ms);
        (after_faults > 0).then(|| BreakerConfig {
            after_faults,
            cooldown: Duration::from_millis(cooldown.max(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cluster_id = "eu-west"

[log]
url = "sqlite://replication.db"

[consumer]
poll_interval_ms = 50

[[plugin]]
grain_type = "Counter"
path = "plugins/counter.wasm"
timeout_ms = 20
"#;

    #[test]
    fn parses_and_resolves_paths() {
        let c = Config::parse(GOOD, Path::new("/etc/replica/host.toml")).unwrap();
        assert_eq!(c.cluster_id, "eu-west");
        assert_eq!(c.consumer.poll_interval_ms, 50);
        assert_eq!(c.consumer.batch_limit, 100);
        assert_eq!(c.log_url(), "sqlite:///etc/replica/replication.db");
        assert_eq!(
            c.plugin_path(&c.plugins[0]),
            Path::new("/etc/replica/plugins/counter.wasm")
        );
        let limits = c.plugin_limits(&c.plugins[0]);
        assert_eq!(limits.timeout, Duration::from_millis(20));
        assert_eq!(limits.max_memory_bytes, 64 << 20);
        assert_eq!(limits.output.max_bytes, 32 << 20);
        assert_eq!(c.plugin_breaker(&c.plugins[0]), None, "off by default");
        assert_eq!(c.consumer.log_summary_interval_ms, 10_000);
    }

    #[test]
    fn workers_and_shard_have_defaults_and_bad_values_name_the_line() {
        let c = Config::parse(GOOD, Path::new("h.toml")).unwrap();
        assert_eq!(c.consumer.workers, DEFAULT_WORKERS);
        assert_eq!(c.consumer.shard, None);
        let text = GOOD.replace("[consumer]\n", "[consumer]\nworkers = 4\nshard = \"1/3\"\n");
        let c = Config::parse(&text, Path::new("h.toml")).unwrap();
        assert_eq!(c.consumer.workers, 4);
        assert_eq!(c.consumer.shard, Some(Shard { index: 1, count: 3 }));

        let text = GOOD.replace("[consumer]\n", "[consumer]\nshard = \"3/3\"\n");
        let err = Config::parse(&text, Path::new("h.toml")).unwrap_err();
        assert!(err.starts_with("h.toml:8:"), "{err}");
        assert!(err.contains("shard `3/3`"), "{err}");
        let text = GOOD.replace("[consumer]\n", "[consumer]\nworkers = 0\n");
        let err = Config::parse(&text, Path::new("h.toml")).unwrap_err();
        assert_eq!(err, "h.toml: consumer.workers must be at least 1");
    }

    #[test]
    fn the_plugin_cache_is_off_unless_a_dir_is_set() {
        let c = Config::parse(GOOD, Path::new("/etc/replica/host.toml")).unwrap();
        assert_eq!(c.cache_dir(), None);
        let text = GOOD.replace("[consumer]", "[cache]\ndir = \"cache\"\n\n[consumer]");
        let c = Config::parse(&text, Path::new("/etc/replica/host.toml")).unwrap();
        assert_eq!(c.cache_dir(), Some(PathBuf::from("/etc/replica/cache")));
    }

    #[test]
    fn batch_max_has_a_default_a_global_value_and_a_per_plugin_override() {
        let c = Config::parse(GOOD, Path::new("h.toml")).unwrap();
        assert_eq!(c.plugin_limits(&c.plugins[0]).batch_max, 64);
        let text = GOOD.replace("[consumer]", "[limits]\nbatch_max = 8\n\n[consumer]");
        let c = Config::parse(&text, Path::new("h.toml")).unwrap();
        assert_eq!(c.plugin_limits(&c.plugins[0]).batch_max, 8);
        let c = Config::parse(&format!("{text}batch_max = 1\n"), Path::new("h.toml")).unwrap();
        assert_eq!(c.plugin_limits(&c.plugins[0]).batch_max, 1);
        let err =
            Config::parse(&format!("{text}batch_max = 0\n"), Path::new("h.toml")).unwrap_err();
        assert_eq!(
            err,
            "h.toml: plugin[0] (Counter): batch_max must be at least 1"
        );
        let err = Config::parse(
            &text.replace("batch_max = 8", "batch_max = 0"),
            Path::new("h.toml"),
        )
        .unwrap_err();
        assert_eq!(err, "h.toml: limits.batch_max must be at least 1");
    }

    #[test]
    fn output_bytes_and_breaker_have_defaults_and_overrides() {
        let text = GOOD.replace(
            "[consumer]",
            "[limits]\nmax_output_bytes = 4096\nbreaker_after_faults = 5\n\n[consumer]",
        );
        let c = Config::parse(&text, Path::new("h.toml")).unwrap();
        assert_eq!(c.plugin_limits(&c.plugins[0]).output.max_bytes, 4096);
        assert_eq!(
            c.plugin_breaker(&c.plugins[0]),
            Some(BreakerConfig {
                after_faults: 5,
                cooldown: BreakerConfig::DEFAULT_COOLDOWN
            })
        );
        let text = format!(
            "{text}max_output_bytes = 10\nbreaker_after_faults = 2\nbreaker_cooldown_ms = 700\n"
        );
        let c = Config::parse(&text, Path::new("h.toml")).unwrap();
        assert_eq!(c.plugin_limits(&c.plugins[0]).output.max_bytes, 10);
        assert_eq!(
            c.plugin_breaker(&c.plugins[0]),
            Some(BreakerConfig {
                after_faults: 2,
                cooldown: Duration::from_millis(700)
            })
        );
        let off =
            format!("{text}breaker_after_faults = 0\n").replace("breaker_after_faults = 2\n", "");
        let c = Config::parse(&off, Path::new("h.toml")).unwrap();
        assert_eq!(c.plugin_breaker(&c.plugins[0]), None);
        let err = Config::parse(
            &GOOD.replace("timeout_ms = 20", "timeout_ms = 0"),
            Path::new("h.toml"),
        )
        .unwrap_err();
        assert!(
            err.contains("plugin[0] (Counter): timeout_ms must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_key_and_line() {
        let text = GOOD.replace(
            "poll_interval_ms = 50",
            "poll_interval_ms = 50\npoll_intervall = 3",
        );
        let err = Config::parse(&text, Path::new("host.toml")).unwrap_err();
        assert!(err.starts_with("host.toml:9: "), "{err}");
        assert!(err.contains("poll_intervall"), "{err}");

        let text = GOOD.replace("poll_interval_ms = 50", "poll_interval_ms = \"fast\"");
        let err = Config::parse(&text, Path::new("host.toml")).unwrap_err();
        assert!(err.starts_with("host.toml:8: "), "{err}");
        assert!(!err.contains('\n'));

        let err = Config::parse("[log]\nurl = \"x\"\n", Path::new("host.toml")).unwrap_err();
        assert!(err.contains("cluster_id"), "{err}");
    }

    #[test]
    fn http_access_rules_are_one_line_each() {
        let c = Config::parse(GOOD, Path::new("h.toml")).unwrap();
        assert!(c.http.auth.is_none() && c.tls_files().is_none());
        let open = GOOD.replace(
            "[consumer]",
            "[http]\nlisten = \"0.0.0.0:8080\"\n\n[consumer]",
        );
        let err = Config::parse(&open, Path::new("h.toml")).unwrap_err();
        assert!(
            err.starts_with("h.toml: http.listen 0.0.0.0:8080 is not a loopback address"),
            "{err}"
        );
        let allowed = open.replace("8080\"", "8080\"\nallow_unauthenticated = true");
        assert!(Config::parse(&allowed, Path::new("h.toml")).is_ok());
        let with_auth = open.replace(
            "listen = \"0.0.0.0:8080\"",
            "listen = \"0.0.0.0:8080\"\nauth = { token_files = [\"tokens\"], token_env = [\"T\"] }",
        );
        let c = Config::parse(&with_auth, Path::new("/etc/r/h.toml")).unwrap();
        assert_eq!(c.token_files(), vec![PathBuf::from("/etc/r/tokens")]);
        let empty = open.replace("8080\"", "8080\"\nauth = {}");
        let err = Config::parse(&empty, Path::new("h.toml")).unwrap_err();
        assert_eq!(
            err,
            "h.toml: http.auth: name at least one of token_files or token_env"
        );
        let half_tls = GOOD.replace("[consumer]", "[http]\ntls_cert = \"c.pem\"\n\n[consumer]");
        let err = Config::parse(&half_tls, Path::new("h.toml")).unwrap_err();
        assert_eq!(err, "h.toml: http.tls_cert is set but http.tls_key is not");
        let admin = format!("{GOOD}\n[admin]\ntoken_file = \"admin.token\"\n");
        let config = Config::parse(&admin, Path::new("/etc/h.toml")).unwrap();
        assert_eq!(
            config.admin_token_file(),
            Some(PathBuf::from("/etc/admin.token"))
        );
        assert!(config.admin_enabled());
        assert!(
            !Config::parse(GOOD, Path::new("h.toml"))
                .unwrap()
                .admin_enabled()
        );
    }

    #[test]
    fn refuses_duplicate_grain_types_and_bad_pins() {
        let text = format!("{GOOD}\n[[plugin]]\ngrain_type = \"Counter\"\npath = \"other.wasm\"\n");
        let err = Config::parse(&text, Path::new("h.toml")).unwrap_err();
        assert!(
            err.contains("plugin[1]") && err.contains("configured twice"),
            "{err}"
        );
        let text = GOOD.replace("timeout_ms = 20", "sha256 = \"abc\"");
        let err = Config::parse(&text, Path::new("h.toml")).unwrap_err();
        assert!(err.contains("sha256 must be 64 hex digits"), "{err}");
    }

    #[test]
    fn a_shadow_resolves_like_path_and_its_settings_are_checked() {
        let shadowed = GOOD.replace(
            "timeout_ms = 20",
            "timeout_ms = 20\nshadow = \"cand/v2.wasm\"\nshadow_sample = 0.25",
        );
        let c = Config::parse(&shadowed, Path::new("/etc/replica/host.toml")).unwrap();
        let entry = &c.plugins[0];
        assert_eq!(
            c.shadow_path(entry),
            Some(PathBuf::from("/etc/replica/cand/v2.wasm"))
        );
        assert_eq!(entry.shadow_sample, Some(0.25));
        assert_eq!(entry.without_shadow().shadow, None);
        assert_eq!(c.shadow_path(&entry.without_shadow()), None);
        for (bad, says) in [
            (
                "shadow_sample = 1.5",
                "shadow_sample must be between 0.0 and 1.0, not 1.5",
            ),
            (
                "shadow_sample = nan",
                "shadow_sample must be between 0.0 and 1.0",
            ),
            (
                "shadow_sha256 = \"abc\"",
                "shadow_sha256 must be 64 hex digits",
            ),
        ] {
            let text = shadowed.replace("shadow_sample = 0.25", bad);
            let err = Config::parse(&text, Path::new("h.toml")).unwrap_err();
            assert!(err.contains(says) && err.contains("plugin[0]"), "{err}");
        }
        let orphan = GOOD.replace("timeout_ms = 20", "shadow_sample = 0.5");
        let err = Config::parse(&orphan, Path::new("h.toml")).unwrap_err();
        assert!(err.contains("need shadow"), "{err}");
    }
}
