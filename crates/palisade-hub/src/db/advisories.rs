//! Security advisories (VULN-6): `PAL-YYYY-NNNN` ids numbered per year, the affected
//! product models with their version ranges, drafts and publication, and the active
//! devices whose reported firmware an advisory's exposure is computed from.

use super::{Db, now, optional};
use crate::error::{Error, Result};
use crate::ids::{DeviceId, ProductId, UserId};
use crate::vuln::cvss::{Cvss, Severity};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Schema version 10: advisories, their affected ranges, the per-year number counter,
/// and the owners' notices.
/// `published_at` is 0 for a draft; `cve` and `report_id` are '' when absent (the Any
/// driver decodes concrete columns more reliably than NULLs). A notice's `ref_id`
/// names what it is about (an advisory id for security notices), so
/// `UNIQUE (user_id, kind, ref_id)` makes "one notice per owner and advisory" a
/// property of the database, not of the caller.
pub(super) const SCHEMA_V10: &str = r#"
CREATE TABLE advisories (
    id TEXT PRIMARY KEY,
    year BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    cve TEXT NOT NULL,
    summary TEXT NOT NULL,
    details TEXT NOT NULL,
    fixed_version TEXT NOT NULL,
    cvss_vector TEXT NOT NULL,
    cvss_score BIGINT NOT NULL,
    remediation TEXT NOT NULL,
    credit TEXT NOT NULL,
    report_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    published_at BIGINT NOT NULL,
    modified_at BIGINT NOT NULL,
    UNIQUE (year, seq)
);
CREATE INDEX advisories_published ON advisories (published_at);
CREATE TABLE advisory_numbers (
    year BIGINT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
CREATE TABLE advisory_affected (
    advisory_id TEXT NOT NULL REFERENCES advisories(id) ON DELETE CASCADE,
    product_id TEXT NOT NULL,
    introduced TEXT NOT NULL,
    fixed TEXT NOT NULL,
    PRIMARY KEY (advisory_id, product_id, introduced)
);
CREATE TABLE notices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    read_at BIGINT NOT NULL,
    UNIQUE (user_id, kind, ref_id)
);
CREATE INDEX notices_user ON notices (user_id, created_at);
"#;

/// An advisory id such as `PAL-2026-0001` (four or more digits of sequence).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AdvisoryId(String);

impl AdvisoryId {
    fn new(year: i64, seq: i64) -> Self {
        Self(format!("PAL-{year:04}-{seq:04}"))
    }
    /// Accept an id from a URL.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("PAL-")?;
        let (year, seq) = rest.split_once('-')?;
        (year.len() == 4
            && (4..=9).contains(&seq.len())
            && year.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit()))
        .then(|| Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AdvisoryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// One affected product model and version range: `introduced` inclusive, `fixed`
/// exclusive (`None`: no fixed version yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Affected {
    pub product: ProductId,
    pub introduced: String,
    pub fixed: Option<String>,
}

/// What staff write (already validated by `vuln::advisories`).
#[derive(Debug, Clone, Default)]
pub struct AdvisoryFields {
    pub cve: Option<String>,
    pub summary: String,
    pub details: String,
    pub fixed_version: String,
    pub cvss: Option<Cvss>,
    pub remediation: String,
    pub credit: String,
    pub report_id: Option<String>,
    pub affected: Vec<Affected>,
}

/// An advisory as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Advisory {
    pub id: AdvisoryId,
    pub cve: Option<String>,
    pub summary: String,
    /// Markdown (the safe subset of `privacy::markdown`).
    pub details: String,
    pub fixed_version: String,
    pub cvss: Option<Cvss>,
    pub severity: Option<Severity>,
    pub remediation: String,
    pub credit: String,
    /// The vulnerability report it was published from, if any (staff only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    pub affected: Vec<Affected>,
    pub created_at: i64,
    /// `None` while a draft.
    pub published_at: Option<i64>,
    pub modified_at: i64,
}

impl Advisory {
    pub fn is_published(&self) -> bool {
        self.published_at.is_some()
    }
}

