//! `[store] checkpoint` through the real daemon: a restart serves the
//! replicas of the checkpoint and decodes only what the log changed since;
//! a corrupt or truncated checkpoint, or one of another cluster or log, is
//! one warning line and a full catch-up, never served; a SIGKILL at any
//! moment loses nothing; replicas another plugin build decoded are served,
//! then decoded again in the background.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::payloads::counter;

const WAIT: Duration = Duration::from_secs(90);
const GRAINS: i64 = 300;

fn url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("replication.db").display())
}

/// A config with the Counter plugin (`plugin_file` in `dir`) and a checkpoint.
fn config(dir: &Path, plugin_file: &str, cluster_id: &str) -> String {
    daemon::config(
        &url(dir),
        &format!("[[plugin]]\ngrain_type = \"Counter\"\npath = \"{plugin_file}\"\n"),
    )
    .replace(
        "cluster_id = \"test-secondary\"",
        &format!("cluster_id = \"{cluster_id}\""),
    )
    .replace(
        "[http]",
        "[store]\ncheckpoint = \"replicas.ckpt\"\n\n[http]",
    )
}

fn fill(writer: &LogWriter, sequence: u64) {
    for n in 0..GRAINS {
        writer.full(
            "Counter",
            &format!("c{n:03}"),
            sequence,
            counter(n * 10 + sequence as i64),
        );
    }
}

fn calls(d: &Daemon) -> u64 {
    d.get("/v1/plugins").json()["plugins"][0]["calls"]
        .as_u64()
        .unwrap()
}

