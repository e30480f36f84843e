//! An Orlando secondary that replaces the seed's `ReplicationConsumer` with
//! replica-host's library, in-process: open the log, load every plugin in a
//! directory, run the `Replicator`, read typed state, subscribe to changes.
//!
//! ```sh
//! cargo run -p replica-host --example orlando_secondary -- \
//!     --log sqlite://replication.db --plugins plugins/ --grain Counter/c-1 --changes 1
//! ```
//!
//! Where the seed ran one polling task per grain it was told about and
//! applied raw bytes, the `Replicator` finds the grains itself, runs them on
//! a bounded worker pool, and stores the plugin's decoded, typed state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use replica_host::consumer::{ConsumerConfig, Replicator, SnapshotDecoder};
use replica_host::plugin::{DecodeSlots, LoadedPlugin, PluginDecoder, PluginEngine, PluginLimits};
use replica_host::replication_log;
use replica_host::shutdown::Shutdown;
use replica_host::store::{ChangeKind, Replica, ReplicaStore};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The application's own type for Counter grains (what the plugin decodes).
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read through Debug
struct CounterState {
    count: i64,
}

/// The typed state of a replica, as the application's Rust type.
fn typed<T: DeserializeOwned>(replica: &Replica) -> Option<T> {
    replica.state.as_ref()?.deserialize().ok()
}

/// Every `*.wasm` in `dir`, loaded and checked, by the grain type it decodes.
fn load_plugins(dir: &Path) -> anyhow::Result<HashMap<String, Arc<dyn SnapshotDecoder>>> {
    let engine = PluginEngine::new()?;
    let slots = DecodeSlots::per_core();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|e| e == "wasm"));
    files.sort();
    let mut decoders: HashMap<String, Arc<dyn SnapshotDecoder>> = HashMap::new();
    for path in files {
        let plugin = Arc::new(LoadedPlugin::load(&engine, &path, PluginLimits::default())?);
        let grain_type = plugin.description().grain_type.clone();
        println!("plugin {grain_type} from {}", path.display());
        decoders.insert(
            grain_type,
            Arc::new(PluginDecoder::new(plugin, slots.clone())),
        );
    }
    Ok(decoders)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut log_url, mut plugins, mut grain, mut changes) =
        (None, None, "Counter/c-1".to_owned(), 1usize);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--log" => log_url = Some(value()?),
            "--plugins" => plugins = Some(PathBuf::from(value()?)),
            "--grain" => grain = value()?,
            "--changes" => changes = value()?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let log_url = log_url.ok_or_else(|| anyhow::anyhow!("--log URL is required"))?;
    let plugins = plugins.ok_or_else(|| anyhow::anyhow!("--plugins DIR is required"))?;
    let (grain_type, grain_key) = grain
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("--grain is TYPE/KEY"))?;

    // Open the log (a reader: it creates nothing) and load the plugins.
    let log = replication_log::open(&log_url).await?;
    let decoders = load_plugins(&plugins)?;

    // Run the Replicator: it finds every grain of these types and keeps
    // their typed replicas in the store.
    let store = Arc::new(ReplicaStore::new());
    let config = ConsumerConfig {
        poll_interval: Duration::from_millis(50),
        ..ConsumerConfig::default()
    };
    let replicator = Replicator::new(log, Arc::clone(&store), decoders, config);
    let catch_up = replicator.catch_up();
    let stop = Shutdown::new();
    let running = replicator.spawn(stop.signal());
    while !catch_up.progress().complete {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("caught up: {} grains", catch_up.progress().grains);

    // Subscribe first, then read, so no change falls in between.
    let mut updates = store.subscribe();
    match store.get(grain_type, grain_key) {
        Some(replica) => println!(
            "{grain_type}/{grain_key} at sequence {}: {:?}",
            replica.sequence,
            typed::<CounterState>(&replica)
        ),
        None => println!("{grain_type}/{grain_key}: no replica"),
    }
    println!("watching {grain_type}/{grain_key} for {changes} change(s)");
    let mut seen = 0;
    while seen < changes {
        let change = match updates.recv().await {
            Ok(change) => change,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(e) => anyhow::bail!("the store closed: {e}"),
        };
        let r = &change.replica;
        if change.kind == ChangeKind::Applied
            && r.grain_type == grain_type
            && r.grain_key == grain_key
        {
            seen += 1;
            println!(
                "changed {grain_type}/{grain_key} to sequence {}: {:?}",
                r.sequence,
                typed::<CounterState>(r)
            );
        }
    }

    stop.stop();
    running.await?;
    println!("stopped");
    Ok(())
}
