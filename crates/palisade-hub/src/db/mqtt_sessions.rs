//! Persistent MQTT sessions (v3.1.1 clean_session=0, v5 clean_start=0 with a session
//! expiry): the subscriptions a device held, kept until `expires_at`. Commands need no
//! copy here: they are stored in `commands` and the undelivered ones are sent again
//! when the restored subscription covers the commands topic.

use super::Db;
use crate::error::Result;
use crate::ids::DeviceId;
use sqlx::Row;

/// Topic filters kept per session (as many as one connection may hold).
pub const MAX_SESSION_SUBSCRIPTIONS: usize = 32;
/// Longest filter kept.
const MAX_FILTER_BYTES: usize = 256;

impl Db {
    /// The subscriptions (filter, QoS) and expiry of the device's stored session
    /// expiring after `after`, or `None` when it has none.
    #[allow(clippy::type_complexity)]
    pub async fn mqtt_session(
        &self,
        device: &DeviceId,
        after: i64,
    ) -> Result<Option<(Vec<(String, u8)>, i64)>> {
        let row = sqlx::query(
            "SELECT subscriptions, expires_at FROM mqtt_sessions WHERE device_id = $1 AND expires_at > $2",
        )
        .bind(device.as_str())
        .bind(after)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let text: String = row.try_get("subscriptions")?;
        let mut subs: Vec<(String, u8)> = serde_json::from_str(&text).unwrap_or_default();
        subs.truncate(MAX_SESSION_SUBSCRIPTIONS);
        subs.retain(|(f, q)| f.len() <= MAX_FILTER_BYTES && *q <= 1);
        Ok(Some((subs, row.try_get("expires_at")?)))
    }

    /// Store (or replace) the device's session, bounded to
    /// [`MAX_SESSION_SUBSCRIPTIONS`] filters.
    pub async fn save_mqtt_session(
        &self,
        device: &DeviceId,
        subscriptions: &[(String, u8)],
        expires_at: i64,
    ) -> Result<()> {
        let kept: Vec<&(String, u8)> = subscriptions
            .iter()
            .filter(|(f, _)| f.len() <= MAX_FILTER_BYTES)
            .take(MAX_SESSION_SUBSCRIPTIONS)
            .collect();
        let text = serde_json::to_string(&kept).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO mqtt_sessions (device_id, subscriptions, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (device_id) DO UPDATE SET subscriptions = excluded.subscriptions, expires_at = excluded.expires_at",
        )
        .bind(device.as_str())
        .bind(text)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forget the device's session (a clean session, or one that ended with expiry 0).
    pub async fn delete_mqtt_session(&self, device: &DeviceId) -> Result<()> {
        sqlx::query("DELETE FROM mqtt_sessions WHERE device_id = $1")
            .bind(device.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Delete every session expired at `now`; returns how many.
    pub async fn delete_expired_mqtt_sessions(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM mqtt_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
