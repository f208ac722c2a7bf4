//! Single-use secrets stored as digests: the setup code, e-mailed one-time links
//! (verification, recovery, invitation), and long-lived API tokens for scripts.

use super::{Db, now, optional};
use crate::error::Result;
use crate::ids::UserId;
use palisade_crypto::token;
use sqlx::Row;

/// What an e-mailed one-time link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
    Invite,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
            Purpose::Invite => "invite",
        }
    }
}

/// An API token's metadata (never the token itself).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
}

/// Prefix that marks Palisade API tokens (helps secret scanners find leaked ones).
pub const API_TOKEN_PREFIX: &str = "pal_";

impl Db {
    /// Store a new setup code (its digest), invalidating every earlier unused one.
    pub async fn store_setup_code(&self, code: &str, ttl_secs: i64) -> Result<()> {
        let at = now();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE setup_codes SET expires_at = $1 WHERE used_at IS NULL AND expires_at > $1",
        )
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO setup_codes (code_hash, created_at, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(token::digest(&token::normalize_code(code)))
        .bind(at)
        .bind(at + ttl_secs)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a setup code is valid now, without using it up.
    pub async fn setup_code_valid(&self, code: &str) -> Result<bool> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM setup_codes WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token::digest(&token::normalize_code(code)))
        .bind(now())
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        Ok(n == 1)
    }

    /// Use up a setup code; true exactly once per valid code.
    pub async fn consume_setup_code(&self, code: &str) -> Result<bool> {
        let at = now();
        let done = sqlx::query(
            "UPDATE setup_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(at)
        .bind(token::digest(&token::normalize_code(code)))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Create a one-time link token for a user; earlier unused ones of the same purpose end.
    pub async fn create_one_time_token(
        &self,
        user: &UserId,
        purpose: Purpose,
        ttl_secs: i64,
    ) -> Result<String> {
        let raw = token::random_token();
        let at = now();
        sqlx::query("DELETE FROM one_time_tokens WHERE user_id = $1 AND purpose = $2")
            .bind(user.as_str())
            .bind(purpose.as_str())
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO one_time_tokens (token_hash, purpose, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token::digest(&raw))
        .bind(purpose.as_str())
        .bind(user.as_str())
        .bind(at)
        .bind(at + ttl_secs)
        .execute(self.pool())
        .await?;
        Ok(raw)
    }

    /// The user a one-time token belongs to, if it is valid for `purpose`; `consume`
    /// uses it up atomically (only one caller gets `Some`).
    pub async fn one_time_token_user(
        &self,
        raw: &str,
        purpose: Purpose,
        consume: bool,
    ) -> Result<Option<UserId>> {
        let hash = token::digest(raw);
        let at = now();
        let row = optional(
            sqlx::query(
                "SELECT user_id FROM one_time_tokens WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
            )
            .bind(&hash)
            .bind(purpose.as_str())
            .bind(at)
            .fetch_one(self.pool())
            .await,
        )?;
        let Some(row) = row else { return Ok(None) };
        if consume {
            let done = sqlx::query(
                "UPDATE one_time_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
            )
            .bind(at)
            .bind(&hash)
            .execute(self.pool())
            .await?;
            if done.rows_affected() != 1 {
                return Ok(None);
            }
        }
        Ok(Some(UserId::from_db(row.try_get("user_id")?)))
    }

    /// Create an API token; returns `(id, token)`. The token is shown once.
    pub async fn create_api_token(
        &self,
        user: &UserId,
        name: &str,
        ttl_secs: i64,
    ) -> Result<(String, String)> {
        let id = data_encoding::HEXLOWER.encode(&token::random_bytes::<8>());
        let raw = format!("{API_TOKEN_PREFIX}{}", token::random_token());
        let at = now();
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(user.as_str())
        .bind(name)
        .bind(token::digest(&raw))
        .bind(at)
        .bind(at + ttl_secs)
        .execute(self.pool())
        .await?;
        Ok((id, raw))
    }

    /// The owner of a live API token, recording its use.
    pub async fn api_token_user(&self, raw: &str) -> Result<Option<UserId>> {
        let hash = token::digest(raw);
        let at = now();
        let row = optional(
            sqlx::query("SELECT user_id FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2")
                .bind(&hash)
                .bind(at)
                .fetch_one(self.pool())
                .await,
        )?;
        let Some(row) = row else { return Ok(None) };
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE token_hash = $2")
            .bind(at)
            .bind(&hash)
            .execute(self.pool())
            .await?;
        Ok(Some(UserId::from_db(row.try_get("user_id")?)))
    }

    pub async fn api_tokens(&self, user: &UserId) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, expires_at, last_used_at FROM api_tokens \
             WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC",
        )
        .bind(user.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiToken {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    expires_at: r.try_get("expires_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                })
            })
            .collect()
    }

    /// Revoke one of the user's API tokens (per-object: another user's id does nothing).
    pub async fn revoke_api_token(&self, user: &UserId, id: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
            .bind(now())
            .bind(id)
            .bind(user.as_str())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revoke every API token of a user (password reset, disable).
    pub async fn revoke_user_api_tokens(&self, user: &UserId) -> Result<()> {
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(user.as_str())
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
