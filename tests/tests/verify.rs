//! Proof that a host serves what the log holds, through real parts: a real
//! SQLite file or PostgreSQL log, the real Counter plugin, the daemon's real
//! HTTP server, and the real `replica-host verify` binary.
//!
//! - `verify` exits 0 on a healthy host; after faults injected into the
//!   daemon's store through the library (a replica removed, one older than
//!   the log, one decoded by another build, one the log never had) and with
//!   a grain type the host has no plugin for, it exits 1 and names them;
//!   errors are exit 2 in one line naming the URL or file, never the token.
//! - Continuous anti-entropy reads a removed or older replica again, and
//!   counts it in `replica_verify_mismatches_total`.
//! - The listing is 503 `catching_up` during catch-up; the bulk forms page
//!   through every replica (`fields=sequence`, and NDJSON).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use replica_e2e::daemon::{self, Daemon, metric};
use replica_e2e::in_process::InProcess;
use replica_e2e::log_writer::LogWriter;
use replica_e2e::payloads::counter;
use replica_e2e::pg;
use replica_host::DecodedBy;
use replica_host::State;
use replica_host::store::{ReplicaStatus, Snapshot};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "verify-token-not-to-be-printed";

/// `c-000` … : every third grain has two snapshots, the rest one.
fn write_counters(writer: &LogWriter, grains: usize) {
    for n in 0..grains {
        let key = format!("c-{n:03}");
        writer.full("Counter", &key, 1, counter(n as i64));
        if n.is_multiple_of(3) {
            writer.full("Counter", &key, 2, counter(n as i64 + 1000));
        }
    }
}

/// A host config with access control (a `read` token) and the Counter
/// plugin only.
fn host_config(dir: &Path, log_url: &str, consumer_extra: &str) -> String {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(TOKEN));
    std::fs::write(dir.join("tokens"), format!("{hash} read metrics\n")).unwrap();
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let plugin = daemon::copy_plugin(dir, "counter-plugin");
    format!(
        "cluster_id = \"verify\"\n\n[log]\nurl = \"{log_url}\"\n\n[consumer]\npoll_interval_ms = 50\n{consumer_extra}\n\
         [http]\nlisten = \"127.0.0.1:0\"\ndrain_ms = 0\nauth = {{ token_files = [\"tokens\"] }}\n\n\
         [[plugin]]\ngrain_type = \"Counter\"\npath = \"{plugin}\"\n"
    )
}

/// The `Authorization` header the test token sends.
const BEARER: (&str, &str) = ("Authorization", "Bearer verify-token-not-to-be-printed");

fn wait_ready(host: &InProcess) {
    host.wait_for("/readyz", &[], WAIT, |r| r.status == 200);
}

/// Runs `replica-host verify`; returns (exit status, stdout, stderr).
fn verify(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(replica_e2e::host_bin())
        .arg("verify")
        .args(args)
        .output()
        .expect("run replica-host verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line of the report for one finding of one grain type's section,
/// e.g. `  missing: 1 (e.g. …)`.
fn finding_line<'a>(stdout: &'a str, grain_type: &str, finding: &str) -> Option<&'a str> {
    let mut in_section = false;
    for line in stdout.lines() {
        if !line.starts_with("  ") {
            in_section = line.starts_with(&format!("{grain_type}:"))
                || line.starts_with(&format!("{grain_type} ("));
        } else if in_section && line.trim_start().starts_with(&format!("{finding}:")) {
            return Some(line);
        }
    }
    None
}

fn state(n: i64) -> State {
    State::from_serialize(&serde_json::json!({ "count": n })).unwrap()
}

fn snapshot(sequence: u64, decoded_by: Option<Arc<DecodedBy>>) -> Snapshot {
    Snapshot {
        state: state(-1),
        sequence,
        timestamp_millis: 0,
        source_cluster: "fault".into(),
        decoded_by,
    }
}

