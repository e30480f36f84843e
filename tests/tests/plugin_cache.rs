//! The precompiled-plugin cache with real components: a hit after a miss,
//! never a stale artifact, corrupt or foreign files refused safely, and the
//! isolation of fresh instances under the pooling allocator.

use std::os::unix::fs::PermissionsExt;

use replica_e2e::orlando::{self, CounterState};
use replica_e2e::plugin;
use replica_host::{
    CacheDirError, CacheOutcome, ComponentCache, EngineOptions, InstanceAllocation, LoadedPlugin,
    PluginEngine, PluginLimits, SnapshotRef,
};
use tempfile::TempDir;

fn load(engine: &PluginEngine, cache: &ComponentCache, bytes: &[u8]) -> LoadedPlugin {
    LoadedPlugin::from_bytes_with_cache(
        engine,
        "counter.wasm",
        bytes,
        PluginLimits::default(),
        Some(cache),
    )
    .expect("load through the cache")
}

fn decodes(plugin: &LoadedPlugin) -> i64 {
    let payload = orlando::bincode(&CounterState { count: -42 });
    let value = plugin
        .decode(SnapshotRef {
            grain_type: "Counter",
            grain_key: "c",
            sequence: 1,
            timestamp_millis: 0,
            source_cluster: "us-east",
            payload: &payload,
        })
        .expect("decode");
    match value.field("count") {
        Some(replica_host::Value::I64(n)) => n,
        other => panic!("unexpected {other:?}"),
    }
}

fn artifacts(cache: &ComponentCache) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

/// The component with a custom section appended: same code, another file.
fn with_custom_section(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let name = b"replica-test";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(tag.as_bytes());
    out.push(0);
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    out
}

#[test]
fn second_load_is_a_hit_and_changed_files_or_engines_miss() {
    let dir = TempDir::new().unwrap();
    let cache = ComponentCache::open(dir.path().join("cache")).unwrap();
    let mode = std::fs::metadata(cache.dir()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let bytes = std::fs::read(plugin("counter-plugin")).unwrap();
    let engine = PluginEngine::new().unwrap();

    let first = load(&engine, &cache, &bytes);
    assert_eq!(first.cache_outcome(), CacheOutcome::Miss);
    assert_eq!(artifacts(&cache).len(), 1);
    let second = load(&engine, &cache, &bytes);
    assert_eq!(second.cache_outcome(), CacheOutcome::Hit);
    assert_eq!(decodes(&second), -42);

    // A changed file has another key.
    let changed = with_custom_section(&bytes, "v2");
    assert_eq!(
        load(&engine, &cache, &changed).cache_outcome(),
        CacheOutcome::Miss
    );
    assert_eq!(artifacts(&cache).len(), 2);

    // So does another engine configuration, when wasmtime says its code differs.
    let other = PluginEngine::with_options(EngineOptions {
        allocation: InstanceAllocation::OnDemand,
        ..EngineOptions::default()
    })
    .unwrap();
    let outcome = load(&other, &cache, &bytes).cache_outcome();
    if other.compatibility_key() == engine.compatibility_key() {
        assert_eq!(outcome, CacheOutcome::Hit);
    } else {
        assert_eq!(outcome, CacheOutcome::Miss);
    }
    assert_eq!(
        ComponentCache::key(&engine, second.sha256()),
        artifacts(&cache)
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .find(|k| *k == ComponentCache::key(&engine, second.sha256()))
            .unwrap()
    );
}

#[test]
fn corrupt_or_foreign_artifacts_are_refused_and_replaced() {
    let dir = TempDir::new().unwrap();
    let cache = ComponentCache::open(dir.path()).unwrap();
    let bytes = std::fs::read(plugin("counter-plugin")).unwrap();
    let engine = PluginEngine::new().unwrap();
    load(&engine, &cache, &bytes);
    let path = artifacts(&cache).pop().unwrap();

    // Flip a byte in the compiled code: the checksum catches it.
    let mut data = std::fs::read(&path).unwrap();
    let last = data.len() - 10;
    data[last] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    let reloaded = load(&engine, &cache, &bytes);
    assert_eq!(reloaded.cache_outcome(), CacheOutcome::Refused);
    assert_eq!(decodes(&reloaded), -42);
    assert_eq!(
        load(&engine, &cache, &bytes).cache_outcome(),
        CacheOutcome::Hit,
        "the refused artifact was rewritten"
    );

    // Truncated, then garbage, then a symlink: each refused, never loaded.
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() / 2]).unwrap();
    assert_eq!(
        load(&engine, &cache, &bytes).cache_outcome(),
        CacheOutcome::Refused
    );
    std::fs::write(&path, b"not an artifact").unwrap();
    assert_eq!(
        load(&engine, &cache, &bytes).cache_outcome(),
        CacheOutcome::Refused
    );
    let elsewhere = dir.path().join("elsewhere.bin");
    std::fs::rename(&path, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    let via_link = load(&engine, &cache, &bytes);
    assert_eq!(via_link.cache_outcome(), CacheOutcome::Refused);
    assert_eq!(decodes(&via_link), -42);
    assert!(
        !std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink was replaced by an artifact of our own"
    );
}

