//! Product models, claim codes, devices and their telemetry.

use super::{Db, now, optional};
use crate::error::{Error, Result};
use crate::ids::{DeviceId, ProductId, UserId};
use palisade_crypto::token;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

/// The JSON type a telemetry field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    Number,
    Integer,
    Boolean,
    String,
}

/// One declared telemetry field (DATA-1: what is collected, and why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldKind,
    #[serde(default)]
    pub unit: String,
    pub purpose: String,
    /// Whether the field is personal data (it can identify or describe a person or
    /// their home), shown in the data inventory (DATA-1, PRIV-3).
    #[serde(default)]
    pub personal: bool,
    /// How many days the hub keeps the field's readings; `None` means the hub's
    /// telemetry default (`privacy::inventory::TELEMETRY_RETENTION_DAYS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Whether the owner may switch the field off per device (PRIV-3): the hub then
    /// stores none of it and tells the agent to stop sending it.
    #[serde(default)]
    pub optional: bool,
}

/// A sensing capability a device may have (PRIV-4). Unknown names are refused when a
/// product is declared, so the published list is complete and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensing {
    Camera,
    Microphone,
    Location,
    Motion,
    Presence,
    Biometric,
}

impl Sensing {
    pub const ALL: [Sensing; 6] = [
        Sensing::Camera,
        Sensing::Microphone,
        Sensing::Location,
        Sensing::Motion,
        Sensing::Presence,
        Sensing::Biometric,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sensing::Camera => "camera",
            Sensing::Microphone => "microphone",
            Sensing::Location => "location",
            Sensing::Motion => "motion",
            Sensing::Presence => "presence",
            Sensing::Biometric => "biometric",
        }
    }

    /// How the pages name it.
    pub fn label(&self) -> &'static str {
        match self {
            Sensing::Camera => "Camera (images or video)",
            Sensing::Microphone => "Microphone (sound)",
            Sensing::Location => "Location",
            Sensing::Motion => "Motion sensor",
            Sensing::Presence => "Presence of people",
            Sensing::Biometric => "Biometric sensor",
        }
    }

    pub fn parse(name: &str) -> Option<Sensing> {
        Sensing::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One declared sensing capability with the reason the device has it (PRIV-4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensingSpec {
    pub capability: Sensing,
    pub purpose: String,
}

/// A product model: what devices of this kind are and may send.
#[derive(Debug, Clone, Serialize)]
pub struct ProductModel {
    pub id: ProductId,
    pub name: String,
    pub hardware_revision: String,
    pub fields: Vec<FieldSpec>,
    pub created_at: i64,
}

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Active,
    Revoked,
    Decommissioned,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Revoked => "revoked",
            DeviceStatus::Decommissioned => "decommissioned",
        }
    }
    fn parse(s: &str) -> DeviceStatus {
        match s {
            "active" => DeviceStatus::Active,
            "decommissioned" => DeviceStatus::Decommissioned,
            _ => DeviceStatus::Revoked, // unknown fails closed
        }
    }
}

/// A device as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub id: DeviceId,
    pub product_id: ProductId,
    pub status: DeviceStatus,
    pub cert_sha256: String,
    pub cert_not_after: i64,
    pub owner_id: Option<UserId>,
    /// The maker's firmware version, as the device last reported it (SUP-3).
    pub firmware_version: String,
    /// The Palisade agent's own version, as the device last reported it (SUP-3).
    pub agent_version: String,
    /// When the current owner claimed the device (Unix milliseconds, so that a release
    /// and the next claim in the same second stay apart); `None` without owner.
    pub owned_since_ms: Option<i64>,
    pub rejected_messages: i64,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
    /// The certificate a renewal replaced, accepted until the new one is first used
    /// (not shown: it is the hub's bookkeeping).
    #[serde(skip)]
    pub previous_cert_sha256: Option<String>,
}

/// A freshly made claim code with the pairing code printed beside it on the label.
#[derive(Debug, Clone)]
pub struct ClaimCode {
    pub claim: String,
    pub pairing: String,
    pub expires_at: i64,
}

/// Rows per multi-row INSERT: 3 parameters each, far below SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters per statement.
const TELEMETRY_ROWS_PER_INSERT: usize = 256;

