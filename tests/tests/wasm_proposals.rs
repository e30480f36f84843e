//! The closed set of WebAssembly proposals: plugins written straight in
//! WAT (no SDK, no Rust) that use a disabled proposal are refused at load,
//! with the proposal named, by the library, `plugin inspect`, `plugin
//! decode`, `run` and a SIGHUP reload; never an abort. Among them the probe
//! of GHSA-rc4p-x33f-vpr2: a non-final function type reached through
//! `call_indirect`, `ref.test` or `ref.cast`, in `describe` and in `decode`.

use std::time::Duration;

use replica_e2e::daemon::{Daemon, config};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::run_host;
use replica_e2e::wat_plugin::WatPlugin;
use replica_host::{LoadedPlugin, PluginEngine, PluginError, PluginLimits};

/// Declarations shared by the GC probes: a non-final function type, a
/// function of it, reachable by table and by `ref.func`.
const NON_FINAL: &str = r#"
  (type $t (sub (func)))
  (func $f (type $t))
  (table 1 1 funcref)
  (elem (i32.const 0) func $f)
  (elem declare func $f)"#;

/// The three GC probes of the advisory.
const GC_PROBES: [(&str, &str); 3] = [
    ("call_indirect", "(call_indirect (type $t) (i32.const 0))"),
    ("ref.test", "(drop (ref.test (ref $t) (ref.func $f)))"),
    ("ref.cast", "(drop (ref.cast (ref $t) (ref.func $f)))"),
];

/// The advisory's probe `probe` placed in `describe` or in `decode`.
fn gc_probe(probe: &str, in_describe: bool) -> WatPlugin {
    let mut plugin = WatPlugin {
        decls: NON_FINAL.into(),
        ..WatPlugin::default()
    };
    if in_describe {
        plugin.in_describe = probe.into();
    } else {
        plugin.in_decode = probe.into();
    }
    plugin
}

/// One plugin per disabled proposal: (the proposal's name, the plugin).
fn one_per_proposal() -> Vec<(&'static str, WatPlugin)> {
    let decls = |decls: &str| WatPlugin {
        decls: decls.into(),
        ..WatPlugin::default()
    };
    let in_decode = |code: &str| WatPlugin {
        in_decode: code.into(),
        ..WatPlugin::default()
    };
    let memory = |memory: &str, code: &str| WatPlugin {
        memory: Some(memory.into()),
        in_decode: code.into(),
        ..WatPlugin::default()
    };
    let mut cases = vec![
        (
            "function-references",
            WatPlugin {
                decls: "(type $ft (func)) (func $g (type $ft)) (elem declare func $g)".into(),
                in_decode: "(call_ref $ft (ref.func $g))".into(),
                ..WatPlugin::default()
            },
        ),
        (
            "exception-handling",
            decls("(tag $e) (func $thrower (throw $e))"),
        ),
        // Atomics (the canonical ABI itself refuses a shared memory export).
        (
            "threads",
            in_decode("(drop (i32.atomic.load (i32.const 0)))"),
        ),
        ("memory64", decls("(table $t64 i64 1 funcref)")),
        (
            "stack-switching",
            decls("(type $ft (func)) (type $ct (cont $ft))"),
        ),
        (
            "custom-page-sizes",
            memory("(memory (export \"memory\") 1114112 (pagesize 1))", ""),
        ),
        (
            "wide-arithmetic",
            in_decode(
                "(drop (drop (i64.add128 (i64.const 0) (i64.const 0) (i64.const 0) (i64.const 0))))",
            ),
        ),
        (
            "tail-call",
            decls("(func $h) (func $tail (return_call $h))"),
        ),
        ("simd", in_decode("(drop (v128.const i64x2 0 0))")),
        (
            "relaxed-simd",
            in_decode("(drop (i32x4.relaxed_trunc_f32x4_s (v128.const i64x2 0 0)))"),
        ),
        ("multi-memory", decls("(memory $second 1)")),
        (
            "extended-const",
            decls("(global $g i32 (i32.add (i32.const 1) (i32.const 2)))"),
        ),
    ];
    for (_, probe) in GC_PROBES {
        cases.push(("gc", gc_probe(probe, false)));
        cases.push(("gc", gc_probe(probe, true)));
    }
    cases
}

