//! Shadow decoding and the fixture command of a failing grain, through the
//! real binary with the real `counter` and `counter-v2` plugins, a real
//! SQLite log and real HTTP.
//!
//! `counter` decodes version 1 payloads only; `counter-v2` decodes version
//! 2 and upcasts version 1 (adding `updated_by: null`). So with `counter`
//! in force and `counter-v2` as its shadow, a version 1 snapshot is
//! `fields_added`, a version 2 one `candidate_recovers`, an empty payload
//! (both fail) `candidate_failed`; promoted the other way round, a version
//! 1 snapshot `differs` and a version 2 one `candidate_failed`.

use std::path::Path;
use std::time::{Duration, Instant};

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::payloads::{self, counter};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A config with one Counter entry of `path`, and `extra` lines in it.
fn config(url: &str, path: &str, extra: &str) -> String {
    daemon::config(
        url,
        &format!("[[plugin]]\ngrain_type = \"Counter\"\npath = \"{path}\"\n{extra}\n"),
    )
}

/// The shadow's count of `class`.
fn count(shadow: &Value, class: &str) -> u64 {
    shadow["counts"][class].as_u64().unwrap_or(0)
}

/// Appends snapshots with `write(n)` (n = 0, 1, …) every 150 ms until the
/// Counter shadow's counts satisfy `done`; returns the shadow.
fn feed_until(d: &Daemon, mut write: impl FnMut(u64), done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    for n in 0.. {
        let shadow = d.plugin_entry("Counter")["shadow"].clone();
        if done(&shadow) {
            return shadow;
        }
        assert!(
            Instant::now() < deadline,
            "the shadow never got there: {shadow:#}\nlog:\n{}",
            d.stderr().join("\n")
        );
        write(n);
        std::thread::sleep(Duration::from_millis(150));
    }
    unreachable!()
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn a_shadow_is_classified_counted_never_served_and_follows_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let log = LogWriter::open(&url);
    log.full("Counter", "old-0", 1, counter(1));
    log.full("Counter", "new-0", 1, payloads::counter_v2(5, Some("ops")));
    log.full("Counter", "empty-0", 1, Vec::new());
    let counter_v1 = daemon::copy_plugin(dir.path(), "counter-plugin");
    let counter_v2 = daemon::copy_plugin(dir.path(), "counter-v2-plugin");
    let v1_sha = sha256_of(&dir.path().join(&counter_v1));
    let v2_sha = sha256_of(&dir.path().join(&counter_v2));
    let d = Daemon::start(
        dir.path(),
        &config(&url, &counter_v1, &format!("shadow = \"{counter_v2}\"")),
    );
    d.wait_for("/readyz", WAIT, |r| r.status == 200);

    // Live traffic of every kind until each class has shown up.
    let shadow = feed_until(
        &d,
        |n| {
            let seq = n + 2;
            log.full(
                "Counter",
                &format!("old-{}", n % 3),
                seq,
                counter(seq as i64),
            );
            log.full(
                "Counter",
                "new-0",
                seq,
                payloads::counter_v2(seq as i64, Some("ops")),
            );
        },
        |s| {
            count(s, "fields_added") >= 1
                && count(s, "candidate_recovers") >= 1
                && count(s, "candidate_failed") >= 1
        },
    );
    assert_eq!(shadow["name"], counter_v2.as_str());
    assert_eq!(shadow["sha256"], v2_sha.as_str());
    assert_eq!(shadow["sample"], 1.0);
    assert!(
        shadow["file"].as_str().unwrap().ends_with(&counter_v2),
        "{shadow}"
    );
    assert_eq!(count(&shadow, "differs"), 0, "{shadow:#}");
    let added = &shadow["examples"]["fields_added"][0];
    assert!(added["grain_key"].as_str().unwrap().starts_with("old-"));
    assert_eq!(
        added["differences"],
        json!([".updated_by: served (absent), candidate null"])
    );
    let recovers = &shadow["examples"]["candidate_recovers"][0];
    assert_eq!(recovers["grain_key"], "new-0");
    assert!(
        recovers["served_error"]
            .as_str()
            .unwrap()
            .starts_with("malformed_payload"),
        "{recovers}"
    );
    assert_eq!(recovers["candidate_error"], Value::Null);
    let failed = &shadow["examples"]["candidate_failed"][0];
    assert_eq!(failed["grain_key"], "empty-0");
    assert!(failed["candidate_error"].is_string(), "{failed}");
    assert!(
        shadow["examples"].get("same").is_none(),
        "no examples of same"
    );

    // Served values are the plugin in force's, never the candidate's.
    let old = d.replica("Counter", "old-0").json();
    assert_eq!(old["decoded_by"]["sha256"], v1_sha.as_str());
    assert!(old["state"].get("updated_by").is_none(), "{old}");
    let new = d.replica("Counter", "new-0").json();
    assert_eq!(new["status"], "failing", "{new}");
    assert_eq!(
        new["state"],
        Value::Null,
        "the candidate's value is not served"
    );
    assert_eq!(d.plugin_entry("Counter")["sha256"], v1_sha.as_str());

    // The metric, with its HELP line.
    let metrics = d.get("/metrics").body;
    assert!(metrics.contains("# HELP replica_shadow_decodes_total "));
    for class in ["fields_added", "candidate_recovers", "candidate_failed"] {
        let sample =
            format!("replica_shadow_decodes_total{{grain_type=\"Counter\",result=\"{class}\"}}");
        let n = daemon::metric(&metrics, &sample);
        assert!(n.is_some_and(|n| n >= 1.0), "{sample}: {n:?}\n{metrics}");
    }

    // The operator page shows the same.
    let page = d.get("/").body;
    assert!(page.contains("<table id=\"shadows\">"), "{page}");
    assert!(page.contains("<tr class=\"shadow\"><td>Counter</td>"));
    assert!(page.contains(".updated_by: served (absent), candidate null"));
    assert!(page.contains("<td>candidate_recovers</td><td>new-0</td>"));

    // Promotion: counter-v2 in force, counter as its shadow. The outgoing
    // shadow's counts are logged in one line at the swap.
    std::fs::write(
        dir.path().join("host.toml"),
        config(&url, &counter_v2, &format!("shadow = \"{counter_v1}\"")),
    )
    .unwrap();
    d.signal("HUP");
    let line = d.wait_for_log(&["shadow ended", "promoted=true"], WAIT);
    eprintln!("{line}");
    assert!(line.contains("fields_added="), "{line}");
    assert!(!line.contains("fields_added=0 "), "{line}");
    assert!(line.contains(&v2_sha[..12]), "{line}");
    d.wait_for_replica("Counter", "new-0", WAIT, |r| r["status"] == "ok");
    let shadow = feed_until(
        &d,
        |n| {
            let seq = n + 1000;
            log.full("Counter", "old-0", seq, counter(seq as i64));
            log.full(
                "Counter",
                "new-0",
                seq,
                payloads::counter_v2(seq as i64, Some("ops")),
            );
        },
        |s| {
            // The re-decode after the promotion brings other grains'
            // failures too: wait until new-0's is among the examples.
            s["name"] == counter_v1.as_str()
                && count(s, "differs") >= 1
                && s["examples"]["candidate_failed"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["grain_key"] == "new-0"))
        },
    );
    assert_eq!(count(&shadow, "fields_added"), 0, "{shadow:#}");
    let differs = &shadow["examples"]["differs"][0];
    assert_eq!(
        differs["differences"],
        json!([".updated_by: served null, candidate (absent)"])
    );
    let failed = shadow["examples"]["candidate_failed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["grain_key"] == "new-0")
        .cloned()
        .expect("new-0 fails in the candidate");
    assert_eq!(
        failed["served_error"],
        Value::Null,
        "the served plugin decodes it"
    );
    assert!(
        failed["candidate_error"]
            .as_str()
            .unwrap()
            .starts_with("malformed_payload"),
        "{failed}"
    );
    let new = d.replica("Counter", "new-0").json();
    assert_eq!(new["decoded_by"]["sha256"], v2_sha.as_str());
    assert_eq!(new["state"]["updated_by"], "ops");

    // A bad candidate on SIGHUP is refused like any bad entry.
    std::fs::write(dir.path().join("broken.wasm"), b"not a component").unwrap();
    std::fs::write(
        dir.path().join("host.toml"),
        config(&url, &counter_v2, "shadow = \"broken.wasm\""),
    )
    .unwrap();
    d.signal("HUP");
    let line = d.wait_for_log(&["plugin reload refused", "broken.wasm"], WAIT);
    eprintln!("{line}");
    assert!(
        line.contains("plugin[0]") && line.contains("shadow"),
        "{line}"
    );
    assert!(line.contains("not a WebAssembly file"), "{line}");
    assert_eq!(
        d.plugin_entry("Counter")["shadow"]["name"],
        counter_v1.as_str()
    );

    // Dropping the shadow.
    std::fs::write(dir.path().join("host.toml"), config(&url, &counter_v2, "")).unwrap();
    d.signal("HUP");
    let line = d.wait_for_log(&["shadow ended", "promoted=false"], WAIT);
    assert!(line.contains("differs="), "{line}");
    d.wait_for("/v1/plugins", WAIT, |r| {
        r.json()["plugins"][0]["shadow"].is_null()
    });
    assert_eq!(
        d.plugin_entry("Counter")["sha256"],
        v2_sha.as_str(),
        "the plugin in force stays"
    );
    assert!(d.get("/").body.contains("no shadow candidate configured"));

    // Adding one again, sampling nothing: it is loaded, shown, and counts
    // nothing however much traffic comes.
    std::fs::write(
        dir.path().join("host.toml"),
        config(
            &url,
            &counter_v2,
            &format!("shadow = \"{counter_v1}\"\nshadow_sample = 0.0"),
        ),
    )
    .unwrap();
    d.signal("HUP");
    let added = d
        .wait_for("/v1/plugins", WAIT, |r| {
            r.json()["plugins"][0]["shadow"]["name"] == counter_v1.as_str()
        })
        .json()["plugins"][0]["shadow"]
        .clone();
    assert_eq!(added["sample"], 0.0);
    for seq in 5000..5010 {
        log.full("Counter", "old-1", seq, counter(seq as i64));
    }
    d.wait_for_replica("Counter", "old-1", WAIT, |r| r["sequence"] == 5009);
    let shadow = d.plugin_entry("Counter")["shadow"].clone();
    for class in [
        "same",
        "fields_added",
        "differs",
        "candidate_failed",
        "candidate_recovers",
        "shed",
    ] {
        assert_eq!(count(&shadow, class), 0, "{class}: {shadow:#}");
    }
}

