//! `replica-host plugin new`: writes a plugin crate that builds as it is:
//! a state type stub, a native unit test, golden fixtures and a
//! `.gitignore`. The crate is a workspace of its own, so it builds from any
//! folder, and depends on the guest SDK by path (a checkout of this
//! repository) or by git URL at a pinned revision. Its `Cargo.lock` is
//! resolved from this workspace's, so it builds with the versions we test
//! (and offline, where those are in cargo's cache).
//!
//! A quarter of the file is its unit tests; most of the rest is the
//! scaffold's file templates.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

/// Where the generated crate gets `replica-guest` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A `guest-sdk` folder on this machine (absolute).
    Path(PathBuf),
    /// A git repository holding this workspace (cargo finds the crate in
    /// it), at a revision, so later builds do not float.
    Git {
        /// The repository's URL.
        url: String,
        /// The commit (or tag) to build against.
        rev: String,
    },
}

impl SdkSource {
    /// `path`, checked to be the `replica-guest` crate, made absolute.
    pub fn path(path: &Path) -> anyhow::Result<SdkSource> {
        check_sdk_dir(path).map(SdkSource::Path)
    }

    fn dependency(&self) -> String {
        match self {
            SdkSource::Path(path) => format!(
                "replica-guest = {{ path = {} }}",
                toml_string(&path.display().to_string())
            ),
            SdkSource::Git { url, rev } => format!(
                "replica-guest = {{ git = {}, rev = {} }}",
                toml_string(url),
                toml_string(rev)
            ),
        }
    }
}

/// The folder, absolute, when it holds the `replica-guest` crate.
fn check_sdk_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "{}: not the replica-guest SDK (no readable Cargo.toml)",
            dir.display()
        )
    })?;
    let parsed: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", manifest.display()))?;
    let name = parsed
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str());
    if name != Some("replica-guest") {
        bail!(
            "{}: not the replica-guest SDK (its package is {})",
            dir.display(),
            name.map_or("unnamed".to_owned(), |n| format!("`{n}`"))
        );
    }
    dir.canonicalize()
        .with_context(|| format!("{}", dir.display()))
}

/// How the grain's payloads are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// Orlando's default: bincode 2, standard config, through serde.
    Bincode,
    /// `serde_json::to_vec`.
    Json,
}

/// What `plugin new` writes.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// The Orlando grain type, e.g. `ShoppingCart`.
    pub grain_type: String,
    /// The payload format.
    pub format: PayloadFormat,
    /// Where `replica-guest` comes from.
    pub sdk: SdkSource,
    /// A `Cargo.lock` (this workspace's) whose versions the crate's own
    /// lock keeps; `None` writes no lock.
    pub lock_like: Option<PathBuf>,
}

/// The longest grain type name accepted.
const MAX_GRAIN_TYPE: usize = 100;

/// Checks a grain type name: an ASCII letter, then letters, digits or `_`,
/// at most 100 characters, so it names Rust types and a crate.
pub fn check_grain_type(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= MAX_GRAIN_TYPE
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        bail!(
            "grain type `{}` is not valid: use an ASCII letter, then letters, digits or `_` (at most {MAX_GRAIN_TYPE} characters)",
            name.escape_debug()
        );
    }
    Ok(())
}

/// The Rust type prefix for a grain type: `shopping_cart` → `ShoppingCart`.
fn rust_name(grain_type: &str) -> String {
    grain_type
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            let first = chars.next().expect("not empty").to_ascii_uppercase();
            std::iter::once(first).chain(chars).collect::<String>()
        })
        .collect()
}

/// The crate name for a grain type: `ShoppingCart` → `shopping-cart-plugin`.
fn crate_name(grain_type: &str) -> String {
    let mut name = String::new();
    let mut previous: Option<char> = None;
    for c in grain_type.chars() {
        if c == '_' {
            if !name.ends_with('-') {
                name.push('-');
            }
        } else {
            let boundary = c.is_ascii_uppercase()
                && previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit());
            if boundary && !name.ends_with('-') {
                name.push('-');
            }
            name.push(c.to_ascii_lowercase());
        }
        previous = Some(c);
    }
    format!("{}-plugin", name.trim_matches('-'))
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The example state the fixtures hold, as the stub declares it.
#[derive(Serialize)]
struct ExampleState {
    value: i64,
}

