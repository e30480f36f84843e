//! A grain's state type changes while the host keeps serving: the real
//! `replica-host run`, a real SQLite log, the real `counter` (state v1) and
//! `counter-v2` (v2, reading v1 upcast) components.
//!
//! - SIGHUP with a good plugin: every replica is decoded again by the new
//!   plugin (`decoded_by`, the v2 field), a reader sees only 200 answers
//!   throughout, and a grain failing under v1 recovers;
//! - SIGHUP with a broken plugin: nothing changes, one line names the file
//!   and entry, and replication goes on;
//! - `POST /v1/admin/reload` with no token, a wrong token and the right one;
//!   removing a `[[plugin]]` entry drops its replicas, adding it back
//!   replicates them again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, CounterState, CounterStateV2};

const WAIT: Duration = Duration::from_secs(60);
const GRAINS: u64 = 200;

/// A log of `GRAINS` counters written as state v1, plus `c-new`, whose
/// newest snapshot is already v2: v1 cannot read it, so it is failing.
fn write_log(dir: &Path) -> (String, LogWriter) {
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let writer = LogWriter::open(&url);
    for n in 0..GRAINS {
        writer.full(
            "Counter",
            &format!("c-{n}"),
            1,
            orlando::bincode(&CounterState { count: n as i64 }),
        );
    }
    writer.full(
        "Counter",
        "c-new",
        1,
        orlando::bincode(&CounterState { count: 1 }),
    );
    writer.full(
        "Counter",
        "c-new",
        2,
        orlando::bincode(&CounterStateV2 {
            count: 2,
            updated_by: Some("alice".into()),
        }),
    );
    (url, writer)
}

/// A config with one `[[plugin]]` for Counter at `path`, plus `extra`.
fn config(url: &str, path: &str, extra: &str) -> String {
    daemon::config(
        url,
        &format!("[[plugin]]\ngrain_type = \"Counter\"\npath = \"{path}\"\n\n{extra}"),
    )
}

/// Reads replicas in a loop until stopped; returns every non-200 answer.
fn reader(d: &Daemon, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    let addr = d.addr;
    std::thread::spawn(move || {
        let mut reads = 0;
        let mut bad = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let path = daemon::replica_path("Counter", &format!("c-{}", n % GRAINS));
            match replica_e2e::http::get(addr, &path) {
                Ok(r) if r.status == 200 => {}
                Ok(r) => bad.push(format!("{path}: {} {}", r.status, r.body)),
                Err(e) => bad.push(format!("{path}: {e}")),
            }
            reads += 1;
            n += 7;
        }
        (reads, bad)
    })
}

