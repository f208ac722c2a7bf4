//! Releases (issue 4, UPD-1, UPD-6), the install steps devices report for them, and
//! each product model's published security-support end date (SUP-1, SUP-2).

use super::{Db, now, optional};
use crate::error::{Error, Result};
use crate::ids::{DeviceId, ProductId};
use serde::Serialize;
use sqlx::Row;

/// Reports kept per device; older ones are dropped as new ones arrive.
pub const MAX_REPORTS_PER_DEVICE: i64 = 100;

/// A published release.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub id: String,
    pub product: String,
    pub version: String,
    pub target: String,
    pub length: i64,
    pub sha256: String,
    pub security: bool,
    pub notes: String,
    pub created_at: i64,
    pub created_by: String,
}

/// What to store for a new release.
pub struct NewRelease<'a> {
    pub product: &'a ProductId,
    pub version: (u64, u64, u64),
    pub target: &'a str,
    pub length: i64,
    pub sha256: &'a str,
    pub security: bool,
    pub notes: &'a str,
    pub created_by: &'a str,
}

/// One install step a device reported.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateReport {
    pub release: String,
    pub version: String,
    pub step: String,
    pub reason: String,
    pub downtime_ms: Option<i64>,
    pub at_ms: i64,
}

/// A product model's published end of security updates.
#[derive(Debug, Clone, Serialize)]
pub struct SupportPeriod {
    pub product: String,
    /// ISO 8601 date (`YYYY-MM-DD`).
    pub security_updates_until: String,
    pub published_at: i64,
}

const RELEASE_COLUMNS: &str =
    "id, product_id, version, target_name, length, sha256, security, notes, created_at, created_by";