#[test]
fn a_bad_shadow_candidate_stops_startup_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    LogWriter::open(&url);
    let counter_v1 = daemon::copy_plugin(dir.path(), "counter-plugin");
    std::fs::write(dir.path().join("candidate.wasm"), b"not a component").unwrap();
    let path = dir.path().join("host.toml");
    std::fs::write(
        &path,
        config(&url, &counter_v1, "shadow = \"candidate.wasm\""),
    )
    .unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 2, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("candidate.wasm"))
        .unwrap_or_else(|| panic!("no line names the candidate: {stderr}"));
    assert!(
        line.contains("host.toml: plugin[0] (grain_type \"Counter\"): shadow "),
        "{line}"
    );
    assert!(line.contains("not a WebAssembly file"), "{line}");

    // A pin the candidate does not match.
    let v2 = daemon::copy_plugin(dir.path(), "counter-v2-plugin");
    std::fs::write(
        &path,
        config(
            &url,
            &counter_v1,
            &format!("shadow = \"{v2}\"\nshadow_sha256 = \"{}\"", "0".repeat(64)),
        ),
    )
    .unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("shadow ") && stderr.contains("but the config pins 0000"),
        "{stderr}"
    );
}

#[test]
fn a_failing_grains_read_carries_the_fixture_command_that_captures_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let log = LogWriter::open(&url);
    log.full("Counter", "user/42", 1, counter(1));
    log.full(
        "Counter",
        "user/42",
        2,
        payloads::counter_v2(5, Some("ops")),
    );
    let counter_v1 = daemon::copy_plugin(dir.path(), "counter-plugin");
    let d = Daemon::start(dir.path(), &config(&url, &counter_v1, ""));
    let failing = d.wait_for_replica("Counter", "user/42", WAIT, |r| r["status"] == "failing");
    let detail = &failing["status_detail"];
    assert_eq!(detail["sequence"], 2);
    let command = detail["fixture_command"]
        .as_str()
        .unwrap_or_else(|| panic!("no fixture_command: {failing}"));
    let plugin_file = dir.path().join(&counter_v1);
    assert_eq!(
        command,
        format!(
            "replica-host plugin fixture --log {url} --grain Counter/user/42 --sequence 2 --plugin {} --out fixtures",
            plugin_file.display()
        )
    );
    // An ok grain's read has none.
    log.full("Counter", "fine", 1, counter(3));
    let fine = d.wait_for_replica("Counter", "fine", WAIT, |r| r["status"] == "ok");
    assert_eq!(fine["status_detail"], Value::Null);

    // The operator page shows it too.
    let page = d.get("/").body;
    assert!(
        page.contains(&format!("<code class=\"fixture\">{command}</code>")),
        "{page}"
    );

    // Pasted into a shell, it writes the fixture.
    let work = tempfile::tempdir().unwrap();
    let bin_dir = replica_e2e::host_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", command])
        .current_dir(work.path())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let fixtures = work.path().join("fixtures");
    assert_eq!(
        std::fs::read(fixtures.join("user_42_at_2.payload")).unwrap(),
        payloads::counter_v2(5, Some("ops"))
    );
    assert_eq!(
        std::fs::read_to_string(fixtures.join("user_42_at_2.error")).unwrap(),
        "malformed_payload\n"
    );
}

