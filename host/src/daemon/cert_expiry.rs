//! When the TLS certificate expires: read from the leaf certificate
//! (`x509-parser`), exported as `replica_tls_cert_expiry_timestamp_seconds`,
//! refused once past, warned about within [`WARN_WITHIN`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_rustls::rustls::pki_types::CertificateDer;

/// A certificate expiring within this long is warned about at startup and
/// on every reload.
pub const WARN_WITHIN: Duration = Duration::from_secs(14 * 24 * 3600);

/// A certificate's end of validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
    /// `notAfter` for people (`Dec  5 00:00:00 2026 +00:00`).
    pub not_after_text: String,
}

impl Expiry {
    /// The validity end of a DER certificate; the error says why it cannot
    /// be read.
    pub fn of(certificate: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
            .map_err(|e| format!("the first certificate cannot be parsed as X.509: {e}"))?;
        let not_after = parsed.validity().not_after;
        Ok(Self {
            not_after: not_after.timestamp(),
            not_after_text: not_after.to_string(),
        })
    }

    /// Why the certificate is refused at `now`, if it has expired.
    pub fn expired_at(&self, now: SystemTime) -> Option<String> {
        (unix(now) > self.not_after).then(|| {
            format!(
                "the certificate expired on {}; renew it (clients refuse an expired certificate)",
                self.not_after_text
            )
        })
    }

    /// How long it stays valid after `now`, if it expires within
    /// [`WARN_WITHIN`].
    pub fn expires_soon(&self, now: SystemTime) -> Option<Duration> {
        let left = self.not_after.saturating_sub(unix(now));
        (left >= 0 && (left as u64) < WARN_WITHIN.as_secs())
            .then(|| Duration::from_secs(left as u64))
    }
}

/// Unix seconds of `time` (negative before 1970).
fn unix(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Exports the certificate in force's expiry, and warns when it is near.
pub fn published(expiry: &Expiry) {
    metrics::gauge!("replica_tls_cert_expiry_timestamp_seconds").set(expiry.not_after as f64);
    if let Some(left) = expiry.expires_soon(SystemTime::now()) {
        tracing::warn!(
            not_after = %expiry.not_after_text,
            days_left = left.as_secs() / 86_400,
            "the TLS certificate expires within 14 days; renew it and send SIGHUP"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiry(not_after: i64) -> Expiry {
        Expiry {
            not_after,
            not_after_text: "then".into(),
        }
    }

    #[test]
    fn expired_near_and_far() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let day = 86_400;
        assert!(expiry(1_000_000_000 - 1).expired_at(now).is_some());
        assert!(expiry(1_000_000_000).expired_at(now).is_none());
        assert_eq!(
            expiry(1_000_000_000 + 3 * day).expires_soon(now),
            Some(Duration::from_secs(3 * day as u64))
        );
        assert_eq!(expiry(1_000_000_000 + 15 * day).expires_soon(now), None);
    }
}
