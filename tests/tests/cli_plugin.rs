//! `replica-host plugin inspect | decode | build` through the real binary.

use replica_e2e::orlando::{self, UserProfile};
use replica_e2e::{plugin, run_host};

fn payload_file(dir: &tempfile::TempDir, bytes: &[u8]) -> String {
    let path = dir.path().join("payload.bin");
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn decode_prints_exactly_serde_json() {
    let dir = tempfile::tempdir().unwrap();
    let state = orlando::sample_account(9);
    let payload = payload_file(&dir, &orlando::bincode(&state));
    let wasm = plugin("bank-account-plugin");
    let (code, stdout, stderr) = run_host(
        &[
            "plugin",
            "decode",
            wasm.to_str().unwrap(),
            "--payload",
            &payload,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        format!("{}\n", serde_json::to_string(&state).unwrap())
    );

    let profile = UserProfile {
        name: "Ünï".into(),
        email: "e@x".into(),
        visits: 3,
        roles: vec![],
    };
    let payload = payload_file(&dir, &orlando::json(&profile));
    let wasm = plugin("user-profile-plugin");
    let (code, stdout, _) = run_host(
        &[
            "plugin",
            "decode",
            wasm.to_str().unwrap(),
            "--payload",
            &payload,
            "--grain-key",
            "k",
            "--sequence",
            "9",
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert_eq!(stdout.trim_end(), serde_json::to_string(&profile).unwrap());
}

#[test]
fn decode_failure_is_exit_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = plugin("counter-plugin");
    for bytes in [&b""[..], &b"\xff\xff\xff"[..]] {
        let payload = payload_file(&dir, bytes);
        let (code, stdout, stderr) = run_host(
            &[
                "plugin",
                "decode",
                wasm.to_str().unwrap(),
                "--payload",
                &payload,
                "--grain-key",
                "c-1",
            ],
            &[],
        );
        assert_eq!(code, 1);
        assert!(stdout.is_empty());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("counter_plugin.wasm") && stderr.contains("malformed_payload"),
            "{stderr}"
        );
        assert!(stderr.contains("Counter/c-1"), "{stderr}");
    }
}

#[test]
fn invalid_plugin_files_are_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let payload = payload_file(&dir, b"x");
    let not_wasm = dir.path().join("notes.wasm");
    std::fs::write(&not_wasm, "not wasm").unwrap();
    for (file, expected) in [
        (not_wasm, "not a WebAssembly file"),
        (plugin("wasi-import-plugin"), "wasi:random/random@0.2.0"),
        (
            replica_e2e::core_module("counter-plugin"),
            "core WebAssembly module",
        ),
    ] {
        let (code, _, stderr) = run_host(
            &[
                "plugin",
                "decode",
                file.to_str().unwrap(),
                "--payload",
                &payload,
            ],
            &[],
        );
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        let (code, _, _) = run_host(&["plugin", "inspect", file.to_str().unwrap()], &[]);
        assert_eq!(code, 2);
    }
}

#[test]
fn inspect_shows_the_plugin() {
    let wasm = plugin("counter-plugin");
    let (code, stdout, stderr) = run_host(&["plugin", "inspect", wasm.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    let sha = {
        use std::process::Command;
        let out = Command::new("sha256sum").arg(&wasm).output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    for expected in [
        "grain type:     Counter",
        "CounterState version 1",
        "decodes states: 1",
        "replica:plugin@2.0.0",
        "replica:plugin/logging@2.0.0",
        &format!("sha256:         {sha}"),
        &format!(
            "size:           {} bytes",
            std::fs::metadata(&wasm).unwrap().len()
        ),
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
}

#[test]
fn a_guest_panic_reaches_the_log_tagged_with_plugin_and_grain() {
    let dir = tempfile::tempdir().unwrap();
    let payload = payload_file(&dir, b"panic");
    let wasm = plugin("misbehave-plugin");
    let (code, _, stderr) = run_host(
        &[
            "plugin",
            "decode",
            wasm.to_str().unwrap(),
            "--payload",
            &payload,
            "--grain-key",
            "grain-x",
        ],
        &[("RUST_LOG", "info")],
    );
    assert_eq!(code, 1);
    let log_line = stderr
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("plugin panicked"))
        .unwrap_or_else(|| panic!("no panic log line in:\n{stderr}"));
    assert!(
        log_line.contains("misbehave_plugin.wasm") && log_line.contains("grain-x"),
        "{log_line}"
    );
    assert!(
        log_line.contains("deliberate panic for grain grain-x"),
        "{log_line}"
    );
}
