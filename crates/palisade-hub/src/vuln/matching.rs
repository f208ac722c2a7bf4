//! Matching SBOM components against the offline database (VULN-4): one index lookup
//! per distinct package, then each ecosystem's version ranges evaluated in memory, so
//! the work grows with the number of components, not with the size of the database.
//! Also a device's known vulnerabilities (VULN-5), one query for the API and the
//! console device page: the OSV records matching the SBOM of the firmware it runs, and
//! the hub's own published advisories whose ranges include that firmware.

use super::advisories;
use super::purl;
use super::sbom::Component;
use super::versions::Scheme;
use crate::db::Db;
use crate::db::devices::Device;
use crate::db::vulndb::{RecordSummary, component_key};
use crate::error::Result;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

/// A component affected by a record.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub component: String,
    pub version: String,
    pub purl: String,
    pub vulnerability: RecordSummary,
    /// The lowest fixed version of the component above the one in use, if any.
    pub fixed: Option<String>,
}

/// The known vulnerabilities of these components, ordered by component then id.
pub async fn match_components(db: &Db, components: &[Component]) -> Result<Vec<Finding>> {
    let keyed: Vec<(String, &Component)> = components
        .iter()
        .filter(|c| !c.version.is_empty())
        .map(|c| (component_key(c), c))
        .filter(|(k, _)| !k.is_empty())
        .collect();
    let keys: BTreeSet<&str> = keyed.iter().map(|(k, _)| k.as_str()).collect();
    let keys: Vec<&str> = keys.into_iter().collect();
    let rows = db.vuln_affected_for(&keys).await?;
    let mut by_key: HashMap<&str, Vec<&crate::db::vulndb::AffectedRow>> = HashMap::new();
    for r in &rows {
        by_key.entry(r.key.as_str()).or_default().push(r);
    }
    let mut hits: BTreeSet<(usize, &str)> = BTreeSet::new();
    let mut fixes: HashMap<(usize, &str), String> = HashMap::new();
    for (i, (key, c)) in keyed.iter().enumerate() {
        for row in by_key.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
            let scheme = Scheme::for_ecosystem(&row.ecosystem);
            if purl::release_matches(&row.ecosystem, &c.ecosystem)
                && row.affects.contains(scheme, &c.version)
            {
                hits.insert((i, row.record_id.as_str()));
                if let Some(f) = row.affects.fixed_for(scheme, &c.version) {
                    fixes.insert((i, row.record_id.as_str()), f);
                }
            }
        }
    }
    let ids: BTreeSet<&str> = hits.iter().map(|(_, id)| *id).collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let summaries: HashMap<String, RecordSummary> = db
        .vuln_record_summaries(&ids)
        .await?
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let mut out: Vec<Finding> = hits
        .into_iter()
        .filter_map(|(i, id)| {
            let c = keyed[i].1;
            summaries.get(id).map(|s| Finding {
                component: c.name.clone(),
                version: c.version.clone(),
                purl: c.purl.clone(),
                vulnerability: s.clone(),
                fixed: fixes.get(&(i, id)).cloned(),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (
            a.component.as_str(),
            a.version.as_str(),
            a.vulnerability.id.as_str(),
        )
            .cmp(&(
                b.component.as_str(),
                b.version.as_str(),
                b.vulnerability.id.as_str(),
            ))
    });
    Ok(out)
}

/// Match components against OSV records held in memory, with the same keys, release
/// rule and range evaluation as [`match_components`] (no database needed): what
/// `palisade vulndb check-self` runs on Palisade's own SBOM. Withdrawn records are
/// skipped. Ordered by component, version, then record id.
pub fn match_records(records: &[super::osv::Record], components: &[Component]) -> Vec<Finding> {
    let mut by_key: HashMap<&str, Vec<(&super::osv::Record, &super::osv::AffectedPackage)>> =
        HashMap::new();
    for r in records.iter().filter(|r| !r.withdrawn) {
        for a in &r.affected {
            by_key.entry(a.key.as_str()).or_default().push((r, a));
        }
    }
    let mut out = Vec::new();
    for c in components.iter().filter(|c| !c.version.is_empty()) {
        let key = component_key(c);
        let mut seen = BTreeSet::new();
        for (r, a) in by_key.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
            let scheme = Scheme::for_ecosystem(&a.ecosystem);
            if purl::release_matches(&a.ecosystem, &c.ecosystem)
                && a.affects.contains(scheme, &c.version)
                && seen.insert(r.id.as_str())
            {
                out.push(Finding {
                    component: c.name.clone(),
                    version: c.version.clone(),
                    purl: c.purl.clone(),
                    vulnerability: RecordSummary {
                        id: r.id.clone(),
                        aliases: r.aliases.clone(),
                        summary: r.summary.clone(),
                        severity: r.severity.clone(),
                        modified: r.modified,
                    },
                    fixed: a.affects.fixed_for(scheme, &c.version),
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.component, &a.version, &a.vulnerability.id).cmp(&(
            &b.component,
            &b.version,
            &b.vulnerability.id,
        ))
    });
    out
}

/// One of the hub's own published advisories that names a device's firmware.
#[derive(Debug, Clone, Serialize)]
pub struct AdvisoryFinding {
    pub id: String,
    pub cve: Option<String>,
    pub summary: String,
    /// `critical`, `high`, … or empty when not scored.
    pub severity: String,
    pub score_tenths: Option<i64>,
    /// The fixed version of the device's model, if the advisory names one.
    pub fixed: Option<String>,
}

/// What is known about the vulnerabilities of the firmware a device runs.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceVulnerabilities {
    pub product: String,
    pub firmware_version: String,
    /// Whether an SBOM is stored for that (model, version); without one no component
    /// can be matched.
    pub sbom: bool,
    /// OSV records matching the components of that SBOM.
    pub vulnerabilities: Vec<Finding>,
    /// Published advisories whose ranges include that firmware version.
    pub advisories: Vec<AdvisoryFinding>,
}

/// The known vulnerabilities of a device's firmware (the caller has checked that the
/// principal may see the device).
pub async fn for_device(db: &Db, device: &Device) -> Result<DeviceVulnerabilities> {
    let stored = if device.firmware_version.is_empty() {
        None
    } else {
        db.sbom(device.product_id.as_str(), &device.firmware_version)
            .await?
    };
    let vulnerabilities = match &stored {
        Some((_, components)) => match_components(db, components).await?,
        None => Vec::new(),
    };
    let mut found = Vec::new();
    for a in db.advisories(false).await? {
        if advisories::affects(&a.affected, &device.product_id, &device.firmware_version)
            != Some(true)
        {
            continue;
        }
        let fixed = advisories::fixed_releases(db, &a)
            .await?
            .into_iter()
            .find(|f| f.product == device.product_id)
            .map(|f| f.version);
        found.push(AdvisoryFinding {
            id: a.id.to_string(),
            cve: a.cve.clone(),
            summary: a.summary.clone(),
            severity: a
                .severity
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            score_tenths: a.cvss.as_ref().map(|c| c.score_tenths),
            fixed,
        });
    }
    Ok(DeviceVulnerabilities {
        product: device.product_id.to_string(),
        firmware_version: device.firmware_version.clone(),
        sbom: stored.is_some(),
        vulnerabilities,
        advisories: found,
    })
}
