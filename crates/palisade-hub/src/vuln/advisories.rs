//! Advisories (VULN-6, UPD-7): validating what staff write, creating and editing
//! drafts, publishing (from a fixed report, which then becomes disclosed and its
//! reporter is told, or directly), the fleet exposure of an advisory, and the one
//! security notice per affected owner, through the e-mail outbox and the console
//! inbox. Every change is audited before it returns (DESIGN.md invariant 9).

use super::cvss;
use super::intake::{self, IntakeError};
use super::triage::State as ReportState;
use super::versions::{self, Version};
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::config::Config;
use crate::db::advisories::{Advisory, AdvisoryFields, AdvisoryId, Affected};
use crate::db::notices::NoticeKind;
use crate::db::reports::ReportId;
use crate::db::users::Status;
use crate::db::{Db, now};
use crate::ids::{ProductId, UserId};
use crate::mail::Category;
use std::collections::BTreeMap;

type Result<T> = std::result::Result<T, IntakeError>;

/// Longest summary (one line), in characters.
pub const MAX_SUMMARY: usize = 200;
/// Longest details text (Markdown), in characters.
pub const MAX_DETAILS: usize = 20_000;
/// Longest remediation text, in characters.
pub const MAX_REMEDIATION: usize = 5_000;
/// Longest credit line.
pub const MAX_CREDIT: usize = 200;
/// Most affected ranges on one advisory.
pub const MAX_AFFECTED: usize = 50;

/// What staff send (console form or API), as text.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AdvisoryInput {
    #[serde(default)]
    pub cve: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub details: String,
    /// One range per line: `PRODUCT INTRODUCED [FIXED]`, e.g. `thermo-1 1.2.0 1.3.0`.
    #[serde(default)]
    pub affected: String,
    #[serde(default)]
    pub fixed_version: String,
    #[serde(default)]
    pub cvss_vector: String,
    #[serde(default)]
    pub remediation: String,
    #[serde(default)]
    pub credit: String,
    /// The report it comes from (`VR-…`), or empty.
    #[serde(default)]
    pub report: String,
}

/// A CVE id: `CVE-YYYY-NNNN` with four or more digits of sequence.
pub fn valid_cve(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("CVE-") else {
        return false;
    };
    let Some((year, seq)) = rest.split_once('-') else {
        return false;
    };
    year.len() == 4
        && (4..=19).contains(&seq.len())
        && year.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
        && year >= "1999"
}

fn invalid(m: impl Into<String>) -> IntakeError {
    IntakeError::Invalid(m.into())
}

/// The affected ranges from their text form, each product checked to exist and each
/// version to parse, `introduced < fixed`.
pub async fn parse_affected(db: &Db, text: &str) -> Result<Vec<Affected>> {
    let mut out: Vec<Affected> = Vec::new();
    for (n, line) in text.lines().map(str::trim).enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = n + 1;
        if !(2..=3).contains(&words.len()) {
            return Err(invalid(format!(
                "Affected line {at}: write PRODUCT INTRODUCED [FIXED], e.g. \"thermo-1 1.2.0 1.3.0\"."
            )));
        }
        let product = ProductId::parse(words[0]).map_err(|_| {
            invalid(format!(
                "Affected line {at}: {:?} is not a product id.",
                words[0]
            ))
        })?;
        if db.product(&product).await?.is_none() {
            return Err(invalid(format!(
                "Affected line {at}: there is no product model {product}."
            )));
        }
        let introduced = Version::parse(words[1]).ok_or_else(|| {
            invalid(format!(
                "Affected line {at}: {:?} is not a version (semver).",
                words[1]
            ))
        })?;
        let fixed = match words.get(2) {
            None => None,
            Some(f) => {
                let v = Version::parse(f).ok_or_else(|| {
                    invalid(format!(
                        "Affected line {at}: {f:?} is not a version (semver)."
                    ))
                })?;
                if v <= introduced {
                    return Err(invalid(format!(
                        "Affected line {at}: the fixed version must be after the introduced one."
                    )));
                }
                Some(v.to_string())
            }
        };
        // Stored in canonical form, as the OSV SEMVER range wants it.
        let a = Affected {
            product,
            introduced: introduced.to_string(),
            fixed,
        };
        if out
            .iter()
            .any(|o| o.product == a.product && o.introduced == a.introduced)
        {
            return Err(invalid(format!("Affected line {at} repeats a range.")));
        }
        out.push(a);
        if out.len() > MAX_AFFECTED {
            return Err(invalid(format!("At most {MAX_AFFECTED} affected ranges.")));
        }
    }
    if out.is_empty() {
        return Err(invalid(
            "Name at least one affected product model and version range.",
        ));
    }
    Ok(out)
}

