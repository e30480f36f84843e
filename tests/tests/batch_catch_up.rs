//! Batches through the real daemon: the catch-up decodes a page's grains in
//! batches (one fresh instance for up to `[limits] batch_max` snapshots),
//! yet a snapshot that traps, times out or breaks the memory limit fails
//! alone, the newest FullState of each grain is the one applied, Deltas are
//! refused, a failing newest snapshot falls back to the next newest, and
//! every grain's applied sequences only go up, in catch-up and live alike.
//! `batch_max = 1` is one instance per snapshot.

use std::path::Path;
use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::payloads::counter;

const WAIT: Duration = Duration::from_secs(90);

fn url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("replication.db").display())
}

/// Counter and Misbehave, `misbehave` appended to Misbehave's section.
fn config(dir: &Path, misbehave: &str) -> String {
    let counter_plugin = daemon::copy_plugin(dir, "counter-plugin");
    let misbehave_plugin = daemon::copy_plugin(dir, "misbehave-plugin");
    daemon::config(
        &url(dir),
        &format!(
            "[[plugin]]\ngrain_type = \"Counter\"\npath = \"{counter_plugin}\"\n\n\
             [[plugin]]\ngrain_type = \"Misbehave\"\npath = \"{misbehave_plugin}\"\n{misbehave}\n"
        ),
    )
    .replace("max_backoff_ms = 400", "max_backoff_ms = 5000")
}

fn wait_ready(d: &Daemon) {
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
}

#[test]
fn a_poison_snapshot_in_a_catch_up_batch_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(&url(dir.path()));
    let poison = [
        ("g010", "panic", "trap: "),
        (
            "g075",
            "loop",
            "timeout: call exceeded its time limit of 300ms",
        ),
        (
            "g120",
            "grow",
            "out_of_memory: memory limit of 16777216 bytes reached",
        ),
    ];
    for n in 0..150 {
        let key = format!("g{n:03}");
        let payload = match poison.iter().find(|(k, _, _)| *k == key) {
            Some((_, bad, _)) => bad.to_string(),
            None => format!("echo:{key}"),
        };
        writer.full("Misbehave", &key, 1, payload.into_bytes());
    }
    let d = Daemon::start(
        dir.path(),
        &config(dir.path(), "timeout_ms = 300\nmax_memory_mib = 16\n"),
    );
    wait_ready(&d);
    for n in 0..150 {
        let key = format!("g{n:03}");
        let replica = d.replica("Misbehave", &key).json();
        match poison.iter().find(|(k, _, _)| *k == key) {
            Some((_, _, reason)) => {
                assert_eq!(replica["status"], "failing", "{key}: {replica}");
                let got = replica["status_detail"]["reason"].as_str().unwrap();
                assert!(got.starts_with(reason), "{key}: {got}");
            }
            None => {
                assert_eq!(replica["status"], "ok", "{key}: {replica}");
                assert_eq!(replica["state"], key.as_str(), "{key}: {replica}");
            }
        }
    }
    assert!(d.terminate().code == Some(0));
}

/// What each `remember:` grain's replica saw: how many payloads its
/// instance had been handed when it decoded the grain's.
fn remembered(batch_max: Option<usize>) -> Vec<usize> {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(&url(dir.path()));
    for n in 0..40 {
        writer.full(
            "Misbehave",
            &format!("r{n:02}"),
            1,
            format!("remember:r{n:02}").into_bytes(),
        );
    }
    let extra = batch_max.map_or(String::new(), |b| format!("batch_max = {b}\n"));
    let d = Daemon::start(dir.path(), &config(dir.path(), &extra));
    wait_ready(&d);
    let seen = (0..40)
        .map(|n| {
            let replica = d.replica("Misbehave", &format!("r{n:02}")).json();
            let seen = replica["state"].as_array().unwrap().clone();
            assert_eq!(seen.last().unwrap(), &format!("r{n:02}"));
            seen.len()
        })
        .collect();
    d.terminate();
    seen
}

#[test]
fn batch_max_one_is_an_instance_per_snapshot_and_the_default_shares_one_per_batch() {
    // The trade, documented in README.md: a plugin that keeps state across
    // calls sees earlier snapshots of its batch.
    let shared = remembered(None);
    assert!(shared.iter().any(|&n| n > 1), "{shared:?}");
    assert!(shared.iter().all(|&n| n <= 64), "{shared:?}");
    // `batch_max = 1`: each snapshot alone in its instance.
    assert_eq!(remembered(Some(1)), vec![1; 40]);
}

#[test]
fn newest_full_state_deltas_fallback_and_order_hold_under_batches() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(&url(dir.path()));
    // Many grains so that the interesting ones share batches with others.
    for n in 0..200 {
        writer.full("Counter", &format!("c{n:03}"), 1, counter(n));
    }
    // Several FullStates: only the newest is applied.
    for s in 1..=5 {
        writer.full("Counter", "many", s, counter(s as i64 * 10));
    }
    // A Delta after the newest FullState: applied 2, behind at 3.
    writer.full("Counter", "delta", 1, counter(1));
    writer.full("Counter", "delta", 2, counter(2));
    writer.delta("Counter", "delta", 3);
    // The newest snapshot traps: the next newest is applied, failing at 2.
    writer.full("Misbehave", "fallback", 1, b"echo:one".to_vec());
    writer.full("Misbehave", "fallback", 2, b"panic".to_vec());
    for n in 0..100 {
        writer.full(
            "Misbehave",
            &format!("m{n:03}"),
            1,
            format!("echo:m{n:03}").into_bytes(),
        );
    }
    let d = Daemon::start(dir.path(), &config(dir.path(), ""));
    wait_ready(&d);

    let many = d.replica("Counter", "many").json();
    assert_eq!(
        (many["sequence"].as_u64(), many["state"]["count"].as_i64()),
        (Some(5), Some(50))
    );
    let delta = d.replica("Counter", "delta").json();
    assert_eq!(delta["sequence"], 2);
    assert_eq!(delta["status"], "behind", "{delta}");
    let fallback = d.replica("Misbehave", "fallback").json();
    assert_eq!(fallback["sequence"], 1);
    assert_eq!(fallback["state"], "one");
    assert_eq!(fallback["status"], "failing", "{fallback}");
    assert_eq!(fallback["status_detail"]["sequence"], 2);

    // Live, after the catch-up: new snapshots keep their order per grain.
    for s in 6..=10 {
        writer.full("Counter", "many", s, counter(s as i64 * 10));
        writer.full("Counter", "c007", s, counter(s as i64));
    }
    writer.full("Misbehave", "fallback", 3, b"echo:three".to_vec());
    d.wait_for_replica("Counter", "many", WAIT, |r| r["sequence"] == 10);
    d.wait_for_replica("Counter", "c007", WAIT, |r| r["sequence"] == 10);
    let fallback = d.wait_for_replica("Misbehave", "fallback", WAIT, |r| r["sequence"] == 3);
    assert_eq!(fallback["status"], "ok");

    let applied = d.applied_sequences(None);
    assert_eq!(
        applied["many"][0], 5,
        "the newest FullState first: {:?}",
        applied["many"]
    );
    for (key, sequences) in &applied {
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key} applied out of order: {sequences:?}"
        );
    }
    assert_eq!(applied.get("c000"), Some(&vec![1]), "applied once");
    assert!(d.terminate().code == Some(0));
}
