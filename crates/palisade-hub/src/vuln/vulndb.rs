//! `palisade vulndb import` and the admin import route (VULN-4): OSV records from one
//! JSON file (a record or an array of them), a directory of them, or the per-ecosystem
//! zip export the OSV project publishes. Everything is read and validated first, with
//! bounded sizes, and an error names the bad file; only then is anything stored, so a
//! broken export changes nothing. Re-importing updates records by id and `modified`.
//! When a new or updated record affects a (product model, version) that active devices
//! run, staff get one alert per import (audit entry and e-mail), not one per record.

use super::osv::{self, AffectedPackage, MAX_RECORD_BYTES, Record};
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::config::Config;
use crate::db::Db;
use crate::db::vulndb::ImportCounts;
use crate::mail::Category;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

/// Most files in a directory or entries in a zip.
pub const MAX_FILES: usize = 1_000_000;
/// Most bytes read from a zip in total (decompressed).
pub const MAX_TOTAL_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Deepest directory walked.
const MAX_DIR_DEPTH: usize = 8;
/// Records stored per transaction.
const RECORDS_PER_BATCH: usize = 1000;
/// Lines of detail in one alert e-mail.
const ALERT_LINES: usize = 200;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is wrong; the message names the file.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Hub(#[from] crate::error::Error),
}

/// One (product model, version) in the field affected by an imported record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FieldHit {
    pub product: String,
    pub version: String,
    pub record: String,
    pub component: String,
    pub component_version: String,
    pub devices: i64,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub files: usize,
    #[serde(flatten)]
    pub counts: ImportCounts,
    /// New or updated records that affect versions devices run (the alert's content).
    pub field_hits: Vec<FieldHit>,
}

fn invalid(name: &str, why: impl std::fmt::Display) -> ImportError {
    ImportError::Invalid(format!("{name}: {why}"))
}

/// Read and validate every record under `path` (file, directory or zip).
pub fn read_path(path: &Path) -> Result<(usize, Vec<Record>), ImportError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| invalid(&shown, e))?;
    if meta.is_dir() {
        let mut files = Vec::new();
        walk(path, 0, &mut files)?;
        files.sort();
        let mut records = Vec::new();
        for f in &files {
            records.extend(read_json_file(f)?);
        }
        return Ok((files.len(), records));
    }
    let mut file = std::fs::File::open(path).map_err(|e| invalid(&shown, e))?;
    let mut magic = [0u8; 4];
    let is_zip = file.read_exact(&mut magic).is_ok() && &magic == b"PK\x03\x04";
    if is_zip {
        read_zip(path)
    } else {
        Ok((1, read_json_file(path)?))
    }
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<std::path::PathBuf>) -> Result<(), ImportError> {
    let shown = dir.display().to_string();
    if depth > MAX_DIR_DEPTH {
        return Err(invalid(&shown, "directories nest too deep"));
    }
    for entry in std::fs::read_dir(dir).map_err(|e| invalid(&shown, e))? {
        let entry = entry.map_err(|e| invalid(&shown, e))?;
        let kind = entry.file_type().map_err(|e| invalid(&shown, e))?;
        let p = entry.path();
        if kind.is_dir() {
            walk(&p, depth + 1, out)?;
        } else if kind.is_file() && p.extension().is_some_and(|e| e == "json") {
            if out.len() >= MAX_FILES {
                return Err(invalid(&shown, format!("more than {MAX_FILES} files")));
            }
            out.push(p);
        }
    }
    Ok(())
}

fn read_json_file(path: &Path) -> Result<Vec<Record>, ImportError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| invalid(&shown, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(&shown, e))?;
    osv::parse_document(&bytes).map_err(|e| invalid(&shown, e))
}

fn read_zip(path: &Path) -> Result<(usize, Vec<Record>), ImportError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| invalid(&shown, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| invalid(&shown, e))?;
    if archive.len() > MAX_FILES {
        return Err(invalid(&shown, format!("more than {MAX_FILES} entries")));
    }
    let mut total = 0u64;
    let mut files = 0;
    let mut records = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| invalid(&format!("{shown} entry {i}"), e))?;
        let entry_name = entry
            .name()
            .map_err(|e| invalid(&format!("{shown} entry {i}"), e))?
            .into_owned();
        let name = format!("{shown}!{entry_name}");
        if !entry.is_file() || !entry_name.ends_with(".json") {
            continue;
        }
        if entry.size() > MAX_RECORD_BYTES as u64 {
            return Err(invalid(
                &name,
                format!("larger than {MAX_RECORD_BYTES} bytes"),
            ));
        }
        // The header's size may lie: read at most one byte past the bound.
        let mut bytes = Vec::new();
        (&mut entry)
            .take(MAX_RECORD_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| invalid(&name, e))?;
        total += bytes.len() as u64;
        if total > MAX_TOTAL_BYTES {
            return Err(invalid(
                &shown,
                format!("more than {MAX_TOTAL_BYTES} bytes unpacked"),
            ));
        }
        records.extend(osv::parse_document(&bytes).map_err(|e| invalid(&name, e))?);
        files += 1;
    }
    Ok((files, records))
}