/// The affected ranges as the form shows them.
pub fn affected_text(affected: &[Affected]) -> String {
    affected
        .iter()
        .map(|a| match &a.fixed {
            Some(f) => format!("{} {} {f}", a.product, a.introduced),
            None => format!("{} {}", a.product, a.introduced),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Check and bound everything staff wrote.
pub async fn validate(db: &Db, input: &AdvisoryInput) -> Result<AdvisoryFields> {
    let cve = match input.cve.trim() {
        "" => None,
        c if valid_cve(c) => Some(c.to_owned()),
        _ => return Err(invalid("A CVE id looks like CVE-2026-12345.")),
    };
    let summary = intake::line("The summary", &input.summary, MAX_SUMMARY, true)?;
    let details = intake::text("The details", &input.details, MAX_DETAILS, true)?;
    let remediation = intake::text("The remediation", &input.remediation, MAX_REMEDIATION, true)?;
    let credit = intake::line("The credit", &input.credit, MAX_CREDIT, false)?;
    let fixed_version = intake::line(
        "The fixed version",
        &input.fixed_version,
        versions::MAX_VERSION_LEN,
        false,
    )?;
    let fixed_version = match fixed_version.as_str() {
        "" => String::new(),
        v => Version::parse(v)
            .ok_or_else(|| invalid("The fixed version is not a version (semver)."))?
            .to_string(),
    };
    let cvss = match input.cvss_vector.trim() {
        "" => None,
        v => Some(cvss::parse(v).map_err(|e| invalid(e.to_string()))?),
    };
    let report_id = match input.report.trim() {
        "" => None,
        r => {
            let id = ReportId::parse(r).ok_or_else(|| invalid("Unknown report."))?;
            db.report(&id)
                .await?
                .ok_or_else(|| invalid("Unknown report."))?;
            Some(id.to_string())
        }
    };
    let affected = parse_affected(db, &input.affected).await?;
    Ok(AdvisoryFields {
        cve,
        summary,
        details,
        fixed_version,
        cvss,
        remediation,
        credit,
        report_id,
        affected,
    })
}

/// The year advisories created now are numbered in.
fn this_year() -> i64 {
    time::OffsetDateTime::from_unix_timestamp(now()).map_or(1970, |t| i64::from(t.year()))
}

/// Create a draft (not public until published).
pub async fn create(db: &Db, actor: &Actor, input: &AdvisoryInput) -> Result<AdvisoryId> {
    let fields = validate(db, input).await?;
    let id = db.insert_advisory(this_year(), &fields).await?;
    accounts::audit(
        db,
        actor,
        "advisory.create",
        id.as_str(),
        Outcome::Success,
        &format!(
            "draft; report {}",
            fields.report_id.as_deref().unwrap_or("-")
        ),
    )
    .await?;
    Ok(id)
}

/// Edit an advisory (draft or published): its `modified` time becomes now.
pub async fn edit(db: &Db, actor: &Actor, id: &AdvisoryId, input: &AdvisoryInput) -> Result<()> {
    let fields = validate(db, input).await?;
    if !db.update_advisory(id, &fields).await? {
        return Err(IntakeError::Conflict("No such advisory.".into()));
    }
    accounts::audit(
        db,
        actor,
        "advisory.edit",
        id.as_str(),
        Outcome::Success,
        "fields replaced",
    )
    .await?;
    Ok(())
}

/// Publish a draft. One made from a report needs that report fixed (or already
/// disclosed); the report then moves to disclosed and its reporter is told through
/// the usual path (status page, e-mail).
pub async fn publish(db: &Db, config: &Config, actor: &Actor, advisory: &Advisory) -> Result<()> {
    if advisory.is_published() {
        return Err(IntakeError::Conflict(
            "This advisory is already published.".into(),
        ));
    }
    let report = match &advisory.report_id {
        None => None,
        Some(r) => {
            let id = ReportId::parse(r).ok_or_else(|| invalid("Unknown report."))?;
            let report = db
                .report(&id)
                .await?
                .ok_or_else(|| invalid("Unknown report."))?;
            if !matches!(report.state, ReportState::Fixed | ReportState::Disclosed) {
                return Err(IntakeError::Conflict(format!(
                    "Report {} is {}: publish its advisory once it is fixed.",
                    report.id,
                    report.state.as_str()
                )));
            }
            Some(report)
        }
    };
    if !db.publish_advisory(&advisory.id).await? {
        return Err(IntakeError::Conflict(
            "Someone else published it first.".into(),
        ));
    }
    accounts::audit(
        db,
        actor,
        "advisory.publish",
        advisory.id.as_str(),
        Outcome::Success,
        &format!("report {}", advisory.report_id.as_deref().unwrap_or("-")),
    )
    .await?;
    if let Some(report) = report.filter(|r| r.state == ReportState::Fixed) {
        intake::change_state(db, config, actor, &report, ReportState::Disclosed).await?;
        db.add_report_message(
            &report.id,
            "hub",
            false,
            &format!(
                "Advisory {} was published: {}/advisories/{}",
                advisory.id, config.public_url, advisory.id
            ),
        )
        .await?;
    }
    Ok(())
}

/// A fixed version an advisory names for a product model, with the release record of
/// that model and version when one is published.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FixedRelease {
    pub product: ProductId,
    pub version: String,
    /// `None`: no release of that version is published (yet).
    pub release: Option<crate::db::releases::Release>,
}

impl FixedRelease {
    /// The warning staff see while the fixed version is not a published release.
    pub fn warning(&self) -> Option<String> {
        self.release.is_none().then(|| {
            format!(
                "{} {} is not a published release yet: publish it before telling owners to update.",
                self.product, self.version
            )
        })
    }
}

/// The fixed versions an advisory names, per product model (each range's own fixed
/// version; the advisory's fixed version for a model whose ranges name none), each
/// resolved to its release record.
///
/// Resolved when shown rather than stored with the advisory, because an advisory is
/// often written before its fix is released: a stored release id would be empty at
/// writing time and need a back-fill when the release is published, while the lookup
/// by (model, version) is one query on a unique index and is always current. A
/// fixed version that is not (yet) a release is a warning, not a refusal, for the same
/// reason.
pub async fn fixed_releases(db: &Db, a: &Advisory) -> crate::error::Result<Vec<FixedRelease>> {
    let mut wanted: Vec<(ProductId, String)> = Vec::new();
    for r in &a.affected {
        let own = a
            .affected
            .iter()
            .filter(|o| o.product == r.product)
            .filter_map(|o| o.fixed.clone())
            .collect::<Vec<_>>();
        // A model's ranges name its fixes; the advisory's fixed version stands in for
        // a model whose ranges name none.
        let versions = if own.is_empty() && !a.fixed_version.is_empty() {
            vec![a.fixed_version.clone()]
        } else {
            own
        };
        for v in versions {
            if !wanted.iter().any(|(p, w)| p == &r.product && *w == v) {
                wanted.push((r.product.clone(), v));
            }
        }
    }
    let mut out = Vec::with_capacity(wanted.len());
    for (product, version) in wanted {
        let release = db.release_of_version(&product, &version).await?;
        out.push(FixedRelease {
            product,
            version,
            release,
        });
    }
    Ok(out)
}

/// One owner's exposure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OwnerExposure {
    pub user: UserId,
    pub username: String,
    pub devices: usize,
}

/// Who and what runs an affected version.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Exposure {
    /// Active devices of an affected model on an affected version.
    pub affected_devices: usize,
    /// Active devices of an affected model whose reported version is missing or not a
    /// version: they cannot be ruled out, so they are shown apart.
    pub unknown_version: usize,
    /// Affected devices without an owner.
    pub unowned: usize,
    pub owners: Vec<OwnerExposure>,
}