#[test]
fn sighup_swaps_in_a_new_state_type_and_every_replica_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _writer) = write_log(dir.path());
    let v1 = daemon::copy_plugin(dir.path(), "counter-plugin");
    let d = Daemon::start(dir.path(), &config(&url, &v1, ""));
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    let failing = d.wait_for_replica("Counter", "c-new", WAIT, |r| r["status"] == "failing");
    assert_eq!(failing["sequence"], 1);
    assert_eq!(
        failing["state"]["count"], 1,
        "the last good state is served"
    );
    let before = d.replica("Counter", "c-5").json();
    assert_eq!(before["decoded_by"]["schema_version"], "1");
    assert_eq!(before["decoded_by"]["plugin"], v1.as_str());
    assert!(before["state"].get("updated_by").is_none());
    let loaded_before = d.plugin_entry("Counter")["loaded_at_millis"]
        .as_i64()
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reading = reader(&d, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(200));
    let v2 = daemon::copy_plugin(dir.path(), "counter-v2-plugin");
    std::fs::write(dir.path().join("host.toml"), config(&url, &v2, "")).unwrap();
    d.signal("HUP");

    let entry = d.wait_for("/v1/plugins", WAIT, |r| {
        let p = &r.json()["plugins"][0];
        p["schema_version"] == "2" && p["redecode"]["complete"] == true
    });
    let entry = &entry.json()["plugins"][0];
    assert_eq!(entry["redecode"]["done"], GRAINS + 1);
    assert_eq!(entry["redecode"]["total"], GRAINS + 1);
    assert_eq!(entry["state_versions"], serde_json::json!(["2", "1"]));
    assert!(entry["loaded_at_millis"].as_i64().unwrap() >= loaded_before);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (reads, bad) = reading.join().unwrap();
    assert!(reads > 10, "the reader read only {reads} times");
    assert!(bad.is_empty(), "answers other than 200: {bad:?}");

    for n in 0..GRAINS {
        let replica = d.replica("Counter", &format!("c-{n}")).json();
        assert_eq!(replica["status"], "ok", "{replica}");
        assert_eq!(replica["sequence"], 1, "never backwards: {replica}");
        assert_eq!(replica["decoded_by"]["schema_version"], "2", "{replica}");
        assert_eq!(replica["decoded_by"]["plugin"], v2.as_str());
        // The v1 payload upcast: the v2 field, empty.
        assert_eq!(replica["state"]["count"], n, "{replica}");
        assert!(replica["state"]["updated_by"].is_null(), "{replica}");
        assert!(replica["state"].get("updated_by").is_some(), "{replica}");
    }
    let recovered = d.replica("Counter", "c-new").json();
    assert_eq!(recovered["status"], "ok", "{recovered}");
    assert_eq!(recovered["sequence"], 2);
    assert_eq!(recovered["state"]["updated_by"], "alice");

    let metrics = d.get("/metrics").body;
    assert_eq!(
        daemon::metric(&metrics, "replica_plugin_reloads_total{result=\"applied\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        daemon::metric(
            &metrics,
            "replica_replicas{grain_type=\"Counter\",status=\"ok\"}"
        ),
        Some((GRAINS + 1) as f64)
    );
    d.wait_for_log(&["plugins reloaded", "changed=[\"Counter\"]"], WAIT);
}

#[test]
fn a_broken_plugin_on_sighup_changes_nothing_and_replication_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (url, writer) = write_log(dir.path());
    let v1 = daemon::copy_plugin(dir.path(), "counter-plugin");
    let d = Daemon::start(dir.path(), &config(&url, &v1, ""));
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    let sha_before = d.plugin_entry("Counter")["sha256"].clone();

    std::fs::write(dir.path().join("broken.wasm"), b"not a component").unwrap();
    // First a config file that does not parse, then one naming a broken plugin.
    std::fs::write(dir.path().join("host.toml"), "cluster_id = [[[").unwrap();
    d.signal("HUP");
    let line = d.wait_for_log(&["plugin reload refused"], WAIT);
    assert!(line.contains("host.toml"), "{line}");
    std::fs::write(
        dir.path().join("host.toml"),
        config(&url, "broken.wasm", ""),
    )
    .unwrap();
    d.signal("HUP");
    let line = d.wait_for_log(&["plugin reload refused", "broken.wasm"], WAIT);
    assert!(line.contains("plugin[0]"), "names the entry: {line}");
    assert!(line.contains("not a WebAssembly file"), "says why: {line}");

    assert_eq!(
        d.plugin_entry("Counter")["sha256"],
        sha_before,
        "the old plugin stays"
    );
    writer.full(
        "Counter",
        "c-3",
        2,
        orlando::bincode(&CounterState { count: 33 }),
    );
    let replica = d.wait_for_replica("Counter", "c-3", WAIT, |r| r["sequence"] == 2);
    assert_eq!(replica["state"]["count"], 33, "replication goes on");
    assert_eq!(replica["decoded_by"]["schema_version"], "1");
    let metrics = d.get("/metrics").body;
    assert_eq!(
        daemon::metric(&metrics, "replica_plugin_reloads_total{result=\"refused\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        daemon::metric(&metrics, "replica_plugin_reloads_total{result=\"applied\"}"),
        None
    );
}

