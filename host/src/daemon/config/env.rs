//! Settings from the environment: `REPLICA_<SECTION>__<KEY>=VALUE` sets
//! `[section] key` over what the config file says, e.g. `REPLICA_LOG__URL`
//! or `REPLICA_CONSUMER__SHARD=2/3`.
//!
//! - The name after `REPLICA_` is split at each `__` and lowercased; deeper
//!   keys take more parts (`REPLICA_HTTP__AUTH__TOKEN_ENV`), a number
//!   indexes `[[plugin]]` (`REPLICA_PLUGIN__0__SHA256`), and
//!   `REPLICA_CLUSTER_ID` is the one top-level setting.
//! - Other `REPLICA_` variables without `__` (`REPLICA_CONFIG`, token
//!   variables such as `REPLICA_TOKENS`) are not settings.
//! - The value is read as a TOML value (`4`, `true`, `["a", "b"]`,
//!   `{ token_files = ["t"] }`), and as a string when it is not one or when
//!   the setting wants a string (`2/3`, `0.0.0.0:8080`, `123`).
//! - Each override is checked alone against the config's schema before any
//!   is applied: a name that is no setting, or a value the setting cannot
//!   take, is one line naming the variable, as an unknown key of the file
//!   names its line.

use toml::{Table, Value};

use super::Config;

/// The prefix of every override.
pub const PREFIX: &str = "REPLICA_";

/// One setting from the environment. Its value may be a secret (a log URL
/// with a password): `Debug` leaves it out, and nothing logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Override {
    /// The variable, e.g. `REPLICA_CONSUMER__SHARD`.
    pub variable: String,
    /// The setting's path, e.g. `["consumer", "shard"]`.
    pub path: Vec<String>,
    value: String,
}

impl std::fmt::Debug for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Override({} -> {})", self.variable, self.setting())
    }
}

impl Override {
    /// The setting it overrides, dotted: `consumer.shard`, `plugin.0.path`.
    pub fn setting(&self) -> String {
        self.path.join(".")
    }

    /// The value to set: the TOML value the text reads as, or the text as a
    /// string, whichever the setting takes.
    fn checked_value(&self) -> Result<Value, String> {
        let as_string = Value::String(self.value.clone());
        let typed = typed(&self.value);
        let first = typed.clone().unwrap_or_else(|| as_string.clone());
        let err = match self.fits(first.clone()) {
            Ok(()) => return Ok(first),
            Err(e) => e,
        };
        if typed.as_ref().is_some_and(|v| !v.is_str()) && self.fits(as_string.clone()).is_ok() {
            return Ok(as_string);
        }
        Err(self.error(&err))
    }

    /// Whether the setting takes `value`: deserializes a config holding only
    /// this setting (any `[[plugin]]` index as 0), so an unknown name or a
    /// wrong type fails as it would in the file, and only the other
    /// settings' absence is forgiven.
    fn fits(&self, value: Value) -> Result<(), String> {
        let path: Vec<String> = self
            .path
            .iter()
            .map(|p| {
                if p.parse::<usize>().is_ok() {
                    "0".to_owned()
                } else {
                    p.clone()
                }
            })
            .collect();
        let mut skeleton = Value::Table(Table::new());
        set_in(&mut skeleton, &path, value).map_err(|depth| self.not_a_table(depth))?;
        match skeleton.try_into::<Config>() {
            Ok(_) => Ok(()),
            Err(e) if e.message().starts_with("missing field") => Ok(()),
            Err(e) => Err(e.message().trim().replace('\n', " ")),
        }
    }

    /// Sets the value in the file's table, creating the sections (and
    /// `[[plugin]]` entries up to the index) that are not there.
    fn apply(&self, table: &mut Table, value: Value) -> Result<(), String> {
        let mut root = Value::Table(std::mem::take(table));
        let outcome = set_in(&mut root, &self.path, value);
        if let Value::Table(t) = root {
            *table = t;
        }
        outcome.map_err(|depth| self.error(&self.not_a_table(depth)))
    }

    fn not_a_table(&self, depth: usize) -> String {
        format!("{} is not a table", self.path[..depth].join("."))
    }

    fn error(&self, what: &str) -> String {
        format!("{} ({}): {what}", self.variable, self.setting())
    }
}