/// Is a reported firmware version inside any range for its product? `None`: unknown.
pub fn affects(affected: &[Affected], product: &ProductId, firmware: &str) -> Option<bool> {
    let v = Version::parse(firmware)?;
    Some(affected.iter().filter(|a| &a.product == product).any(|a| {
        match Version::parse(&a.introduced) {
            Some(intro) => {
                let fixed = a.fixed.as_deref().and_then(Version::parse);
                versions::in_range(&v, &intro, fixed.as_ref())
            }
            None => false,
        }
    }))
}

/// The exposure of an advisory in the fleet now.
pub async fn exposure(db: &Db, advisory: &Advisory) -> Result<Exposure> {
    let mut e = Exposure::default();
    let mut per_owner: BTreeMap<String, (UserId, usize)> = BTreeMap::new();
    let mut products: Vec<&ProductId> = advisory.affected.iter().map(|a| &a.product).collect();
    products.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    products.dedup();
    for product in products {
        for d in db.active_devices_of_product(product).await? {
            match affects(&advisory.affected, product, &d.firmware_version) {
                None => e.unknown_version += 1,
                Some(false) => {}
                Some(true) => {
                    e.affected_devices += 1;
                    match d.owner {
                        None => e.unowned += 1,
                        Some(o) => {
                            per_owner.entry(o.to_string()).or_insert((o, 0)).1 += 1;
                        }
                    }
                }
            }
        }
    }
    for (user, devices) in per_owner.into_values() {
        let username = db
            .user(&user)
            .await?
            .map_or_else(|| "-".to_owned(), |u| u.username.to_string());
        e.owners.push(OwnerExposure {
            user,
            username,
            devices,
        });
    }
    Ok(e)
}

