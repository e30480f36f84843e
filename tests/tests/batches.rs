//! Decoding in batches through the library API, with real components: one
//! fresh instance decodes several snapshots in a row, and a snapshot that
//! traps, times out or breaks the memory limit fails alone, however it sits
//! in its batch; a quarantined snapshot never reaches the guest.

use std::sync::Arc;
use std::time::Duration;

use replica_e2e::payloads::counter;
use replica_e2e::plugin;
use replica_host::decode::SnapshotDecoder;
use replica_host::plugin::crash_guard::{CrashGuard, SnapshotId, Verdict};
use replica_host::plugin::{
    CallErrorKind, DecodeSlots, LoadedPlugin, PluginDecoder, PluginEngine, PluginLimits,
    SnapshotRef,
};
use replica_host::replication_log::{EntryType, LogEntry};
use replica_host::value::State;

fn misbehave(batch_max: usize) -> LoadedPlugin {
    let limits = PluginLimits {
        timeout: Duration::from_millis(100),
        max_memory_bytes: 32 << 20,
        batch_max,
        ..PluginLimits::default()
    };
    let engine = PluginEngine::new().unwrap();
    LoadedPlugin::load(&engine, &plugin("misbehave-plugin"), limits).unwrap()
}

fn snap<'a>(key: &'a str, payload: &'a [u8]) -> SnapshotRef<'a> {
    SnapshotRef {
        grain_type: "Misbehave",
        grain_key: key,
        sequence: 7,
        timestamp_millis: 1_700_000_000_000,
        source_cluster: "us-east",
        payload,
    }
}

fn json(state: &State) -> String {
    state.to_json().unwrap()
}

/// Ten snapshots with `poison` at `at`: every other one decodes to its
/// count, the poison alone fails with `kind`.
fn poison_fails_alone(poison: &[u8], at: usize, kind: CallErrorKind) {
    let p = misbehave(64);
    let payloads: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            if i == at {
                poison.to_vec()
            } else {
                counter(i as i64)
            }
        })
        .collect();
    let keys: Vec<String> = (0..10).map(|i| format!("g{i}")).collect();
    let snapshots: Vec<SnapshotRef<'_>> = keys
        .iter()
        .zip(&payloads)
        .map(|(k, p)| snap(k, p))
        .collect();
    let results = p.decode_batch(&snapshots, |_| ());
    assert_eq!(results.len(), 10);
    for (i, result) in results.iter().enumerate() {
        if i == at {
            let err = result.as_ref().unwrap_err();
            assert_eq!(err.kind, kind, "{err}");
            assert_eq!(err.grain_key, format!("g{i}"));
        } else {
            let state = result
                .as_ref()
                .unwrap_or_else(|e| panic!("g{i} failed: {e}"));
            assert_eq!(json(state), format!("{{\"count\":{i}}}"));
        }
    }
}

#[test]
fn a_trap_in_a_batch_fails_alone_wherever_it_sits() {
    for at in [0, 1, 5, 9] {
        poison_fails_alone(b"panic", at, CallErrorKind::Trap);
    }
}

#[test]
fn a_timeout_in_a_batch_fails_alone() {
    poison_fails_alone(b"loop", 4, CallErrorKind::Timeout);
}

#[test]
fn a_memory_breach_in_a_batch_fails_alone() {
    poison_fails_alone(b"grow", 3, CallErrorKind::OutOfMemory);
}

#[test]
fn a_batch_shares_one_instance_and_a_fault_ends_it() {
    // `remember:` keeps every payload the instance saw in a static: within
    // a batch, the later calls see the earlier ones (the documented trade);
    // after a fault, the rest run in instances of their own.
    let p = misbehave(64);
    let payloads: [&[u8]; 5] = [
        b"remember:a",
        b"remember:b",
        b"panic",
        b"remember:c",
        b"remember:d",
    ];
    let snapshots: Vec<SnapshotRef<'_>> = payloads.iter().map(|p| snap("k", p)).collect();
    let results = p.decode_batch(&snapshots, |_| ());
    let seen: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(state) => json(state),
            Err(e) => e.kind.as_str().to_string(),
        })
        .collect();
    assert_eq!(
        seen,
        [r#"["a"]"#, r#"["a","b"]"#, "trap", r#"["c"]"#, r#"["d"]"#]
    );
    assert_eq!(p.stats().calls(), 5);
    assert_eq!(p.stats().failures(), 1);
}

