//! The hub library's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "the database schema is at version {found}, newer than this palisade understands ({supported}); run a newer palisade"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error(transparent)]
    Crypto(#[from] palisade_crypto::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Conflict(String),
    #[error("secrets key: {0}")]
    Secrets(String),
    #[error("a background task failed: {0}")]
    Task(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