const COLUMNS: &str = "id, cve, summary, details, fixed_version, cvss_vector, cvss_score, \
     remediation, credit, report_id, created_at, published_at, modified_at";

fn from_row(r: &AnyRow) -> Result<Advisory> {
    let id: String = r.try_get("id")?;
    let cve: String = r.try_get("cve")?;
    let vector: String = r.try_get("cvss_vector")?;
    let score: i64 = r.try_get("cvss_score")?;
    let report: String = r.try_get("report_id")?;
    let published: i64 = r.try_get("published_at")?;
    let cvss = (!vector.is_empty()).then(|| Cvss {
        vector,
        score_tenths: score,
        severity: Severity::from_tenths(score),
    });
    Ok(Advisory {
        id: AdvisoryId::parse(&id)
            .ok_or_else(|| Error::Conflict(format!("malformed advisory id {id:?}")))?,
        cve: (!cve.is_empty()).then_some(cve),
        summary: r.try_get("summary")?,
        details: r.try_get("details")?,
        fixed_version: r.try_get("fixed_version")?,
        severity: cvss.as_ref().map(|c| c.severity),
        cvss,
        remediation: r.try_get("remediation")?,
        credit: r.try_get("credit")?,
        report_id: (!report.is_empty()).then_some(report),
        affected: Vec::new(),
        created_at: r.try_get("created_at")?,
        published_at: (published > 0).then_some(published),
        modified_at: r.try_get("modified_at")?,
    })
}

/// An active device of an affected model, for exposure.
#[derive(Debug, Clone)]
pub struct FleetDevice {
    pub id: DeviceId,
    pub product: ProductId,
    pub firmware_version: String,
    pub owner: Option<UserId>,
}

