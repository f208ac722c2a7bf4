//! The offline vulnerability database (OSV records and their affected packages,
//! indexed by ecosystem and package name) and the SBOMs stored per (product model,
//! version), with their components indexed the same way: matching an SBOM is one
//! index lookup per distinct package, never a scan of the records.

use super::{Db, now, optional};
use crate::error::Result;
use crate::vuln::osv::Record;
use crate::vuln::sbom::Component;
use crate::vuln::versions::Affects;
use serde::Serialize;
use sqlx::Row;
use std::collections::HashMap;

/// Rows per multi-row INSERT (8 parameters each stays far below both engines' limits).
const ROWS_PER_INSERT: usize = 200;
/// Values per `IN (…)` list.
const KEYS_PER_QUERY: usize = 500;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportCounts {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
}

/// One stored affected-package entry.
#[derive(Debug, Clone)]
pub struct AffectedRow {
    pub record_id: String,
    pub ecosystem: String,
    pub key: String,
    pub affects: Affects,
}

/// A record's headline, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct RecordSummary {
    pub id: String,
    pub aliases: Vec<String>,
    pub summary: String,
    pub severity: String,
    pub modified: i64,
}

/// An SBOM's metadata.
#[derive(Debug, Clone, Serialize)]
pub struct SbomInfo {
    pub product: String,
    pub version: String,
    pub format: String,
    pub spec_version: String,
    pub sha256: String,
    pub components: i64,
    pub uploaded_by: String,
    pub uploaded_at: i64,
}

/// A component of an SBOM in the field (run by at least one active device).
#[derive(Debug, Clone)]
pub struct FieldComponent {
    pub product: String,
    pub version: String,
    pub key: String,
    pub ecosystem: String,
    pub name: String,
    pub component_version: String,
    pub devices: i64,
}

fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rows(n: usize, width: usize) -> String {
    (0..n)
        .map(|r| format!("({})", placeholders(r * width + 1, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Db {
    /// Insert or update records by id: a record whose stored `modified` is the same or
    /// newer is left alone, so importing the same export twice changes nothing. A
    /// withdrawn record keeps its row but no affected entries (it matches nothing).
    /// Returns the counts and the records that were added or updated.
    pub async fn upsert_vuln_records<'a>(
        &self,
        records: &'a [Record],
    ) -> Result<(ImportCounts, Vec<&'a Record>)> {
        let mut counts = ImportCounts::default();
        let mut changed = Vec::new();
        let mut tx = self.pool().begin().await?;
        // Within one batch the newest version of a duplicate id wins.
        let mut newest: HashMap<&str, &Record> = HashMap::new();
        for r in records {
            match newest.get(r.id.as_str()) {
                Some(seen) if seen.modified >= r.modified => counts.unchanged += 1,
                Some(_) => {
                    counts.unchanged += 1;
                    newest.insert(&r.id, r);
                }
                None => {
                    newest.insert(&r.id, r);
                }
            }
        }
        let batch: Vec<&Record> = records
            .iter()
            .filter(|r| {
                newest
                    .get(r.id.as_str())
                    .is_some_and(|n| std::ptr::eq(*n, *r))
            })
            .collect();
        for chunk in batch.chunks(KEYS_PER_QUERY) {
            let q = format!(
                "SELECT id, modified FROM vuln_records WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
            for r in chunk {
                query = query.bind(r.id.as_str());
            }
            let mut stored: HashMap<String, i64> = HashMap::new();
            for row in query.fetch_all(&mut *tx).await? {
                stored.insert(row.try_get("id")?, row.try_get("modified")?);
            }
            let mut fresh: Vec<&Record> = Vec::new();
            let mut replaced: Vec<&str> = Vec::new();
            for r in chunk {
                match stored.get(&r.id) {
                    Some(m) if *m >= r.modified => counts.unchanged += 1,
                    Some(_) => {
                        counts.updated += 1;
                        replaced.push(&r.id);
                        fresh.push(r);
                    }
                    None => {
                        counts.added += 1;
                        fresh.push(r);
                    }
                }
            }
            if !replaced.is_empty() {
                for table in ["vuln_affected", "vuln_records"] {
                    let column = if table == "vuln_affected" {
                        "record_id"
                    } else {
                        "id"
                    };
                    let q = format!(
                        "DELETE FROM {table} WHERE {column} IN ({})",
                        placeholders(1, replaced.len())
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
                    for id in &replaced {
                        query = query.bind(*id);
                    }
                    query.execute(&mut *tx).await?;
                }
            }
            let at = now();
            for part in fresh.chunks(ROWS_PER_INSERT) {
                let q = format!(
                    "INSERT INTO vuln_records (id, modified, published, withdrawn, aliases, summary, severity, imported_at) VALUES {}",
                    rows(part.len(), 8)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
                for r in part {
                    query = query
                        .bind(r.id.as_str())
                        .bind(r.modified)
                        .bind(r.published)
                        .bind(i64::from(r.withdrawn))
                        .bind(r.aliases.join(","))
                        .bind(r.summary.as_str())
                        .bind(r.severity.as_str())
                        .bind(at);
                }
                query.execute(&mut *tx).await?;
            }
            let affected: Vec<(&str, i64, &crate::vuln::osv::AffectedPackage)> = fresh
                .iter()
                .filter(|r| !r.withdrawn)
                .flat_map(|r| {
                    r.affected
                        .iter()
                        .enumerate()
                        .map(|(i, a)| (r.id.as_str(), i as i64, a))
                })
                .collect();
            for part in affected.chunks(ROWS_PER_INSERT) {
                let q = format!(
                    "INSERT INTO vuln_affected (record_id, seq, ecosystem, name, pkg_key, affects) VALUES {}",
                    rows(part.len(), 6)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
                for (id, seq, a) in part {
                    let json = serde_json::to_string(&a.affects)
                        .map_err(|e| crate::error::Error::Conflict(e.to_string()))?;
                    query = query
                        .bind(*id)
                        .bind(*seq)
                        .bind(a.ecosystem.as_str())
                        .bind(a.name.as_str())
                        .bind(a.key.as_str())
                        .bind(json);
                }
                query.execute(&mut *tx).await?;
            }
            changed.extend(fresh);
        }
        tx.commit().await?;
        Ok((counts, changed))
    }

    /// How many records the database holds.
    pub async fn vuln_record_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM vuln_records")
            .fetch_one(self.pool())
            .await?
            .try_get("n")?)
    }

    /// Every affected entry for these package keys (index lookups, in chunks).
    pub async fn vuln_affected_for(&self, keys: &[&str]) -> Result<Vec<AffectedRow>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let q = format!(
                "SELECT record_id, ecosystem, pkg_key, affects FROM vuln_affected WHERE pkg_key IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
            for k in chunk {
                query = query.bind(*k);
            }
            for row in query.fetch_all(self.pool()).await? {
                let json: String = row.try_get("affects")?;
                let affects = serde_json::from_str(&json)
                    .map_err(|e| crate::error::Error::Conflict(format!("stored range: {e}")))?;
                out.push(AffectedRow {
                    record_id: row.try_get("record_id")?,
                    ecosystem: row.try_get("ecosystem")?,
                    key: row.try_get("pkg_key")?,
                    affects,
                });
            }
        }
        Ok(out)
    }

    /// The headlines of these records.
    pub async fn vuln_record_summaries(&self, ids: &[&str]) -> Result<Vec<RecordSummary>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(KEYS_PER_QUERY) {
            let q = format!(
                "SELECT id, aliases, summary, severity, modified FROM vuln_records WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
            for k in chunk {
                query = query.bind(*k);
            }
            for row in query.fetch_all(self.pool()).await? {
                let aliases: String = row.try_get("aliases")?;
                out.push(RecordSummary {
                    id: row.try_get("id")?,
                    aliases: aliases
                        .split(',')
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    summary: row.try_get("summary")?,
                    severity: row.try_get("severity")?,
                    modified: row.try_get("modified")?,
                });
            }
        }
        Ok(out)
    }

    /// Store (or replace) the SBOM of a product model's version.
    pub async fn store_sbom(&self, info: &SbomInfo, components: &[Component]) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM sbom_components WHERE product_id = $1 AND version = $2")
            .bind(&info.product)
            .bind(&info.version)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sboms WHERE product_id = $1 AND version = $2")
            .bind(&info.product)
            .bind(&info.version)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sboms (product_id, version, format, spec_version, sha256, components, uploaded_by, uploaded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&info.product)
        .bind(&info.version)
        .bind(&info.format)
        .bind(&info.spec_version)
        .bind(&info.sha256)
        .bind(components.len() as i64)
        .bind(&info.uploaded_by)
        .bind(info.uploaded_at)
        .execute(&mut *tx)
        .await?;
        let indexed: Vec<(usize, &Component)> = components.iter().enumerate().collect();
        for part in indexed.chunks(ROWS_PER_INSERT) {
            let q = format!(
                "INSERT INTO sbom_components (product_id, version, seq, name, component_version, purl, ecosystem, pkg_key) VALUES {}",
                rows(part.len(), 8)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
            for (seq, c) in part {
                query = query
                    .bind(info.product.as_str())
                    .bind(info.version.as_str())
                    .bind(*seq as i64)
                    .bind(c.name.as_str())
                    .bind(c.version.as_str())
                    .bind(c.purl.as_str())
                    .bind(c.ecosystem.as_str())
                    .bind(component_key(c));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The SBOM of a product model's version and its components, if stored.
    pub async fn sbom(
        &self,
        product: &str,
        version: &str,
    ) -> Result<Option<(SbomInfo, Vec<Component>)>> {
        let Some(row) = optional(
            sqlx::query(
                "SELECT format, spec_version, sha256, components, uploaded_by, uploaded_at \
                 FROM sboms WHERE product_id = $1 AND version = $2",
            )
            .bind(product)
            .bind(version)
            .fetch_one(self.pool())
            .await,
        )?
        else {
            return Ok(None);
        };
        let info = SbomInfo {
            product: product.to_owned(),
            version: version.to_owned(),
            format: row.try_get("format")?,
            spec_version: row.try_get("spec_version")?,
            sha256: row.try_get("sha256")?,
            components: row.try_get("components")?,
            uploaded_by: row.try_get("uploaded_by")?,
            uploaded_at: row.try_get("uploaded_at")?,
        };
        let rows = sqlx::query(
            "SELECT name, component_version, purl, ecosystem, pkg_key FROM sbom_components \
             WHERE product_id = $1 AND version = $2 ORDER BY seq",
        )
        .bind(product)
        .bind(version)
        .fetch_all(self.pool())
        .await?;
        let components = rows
            .iter()
            .map(|r| {
                let key: String = r.try_get("pkg_key")?;
                Ok(Component {
                    name: r.try_get("name")?,
                    version: r.try_get("component_version")?,
                    purl: r.try_get("purl")?,
                    ecosystem: r.try_get("ecosystem")?,
                    package: key
                        .split_once('|')
                        .map(|(_, n)| n.to_owned())
                        .unwrap_or(key),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((info, components)))
    }

    /// The stored SBOMs (metadata only), newest first.
    pub async fn sboms(&self, limit: i64) -> Result<Vec<SbomInfo>> {
        let rows = sqlx::query(
            "SELECT product_id, version, format, spec_version, sha256, components, uploaded_by, uploaded_at \
             FROM sboms ORDER BY uploaded_at DESC, product_id, version LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SbomInfo {
                    product: row.try_get("product_id")?,
                    version: row.try_get("version")?,
                    format: row.try_get("format")?,
                    spec_version: row.try_get("spec_version")?,
                    sha256: row.try_get("sha256")?,
                    components: row.try_get("components")?,
                    uploaded_by: row.try_get("uploaded_by")?,
                    uploaded_at: row.try_get("uploaded_at")?,
                })
            })
            .collect()
    }

    /// Components with these package keys in SBOMs that active devices run (the
    /// device's product model and reported firmware version), with how many devices.
    pub async fn field_components(&self, keys: &[&str]) -> Result<Vec<FieldComponent>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let q = format!(
                "SELECT c.product_id, c.version, c.pkg_key, c.ecosystem, c.name, c.component_version, \
                 (SELECT COUNT(*) FROM devices d WHERE d.product_id = c.product_id \
                  AND d.firmware_version = c.version AND d.status = 'active') AS devices \
                 FROM sbom_components c WHERE c.pkg_key IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
            for k in chunk {
                query = query.bind(*k);
            }
            for row in query.fetch_all(self.pool()).await? {
                let devices: i64 = row.try_get("devices")?;
                if devices == 0 {
                    continue;
                }
                out.push(FieldComponent {
                    product: row.try_get("product_id")?,
                    version: row.try_get("version")?,
                    key: row.try_get("pkg_key")?,
                    ecosystem: row.try_get("ecosystem")?,
                    name: row.try_get("name")?,
                    component_version: row.try_get("component_version")?,
                    devices,
                });
            }
        }
        Ok(out)
    }

    /// Active staff accounts' addresses (administrators and operators).
    pub async fn staff_emails(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT email FROM users WHERE role IN ('admin', 'operator') AND status = 'active' ORDER BY email",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("email")?))
            .collect()
    }
}

/// The lookup key of a component ("" when it has no package URL: never matched).
pub fn component_key(c: &Component) -> String {
    if c.ecosystem.is_empty() {
        String::new()
    } else {
        crate::vuln::purl::key(&c.ecosystem, &c.package)
    }
}
