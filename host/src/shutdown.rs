//! Stopping a host: one [`Shutdown`] that the owner triggers once, and the
//! [`StopSignal`]s that every long-running task (consumers, HTTP, change
//! streams, SIGHUP handling) waits on.

use tokio::sync::watch;

/// The trigger. Stopping it, or dropping it, stops every [`StopSignal`]
/// made from it.
#[derive(Debug)]
pub struct Shutdown {
    /// `true` once stopped; the receivers are the signals.
    sender: watch::Sender<bool>,
}

/// What a task watches to know it must stop. Clone one per task.
#[derive(Debug, Clone)]
pub struct StopSignal {
    /// Sees the trigger's `true`, or the trigger gone.
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    /// A trigger not yet stopped.
    pub fn new() -> Self {
        Self {
            sender: watch::channel(false).0,
        }
    }

    /// A signal for one more task.
    pub fn signal(&self) -> StopSignal {
        StopSignal {
            receiver: self.sender.subscribe(),
        }
    }

    /// Tells every task to stop. Idempotent.
    pub fn stop(&self) {
        self.sender.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl StopSignal {
    /// Resolves once the host is stopping; at once if it already is.
    /// Cancel-safe: it can sit in a `select!` loop.
    pub async fn stopped(&mut self) {
        let _ = self.receiver.wait_for(|stop| *stop).await;
    }

    /// Whether the host is stopping now (or the trigger is gone).
    pub fn is_stopped(&self) -> bool {
        *self.receiver.borrow() || self.receiver.has_changed().is_err()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Resolves `stopped()` within a second, or fails.
    async fn stops(mut signal: StopSignal) {
        tokio::time::timeout(Duration::from_secs(1), signal.stopped())
            .await
            .expect("the signal stops");
    }

    #[tokio::test]
    async fn stop_reaches_every_signal_made_before_or_after() {
        let shutdown = Shutdown::new();
        let before = shutdown.signal();
        let waiting = tokio::spawn(stops(before));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "not stopped before stop()");
        assert!(!shutdown.signal().is_stopped());
        shutdown.stop();
        waiting.await.unwrap();
        assert!(shutdown.signal().is_stopped());
        stops(shutdown.signal()).await;
    }

    #[tokio::test]
    async fn a_dropped_trigger_stops_its_signals() {
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        drop(shutdown);
        stops(signal).await;
    }
}
