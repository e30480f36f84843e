//! The structured error a plugin returns when it cannot decode a snapshot.

use std::fmt;

/// Which kind of decode failure happened; mirrors the contract's `error-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The payload is not a valid encoding of the state.
    MalformedPayload,
    /// The payload is of a schema version this plugin does not decode.
    UnsupportedSchemaVersion,
    /// The payload decoded, but the plugin's own validation refused it.
    Rejected,
}

/// A decode failure: its kind and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Why, in one line.
    pub message: String,
}

impl DecodeError {
    /// The payload is not a valid encoding of the state.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::MalformedPayload,
            message: message.into(),
        }
    }

    /// The payload's schema version is not one this plugin decodes.
    pub fn unsupported_version(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::UnsupportedSchemaVersion,
            message: message.into(),
        }
    }

    /// The plugin's own validation refused the decoded state.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Rejected,
            message: message.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::MalformedPayload => "malformed payload",
            ErrorKind::UnsupportedSchemaVersion => "unsupported schema version",
            ErrorKind::Rejected => "rejected",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for DecodeError {}
