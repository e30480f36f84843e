//! The grain author's tools through the real binary: `plugin new` → `plugin
//! build` → `plugin test` on fixtures, the upcasting `counter-v2` plugin, and
//! `plugin test --log` dry runs against real SQLite and PostgreSQL logs.

use std::path::Path;

use replica_e2e::log_writer::LogWriter;
use replica_e2e::payloads::{counter, counter_v2};
use replica_e2e::{pg, plugin, run_host, target_dir};

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn a_new_plugin_builds_as_it_is_and_passes_its_own_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("cart");
    // With the network refused: the scaffold and its build need none.
    let offline = ("CARGO_NET_OFFLINE", "true");
    let (code, stdout, stderr) = run_host(
        &[
            "plugin",
            "new",
            krate.to_str().unwrap(),
            "--grain-type",
            "ShoppingCart",
        ],
        &[offline],
    );
    assert_eq!(code, 0, "{stderr}");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        ".gitignore",
        "fixtures/example.payload",
        "Cargo.lock",
    ] {
        assert!(
            stdout.contains(&krate.join(file).display().to_string()),
            "{stdout}"
        );
    }
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    let sdk = replica_e2e::workspace()
        .join("guest-sdk")
        .canonicalize()
        .unwrap();
    assert!(
        manifest.contains(&format!(
            "replica-guest = {{ path = \"{}\" }}",
            sdk.display()
        )),
        "{manifest}"
    );
    assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
    // The lock keeps our workspace's versions of what the crate shares with it.
    let ours = std::fs::read_to_string(replica_e2e::workspace().join("Cargo.lock")).unwrap();
    let theirs = std::fs::read_to_string(krate.join("Cargo.lock")).unwrap();
    let versions = |lock: &str, name: &str| -> Vec<String> {
        lock.split("[[package]]")
            .filter(|p| p.contains(&format!("\nname = \"{name}\"\n")))
            .filter_map(|p| {
                p.lines()
                    .find(|l| l.starts_with("version = "))
                    .map(str::to_owned)
            })
            .collect()
    };
    for name in ["serde", "bincode", "wit-bindgen", "serde_json"] {
        let in_theirs = versions(&theirs, name);
        assert!(!in_theirs.is_empty(), "{name} missing");
        for version in &in_theirs {
            assert!(
                versions(&ours, name).contains(version),
                "{name} {version} is not ours"
            );
        }
    }
    assert!(
        !theirs.contains("name = \"replica-host\""),
        "pruned to the crate's own graph"
    );

    // --sdk-git floats without a revision: refused.
    let (code, _, stderr) = run_host(
        &[
            "plugin",
            "new",
            dir.path().join("git").to_str().unwrap(),
            "--grain-type",
            "X",
            "--sdk-git",
            "https://example.com/r.git",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--rev"), "{stderr}");

    // A non-empty folder and a bad grain type are refused in one line.
    let (code, _, stderr) = run_host(
        &[
            "plugin",
            "new",
            krate.to_str().unwrap(),
            "--grain-type",
            "X",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cart: the folder is not empty"), "{stderr}");
    let other = dir.path().join("other");
    let (code, _, stderr) = run_host(
        &[
            "plugin",
            "new",
            other.to_str().unwrap(),
            "--grain-type",
            "Shopping Cart",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("grain type `Shopping Cart` is not valid"),
        "{stderr}"
    );
    assert!(!other.exists());

    // Builds as generated, from outside this workspace.
    let target = target_dir().join("grain-author");
    let target = target.to_str().unwrap();
    let (code, stdout, stderr) = run_host(
        &["plugin", "build", "--offline", krate.to_str().unwrap()],
        &[("CARGO_TARGET_DIR", target), offline],
    );
    assert_eq!(code, 0, "build failed:\n{stderr}");
    let wasm = stdout.lines().last().unwrap().to_owned();
    assert!(wasm.ends_with("shopping_cart_plugin.wasm"), "{wasm}");

    let fixtures = krate.join("fixtures");
    let (code, stdout, stderr) =
        run_host(&["plugin", "test", &wasm, fixtures.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "ok empty\nok example\n2 cases: 2 passed, 0 failed\n"
    );

    // The generated native unit tests pass as well.
    let out = std::process::Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()))
        .args(["test", "--manifest-path"])
        .arg(krate.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("test result: ok. 3 passed"), "{text}");

    // A mismatch, a wrong expected error and a payload without expectation.
    write(&fixtures, "example.json", r#"{"value": 41}"#);
    write(&fixtures, "lonely.payload", "x");
    write(
        &fixtures,
        "notbad.payload",
        std::fs::read(fixtures.join("example.payload")).unwrap(),
    );
    write(&fixtures, "notbad.error", "malformed\n");
    let (code, stdout, _) = run_host(&["plugin", "test", &wasm, fixtures.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(
        stdout,
        "ok empty\n\
         FAIL example: the state differs from example.json in 1 place\n\
         \x20   .value: expected 41, got 42\n\
         FAIL lonely: lonely.payload has no expectation: add lonely.json or lonely.error\n\
         FAIL notbad: expected error malformed_payload, got a state: {\"value\":42}\n\
         4 cases: 1 passed, 3 failed\n"
    );
}

#[test]
fn a_json_plugin_is_generated_with_json_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("profile");
    let (code, _, stderr) = run_host(
        &[
            "plugin",
            "new",
            krate.to_str().unwrap(),
            "--grain-type",
            "user_profile",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read(krate.join("fixtures/example.payload")).unwrap(),
        br#"{"value":42}"#
    );
    let lib = std::fs::read_to_string(krate.join("src/lib.rs")).unwrap();
    assert!(
        lib.contains("replica_guest::formats::json(&snapshot.payload)"),
        "{lib}"
    );
    assert!(lib.contains("pub struct UserProfileState"), "{lib}");
    assert!(lib.contains(r#"const GRAIN_TYPE: &'static str = "user_profile";"#));
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("name = \"user-profile-plugin\""),
        "{manifest}"
    );
}

#[test]
fn counter_v2_reads_both_layouts_and_counter_v1_shows_what_it_misses() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path();
    write(fixtures, "v1.payload", counter(7));
    write(fixtures, "v1.json", r#"{"count": 7, "updated_by": null}"#);
    write(fixtures, "v2.payload", counter_v2(-3, Some("ops")));
    write(fixtures, "v2.json", r#"{"count": -3, "updated_by": "ops"}"#);
    let mut longer = counter_v2(1, None);
    longer.push(0);
    write(fixtures, "trailing.payload", longer);
    write(fixtures, "trailing.error", "malformed");

    let v2_wasm = plugin("counter-v2-plugin");
    let (code, stdout, stderr) = run_host(
        &[
            "plugin",
            "test",
            v2_wasm.to_str().unwrap(),
            fixtures.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "ok trailing\nok v1\nok v2\n3 cases: 3 passed, 0 failed\n"
    );

    let (code, stdout, _) = run_host(&["plugin", "inspect", v2_wasm.to_str().unwrap()], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("CounterState version 2"), "{stdout}");
    assert!(stdout.contains("decodes states: 2, 1"), "{stdout}");

    // The version 1 plugin misses the new field and fails the new layout.
    let v1_wasm = plugin("counter-plugin");
    let (code, stdout, _) = run_host(
        &[
            "plugin",
            "test",
            v1_wasm.to_str().unwrap(),
            fixtures.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "ok trailing");
    assert_eq!(
        lines[1],
        "FAIL v1: the state differs from v1.json in 1 place"
    );
    assert_eq!(lines[2], "    .updated_by: expected null, got (absent)");
    assert!(
        lines[3].starts_with("FAIL v2: expected a state, got malformed_payload: bincode: "),
        "{}",
        lines[3]
    );
    assert_eq!(lines[4], "3 cases: 1 passed, 2 failed");
}

/// Writes the dry-run grains: decodable by one plugin, both, neither, a
/// Delta newest, a Delta only, and a grain of another type.
fn seed(log: &LogWriter) {
    log.full("Counter", "c-1", 1, counter(1));
    log.full("Counter", "c-2", 1, counter_v2(2, Some("ops")));
    log.full("Counter", "c-3", 1, counter(3));
    log.delta("Counter", "c-3", 2);
    log.full("Counter", "c-4", 1, vec![0xff, 0xff, 0xff]);
    log.delta("Counter", "c-5", 1);
    log.full("Counter", "c-6", 1, counter(6));
    log.full("Counter", "c-6", 2, vec![0xff, 0xff, 0xff]);
    log.full("BankAccount", "a-1", 1, vec![0xff]);
}

/// Checks a dry run of counter-v2 compared with counter over [`seed`]'s log.
fn check_dry_run(url: &str) {
    let candidate = plugin("counter-v2-plugin");
    let other = plugin("counter-plugin");
    let (code, stdout, stderr) = run_host(
        &[
            "plugin",
            "test",
            candidate.to_str().unwrap(),
            "--log",
            url,
            "--compare",
            other.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with(
            "dry run of counter_v2_plugin.wasm (CounterState version 2) on grain type Counter in "
        ) && lines[0].ends_with("(read-only)"),
        "{stdout}"
    );
    assert_eq!(
        lines[1],
        "5 grains of type Counter with a FullState: 3 decode, 2 fail"
    );
    assert_eq!(
        lines[2],
        "1 grains without any FullState, skipped (e.g. c-5)"
    );
    assert!(
        lines[3].starts_with(
            "  2 fail with malformed_payload: no known layout decodes this payload: version 2: bincode: "
        ) && lines[3].contains("; version 1: bincode: ")
            && lines[3].ends_with("(e.g. c-4, c-6)"),
        "{}",
        lines[3]
    );
    assert_eq!(
        lines[4],
        "compared with counter_plugin.wasm: 0 same state, 2 different state, \
         1 decode only with counter_v2_plugin.wasm, 0 decode only with counter_plugin.wasm, 2 with neither"
    );
    assert_eq!(
        &lines[5..],
        [
            "  c-1:",
            "    .updated_by: counter_plugin.wasm (absent), counter_v2_plugin.wasm null",
            "  c-3:",
            "    .updated_by: counter_plugin.wasm (absent), counter_v2_plugin.wasm null",
        ]
    );

    // The first three grains in key order all decode: exit 0.
    let (code, stdout, stderr) = run_host(
        &[
            "plugin",
            "test",
            candidate.to_str().unwrap(),
            "--log",
            url,
            "--sample",
            "3",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("\n3 grains of type Counter with a FullState: 3 decode, 0 fail\n"),
        "{stdout}"
    );

    // The version 1 plugin on the same grains: what a swap back would break.
    let (code, stdout, _) = run_host(
        &[
            "plugin",
            "test",
            other.to_str().unwrap(),
            "--log",
            url,
            "--sample",
            "3",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        stdout.contains("\n3 grains of type Counter with a FullState: 2 decode, 1 fail\n"),
        "{stdout}"
    );
    assert!(stdout.contains("(e.g. c-2)"), "{stdout}");

    // A grain type with no grains checks nothing: exit 1, one error line.
    let (code, _, stderr) = run_host(
        &[
            "plugin",
            "test",
            candidate.to_str().unwrap(),
            "--log",
            url,
            "--grain-type",
            "Nope",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no grain of type Nope has a FullState"),
        "{stderr}"
    );
}

/// Every file of `dir` with the sha256 of its contents, but SQLite's
/// shared-memory index and an empty or vanishing WAL, which readers and
/// closing connections of a WAL database make and remove: no data.
fn data_files(dir: &Path) -> Vec<(String, String)> {
    use sha2::{Digest, Sha256};
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with("-shm"))
        .filter_map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            // The writer's last connection may be closing still, removing
            // its (checkpointed) WAL.
            let bytes = match std::fs::read(&p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && name.ends_with("-wal") => {
                    return None;
                }
                read => read.unwrap(),
            };
            let empty_wal = name.ends_with("-wal") && bytes.is_empty();
            (!empty_wal).then(|| (name, hex::encode(Sha256::digest(bytes))))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn dry_run_against_a_sqlite_log_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("replication.db");
    let url = format!("sqlite://{}", db.display());
    {
        let log = LogWriter::open(&url);
        seed(&log);
        // Move the writes into the database file, so that what the writer's
        // connections do as they close changes no data.
        log.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        });
    }
    let before = data_files(dir.path());
    check_dry_run(&url);
    // The database is byte for byte the same, and no WAL holds data.
    assert_eq!(data_files(dir.path()), before);

    // A missing log is not created.
    let missing = dir.path().join("missing.db");
    let (code, _, stderr) = run_host(
        &[
            "plugin",
            "test",
            plugin("counter-plugin").to_str().unwrap(),
            "--log",
            &format!("sqlite://{}", missing.display()),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("missing.db"), "{stderr}");
    assert!(!missing.exists());
}

#[test]
fn dry_run_against_a_postgres_log() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(schema) = rt.block_on(pg::isolated_schema("dry_run")) else {
        return;
    };
    let log = LogWriter::open(schema.url());
    seed(&log);
    check_dry_run(schema.url());
    // Nothing was written: the rows are the ones seeded.
    let rows: i64 = log.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(schema.url()).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM replication_log")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    });
    assert_eq!(rows, 9);
}

#[test]
fn a_failing_grain_becomes_a_fixture_the_fixed_plugin_passes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let url = format!("sqlite://{}", db.display());
    let log = LogWriter::open(&url);
    // In production, Counter runs the version 1 plugin; the primary now
    // writes version 2 states, which it fails to decode.
    log.full("Counter", "user/42", 1, counter(1));
    log.full("Counter", "user/42", 2, counter_v2(5, Some("ops")));
    let old = plugin("counter-plugin");
    let fixed = plugin("counter-v2-plugin");
    let fixtures = dir.path().join("fixtures");
    let old_str = old.to_str().unwrap();
    let fixed_str = fixed.to_str().unwrap();
    let fixtures_str = fixtures.to_str().unwrap();

    // Captured with the plugin in force: the failure itself.
    let (code, stdout, stderr) = run_host(
        &[
            "plugin",
            "fixture",
            "--log",
            &url,
            "--grain",
            "Counter/user/42",
            "--plugin",
            old_str,
            "--out",
            fixtures_str,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("case user_42_at_2 (sequence 2): malformed_payload"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(fixtures.join("user_42_at_2.payload")).unwrap(),
        counter_v2(5, Some("ops"))
    );
    assert_eq!(
        std::fs::read_to_string(fixtures.join("user_42_at_2.error")).unwrap(),
        "malformed_payload\n"
    );
    // An older sequence, with a name of our own, from the fixed plugin.
    let (code, stdout, stderr) = run_host(
        &[
            "plugin",
            "fixture",
            "--log",
            &url,
            "--grain",
            "Counter/user/42",
            "--sequence",
            "1",
            "--plugin",
            fixed_str,
            "--out",
            fixtures_str,
            "--name",
            "old-layout",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("case old-layout (sequence 1): decodes"),
        "{stdout}"
    );

    // The author states what the fixed plugin must produce, as a test.
    std::fs::remove_file(fixtures.join("user_42_at_2.error")).unwrap();
    write(
        &fixtures,
        "user_42_at_2.json",
        r#"{"count": 5, "updated_by": "ops"}"#,
    );
    let (code, stdout, _) = run_host(&["plugin", "test", old_str, fixtures_str], &[]);
    assert_eq!(code, 1, "the old plugin fails the case: {stdout}");
    assert!(
        stdout.contains("FAIL user_42_at_2: expected a state, got malformed_payload"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run_host(&["plugin", "test", fixed_str, fixtures_str], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "ok old-layout\nok user_42_at_2\n2 cases: 2 passed, 0 failed\n"
    );

    // One payload from standard input.
    let mut child = std::process::Command::new(replica_e2e::host_bin())
        .args(["plugin", "test", fixed_str, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&counter_v2(9, None))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"count\":9,\"updated_by\":null}\n"
    );

    // No such snapshot: exit 1, one line.
    let (code, _, stderr) = run_host(
        &[
            "plugin",
            "fixture",
            "--log",
            &url,
            "--grain",
            "Counter/nobody",
            "--plugin",
            old_str,
            "--out",
            fixtures_str,
        ],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("Counter/nobody: the log holds no FullState of this grain"),
        "{stderr}"
    );
}
