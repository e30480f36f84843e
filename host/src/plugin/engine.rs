//! The one shared wasmtime engine, its epoch ticker, the linker that offers
//! plugins their only import (logging), and the gate that bounds how many
//! plugin instances are alive at once.
//!
//! # Instance allocation
//! Every decode still runs in a *fresh* instance (see [`super::loaded`]).
//! What makes that cheap is the allocator:
//! - [`InstanceAllocation::Pooling`] (the default): wasmtime's pooling
//!   allocator reserves [`EngineOptions::pool_slots`] instance slots up front
//!   and hands each new instance a slot. When the instance's store is dropped
//!   wasmtime resets the slot before any other instance can get it: the
//!   linear memory is returned to its initial image: the pages the guest
//!   dirtied are found with Linux's `PAGEMAP_SCAN` and, up to
//!   [`EngineOptions::keep_resident`] bytes, copied back from the image (or
//!   zeroed) in place; everything beyond is decommitted (`madvise(
//!   MADV_DONTNEED)`, so it reads back as the copy-on-write image or zeros).
//!   Tables are reset the same way and globals are re-initialised by the next
//!   instantiation. A new instance in a recycled slot therefore sees exactly
//!   what a brand-new instance sees: nothing of an earlier call survives.
//!   Resetting in place instead of decommitting spares the next instance the
//!   page faults (and the kernel the TLB shootdowns) of bringing those pages
//!   back; without `PAGEMAP_SCAN` (Linux < 6.7) wasmtime falls back to
//!   zeroing/decommitting everything.
//! - [`InstanceAllocation::OnDemand`]: every instance maps its own memory and
//!   unmaps it on drop (wasmtime's default; kept for comparison).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::call_state::CallState;
use crate::contract::Plugin as PluginWorld;

/// How often the epoch advances; per-call timeouts are rounded up to it.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The wasmtime version the host is built with (pinned in `host/Cargo.toml`;
/// a unit test keeps the two equal). Part of every precompiled-cache key.
pub const WASMTIME_VERSION: &str = "48.0.10";

/// How instances get their memory, tables and instance state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAllocation {
    /// Slots reserved up front and recycled (reset) between instances.
    Pooling,
    /// Fresh mappings for every instance, released on drop.
    OnDemand,
}

/// How the engine is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// The instance allocator.
    pub allocation: InstanceAllocation,
    /// With pooling: how many instances may be alive at once. Further calls
    /// wait for a slot (they never fail for lack of one).
    pub pool_slots: u32,
    /// With pooling: how many bytes of a slot's linear memory (and table)
    /// are reset in place (dirty pages found with `PAGEMAP_SCAN`, copied back
    /// from the image or zeroed) rather than decommitted, so the next
    /// instance does not page-fault them in again. Memory beyond it is
    /// decommitted (`madvise(MADV_DONTNEED)`).
    pub keep_resident: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            allocation: InstanceAllocation::Pooling,
            pool_slots: 128,
            keep_resident: 1 << 20,
        }
    }
}

/// Bounds the number of live instances to the pool's size, so that a burst
/// of concurrent calls waits for a slot instead of failing.
#[derive(Debug)]
pub(crate) struct InstanceGate {
    /// Slots free now.
    free: Mutex<usize>,
    /// Woken when a slot is freed.
    freed: Condvar,
    /// Whether there is a bound at all (pooling) or every acquire passes (on demand).
    bounded: bool,
}

/// A slot held until dropped.
pub(crate) struct GatePermit<'a>(&'a InstanceGate);

impl InstanceGate {
    fn new(slots: Option<usize>) -> Self {
        Self {
            free: Mutex::new(slots.unwrap_or(0)),
            freed: Condvar::new(),
            bounded: slots.is_some(),
        }
    }

    /// Waits for a free slot (at once when unbounded).
    pub(crate) fn acquire(&self) -> GatePermit<'_> {
        if self.bounded {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            while *free == 0 {
                free = self
                    .freed
                    .wait(free)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            *free -= 1;
        }
        GatePermit(self)
    }
}

impl Drop for GatePermit<'_> {
    fn drop(&mut self) {
        if self.0.bounded {
            let mut free = self.0.free.lock().unwrap_or_else(PoisonError::into_inner);
            *free += 1;
            self.0.freed.notify_one();
        }
    }
}

/// The shared engine and linker every plugin is compiled and instantiated with.
///
/// Cheap to clone. A background thread advances the engine's epoch every
/// `EPOCH_TICK` for as long as any clone of the engine lives.
#[derive(Clone)]
pub struct PluginEngine {
    /// The wasmtime engine every plugin is compiled for.
    pub(crate) engine: Engine,
    /// Offers plugins their one import, logging.
    pub(crate) linker: Arc<Linker<CallState>>,
    /// Bounds live instances to the pool's slots.
    pub(crate) gate: Arc<InstanceGate>,
    /// How instances are allocated.
    options: EngineOptions,
    /// The engine-compatibility hash, part of every precompiled-cache key.
    compatibility: Arc<str>,
}

