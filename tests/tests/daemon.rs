//! `replica-host run` end to end: the real binary, the real sample plugins,
//! a real SQLite file or PostgreSQL server, queried over HTTP.

use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, UserProfile};
use replica_e2e::payloads::counter;
use replica_e2e::pg;
use replica_host::replication_log::EntryType;

const WAIT: Duration = Duration::from_secs(30);

fn metric(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The whole read path against one backend.
fn replicate_and_serve(url: &str, dir: &std::path::Path) {
    let writer = LogWriter::open(url);
    let account = orlando::sample_account(7);
    let profile = UserProfile {
        name: "Ada".into(),
        email: "ada@example.com".into(),
        visits: 3,
        roles: vec!["admin".into()],
    };
    writer.full("Counter", "c-1", 1, counter(1));
    writer.full("Counter", "c-1", 2, counter(2));
    writer.full("BankAccount", "acc/1 \"é\"", 5, orlando::bincode(&account));
    writer.full("UserProfile", "u-1", 1, orlando::json(&profile));
    writer.full("Unconfigured", "x", 1, vec![0]);

    let plugins = daemon::sample_plugins(dir);
    let d = Daemon::start(dir, &daemon::config(url, &plugins));

    // Typed state, rendered exactly as serde_json renders the Rust value.
    let r = d.wait_for("/v1/replicas/Counter/c-1", WAIT, |r| {
        r.status == 200 && r.json()["sequence"] == 2
    });
    let body = r.json();
    assert_eq!(body["state"], serde_json::json!({ "count": 2 }));
    assert_eq!(body["status"], "ok");
    assert_eq!(body["source_cluster"], "us-east");
    assert_eq!(body["grain_type"], "Counter");
    let r = d.wait_for(
        "/v1/replicas/BankAccount/acc%2F1%20%22%C3%A9%22",
        WAIT,
        |r| r.status == 200,
    );
    let state_text = serde_json::to_string(&r.json()["state"]).unwrap();
    assert!(
        r.body.contains(&serde_json::to_string(&account).unwrap()),
        "{} vs {state_text}",
        r.body
    );
    let r = d.wait_for("/v1/replicas/UserProfile/u-1", WAIT, |r| r.status == 200);
    assert_eq!(r.json()["state"], serde_json::to_value(&profile).unwrap());

    // A grain created while running is found by itself.
    writer.full("Counter", "c-new", 10, counter(10));
    let r = d.wait_for("/v1/replicas/Counter/c-new", WAIT, |r| r.status == 200);
    assert_eq!(r.json()["state"]["count"], 10);

    // Behind: a Delta after the applied snapshot.
    writer.delta("Counter", "c-1", 3);
    let r = d.wait_for("/v1/replicas/Counter/c-1", WAIT, |r| {
        r.json()["status"] == "behind"
    });
    assert_eq!(r.json()["status_detail"]["delta_sequence"], 3);
    assert_eq!(
        r.json()["state"]["count"],
        2,
        "a Delta never changes the state"
    );

    // Failing: a snapshot that does not decode keeps the last good state.
    writer.full("Counter", "c-1", 4, vec![0xff, 0xff]);
    let r = d.wait_for("/v1/replicas/Counter/c-1", WAIT, |r| {
        r.json()["status"] == "failing"
    });
    let body = r.json();
    assert_eq!(body["status_detail"]["sequence"], 4);
    assert!(
        body["status_detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed_payload"),
        "{body}"
    );
    assert_eq!(
        (body["sequence"].as_u64(), body["state"]["count"].as_i64()),
        (Some(2), Some(2))
    );
    // ... and recovers by itself when a newer snapshot decodes.
    writer.full("Counter", "c-1", 5, counter(5));
    let r = d.wait_for("/v1/replicas/Counter/c-1", WAIT, |r| {
        r.json()["status"] == "ok"
    });
    assert_eq!(r.json()["state"]["count"], 5);

    // Freshness: a snapshot written a minute ago that is still the newest
    // in the log is not stale; staleness counts from the host's last
    // confirmation against the log, not from the snapshot's age.
    writer.append(
        "Counter",
        "old",
        1,
        EntryType::FullState,
        counter(1),
        replica_host::store::now_millis() - 60_000,
    );
    d.wait_for("/v1/replicas/Counter/old", WAIT, |r| r.status == 200);
    let r = d.wait_for(
        "/v1/replicas/Counter/old?max_staleness_ms=5000",
        WAIT,
        |r| r.status == 200,
    );
    let staleness: u64 = r.header("replica-staleness-ms").unwrap().parse().unwrap();
    assert!(staleness <= 5_000, "{staleness}");
    assert_eq!(r.header("replica-sequence"), Some("1"));
    assert_eq!(r.json()["staleness_ms"], staleness);
    let written = r.json()["timestamp_millis"].as_i64().unwrap();
    assert_eq!(
        r.header("replica-timestamp").unwrap(),
        r.json()["timestamp"].as_str().unwrap()
    );
    assert!(
        r.json()["timestamp"].as_str().unwrap().ends_with(&format!(
            "{:02}.{:03}Z",
            (written / 1000) % 60,
            written % 1000
        )),
        "RFC 3339 of {written}: {}",
        r.body
    );
    // Unknown grains and grain types.
    let r = d.get("/v1/replicas/Counter/nope");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("unknown_grain"))
    );
    assert_eq!(d.get("/v1/replicas/Nope").status, 404);

    // Keys, paginated.
    let r = d.get("/v1/replicas/Counter?limit=2");
    assert_eq!(r.json()["keys"], serde_json::json!(["c-1", "c-new"]));
    assert_eq!(r.json()["next_after"], "c-new");
    let r = d.get("/v1/replicas/Counter?limit=2&after=c-new");
    assert_eq!(r.json()["keys"], serde_json::json!(["old"]));
    assert_eq!(r.json()["next_after"], serde_json::Value::Null);

    // Plugins.
    let plugins = d.get("/v1/plugins").json();
    let counter_plugin = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["grain_type"] == "Counter")
        .unwrap();
    assert!(counter_plugin["calls"].as_u64().unwrap() >= 5);
    assert!(counter_plugin["failures"].as_u64().unwrap() >= 1);
    assert_eq!(counter_plugin["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(counter_plugin["schema_version"], "1");
    assert_eq!(counter_plugin["state_versions"], serde_json::json!(["1"]));

    // Health, readiness, metrics.
    assert_eq!(d.get("/healthz").status, 200);
    assert_eq!(d.get("/readyz").status, 200);
    let metrics = d.get("/metrics").body;
    let applied = metric(
        &metrics,
        r#"replica_snapshots_applied_total{grain_type="Counter"}"#,
    )
    .unwrap();
    assert!(applied >= 4.0, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            r#"replica_deltas_refused_total{grain_type="Counter"}"#
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &metrics,
            r#"replica_decode_failures_total{grain_type="Counter",kind="malformed_payload"}"#
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"replica_replicas{grain_type="Counter",status="ok"}"#
        ),
        Some(3.0)
    );
    assert!(
        metrics.contains("replica_plugin_call_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("replica_replication_lag_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"replica_unhandled_grain_type_grains{grain_type="Unconfigured"}"#),
        "{metrics}"
    );

    // SIGTERM: a clean exit, status 0.
    let exited = d.terminate();
    assert_eq!(exited.code, Some(0), "{:#?}", exited.stderr);
    assert!(
        exited.stderr.iter().any(|l| l.contains("stopped")),
        "{:#?}",
        exited.stderr
    );
    let unconfigured: Vec<_> = exited
        .stderr
        .iter()
        .filter(|l| l.contains("Unconfigured"))
        .collect();
    assert_eq!(unconfigured.len(), 1, "reported once: {unconfigured:#?}");
}

#[test]
fn replicates_from_sqlite_and_serves_http() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("replication.db").display());
    replicate_and_serve(&url, dir.path());
}

