//! The one shared wasmtime engine, its epoch ticker and the linker that
//! offers plugins their only import: logging.

use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::call_state::CallState;
use crate::contract::Plugin as PluginWorld;

/// How often the epoch advances; per-call timeouts are rounded up to it.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The shared engine and linker every plugin is compiled and instantiated with.
///
/// Cheap to clone. A background thread advances the engine's epoch every
/// [`EPOCH_TICK`] for as long as any clone of the engine lives.
#[derive(Clone)]
pub struct PluginEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: std::sync::Arc<Linker<CallState>>,
}

impl PluginEngine {
    /// Creates the engine, its linker and the epoch ticker thread.
    pub fn new() -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // Every guest runs in a fresh instance; copy-on-write memory images
        // keep instantiation cheap.
        config.memory_init_cow(true);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<CallState>::new(&engine);
        PluginWorld::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;

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
            linker: std::sync::Arc::new(linker),
        })
    }

    /// The underlying wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Epoch ticks that cover `timeout`, plus one for the partial tick in progress.
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (timeout.as_nanos().div_ceil(tick) as u64).max(1) + 1
}
