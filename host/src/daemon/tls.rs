//! TLS for the HTTP API (`[http] tls_cert`, `tls_key`): rustls with the
//! `ring` provider, no OpenSSL.
//!
//! [`TlsFiles`] holds the server config read from the PEM files and swaps it
//! whole on reload (SIGHUP); connections already open keep the old one.
//! [`TlsListener`] is an `axum::serve` listener: a task accepts TCP
//! connections and runs each handshake on its own task, bounded by
//! [`HANDSHAKE_TIMEOUT`], so a slow or silent client never holds up others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

use super::reload::Reload;
use crate::shutdown::StopSignal;

/// Longest a client may take to complete its TLS handshake; guards the
/// listener against connections that open and then say nothing.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// The certificate and key files and the server config read from them.
#[derive(Debug)]
pub struct TlsFiles {
    /// The config file, for error messages.
    config: PathBuf,
    /// PEM certificate chain, leaf first.
    cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    key: PathBuf,
    /// The config in force; replaced whole on reload.
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsFiles {
    /// Reads both files; the error is one line naming the config field.
    pub fn load(config: &Path, cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        let server = server_config(config, &cert, &key)?;
        Ok(Self {
            config: config.to_path_buf(),
            cert,
            key,
            current: RwLock::new(Arc::new(server)),
        })
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

impl Reload for TlsFiles {
    fn name(&self) -> &'static str {
        "http TLS certificate"
    }

    fn reload(&self) -> Result<String, String> {
        let server = server_config(&self.config, &self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(server);
        Ok(format!("certificate from {}", self.cert.display()))
    }
}

/// A rustls server config from PEM files.
fn server_config(config: &Path, cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let config = config.display();
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{config}: http.tls_cert: {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{config}: http.tls_cert: {}: no PEM certificate in the file",
            cert.display()
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{config}: http.tls_key: {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{config}: http: TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| {
            format!(
                "{config}: http.tls_key: {} does not fit {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}

/// An `axum::serve` listener that hands over TLS connections.
pub struct TlsListener {
    /// Handshaken connections.
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    /// The bound address.
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` with the config `files` holds at each connection,
    /// until `stop`.
    pub fn spawn(
        tcp: TcpListener,
        files: Arc<TlsFiles>,
        mut stop: StopSignal,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = tcp.accept() => match accepted {
                        Ok(connection) => connection,
                        Err(e) => {
                            // Out of file descriptors and the like: wait, as axum does.
                            tracing::warn!(error = %e, "accepting a TCP connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = stop.stopped() => return,
                };
                let acceptor = files.acceptor();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // Stopped: the server shuts down on the same signal.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
