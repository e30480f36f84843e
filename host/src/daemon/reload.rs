//! SIGHUP: re-read what can change without a restart.
//!
//! Each reloadable part implements [`Reload`] and is registered with the
//! [`Reloader`]; on SIGHUP every part is reloaded in turn. A part that fails
//! keeps what it had and logs one line; the others still reload. Then the
//! plugins are reloaded ([`super::plugins`]), so one signal reloads
//! everything.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::plugins::PluginReloader;
use crate::shutdown::StopSignal;

/// Something re-read on SIGHUP.
pub trait Reload: Send + Sync {
    /// What it is, for the log line (never a secret).
    fn name(&self) -> &'static str;
    /// Re-reads it; `Ok` says what is now in force (a count, never a secret),
    /// `Err` is one line, and the previous version stays in force.
    fn reload(&self) -> Result<String, String>;
}

/// The reloadable parts of a running daemon.
#[derive(Default, Clone)]
pub struct Reloader {
    /// In registration order.
    parts: Vec<Arc<dyn Reload>>,
    /// The plugins, reloaded after the parts.
    plugins: Option<Arc<PluginReloader>>,
}

impl Reloader {
    /// Registers `part`.
    pub fn register(&mut self, part: Arc<dyn Reload>) {
        self.parts.push(part);
    }

    /// Also re-reads the config's `[[plugin]]` entries on SIGHUP.
    pub fn with_plugins(mut self, plugins: Arc<PluginReloader>) -> Self {
        self.plugins = Some(plugins);
        self
    }

    /// Reloads every part; returns how many failed.
    pub fn reload_all(&self) -> usize {
        let mut failed = 0;
        for part in &self.parts {
            match part.reload() {
                Ok(summary) => tracing::info!(part = part.name(), %summary, "reloaded"),
                Err(error) => {
                    failed += 1;
                    tracing::error!(part = part.name(), %error, "reload failed; keeping the previous version");
                }
            }
        }
        failed
    }

    /// Installs the SIGHUP handler now (so a SIGHUP no longer kills the
    /// process) and reloads on each signal until `stop`.
    pub fn spawn_on_sighup(self, mut stop: StopSignal) -> std::io::Result<JoinHandle<()>> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        Ok(tokio::spawn(async move {
            loop {
                tokio::select! {
                    received = hangup.recv() => {
                        if received.is_none() {
                            return;
                        }
                        tracing::info!(parts = self.parts.len(), "SIGHUP received: reloading");
                        self.reload_all();
                        if let Some(plugins) = &self.plugins {
                            plugins.reload().await;
                        }
                    }
                    _ = stop.stopped() => return,
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Part(AtomicUsize, bool);

    impl Reload for Part {
        fn name(&self) -> &'static str {
            "part"
        }
        fn reload(&self) -> Result<String, String> {
            self.0.fetch_add(1, Ordering::Relaxed);
            if self.1 {
                Ok("fine".into())
            } else {
                Err("broken".into())
            }
        }
    }

    #[test]
    fn a_failing_part_does_not_stop_the_others() {
        let bad = Arc::new(Part(AtomicUsize::new(0), false));
        let good = Arc::new(Part(AtomicUsize::new(0), true));
        let mut reloader = Reloader::default();
        reloader.register(bad.clone());
        reloader.register(good.clone());
        assert_eq!(reloader.reload_all(), 1);
        assert_eq!(bad.0.load(Ordering::Relaxed), 1);
        assert_eq!(good.0.load(Ordering::Relaxed), 1);
    }
}