#[test]
fn replicates_from_postgres_and_serves_http() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(schema) = rt.block_on(pg::isolated_schema("daemon")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    replicate_and_serve(schema.url(), dir.path());
    drop(schema);
}

#[test]
fn refuses_to_start_with_a_bad_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("sqlite://{}", d.join("r.db").display());
    let counter = daemon::copy_plugin(d, "counter-plugin");
    let profile = daemon::copy_plugin(d, "user-profile-plugin");
    let wasi = daemon::copy_plugin(d, "wasi-import-plugin");
    std::fs::copy(
        replica_e2e::core_module("counter-plugin"),
        d.join("core.wasm"),
    )
    .unwrap();
    std::fs::write(d.join("text.wasm"), "not wasm").unwrap();
    let wrong_pin = "0".repeat(64);
    let cases = [
        (
            format!("[[plugin]]\ngrain_type = \"Counter\"\npath = \"{profile}\"\n"),
            "decodes grain type \"UserProfile\", not \"Counter\"",
        ),
        (
            format!(
                "[[plugin]]\ngrain_type = \"Counter\"\npath = \"{counter}\"\nsha256 = \"{wrong_pin}\"\n"
            ),
            "but the config pins 0000",
        ),
        (
            "[[plugin]]\ngrain_type = \"Counter\"\npath = \"missing.wasm\"\n".to_string(),
            "cannot read the file",
        ),
        (
            format!("[[plugin]]\ngrain_type = \"Counter\"\npath = \"{wasi}\"\n"),
            "imports `wasi:random/random@0.2.0`",
        ),
        (
            "[[plugin]]\ngrain_type = \"Counter\"\npath = \"core.wasm\"\n".to_string(),
            "core WebAssembly module",
        ),
        (
            "[[plugin]]\ngrain_type = \"Counter\"\npath = \"text.wasm\"\n".to_string(),
            "not a WebAssembly file",
        ),
        (
            format!(
                "[[plugin]]\ngrain_type = \"Counter\"\npath = \"{counter}\"\n\n[[plugin]]\ngrain_type = \"Counter\"\npath = \"{counter}\"\n"
            ),
            "configured twice",
        ),
    ];
    for (plugins, expected) in cases {
        // A good plugin first: nothing may start even though it loads.
        let good = format!("[[plugin]]\ngrain_type = \"UserProfile\"\npath = \"{profile}\"\n\n");
        let path = d.join("host.toml");
        std::fs::write(&path, daemon::config(&url, &format!("{good}{plugins}"))).unwrap();
        let (code, stderr) = daemon::run_to_exit(&path);
        assert_eq!(code, 2, "{expected}: {stderr}");
        let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "{stderr}");
        let line = error_lines[0];
        assert!(line.contains(expected), "expected {expected:?} in {line}");
        assert!(
            line.contains("host.toml") && line.contains("plugin["),
            "{line}"
        );
        assert!(!stderr.contains("replica-host running"), "{stderr}");
    }
}

#[test]
fn config_errors_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.toml");
    let text = daemon::config("sqlite://r.db", "")
        .replace("batch_limit = 100", "batch_limit = 100\nbatch_limt = 5");
    std::fs::write(&path, text).unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("host.toml:9:") && stderr.contains("batch_limt"),
        "{stderr}"
    );
    let (code, stderr) = daemon::run_to_exit(&dir.path().join("absent.toml"));
    assert_eq!(code, 2);
    assert!(stderr.contains("absent.toml"), "{stderr}");
}
