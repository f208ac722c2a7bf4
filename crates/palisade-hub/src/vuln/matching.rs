//! Matching SBOM components against the offline database (VULN-4): one index lookup
//! per distinct package, then each ecosystem's version ranges evaluated in memory, so
//! the work grows with the number of components, not with the size of the database.

use super::sbom::Component;
use super::versions::Scheme;
use crate::db::Db;
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
    for (i, (key, c)) in keyed.iter().enumerate() {
        for row in by_key.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
            if row
                .affects
                .contains(Scheme::for_ecosystem(&row.ecosystem), &c.version)
            {
                hits.insert((i, row.record_id.as_str()));
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