/// Writes the plugin crate into `dir`, which must not exist or be empty.
/// Returns the files written, relative to `dir`.
pub fn write(dir: &Path, plugin: &NewPlugin) -> anyhow::Result<Vec<PathBuf>> {
    check_grain_type(&plugin.grain_type)?;
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot read the folder", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{}: the folder is not empty; give a new or empty folder",
                dir.display()
            );
        }
    }
    let files = files(plugin)?;
    std::fs::create_dir_all(dir.join("src"))
        .and_then(|()| std::fs::create_dir_all(dir.join("fixtures")))
        .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    for (path, bytes) in &files {
        let full = dir.join(path);
        std::fs::write(&full, bytes).with_context(|| format!("{}", full.display()))?;
    }
    let mut written: Vec<PathBuf> = files.into_iter().map(|(p, _)| p).collect();
    if let Some(seed) = &plugin.lock_like {
        lock(dir, seed)?;
        written.push("Cargo.lock".into());
    }
    Ok(written)
}

/// Writes `dir/Cargo.lock` resolved like `seed`: the seed is copied in and
/// cargo prunes it to the crate's dependencies, keeping every version it
/// holds (and adding only what it lacks). Offline first, so a machine with
/// those versions in its cache needs no network.
fn lock(dir: &Path, seed: &Path) -> anyhow::Result<()> {
    let target = dir.join("Cargo.lock");
    std::fs::copy(seed, &target)
        .with_context(|| format!("{}: cannot copy {}", target.display(), seed.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let resolve = |offline: bool| {
        let mut cmd = std::process::Command::new(&cargo);
        cmd.args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if offline {
            cmd.arg("--offline");
        }
        cmd.output()
    };
    let mut out = resolve(true).context("cannot run cargo")?;
    if !out.status.success() {
        out = resolve(false).context("cannot run cargo")?;
    }
    if !out.status.success() {
        let _ = std::fs::remove_file(&target);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("cargo metadata failed");
        bail!(
            "{}: cannot resolve the crate's dependencies for its Cargo.lock: {reason}",
            dir.display()
        );
    }
    Ok(())
}

/// Every file of the crate with its contents.
fn files(plugin: &NewPlugin) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let example = ExampleState { value: 42 };
    let (payload, format_name) = match plugin.format {
        PayloadFormat::Bincode => (
            bincode::serde::encode_to_vec(&example, bincode::config::standard())
                .context("encoding the example payload")?,
            "bincode",
        ),
        PayloadFormat::Json => (
            serde_json::to_vec(&example).context("encoding the example payload")?,
            "json",
        ),
    };
    let expected = format!("{}\n", serde_json::to_string_pretty(&example)?);
    Ok(vec![
        ("Cargo.toml".into(), cargo_toml(plugin).into_bytes()),
        (
            "src/lib.rs".into(),
            lib_rs(plugin, format_name).into_bytes(),
        ),
        (".gitignore".into(), b"/target\n".to_vec()),
        ("fixtures/example.payload".into(), payload),
        ("fixtures/example.json".into(), expected.into_bytes()),
        ("fixtures/empty.payload".into(), Vec::new()),
        ("fixtures/empty.error".into(), b"malformed\n".to_vec()),
    ])
}

fn cargo_toml(plugin: &NewPlugin) -> String {
    let dev = match plugin.format {
        PayloadFormat::Bincode => {
            "bincode = { version = \"2\", features = [\"serde\"] }\nserde_json = \"1\"\n"
        }
        PayloadFormat::Json => "serde_json = \"1\"\n",
    };
    format!(
        r#"[package]
name = "{name}"
description = "replica-host plugin for Orlando's {grain_type} grain"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the Wasm plugin; rlib: the native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
{sdk}
serde = {{ version = "1", features = ["derive"] }}

[dev-dependencies]
{dev}
# A workspace of its own: the crate builds from any folder.
[workspace]
"#,
        name = crate_name(&plugin.grain_type),
        grain_type = plugin.grain_type,
        sdk = plugin.sdk.dependency(),
    )
}

fn lib_rs(plugin: &NewPlugin, format: &str) -> String {
    let grain_type = &plugin.grain_type;
    let rust = rust_name(grain_type);
    let encode = match plugin.format {
        PayloadFormat::Bincode => {
            "bincode::serde::encode_to_vec(&state, bincode::config::standard()).unwrap()"
        }
        PayloadFormat::Json => "serde_json::to_vec(&state).unwrap()",
    };
    format!(
        r#"//! Decodes Orlando's `{grain_type}` grain: {format} payloads of `{rust}State`.
//!
//! Build: `replica-host plugin build .`; test natively: `cargo test`;
//! golden tests through the built component:
//! `replica-host plugin test target/wasm32-unknown-unknown/release/plugin/*.wasm fixtures`.

use replica_guest::{{DecodeError, Plugin, Snapshot}};
use serde::{{Deserialize, Serialize}};

/// The `{grain_type}` grain's state: declare the fields exactly as the
/// Orlando grain declares them, in the same order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct {rust}State {{
    /// An example field: replace it with the grain's own.
    pub value: i64,
}}

/// The `{grain_type}` decoding plugin.
pub struct {rust}Plugin;

impl Plugin for {rust}Plugin {{
    const GRAIN_TYPE: &'static str = "{grain_type}";
    const SCHEMA_NAME: &'static str = "{rust}State";
    const SCHEMA_VERSION: &'static str = "1";
    type State = {rust}State;

    fn decode(snapshot: &Snapshot) -> Result<{rust}State, DecodeError> {{
        replica_guest::formats::{format}(&snapshot.payload)
    }}
}}

replica_guest::export_plugin!({rust}Plugin);

#[cfg(test)]
mod tests {{
    use super::*;

    fn snapshot(payload: Vec<u8>) -> Snapshot {{
        Snapshot {{
            grain_type: "{grain_type}".into(),
            grain_key: "k-1".into(),
            sequence: 1,
            timestamp_millis: 0,
            source_cluster: "test".into(),
            payload,
        }}
    }}

    #[test]
    fn decodes_a_payload_encoded_as_orlando_does() {{
        let state = {rust}State {{ value: -7 }};
        let payload = {encode};
        assert_eq!({rust}Plugin::decode(&snapshot(payload)).unwrap(), state);
    }}

    #[test]
    fn the_example_fixture_decodes_to_its_json() {{
        let payload = include_bytes!("../fixtures/example.payload").to_vec();
        let expected: serde_json::Value =
            serde_json::from_str(include_str!("../fixtures/example.json")).unwrap();
        let state = {rust}Plugin::decode(&snapshot(payload)).unwrap();
        assert_eq!(serde_json::to_value(&state).unwrap(), expected);
    }}

    #[test]
    fn an_empty_payload_is_malformed() {{
        let err = {rust}Plugin::decode(&snapshot(vec![])).unwrap_err();
        assert_eq!(err.kind, replica_guest::ErrorKind::MalformedPayload);
    }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_grain_type() {
        assert_eq!(rust_name("ShoppingCart"), "ShoppingCart");
        assert_eq!(rust_name("shopping_cart"), "ShoppingCart");
        assert_eq!(crate_name("ShoppingCart"), "shopping-cart-plugin");
        assert_eq!(crate_name("shopping_cart"), "shopping-cart-plugin");
        assert_eq!(crate_name("HTTPLog2"), "httplog2-plugin");
        assert_eq!(crate_name("User2Profile"), "user2-profile-plugin");
    }

    #[test]
    fn grain_types_are_checked() {
        for good in ["Counter", "a", "Bank_Account2"] {
            check_grain_type(good).unwrap();
        }
        for bad in [
            "",
            "2Counter",
            "_x",
            "Bank-Account",
            "Bank Account",
            "Zoë",
            "a\"b",
        ] {
            let err = check_grain_type(bad).unwrap_err().to_string();
            assert!(err.starts_with("grain type `"), "{err}");
        }
        check_grain_type(&"a".repeat(101)).unwrap_err();
    }

    #[test]
    fn refuses_a_non_empty_folder_and_writes_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "").unwrap();
        let plugin = NewPlugin {
            grain_type: "Cart".into(),
            format: PayloadFormat::Json,
            sdk: SdkSource::Git {
                url: "https://example.com/r.git".into(),
                rev: "0123abc".into(),
            },
            lock_like: None,
        };
        let err = write(dir.path(), &plugin).unwrap_err().to_string();
        assert!(err.contains("is not empty"), "{err}");

        let empty = tempfile::tempdir().unwrap();
        let files = write(empty.path(), &plugin).unwrap();
        assert!(files.contains(&PathBuf::from("fixtures/example.payload")));
        let toml = std::fs::read_to_string(empty.path().join("Cargo.toml")).unwrap();
        assert!(toml.contains("name = \"cart-plugin\""), "{toml}");
        assert!(
            toml.contains(
                "replica-guest = { git = \"https://example.com/r.git\", rev = \"0123abc\" }"
            ),
            "{toml}"
        );
        let payload = std::fs::read(empty.path().join("fixtures/example.payload")).unwrap();
        assert_eq!(payload, br#"{"value":42}"#);
    }

    #[test]
    fn the_sdk_folder_is_checked() {
        let sdk = SdkSource::path(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"))
            .expect("this checkout's guest-sdk");
        let SdkSource::Path(sdk) = sdk else {
            panic!("{sdk:?}")
        };
        assert!(sdk.is_absolute() && sdk.ends_with("guest-sdk"));
        let err = SdkSource::path(Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("its package is `replica-host`"), "{err}");
    }
}
