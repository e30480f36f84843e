//! The value path of contract 2 against a plugin written straight against
//! the WIT (`tests/plugins/raw-output`): what the host refuses to store,
//! what it escapes before it logs or serves a plugin's text, and how much
//! it lets a plugin make it copy.

use std::path::Path;
use std::time::{Duration, Instant};

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::plugin;
use replica_host::OutputLimits;
use replica_host::{CallErrorKind, LoadedPlugin, PluginEngine, PluginLimits, SnapshotRef};

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

/// The process's peak resident set (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// The bound this test states for the host's peak RSS while it refuses a
/// state that would render as a gigabyte: far below the gigabyte, above
/// the host's own footprint and one plugin instance's memory.
const AMPLIFICATION_RSS_BOUND: u64 = 256 << 20;

#[test]
fn a_small_state_that_would_render_a_gigabyte_is_refused_and_memory_stays_bounded() {
    // 2,000 bytes of name referred to 540,000 times: about 1 MiB encoded,
    // about 1.08 GB of JSON.
    let key = "amplify:2000:540000";
    let err = raw_plugin(PluginLimits::default())
        .decode(snap(key))
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::BadOutput, "{err}");
    assert!(
        err.message
            .contains("would render as more than 134217728 bytes of JSON"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let d = raw_daemon(dir.path(), &[], &[key, "count:2"]);
    let r = d.wait_for_replica("Raw", key, WAIT, is_failing);
    assert!(
        r["status_detail"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("bad_output: returned a state the host refuses: the state would render"),
        "{r}"
    );
    assert_eq!(r["state"], serde_json::Value::Null);
    d.wait_for_replica("Raw", "count:2", WAIT, |r| r["status"] == "ok");
    for _ in 0..5 {
        assert_eq!(d.replica("Raw", key).status, 200);
    }
    let peak = peak_rss(d.pid());
    println!(
        "host peak RSS after refusing the amplified state: {} MiB",
        peak >> 20
    );
    assert!(
        peak < AMPLIFICATION_RSS_BOUND,
        "peak RSS {} MiB, bound {} MiB",
        peak >> 20,
        AMPLIFICATION_RSS_BOUND >> 20
    );

    // `plugin decode` refuses it the same way, in one line.
    let payload = dir.path().join("payload");
    std::fs::write(&payload, b"").unwrap();
    let wasm = plugin("raw-output-plugin");
    let (code, stdout, stderr) = replica_e2e::run_host(
        &[
            "plugin",
            "decode",
            wasm.to_str().unwrap(),
            "--payload",
            payload.to_str().unwrap(),
            "--grain-key",
            key,
        ],
        &[],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("would render as more than"), "{stderr}");
}

/// Characters that forge or hide text, as a plugin author can put them in
/// a function's symbol name and in what `describe` says.
const NASTY: &str = "\r\u{1b}[31m\u{202E}\u{2028}\0";

/// Whether `text` carries any of [`NASTY`] raw (a newline is a line end).
fn has_nasty(text: &str) -> bool {
    text.chars()
        .any(|c| (c.is_control() && c != '\n') || ('\u{2028}'..='\u{202E}').contains(&c))
}

/// A WAT plugin whose `decode` calls a function named with [`NASTY`], which
/// logs bytes that are not UTF-8: the host fails the call, and the error's
/// wasm backtrace names the function. Its schema name carries [`NASTY`] too.
fn nasty_plugin() -> replica_e2e::wat_plugin::WatPlugin {
    let name: String = NASTY
        .chars()
        .map(|c| match c {
            '\r' => "\\0d".to_string(),
            '\u{1b}' => "\\1b".to_string(),
            '\0' => "\\00".to_string(),
            c if c.is_ascii() => c.to_string(),
            c => format!("\\u{{{:x}}}", c as u32),
        })
        .collect();
    replica_e2e::wat_plugin::WatPlugin {
        grain_type: Some("Nasty".into()),
        schema_name: Some(format!("schema{NASTY}forged")),
        imports: r#"(import "replica:plugin/logging@2.0.0" "log" (func $log (param i32 i32 i32)))"#
            .into(),
        decls: format!(
            r#"(func $"evil{name}"
                 (i32.store (i32.const 8) (i32.const 0xfffefdfc))
                 (call $log (i32.const 3) (i32.const 8) (i32.const 4)))"#
        ),
        in_decode: format!(r#"(call $"evil{name}")"#),
        ..Default::default()
    }
}

#[test]
fn guest_symbol_names_and_describe_text_are_escaped_in_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("nasty.wasm");
    nasty_plugin().write(&wasm);
    let wasm = wasm.to_str().unwrap();

    // The library: the call fails, its message names the function escaped.
    let engine = PluginEngine::new().unwrap();
    let p = LoadedPlugin::load(&engine, Path::new(wasm), PluginLimits::default()).unwrap();
    assert_eq!(
        p.description().schema_name,
        r"schema\r\u{001b}[31m\u{202e}\u{2028}\u{0000}forged"
    );
    let err = p
        .decode(SnapshotRef {
            grain_type: "Nasty",
            ..snap("k")
        })
        .unwrap_err();
    assert!(!has_nasty(&err.to_string()), "{err:?}");
    assert!(
        err.message
            .contains(r"evil\r\u{001b}[31m\u{202e}\u{2028}\u{0000}"),
        "the backtrace names the function, escaped: {err}"
    );

    // The CLI: inspect's describe fields, decode's error line.
    let (code, stdout, stderr) = replica_e2e::run_host(&["plugin", "inspect", wasm], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!has_nasty(&stdout), "{stdout:?}");
    assert!(stdout.contains(r"schema\r\u{001b}"), "{stdout}");
    let payload = dir.path().join("payload");
    std::fs::write(&payload, b"x").unwrap();
    let (code, _, stderr) = replica_e2e::run_host(
        &[
            "plugin",
            "decode",
            wasm,
            "--payload",
            payload.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(!has_nasty(&stderr), "{stderr:?}");
    assert!(stderr.contains(r"evil\r\u{001b}"), "{stderr}");

    // The daemon, in both log formats: the log, the failing reason, the
    // plugin list and the operator page.
    for format in ["human", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("replication.db").display());
        std::fs::copy(wasm, dir.path().join("nasty.wasm")).unwrap();
        LogWriter::open(&url).full("Nasty", "k", 1, b"x".to_vec());
        let config = daemon::config(
            &url,
            "[[plugin]]\ngrain_type = \"Nasty\"\npath = \"nasty.wasm\"\n",
        );
        let d = Daemon::start_with_args(dir.path(), &config, &["--log-format", format]);
        let r = d.wait_for_replica("Nasty", "k", WAIT, is_failing);
        let reason = r["status_detail"]["reason"].as_str().unwrap();
        assert!(reason.contains(r"evil\r\u{001b}[31m\u{202e}"), "{reason}");
        assert!(!has_nasty(reason), "{reason:?}");
        let plugins = d.get("/v1/plugins").body;
        assert!(!has_nasty(&plugins), "{plugins:?}");
        let page = d.get("/").body;
        assert!(!has_nasty(&page), "operator page: {page:?}");
        assert!(
            page.contains(r"schema\r\u{001b}"),
            "operator page names the schema escaped"
        );
        d.wait_for_log(&["evil"], WAIT);
        for line in d.stderr() {
            assert!(!has_nasty(&line), "{format}: {line:?}");
            if format == "json" {
                serde_json::from_str::<serde_json::Value>(&line)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            }
        }
    }
}
