//! No crash loop: a host that dies while decoding a snapshot (here, killed
//! with SIGKILL while the misbehave plugin loops on it, as a runtime bug or
//! the OOM killer would) starts again; a snapshot that was being decoded at
//! two unclean exits in a row is quarantined at the third start, its grain
//! is `failing` with the reason and keeps its last good state, and every
//! other grain replicates.

use std::path::Path;
use std::time::{Duration, Instant};

use replica_e2e::daemon::{self, Daemon, metric};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando;

const WAIT: Duration = Duration::from_secs(90);

/// Waits until the crash guard's slots file shows a decode of `key` in
/// flight: the state word of a slot is 1 and its names hold the key.
fn wait_until_decoding(dir: &Path, key: &str) {
    let path = dir.join("state/decoding.slots");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(bytes) = std::fs::read(&path) {
            let busy = bytes.chunks_exact(512).skip(1).any(|slot| {
                slot[0] == 1 && slot[96..].windows(key.len()).any(|w| w == key.as_bytes())
            });
            if busy {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{key} never came to be decoded");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL, and wait for the process to be gone.
fn kill(mut d: Daemon) {
    d.signal("KILL");
    let deadline = Instant::now() + WAIT;
    while d.is_running() {
        assert!(Instant::now() < deadline, "SIGKILL did not end the daemon");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_snapshot_that_kills_the_host_twice_is_quarantined_and_the_rest_replicates() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("replication.db").display());
    let misbehave = daemon::copy_plugin(dir.path(), "misbehave-plugin");
    let counter = daemon::copy_plugin(dir.path(), "counter-plugin");
    let log = LogWriter::open(&url);
    // The poison grain had a good state before its poison snapshot.
    log.full("Misbehave", "poison", 1, b"echo:before".to_vec());
    log.full("Misbehave", "poison", 2, b"loop".to_vec());
    for key in ["m1", "m2", "m3"] {
        log.full("Misbehave", key, 1, format!("echo:{key}").into_bytes());
    }
    for i in 0..20 {
        log.full(
            "Counter",
            &format!("c{i}"),
            1,
            orlando::bincode(&orlando::CounterState { count: i }),
        );
    }
    // A time limit long enough that the loop is still running when killed.
    let config = daemon::config(
        &url,
        &format!(
            "[[plugin]]\ngrain_type = \"Misbehave\"\npath = \"{misbehave}\"\ntimeout_ms = 600000\n\n\
             [[plugin]]\ngrain_type = \"Counter\"\npath = \"{counter}\"\n"
        ),
    );

    // First and second start: the host dies while decoding the poison.
    let first = Daemon::start(dir.path(), &config);
    wait_until_decoding(dir.path(), "poison");
    kill(first);
    let second = Daemon::start(dir.path(), &config);
    second.wait_for_log(
        &[
            "the previous run died while decoding this snapshot",
            "poison",
        ],
        WAIT,
    );
    wait_until_decoding(dir.path(), "poison");
    kill(second);

    // Third start: quarantined, and everything else replicates.
    let third = Daemon::start(dir.path(), &config);
    third.wait_for_log(&["snapshot quarantined", "poison"], WAIT);
    let poison = third.wait_for_replica("Misbehave", "poison", WAIT, |r| r["status"] == "failing");
    let reason = poison["status_detail"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("quarantined: the host died twice while decoding this snapshot"),
        "{reason}"
    );
    assert_eq!(poison["status_detail"]["sequence"], 2, "{poison}");
    assert_eq!(poison["sequence"], 1, "keeps its last good state: {poison}");
    assert_eq!(poison["state"], serde_json::json!("before"), "{poison}");
    for key in ["m1", "m2", "m3"] {
        third.wait_for_replica("Misbehave", key, WAIT, |r| r["status"] == "ok");
    }
    for i in 0..20 {
        let r = third.wait_for_replica("Counter", &format!("c{i}"), WAIT, |r| r["status"] == "ok");
        assert_eq!(r["state"]["count"], i);
    }
    third.wait_for("/readyz", WAIT, |r| r.status == 200);
    let metrics = third.get("/metrics").body;
    assert_eq!(
        metric(
            &metrics,
            "replica_quarantined_snapshots{grain_type=\"Misbehave\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "replica_quarantined_snapshots{grain_type=\"Counter\"}"
        ),
        Some(0.0)
    );
    let plugins = third.get("/v1/plugins").json();
    let entry = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["grain_type"] == "Misbehave")
        .unwrap()
        .clone();
    assert_eq!(entry["quarantined_snapshots"], 1, "{entry}");
    let page = third.get("/").body;
    assert!(page.contains("quarantined"), "the operator page shows it");

    // A newer snapshot of the grain is decoded: the grain recovers.
    log.full("Misbehave", "poison", 3, b"echo:after".to_vec());
    let recovered = third.wait_for_replica("Misbehave", "poison", WAIT, |r| r["status"] == "ok");
    assert_eq!(recovered["state"], serde_json::json!("after"));

    // A clean exit keeps the quarantine but forgets nothing else.
    let exited = third.terminate();
    assert_eq!(exited.code, Some(0), "{:?}", exited.stderr);
    assert!(!dir.path().join("state/suspects.json").exists());
    let quarantine = std::fs::read_to_string(dir.path().join("state/quarantine.json")).unwrap();
    assert!(quarantine.contains("\"poison\""), "{quarantine}");
}
