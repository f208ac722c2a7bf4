//! OSV records (https://ossf.github.io/osv-schema/) as the offline vulnerability
//! database stores them: id, `modified`, withdrawal, aliases, summary, severity, and per
//! affected package its SEMVER/ECOSYSTEM ranges and listed versions (GIT ranges name
//! commits, which no SBOM version can be compared with, and are dropped).

use super::purl;
use super::versions::{Affects, Event, Range};
use serde::Deserialize;
use serde_json::Value;

/// Largest single record accepted.
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;
const MAX_ID: usize = 128;
const MAX_SUMMARY: usize = 1024;

/// One affected package of a record.
#[derive(Debug, Clone)]
pub struct AffectedPackage {
    pub ecosystem: String,
    pub name: String,
    /// `purl::key(ecosystem, name)`.
    pub key: String,
    pub affects: Affects,
}

/// A record, validated.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    /// Unix seconds.
    pub modified: i64,
    pub published: i64,
    pub withdrawn: bool,
    pub aliases: Vec<String>,
    pub summary: String,
    /// The first CVSS vector given, or "".
    pub severity: String,
    pub affected: Vec<AffectedPackage>,
}

#[derive(Deserialize)]
struct RawRecord {
    id: String,
    modified: String,
    #[serde(default)]
    published: Option<String>,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    aliases: Option<Vec<String>>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    severity: Option<Vec<RawSeverity>>,
    #[serde(default)]
    affected: Option<Vec<RawAffected>>,
}

#[derive(Deserialize)]
struct RawSeverity {
    #[serde(rename = "type")]
    kind: String,
    score: String,
}

#[derive(Deserialize)]
struct RawAffected {
    #[serde(default)]
    package: Option<RawPackage>,
    #[serde(default)]
    ranges: Option<Vec<RawRange>>,
    #[serde(default)]
    versions: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawPackage {
    ecosystem: String,
    name: String,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(rename = "type")]
    kind: String,
    events: Vec<serde_json::Map<String, Value>>,
}

fn time(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| format!("{s:?} is not an RFC 3339 time"))
}

fn clip(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(max) {
        Some((i, _)) => line[..i].to_owned(),
        None => line.to_owned(),
    }
}

/// Parse one OSV record from JSON; the error says what is wrong (the caller names
/// the file).
pub fn parse_record(value: Value) -> Result<Record, String> {
    let raw: RawRecord =
        serde_json::from_value(value).map_err(|e| format!("not an OSV record: {e}"))?;
    let id = raw.id.trim().to_owned();
    if id.is_empty()
        || id.len() > MAX_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(format!("the record id {:?} is not valid", raw.id));
    }
    let modified = time(&raw.modified).map_err(|e| format!("{id}: modified: {e}"))?;
    let published = match &raw.published {
        Some(p) => time(p).map_err(|e| format!("{id}: published: {e}"))?,
        None => 0,
    };
    let mut affected = Vec::new();
    for a in raw.affected.unwrap_or_default() {
        let Some(package) = a.package else {
            // Records about a git repository only; nothing an SBOM can name.
            continue;
        };
        if package.ecosystem.trim().is_empty() || package.name.trim().is_empty() {
            return Err(format!(
                "{id}: an affected package has no ecosystem or name"
            ));
        }
        let mut ranges = Vec::new();
        for r in a.ranges.unwrap_or_default() {
            match r.kind.as_str() {
                "SEMVER" | "ECOSYSTEM" => {}
                "GIT" => continue,
                other => return Err(format!("{id}: unknown range type {other:?}")),
            }
            let mut events = Vec::with_capacity(r.events.len());
            for e in r.events {
                let mut it = e.into_iter();
                let (Some((k, Value::String(v))), None) = (it.next(), it.next()) else {
                    return Err(format!(
                        "{id}: a range event must have exactly one string field"
                    ));
                };
                events.push(match k.as_str() {
                    "introduced" => Event::Introduced(v),
                    "fixed" => Event::Fixed(v),
                    "last_affected" => Event::LastAffected(v),
                    "limit" => Event::Limit(v),
                    other => return Err(format!("{id}: unknown range event {other:?}")),
                });
            }
            if !events.iter().any(|e| matches!(e, Event::Introduced(_))) {
                return Err(format!("{id}: a range has no \"introduced\" event"));
            }
            ranges.push(Range { events });
        }
        affected.push(AffectedPackage {
            key: purl::key(&package.ecosystem, &package.name),
            ecosystem: package.ecosystem,
            name: package.name,
            affects: Affects {
                ranges,
                versions: a.versions.unwrap_or_default(),
            },
        });
    }
    let severity = raw
        .severity
        .unwrap_or_default()
        .into_iter()
        .find(|s| s.kind.starts_with("CVSS"))
        .map(|s| clip(&s.score, 256))
        .unwrap_or_default();
    let summary = match raw.summary.as_deref() {
        Some(s) if !s.trim().is_empty() => clip(s, MAX_SUMMARY),
        _ => clip(raw.details.as_deref().unwrap_or(""), MAX_SUMMARY),
    };
    Ok(Record {
        id,
        modified,
        published,
        withdrawn: raw.withdrawn.is_some(),
        aliases: raw
            .aliases
            .unwrap_or_default()
            .iter()
            .map(|a| clip(a, MAX_ID))
            .take(32)
            .collect(),
        summary,
        severity,
        affected,
    })
}

/// Parse a JSON document holding one record or an array of records.
pub fn parse_document(bytes: &[u8]) -> Result<Vec<Record>, String> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(format!("larger than {MAX_RECORD_BYTES} bytes"));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    match value {
        Value::Array(items) => items.into_iter().map(parse_record).collect(),
        v @ Value::Object(_) => Ok(vec![parse_record(v)?]),
        _ => Err("neither an OSV record nor an array of them".into()),
    }
}