/// Every grain's (sequence, count) as served.
fn served(d: &Daemon) -> BTreeMap<String, (u64, i64)> {
    (0..GRAINS)
        .map(|n| {
            let key = format!("c{n:03}");
            let r = d.replica("Counter", &key).json();
            (
                key,
                (
                    r["sequence"].as_u64().unwrap(),
                    r["state"]["count"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

fn expected(sequence: u64) -> BTreeMap<String, (u64, i64)> {
    (0..GRAINS)
        .map(|n| (format!("c{n:03}"), (sequence, n * 10 + sequence as i64)))
        .collect()
}

fn start_ready(dir: &Path, text: &str) -> Daemon {
    let d = Daemon::start(dir, text);
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    d
}

fn warnings(d: &Daemon) -> Vec<String> {
    d.stderr()
        .into_iter()
        .filter(|l| l.contains("store.checkpoint"))
        .collect()
}

#[test]
fn a_restart_serves_the_checkpoint_and_decodes_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(&url(dir.path()));
    fill(&writer, 1);
    let plugin = daemon::copy_plugin(dir.path(), "counter-plugin");
    let text = config(dir.path(), &plugin, "eu-west");
    let d = start_ready(dir.path(), &text);
    assert_eq!(calls(&d), GRAINS as u64, "a cold start decodes every grain");
    assert!(d.terminate().code == Some(0));
    assert!(dir.path().join("replicas.ckpt").exists());

    // Nothing changed: served at once, nothing decoded.
    let d = start_ready(dir.path(), &text);
    assert_eq!(served(&d), expected(1));
    assert_eq!(calls(&d), 0, "nothing decoded again");
    assert!(
        d.stderr()
            .iter()
            .any(|l| l.contains("checkpoint loaded") && l.contains("replicas=300")),
        "{:#?}",
        d.stderr()
    );
    assert!(warnings(&d).is_empty(), "{:#?}", warnings(&d));
    assert!(d.terminate().code == Some(0));

    // Ten grains changed while down: only they are decoded.
    for n in 0..10 {
        writer.full("Counter", &format!("c{n:03}"), 2, counter(n * 10 + 2));
    }
    let d = start_ready(dir.path(), &text);
    let mut want = expected(1);
    for n in 0..10 {
        want.insert(format!("c{n:03}"), (2, n * 10 + 2));
    }
    assert_eq!(served(&d), want);
    assert_eq!(calls(&d), 10);
    d.terminate();
}

#[test]
fn reads_keep_answering_during_a_warm_start_and_nothing_goes_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(&url(dir.path()));
    fill(&writer, 1);
    let plugin = daemon::copy_plugin(dir.path(), "counter-plugin");
    let text = config(dir.path(), &plugin, "eu-west");
    start_ready(dir.path(), &text).terminate();
    fill(&writer, 2);
    // The first read after start already answers from the checkpoint.
    let d = Daemon::start(dir.path(), &text);
    let mut last = 0;
    loop {
        let r = d.replica("Counter", "c299");
        assert_eq!(r.status, 200, "{}", r.body);
        let sequence = r.json()["sequence"].as_u64().unwrap();
        assert!(sequence >= last, "went back from {last} to {sequence}");
        last = sequence;
        if sequence == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    assert_eq!(served(&d), expected(2));
    d.terminate();
}

/// Damages the checkpoint with `damage`, restarts, and checks the damage
/// was reported in one line, nothing of the file served, and every grain
/// decoded again from the log.
fn damaged_checkpoint_is_refused(damage: impl FnOnce(&Path), says: &str) {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(&url(dir.path()));
    fill(&writer, 1);
    let plugin = daemon::copy_plugin(dir.path(), "counter-plugin");
    let text = config(dir.path(), &plugin, "eu-west");
    start_ready(dir.path(), &text).terminate();
    damage(&dir.path().join("replicas.ckpt"));
    let d = start_ready(dir.path(), &text);
    let lines = warnings(&d);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("host.toml: store.checkpoint:"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(says), "{}", lines[0]);
    assert!(lines[0].contains("catching up in full"), "{}", lines[0]);
    assert_eq!(calls(&d), GRAINS as u64, "a full catch-up");
    assert_eq!(served(&d), expected(1));
    assert!(d.terminate().code == Some(0));
    // The next start has a good checkpoint again.
    let d = start_ready(dir.path(), &text);
    assert_eq!(calls(&d), 0);
    assert!(warnings(&d).is_empty());
    d.terminate();
}

#[test]
fn a_truncated_checkpoint_is_refused_in_one_line() {
    damaged_checkpoint_is_refused(
        |path| {
            let len = std::fs::metadata(path).unwrap().len();
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(len / 2).unwrap();
        },
        "replicas.ckpt",
    );
}

#[test]
fn a_checkpoint_of_garbage_is_refused_in_one_line() {
    damaged_checkpoint_is_refused(
        |path| std::fs::write(path, vec![0x5a; 64 * 1024]).unwrap(),
        "replicas.ckpt",
    );
}

#[test]
fn a_changed_value_is_caught_by_its_checksum_and_never_served() {
    damaged_checkpoint_is_refused(
        |path| {
            // A value changed behind the host's back: the count of c007
            // (state bytes end in the count's varint) becomes another one.
            let url = format!("sqlite://{}", path.display());
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                let changed = sqlx::query(
                    "UPDATE replicas SET state = substr(state, 1, length(state) - 1) || x'02'
                     WHERE grain_key = 'c007'",
                )
                .execute(&pool)
                .await
                .unwrap();
                assert_eq!(changed.rows_affected(), 1);
                pool.close().await;
            });
        },
        "c007: checksum mismatch",
    );
}

#[test]
fn a_checkpoint_of_another_cluster_or_log_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(&url(dir.path()));
    fill(&writer, 1);
    let plugin = daemon::copy_plugin(dir.path(), "counter-plugin");
    start_ready(dir.path(), &config(dir.path(), &plugin, "eu-west")).terminate();
    let d = start_ready(dir.path(), &config(dir.path(), &plugin, "us-east"));
    let lines = warnings(&d);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("a checkpoint of cluster_id \"eu-west\", not \"us-east\""),
        "{}",
        lines[0]
    );
    assert_eq!(calls(&d), GRAINS as u64);
    d.terminate();

    // Another log: the same grains in another file.
    let other = format!("sqlite://{}", dir.path().join("other.db").display());
    fill(&LogWriter::open(&other), 1);
    let text = config(dir.path(), &plugin, "us-east").replace("replication.db", "other.db");
    let d = start_ready(dir.path(), &text);
    let lines = warnings(&d);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("a checkpoint of log sqlite://"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("replication.db, not sqlite://"),
        "{}",
        lines[0]
    );
    assert_eq!(calls(&d), GRAINS as u64);
    assert_eq!(served(&d), expected(1));
    d.terminate();
}

#[test]
fn replicas_of_another_plugin_build_are_served_then_decoded_again() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(&url(dir.path()));
    fill(&writer, 1);
    let plugin = daemon::copy_plugin(dir.path(), "counter-plugin");
    start_ready(dir.path(), &config(dir.path(), &plugin, "eu-west")).terminate();
    // Another build: the same component with a custom section appended.
    let mut bytes = std::fs::read(dir.path().join(&plugin)).unwrap();
    let name = b"replica-test-build";
    bytes.extend_from_slice(&[0, (name.len() + 2) as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.push(2);
    std::fs::write(dir.path().join("counter-v2.wasm"), &bytes).unwrap();
    let d = Daemon::start(
        dir.path(),
        &config(dir.path(), "counter-v2.wasm", "eu-west"),
    );
    // Served from the first read (by either build: the re-decode may
    // already have reached it), never 503 or missing.
    let first = d.replica("Counter", "c000");
    assert_eq!(first.status, 200, "{}", first.body);
    let by = first.json()["decoded_by"]["plugin"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(by == plugin || by == "counter-v2.wasm", "{by}");
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    d.wait_for_log(&["decoding them again in the background"], WAIT);
    for n in 0..GRAINS {
        d.wait_for_replica("Counter", &format!("c{n:03}"), WAIT, |r| {
            r["decoded_by"]["plugin"] == "counter-v2.wasm"
        });
    }
    assert_eq!(served(&d), expected(1));
    assert_eq!(calls(&d), GRAINS as u64, "every replica decoded again once");
    d.terminate();
}

#[test]
fn a_sigkill_at_any_moment_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(&url(dir.path()));
    fill(&writer, 1);
    let plugin = daemon::copy_plugin(dir.path(), "counter-plugin");
    let text = config(dir.path(), &plugin, "eu-west");
    let mut sequence = 1;
    for round in 0..4u64 {
        let mut d = Daemon::start(dir.path(), &text);
        // Appends while it catches up and writes its checkpoint.
        sequence += 1;
        fill(&writer, sequence);
        // Around the checkpoint's flushes (every 5 s).
        std::thread::sleep(Duration::from_millis(4_800 + 300 * round));
        d.signal("KILL");
        while d.is_running() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let d = start_ready(dir.path(), &text);
    d.wait_for_replica("Counter", "c299", WAIT, |r| r["sequence"] == sequence);
    assert_eq!(served(&d), expected(sequence));
    assert!(warnings(&d).is_empty(), "{:#?}", warnings(&d));
    d.terminate();
}

#[test]
fn a_sigkill_inside_a_checkpoint_write_resumes_from_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(&url(dir.path()));
    fill(&writer, 1);
    let plugin = daemon::copy_plugin(dir.path(), "counter-plugin");
    let text = config(dir.path(), &plugin, "eu-west");
    // The last consistent checkpoint: every grain at sequence 1.
    assert!(start_ready(dir.path(), &text).terminate().code == Some(0));

    // Every grain moves on to sequence 2. The test-only hook holds the
    // next checkpoint write half-way through its transaction (it creates
    // `marker` there), and the host is killed inside it.
    let marker = dir.path().join("inside-a-checkpoint-write");
    let mut d = Daemon::start_with_env(
        dir.path(),
        &text,
        &[(
            "REPLICA_HOST_TEST_CHECKPOINT_PAUSE",
            marker.to_str().unwrap(),
        )],
    );
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    fill(&writer, 2);
    let started = std::time::Instant::now();
    while !marker.exists() {
        assert!(started.elapsed() < WAIT, "no checkpoint write began");
        std::thread::sleep(Duration::from_millis(10));
    }
    d.signal("KILL");
    while d.is_running() {
        std::thread::sleep(Duration::from_millis(10));
    }

    // On disk: the last commit, whole; nothing of the write the kill cut.
    let on_disk = {
        let url = format!("sqlite://{}", dir.path().join("replicas.ckpt").display());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            let row: (i64, i64, i64) =
                sqlx::query_as("SELECT count(*), min(sequence), max(sequence) FROM replicas")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            pool.close().await;
            row
        })
    };
    assert_eq!(on_disk, (GRAINS, 1, 1));

    // The restart resumes from it: loaded without a warning, every grain
    // the log changed since decoded again, nothing lost.
    let d = start_ready(dir.path(), &text);
    assert!(
        d.stderr()
            .iter()
            .any(|l| l.contains("checkpoint loaded") && l.contains("replicas=300")),
        "{:#?}",
        d.stderr()
    );
    assert!(warnings(&d).is_empty(), "{:#?}", warnings(&d));
    assert_eq!(served(&d), expected(2));
    assert_eq!(calls(&d), GRAINS as u64);
    assert!(d.terminate().code == Some(0));
}