#[test]
fn a_wat_plugin_without_a_probe_loads_and_decodes() {
    // The baseline every hostile case differs from by its probe alone.
    let engine = PluginEngine::new().unwrap();
    let plugin = WatPlugin {
        decodes: true,
        ..WatPlugin::default()
    };
    let loaded = LoadedPlugin::from_bytes(
        &engine,
        "wat.wasm",
        &plugin.component(),
        PluginLimits::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.description().grain_type, "Wat");
    let state = loaded
        .decode(replica_host::SnapshotRef {
            grain_type: "Wat",
            grain_key: "k",
            sequence: 1,
            timestamp_millis: 0,
            source_cluster: "c",
            payload: b"x",
        })
        .unwrap();
    assert_eq!(state.to_json().unwrap(), r#"{"count":1}"#);
}

#[test]
fn every_disabled_proposal_is_refused_at_load_with_its_name() {
    let engine = PluginEngine::new().unwrap();
    for (proposal, plugin) in one_per_proposal() {
        let bytes = plugin.component();
        let err = match LoadedPlugin::from_bytes(&engine, "p.wasm", &bytes, PluginLimits::default())
        {
            Ok(_) => panic!("a plugin using {proposal} loaded:\n{}", plugin.wat()),
            Err(e) => e,
        };
        match &err {
            PluginError::RefusedProposal(refused) => {
                assert_eq!(refused.name, proposal, "{err}\n{}", plugin.wat())
            }
            other => panic!("{proposal}: refused for another reason: {other}"),
        }
        let line = err.to_string();
        assert!(
            line.contains(&format!("uses the WebAssembly proposal `{proposal}`")),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }
}

#[test]
fn gc_probes_are_refused_by_inspect_and_decode_without_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload.bin");
    std::fs::write(&payload, b"x").unwrap();
    for (name, probe) in GC_PROBES {
        for in_describe in [true, false] {
            let file = dir.path().join(format!(
                "{}-{}.wasm",
                name.replace('.', "-"),
                if in_describe { "describe" } else { "decode" }
            ));
            gc_probe(probe, in_describe).write(&file);
            let file = file.to_str().unwrap();
            let (code, stdout, stderr) = run_host(&["plugin", "inspect", file], &[]);
            assert_eq!(code, 2, "inspect {file}: {stdout}{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains(file), "{stderr}");
            assert!(stderr.contains("proposal `gc`"), "{stderr}");
            let (code, _, stderr) = run_host(
                &[
                    "plugin",
                    "decode",
                    file,
                    "--payload",
                    payload.to_str().unwrap(),
                ],
                &[],
            );
            assert_eq!(code, 2, "decode {file}: {stderr}");
            assert!(stderr.contains("proposal `gc`"), "{stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

#[test]
fn run_refuses_a_gc_plugin_at_startup_and_a_reload_refuses_one_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let url = format!("sqlite://{}", db.display());
    let log = LogWriter::open(&url);
    log.full("Wat", "a", 1, b"x".to_vec());

    // Startup: exit 2, one line naming the config entry, the file and the proposal.
    gc_probe(GC_PROBES[1].1, true).write(&dir.path().join("wat.wasm"));
    let plugins = "[[plugin]]\ngrain_type = \"Wat\"\npath = \"wat.wasm\"\n";
    let config_path = dir.path().join("host.toml");
    std::fs::write(&config_path, config(&url, plugins)).unwrap();
    let (code, stderr) = replica_e2e::daemon::run_to_exit(&config_path);
    assert_eq!(code, 2, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(
        line.contains("plugin[0]") && line.contains("wat.wasm"),
        "{line}"
    );
    assert!(line.contains("proposal `gc`"), "{line}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Running: a reload to a GC plugin is refused; the host keeps serving.
    WatPlugin {
        decodes: true,
        ..WatPlugin::default()
    }
    .write(&dir.path().join("wat.wasm"));
    let daemon = Daemon::start(dir.path(), &config(&url, plugins));
    daemon.wait_for_replica("Wat", "a", Duration::from_secs(30), |_| true);
    gc_probe(GC_PROBES[0].1, false).write(&dir.path().join("wat.wasm"));
    daemon.signal("HUP");
    daemon.wait_for_log(
        &["reload refused", "proposal `gc`"],
        Duration::from_secs(30),
    );
    log.full("Wat", "b", 1, b"x".to_vec());
    let b = daemon.wait_for_replica("Wat", "b", Duration::from_secs(30), |_| true);
    assert_eq!(b["state"]["count"], 1);
    daemon.terminate();
}