fn release_from_row(row: &sqlx::any::AnyRow) -> Result<Release> {
    Ok(Release {
        id: row.try_get("id")?,
        product: row.try_get("product_id")?,
        version: row.try_get("version")?,
        target: row.try_get("target_name")?,
        length: row.try_get("length")?,
        sha256: row.try_get("sha256")?,
        security: row.try_get::<i64, _>("security")? != 0,
        notes: row.try_get("notes")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

fn i64_of(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Conflict("version number too large".into()))
}

impl Db {
    /// The newest release of a model (by version), if any.
    pub async fn newest_release(&self, product: &ProductId) -> Result<Option<Release>> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE product_id = $1 ORDER BY major DESC, minor DESC, patch DESC LIMIT 1"
        );
        optional(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(product.as_str())
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| release_from_row(&r))
        .transpose()
    }

    pub async fn release(&self, id: &str) -> Result<Option<Release>> {
        let sql = format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1");
        optional(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| release_from_row(&r))
        .transpose()
    }

    /// The release of a model with exactly this version text (`1.3.0`), if published.
    pub async fn release_of_version(
        &self,
        product: &ProductId,
        version: &str,
    ) -> Result<Option<Release>> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE product_id = $1 AND version = $2"
        );
        optional(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(product.as_str())
                .bind(version)
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| release_from_row(&r))
        .transpose()
    }

    /// All releases, newest first.
    pub async fn releases(&self) -> Result<Vec<Release>> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases ORDER BY created_at DESC, product_id, major DESC, minor DESC, patch DESC"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(release_from_row)
            .collect()
    }

    /// Store a release. The caller checked that it is newer than every stored one; the
    /// unique (product, version) constraint refuses a duplicate that raced it.
    pub async fn insert_release(&self, new: &NewRelease<'_>) -> Result<Release> {
        let id = data_encoding::HEXLOWER.encode(&palisade_crypto::token::random_bytes::<16>());
        let (major, minor, patch) = new.version;
        let version = format!("{major}.{minor}.{patch}");
        let at = now();
        let done = sqlx::query(
            "INSERT INTO releases (id, product_id, version, major, minor, patch, target_name, length, sha256, security, notes, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&id)
        .bind(new.product.as_str())
        .bind(&version)
        .bind(i64_of(major)?)
        .bind(i64_of(minor)?)
        .bind(i64_of(patch)?)
        .bind(new.target)
        .bind(new.length)
        .bind(new.sha256)
        .bind(i64::from(new.security))
        .bind(new.notes)
        .bind(at)
        .bind(new.created_by)
        .execute(self.pool())
        .await;
        match done {
            Ok(_) => {}
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                return Err(Error::Conflict(format!(
                    "release {version} of {} exists already",
                    new.product
                )));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Release {
            id,
            product: new.product.as_str().to_owned(),
            version,
            target: new.target.to_owned(),
            length: new.length,
            sha256: new.sha256.to_owned(),
            security: new.security,
            notes: new.notes.to_owned(),
            created_at: at,
            created_by: new.created_by.to_owned(),
        })
    }

    /// Record an install step a device reported, keeping the newest
    /// [`MAX_REPORTS_PER_DEVICE`].
    pub async fn insert_update_report(&self, device: &DeviceId, r: &UpdateReport) -> Result<()> {
        let id = data_encoding::HEXLOWER.encode(&palisade_crypto::token::random_bytes::<12>());
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO update_reports (id, device_id, release_id, version, step, reason, downtime_ms, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(device.as_str())
        .bind(&r.release)
        .bind(&r.version)
        .bind(&r.step)
        .bind(&r.reason)
        .bind(r.downtime_ms.unwrap_or(-1))
        .bind(r.at_ms)
        .execute(&mut *tx)
        .await?;
        let count: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM update_reports WHERE device_id = $1")
                .bind(device.as_str())
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        if count > MAX_REPORTS_PER_DEVICE {
            let oldest: i64 =
                sqlx::query("SELECT MIN(at_ms) AS oldest FROM update_reports WHERE device_id = $1")
                    .bind(device.as_str())
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("oldest")?;
            sqlx::query("DELETE FROM update_reports WHERE device_id = $1 AND at_ms = $2")
                .bind(device.as_str())
                .bind(oldest)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        // The rollout that admitted the device counts the step (halting, advancing).
        self.record_rollout_step(device, &r.release, &r.step, &r.reason)
            .await
    }

    /// A device's reported install steps, newest first.
    pub async fn update_reports(&self, device: &DeviceId, limit: i64) -> Result<Vec<UpdateReport>> {
        sqlx::query(
            "SELECT release_id, version, step, reason, downtime_ms, at_ms FROM update_reports WHERE device_id = $1 ORDER BY at_ms DESC, id LIMIT $2",
        )
        .bind(device.as_str())
        .bind(limit)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| {
            let downtime: i64 = row.try_get("downtime_ms")?;
            Ok(UpdateReport {
                release: row.try_get("release_id")?,
                version: row.try_get("version")?,
                step: row.try_get("step")?,
                reason: row.try_get("reason")?,
                downtime_ms: (downtime >= 0).then_some(downtime),
                at_ms: row.try_get("at_ms")?,
            })
        })
        .collect()
    }

    /// Publish or extend a model's security-support end date (`YYYY-MM-DD`). Once
    /// published it may be extended but never shortened (SUP-1): a shorter date is
    /// refused with `Error::Conflict` naming the published one.
    pub async fn set_support_end(&self, product: &ProductId, until: &str) -> Result<()> {
        if !valid_date(until) {
            return Err(Error::Conflict(format!(
                "{until:?} is not a date (YYYY-MM-DD)"
            )));
        }
        let mut tx = self.pool().begin().await?;
        let current: Option<String> = optional(
            sqlx::query("SELECT until_date FROM support_periods WHERE product_id = $1")
                .bind(product.as_str())
                .fetch_one(&mut *tx)
                .await,
        )?
        .map(|r| r.try_get("until_date"))
        .transpose()?;
        match current {
            // ISO dates compare as text.
            Some(published) if until < published.as_str() => {
                return Err(Error::Conflict(format!(
                    "the security-support end date of {product} was published as {published}; it may be extended but never shortened (refused: {until})"
                )));
            }
            Some(published) if until == published.as_str() => return Ok(()),
            Some(_) => {
                sqlx::query(
                    "UPDATE support_periods SET until_date = $1, published_at = $2, notice_sent_at = 0 WHERE product_id = $3",
                )
                .bind(until)
                .bind(now())
                .bind(product.as_str())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO support_periods (product_id, until_date, published_at, notice_sent_at) VALUES ($1, $2, $3, 0)",
                )
                .bind(product.as_str())
                .bind(until)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every published support period, by product.
    pub async fn support_periods(&self) -> Result<Vec<SupportPeriod>> {
        sqlx::query(
            "SELECT product_id, until_date, published_at FROM support_periods ORDER BY product_id",
        )
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(support_period)
        .collect()
    }

    /// Products whose end-of-support notice is due (end date on or before `by`, an ISO
    /// date) and not yet sent.
    pub async fn support_notices_due(&self, by: &str) -> Result<Vec<SupportPeriod>> {
        sqlx::query(
            "SELECT product_id, until_date, published_at FROM support_periods WHERE notice_sent_at = 0 AND until_date <= $1",
        )
        .bind(by)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(support_period)
        .collect()
    }

    /// Products whose end date is on or before `by`, notice sent or not (the console
    /// banner shows them until the date is extended).
    pub async fn support_notices_due_any(&self, by: &str) -> Result<Vec<SupportPeriod>> {
        sqlx::query(
            "SELECT product_id, until_date, published_at FROM support_periods WHERE until_date <= $1 ORDER BY product_id",
        )
        .bind(by)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(support_period)
        .collect()
    }

    /// Mark a product's end-of-support notice as sent (once per published date).
    pub async fn mark_support_notice_sent(&self, product: &str) -> Result<()> {
        sqlx::query("UPDATE support_periods SET notice_sent_at = $1 WHERE product_id = $2")
            .bind(now())
            .bind(product)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

/// `YYYY-MM-DD`, a real calendar date.
pub fn valid_date(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (
        text[0..4].parse::<i32>(),
        text[5..7].parse::<u8>(),
        text[8..10].parse::<u8>(),
    ) else {
        return false;
    };
    time::Month::try_from(m)
        .ok()
        .and_then(|m| time::Date::from_calendar_date(y, m, d).ok())
        .is_some()
}

/// A `support_periods` row (`product_id, until_date, published_at`).
fn support_period(row: &sqlx::any::AnyRow) -> Result<SupportPeriod> {
    Ok(SupportPeriod {
        product: row.try_get("product_id")?,
        security_updates_until: row.try_get("until_date")?,
        published_at: row.try_get("published_at")?,
    })
}
