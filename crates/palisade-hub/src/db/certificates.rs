//! Device certificate renewal (AUTH-10, ENC-3): whether a device may renew now, and
//! recording the new certificate while the one the device connected with stays
//! accepted (`previous_cert_sha256`) until the device first connects with the new
//! one — a device that crashes before storing its new certificate is not locked out.

use super::Db;
use crate::error::Result;
use crate::ids::DeviceId;
use sqlx::Row;

/// A certificate issued by renewal that the device never used may be replaced by a
/// new renewal only this long after it was issued.
pub const REISSUE_AFTER_SECS: i64 = 60;

/// Why a renewal is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalRefusal {
    /// Revoked, decommissioned or unknown.
    NotActive,
    /// Less than half of the current certificate's lifetime has passed.
    TooEarly { allowed_from: i64 },
    /// A renewal was issued moments ago.
    TooOften,
    /// The certificate of this connection is no longer one of the device's.
    Superseded,
}

impl RenewalRefusal {
    pub fn describe(self) -> String {
        match self {
            RenewalRefusal::NotActive => "device is not active".into(),
            RenewalRefusal::TooEarly { allowed_from } => {
                format!("too early: renewal allowed from {allowed_from}")
            }
            RenewalRefusal::TooOften => "too often: a certificate was issued moments ago".into(),
            RenewalRefusal::Superseded => "the certificate presented is no longer current".into(),
        }
    }
}

impl Db {
    /// May `device`, connected with the certificate `presented` (SHA-256 hex), renew
    /// at `now`? Asked before anything is signed.
    pub async fn renewal_allowed(
        &self,
        device: &DeviceId,
        presented: &str,
        now: i64,
    ) -> Result<std::result::Result<(), RenewalRefusal>> {
        let row = sqlx::query(
            "SELECT status, cert_sha256, previous_cert_sha256, cert_not_after, cert_issued_at, created_at \
             FROM devices WHERE id = $1",
        )
        .bind(device.as_str())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(Err(RenewalRefusal::NotActive));
        };
        let status: String = row.try_get("status")?;
        if status != "active" {
            return Ok(Err(RenewalRefusal::NotActive));
        }
        let current: String = row.try_get("cert_sha256")?;
        let previous: Option<String> = row.try_get("previous_cert_sha256")?;
        let not_after: i64 = row.try_get("cert_not_after")?;
        let issued: i64 = row.try_get("cert_issued_at")?;
        let issued = if issued > 0 {
            issued
        } else {
            row.try_get("created_at")?
        };
        if presented == current {
            // Half the lifetime must have passed (the agent renews with a third left).
            let allowed_from = issued + (not_after - issued) / 2;
            if now < allowed_from {
                return Ok(Err(RenewalRefusal::TooEarly { allowed_from }));
            }
            Ok(Ok(()))
        } else if previous.as_deref() == Some(presented) {
            // The device never used the certificate issued last time (it was lost
            // before it was stored): it may have another, but not in a loop.
            if now < issued + REISSUE_AFTER_SECS {
                return Ok(Err(RenewalRefusal::TooOften));
            }
            Ok(Ok(()))
        } else {
            Ok(Err(RenewalRefusal::Superseded))
        }
    }

    /// Record a renewed certificate: it becomes the current one, and the one the
    /// device connected with (`presented`) stays accepted as the previous one. False
    /// (nothing changed) if the device is no longer active or `presented` is no longer
    /// one of its certificates.
    pub async fn record_renewed_certificate(
        &self,
        device: &DeviceId,
        presented: &str,
        new_sha256: &str,
        new_not_after: i64,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE devices SET previous_cert_sha256 = $1, cert_sha256 = $2, cert_not_after = $3, cert_issued_at = $4 \
             WHERE id = $5 AND status = 'active' AND (cert_sha256 = $1 OR previous_cert_sha256 = $1)",
        )
        .bind(presented)
        .bind(new_sha256)
        .bind(new_not_after)
        .bind(now)
        .bind(device.as_str())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The device connected with its current certificate: the previous one (if a
    /// renewal left one) is no longer accepted. True if one was retired.
    pub async fn retire_previous_certificate(
        &self,
        device: &DeviceId,
        current: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE devices SET previous_cert_sha256 = NULL \
             WHERE id = $1 AND cert_sha256 = $2 AND previous_cert_sha256 IS NOT NULL",
        )
        .bind(device.as_str())
        .bind(current)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