#[test]
fn batch_max_bounds_what_one_instance_sees_and_one_is_an_instance_per_snapshot() {
    let payloads: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("remember:{i}").into_bytes())
        .collect();
    let snapshots: Vec<SnapshotRef<'_>> = payloads.iter().map(|p| snap("k", p)).collect();
    let lengths = |batch_max: usize| -> Vec<usize> {
        misbehave(batch_max)
            .decode_batch(&snapshots, |_| ())
            .iter()
            .map(|r| {
                let seen: Vec<String> = serde_json::from_str(&json(r.as_ref().unwrap())).unwrap();
                seen.len()
            })
            .collect()
    };
    assert_eq!(lengths(2), [1, 2, 1, 2, 1]);
    assert_eq!(lengths(1), [1, 1, 1, 1, 1]);
}

#[test]
fn a_reused_instance_decodes_a_long_batch_without_growing_memory() {
    // 200 snapshots of 64 KiB state each in one instance: the SDK's arena
    // starts over between calls, so the batch fits a 4 MiB memory limit.
    let limits = PluginLimits {
        max_memory_bytes: 4 << 20,
        batch_max: 200,
        ..PluginLimits::default()
    };
    let engine = PluginEngine::new().unwrap();
    let p = LoadedPlugin::load(&engine, &plugin("misbehave-plugin"), limits).unwrap();
    let payloads: Vec<Vec<u8>> = (0..200).map(|_| b"text:65536".to_vec()).collect();
    let snapshots: Vec<SnapshotRef<'_>> = payloads.iter().map(|p| snap("k", p)).collect();
    let mut entered = Vec::new();
    let results = p.decode_batch(&snapshots, |i| entered.push(i));
    assert!(
        results.iter().all(|r| r.is_ok()),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    assert_eq!(entered, (0..200).collect::<Vec<_>>());
}

fn entry(key: &str, payload: &[u8]) -> LogEntry {
    LogEntry {
        grain_type: "Misbehave".into(),
        grain_key: key.into(),
        sequence: 7,
        timestamp_millis: 1_700_000_000_000,
        source_cluster: "us-east".into(),
        entry_type: EntryType::FullState,
        payload: payload.to_vec().into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_snapshot_in_a_batch_never_reaches_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(misbehave(64));
    let sha = p.sha256().to_string();
    // The host died twice while decoding `poison`: quarantined.
    for _ in 0..2 {
        let (guard, _) = CrashGuard::open(dir.path(), &[&sha]).unwrap();
        let id = SnapshotId::new(&sha, "Misbehave", "poison", 7);
        std::mem::forget(guard.enter(&id, &Verdict::Clear));
        drop(guard);
    }
    let (guard, recovery) = CrashGuard::open(dir.path(), &[&sha]).unwrap();
    assert_eq!(recovery.newly_quarantined.len(), 1);
    let slots = DecodeSlots::new(2).with_crash_guard(Arc::new(guard));
    let decoder = PluginDecoder::new(Arc::clone(&p), slots);
    let mut entries: Vec<LogEntry> = (0..20)
        .map(|i| entry(&format!("g{i}"), &counter(i)))
        .collect();
    // It would trap if it ran.
    entries.insert(7, entry("poison", b"panic"));
    let results = decoder.decode_batch(&entries).await;
    assert_eq!(results.len(), 21);
    for (e, r) in entries.iter().zip(&results) {
        if e.grain_key == "poison" {
            assert_eq!(r.as_ref().unwrap_err().kind, CallErrorKind::Quarantined);
        } else {
            let n: i64 = e.grain_key[1..].parse().unwrap();
            assert_eq!(json(r.as_ref().unwrap()), format!("{{\"count\":{n}}}"));
        }
    }
    assert_eq!(
        p.stats().calls(),
        20,
        "the quarantined snapshot was never called"
    );
    assert_eq!(p.stats().failures(), 0);
}