#[test]
fn a_directory_others_can_write_is_refused() {
    let dir = TempDir::new().unwrap();
    let open = dir.path().join("shared");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = ComponentCache::open(&open).unwrap_err();
    assert!(
        matches!(err, CacheDirError::Writable { mode: 0o777, .. }),
        "{err}"
    );
}

/// Nothing a call leaves in the guest survives into the next call, with
/// pooled (recycled, reset) slots as with fresh mappings, and more callers
/// than slots wait instead of failing.
#[test]
fn fresh_instances_start_clean_with_either_allocator() {
    for allocation in [InstanceAllocation::Pooling, InstanceAllocation::OnDemand] {
        let engine = PluginEngine::with_options(EngineOptions {
            allocation,
            pool_slots: 2,
            ..EngineOptions::default()
        })
        .unwrap();
        let limits = PluginLimits {
            max_memory_bytes: 16 << 20,
            ..PluginLimits::default()
        };
        let plugin = LoadedPlugin::load(&engine, &plugin("misbehave-plugin"), limits).unwrap();
        let snap = |key: &'static str, payload: &'static [u8]| SnapshotRef {
            grain_type: "Misbehave",
            grain_key: key,
            sequence: 1,
            timestamp_millis: 0,
            source_cluster: "us-east",
            payload,
        };
        // A call that fills its memory up to the limit and traps...
        assert!(plugin.decode(snap("g", b"grow")).is_err());
        std::thread::scope(|scope| {
            for t in 0..4 {
                let plugin = &plugin;
                scope.spawn(move || {
                    for i in 0..25 {
                        let secret = format!("remember:{t}-{i}");
                        let payload: &'static [u8] = secret.clone().into_bytes().leak();
                        let value = plugin.decode(snap("k", payload)).unwrap();
                        // ...and every later call sees only its own payload.
                        assert_eq!(
                            value.to_json().unwrap(),
                            format!("[\"{t}-{i}\"]"),
                            "{allocation:?}"
                        );
                    }
                });
            }
        });
    }
}

/// The daemon's startup loading (`PluginSet::load`) goes through the cache
/// named by `[cache] dir`, resolved against the config file.
#[test]
fn daemon_startup_uses_the_configured_cache() {
    let dir = TempDir::new().unwrap();
    std::fs::copy(plugin("counter-plugin"), dir.path().join("counter.wasm")).unwrap();
    let text = "cluster_id = \"c\"\n[log]\nurl = \"memory://\"\n[cache]\ndir = \"compiled\"\n\
                [[plugin]]\ngrain_type = \"Counter\"\npath = \"counter.wasm\"\n";
    let path = dir.path().join("host.toml");
    std::fs::write(&path, text).unwrap();
    let config = replica_host::daemon::Config::load(&path).unwrap();
    let engine = PluginEngine::new().unwrap();
    let outcome =
        |set: &replica_host::test_seam::PluginSet| set.get("Counter").unwrap().cache_outcome();
    let first = replica_host::test_seam::PluginSet::load(&config, &engine).unwrap();
    assert_eq!(outcome(&first), CacheOutcome::Miss);
    let second = replica_host::test_seam::PluginSet::load(&config, &engine).unwrap();
    assert_eq!(outcome(&second), CacheOutcome::Hit);
    assert!(dir.path().join("compiled").is_dir());
}
