//! The plugin runtime through the library API, with real components built
//! from the sample and test-only plugin crates.

use replica_e2e::orlando::{self, CounterState, UserProfile};
use replica_e2e::plugin;
use replica_host::Value;
use replica_host::{
    CallErrorKind, LoadedPlugin, PluginEngine, PluginError, PluginLimits, SnapshotRef,
};

fn load(name: &str) -> LoadedPlugin {
    load_with(name, PluginLimits::default())
}

fn load_with(name: &str, limits: PluginLimits) -> LoadedPlugin {
    let engine = PluginEngine::new().unwrap();
    LoadedPlugin::load(&engine, &plugin(name), limits).unwrap()
}

fn snap<'a>(grain_type: &'a str, key: &'a str, payload: &'a [u8]) -> SnapshotRef<'a> {
    SnapshotRef {
        grain_type,
        grain_key: key,
        sequence: 7,
        timestamp_millis: 1_700_000_000_000,
        source_cluster: "us-east",
        payload,
    }
}

#[test]
fn sample_plugins_describe_themselves() {
    for (name, grain_type, schema) in [
        ("counter-plugin", "Counter", "CounterState"),
        ("bank-account-plugin", "BankAccount", "AccountState"),
        ("user-profile-plugin", "UserProfile", "UserProfile"),
    ] {
        let p = load(name);
        assert_eq!(p.description().grain_type, grain_type);
        assert_eq!(p.description().schema_name, schema);
        assert_eq!(p.description().schema_version, "1");
        assert_eq!(p.description().state_versions, ["1"]);
        assert_eq!(p.sha256().len(), 64);
    }
}

#[test]
fn counter_decodes_orlando_bincode() {
    let p = load("counter-plugin");
    for count in [0, 1, -1, i64::MAX, i64::MIN] {
        let payload = orlando::bincode(&CounterState { count });
        let value = p.decode(snap("Counter", "c", &payload)).unwrap();
        assert_eq!(
            value.to_value(),
            Value::Record(vec![("count".into(), Value::I64(count))])
        );
        assert_eq!(
            value.to_json().unwrap(),
            serde_json::to_string(&CounterState { count }).unwrap()
        );
    }
}

#[test]
fn bank_account_renders_exactly_like_serde_json() {
    let p = load("bank-account-plugin");
    let mut none = orlando::sample_account(1);
    none.last_transaction = None;
    none.tags.clear();
    for state in [orlando::sample_account(0), orlando::sample_account(3), none] {
        let payload = orlando::bincode(&state);
        let value = p
            .decode(snap("BankAccount", "acc/1 \"ü\"", &payload))
            .unwrap();
        assert_eq!(
            value.to_json().unwrap(),
            serde_json::to_string(&state).unwrap()
        );
    }
    // u64 above 2^53 stays exact and typed.
    let value = p
        .decode(snap(
            "BankAccount",
            "a",
            &orlando::bincode(&orlando::sample_account(0)),
        ))
        .unwrap();
    let Some(Value::Some(tx)) = value.field("last_transaction") else {
        panic!("no transaction: {value:?}")
    };
    assert_eq!(tx.field("id"), Some(&Value::U64(u64::MAX)));
}

#[test]
fn user_profile_decodes_orlando_json() {
    let p = load("user-profile-plugin");
    let state = UserProfile {
        name: "Ada \u{1F600}".into(),
        email: "ada@example.com".into(),
        visits: u32::MAX,
        roles: vec!["admin".into(), "ops".into()],
    };
    let value = p
        .decode(snap("UserProfile", "u-1", &orlando::json(&state)))
        .unwrap();
    assert_eq!(
        value.to_json().unwrap(),
        serde_json::to_string(&state).unwrap()
    );
    assert_eq!(value.field("visits"), Some(Value::U64(u32::MAX as u64)));
}

#[test]
fn malformed_and_empty_payloads_are_typed_errors() {
    let counter = load("counter-plugin");
    let err = counter.decode(snap("Counter", "c-9", b"")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::MalformedPayload);
    assert_eq!((err.grain_key.as_str(), err.sequence), ("c-9", 7));
    assert!(err.to_string().contains("counter_plugin.wasm"), "{err}");

    let bank = load("bank-account-plugin");
    let mut truncated = orlando::bincode(&orlando::sample_account(0));
    truncated.truncate(truncated.len() / 2);
    let err = bank
        .decode(snap("BankAccount", "a", &truncated))
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::MalformedPayload);

    let users = load("user-profile-plugin");
    let err = users
        .decode(snap("UserProfile", "u", br#"{"name":"x"}"#))
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::MalformedPayload);
    assert!(err.message.contains("missing field"), "{err}");
    assert_eq!(counter.stats().failures(), 1);
    assert_eq!(counter.stats().calls(), 1);
}