/// `INSERT INTO telemetry … VALUES ($1, $2, $3), ($4, $5, $6), …` for `rows` rows. Built
/// only from constants and counts (never from data), so it is safe to execute.
fn multi_row_insert(rows: usize) -> String {
    let mut sql =
        String::from("INSERT INTO telemetry (device_id, received_at_ms, payload) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let base = row * 3;
        sql.push_str(&format!("(${}, ${}, ${})", base + 1, base + 2, base + 3));
    }
    sql
}

macro_rules! device_columns {
    () => {
        "id, product_id, status, cert_sha256, cert_not_after, owner_id, firmware_version, \
         agent_version, owned_since_ms, rejected_messages, created_at, last_seen_at, previous_cert_sha256"
    };
}

pub(super) fn device_from_row(row: &AnyRow) -> Result<Device> {
    Ok(Device {
        id: DeviceId::from_db(row.try_get("id")?),
        product_id: ProductId::from_db(row.try_get("product_id")?),
        status: DeviceStatus::parse(&row.try_get::<String, _>("status")?),
        cert_sha256: row.try_get("cert_sha256")?,
        cert_not_after: row.try_get("cert_not_after")?,
        owner_id: row
            .try_get::<Option<String>, _>("owner_id")?
            .and_then(|s| UserId::parse(&s)),
        firmware_version: row.try_get("firmware_version")?,
        agent_version: row.try_get("agent_version")?,
        owned_since_ms: row.try_get("owned_since_ms")?,
        rejected_messages: row.try_get("rejected_messages")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        // Queries with their own column list may leave it out.
        previous_cert_sha256: row
            .try_get::<Option<String>, _>("previous_cert_sha256")
            .unwrap_or(None),
    })
}

