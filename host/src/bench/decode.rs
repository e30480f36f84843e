//! `replica-host bench decode`: snapshots per second through each sample
//! plugin against the same Rust decode done natively in the host, into the
//! same stored representation.
//!
//! - **native** (baseline): bincode / serde_json into the state type of
//!   `demo/orlando.rs`, then the guest SDK's encoder
//!   (`replica_encoding`, `Serialize` → the replica value encoding)
//!   into the shared buffer the store keeps (`Arc<[u8]>`). No validation:
//!   a native value needs none. Checked to render the same JSON as the
//!   plugin's state before timing.
//! - **batch (default)**: [`LoadedPlugin::decode_batch`] of
//!   [`PluginLimits::DEFAULT_BATCH_MAX`] snapshots: one fresh instance
//!   decodes them one after another, each marked in flight in a crash guard
//!   as the daemon does. This is what the host does when several snapshots
//!   of a type are ready (catch-up, re-decode).
//! - **fresh (pooling)**: [`LoadedPlugin::decode`] with the default engine:
//!   a fresh instance per call in a recycled pool slot: `batch_max = 1`, and
//!   a lone live snapshot.
//! - **fresh (pooling, decommit)**: the same pool, but slots reset by
//!   decommitting every dirty page (`keep_resident` 0, wasmtime's default).
//! - **fresh (on-demand)**: the same with wasmtime's on-demand allocator (a
//!   new mapping per instance), the host's allocator before this benchmark.
//! - **warm**: one instance reused for every call (not the host's isolation;
//!   the floor of what reuse could give).
//! - **fresh, no arena**: the default path, with the sample plugins built
//!   again without the SDK's bump arena (`RUSTFLAGS=--cfg
//!   replica_guest_no_arena`, in a target dir of their own): what the arena
//!   buys.
//!
//! Where the time goes (per call, µs): instantiation alone (fresh pooled
//! instance, no call), the call on a warm instance without validating (copy
//! in, guest decode and encoding, copy out), validating alone; and natively
//! the decode alone and the encoding alone.
//!
//! A benchmark is one file: its run and its report are read together (feature
//! `tools`, not part of the library's data path).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::workload::{self, Size};
use super::{machine, median, sample_plugin, spread};
use crate::demo::orlando::{self, AccountState, CounterState, UserProfile};
use crate::plugin::{
    EngineOptions, InstanceAllocation, LoadedPlugin, PluginEngine, PluginLimits, SnapshotRef,
};
use crate::value::{OutputLimits, State};

/// What a stored state costs beyond its bytes: the `Arc<[u8]>` header
/// (strong and weak counts) and the replica entry's fat pointer to it.
const STORED_FIXED_BYTES: usize =
    2 * std::mem::size_of::<usize>() + std::mem::size_of::<Arc<[u8]>>();

/// What `bench decode` runs.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// The sample plugins' sources.
    pub plugins_dir: PathBuf,
    /// Time per measurement.
    pub seconds: f64,
    /// Rounds; each round measures every variant once, interleaved.
    pub repeat: usize,
    /// Only the cases whose name, grain type and payload size (`BankAccount
    /// ~1 KiB`), contains this (all when empty).
    pub only: String,
    /// Only run the default path (batches in one fresh instance, crash
    /// guard on), for a profiler.
    pub profile: bool,
}

type NativeFn = fn(&[u8]) -> Arc<[u8]>;

/// One plugin and payload.
struct Case {
    grain_type: &'static str,
    size: Size,
    payload: Vec<u8>,
    /// The same state's bincode size (the payload itself, except for
    /// UserProfile's JSON payloads), for the stored-bytes table.
    bincode_len: usize,
    /// Bytes of the encoding written once per buffer, whatever the values:
    /// the version byte and the first use of each field name.
    once_per_buffer: usize,
    native: NativeFn,
    /// The native decode alone (the Rust state, not encoded), for the breakdown.
    decode_only: fn(&[u8]),
}

/// Encodes a natively decoded state into what the store keeps.
fn stored<T: serde::Serialize>(state: &T, payload: &[u8]) -> Arc<[u8]> {
    let capacity = payload.len() + payload.len() / 4 + 32;
    let bytes = replica_encoding::to_bytes_with_capacity(state, capacity).expect("encodable");
    Arc::from(bytes)
}

