//! How the PostgreSQL backend connects: the libpq URL parameters it honours
//! (`sslmode=disable|prefer|require|verify-ca|verify-full`, `sslrootcert`,
//! `sslcert`, `sslkey`), the password kept out of the URL, and what the
//! connection turned out to be (TLS or plaintext), for the startup log.
//!
//! TLS is rustls with ring. Under `verify-ca` and `verify-full` the server's
//! certificate must chain to `sslrootcert`'s CAs or to Mozilla's roots
//! (webpki-roots, compiled in; the system's store is not read); `verify-full`
//! also checks the host name. `require` encrypts without checking the
//! certificate; `prefer` (the default, as in libpq) does the same when the
//! server offers TLS and falls back to plaintext when it does not.
//!
//! Unlike libpq, `verify-ca` checks the host name too: sqlx 0.8.6 does not
//! recognise the name-mismatch error of rustls ≥ 0.23.24 that its
//! `verify-ca` means to ignore (launchbadge/sqlx#3793, fixed after 0.8.6).
//! A certificate that does not name the host is refused under both modes.

use std::path::Path;
use std::str::FromStr;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::LogError;
use crate::secret::Secret;

/// The URL parameters that name files.
pub(crate) const FILE_PARAMS: [&str; 3] = ["sslrootcert", "sslcert", "sslkey"];

/// `url` with each relative file parameter (`sslrootcert`, `sslcert`,
/// `sslkey`) resolved against `base`; any other URL comes back unchanged.
pub fn resolve_files(url: &str, base: &Path) -> String {
    let Ok(mut parsed) = ::url::Url::parse(url) else {
        return url.to_owned();
    };
    let mut changed = false;
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .map(|(key, value)| {
            if FILE_PARAMS.contains(&key.as_str())
                && !value.is_empty()
                && !value.trim_start().starts_with("-----BEGIN")
                && Path::new(&value).is_relative()
            {
                changed = true;
                let resolved = base.join(&value).display().to_string();
                (key, resolved)
            } else {
                (key, value)
            }
        })
        .collect();
    if !changed {
        return url.to_owned();
    }
    parsed.query_pairs_mut().clear().extend_pairs(&pairs);
    parsed.to_string()
}

/// The connect options of `url` (shown as `shown`, password hidden), with
/// `password` when the URL has none. Without either, the driver takes
/// `PGPASSWORD`. Each file parameter must name a readable file: one line
/// naming the parameter and the file otherwise.
pub(super) fn options(
    url: &str,
    shown: &str,
    password: Option<&Secret>,
) -> Result<PgConnectOptions, LogError> {
    let mut options = PgConnectOptions::from_str(url).map_err(|e| invalid_url(shown, e))?;
    if let Some(password) = password {
        options = options.password(password.expose());
    }
    if let Ok(parsed) = ::url::Url::parse(url) {
        for (key, value) in parsed.query_pairs() {
            if FILE_PARAMS.contains(&key.as_ref())
                && !value.trim_start().starts_with("-----BEGIN")
                && let Err(e) = std::fs::File::open(value.as_ref())
            {
                return Err(LogError::Config {
                    message: format!("{shown}: {key} {value}: {e}"),
                    source: Some(e.into()),
                });
            }
        }
    }
    Ok(options)
}

/// What one of the pool's connections is, in words: `TLSv1.3, certificate
/// and host name verified`, `plaintext`, ….
pub(super) async fn describe_transport(pool: &PgPool, options: &PgConnectOptions) -> String {
    let row: Result<Option<(bool, Option<String>)>, _> =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_optional(pool)
            .await;
    match row {
        Ok(Some((true, version))) => {
            let checked = match options.get_ssl_mode() {
                PgSslMode::VerifyFull => "certificate and host name verified",
                // sqlx#3793: verify-ca checks the name too.
                PgSslMode::VerifyCa => "certificate and host name verified",
                _ => "certificate not verified",
            };
            format!("{}, {checked}", version.as_deref().unwrap_or("TLS"))
        }
        Ok(_) => "plaintext".to_owned(),
        Err(_) => "unknown (pg_stat_ssl unreadable)".to_owned(),
    }
}

/// The TLS reason of a failed connection, if TLS failed: sqlx reports a
/// refused upgrade as [`sqlx::Error::Tls`] and a failed handshake as an I/O
/// error wrapping rustls's.
pub(super) fn tls_reason(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Tls(reason) => Some(reason.to_string()),
        sqlx::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
            .map(ToString::to_string),
        _ => None,
    }
}

/// Whether a plaintext connection to this server crosses a network: not a
/// Unix socket, not a loopback address or `localhost`.
pub(super) fn leaves_the_host(options: &PgConnectOptions) -> bool {
    if options.get_socket().is_some() {
        return false;
    }
    let host = options.get_host();
    if host.starts_with('/') || host == "localhost" {
        return false;
    }
    !host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The sslmode of an options set, as the URL spells it.
pub(super) fn sslmode_name(options: &PgConnectOptions) -> &'static str {
    match options.get_ssl_mode() {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// A URL sqlx cannot parse, shown as `shown` (password hidden).
pub(super) fn invalid_url(shown: &str, err: sqlx::Error) -> LogError {
    LogError::Config {
        message: format!("invalid PostgreSQL URL {shown}: {err}"),
        source: Some(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_file_parameters_resolve_against_the_config_dir() {
        let url = "postgres://u:p%40w@db:5432/orlando?sslmode=verify-full&sslrootcert=tls/ca.pem&sslcert=%2Fabs%2Fc.pem&sslkey=k.pem";
        let resolved = resolve_files(url, Path::new("/etc/replica"));
        let parsed = ::url::Url::parse(&resolved).unwrap();
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("sslmode".into(), "verify-full".into()),
                ("sslrootcert".into(), "/etc/replica/tls/ca.pem".into()),
                ("sslcert".into(), "/abs/c.pem".into()),
                ("sslkey".into(), "/etc/replica/k.pem".into()),
            ]
        );
        assert_eq!(parsed.password(), Some("p%40w"));
        let plain = "postgres://u@db/orlando?sslmode=require";
        assert_eq!(resolve_files(plain, Path::new("/etc")), plain);
    }

    #[test]
    fn a_missing_file_is_one_line_naming_parameter_and_file() {
        let url = "postgres://u@db/x?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem";
        let err = options(url, url, None).unwrap_err().to_string();
        assert!(
            err.contains("sslrootcert /nonexistent/ca.pem: No such file"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn a_password_from_a_file_fills_a_url_without_one() {
        let opts = options(
            "postgres://u@db/x?sslmode=disable",
            "",
            Some(&Secret::new("s3cret")),
        )
        .unwrap();
        assert_eq!(sslmode_name(&opts), "disable");
        assert!(leaves_the_host(&opts));
        let local = options("postgres://u@127.0.0.1/x", "", None).unwrap();
        assert!(!leaves_the_host(&local));
    }
}
