//! The owners' console inbox: notices of a kind (security, policy, marketing), each
//! about something (`ref_id`), at most one per user, kind and thing (the table's
//! unique key), with a read mark.

use super::{Db, now};
use crate::error::Result;
use crate::ids::UserId;
use serde::Serialize;
use sqlx::Row;

/// What a notice is. Security notices go to everyone concerned, whatever their
/// marketing consent; marketing never rides on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeKind {
    Security,
    Policy,
    Marketing,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Security => "security",
            NoticeKind::Policy => "policy",
            NoticeKind::Marketing => "marketing",
        }
    }
    fn parse(s: &str) -> NoticeKind {
        match s {
            "security" => NoticeKind::Security,
            "policy" => NoticeKind::Policy,
            _ => NoticeKind::Marketing,
        }
    }
}

/// One notice in an inbox.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub id: String,
    pub kind: NoticeKind,
    /// What it is about, such as an advisory id.
    pub about: String,
    pub subject: String,
    pub body: String,
    pub created_at: i64,
    /// `None` while unread.
    pub read_at: Option<i64>,
}

/// Most notices shown at once.
pub const INBOX_LIMIT: i64 = 200;

impl Db {
    /// Add a notice unless this user already has one of this kind about `about`.
    /// Returns true if it was added (so the caller sends the e-mail exactly once).
    pub async fn insert_notice(
        &self,
        user: &UserId,
        kind: NoticeKind,
        about: &str,
        subject: &str,
        body: &str,
    ) -> Result<bool> {
        let id = data_encoding::HEXLOWER.encode(&palisade_crypto::token::random_bytes::<12>());
        let done = sqlx::query(
            "INSERT INTO notices (id, user_id, kind, ref_id, subject, body, created_at, read_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0) ON CONFLICT (user_id, kind, ref_id) DO NOTHING",
        )
        .bind(&id)
        .bind(user.as_str())
        .bind(kind.as_str())
        .bind(about)
        .bind(subject)
        .bind(body)
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A user's notices, newest first.
    pub async fn notices(&self, user: &UserId) -> Result<Vec<Notice>> {
        let rows = sqlx::query(
            "SELECT id, kind, ref_id, subject, body, created_at, read_at FROM notices \
             WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT $2",
        )
        .bind(user.as_str())
        .bind(INBOX_LIMIT)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let read: i64 = r.try_get("read_at")?;
                Ok(Notice {
                    id: r.try_get("id")?,
                    kind: NoticeKind::parse(&kind),
                    about: r.try_get("ref_id")?,
                    subject: r.try_get("subject")?,
                    body: r.try_get("body")?,
                    created_at: r.try_get("created_at")?,
                    read_at: (read > 0).then_some(read),
                })
            })
            .collect()
    }

    /// How many of a user's notices are unread (for the console header).
    pub async fn unread_notices(&self, user: &UserId) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM notices WHERE user_id = $1 AND read_at = 0")
                .bind(user.as_str())
                .fetch_one(self.pool())
                .await?
                .try_get("n")?,
        )
    }

    /// Mark all of a user's notices read.
    pub async fn mark_notices_read(&self, user: &UserId) -> Result<u64> {
        Ok(
            sqlx::query("UPDATE notices SET read_at = $1 WHERE user_id = $2 AND read_at = 0")
                .bind(now())
                .bind(user.as_str())
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }

    /// Active staff accounts (administrators and operators), for alerts that go to
    /// every one of them (e.g. a device's integrity alert, INT-1).
    pub async fn staff_user_ids(&self) -> Result<Vec<UserId>> {
        let rows = sqlx::query(
            "SELECT id FROM users WHERE role IN ('admin', 'operator') AND status = 'active' ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(UserId::from_db(r.try_get::<String, _>("id")?)))
            .collect()
    }

    /// How many notices of a kind exist about `about` (e.g. owners told of an advisory).
    pub async fn notices_about(&self, kind: NoticeKind, about: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM notices WHERE kind = $1 AND ref_id = $2")
                .bind(kind.as_str())
                .bind(about)
                .fetch_one(self.pool())
                .await?
                .try_get("n")?,
        )
    }
}