#[test]
fn verify_passes_a_healthy_host_and_names_every_injected_fault() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let writer = LogWriter::open(&url);
    write_counters(&writer, 300);
    // A grain type the host has no plugin for: never read.
    for n in 0..3 {
        writer.full("Orphan", &format!("o-{n}"), 1, counter(n));
    }
    let host = InProcess::start(dir.path(), &host_config(dir.path(), &url, ""));
    wait_ready(&host);
    let host_url = host.url();
    let token_file = dir.path().join("token");
    let token_file = token_file.to_str().unwrap();
    let base = [
        "--log",
        url.as_str(),
        "--host",
        host_url.as_str(),
        "--token-file",
        token_file,
        "--recheck-ms",
        "200",
    ];

    // Healthy (one grain type): exit 0, every grain matched.
    let (code, stdout, stderr) = verify(&[&base[..], &["--grain-type", "Counter"]].concat());
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Counter: 300 grains in the log, 300 replicas on the host, 300 match"),
        "{stdout}"
    );
    assert!(
        stdout.contains("total: 300 grains in the log, 300 match"),
        "{stdout}"
    );

    // Faults injected into the daemon's store through the library.
    let store = &host.store;
    assert!(store.remove("Counter", "c-017").is_some());
    let held = store.remove("Counter", "c-018").unwrap();
    assert_eq!(held.sequence, 2);
    store
        .apply(
            "Counter",
            "c-018",
            snapshot(1, held.decoded_by.clone()),
            ReplicaStatus::Ok,
        )
        .unwrap();
    let other_build = Arc::new(DecodedBy {
        plugin: "counter-old.wasm".into(),
        sha256: "0".repeat(64),
        schema_version: "1".into(),
    });
    let c019 = store.get("Counter", "c-019").unwrap();
    store
        .apply(
            "Counter",
            "c-019",
            snapshot(c019.sequence, Some(other_build)),
            ReplicaStatus::Ok,
        )
        .unwrap();
    store
        .apply(
            "Counter",
            "ghost",
            snapshot(5, held.decoded_by.clone()),
            ReplicaStatus::Ok,
        )
        .unwrap();

    let (code, stdout, stderr) = verify(&base);
    eprintln!("{stdout}");
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let line = |t: &str, f: &str| {
        finding_line(&stdout, t, f).unwrap_or_else(|| panic!("no {t} {f} line:\n{stdout}"))
    };
    assert!(
        line("Counter", "missing").contains("missing: 1 (e.g. c-017 (log 1, host 0))"),
        "{stdout}"
    );
    assert!(
        line("Counter", "behind").contains("behind: 1 (e.g. c-018 (log 2, host 1))"),
        "{stdout}"
    );
    assert!(
        line("Counter", "decoded by another plugin build").contains(": 1 (e.g. c-019"),
        "{stdout}"
    );
    assert!(
        line("Counter", "unknown to the log").contains(": 1 (e.g. ghost (log 0, host 5))"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Orphan (no plugin on the host): 3 grains in the log"),
        "{stdout}"
    );
    assert!(
        line("Orphan", "missing").contains("missing: 3 (e.g. o-0 (log 1, host 0), o-1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("total: 303 grains in the log, 297 match; 4 missing, 1 behind, 0 failing, 1 unknown to the log, 1 decoded by another plugin build"),
        "{stdout}"
    );
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));

    // Errors: exit 2, one line naming what is at fault, never the token.
    let (code, stdout, stderr) = verify(&["--log", &url, "--host", &host_url, "--recheck-ms", "0"]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: --host {host_url}/v1/shards: HTTP 401")),
        "{stderr}"
    );
    let missing_log = format!("sqlite://{}", dir.path().join("nope.db").display());
    let (code, _, stderr) = verify(&[
        "--log",
        &missing_log,
        "--host",
        &host_url,
        "--token-file",
        token_file,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: --log {missing_log}: ")),
        "{stderr}"
    );
    let no_file = dir.path().join("no-token");
    let (code, _, stderr) = verify(&[
        "--log",
        &url,
        "--host",
        &host_url,
        "--token-file",
        no_file.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: --token-file {}: ", no_file.display())),
        "{stderr}"
    );
    let (code, _, stderr) = verify(&[
        "--log",
        &url,
        "--host",
        "http://127.0.0.1:1",
        "--token-file",
        token_file,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with("error: --host http://127.0.0.1:1/v1/shards: "),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN));
}

#[test]
fn verify_reads_a_postgres_log_in_one_snapshot_and_finds_a_removed_grain() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(schema) = rt.block_on(pg::isolated_schema("verify")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(schema.url());
    write_counters(&writer, 200);
    writer.delta("Counter", "c-005", 3);
    let host = InProcess::start(dir.path(), &host_config(dir.path(), schema.url(), ""));
    wait_ready(&host);

    // The one-snapshot read itself: every grain's newest FullState (the
    // Delta at 3 is not one).
    let heads = rt
        .block_on(async {
            let log = replica_host::replication_log::open(schema.url()).await?;
            log.heads_snapshot(Some("Counter")).await
        })
        .unwrap()
        .expect("PostgreSQL reads in one snapshot");
    let heads: BTreeMap<String, u64> = heads.grain_types[0]
        .1
        .iter()
        .map(|h| (h.grain_key.clone(), h.latest_sequence))
        .collect();
    assert_eq!(heads.len(), 200);
    assert_eq!(heads["c-003"], 2);
    assert_eq!(heads["c-004"], 1);
    assert_eq!(heads["c-005"], 1);

    let host_url = host.url();
    let token_file = dir.path().join("token");
    let args = [
        "--log",
        schema.url(),
        "--host",
        host_url.as_str(),
        "--token-file",
        token_file.to_str().unwrap(),
        "--recheck-ms",
        "200",
    ];
    let (code, stdout, stderr) = verify(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Counter: 200 grains in the log, 200 replicas on the host, 200 match"),
        "{stdout}"
    );

    host.store.remove("Counter", "c-123").unwrap();
    let (code, stdout, stderr) = verify(&args);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        finding_line(&stdout, "Counter", "missing")
            .is_some_and(|l| l.contains("missing: 1 (e.g. c-123 (log 2, host 0))")),
        "{stdout}"
    );
    drop(host);
    drop(schema);
}

