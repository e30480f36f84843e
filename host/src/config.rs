//! The daemon's TOML configuration file.
//!
//! Unknown keys and wrong types are errors naming the key and the line.
//! Plugin paths and relative `sqlite://` paths are relative to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::plugin::PluginLimits;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
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
    /// One entry per replicated grain type.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginEntry>,
    /// The directory of the config file; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The config file itself, for error messages.
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `sqlite://PATH`, `postgres://…` or `memory://`.
    pub url: String,
}

/// `[consumer]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSection {
    /// Time between polls of the log, in ms.
    pub poll_interval_ms: u64,
    /// Most entries read per grain per poll.
    pub batch_limit: usize,
    /// Longest wait between retries of a failing grain or log, in ms.
    pub max_backoff_ms: u64,
}

impl Default for ConsumerSection {
    fn default() -> Self {
        Self {
            poll_interval_ms: 100,
            batch_limit: 100,
            max_backoff_ms: 30_000,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address to listen on.
    pub listen: SocketAddr,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// `[limits]`: defaults for every plugin, each overridable per plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Time one decode call may take, in ms.
    pub timeout_ms: u64,
    /// Memory a plugin instance may grow to, in MiB.
    pub max_memory_mib: u64,
    /// Most nodes in one decoded value.
    pub max_output_nodes: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = PluginLimits::default();
        Self {
            timeout_ms: d.timeout.as_millis() as u64,
            max_memory_mib: (d.max_memory_bytes >> 20) as u64,
            max_output_nodes: d.output.max_nodes,
        }
    }
}

/// `[[plugin]]`
#[derive(Debug, Clone, Deserialize)]
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
}

impl Config {
    /// Reads and parses the file; errors are one line naming file, line and key.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses config text that was read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
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
        })?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.source = path.to_path_buf();
        config.validate()?;
        Ok(config)
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
            if let Some(pin) = &p.sha256
                && (pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(at(format!(
                    "plugin[{i}] ({}): sha256 must be 64 hex digits",
                    p.grain_type
                )));
            }
        }
        Ok(())
    }

    /// The log URL, with a relative `sqlite://` path resolved against the config file.
    pub fn log_url(&self) -> String {
        let url = &self.log.url;
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

    /// A plugin entry's file, resolved against the config file.
    pub fn plugin_path(&self, entry: &PluginEntry) -> PathBuf {
        self.base_dir.join(&entry.path)
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
        limits
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
}
