//! The machine-readable advisory feeds (VULN-6): one OSV record per published
//! advisory (schema 1.6, validated against the published JSON schema in tests) and
//! an Atom feed (RFC 4287) with every value escaped.
//!
//! Two choices the OSV schema forces: its `id` must start with a registered
//! home-database prefix or `x_`, and `PAL` is not registered, so the OSV id is
//! `x_PAL-YYYY-NNNN` (the Palisade id is in `database_specific.palisade_id` and the
//! `ADVISORY` reference); and device firmware has no OSV ecosystem, so an affected
//! entry has no `package`: its SEMVER range names the product model in
//! `database_specific.product_model`.

use crate::config::Config;
use crate::db::advisories::Advisory;
use crate::privacy::markdown::escape;
use serde_json::{Value, json};

/// The OSV schema version the records follow.
pub const OSV_SCHEMA_VERSION: &str = "1.6.0";

/// RFC 3339 in UTC (`2026-12-01T21:47:35Z`), as OSV and Atom want it.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// The OSV id of an advisory (see the module comment).
pub fn osv_id(a: &Advisory) -> String {
    format!("x_{}", a.id)
}

/// One published advisory as an OSV record.
pub fn osv(config: &Config, a: &Advisory) -> Value {
    let base = &config.public_url;
    let mut record = json!({
        "schema_version": OSV_SCHEMA_VERSION,
        "id": osv_id(a),
        "modified": rfc3339(a.modified_at),
        "published": rfc3339(a.published_at.unwrap_or(a.modified_at)),
        "aliases": a.cve.iter().collect::<Vec<_>>(),
        "summary": a.summary,
        "details": a.details,
        "affected": a.affected.iter().map(|r| {
            let mut events = vec![json!({"introduced": r.introduced})];
            if let Some(f) = &r.fixed {
                events.push(json!({"fixed": f}));
            }
            json!({
                "ranges": [{"type": "SEMVER", "events": events}],
                "database_specific": {"product_model": r.product.as_str()},
            })
        }).collect::<Vec<_>>(),
        "references": [
            {"type": "ADVISORY", "url": format!("{base}/advisories/{}", a.id)},
        ],
        "database_specific": {
            "palisade_id": a.id.as_str(),
            "severity": a.severity.map(|s| s.as_str()),
            "fixed_version": a.fixed_version,
            "remediation": a.remediation,
        },
    });
    if let Some(c) = &a.cvss {
        record["severity"] =
            json!([{"type": crate::vuln::cvss::osv_type(&c.vector), "score": c.vector}]);
    }
    if !a.credit.is_empty() {
        record["credits"] = json!([{"name": a.credit, "type": "FINDER"}]);
    }
    record
}

/// The Atom feed of published advisories (newest first).
pub fn atom(config: &Config, advisories: &[Advisory], now: i64) -> String {
    let base = escape(&config.public_url);
    let product = escape(&config.product_name);
    let updated = advisories
        .iter()
        .map(|a| a.modified_at)
        .max()
        .unwrap_or(now);
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <feed xmlns=\"http://www.w3.org/2005/Atom\">\n\
         <id>{base}/advisories</id>\n\
         <title>{product} security advisories</title>\n\
         <updated>{}</updated>\n\
         <link rel=\"self\" type=\"application/atom+xml\" href=\"{base}/advisories.atom\"/>\n\
         <link rel=\"alternate\" type=\"text/html\" href=\"{base}/advisories\"/>\n\
         <author><name>{product} security team</name></author>\n",
        rfc3339(updated)
    );
    for a in advisories.iter().filter(|a| a.is_published()) {
        let id = escape(a.id.as_str());
        let mut summary = format!(
            "Severity: {}. ",
            a.cvss.as_ref().map_or_else(
                || "not scored".to_owned(),
                |c| format!(
                    "{} ({})",
                    c.severity.as_str(),
                    crate::vuln::cvss::fmt_score(c.score_tenths)
                )
            )
        );
        for r in &a.affected {
            summary.push_str(&match &r.fixed {
                Some(f) => format!("{} {} to before {f}. ", r.product, r.introduced),
                None => format!("{} {} and later. ", r.product, r.introduced),
            });
        }
        if !a.fixed_version.is_empty() {
            summary.push_str(&format!("Fixed in {}. ", a.fixed_version));
        }
        summary.push_str(&a.remediation);
        out.push_str(&format!(
            "<entry>\n<id>{base}/advisories/{id}</id>\n<title>{id}{cve}: {title}</title>\n\
             <updated>{updated}</updated>\n<published>{published}</published>\n\
             <link rel=\"alternate\" type=\"text/html\" href=\"{base}/advisories/{id}\"/>\n\
             <link rel=\"alternate\" type=\"application/json\" href=\"{base}/advisories/{id}.json\"/>\n\
             <category term=\"{severity}\"/>\n<summary type=\"text\">{summary}</summary>\n</entry>\n",
            cve = a.cve.as_ref().map_or_else(String::new, |c| format!(" ({})", escape(c))),
            title = escape(&a.summary),
            updated = rfc3339(a.modified_at),
            published = rfc3339(a.published_at.unwrap_or(a.modified_at)),
            severity = a.severity.map_or("unscored", |s| s.as_str()),
            summary = escape(&summary),
        ));
    }
    out.push_str("</feed>\n");
    out
}
