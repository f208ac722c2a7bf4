//! The storage layer: one connection pool over SQLite (embedded default; WAL, foreign
//! keys, secure_delete) or PostgreSQL, embedded forward-only migrations, and the
//! queries of every table. SQLite runs with `synchronous = FULL`: a committed
//! transaction (an audit entry, an acknowledged change) survives power loss, not
//! just a crash of the process. SQL is written once, in the dialect both engines share
//! (`$N` placeholders, BIGINT times in Unix seconds, TEXT identifiers).

pub mod advisories;
pub mod certificates;
pub mod commands;
pub mod device_admin;
pub mod device_events;
pub mod device_fields;
pub mod device_views;
pub mod devices;
pub mod lifecycle;
pub mod mqtt_sessions;
pub mod notices;
pub mod releases;
pub mod reports;
pub mod rollouts;
mod schema;
pub mod sessions;
pub mod tokens;
pub mod users;
pub mod vulndb;

use crate::config::{Config, DatabaseLocation};
use crate::error::{Error, Result};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use std::str::FromStr;

pub use schema::{LATEST_VERSION, MIGRATION_COUNT};

/// Which engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// The key ring that seals secrets at rest (STOR-3); `None` until one is loaded,
    /// and then sealing or opening a secret fails closed.
    pub(crate) secrets: Option<std::sync::Arc<palisade_crypto::sealed::KeyRing>>,
}

/// The current time in whole Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Connect as the configuration says and bring the schema up to date (refusing a
    /// schema newer than this binary).
    pub async fn open(config: &Config) -> Result<Db> {
        let url = match &config.database {
            DatabaseLocation::Embedded => {
                let path = config.embedded_database_path();
                // Create the file 0600 before SQLite does: its -wal and -shm files copy
                // the database file's mode.
                if !path.exists() {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(|e| Error::io(&path, e))?;
                }
                format!("sqlite://{}?mode=rwc", path.display())
            }
            DatabaseLocation::Url(url) => url.clone(),
        };
        let mut db = Self::connect(&url).await?;
        if config.database == DatabaseLocation::Embedded {
            crate::pki::restrict_file(&config.embedded_database_path())?;
        }
        let ring = crate::secrets::load_or_create(config, &db).await?;
        db.secrets = Some(std::sync::Arc::new(ring));
        db.verify_and_seal_secrets().await?;
        Ok(db)
    }

    /// Connect to a URL and migrate, sealing secrets with `ring` (tests and tools; the
    /// hub itself uses `open`, which loads the key file).
    pub async fn connect_with_secrets(
        url: &str,
        ring: palisade_crypto::sealed::KeyRing,
    ) -> Result<Db> {
        let mut db = Self::connect(url).await?;
        db.secrets = Some(std::sync::Arc::new(ring));
        db.verify_and_seal_secrets().await?;
        Ok(db)
    }

    /// Connect to a URL and migrate, without a secrets key: reading or writing a
    /// sealed secret then fails closed.
    pub async fn connect(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; \
                             PRAGMA busy_timeout = 5000; PRAGMA secure_delete = ON; \
                             PRAGMA synchronous = FULL;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let db = Db {
            pool,
            backend,
            secrets: None,
        };
        schema::migrate(&db).await?;
        Ok(db)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The schema version recorded in the database.
    pub async fn schema_version(&self) -> Result<i64> {
        schema::current_version(self).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Map "no row" to `None`, keeping other errors.
pub(crate) fn optional<T>(r: std::result::Result<T, sqlx::Error>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(sqlx::Error::RowNotFound) => Ok(None),
        Err(e) => Err(Error::Database(e)),
    }
}
