//! Events a device reported on `devices/{id}/events` (other than command results) and
//! the will messages of its ungraceful disconnects, bounded per device: each insert
//! keeps only the newest [`MAX_EVENTS_PER_DEVICE`].

use super::Db;
use crate::error::Result;
use crate::ids::DeviceId;
use palisade_crypto::token;
use serde::Serialize;
use sqlx::Row;

/// Events kept per device; older ones are deleted as new ones arrive.
pub const MAX_EVENTS_PER_DEVICE: i64 = 200;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventSource {
    /// Published by the device on its events topic.
    Device,
    /// The device's will message, published by the hub on an ungraceful disconnect.
    Will,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Device => "device",
            EventSource::Will => "will",
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceEvent {
    pub received_at_ms: i64,
    pub name: String,
    pub source: String,
    /// The event document (a bounded JSON object, validated before it was stored).
    pub payload: serde_json::Value,
}

impl Db {
    /// Store an event and drop the device's oldest beyond [`MAX_EVENTS_PER_DEVICE`].
    pub async fn insert_device_event(
        &self,
        device: &DeviceId,
        received_at_ms: i64,
        name: &str,
        source: EventSource,
        payload: &str,
    ) -> Result<()> {
        let id = token::sha256_hex(&token::random_bytes::<16>());
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO device_events (id, device_id, received_at_ms, name, source, payload) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id[..32])
        .bind(device.as_str())
        .bind(received_at_ms)
        .bind(name)
        .bind(source.as_str())
        .bind(payload)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM device_events WHERE device_id = $1 AND id NOT IN \
             (SELECT id FROM device_events WHERE device_id = $1 ORDER BY received_at_ms DESC, id DESC LIMIT $2)",
        )
        .bind(device.as_str())
        .bind(MAX_EVENTS_PER_DEVICE)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest events of a device, newest first.
    pub async fn device_events(&self, device: &DeviceId, limit: i64) -> Result<Vec<DeviceEvent>> {
        self.device_events_since(device, i64::MIN, limit).await
    }

    /// The newest events received at or after `since_ms` (an owner sees only their own
    /// time with the device, ACC-3).
    pub async fn device_events_since(
        &self,
        device: &DeviceId,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeviceEvent>> {
        let rows = sqlx::query(
            "SELECT received_at_ms, name, source, payload FROM device_events \
             WHERE device_id = $1 AND received_at_ms >= $2 \
             ORDER BY received_at_ms DESC, id DESC LIMIT $3",
        )
        .bind(device.as_str())
        .bind(since_ms)
        .bind(limit.clamp(1, MAX_EVENTS_PER_DEVICE))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.try_get("payload")?;
                Ok(DeviceEvent {
                    received_at_ms: r.try_get("received_at_ms")?,
                    name: r.try_get("name")?,
                    source: r.try_get("source")?,
                    payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }
}