/// What a notification round did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Notified {
    /// Owners told now.
    pub sent: usize,
    /// Owners who had already been told of this advisory (not told again).
    pub already: usize,
}

/// Send each affected owner ONE security notice about a published advisory, by
/// e-mail and in their console inbox. Marketing consent plays no part (a security
/// notice is not marketing and carries none); a second call tells no one again,
/// because the notice's unique key admits one per owner and advisory.
pub async fn notify(
    db: &Db,
    config: &Config,
    actor: &Actor,
    advisory: &Advisory,
) -> Result<Notified> {
    if !advisory.is_published() {
        return Err(IntakeError::Conflict(
            "Publish the advisory before telling owners.".into(),
        ));
    }
    let exposure = exposure(db, advisory).await?;
    let mut n = Notified::default();
    let subject = format!("Security advisory {}: {}", advisory.id, advisory.summary);
    for owner in &exposure.owners {
        let Some(user) = db.user(&owner.user).await? else {
            continue;
        };
        if user.status != Status::Active {
            continue;
        }
        let body = notice_body(config, advisory, &user.username.to_string(), owner.devices);
        if db
            .insert_notice(
                &user.id,
                NoticeKind::Security,
                advisory.id.as_str(),
                &subject,
                &body,
            )
            .await?
        {
            db.enqueue_mail(user.email.as_str(), &subject, &body, Category::Security)
                .await?;
            n.sent += 1;
        } else {
            n.already += 1;
        }
    }
    accounts::audit(
        db,
        actor,
        "advisory.notify",
        advisory.id.as_str(),
        Outcome::Success,
        &format!("{} owners told, {} already told", n.sent, n.already),
    )
    .await?;
    Ok(n)
}

/// The security notice: what is affected, how serious, what to do, where to read
/// more. Nothing else (UPD-7: recognisable as a security notice).
fn notice_body(config: &Config, a: &Advisory, username: &str, devices: usize) -> String {
    let ranges = a
        .affected
        .iter()
        .map(|r| match &r.fixed {
            Some(f) => format!(
                "- {}: versions {} up to (not including) {f}",
                r.product, r.introduced
            ),
            None => format!(
                "- {}: versions {} and later (no fix yet)",
                r.product, r.introduced
            ),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let severity = a.cvss.as_ref().map_or_else(
        || "not scored".to_owned(),
        |c| {
            format!(
                "{} (CVSS {})",
                c.severity.as_str(),
                cvss::fmt_score(c.score_tenths)
            )
        },
    );
    let fixed = if a.fixed_version.is_empty() {
        "No fixed version is available yet.".to_owned()
    } else {
        format!("Fixed in version {}.", a.fixed_version)
    };
    format!(
        "Hello {username},\n\nSECURITY NOTICE {id}{cve}: {summary}\n\n{devices} of your devices run an affected version.\n\nAffected:\n{ranges}\n\nSeverity: {severity}\n{fixed}\n\nWhat to do:\n{remediation}\n\nThe full advisory: {base}/advisories/{id}\nYour devices: {base}/devices\n\nYou receive this security notice because you own an affected device. It is sent whatever your e-mail preferences, and it never contains offers.\n",
        id = a.id,
        cve = a
            .cve
            .as_ref()
            .map_or_else(String::new, |c| format!(" ({c})")),
        summary = a.summary,
        remediation = a.remediation,
        base = config.public_url,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vuln6_cve_ids() {
        for ok in ["CVE-2026-0001", "CVE-2021-44228", "CVE-2026-1234567"] {
            assert!(valid_cve(ok), "{ok}");
        }
        for bad in [
            "CVE-26-0001",
            "CVE-2026-001",
            "cve-2026-0001",
            "CVE-2026-00a1",
            "CVE-2026",
            "CVE-1900-0001",
            "GHSA-xxxx",
        ] {
            assert!(!valid_cve(bad), "{bad}");
        }
    }

    #[test]
    fn vuln6_affects_at_boundaries() {
        let p = ProductId::parse("thermo-1").expect("id");
        let other = ProductId::parse("lamp-1").expect("id");
        let ranges = vec![Affected {
            product: p.clone(),
            introduced: "1.2.0".into(),
            fixed: Some("1.3.0".into()),
        }];
        assert_eq!(affects(&ranges, &p, "1.1.9"), Some(false));
        assert_eq!(affects(&ranges, &p, "v1.2"), Some(true));
        assert_eq!(affects(&ranges, &p, "1.2.7"), Some(true));
        assert_eq!(affects(&ranges, &p, "1.3.0"), Some(false));
        assert_eq!(affects(&ranges, &other, "1.2.0"), Some(false));
        assert_eq!(affects(&ranges, &p, ""), None);
        assert_eq!(affects(&ranges, &p, "beta"), None);
    }
}
