//! An Orlando secondary on replica-host's library, in-process: open the log,
//! load a directory of plugins, replicate, read typed state, follow changes.
//! `cargo run -p replica-host --example orlando_secondary -- URL DIR Counter c-1 1`

use replica_host::{ChangeKind, PluginDir, Replica, ReplicaStore, Replicator, Shutdown};

/// The application's own type for Counter grains (what the plugin decodes).
#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)] // read through Debug
struct CounterState {
    count: i64,
}

/// The replica's typed state, as the application's Rust type.
fn typed(replica: &Replica) -> Option<CounterState> {
    replica.state.as_ref()?.deserialize().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, dir, grain_type, key, changes] = &args[..] else {
        anyhow::bail!("usage: orlando_secondary LOG_URL PLUGIN_DIR GRAIN_TYPE KEY CHANGES");
    };
    let log = replica_host::replication_log::open(url).await?; // a reader
    let plugins = PluginDir::load(dir.as_ref())?;
    for (grain_type, file) in plugins.files() {
        println!("plugin {grain_type} from {}", file.display());
    }
    let store = std::sync::Arc::new(ReplicaStore::new());
    let replicator = Replicator::new(log, store.clone(), plugins.decoders(), Default::default());
    let (catch_up, stop) = (replicator.catch_up(), Shutdown::new());
    let running = replicator.spawn(stop.signal());
    catch_up.caught_up().await;
    println!("caught up: {} grains", catch_up.progress().grains);
    let grain = format!("{grain_type}/{key}");
    let mut updates = store.subscribe(); // before the read: no change falls in between
    match store.get(grain_type, key) {
        Some(r) => println!("{grain} at sequence {}: {:?}", r.sequence, typed(&r)),
        None => println!("{grain}: no replica"),
    }
    println!("watching {grain} for {changes} change(s)");
    let mut left: usize = changes.parse()?;
    while left > 0 {
        let change = match updates.recv().await {
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            other => other?,
        };
        let (r, applied) = (&change.replica, change.kind == ChangeKind::Applied);
        if applied && r.grain_type == *grain_type && r.grain_key == *key {
            println!("changed {grain} to sequence {}: {:?}", r.sequence, typed(r));
            left -= 1;
        }
    }
    stop.stop();
    running.await?;
    println!("stopped");
    Ok(())
}
