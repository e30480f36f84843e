//! The shutdown signal shared by every consumer task.

use tokio::sync::watch;

/// Resolves once shutdown is signalled: the value becomes `true` or the
/// sender is dropped. Resolves at once if that already happened.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
