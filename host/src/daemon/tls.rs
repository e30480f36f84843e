//! TLS for the HTTP API (`[http] tls_cert`, `tls_key`): rustls with the
//! `ring` provider, no OpenSSL; ALPN offers `h2` and `http/1.1`, both
//! served ([`super::server`]).
//!
//! [`TlsFiles`] holds the server config read from the PEM files and swaps it
//! whole on reload (SIGHUP); connections already open keep the old one. The
//! leaf certificate's expiry is checked at each load ([`super::cert_expiry`]):
//! an expired one is refused, one expiring within 14 days is warned about.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::cert_expiry::{self, Expiry};
use super::reload::Reload;

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
        cert_expiry::published(&server.1);
        let server = server.0;
        Ok(Self {
            config: config.to_path_buf(),
            cert,
            key,
            current: RwLock::new(Arc::new(server)),
        })
    }

    /// A handshaker with the config in force.
    pub fn acceptor(&self) -> TlsAcceptor {
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
        let (server, expiry) = server_config(&self.config, &self.cert, &self.key)?;
        cert_expiry::published(&expiry);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(server);
        Ok(format!(
            "certificate from {}, valid until {}",
            self.cert.display(),
            expiry.not_after_text
        ))
    }
}

/// A rustls server config from PEM files, and the leaf certificate's expiry;
/// an expired certificate is refused.
fn server_config(config: &Path, cert: &Path, key: &Path) -> Result<(ServerConfig, Expiry), String> {
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
    let expiry = Expiry::of(&certs[0])
        .map_err(|e| format!("{config}: http.tls_cert: {}: {e}", cert.display()))?;
    if let Some(expired) = expiry.expired_at(SystemTime::now()) {
        return Err(format!(
            "{config}: http.tls_cert: {}: {expired}",
            cert.display()
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "{config}: http.tls_key: {}: {}",
            key.display(),
            key_problem(key, e)
        )
    })?;
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
    Ok((server, expiry))
}

/// What is wrong with a key file that yielded no usable private key.
fn key_problem(key: &Path, error: pem::Error) -> String {
    let text = match (&error, std::fs::read(key)) {
        (pem::Error::Io(e), _) => return e.to_string(),
        (_, Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        (_, Err(e)) => return e.to_string(),
    };
    match error {
        pem::Error::NoItemsFound if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") => {
            "the private key is encrypted; give it unencrypted (openssl pkcs8 -topk8 -nocrypt)"
                .into()
        }
        pem::Error::NoItemsFound if text.contains("-----BEGIN CERTIFICATE-----") => {
            "the file holds a certificate, not a private key (are tls_cert and tls_key swapped?)"
                .into()
        }
        pem::Error::NoItemsFound if text.trim().is_empty() => "the file is empty".into(),
        pem::Error::NoItemsFound => "no PEM private key in the file (expected a block \
             BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY)"
            .into(),
        pem::Error::MissingSectionEnd { .. } => {
            "the PEM block has no END line (is the file truncated?)".into()
        }
        pem::Error::Base64Decode(e) => format!("the PEM block is not valid base64: {e}"),
        other => other.to_string(),
    }
}