fn product_from_row(row: &AnyRow) -> Result<ProductModel> {
    let fields: String = row.try_get("fields")?;
    Ok(ProductModel {
        id: ProductId::from_db(row.try_get("id")?),
        name: row.try_get("name")?,
        hardware_revision: row.try_get("hardware_revision")?,
        fields: serde_json::from_str(&fields)
            .map_err(|e| Error::Conflict(format!("stored fields: {e}")))?,
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    pub async fn insert_product(&self, model: &ProductModel) -> Result<()> {
        let fields =
            serde_json::to_string(&model.fields).map_err(|e| Error::Conflict(e.to_string()))?;
        let done = sqlx::query(
            "INSERT INTO product_models (id, name, hardware_revision, fields, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(model.id.as_str())
        .bind(&model.name)
        .bind(&model.hardware_revision)
        .bind(fields)
        .bind(now())
        .execute(self.pool())
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                Err(Error::Conflict(format!(
                    "a product model {} already exists",
                    model.id
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn product(&self, id: &ProductId) -> Result<Option<ProductModel>> {
        optional(
            sqlx::query("SELECT id, name, hardware_revision, fields, created_at FROM product_models WHERE id = $1")
                .bind(id.as_str())
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| product_from_row(&r))
        .transpose()
    }

    pub async fn products(&self) -> Result<Vec<ProductModel>> {
        sqlx::query("SELECT id, name, hardware_revision, fields, created_at FROM product_models ORDER BY id")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(product_from_row)
            .collect()
    }

    /// Make `count` single-use claim codes (and pairing codes) for a product, each
    /// ≥128 bits from the CSPRNG (AUTH-2). Only their digests are stored.
    pub async fn create_claim_codes(
        &self,
        product: &ProductId,
        count: usize,
        ttl_secs: i64,
    ) -> Result<Vec<ClaimCode>> {
        let at = now();
        let mut codes = Vec::with_capacity(count);
        let mut tx = self.pool().begin().await?;
        for _ in 0..count {
            let code = ClaimCode {
                claim: token::human_code(130),
                pairing: token::human_code(130),
                expires_at: at + ttl_secs,
            };
            sqlx::query(
                "INSERT INTO claim_codes (code_hash, product_id, pairing_code_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token::digest(&token::normalize_code(&code.claim)))
            .bind(product.as_str())
            .bind(token::digest(&token::normalize_code(&code.pairing)))
            .bind(at)
            .bind(code.expires_at)
            .execute(&mut *tx)
            .await?;
            codes.push(code);
        }
        tx.commit().await?;
        Ok(codes)
    }

    /// The product a claim code is for, if the code is valid now (not used, not expired).
    pub async fn claim_code_product(&self, claim: &str) -> Result<Option<ProductId>> {
        let row = optional(
            sqlx::query("SELECT product_id FROM claim_codes WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2")
                .bind(token::digest(&token::normalize_code(claim)))
                .bind(now())
                .fetch_one(self.pool())
                .await,
        )?;
        Ok(row
            .map(|r| r.try_get::<String, _>("product_id"))
            .transpose()?
            .map(ProductId::from_db))
    }

    /// Use up a claim code and register the device with its first certificate, in one
    /// transaction: exactly one enrolment can win a code. `None` if the code is not valid.
    pub async fn enroll_device(
        &self,
        claim: &str,
        device: &DeviceId,
        cert_sha256: &str,
        cert_not_after: i64,
    ) -> Result<Option<Device>> {
        let at = now();
        let hash = token::digest(&token::normalize_code(claim));
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "UPDATE claim_codes SET used_at = $1, device_id = $2 WHERE code_hash = $3 AND used_at IS NULL AND expires_at > $1 \
             RETURNING product_id, pairing_code_hash",
        )
        .bind(at)
        .bind(device.as_str())
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let product: String = row.try_get("product_id")?;
        let pairing: String = row.try_get("pairing_code_hash")?;
        sqlx::query(
            "INSERT INTO devices (id, product_id, status, cert_sha256, cert_not_after, pairing_code_hash, created_at) \
             VALUES ($1, $2, 'active', $3, $4, $5, $6)",
        )
        .bind(device.as_str())
        .bind(&product)
        .bind(cert_sha256)
        .bind(cert_not_after)
        .bind(&pairing)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.device(device).await
    }

    pub async fn device(&self, id: &DeviceId) -> Result<Option<Device>> {
        let q = concat!("SELECT ", device_columns!(), " FROM devices WHERE id = $1");
        optional(
            sqlx::query(q)
                .bind(id.as_str())
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| device_from_row(&r))
        .transpose()
    }

    /// The device whose current certificate has this SHA-256, or whose previous one
    /// does while a renewed certificate has not been used yet.
    pub async fn device_by_certificate(&self, cert_sha256: &str) -> Result<Option<Device>> {
        let q = concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE cert_sha256 = $1 OR previous_cert_sha256 = $1"
        );
        optional(
            sqlx::query(q)
                .bind(cert_sha256)
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| device_from_row(&r))
        .transpose()
    }

    pub async fn devices(&self) -> Result<Vec<Device>> {
        let q = concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices ORDER BY created_at"
        );
        sqlx::query(q)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(device_from_row)
            .collect()
    }

    pub async fn set_device_status(&self, id: &DeviceId, status: DeviceStatus) -> Result<bool> {
        let done = sqlx::query("UPDATE devices SET status = $1 WHERE id = $2")
            .bind(status.as_str())
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn touch_device(&self, id: &DeviceId) -> Result<()> {
        sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Count refused telemetry messages (undeclared fields, bad types) for a device.
    pub async fn add_rejected_messages(&self, id: &DeviceId, n: i64) -> Result<()> {
        sqlx::query("UPDATE devices SET rejected_messages = rejected_messages + $1 WHERE id = $2")
            .bind(n)
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Store a batch of telemetry messages in one transaction (group commit). Returns
    /// once the batch is committed: only then may the messages be acknowledged.
    pub async fn insert_telemetry_batch(&self, batch: &[(DeviceId, i64, String)]) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        for chunk in batch.chunks(TELEMETRY_ROWS_PER_INSERT) {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(multi_row_insert(chunk.len())));
            for (device, at_ms, payload) in chunk {
                query = query
                    .bind(device.as_str())
                    .bind(*at_ms)
                    .bind(payload.as_str());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The newest telemetry of a device, newest first.
    pub async fn telemetry(&self, id: &DeviceId, limit: i64) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT received_at_ms, payload FROM telemetry WHERE device_id = $1 ORDER BY received_at_ms DESC LIMIT $2",
        )
        .bind(id.as_str())
        .bind(limit.clamp(1, 10_000))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("received_at_ms")?, r.try_get("payload")?)))
            .collect()
    }
}