#[test]
fn a_panic_is_a_trap_carrying_its_message_and_the_plugin_stays_usable() {
    let p = load("misbehave-plugin");
    let err = p
        .decode(snap("Misbehave", "grain-p", b"panic"))
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Trap);
    assert!(
        err.message.contains("deliberate panic for grain grain-p"),
        "{err}"
    );
    // The trapped instance is gone; the next call runs in a fresh one.
    let ok = p
        .decode(snap(
            "Misbehave",
            "g",
            &orlando::bincode(&CounterState { count: 5 }),
        ))
        .unwrap();
    assert_eq!(ok.to_json().unwrap(), r#"{"count":5}"#);
}

#[test]
fn an_endless_loop_times_out() {
    let limits = PluginLimits {
        timeout: std::time::Duration::from_millis(50),
        ..Default::default()
    };
    let p = load_with("misbehave-plugin", limits);
    let started = std::time::Instant::now();
    let err = p.decode(snap("Misbehave", "g", b"loop")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Timeout);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Work well under the limit still completes.
    let ok = p.decode(snap("Misbehave", "g", b"spin:1")).unwrap();
    assert_eq!(ok.to_json().unwrap(), r#"{"count":1}"#);
}

#[test]
fn unbounded_memory_growth_is_refused() {
    let limits = PluginLimits {
        max_memory_bytes: 16 << 20,
        ..Default::default()
    };
    let p = load_with("misbehave-plugin", limits);
    let err = p.decode(snap("Misbehave", "g", b"grow")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::OutOfMemory, "{err}");
    let err = p.decode(snap("Misbehave", "g", b"huge")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::OutOfMemory, "{err}");
}

#[test]
fn stack_overflow_is_a_trap() {
    let p = load("misbehave-plugin");
    let err = p.decode(snap("Misbehave", "g", b"recurse")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Trap, "{err}");
}

#[test]
fn oversized_or_too_deep_output_is_refused() {
    let p = load("misbehave-plugin");
    let err = p.decode(snap("Misbehave", "g", b"deep:500")).unwrap_err();
    assert_eq!(err.kind, CallErrorKind::BadOutput);
    assert!(err.message.contains("nested more than 128"), "{err}");
    let limits = PluginLimits {
        output: replica_host::OutputLimits {
            max_nodes: 1000,
            ..Default::default()
        },
        ..Default::default()
    };
    let p = load_with("misbehave-plugin", limits);
    assert_eq!(
        p.decode(snap("Misbehave", "g", b"wide:2000"))
            .unwrap_err()
            .kind,
        CallErrorKind::BadOutput
    );
    assert!(p.decode(snap("Misbehave", "g", b"wide:500")).is_ok());
}

#[test]
fn no_state_survives_between_calls() {
    let p = load("misbehave-plugin");
    let first = p
        .decode(snap("Misbehave", "a", b"remember:secret-of-a"))
        .unwrap();
    let second = p.decode(snap("Misbehave", "b", b"remember:b")).unwrap();
    assert_eq!(first.to_json().unwrap(), r#"["secret-of-a"]"#);
    assert_eq!(second.to_json().unwrap(), r#"["b"]"#);
}

#[test]
fn files_that_are_not_valid_plugins_are_refused_clearly() {
    let engine = PluginEngine::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    type Kind = fn(&PluginError) -> bool;
    let cases: Vec<(std::path::PathBuf, &str, Kind)> = vec![
        (
            replica_e2e::plugin("wasi-import-plugin"),
            "imports `wasi:random/random@0.2.0`",
            |e| matches!(e, PluginError::ForbiddenImport(name) if name == "wasi:random/random@0.2.0"),
        ),
        (
            replica_e2e::core_module("counter-plugin"),
            "core WebAssembly module, not a component",
            |e| matches!(e, PluginError::CoreModule),
        ),
        (
            write(dir.path(), "text.wasm", b"hello"),
            "not a WebAssembly file",
            |e| matches!(e, PluginError::NotWasm),
        ),
        (write(dir.path(), "empty.wasm", b""), "empty", |e| {
            matches!(e, PluginError::Empty)
        }),
        (
            write(
                dir.path(),
                "truncated.wasm",
                &std::fs::read(plugin("counter-plugin")).unwrap()[..500],
            ),
            "not a valid component",
            |e| matches!(e, PluginError::Invalid(_)),
        ),
        (
            dir.path().join("missing.wasm"),
            "cannot read the file",
            |e| matches!(e, PluginError::Read(io) if io.kind() == std::io::ErrorKind::NotFound),
        ),
    ];
    for (path, expected, kind) in cases {
        let err = LoadedPlugin::load(&engine, &path, PluginLimits::default())
            .err()
            .expect("must be refused");
        assert!(kind(&err.error), "{}: {:?}", path.display(), err.error);
        let text = err.to_string();
        assert!(text.contains(expected), "{}: {text}", path.display());
        assert!(text.starts_with(&path.display().to_string()), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