impl Db {
    /// Store a new draft, numbered `PAL-{year}-{next}`. The number comes from a
    /// per-year counter row, taken by the transaction's first statement (an upsert):
    /// concurrent writers queue on that row (PostgreSQL) or on the write lock
    /// (SQLite), so numbers never repeat and no writer has to retry.
    pub async fn insert_advisory(&self, year: i64, f: &AdvisoryFields) -> Result<AdvisoryId> {
        let at = now();
        let mut tx = self.pool().begin().await?;
        let seq: i64 = sqlx::query(
            "INSERT INTO advisory_numbers (year, last_seq) VALUES ($1, 1) \
             ON CONFLICT (year) DO UPDATE SET last_seq = advisory_numbers.last_seq + 1 \
             RETURNING last_seq",
        )
        .bind(year)
        .fetch_one(&mut *tx)
        .await?
        .try_get("last_seq")?;
        let id = AdvisoryId::new(year, seq);
        sqlx::query(
            "INSERT INTO advisories (id, year, seq, cve, summary, details, fixed_version, cvss_vector, \
             cvss_score, remediation, credit, report_id, created_at, published_at, modified_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, $13)",
        )
        .bind(id.as_str())
        .bind(year)
        .bind(seq)
        .bind(f.cve.as_deref().unwrap_or(""))
        .bind(&f.summary)
        .bind(&f.details)
        .bind(&f.fixed_version)
        .bind(f.cvss.as_ref().map_or("", |c| c.vector.as_str()))
        .bind(f.cvss.as_ref().map_or(-1, |c| c.score_tenths))
        .bind(&f.remediation)
        .bind(&f.credit)
        .bind(f.report_id.as_deref().unwrap_or(""))
        .bind(at)
        .execute(&mut *tx)
        .await?;
        insert_affected(&mut tx, &id, &f.affected).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Replace an advisory's fields; its `modified` time becomes now. False if it
    /// does not exist.
    pub async fn update_advisory(&self, id: &AdvisoryId, f: &AdvisoryFields) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE advisories SET cve = $1, summary = $2, details = $3, fixed_version = $4, \
             cvss_vector = $5, cvss_score = $6, remediation = $7, credit = $8, report_id = $9, \
             modified_at = $10 WHERE id = $11",
        )
        .bind(f.cve.as_deref().unwrap_or(""))
        .bind(&f.summary)
        .bind(&f.details)
        .bind(&f.fixed_version)
        .bind(f.cvss.as_ref().map_or("", |c| c.vector.as_str()))
        .bind(f.cvss.as_ref().map_or(-1, |c| c.score_tenths))
        .bind(&f.remediation)
        .bind(&f.credit)
        .bind(f.report_id.as_deref().unwrap_or(""))
        .bind(now())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM advisory_affected WHERE advisory_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        insert_affected(&mut tx, id, &f.affected).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Publish a draft; false if it is not a draft (already published, or unknown).
    pub async fn publish_advisory(&self, id: &AdvisoryId) -> Result<bool> {
        let at = now();
        let done = sqlx::query(
            "UPDATE advisories SET published_at = $1, modified_at = $1 WHERE id = $2 AND published_at = 0",
        )
        .bind(at)
        .bind(id.as_str())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn advisory(&self, id: &AdvisoryId) -> Result<Option<Advisory>> {
        let q = format!("SELECT {COLUMNS} FROM advisories WHERE id = $1");
        let Some(row) = optional(
            sqlx::query(sqlx::AssertSqlSafe(q))
                .bind(id.as_str())
                .fetch_one(self.pool())
                .await,
        )?
        else {
            return Ok(None);
        };
        let mut a = from_row(&row)?;
        a.affected = self
            .affected_of(Some(id))
            .await?
            .into_iter()
            .map(|x| x.1)
            .collect();
        Ok(Some(a))
    }

    /// Advisories, newest first: only published ones unless `drafts`.
    pub async fn advisories(&self, drafts: bool) -> Result<Vec<Advisory>> {
        let q = format!(
            "SELECT {COLUMNS} FROM advisories WHERE published_at > 0 OR $1 = 1 \
             ORDER BY year DESC, seq DESC"
        );
        let mut list: Vec<Advisory> = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(i64::from(drafts))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(from_row)
            .collect::<Result<_>>()?;
        for (id, affected) in self.affected_of(None).await? {
            if let Some(a) = list.iter_mut().find(|a| a.id.as_str() == id) {
                a.affected.push(affected);
            }
        }
        Ok(list)
    }

    /// Affected ranges of one advisory, or of all (with their advisory ids).
    async fn affected_of(&self, id: Option<&AdvisoryId>) -> Result<Vec<(String, Affected)>> {
        let rows = sqlx::query(
            "SELECT advisory_id, product_id, introduced, fixed FROM advisory_affected \
             WHERE advisory_id = $1 OR $1 = '' ORDER BY advisory_id, product_id, introduced",
        )
        .bind(id.map_or("", |i| i.as_str()))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let product: String = r.try_get("product_id")?;
                let fixed: String = r.try_get("fixed")?;
                Ok((
                    r.try_get("advisory_id")?,
                    Affected {
                        product: ProductId::from_db(product),
                        introduced: r.try_get("introduced")?,
                        fixed: (!fixed.is_empty()).then_some(fixed),
                    },
                ))
            })
            .collect()
    }

    /// The active devices of a product model with their reported firmware and owner.
    pub async fn active_devices_of_product(&self, product: &ProductId) -> Result<Vec<FleetDevice>> {
        let rows = sqlx::query(
            "SELECT id, firmware_version, COALESCE(owner_id, '') AS owner FROM devices \
             WHERE product_id = $1 AND status = 'active' ORDER BY id",
        )
        .bind(product.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let owner: String = r.try_get("owner")?;
                Ok(FleetDevice {
                    id: DeviceId::parse(&id)
                        .ok_or_else(|| Error::Conflict(format!("malformed device id {id:?}")))?,
                    product: product.clone(),
                    firmware_version: r.try_get("firmware_version")?,
                    owner: UserId::parse(&owner),
                })
            })
            .collect()
    }
}

async fn insert_affected(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &AdvisoryId,
    affected: &[Affected],
) -> Result<()> {
    for a in affected {
        sqlx::query(
            "INSERT INTO advisory_affected (advisory_id, product_id, introduced, fixed) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.as_str())
        .bind(a.product.as_str())
        .bind(&a.introduced)
        .bind(a.fixed.as_deref().unwrap_or(""))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