#[test]
fn the_admin_endpoint_reloads_with_the_right_token_only() {
    const TOKEN: &str = "admin-token-4242";
    let dir = tempfile::tempdir().unwrap();
    let (url, _writer) = write_log(dir.path());
    let v1 = daemon::copy_plugin(dir.path(), "counter-plugin");
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let admin = "[admin]\ntoken_file = \"admin.token\"\n";
    let d = Daemon::start(dir.path(), &config(&url, &v1, admin));
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    // Reads need no token: only the admin endpoints are guarded.
    assert_eq!(d.replica("Counter", "c-1").status, 200);

    let none = d.post_with("/v1/admin/reload", &[]);
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(none.header("WWW-Authenticate").is_some());
    assert_eq!(none.json()["error"], "unauthorized");
    let wrong = d.post_with("/v1/admin/reload", &[("Authorization", "Bearer nope")]);
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(!wrong.body.contains('\n'));
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let same = d.post_with("/v1/admin/reload", &auth);
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(same.json()["result"], "unchanged");

    // Remove the entry: the type's replicas are gone.
    std::fs::write(dir.path().join("host.toml"), daemon::config(&url, admin)).unwrap();
    let removed = d.post_with("/v1/admin/reload", &auth).json();
    assert_eq!(removed["result"], "applied", "{removed}");
    assert_eq!(removed["removed"], serde_json::json!(["Counter"]));
    assert_eq!(d.replica("Counter", "c-1").status, 404);
    assert!(d.plugin_entry("Counter").is_null());
    // The series of the removed grain type go with it.
    let metrics = d.get("/metrics").body;
    assert_eq!(
        daemon::metric(
            &metrics,
            "replica_replicas{grain_type=\"Counter\",status=\"ok\"}"
        ),
        None,
        "{metrics}"
    );

    // Add it back, as v2: it replicates again from the log.
    let v2 = daemon::copy_plugin(dir.path(), "counter-v2-plugin");
    std::fs::write(dir.path().join("host.toml"), config(&url, &v2, admin)).unwrap();
    let added = d.post_with("/v1/admin/reload", &auth).json();
    assert_eq!(added["added"], serde_json::json!(["Counter"]), "{added}");
    // Until it has caught up, a grain it will hold is not "unknown".
    let early = d.replica("Counter", "c-7");
    assert!(early.status == 503 || early.status == 200, "{early:?}");
    let replica = d.wait_for_replica("Counter", "c-new", WAIT, |r| r["sequence"] == 2);
    assert_eq!(replica["state"]["updated_by"], "alice");
    assert_eq!(replica["decoded_by"]["schema_version"], "2");

    // A refused reload answers 422 with the one line, and nothing changes.
    std::fs::write(
        dir.path().join("host.toml"),
        config(&url, "missing.wasm", admin),
    )
    .unwrap();
    let refused = d.post_with("/v1/admin/reload", &auth);
    assert_eq!(refused.status, 422, "{}", refused.body);
    let body = refused.json();
    assert_eq!(body["result"], "refused");
    assert!(
        body["error"].as_str().unwrap().contains("missing.wasm"),
        "{body}"
    );
    assert_eq!(d.plugin_entry("Counter")["schema_version"], "2");
    assert!(
        !d.stderr().iter().any(|l| l.contains(TOKEN)),
        "the token never reaches the log"
    );
}

/// The fixtures the README's walk-through runs stay true.
#[test]
fn counter_v2_passes_its_committed_fixtures_and_v1_does_not() {
    let fixtures = replica_e2e::workspace().join("plugins/counter-v2/fixtures");
    let fixtures = fixtures.to_str().unwrap();
    let v2 = replica_e2e::plugin("counter-v2-plugin");
    let (code, stdout, stderr) =
        replica_e2e::run_host(&["plugin", "test", v2.to_str().unwrap(), fixtures], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.ends_with("3 cases: 3 passed, 0 failed\n"),
        "{stdout}"
    );
    let v1 = replica_e2e::plugin("counter-plugin");
    let (code, stdout, _) =
        replica_e2e::run_host(&["plugin", "test", v1.to_str().unwrap(), fixtures], &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("FAIL v1:") && stdout.contains("FAIL v2:"),
        "{stdout}"
    );
}
