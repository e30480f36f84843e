//! The errors of a log backend ([`LogError`]), each keeping its cause.

/// The error beneath a [`LogError`]: the driver's own, kept whole for callers
/// that walk [`std::error::Error::source`] or downcast it.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of a log backend, as in Orlando. Each `message` is the whole line
/// users see, naming the file or server (with the cause's own words, when
/// there is one); `source` keeps the cause itself.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The backend cannot be reached (connection refused, database locked, ...).
    #[error("log backend unavailable: {message}")]
    Unavailable {
        /// What could not be reached, and why.
        message: String,
        /// The driver's error, if one caused it.
        #[source]
        source: Option<Cause>,
    },
    /// An append whose sequence is not above the grain's newest.
    #[error(
        "sequence conflict for {grain_type}/{grain_key}: {sequence} is not above the latest {latest}"
    )]
    SequenceConflict {
        /// The grain's type.
        grain_type: String,
        /// The grain's key.
        grain_key: String,
        /// The refused sequence.
        sequence: u64,
        /// The grain's newest sequence.
        latest: u64,
    },
    /// A bad connection URL or configuration.
    #[error("invalid log configuration: {message}")]
    Config {
        /// What is wrong, naming the URL (password hidden).
        message: String,
        /// The parser's error, if one caused it.
        #[source]
        source: Option<Cause>,
    },
    /// What the URL names does not exist: the SQLite file, the PostgreSQL
    /// database, or Orlando's table in it. A reader never creates them.
    #[error("{message}")]
    Missing {
        /// The URL or file, and what is missing.
        message: String,
        /// The driver's error, if one caused it.
        #[source]
        source: Option<Cause>,
    },
    /// Any other backend error.
    #[error("log backend error: {message}")]
    Backend {
        /// What failed, naming the file or server.
        message: String,
        /// The driver's error, if one caused it.
        #[source]
        source: Option<Cause>,
    },
}

impl LogError {
    /// [`LogError::Unavailable`] with no underlying error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// [`LogError::Config`] with no underlying error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::Config {
            message: message.into(),
            source: None,
        }
    }

    /// [`LogError::Missing`] with no underlying error.
    pub fn missing(message: impl Into<String>) -> Self {
        Self::Missing {
            message: message.into(),
            source: None,
        }
    }

    /// [`LogError::Backend`] with no underlying error.
    pub fn backend(message: impl Into<String>) -> Self {
        Self::Backend {
            message: message.into(),
            source: None,
        }
    }

    /// A driver's error as [`LogError::Unavailable`] when `unavailable`,
    /// else [`LogError::Backend`]; `message` already names the place and
    /// the cause, which is kept as the source.
    pub(crate) fn from_driver(unavailable: bool, message: String, cause: sqlx::Error) -> Self {
        let source = Some(Cause::from(cause));
        if unavailable {
            Self::Unavailable { message, source }
        } else {
            Self::Backend { message, source }
        }
    }
}