/// What one buffer spends once (see [`Case::once_per_buffer`]): the state
/// alone against two copies of it in a list, where the second copy refers
/// to the names the first one wrote.
fn once_per_buffer<T: serde::Serialize>(state: &T) -> usize {
    let one = replica_encoding::to_bytes(state).expect("encodable").len();
    let two = replica_encoding::to_bytes(&[state, state])
        .expect("encodable")
        .len();
    // two = version + seq tag + first copy + second copy + end.
    let second = two - one - 2;
    one - second
}

fn native_bincode<T: DeserializeOwned + serde::Serialize>(payload: &[u8]) -> Arc<[u8]> {
    let (state, _): (T, usize) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard()).expect("bincode");
    stored(&state, payload)
}

fn native_json<T: DeserializeOwned + serde::Serialize>(payload: &[u8]) -> Arc<[u8]> {
    let state: T = serde_json::from_slice(payload).expect("json");
    stored(&state, payload)
}

fn decode_bincode<T: DeserializeOwned>(payload: &[u8]) {
    let decoded: (T, usize) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard()).expect("bincode");
    std::hint::black_box(decoded);
}

fn decode_json<T: DeserializeOwned>(payload: &[u8]) {
    let decoded: T = serde_json::from_slice(payload).expect("json");
    std::hint::black_box(decoded);
}

fn cases() -> Vec<Case> {
    let counter = workload::counter_state(7);
    let mut cases = vec![Case {
        grain_type: "Counter",
        size: Size::Natural,
        payload: orlando::bincode(&counter),
        bincode_len: orlando::bincode(&counter).len(),
        once_per_buffer: once_per_buffer(&counter),
        native: native_bincode::<CounterState>,
        decode_only: decode_bincode::<CounterState>,
    }];
    for target in [100, 1024, 64 * 1024] {
        let state = workload::account_state(7, target);
        let payload = orlando::bincode(&state);
        cases.push(Case {
            grain_type: "BankAccount",
            size: Size::About(target),
            bincode_len: payload.len(),
            payload,
            once_per_buffer: once_per_buffer(&state),
            native: native_bincode::<AccountState>,
            decode_only: decode_bincode::<AccountState>,
        });
    }
    for target in [100, 1024, 64 * 1024] {
        let state = workload::user_state(7, target);
        cases.push(Case {
            grain_type: "UserProfile",
            size: Size::About(target),
            payload: orlando::json(&state),
            bincode_len: orlando::bincode(&state).len(),
            once_per_buffer: once_per_buffer(&state),
            native: native_json::<UserProfile>,
            decode_only: decode_json::<UserProfile>,
        });
    }
    cases
}

/// Each sample plugin's grain type and directory (under the plugins dir).
const PLUGIN_DIRS: [(&str, &str); 3] = [
    ("Counter", "counter"),
    ("BankAccount", "bank-account"),
    ("UserProfile", "user-profile"),
];

/// The cases whose name, grain type and payload size (`BankAccount ~1 KiB`),
/// contains `only`.
fn selected_cases(only: &str) -> impl Iterator<Item = Case> {
    let only = only.to_string();
    cases()
        .into_iter()
        .filter(move |c| format!("{} {}", c.grain_type, c.size.label()).contains(only.as_str()))
}