/// Whether `path[i]` is an index (a number).
fn is_index(path: &[String], i: usize) -> bool {
    path.get(i).is_some_and(|p| p.parse::<usize>().is_ok())
}

/// Sets `path` under `node` to `value`, creating missing tables (arrays
/// before an index, padded with empty tables). `Err(depth)`: the value at
/// `path[..depth]` is neither a table nor an array to index.
fn set_in(node: &mut Value, path: &[String], value: Value) -> Result<(), usize> {
    fn go(node: &mut Value, path: &[String], i: usize, value: Value) -> Result<(), usize> {
        let Some(part) = path.get(i) else {
            *node = value;
            return Ok(());
        };
        let child = match (node, part.parse::<usize>()) {
            (Value::Array(items), Ok(index)) => {
                while items.len() <= index {
                    items.push(Value::Table(Table::new()));
                }
                &mut items[index]
            }
            (Value::Table(t), _) => t.entry(part.clone()).or_insert_with(|| {
                if is_index(path, i + 1) {
                    Value::Array(Vec::new())
                } else {
                    Value::Table(Table::new())
                }
            }),
            _ => return Err(i),
        };
        go(child, path, i + 1, value)
    }
    go(node, path, 0, value)
}

/// The TOML value `text` reads as, if it is exactly one.
fn typed(text: &str) -> Option<Value> {
    let doc: Table = toml::from_str(&format!("v = {text}")).ok()?;
    if doc.len() != 1 {
        return None;
    }
    doc.get("v").cloned()
}

/// The overrides among `vars`, sorted by variable name.
pub fn overrides_from(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
    let mut found: Vec<Override> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(PREFIX)?;
            if !rest.contains("__") && rest != "CLUSTER_ID" {
                return None;
            }
            let path = rest.split("__").map(str::to_ascii_lowercase).collect();
            Some(Override {
                variable: name,
                path,
                value,
            })
        })
        .collect();
    found.sort_by(|a, b| a.variable.cmp(&b.variable));
    found
}

/// The overrides in this process's environment (`replica-host run`'s).
#[cfg(feature = "tools")]
pub fn overrides() -> Vec<Override> {
    overrides_from(std::env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    }))
}

