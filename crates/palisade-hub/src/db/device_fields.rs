//! Per-device optional telemetry fields (PRIV-3) and product sensing capabilities
//! (PRIV-4): which optional fields an owner switched off, and what a product model can
//! sense and why.

use super::devices::{Sensing, SensingSpec};
use super::{Db, now};
use crate::error::{Error, Result};
use crate::ids::{DeviceId, ProductId};
use sqlx::Row;

impl Db {
    /// The optional fields switched off on `device`, sorted.
    pub async fn disabled_fields(&self, device: &DeviceId) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT field FROM device_field_settings WHERE device_id = $1 ORDER BY field",
        )
        .bind(device.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("field")?))
            .collect()
    }

    /// Switch a field on or off for a device; true if that changed anything. The caller
    /// checks that the field is declared and optional.
    pub async fn set_field_enabled(
        &self,
        device: &DeviceId,
        field: &str,
        enabled: bool,
    ) -> Result<bool> {
        let done = if enabled {
            sqlx::query("DELETE FROM device_field_settings WHERE device_id = $1 AND field = $2")
                .bind(device.as_str())
                .bind(field)
                .execute(self.pool())
                .await?
        } else {
            sqlx::query(
                "INSERT INTO device_field_settings (device_id, field, changed_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (device_id, field) DO NOTHING",
            )
            .bind(device.as_str())
            .bind(field)
            .bind(now())
            .execute(self.pool())
            .await?
        };
        Ok(done.rows_affected() > 0)
    }

    /// The sensing capabilities declared for a product model.
    pub async fn product_sensing(&self, product: &ProductId) -> Result<Vec<SensingSpec>> {
        let rows = sqlx::query(
            "SELECT capability, purpose FROM product_sensing WHERE product_id = $1 ORDER BY capability",
        )
        .bind(product.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let name: String = r.try_get("capability")?;
                Ok(SensingSpec {
                    capability: Sensing::parse(&name).ok_or_else(|| {
                        Error::Conflict(format!("stored sensing capability {name:?} is unknown"))
                    })?,
                    purpose: r.try_get("purpose")?,
                })
            })
            .collect()
    }

    /// Declare a product model's sensing capabilities (replacing earlier ones).
    pub async fn set_product_sensing(
        &self,
        product: &ProductId,
        sensing: &[SensingSpec],
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM product_sensing WHERE product_id = $1")
            .bind(product.as_str())
            .execute(&mut *tx)
            .await?;
        for s in sensing {
            sqlx::query(
                "INSERT INTO product_sensing (product_id, capability, purpose) VALUES ($1, $2, $3)",
            )
            .bind(product.as_str())
            .bind(s.capability.as_str())
            .bind(&s.purpose)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