/// The default path for `batch`: one fresh instance decodes it, each
/// snapshot marked in flight in `guard` as the daemon does.
fn guarded_batch(
    plugin: &LoadedPlugin,
    guard: &crate::plugin::crash_guard::CrashGuard,
    batch: &[SnapshotRef<'_>],
    sequence: &mut u64,
) {
    let results = plugin.decode_batch(batch, |i| {
        *sequence += 1;
        let id = crate::plugin::crash_guard::SnapshotId::of(
            plugin.sha256_bytes(),
            batch[i].grain_type,
            batch[i].grain_key,
            *sequence,
        );
        let verdict = guard.verdict(&id);
        guard.enter(&id, &verdict)
    });
    assert!(results.iter().all(Result::is_ok), "batch decode");
    std::hint::black_box(results);
}

/// `--profile`: only the default path (a batch in one fresh instance, crash
/// guard on), for a profiler. Builds and loads only the sample plugins the
/// selected cases need, so that a profiler (or `valgrind`) sees little
/// else; the time in `LoadedPlugin::decode_batch` divided by its calls is
/// one batch. The pool has four slots instead of the default's 128, whose
/// address space reservation (~0.5 TiB) valgrind refuses; a call's work
/// and the compiled code are the same.
fn profile(options: &DecodeOptions) -> anyhow::Result<()> {
    let engine = PluginEngine::with_options(EngineOptions {
        pool_slots: 4,
        ..EngineOptions::default()
    })?;
    let guard_dir = tempfile::tempdir()?;
    let (guard, _) = crate::plugin::crash_guard::CrashGuard::open(guard_dir.path(), &[])?;
    let mut sequence = 0u64;
    for case in selected_cases(&options.only) {
        let dir = PLUGIN_DIRS
            .iter()
            .find(|(t, _)| *t == case.grain_type)
            .expect("a sample plugin")
            .1;
        let path = sample_plugin(&options.plugins_dir, dir)?;
        let plugin = LoadedPlugin::load(&engine, &path, PluginLimits::default())?;
        let batch = vec![snapshot(case.grain_type, &case.payload); PluginLimits::DEFAULT_BATCH_MAX];
        let rate = batch.len() as f64
            * rate(options.seconds, || {
                guarded_batch(&plugin, &guard, &batch, &mut sequence)
            });
        println!(
            "{} {}: {rate:.0} snapshots/s in batches of {}",
            case.grain_type,
            case.size.label(),
            batch.len()
        );
    }
    Ok(())
}

/// Calls per second of `f`, run for about `seconds` after a short warm-up.
fn rate(seconds: f64, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut calls = 0u64;
    let mut batch = 1u64;
    loop {
        for _ in 0..batch {
            f();
        }
        calls += batch;
        let elapsed = started.elapsed();
        if elapsed >= budget {
            return calls as f64 / elapsed.as_secs_f64();
        }
        batch = (batch * 2).min(4096);
    }
}

fn snapshot<'a>(grain_type: &'a str, payload: &'a [u8]) -> SnapshotRef<'a> {
    SnapshotRef {
        grain_type,
        grain_key: "bench-grain",
        sequence: 1,
        timestamp_millis: 1_700_000_000_000,
        source_cluster: "us-east",
        payload,
    }
}

/// One round's figures for one case (calls per second, µs per call).
#[derive(Default, Clone)]
struct Round {
    native: f64,
    batch: f64,
    pooled: f64,
    no_arena: f64,
    on_demand: f64,
    decommit: f64,
    warm: f64,
    instantiate_us: f64,
    call_us: f64,
    validate_us: f64,
    native_decode_us: f64,
    native_convert_us: f64,
}

/// Runs the benchmark and prints its tables (Markdown) on stdout.
pub fn run(options: &DecodeOptions) -> anyhow::Result<()> {
    if options.profile {
        return profile(options);
    }
    let plugins = PLUGIN_DIRS
        .iter()
        .map(|&(grain_type, dir)| {
            anyhow::Ok((grain_type, sample_plugin(&options.plugins_dir, dir)?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let no_arena_target = std::env::temp_dir().join("replica-bench-no-arena");
    let no_arena_env = [
        (
            "CARGO_TARGET_DIR",
            no_arena_target.to_str().unwrap_or("/tmp"),
        ),
        ("RUSTFLAGS", "--cfg replica_guest_no_arena"),
    ];
    let no_arena_plugins = PLUGIN_DIRS.map(|(grain_type, dir)| {
        (
            grain_type,
            crate::authoring::build::build_plugin_with_env(
                &options.plugins_dir.join(dir),
                &no_arena_env,
            ),
        )
    });
    let pooled_engine = PluginEngine::new()?;
    // An engine of its own: two modules taking turns in one pool take over
    // each other's slots (wasmtime's module affinity), which would charge
    // one variant for the other's slot changes.
    let no_arena_engine = PluginEngine::new()?;
    let warm_engine = PluginEngine::new()?;
    let on_demand_engine = PluginEngine::with_options(EngineOptions {
        allocation: InstanceAllocation::OnDemand,
        ..EngineOptions::default()
    })?;
    let decommit_engine = PluginEngine::with_options(EngineOptions {
        keep_resident: 0,
        ..EngineOptions::default()
    })?;
    let load = |engine: &PluginEngine, grain_type: &str| -> anyhow::Result<LoadedPlugin> {
        let path = &plugins
            .iter()
            .find(|(t, _)| *t == grain_type)
            .expect("a sample plugin")
            .1;
        Ok(LoadedPlugin::load(engine, path, PluginLimits::default())?)
    };

    println!("## bench decode ({})", machine());
    println!();
    println!(
        "{} s per measurement, {} interleaved rounds; ratios are plugin ÷ native throughput \
         (median of rounds, min–max in brackets).",
        options.seconds, options.repeat
    );
    println!();
    let guard_dir = tempfile::tempdir()?;
    let (guard, _) = crate::plugin::crash_guard::CrashGuard::open(guard_dir.path(), &[])?;
    let mut sequence = 0u64;
    let mut rows = Vec::new();
    let mut breakdowns = Vec::new();
    let mut stored_rows = Vec::new();
    for case in selected_cases(&options.only) {
        let pooled = load(&pooled_engine, case.grain_type)?;
        let on_demand = load(&on_demand_engine, case.grain_type)?;
        let decommit = load(&decommit_engine, case.grain_type)?;
        // The reused instance lives in a pool of its own: its memory grows
        // with every call it keeps (nothing is freed between calls), and
        // the slot it leaves behind would slow the fresh instances after it.
        let warm_plugin = load(&warm_engine, case.grain_type)?;
        let no_arena = match &no_arena_plugins
            .iter()
            .find(|(t, _)| *t == case.grain_type)
            .expect("a sample plugin")
            .1
        {
            Ok(path) => LoadedPlugin::load(&no_arena_engine, path, PluginLimits::default())?,
            Err(e) => anyhow::bail!("building {} without the arena: {e:#}", case.grain_type),
        };
        let snap = snapshot(case.grain_type, &case.payload);

        // The plugin's state must be the native one, or the comparison is moot.
        let native_state =
            State::validate(&(case.native)(&case.payload), &OutputLimits::default())?;
        let plugin_state = pooled.decode(snap)?;
        anyhow::ensure!(
            native_state.to_json()? == plugin_state.to_json()?,
            "{} {}: the plugin's state differs from the native one",
            case.grain_type,
            case.size.label()
        );

        stored_rows.push(format!(
            "| {} | {} | {} | {} | {:.2} | {} | **{:.2}** |",
            case.grain_type,
            case.size.label(),
            case.bincode_len,
            plugin_state.encoded_len(),
            plugin_state.encoded_len() as f64 / case.bincode_len as f64,
            case.once_per_buffer,
            (plugin_state.encoded_len() - case.once_per_buffer) as f64 / case.bincode_len as f64,
        ));

        let batch = vec![snap; PluginLimits::DEFAULT_BATCH_MAX];
        let mut decode_batch = || guarded_batch(&pooled, &guard, &batch, &mut sequence);
        let mut rounds = Vec::new();
        for _ in 0..options.repeat {
            let mut r = Round {
                native: rate(options.seconds, || {
                    std::hint::black_box((case.native)(&case.payload));
                }),
                batch: batch.len() as f64 * rate(options.seconds, &mut decode_batch),
                pooled: rate(options.seconds, || {
                    std::hint::black_box(pooled.decode(snap).expect("decode"));
                }),
                no_arena: rate(options.seconds, || {
                    std::hint::black_box(no_arena.decode(snap).expect("decode"));
                }),
                on_demand: rate(options.seconds, || {
                    std::hint::black_box(on_demand.decode(snap).expect("decode"));
                }),
                decommit: rate(options.seconds, || {
                    std::hint::black_box(decommit.decode(snap).expect("decode"));
                }),
                ..Round::default()
            };
            let mut warm = warm_plugin.warm_instance()?;
            r.warm = rate(options.seconds, || {
                std::hint::black_box(warm.decode(snap).expect("decode"));
            });
            // Where the time goes.
            r.instantiate_us = 1e6
                / rate(options.seconds, || {
                    pooled.instantiate_only().expect("instantiate");
                });
            r.call_us = 1e6
                / rate(options.seconds, || {
                    std::hint::black_box(warm.decode_bytes(snap).expect("decode"));
                });
            let bytes = warm.decode_bytes(snap)?;
            r.validate_us = 1e6
                / rate(options.seconds, || {
                    std::hint::black_box(warm.validate(&bytes).expect("validate"));
                });
            r.native_decode_us = 1e6
                / rate(options.seconds, || {
                    (case.decode_only)(&case.payload);
                });
            r.native_convert_us = (1e6 / r.native - r.native_decode_us).max(0.0);
            rounds.push(r);
        }
        let ratio = |f: fn(&Round) -> f64| -> (f64, String) {
            let ratios: Vec<f64> = rounds.iter().map(|r| f(r) / r.native).collect();
            (median(&ratios), spread(&ratios, 2))
        };
        let (batch_ratio, batch_spread) = ratio(|r| r.batch);
        let (pooled_ratio, pooled_spread) = ratio(|r| r.pooled);
        let (no_arena_ratio, no_arena_spread) = ratio(|r| r.no_arena);
        let (on_demand_ratio, on_demand_spread) = ratio(|r| r.on_demand);
        let (decommit_ratio, decommit_spread) = ratio(|r| r.decommit);
        let (warm_ratio, warm_spread) = ratio(|r| r.warm);
        let med = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        rows.push(format!(
            "| {} | {} | {} | {:.0} | **{:.2}** ({}) | {:.2} ({}) | {:.2} ({}) | {:.2} ({}) | {:.2} ({}) | {:.2} ({}) |",
            case.grain_type,
            case.size.label(),
            case.payload.len(),
            med(|r| r.native),
            batch_ratio,
            batch_spread,
            pooled_ratio,
            pooled_spread,
            no_arena_ratio,
            no_arena_spread,
            decommit_ratio,
            decommit_spread,
            on_demand_ratio,
            on_demand_spread,
            warm_ratio,
            warm_spread,
        ));
        breakdowns.push(format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            case.grain_type,
            case.size.label(),
            1e6 / med(|r| r.pooled),
            med(|r| r.instantiate_us),
            med(|r| r.call_us),
            med(|r| r.validate_us),
            med(|r| r.native_decode_us),
            med(|r| r.native_convert_us),
            1e6 / med(|r| r.native),
        ));
    }
    println!(
        "| plugin | payload | bytes | native calls/s | batch of {} in one fresh instance, crash guard on (default) ÷ native | fresh instance per call, pooling, reset in place (`batch_max = 1`) ÷ native | same, plugin without the SDK's arena ÷ native | fresh, pooling, decommit on reset ÷ native | fresh, on-demand allocator ÷ native | warm instance (reused without bound) ÷ native |",
        PluginLimits::DEFAULT_BATCH_MAX
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
    println!();
    println!("Where the time goes, µs per call (medians):");
    println!();
    println!(
        "| plugin | payload | fresh pooled call, total | instantiate (pooled) | call on a warm instance (copy in, guest decode + encoding, copy out) | validate into the stored state | native decode | native encoding into the stored buffer | native total |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in breakdowns {
        println!("{row}");
    }
    println!();
    println!(
        "Stored state per replica: the encoded buffer the store keeps, against the same \
         state's bincode size. Each buffer also costs a fixed {} bytes (the shared \
         buffer's header and the replica's pointer to it).",
        STORED_FIXED_BYTES
    );
    println!();
    println!(
        "| plugin | payload | bincode bytes | stored state bytes | stored ÷ bincode | of which once per buffer (version, first use of each field name) | rest ÷ bincode |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for row in stored_rows {
        println!("{row}");
    }
    crash_guard_cost(&load(&pooled_engine, "Counter")?, options.seconds)
}

/// What the crash guard adds to a decode call in the daemon (identify the
/// snapshot, check its verdict, write and clear a slot of the mapped file),
/// against the same Counter call without it, measured in turns.
fn crash_guard_cost(plugin: &LoadedPlugin, seconds: f64) -> anyhow::Result<()> {
    use crate::plugin::crash_guard::{CrashGuard, SnapshotId};
    let dir = tempfile::tempdir()?;
    let (guard, _) = CrashGuard::open(dir.path(), &[plugin.sha256()])?;
    let payload = crate::demo::orlando::bincode(&crate::demo::orlando::CounterState { count: 7 });
    let mut sequence = 0u64;
    let mut bare = Vec::new();
    let mut guarded = Vec::new();
    let mut alone = Vec::new();
    for _ in 0..3 {
        bare.push(rate(seconds, || {
            std::hint::black_box(plugin.decode(snapshot("Counter", &payload)).ok());
        }));
        guarded.push(rate(seconds, || {
            sequence += 1;
            let id = SnapshotId::new(plugin.sha256(), "Counter", "bench-grain", sequence);
            let verdict = guard.verdict(&id);
            let _in_flight = guard.enter(&id, &verdict);
            std::hint::black_box(plugin.decode(snapshot("Counter", &payload)).ok());
        }));
        alone.push(rate(seconds, || {
            sequence += 1;
            let id = SnapshotId::new(plugin.sha256(), "Counter", "bench-grain", sequence);
            let verdict = guard.verdict(&id);
            std::hint::black_box(guard.enter(&id, &verdict));
        }));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (bare, guarded, alone) = (median(&mut bare), median(&mut guarded), median(&mut alone));
    println!();
    println!(
        "Crash guard (daemon only), Counter, medians of 3 turns: a bare call {:.2} µs, a guarded call \
         {:.2} µs (guarded ÷ bare throughput **{:.2}×**); the guard's bookkeeping alone {:.2} µs per call.",
        1e6 / bare,
        1e6 / guarded,
        guarded / bare,
        1e6 / alone
    );
    Ok(())
}
