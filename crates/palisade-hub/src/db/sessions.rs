//! The `sessions` table: server-side sessions keyed by the digest of their token.

use super::{Db, now, optional};
use crate::error::Result;
use crate::ids::UserId;
use palisade_crypto::token;
use sqlx::Row;

/// How far a session has come through sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Signed in; may use the console and API as the role allows.
    Full,
    /// Password accepted; waiting for a TOTP or recovery code.
    Mfa,
    /// Password accepted; the account must enrol a second factor first (administrators).
    Enrol,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Full => "full",
            Stage::Mfa => "mfa",
            Stage::Enrol => "enrol",
        }
    }
    fn parse(s: &str) -> Option<Stage> {
        match s {
            "full" => Some(Stage::Full),
            "mfa" => Some(Stage::Mfa),
            "enrol" => Some(Stage::Enrol),
            _ => None,
        }
    }
}

/// A live session as looked up from its token.
#[derive(Debug, Clone)]
pub struct Session {
    pub token_hash: String,
    pub user_id: UserId,
    pub stage: Stage,
    pub csrf: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub source: String,
    pub user_agent: String,
    /// When the holder last re-authenticated in this session (0 = never).
    pub reauth_at: i64,
}

/// Lifetimes applied to new sessions and lookups.
#[derive(Debug, Clone, Copy)]
pub struct SessionTimes {
    pub idle_secs: i64,
    pub absolute_secs: i64,
}

impl Db {
    /// Create a session and return its token (the only time the token exists in clear).
    pub async fn create_session(
        &self,
        user: &UserId,
        stage: Stage,
        times: SessionTimes,
        source: &str,
        user_agent: &str,
    ) -> Result<(String, Session)> {
        let raw = token::random_token();
        let at = now();
        let session = Session {
            token_hash: token::digest(&raw),
            user_id: user.clone(),
            stage,
            csrf: token::random_token(),
            created_at: at,
            last_seen_at: at,
            // Half-finished sign-ins (MFA, enrolment) get at most the idle time.
            expires_at: at
                + if stage == Stage::Full {
                    times.absolute_secs
                } else {
                    times.idle_secs.min(times.absolute_secs)
                },
            source: source.chars().take(64).collect(),
            user_agent: user_agent.chars().take(200).collect(),
            reauth_at: 0,
        };
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, stage, csrf, created_at, last_seen_at, expires_at, source, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&session.token_hash)
        .bind(user.as_str())
        .bind(stage.as_str())
        .bind(&session.csrf)
        .bind(at)
        .bind(at)
        .bind(session.expires_at)
        .bind(&session.source)
        .bind(&session.user_agent)
        .execute(self.pool())
        .await?;
        Ok((raw, session))
    }

    /// The live session for a token, or `None` if unknown, expired or idle too long
    /// (an expired session is deleted on sight). Refreshes the idle timer at most once a minute.
    pub async fn session(&self, raw_token: &str, times: SessionTimes) -> Result<Option<Session>> {
        let hash = token::digest(raw_token);
        let row = optional(
            sqlx::query(
                "SELECT token_hash, user_id, stage, csrf, created_at, last_seen_at, expires_at, source, user_agent, reauth_at \
                 FROM sessions WHERE token_hash = $1",
            )
            .bind(&hash)
            .fetch_one(self.pool())
            .await,
        )?;
        let Some(row) = row else { return Ok(None) };
        let Some(stage) = Stage::parse(&row.try_get::<String, _>("stage")?) else {
            return Ok(None);
        };
        let session = Session {
            token_hash: hash,
            user_id: UserId::from_db(row.try_get("user_id")?),
            stage,
            csrf: row.try_get("csrf")?,
            created_at: row.try_get("created_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            expires_at: row.try_get("expires_at")?,
            source: row.try_get("source")?,
            user_agent: row.try_get("user_agent")?,
            reauth_at: row.try_get("reauth_at")?,
        };
        let at = now();
        if session.expires_at <= at || session.last_seen_at + times.idle_secs <= at {
            self.delete_session(&session.token_hash).await?;
            return Ok(None);
        }
        if at - session.last_seen_at >= 60 {
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2")
                .bind(at)
                .bind(&session.token_hash)
                .execute(self.pool())
                .await?;
        }
        Ok(Some(session))
    }

    /// Record that the session's holder re-authenticated just now.
    pub async fn mark_reauthenticated(&self, token_hash: &str) -> Result<()> {
        sqlx::query("UPDATE sessions SET reauth_at = $1 WHERE token_hash = $2")
            .bind(now())
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// End every session of a user except (optionally) one; returns how many ended.
    pub async fn delete_user_sessions(&self, user: &UserId, except: Option<&str>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
            .bind(user.as_str())
            .bind(except.unwrap_or(""))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn user_sessions(
        &self,
        user: &UserId,
    ) -> Result<Vec<(String, i64, i64, String, String)>> {
        let rows = sqlx::query(
            "SELECT token_hash, created_at, last_seen_at, source, user_agent FROM sessions \
             WHERE user_id = $1 AND stage = 'full' AND expires_at > $2 ORDER BY last_seen_at DESC",
        )
        .bind(user.as_str())
        .bind(now())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("token_hash")?,
                    r.try_get("created_at")?,
                    r.try_get("last_seen_at")?,
                    r.try_get("source")?,
                    r.try_get("user_agent")?,
                ))
            })
            .collect()
    }
}
