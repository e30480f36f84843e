//! Instances kept across calls and instantiation alone: what `bench decode`
//! measures beside the host's own fresh-instance call. Not the host's
//! isolation, so only built with the `tools` feature (the binary's).

use wasmtime::Store;

use super::{LoadedPlugin, SnapshotRef, deadline_ticks};
use crate::contract::Plugin as PluginWorld;
use crate::decode::CallError;
use crate::plugin::call_state::CallState;
use crate::value::State;

impl LoadedPlugin {
    /// An instance kept across calls: NOT the host's isolation (which is a
    /// fresh instance per call); for the benchmarks' warm-instance figures.
    /// It holds a pool slot for its lifetime without taking one from the
    /// engine's gate, so keep few of them alive.
    pub fn warm_instance(&self) -> Result<WarmInstance<'_>, CallError> {
        let mut store = self.new_store("", "", 0);
        let world = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&store, e, SnapshotRef::empty()))?;
        Ok(WarmInstance {
            plugin: self,
            store,
            world,
        })
    }

    /// Instantiates and drops one fresh instance without calling it: the
    /// instantiation cost alone (benchmarks).
    pub fn instantiate_only(&self) -> Result<(), CallError> {
        let _slot = self.engine.gate.acquire();
        let mut store = self.new_store("", "", 0);
        self.pre
            .instantiate(&mut store)
            .map(drop)
            .map_err(|e| self.classify(&store, e, SnapshotRef::empty()))
    }
}

/// One instance reused across calls (see [`LoadedPlugin::warm_instance`]).
pub struct WarmInstance<'a> {
    /// The plugin it runs.
    plugin: &'a LoadedPlugin,
    /// Its store, kept across calls.
    store: Store<CallState>,
    /// Its instance's exports.
    world: PluginWorld,
}

impl WarmInstance<'_> {
    /// Decodes in the kept instance, under the plugin's limits.
    pub fn decode(&mut self, s: SnapshotRef<'_>) -> Result<State, CallError> {
        let bytes = self.decode_bytes(s)?;
        self.validate(&bytes)
    }

    /// The call alone (copy in, guest decode, copy out), without validating.
    pub fn decode_bytes(&mut self, s: SnapshotRef<'_>) -> Result<Vec<u8>, CallError> {
        let input = s.to_input();
        self.store
            .set_epoch_deadline(deadline_ticks(self.plugin.limits.timeout));
        match self
            .world
            .replica_plugin_decoder()
            .call_decode(&mut self.store, input)
        {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(self.plugin.decode_error(s, e)),
            Err(e) => Err(self.plugin.classify(&self.store, e, s)),
        }
    }

    /// Validating alone.
    pub fn validate(&self, bytes: &[u8]) -> Result<State, CallError> {
        self.plugin.validate(SnapshotRef::empty(), bytes)
    }
}