/// Import `path`: read and validate all of it, then store, audit and alert.
pub async fn import_path(
    db: &Db,
    config: &Config,
    actor: &Actor,
    path: &Path,
) -> Result<ImportReport, ImportError> {
    let owned = path.to_owned();
    let (files, records) = tokio::task::spawn_blocking(move || read_path(&owned))
        .await
        .map_err(|e| crate::error::Error::Task(e.to_string()))??;
    let mut report =
        import_records(db, config, actor, &records, &path.display().to_string()).await?;
    report.files = files;
    Ok(report)
}

/// Store validated records (batched), audit the import, and raise the field alert.
pub async fn import_records(
    db: &Db,
    config: &Config,
    actor: &Actor,
    records: &[Record],
    source: &str,
) -> Result<ImportReport, ImportError> {
    let mut counts = ImportCounts::default();
    // The affected entries of new or updated records, by package key.
    let mut changed: HashMap<String, Vec<(String, AffectedPackage)>> = HashMap::new();
    for batch in records.chunks(RECORDS_PER_BATCH) {
        let (c, fresh) = db.upsert_vuln_records(batch).await?;
        counts.added += c.added;
        counts.updated += c.updated;
        counts.unchanged += c.unchanged;
        for r in fresh.into_iter().filter(|r| !r.withdrawn) {
            for a in &r.affected {
                changed
                    .entry(a.key.clone())
                    .or_default()
                    .push((r.id.clone(), a.clone()));
            }
        }
    }
    accounts::audit(
        db,
        actor,
        "vulndb.import",
        source,
        Outcome::Success,
        &format!(
            "{} records: {} added, {} updated, {} unchanged",
            records.len(),
            counts.added,
            counts.updated,
            counts.unchanged
        ),
    )
    .await?;
    let field_hits = field_hits(db, &changed).await?;
    if !field_hits.is_empty() {
        alert(db, config, actor, &field_hits).await?;
    }
    Ok(ImportReport {
        files: 1,
        counts,
        field_hits,
    })
}

async fn field_hits(
    db: &Db,
    changed: &HashMap<String, Vec<(String, AffectedPackage)>>,
) -> Result<Vec<FieldHit>, ImportError> {
    let keys: Vec<&str> = changed.keys().map(String::as_str).collect();
    let mut hits = BTreeSet::new();
    for c in db.field_components(&keys).await? {
        for (record, a) in changed.get(&c.key).map(Vec::as_slice).unwrap_or(&[]) {
            let scheme = super::versions::Scheme::for_ecosystem(&a.ecosystem);
            if super::purl::release_matches(&a.ecosystem, &c.ecosystem)
                && a.affects.contains(scheme, &c.component_version)
            {
                hits.insert(FieldHit {
                    product: c.product.clone(),
                    version: c.version.clone(),
                    record: record.clone(),
                    component: c.name.clone(),
                    component_version: c.component_version.clone(),
                    devices: c.devices,
                });
            }
        }
    }
    Ok(hits.into_iter().collect())
}

/// One audit entry and one e-mail per staff account for the whole import.
async fn alert(
    db: &Db,
    config: &Config,
    actor: &Actor,
    hits: &[FieldHit],
) -> Result<(), ImportError> {
    let mut per_version: BTreeMap<(&str, &str), (i64, BTreeSet<&str>)> = BTreeMap::new();
    for h in hits {
        let e = per_version
            .entry((h.product.as_str(), h.version.as_str()))
            .or_default();
        e.0 = h.devices;
        e.1.insert(h.record.as_str());
    }
    let records: BTreeSet<&str> = hits.iter().map(|h| h.record.as_str()).collect();
    let summary = per_version
        .iter()
        .map(|((p, v), (n, ids))| format!("{p} {v} ({n} devices): {}", ids.len()))
        .collect::<Vec<_>>()
        .join("; ");
    accounts::audit(
        db,
        actor,
        "vulndb.alert",
        "field",
        Outcome::Success,
        &format!(
            "{} new or updated records affect {} product versions in the field: {summary}",
            records.len(),
            per_version.len()
        ),
    )
    .await?;
    let mut body = format!(
        "A vulnerability database import found {} new or updated records that affect software running on devices in the field.\n\n",
        records.len()
    );
    for ((p, v), (n, ids)) in &per_version {
        body.push_str(&format!(
            "{p} version {v}: {n} active devices, {} records\n  {}/products/{p}/versions/{v}/vulnerabilities\n",
            ids.len(),
            config.public_url
        ));
    }
    body.push_str("\nDetails:\n");
    for h in hits.iter().take(ALERT_LINES) {
        body.push_str(&format!(
            "- {} affects {} {} in {} {}\n",
            h.record, h.component, h.component_version, h.product, h.version
        ));
    }
    if hits.len() > ALERT_LINES {
        body.push_str(&format!("… and {} more.\n", hits.len() - ALERT_LINES));
    }
    for email in db.staff_emails().await? {
        db.enqueue_mail(
            &email,
            "New vulnerabilities affect devices in the field",
            &body,
            Category::Security,
        )
        .await?;
    }
    Ok(())
}