/// Starts a daemon on `grains` version 1 Counter grains, with `extra` in
/// its entry; returns it once ready, and how long the catch-up took.
fn caught_up(dir: &Path, url: &str, extra: &str) -> (Daemon, Duration) {
    let counter_v1 = daemon::copy_plugin(dir, "counter-plugin");
    // Timed from when it serves HTTP (its plugins compiled, the log open)
    // to ready: the catch-up.
    let d = Daemon::start(dir, &config(url, &counter_v1, extra));
    let started = Instant::now();
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    (d, started.elapsed())
}

#[test]
fn under_a_catch_up_shadow_work_is_shed_and_every_snapshot_is_accounted_for() {
    const GRAINS: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let log = LogWriter::open(&url);
    for i in 0..GRAINS {
        log.full("Counter", &format!("c-{i:05}"), 1, counter(i as i64));
    }
    let (plain, without) = caught_up(dir.path(), &url, "");
    drop(plain);
    let counter_v2 = daemon::copy_plugin(dir.path(), "counter-v2-plugin");
    let (d, with) = caught_up(dir.path(), &url, &format!("shadow = \"{counter_v2}\""));
    // Every snapshot the plugin in force decoded is either compared or shed.
    let shadow = d
        .wait_for("/v1/plugins", WAIT, |r| {
            let s = &r.json()["plugins"][0]["shadow"];
            count(s, "fields_added") + count(s, "shed") >= GRAINS
        })
        .json()["plugins"][0]["shadow"]
        .clone();
    let (added, shed) = (count(&shadow, "fields_added"), count(&shadow, "shed"));
    eprintln!(
        "catch-up of {GRAINS} grains: {without:?} without a shadow, {with:?} with one; shadow: {added} fields_added, {shed} shed"
    );
    assert_eq!(added + shed, GRAINS, "{shadow:#}");
    for class in ["same", "differs", "candidate_failed", "candidate_recovers"] {
        assert_eq!(count(&shadow, class), 0, "{class}: {shadow:#}");
    }
    if shed > 0 {
        let example = &shadow["examples"]["shed"][0];
        assert!(example["grain_key"].as_str().unwrap().starts_with("c-"));
    }
    let metrics = d.get("/metrics").body;
    let total: f64 = ["fields_added", "shed"]
        .iter()
        .filter_map(|class| {
            daemon::metric(
                &metrics,
                &format!(
                    "replica_shadow_decodes_total{{grain_type=\"Counter\",result=\"{class}\"}}"
                ),
            )
        })
        .sum();
    assert_eq!(total, GRAINS as f64);
    let served = d.replica("Counter", "c-00042").json();
    assert_eq!(served["state"], json!({"count": 42}));
}