impl PluginEngine {
    /// Creates the engine with [`EngineOptions::default`] (pooling), its
    /// linker and the epoch ticker thread.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_options(EngineOptions::default())
    }

    /// Creates the engine with the given options.
    pub fn with_options(options: EngineOptions) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // Exactly the proposals plugins need; everything else is refused at
        // compile time (see `features`).
        super::features::apply(&mut config);
        // Every guest runs in a fresh instance; copy-on-write memory images
        // keep instantiation cheap.
        config.memory_init_cow(true);
        // A profiling aid (BENCHMARKS.md): with `REPLICA_PERFMAP` set,
        // wasmtime writes /tmp/perf-<pid>.map, so `perf` names the guest's
        // functions.
        if std::env::var_os("REPLICA_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let slots = match options.allocation {
            InstanceAllocation::Pooling => {
                let slots = options.pool_slots.max(1);
                let mut pool = PoolingAllocationConfig::new();
                // A plugin component has one memory, a few core instances
                // (the module and wit-component's shims) and tables.
                pool.total_component_instances(slots)
                    .total_memories(slots)
                    .total_core_instances(slots.saturating_mul(8))
                    .total_tables(slots.saturating_mul(8))
                    .max_memories_per_module(1)
                    .max_tables_per_module(4)
                    // Whatever limit a plugin is configured with is enforced
                    // by its store's limiter; the pool only caps it at 4 GiB.
                    .max_memory_size(1 << 32)
                    .linear_memory_keep_resident(options.keep_resident)
                    .table_keep_resident(options.keep_resident)
                    .pagemap_scan(wasmtime::Enabled::Auto);
                config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
                Some(slots as usize)
            }
            InstanceAllocation::OnDemand => None,
        };
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<CallState>::new(&engine);
        PluginWorld::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;

        let compatibility = compatibility_key(&engine);
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("replica-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            gate: Arc::new(InstanceGate::new(slots)),
            options,
            compatibility: Arc::from(compatibility),
        })
    }

    /// The underlying wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The options the engine was made with.
    pub fn options(&self) -> EngineOptions {
        self.options
    }

    /// Hex sha256 of everything that decides whether compiled code can be
    /// reused: wasmtime's own precompile-compatibility hash (its version,
    /// compiler settings, target, enabled features, tunables) and
    /// `WASMTIME_VERSION`.
    pub fn compatibility_key(&self) -> &str {
        &self.compatibility
    }
}

/// [`PluginEngine::compatibility_key`] for `engine`.
fn compatibility_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    let mut digest = hasher.0;
    digest.update(b"\0wasmtime ");
    digest.update(WASMTIME_VERSION.as_bytes());
    hex::encode(digest.finalize())
}

/// A [`std::hash::Hasher`] feeding sha256, so the key is the same in every
/// process and every Rust release (std's `DefaultHasher` promises neither).
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Epoch ticks that cover `timeout`, plus one for the partial tick in progress.
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (timeout.as_nanos().div_ceil(tick) as u64).max(1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasmtime_version_matches_the_lock_file() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
            .expect("Cargo.lock");
        let pinned = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"wasmtime\"\n"))
            .and_then(|p| p.lines().find(|l| l.starts_with("version = ")))
            .expect("wasmtime in Cargo.lock");
        assert_eq!(pinned, format!("version = \"{WASMTIME_VERSION}\""));
    }

    #[test]
    fn compatibility_key_is_stable_and_depends_on_the_config() {
        let pooled = PluginEngine::new().unwrap();
        let again = PluginEngine::new().unwrap();
        assert_eq!(pooled.compatibility_key(), again.compatibility_key());
        assert_eq!(pooled.compatibility_key().len(), 64);
        let on_demand = PluginEngine::with_options(EngineOptions {
            allocation: InstanceAllocation::OnDemand,
            ..EngineOptions::default()
        })
        .unwrap();
        // The allocator does not change compiled code; the key may or may
        // not differ, but it must be well-formed.
        assert_eq!(on_demand.compatibility_key().len(), 64);
    }

    #[test]
    fn the_gate_bounds_live_permits() {
        let gate = Arc::new(InstanceGate::new(Some(1)));
        let first = gate.acquire();
        let waiter = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                let _second = gate.acquire();
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished());
        drop(first);
        waiter.join().unwrap();
    }
}