#[test]
fn anti_entropy_reads_a_removed_or_older_replica_again_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let writer = LogWriter::open(&url);
    write_counters(&writer, 250);
    // From the environment, as `replica-host run` takes it; 100 grains a
    // slice, so the 250 take three slices to cover.
    let host = InProcess::start_with_env(
        dir.path(),
        &host_config(dir.path(), &url, ""),
        &[
            ("REPLICA_CONSUMER__VERIFY_INTERVAL_S", "1"),
            ("REPLICA_CONSUMER__VERIFY_GRAINS", "100"),
        ],
    );
    wait_ready(&host);
    let store = &host.store;
    assert!(store.remove("Counter", "c-010").is_some());
    let held = store.remove("Counter", "c-240").unwrap();
    assert_eq!(held.sequence, 2);
    store
        .apply(
            "Counter",
            "c-240",
            snapshot(1, held.decoded_by.clone()),
            ReplicaStatus::Ok,
        )
        .unwrap();
    assert_eq!(
        host.get_with("/v1/replicas/Counter/c-010", &[BEARER])
            .status,
        404
    );

    let deadline = Instant::now() + WAIT;
    loop {
        let removed = store.get("Counter", "c-010");
        let older = store.get("Counter", "c-240").unwrap();
        if removed.as_ref().is_some_and(|r| r.sequence == 1) && older.sequence == 2 {
            assert_eq!(
                removed.unwrap().state.unwrap().to_json().unwrap(),
                r#"{"count":10}"#
            );
            assert_eq!(older.state.unwrap().to_json().unwrap(), r#"{"count":1240}"#);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not repaired: {removed:?} {older:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let read = host.get_with("/v1/replicas/Counter/c-010", &[BEARER]);
    assert_eq!(read.status, 200, "{}", read.body);
    let metrics = host.get_with("/metrics", &[BEARER]).body;
    for kind in ["missing", "behind"] {
        let series =
            format!(r#"replica_verify_mismatches_total{{grain_type="Counter",kind="{kind}"}}"#);
        assert!(
            metric(&metrics, &series).is_some_and(|n| n >= 1.0),
            "{series}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("# HELP replica_verify_mismatches_total "),
        "{metrics}"
    );
    // Healthy grains are not counted: only the two faults.
    let other = metric(
        &metrics,
        r#"replica_verify_mismatches_total{grain_type="Counter",kind="other_build"}"#,
    );
    assert_eq!(other, Some(0.0), "{metrics}");
}

#[test]
fn the_listing_is_503_catching_up_until_the_type_is_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let writer = LogWriter::open(&url);
    // Slow grains (each decode spins ~0.1 s) so the catch-up takes seconds.
    const SLOW: usize = 60;
    for n in 0..SLOW {
        writer.full("Misbehave", &format!("m-{n:02}"), 1, b"spin:120".to_vec());
    }
    let misbehave = daemon::copy_plugin(dir.path(), "misbehave-plugin");
    let plugins = format!(
        "[[plugin]]\ngrain_type = \"Misbehave\"\npath = \"{misbehave}\"\ntimeout_ms = 5000\n"
    );
    let d = Daemon::start(dir.path(), &daemon::config(&url, &plugins));
    let mut refused = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = d.get("/readyz").status == 200;
        for path in [
            "/v1/replicas/Misbehave",
            "/v1/replicas/Misbehave?fields=sequence",
            "/v1/replicas/Misbehave?fields=state",
        ] {
            let listing = d.get(path);
            if listing.status == 503 {
                assert_eq!(listing.json()["error"], "catching_up", "{}", listing.body);
                assert_eq!(listing.header("retry-after"), Some("1"));
                assert!(
                    listing.json()["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("the listing of grain type Misbehave is not replicated yet: the initial catch-up has read"),
                    "{}",
                    listing.body
                );
                refused += 1;
            } else {
                assert_eq!(listing.status, 200, "{}", listing.body);
            }
        }
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        refused > 0,
        "the listing was never refused during the catch-up"
    );
    // Caught up: the whole listing.
    let keys = d.get("/v1/replicas/Misbehave?limit=1000").json();
    assert_eq!(keys["keys"].as_array().unwrap().len(), SLOW);
    assert_eq!(keys["next_after"], serde_json::Value::Null);
}

#[test]
fn bulk_pages_cover_every_replica_as_positions_and_as_ndjson() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let writer = LogWriter::open(&url);
    const GRAINS: usize = 350;
    write_counters(&writer, GRAINS);
    // A key that needs percent-encoding in the NDJSON page header.
    writer.full("Counter", "zz/ü key", 1, counter(7));
    let plugins = daemon::plugins(dir.path(), &[("Counter", "counter-plugin")]);
    let d = Daemon::start(dir.path(), &daemon::config(&url, &plugins));
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    let sha = d.get("/v1/plugins").json()["plugins"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = |key: &str| -> u64 {
        if key == "zz/ü key" {
            1
        } else {
            let n: usize = key[2..].parse().unwrap();
            if n.is_multiple_of(3) { 2 } else { 1 }
        }
    };

    // fields=sequence, 100 a page.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v1/replicas/Counter?fields=sequence&limit=100".to_owned();
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", daemon::percent_encode(after)));
        }
        let page = d.get(&path);
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        let json = page.json();
        assert_eq!(json["grain_type"], "Counter");
        for r in json["replicas"].as_array().unwrap() {
            let key = r["grain_key"].as_str().unwrap().to_owned();
            assert_eq!(r["sequence"].as_u64().unwrap(), expected(&key), "{r}");
            assert_eq!(r["status"], "ok");
            assert_eq!(r["sha256"].as_str().unwrap(), sha);
            seen.push(key);
        }
        match json["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen.len(), GRAINS + 1);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "in key order, each once");

    // fields=state: NDJSON, 128 a page, the next page in a header.
    let mut lines = 0;
    let mut after: Option<String> = None;
    loop {
        let mut path = "/v1/replicas/Counter?fields=state&limit=128".to_owned();
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let page = d.get(&path);
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(page.header("content-type"), Some("application/x-ndjson"));
        for line in page.body.lines() {
            let replica: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = replica["grain_key"].as_str().unwrap();
            let single = d.get(&daemon::replica_path("Counter", key)).json();
            assert_eq!(
                daemon::without_staleness(replica),
                daemon::without_staleness(single),
                "a line is a read's JSON"
            );
            lines += 1;
        }
        // Already percent-encoded by the host.
        match page.header("replica-next-after") {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(lines, GRAINS + 1);

    // Without fields the keys listing is what it was; a bad field is 400.
    let keys = d.get("/v1/replicas/Counter?limit=2").json();
    assert_eq!(keys["keys"], serde_json::json!(["c-000", "c-001"]));
    assert_eq!(keys["next_after"], "c-001");
    let bad = d.get("/v1/replicas/Counter?fields=everything");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["error"], "bad_request");
}