/// Checks every override alone, then applies them all to `table`, in order.
pub(super) fn apply_all(table: &mut Table, overrides: &[Override]) -> Result<(), String> {
    let values = overrides
        .iter()
        .map(Override::checked_value)
        .collect::<Result<Vec<_>, _>>()?;
    for (o, value) in overrides.iter().zip(values) {
        o.apply(table, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const FILE: &str = "cluster_id = \"eu\"\n\n[log]\nurl = \"sqlite://r.db\"\n\n[consumer]\nworkers = 3\n\n[[plugin]]\ngrain_type = \"Counter\"\npath = \"c.wasm\"\n";

    fn vars(pairs: &[(&str, &str)]) -> Vec<Override> {
        overrides_from(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, String> {
        Config::parse_with(FILE, Path::new("/etc/r/host.toml"), &vars(pairs))
    }

    #[test]
    fn only_double_underscore_names_and_cluster_id_are_settings() {
        let found = vars(&[
            ("REPLICA_CONFIG", "/etc/r/host.toml"),
            ("REPLICA_TOKENS", "abc read"),
            ("REPLICA_LOG__URL", "postgres://u:pw@db/x"),
            ("REPLICA_CLUSTER_ID", "us"),
            ("OTHER__X", "1"),
        ]);
        let names: Vec<_> = found.iter().map(|o| o.setting()).collect();
        assert_eq!(names, ["cluster_id", "log.url"]);
        assert!(!format!("{found:?}").contains("pw"), "{found:?}");
    }

    #[test]
    fn overrides_set_values_as_toml_or_strings() {
        let c = parse(&[
            ("REPLICA_CONSUMER__SHARD", "2/3"),
            ("REPLICA_CONSUMER__WORKERS", "8"),
            ("REPLICA_CLUSTER_ID", "123"),
            ("REPLICA_HTTP__LISTEN", "0.0.0.0:9090"),
            ("REPLICA_HTTP__ALLOW_UNAUTHENTICATED", "true"),
            ("REPLICA_HTTP__AUTH__TOKEN_ENV", "[\"T1\", \"T2\"]"),
            ("REPLICA_PLUGIN__0__TIMEOUT_MS", "40"),
            (
                "REPLICA_LOG__URL",
                "postgres://u@db/x?sslmode=verify-full&sslrootcert=ca.pem",
            ),
        ])
        .unwrap();
        assert_eq!(c.consumer.shard.unwrap().to_string(), "2/3");
        assert_eq!(c.consumer.workers, 8);
        assert_eq!(c.cluster_id, "123");
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:9090");
        assert_eq!(c.http.auth.as_ref().unwrap().token_env, ["T1", "T2"]);
        assert_eq!(c.plugins[0].timeout_ms, Some(40));
        assert!(
            c.log_url().ends_with("sslrootcert=%2Fetc%2Fr%2Fca.pem"),
            "{}",
            c.log_url()
        );
    }

    #[test]
    fn a_new_plugin_entry_and_missing_sections_come_from_the_environment() {
        let c = parse(&[
            ("REPLICA_PLUGIN__1__GRAIN_TYPE", "Bank"),
            ("REPLICA_PLUGIN__1__PATH", "b.wasm"),
            ("REPLICA_ADMIN__TOKEN_FILE", "admin.token"),
        ])
        .unwrap();
        assert_eq!(c.plugins.len(), 2);
        assert_eq!(c.plugins[1].grain_type, "Bank");
        assert!(c.admin_enabled());
    }

    #[test]
    fn unknown_settings_and_bad_values_name_the_variable() {
        let err = parse(&[("REPLICA_CONSUMER__BATCH_LIMT", "5")]).unwrap_err();
        assert!(
            err.starts_with(
                "/etc/r/host.toml: REPLICA_CONSUMER__BATCH_LIMT (consumer.batch_limt): unknown field `batch_limt`"
            ),
            "{err}"
        );
        let err = parse(&[("REPLICA_NOPE__X", "1")]).unwrap_err();
        assert!(
            err.contains("REPLICA_NOPE__X (nope.x): unknown field `nope`"),
            "{err}"
        );
        let err = parse(&[("REPLICA_CONSUMER__SHARD", "3/3")]).unwrap_err();
        assert!(
            err.contains("REPLICA_CONSUMER__SHARD (consumer.shard): shard `3/3`"),
            "{err}"
        );
        let err = parse(&[("REPLICA_CONSUMER__WORKERS", "many")]).unwrap_err();
        assert!(err.contains("(consumer.workers): invalid type"), "{err}");
        let err = parse(&[("REPLICA_LOG__URL__X", "1")]).unwrap_err();
        assert!(err.contains("REPLICA_LOG__URL__X (log.url.x)"), "{err}");
        assert!(!err.contains('\n'));
        // Checks that come after parsing still run on the result.
        let err = parse(&[("REPLICA_CONSUMER__WORKERS", "0")]).unwrap_err();
        assert_eq!(err, "/etc/r/host.toml: consumer.workers must be at least 1");
    }

    #[test]
    fn the_file_keeps_its_line_numbers_under_overrides() {
        let text = FILE.replace("workers = 3", "workers = 3\nworkrs = 1");
        let err = Config::parse_with(
            &text,
            Path::new("h.toml"),
            &vars(&[("REPLICA_CONSUMER__SHARD", "0/2")]),
        )
        .unwrap_err();
        assert!(err.starts_with("h.toml:8: unknown field `workrs`"), "{err}");
    }

    #[test]
    fn the_rendered_config_masks_the_password_and_reads_back() {
        let c = parse(&[
            (
                "REPLICA_LOG__URL",
                "postgres://orlando:hunter2@db/x?password=hunter2",
            ),
            ("REPLICA_CONSUMER__SHARD", "1/4"),
        ])
        .unwrap();
        let text = c.render();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("postgres://orlando:***@db/x?password=***"),
            "{text}"
        );
        let back = Config::parse(&text, Path::new("/etc/r/host.toml")).unwrap();
        assert_eq!(back.consumer.shard, c.consumer.shard);
        assert_eq!(back.plugins, c.plugins);
    }
}
