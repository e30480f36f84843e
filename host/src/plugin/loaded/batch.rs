//! Decoding in batches: one fresh instance decodes up to
//! [`PluginLimits::batch_max`](crate::plugin::PluginLimits::batch_max)
//! snapshots one after another, then is dropped.
//!
//! # Isolation
//! A call that faults (traps, times out, runs out of memory, returns a
//! state the host refuses) ends its instance. When that call was not the
//! instance's first, it and the rest of the batch are decoded again, one
//! fresh instance per snapshot: what an earlier call of the batch left in
//! the instance can never make another snapshot fail, and each result is
//! the one a fresh instance gives. The trade: a plugin that keeps state
//! across calls (a `static`) can see an earlier snapshot of the same batch
//! (README.md, "Batches"); `batch_max = 1` is one instance per snapshot.

use std::sync::atomic::Ordering;

use super::{LoadedPlugin, SnapshotRef, deadline_ticks};
use crate::contract::Plugin as PluginWorld;
use crate::decode::CallError;
use crate::value::State;

impl LoadedPlugin {
    /// Decodes `snapshots` in order, at most `batch_max` per instance, and
    /// returns one result per snapshot. `enter(i)` is called right before
    /// the guest runs snapshot `i`, and what it returns is dropped right
    /// after (the crash guard marks the snapshot in flight with it). Never
    /// panics because of the guest.
    pub fn decode_batch<G>(
        &self,
        snapshots: &[SnapshotRef<'_>],
        mut enter: impl FnMut(usize) -> G,
    ) -> Vec<Result<State, CallError>> {
        let mut results = Vec::with_capacity(snapshots.len());
        // After a fault in a shared instance: one instance per snapshot.
        let mut isolated = self.limits.batch_max <= 1;
        while results.len() < snapshots.len() {
            let at = results.len();
            if isolated {
                let in_flight = enter(at);
                results.push(self.decode(snapshots[at]));
                drop(in_flight);
                continue;
            }
            let end = snapshots.len().min(at + self.limits.batch_max);
            isolated =
                self.decode_in_one_instance(&snapshots[at..end], at, &mut enter, &mut results);
        }
        results
    }

    /// Decodes `batch` (starting at index `offset` of the whole) in one
    /// fresh instance, pushing each result. Stops at the first fault of a
    /// call that was not the instance's first, leaving it undecoded, and
    /// returns `true` then.
    fn decode_in_one_instance<G>(
        &self,
        batch: &[SnapshotRef<'_>],
        offset: usize,
        enter: &mut impl FnMut(usize) -> G,
        results: &mut Vec<Result<State, CallError>>,
    ) -> bool {
        let first = batch[0];
        // Declared before the store: the slot is released after the
        // instance is dropped.
        let _slot = self.engine.gate.acquire();
        let mut store = self.new_store(first.grain_type, first.grain_key, first.sequence);
        let world: PluginWorld = match self.pre.instantiate(&mut store) {
            Ok(world) => world,
            Err(e) => {
                // What a fresh instance for this snapshot gives, too.
                self.count(false);
                results.push(Err(self.classify(&store, e, first)));
                return false;
            }
        };
        for (i, &s) in batch.iter().enumerate() {
            if i > 0 {
                store
                    .data_mut()
                    .begin_call(s.grain_type, s.grain_key, s.sequence);
                store.set_epoch_deadline(deadline_ticks(self.limits.timeout));
                store.set_hostcall_fuel(self.limits.hostcall_fuel());
            }
            let input = s.to_input();
            let in_flight = enter(offset + i);
            let outcome = world
                .replica_plugin_decoder()
                .call_decode(&mut store, input);
            drop(in_flight);
            let result = self.finish(&store, s, outcome);
            let fault = result.as_ref().is_err_and(|e| e.kind.is_guest_fault());
            if fault && i > 0 {
                // Decoded again in an instance of its own, with the rest.
                return true;
            }
            self.count(result.is_ok());
            results.push(result);
            if fault {
                // The instance's first call: its own fault. The instance is
                // dropped; the rest go on in a new one.
                return false;
            }
        }
        false
    }

    /// Counts one call in the plugin's stats.
    fn count(&self, ok: bool) {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}
