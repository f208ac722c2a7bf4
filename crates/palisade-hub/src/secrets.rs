//! Secrets at rest (STOR-3): the key file outside the database (`DATA_DIR/secrets.key`,
//! 0600, created at first start, or the operator's `secrets_key_file`), sealing and
//! opening of the database's reversible secrets (TOTP secrets, pending TOTP secrets,
//! queued mail bodies that may hold one-time links), the upgrade that seals values
//! stored in plaintext by older versions, and key rotation.

use crate::config::Config;
use crate::db::Db;
use crate::error::{Error, Result};
use palisade_crypto::sealed::{KeyRing, SealError};
use sqlx::Row;
use std::path::PathBuf;

/// The key file this configuration uses, and whether the operator supplied it.
pub fn key_path(config: &Config) -> (PathBuf, bool) {
    match &config.secrets_key_file {
        Some(path) => (path.clone(), true),
        None => (config.data_dir.join("secrets.key"), false),
    }
}

fn read_ring(path: &std::path::Path) -> Result<KeyRing> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::Secrets(format!(
            "{} is readable by other users (mode {:o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    KeyRing::parse(&text).map_err(|e| Error::Secrets(format!("{}: {e}", path.display())))
}

fn write_ring(path: &std::path::Path, ring: &KeyRing) -> Result<()> {
    crate::pki::write_atomic(path, ring.to_file().as_bytes(), 0o600)
}

/// Load the key ring, or create it at first start. Fails closed: a missing key file
/// while the database holds sealed values, an operator key file that is missing, a
/// key file readable by others, or a malformed one stops the hub with a clear error.
pub async fn load_or_create(config: &Config, db: &Db) -> Result<KeyRing> {
    let (path, supplied) = key_path(config);
    if path.exists() {
        return read_ring(&path);
    }
    if supplied {
        return Err(Error::Secrets(format!(
            "the configured secrets_key_file {} does not exist",
            path.display()
        )));
    }
    let ids = db.sealed_key_ids().await?;
    if !ids.is_empty() {
        return Err(Error::Secrets(format!(
            "{} is missing, but the database holds secrets sealed with key {}; restore the key file from your backup (a new key cannot open them)",
            path.display(),
            ids.join(", ")
        )));
    }
    let ring = KeyRing::generate().map_err(|e| Error::Secrets(e.to_string()))?;
    write_ring(&path, &ring)?;
    tracing::info!("created the secrets key {}", path.display());
    Ok(ring)
}

/// One stored secret: which table and row, its context, and its stored text.
struct Stored {
    table: Table,
    id: String,
    column: &'static str,
    value: String,
}

#[derive(Clone, Copy)]
enum Table {
    Users,
    Outbox,
}

impl Stored {
    fn context(&self) -> String {
        match self.table {
            Table::Users => crate::db::users::totp_context(&self.id),
            Table::Outbox => crate::mail::outbox_context(&self.id),
        }
    }
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub old_keys: Vec<String>,
    pub new_key: String,
    pub resealed: usize,
    pub key_file: PathBuf,
}

impl Db {
    /// Seal a secret for storage.
    pub(crate) fn seal_secret(&self, context: &str, plaintext: &str) -> Result<String> {
        let ring = self
            .secrets
            .as_ref()
            .ok_or_else(|| Error::Secrets("no secrets key is loaded".into()))?;
        Ok(ring.seal(context, plaintext))
    }

    /// Open a stored secret. A value that fails authentication is an error, never
    /// returned as is.
    pub(crate) fn open_secret(&self, context: &str, stored: &str) -> Result<String> {
        let ring = self
            .secrets
            .as_ref()
            .ok_or_else(|| Error::Secrets("no secrets key is loaded".into()))?;
        if stored.is_empty() {
            // Delivered mail keeps an empty body; there is nothing to open.
            return Ok(String::new());
        }
        ring.open(context, stored).map_err(|e| match e {
            SealError::UnknownKey(_) | SealError::Authentication => Error::Secrets(format!(
                "{e}; is this the right secrets key file for this database?"
            )),
            other => Error::Secrets(other.to_string()),
        })
    }

    /// Every stored secret (sealed or still plaintext).
    async fn stored_secrets(&self) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        let rows = sqlx::query(
            "SELECT id, COALESCE(totp_secret, '') AS s, COALESCE(totp_pending, '') AS p FROM users \
             WHERE totp_secret IS NOT NULL OR totp_pending IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await?;
        for row in rows {
            let id: String = row.try_get("id")?;
            for (column, key) in [("totp_secret", "s"), ("totp_pending", "p")] {
                let value: String = row.try_get(key)?;
                if !value.is_empty() {
                    out.push(Stored {
                        table: Table::Users,
                        id: id.clone(),
                        column,
                        value,
                    });
                }
            }
        }
        let rows = sqlx::query("SELECT id, body FROM outbox WHERE sent_at IS NULL AND body <> ''")
            .fetch_all(self.pool())
            .await?;
        for row in rows {
            out.push(Stored {
                table: Table::Outbox,
                id: row.try_get("id")?,
                column: "body",
                value: row.try_get("body")?,
            });
        }
        Ok(out)
    }

    /// The key ids named by sealed values in the database.
    pub async fn sealed_key_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .stored_secrets()
            .await?
            .iter()
            .filter_map(|s| KeyRing::key_id_of(&s.value).map(str::to_owned))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn store(&self, s: &Stored, value: &str) -> Result<()> {
        let sql = match (s.table, s.column) {
            (Table::Users, "totp_secret") => "UPDATE users SET totp_secret = $1 WHERE id = $2",
            (Table::Users, _) => "UPDATE users SET totp_pending = $1 WHERE id = $2",
            (Table::Outbox, _) => "UPDATE outbox SET body = $1 WHERE id = $2",
        };
        sqlx::query(sql)
            .bind(value)
            .bind(&s.id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// At open: check every sealed value opens with the loaded key (fail closed on a
    /// wrong key) and seal any value still stored in plaintext (upgrade from a version
    /// before STOR-3). Returns how many plaintext values were sealed.
    pub(crate) async fn verify_and_seal_secrets(&self) -> Result<usize> {
        let mut sealed = 0;
        for s in self.stored_secrets().await? {
            if KeyRing::is_sealed(&s.value) {
                self.open_secret(&s.context(), &s.value)?;
            } else {
                let value = self.seal_secret(&s.context(), &s.value)?;
                self.store(&s, &value).await?;
                sealed += 1;
            }
        }
        if sealed > 0 {
            tracing::info!(
                sealed,
                "sealed secrets stored in plaintext by an older version"
            );
        }
        Ok(sealed)
    }

    /// Re-seal every stored secret with the current key.
    async fn reseal_all(&self) -> Result<usize> {
        let mut count = 0;
        for s in self.stored_secrets().await? {
            let plain = if KeyRing::is_sealed(&s.value) {
                self.open_secret(&s.context(), &s.value)?
            } else {
                s.value.clone()
            };
            let value = self.seal_secret(&s.context(), &plain)?;
            self.store(&s, &value).await?;
            count += 1;
        }
        Ok(count)
    }
}

/// `palisade secrets rotate-key`: make a new key, re-seal every secret with it, then
/// drop the old key from the key file. Safe to interrupt: until the last step the key
/// file holds both keys, and running it again finishes the work.
pub async fn rotate_key(config: &Config) -> Result<Rotation> {
    let db = crate::open_database(config).await?;
    let (path, _) = key_path(config);
    let old = read_ring(&path)?;
    let both = old.rotated().map_err(|e| Error::Secrets(e.to_string()))?;
    let new_key = both.current_id().to_owned();
    write_ring(&path, &both)?;
    let only = both
        .current_only()
        .map_err(|e| Error::Secrets(e.to_string()))?;
    // Open with either key, seal with the new one.
    let mut db = db;
    db.secrets = Some(std::sync::Arc::new(both));
    let resealed = db.reseal_all().await?;
    write_ring(&path, &only)?;
    db.close().await;
    Ok(Rotation {
        old_keys: old.ids(),
        new_key,
        resealed,
        key_file: path,
    })
}
