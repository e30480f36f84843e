//! The daemon's side of `[store] checkpoint`: load it before the consumers
//! start (or say in one line why not), write it in the background and at
//! shutdown, and re-decode in the background the grain types whose
//! replicas another plugin build decoded.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{CheckpointFile, CheckpointWriter, Identity, load_into};
use crate::consumer::{CatchUp, ReplicatorControl, SnapshotDecoder};
use crate::daemon::config::Config;
use crate::daemon::plugins::set::PluginSet;
use crate::replication_log;
use crate::store::ReplicaStore;

/// An opened checkpoint, its replicas in the store.
pub(super) struct Opened {
    /// The writer, to spawn once the consumers run.
    pub writer: CheckpointWriter,
    /// Grain types to decode again once caught up.
    pub stale_types: Vec<String>,
}

impl Opened {
    /// Starts the writer (until `stop`) and, when replicas of another
    /// plugin build were loaded, their re-decode once caught up.
    pub(super) fn start(
        self,
        catch_up: Arc<CatchUp>,
        control: ReplicatorControl,
        decoders: HashMap<String, Arc<dyn SnapshotDecoder>>,
        stop: crate::shutdown::StopSignal,
    ) -> tokio::task::JoinHandle<()> {
        if !self.stale_types.is_empty() {
            tokio::spawn(redecode_when_caught_up(
                catch_up,
                control,
                decoders,
                self.stale_types,
            ));
        }
        let writer = self.writer;
        tokio::spawn(async move {
            writer.run(stop).await;
        })
    }
}

/// Opens the checkpoint at `path` and loads it into `store`. A file that
/// cannot be used is one warning line and a fresh, empty checkpoint: the
/// host then catches up in full. `None` when not even a fresh file can be
/// written (one warning line; the host runs without a checkpoint).
pub(super) async fn open(
    config: &Config,
    path: &Path,
    plugins: &PluginSet,
    decoders: &HashMap<String, Arc<dyn SnapshotDecoder>>,
    store: &Arc<ReplicaStore>,
) -> Option<Opened> {
    let identity = Identity {
        log: replication_log::redact_password(&config.log_url()),
        cluster_id: config.cluster_id.clone(),
    };
    let limits: HashMap<_, _> = plugins
        .iter()
        .map(|(grain_type, p)| (grain_type.clone(), p.limits().output))
        .collect();
    let builds: HashMap<_, _> = decoders
        .iter()
        .map(|(grain_type, d)| (grain_type.clone(), d.decoded_by()))
        .collect();
    let config_file = config.source.display().to_string();
    let started = Instant::now();
    let attempt = async {
        let mut file = CheckpointFile::open(path).await?;
        file.claim(&identity).await?;
        let loaded = load_into(&mut file, store, &limits, &builds).await?;
        Ok::<_, crate::checkpoint::CheckpointError>((file, loaded))
    };
    let (file, stale_types) = match attempt.await {
        Ok((file, loaded)) => {
            tracing::info!(
                path = %path.display(),
                replicas = loaded.replicas,
                left_out = loaded.skipped,
                took_ms = started.elapsed().as_millis() as u64,
                "checkpoint loaded: serving its replicas; catching up what the log changed since"
            );
            (file, loaded.stale_types)
        }
        Err(e) => {
            tracing::warn!(
                "{config_file}: store.checkpoint: {e}; not used: catching up in full from the log"
            );
            match CheckpointFile::recreate(path).await {
                Ok(mut file) => match file.claim(&identity).await {
                    Ok(()) => (file, Vec::new()),
                    Err(e) => return off(&config_file, &e),
                },
                Err(e) => return off(&config_file, &e),
            }
        }
    };
    let types = decoders.keys().cloned().collect();
    let since = store.version();
    Some(Opened {
        writer: CheckpointWriter::new(file, Arc::clone(store), types, since),
        stale_types,
    })
}

fn off(config_file: &str, e: &dyn std::fmt::Display) -> Option<Opened> {
    tracing::warn!("{config_file}: store.checkpoint: {e}; running without a checkpoint");
    None
}

/// Once the catch-up is complete, decodes again (in the background, as a
/// swap does) the replicas of `stale_types` that another plugin build
/// decoded.
async fn redecode_when_caught_up(
    catch_up: Arc<CatchUp>,
    control: ReplicatorControl,
    decoders: HashMap<String, Arc<dyn SnapshotDecoder>>,
    stale_types: Vec<String>,
) {
    while !catch_up.progress().complete {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for grain_type in stale_types {
        let Some(decoder) = decoders.get(&grain_type) else {
            continue;
        };
        tracing::info!(
            grain_type = %grain_type,
            "checkpoint replicas of another plugin build: decoding them again in the background"
        );
        if control
            .replace(&grain_type, Arc::clone(decoder))
            .await
            .is_none()
        {
            return;
        }
    }
}
