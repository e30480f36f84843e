//! The daemon run in this process through the library
//! (`daemon::run_with_store`), with the real HTTP server, so a test holds
//! the daemon's `ReplicaStore` and can inject faults into it (a replica
//! removed, or replaced by an older or differently decoded one).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use replica_host::ReplicaStore;
use replica_host::daemon::Config;

use crate::http::{self, Response};

/// A daemon running on a thread of this process; stopped on drop.
pub struct InProcess {
    /// The HTTP API's address.
    pub addr: SocketAddr,
    /// The daemon's replicas.
    pub store: Arc<ReplicaStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl InProcess {
    /// Writes `config_text` to `dir/host.toml` and starts the daemon on it.
    pub fn start(dir: &Path, config_text: &str) -> Self {
        Self::start_with_env(dir, config_text, &[])
    }

    /// Like [`InProcess::start`], with `REPLICA_…` overrides applied as
    /// `replica-host run` applies the environment's.
    pub fn start_with_env(dir: &Path, config_text: &str, env: &[(&str, &str)]) -> Self {
        let path = dir.join("host.toml");
        std::fs::write(&path, config_text).expect("write host.toml");
        let overrides = replica_host::test_seam::overrides_from(
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let config = Config::load_with(&path, &overrides).unwrap_or_else(|e| panic!("config: {e}"));
        let store = Arc::new(ReplicaStore::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, addr) = std::sync::mpsc::channel();
        let daemon_store = Arc::clone(&store);
        // The daemon's future is not `Send`: a thread and a runtime of its own.
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let outcome = runtime.block_on(replica_host::daemon::run_with_store(
                config,
                daemon_store,
                async move {
                    let _ = stopped.await;
                },
                move |addr| {
                    let _ = ready.send(addr);
                },
            ));
            if let Err(e) = outcome {
                panic!("the in-process daemon failed: {e}");
            }
        });
        let addr = addr
            .recv_timeout(Duration::from_secs(60))
            .expect("the in-process daemon did not start");
        Self {
            addr,
            store,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The base URL of its API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET path` with extra headers.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get_with(self.addr, path, headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Polls `GET path` (with `headers`) until `check` accepts the answer.
    pub fn wait_for(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
        check: impl Fn(&Response) -> bool,
    ) -> Response {
        let deadline = Instant::now() + timeout;
        loop {
            let response = self.get_with(path, headers);
            if check(&response) {
                return response;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on GET {path}; last: {} {}",
                response.status,
                response.body
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
