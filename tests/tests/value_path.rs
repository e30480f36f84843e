//! The value path of contract 2 against a plugin written straight against
//! the WIT (`tests/plugins/raw-output`): what the host refuses to store,
//! what it escapes before it logs or serves a plugin's text, and how much
//! it lets a plugin make it copy.

use std::path::Path;
use std::time::{Duration, Instant};

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::plugin;
use replica_host::plugin::{CallErrorKind, LoadedPlugin, PluginEngine, PluginLimits, SnapshotRef};
use replica_host::value::OutputLimits;

const WAIT: Duration = Duration::from_secs(60);

fn snap(key: &str) -> SnapshotRef<'_> {
    SnapshotRef {
        grain_type: "Raw",
        grain_key: key,
        sequence: 1,
        timestamp_millis: 0,
        source_cluster: "us-east",
        payload: b"",
    }
}

fn raw_plugin(limits: PluginLimits) -> LoadedPlugin {
    let engine = PluginEngine::new().unwrap();
    LoadedPlugin::load(&engine, &plugin("raw-output-plugin"), limits).unwrap()
}

/// A daemon replicating the `Raw` grain type with the raw-output plugin.
fn raw_daemon(dir: &Path, args: &[&str], keys: &[&str]) -> Daemon {
    let url = format!("sqlite://{}", dir.join("replication.db").display());
    let raw = daemon::copy_plugin(dir, "raw-output-plugin");
    let writer = LogWriter::open(&url);
    for key in keys {
        writer.full("Raw", key, 1, vec![0]);
    }
    let config = daemon::config(
        &url,
        &format!("[[plugin]]\ngrain_type = \"Raw\"\npath = \"{raw}\"\n"),
    );
    Daemon::start_with_args(dir, &config, args)
}

fn is_failing(r: &serde_json::Value) -> bool {
    r["status"] == "failing"
}

/// Control and bidi characters that must never reach a log or an answer raw.
fn has_unsafe_chars(text: &str) -> bool {
    text.chars()
        .any(|c| (c.is_control() && c != '\n') || ('\u{202A}'..='\u{202E}').contains(&c))
}

#[test]
fn a_state_json_cannot_render_is_failing_bad_output_never_ok() {
    let dir = tempfile::tempdir().unwrap();
    let d = raw_daemon(dir.path(), &[], &["list-key", "version-9", "count:5"]);
    let ok = d.wait_for_replica("Raw", "count:5", WAIT, |r| r["status"] == "ok");
    assert_eq!(ok["state"], serde_json::json!({ "count": 5 }));
    for (key, reason) in [
        ("list-key", "map key at byte 2 is a sequence"),
        ("version-9", "unknown encoding version 9"),
    ] {
        let r = d.wait_for_replica("Raw", key, WAIT, is_failing);
        let text = r["status_detail"]["reason"].as_str().unwrap();
        assert!(
            text.starts_with("bad_output: returned a state the host refuses")
                && text.contains(reason),
            "{key}: {text}"
        );
        assert_eq!(r["state"], serde_json::Value::Null, "{key}: {r}");
        // And the read itself answers, never a 500.
        assert_eq!(d.replica("Raw", key).status, 200);
    }
}

#[test]
fn plugin_text_cannot_forge_log_lines_in_either_format() {
    for format in ["human", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let d = raw_daemon(dir.path(), &["--log-format", format], &["forge"]);
        let r = d.wait_for_replica("Raw", "forge", WAIT, is_failing);
        let reason = r["status_detail"]["reason"].as_str().unwrap();
        assert!(
            reason.contains("refused\\n2026-01-01T00:00:00Z ERROR FORGED reason \\u{202e}desrever"),
            "{format}: {reason}"
        );
        assert!(!has_unsafe_chars(reason), "{format}: {reason:?}");
        // What the plugin says about itself is escaped too.
        let plugins = d.get("/v1/plugins").json();
        let schema = plugins.to_string();
        assert!(
            schema.contains(r"Raw\\u{202e}Schema\\nforged"),
            "{format}: {schema}"
        );

        d.wait_for_log(&["first line"], WAIT);
        let lines = d.stderr();
        for line in &lines {
            assert!(
                !line.starts_with("2026-01-01T00:00:00Z ERROR FORGED"),
                "{format}: a forged line: {line}"
            );
            assert!(!has_unsafe_chars(line), "{format}: {line:?}");
            if format == "json" {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            }
        }
        let logged = lines
            .iter()
            .find(|l| l.contains("first line"))
            .expect("the plugin's log line");
        assert!(
            logged.contains(
                r"first line\n2026-01-01T00:00:00Z ERROR FORGED by the plugin \u{202e}desrever"
            ) || logged.contains(
                r"first line\\n2026-01-01T00:00:00Z ERROR FORGED by the plugin \\u{202e}desrever"
            ),
            "{format}: {logged}"
        );
    }
}

#[test]
fn the_hostcall_copy_limit_follows_max_output_bytes() {
    let limits = PluginLimits {
        output: OutputLimits {
            max_bytes: 1 << 20,
            ..OutputLimits::default()
        },
        ..PluginLimits::default()
    };
    assert_eq!(limits.hostcall_fuel(), (1 << 20) + (64 << 10));
    let p = raw_plugin(limits);

    // A real 4 MiB buffer: refused before the host copies it.
    let err = p.decode(snap("huge:4")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::BadOutput, "{err}");
    assert!(
        err.message
            .contains("tried to hand the host more than 1114112 bytes in one transfer"),
        "{err}"
    );
    // Just over the output limit but within the copy limit: copied, then
    // refused by validation.
    let err = p.decode(snap("huge:1")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::BadOutput, "{err}");
    assert!(
        err.message.contains("more than the limit of 1048576"),
        "{err}"
    );
    // A declared length that runs past the guest's memory.
    let err = p.decode(snap("lie")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Trap, "{err}");
    assert!(err.message.contains("out of bounds"), "{err}");
    // 400 aliases of one 16 MiB string, one log call each: the first one
    // is already over the limit.
    let started = Instant::now();
    let err = p.decode(snap("alias:400")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::BadOutput, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The plugin still works afterwards.
    let ok = p.decode(snap("count:3")).unwrap();
    assert_eq!(ok.to_json().unwrap(), r#"{"count":3}"#);
}

#[test]
fn aliases_under_the_default_limits_end_at_the_time_limit() {
    // With the default 32 MiB output limit each 16 MiB log line is copied
    // (and cut to one bounded line); the call as a whole hits its deadline.
    let p = raw_plugin(PluginLimits::default());
    let started = Instant::now();
    let err = p.decode(snap("alias:400")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Timeout, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
