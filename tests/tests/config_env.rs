//! Settings from the environment (`REPLICA_CONFIG`,
//! `REPLICA_<SECTION>__<KEY>`), `replica-host config check`, and shard
//! routing: the 421 for another shard's grain carries `Location` built from
//! `[consumer] peer_url`, and `GET /v1/shards` describes the sharding.

use std::path::Path;
use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, CounterState};
use replica_e2e::run_host;
use replica_host::test_seam::shard_of;

/// A config file with one Counter plugin and an SQLite log beside it.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let counter = daemon::copy_plugin(dir, "counter-plugin");
    let log = dir.join("replication.db");
    let writer = LogWriter::open(&format!("sqlite://{}", log.display()));
    for i in 0..20 {
        writer.full(
            "Counter",
            &format!("c-{i}"),
            1,
            orlando::bincode(&CounterState { count: i }),
        );
    }
    let path = dir.join("host.toml");
    std::fs::write(
        &path,
        daemon::config(
            "sqlite://replication.db",
            &format!("[[plugin]]\ngrain_type = \"Counter\"\npath = \"{counter}\"\n"),
        ),
    )
    .unwrap();
    path
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let config = path.to_str().unwrap();
    let (code, stdout, stderr) = run_host(
        &["config", "check"],
        &[
            ("REPLICA_CONFIG", config),
            (
                "REPLICA_LOG__URL",
                "postgres://orlando:hunter2@db.example/orlando",
            ),
            ("REPLICA_CONSUMER__SHARD", "2/3"),
            ("REPLICA_CONSUMER__WORKERS", "4"),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        !stdout.contains("hunter2") && !stderr.contains("hunter2"),
        "{stdout}{stderr}"
    );
    assert!(stdout.starts_with(&format!("# {config}: ok\n")), "{stdout}");
    assert!(
        stdout.contains("# log.url from REPLICA_LOG__URL\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("url = \"postgres://orlando:***@db.example/orlando\""),
        "{stdout}"
    );
    assert!(stdout.contains("shard = \"2/3\""), "{stdout}");
    assert!(stdout.contains("workers = 4"), "{stdout}");
    // Defaults are shown too: the effective configuration.
    assert!(stdout.contains("batch_limit = 100"), "{stdout}");
    assert!(
        stderr.contains("config ok: 1 plugin(s) checked, 3 setting(s) from the environment"),
        "{stderr}"
    );

    // --config wins over REPLICA_CONFIG.
    let (code, _, stderr) = run_host(
        &["config", "check", "--config", config],
        &[("REPLICA_CONFIG", "/nonexistent.toml")],
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn config_check_and_run_refuse_what_startup_refuses_in_one_line_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let config = path.to_str().unwrap();
    let one_error = |args: &[&str], envs: &[(&str, &str)]| {
        let (code, stdout, stderr) = run_host(args, envs);
        assert_eq!(code, 2, "{stdout}{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(!stderr.contains("replica-host running"), "{stderr}");
        errors[0].to_owned()
    };
    for args in [&["config", "check"][..], &["run"][..]] {
        let error = one_error(
            args,
            &[
                ("REPLICA_CONFIG", config),
                ("REPLICA_CONSUMER__BATCH_LIMT", "5"),
            ],
        );
        assert!(
            error.starts_with(&format!(
                "error: {config}: REPLICA_CONSUMER__BATCH_LIMT (consumer.batch_limt): unknown field `batch_limt`"
            )),
            "{error}"
        );
        let error = one_error(args, &[]);
        assert_eq!(
            error,
            "error: no config file: pass --config FILE or set REPLICA_CONFIG"
        );
        // A plugin entry that startup would refuse: config check loads it too.
        let error = one_error(
            args,
            &[
                ("REPLICA_CONFIG", config),
                ("REPLICA_PLUGIN__0__GRAIN_TYPE", "BankAccount"),
            ],
        );
        assert!(
            error.contains("plugin[0] (grain_type \"BankAccount\")")
                && error.contains("decodes grain type \"Counter\", not \"BankAccount\""),
            "{error}"
        );
    }
}

#[test]
fn a_sharded_host_from_the_environment_points_misdirected_reads_at_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    let secret_cluster = "cluster-value-never-logged";
    let d = Daemon::start_with_env(
        dir.path(),
        &text,
        &[
            ("REPLICA_CONSUMER__SHARD", "0/2"),
            (
                "REPLICA_CONSUMER__PEER_URL",
                "http://replica-{shard}.replica-host:8080",
            ),
            ("REPLICA_CLUSTER_ID", secret_cluster),
            ("REPLICA_PLUGIN__0__TIMEOUT_MS", "100"),
        ],
    );
    // Each override is logged by name, never with its value.
    for variable in [
        "REPLICA_CLUSTER_ID",
        "REPLICA_CONSUMER__PEER_URL",
        "REPLICA_CONSUMER__SHARD",
    ] {
        let line = d.wait_for_log(
            &["setting from the environment", variable],
            Duration::from_secs(5),
        );
        assert!(
            !line.contains(secret_cluster) && !line.contains("0/2"),
            "{line}"
        );
    }

    // A reload re-reads the file with the same overrides: nothing changed.
    assert_eq!(
        d.get("/v1/plugins").json()["plugins"][0]["limits"]["timeout_ms"],
        100
    );
    d.signal("HUP");
    let line = d.wait_for_log(&["plugins reloaded"], Duration::from_secs(30));
    assert!(line.contains("result=\"unchanged\""), "{line}");

    let shards = d.get("/v1/shards").json();
    assert_eq!(
        shards,
        serde_json::json!({
            "sharded": true,
            "count": 2,
            "shard": 0,
            "hash": "fnv1a64(utf8(grain_type) || 0x00 || utf8(grain_key)) mod count",
            "fnv_offset_basis": "0xcbf29ce484222325",
            "fnv_prime": "0x100000001b3",
            "peer_url": "http://replica-{shard}.replica-host:8080",
            "peers": ["http://replica-0.replica-host:8080", "http://replica-1.replica-host:8080"],
        })
    );

    let mine = (0..20)
        .map(|i| format!("c-{i}"))
        .find(|k| shard_of("Counter", k, 2) == 0)
        .unwrap();
    let theirs = (0..20)
        .map(|i| format!("c-{i}"))
        .find(|k| shard_of("Counter", k, 2) == 1)
        .unwrap();
    d.wait_for_replica("Counter", &mine, Duration::from_secs(60), |_| true);
    let path = format!(
        "{}?max_staleness_ms=100000",
        daemon::replica_path("Counter", &theirs)
    );
    let r = d.get(&path);
    assert_eq!(r.status, 421, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some(format!("http://replica-1.replica-host:8080{path}").as_str())
    );
    assert_eq!(r.json()["error"], "misdirected");
    let doc = d.get("/v1/openapi.json").json();
    assert!(doc["paths"]["/v1/shards"]["get"].is_object());
    assert!(doc["components"]["schemas"]["ShardsDoc"]["properties"]["peers"].is_object());
    drop(d);

    // An unsharded host says so.
    let d = Daemon::start(dir.path(), &text);
    let shards = d.get("/v1/shards").json();
    assert_eq!(shards["sharded"], false);
    assert_eq!(shards["count"], 1);
    assert_eq!(shards["peers"], serde_json::json!([]));
}
