//! Report intake and triage operations shared by the public pages, the console and the
//! API. Each checks its rules and bounds, writes the audit entry before returning
//! (DESIGN.md invariant 9), and tells the reporter of every status change (status
//! page always; e-mail when they gave an address). E-mails to a reporter never repeat
//! what was submitted, so the form cannot be used to relay text to a third party.

use super::cvss;
use super::triage::State;
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::config::Config;
use crate::db::reports::{NewReport, Report};
use crate::db::{Db, now};
use crate::ids::{Email, UserId};
use crate::mail::Category;
use std::net::IpAddr;

/// Longest title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest description, in characters (the form's body limit applies on top).
pub const MAX_DESCRIPTION: usize = 20_000;
/// Longest reporter name and affected-product text.
pub const MAX_SHORT: usize = 200;
/// Longest message (reply, note) and affected-versions assessment.
pub const MAX_MESSAGE: usize = 5_000;

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// What was sent is not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// The report is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// Too many submissions; retry after this many seconds.
    #[error("too many reports")]
    TooMany(u64),
    #[error(transparent)]
    Internal(#[from] crate::error::Error),
}

type Result<T> = std::result::Result<T, IntakeError>;

/// A single-line field: trimmed, bounded, no control characters.
pub fn line(label: &str, text: &str, max: usize, required: bool) -> Result<String> {
    let t = text.trim();
    if required && t.is_empty() {
        return Err(IntakeError::Invalid(format!("{label} is required.")));
    }
    if t.chars().count() > max {
        return Err(IntakeError::Invalid(format!(
            "{label} is longer than {max} characters."
        )));
    }
    if t.chars().any(char::is_control) {
        return Err(IntakeError::Invalid(format!(
            "{label} must be a single line of text."
        )));
    }
    Ok(t.to_owned())
}

/// A multi-line field: trimmed, bounded, line breaks and tabs the only control characters.
pub fn text(label: &str, text: &str, max: usize, required: bool) -> Result<String> {
    let t = text.trim().replace("\r\n", "\n");
    if required && t.is_empty() {
        return Err(IntakeError::Invalid(format!("{label} is required.")));
    }
    if t.chars().count() > max {
        return Err(IntakeError::Invalid(format!(
            "{label} is longer than {max} characters."
        )));
    }
    if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(IntakeError::Invalid(format!(
            "{label} contains control characters."
        )));
    }
    Ok(t)
}

/// The network a request came from, as a digest: an IPv4 address or an IPv6 /64
/// (one host usually holds a whole /64). Only the digest is stored with a report.
pub fn source_key(ip: IpAddr) -> String {
    let net = match ip {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
        v4 => v4,
    };
    palisade_crypto::token::sha256_hex(format!("report-source:{net}").as_bytes())
}

/// What the report form sends.
pub struct Submission<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub product: &'a str,
    pub name: &'a str,
    pub email: &'a str,
}

/// The status link for a report's secret.
pub fn status_link(config: &Config, secret: &str) -> String {
    format!("{}/security/status?token={secret}", config.public_url)
}

/// Accept a report from anyone: bounded, rate-limited per source and overall, stored,
/// audited, acknowledged by e-mail when an address is given, and the contact told.
/// Returns the report and the raw status-link secret.
pub async fn submit(
    db: &Db,
    config: &Config,
    source: IpAddr,
    s: Submission<'_>,
) -> Result<(Report, String)> {
    let title = line("The title", s.title, MAX_TITLE, true)?;
    let description = text("The description", s.description, MAX_DESCRIPTION, true)?;
    let product = line("The affected product", s.product, MAX_SHORT, false)?;
    let name = line("Your name", s.name, MAX_SHORT, false)?;
    let email = match s.email.trim() {
        "" => None,
        typed => Some(Email::parse(typed).map_err(|e| IntakeError::Invalid(e.to_string()))?),
    };
    let key = source_key(source);
    let hour_ago = now() - 3600;
    let limits = &config.limits;
    if db.reports_received_since(Some(&key), hour_ago).await?
        >= i64::from(limits.reports_per_hour_per_source)
        || db.reports_received_since(None, hour_ago).await? >= i64::from(limits.reports_per_hour)
    {
        tracing::warn!("vulnerability report refused: rate limit");
        return Err(IntakeError::TooMany(600));
    }
    let (report, secret) = db
        .insert_report(NewReport {
            title: &title,
            description: &description,
            reporter_name: &name,
            reporter_email: email.as_ref(),
            product: &product,
            source_key: &key,
        })
        .await?;
    accounts::audit(
        db,
        &Actor::anonymous(source),
        "report.submit",
        report.id.as_str(),
        Outcome::Success,
        if email.is_some() {
            "received; reporter gave an e-mail address"
        } else {
            "received; no e-mail address"
        },
    )
    .await?;
    let d = &config.disclosure;
    if let Some(email) = &email {
        let body = format!(
            "Thank you for your report to {product}. It was received and has the tracking ID {id}.\n\n\
             Follow its status, and reply to us, at this private link (keep it to yourself: anyone with it can read the report's status):\n{link}\n\n\
             We acknowledge reports within {ack} days and send a status update at least every {upd} days until the issue is resolved.\n\n\
             If you did not send a report, ignore this message.\n",
            product = config.product_name,
            id = report.id,
            link = status_link(config, &secret),
            ack = d.acknowledge_days,
            upd = d.update_days,
        );
        db.enqueue_mail(
            email.as_str(),
            &format!("Vulnerability report {} received", report.id),
            &body,
            Category::Disclosure,
        )
        .await?;
    }
    tell_contact(
        db,
        config,
        &report,
        "A new vulnerability report was received.",
    )
    .await?;
    Ok((report, secret))
}

/// Tell the configured contact address that something happened on a report (never
/// the report's content: that stays behind staff sign-in).
pub(crate) async fn tell_contact(
    db: &Db,
    config: &Config,
    report: &Report,
    what: &str,
) -> Result<()> {
    if let Some(contact) = &config.disclosure.contact_email {
        let body = format!(
            "{what}\n\nTracking ID: {id}\nTriage it at {base}/reports/{id} (staff sign-in required).\n",
            id = report.id,
            base = config.public_url
        );
        db.enqueue_mail(
            contact,
            &format!("Vulnerability report {}", report.id),
            &body,
            Category::Disclosure,
        )
        .await?;
    }
    Ok(())
}

/// Tell the reporter by e-mail (if they gave an address) that their report changed.
async fn tell_reporter(db: &Db, config: &Config, report: &Report, what: &str) -> Result<()> {
    if let Some(email) = &report.reporter_email {
        let body = format!(
            "{what}\n\nTracking ID: {id}\nOpen the private status link from our first message to read the details and reply.\n\n— the {product} security team\n",
            id = report.id,
            product = config.product_name
        );
        db.enqueue_mail(
            email.as_str(),
            &format!("Update on your vulnerability report {}", report.id),
            &body,
            Category::Disclosure,
        )
        .await?;
    }
    Ok(())
}

/// A reporter's reply through the status link (bounded; limited per report and hour).
pub async fn reporter_reply(
    db: &Db,
    config: &Config,
    source: IpAddr,
    report: &Report,
    body: &str,
) -> Result<()> {
    let body = text("The message", body, MAX_MESSAGE, true)?;
    // Closed reports may still be answered (e.g. to dispute a verdict), but not after
    // disclosure, when the record is final.
    if report.state == State::Disclosed {
        return Err(IntakeError::Conflict(
            "This report is closed and disclosed; send a new report for a new issue.".into(),
        ));
    }
    if db.reporter_messages_since(&report.id, now() - 3600).await?
        >= i64::from(config.limits.report_replies_per_hour)
    {
        return Err(IntakeError::TooMany(600));
    }
    db.add_report_message(&report.id, "reporter", false, &body)
        .await?;
    accounts::audit(
        db,
        &Actor::anonymous(source),
        "report.reply",
        report.id.as_str(),
        Outcome::Success,
        "reporter added a message",
    )
    .await?;
    tell_contact(db, config, report, "The reporter added a message.").await
}

/// Move a report to another state, if the transition is allowed.
pub async fn change_state(
    db: &Db,
    config: &Config,
    actor: &Actor,
    report: &Report,
    to: State,
) -> Result<()> {
    if !report.state.may_become(to) {
        let allowed: Vec<&str> = report.state.next().iter().map(|s| s.as_str()).collect();
        return Err(IntakeError::Conflict(format!(
            "A {} report cannot become {}; it can become: {}.",
            report.state.as_str(),
            to.as_str(),
            if allowed.is_empty() {
                "nothing (final)".into()
            } else {
                allowed.join(", ")
            }
        )));
    }
    if !db.set_report_state(&report.id, report.state, to).await? {
        return Err(IntakeError::Conflict(
            "Someone else changed this report first; reload it.".into(),
        ));
    }
    let detail = format!("{} -> {}", report.state.as_str(), to.as_str());
    accounts::audit(
        db,
        actor,
        "report.state",
        report.id.as_str(),
        Outcome::Success,
        &detail,
    )
    .await?;
    let notice = format!("Status: {}", to.reporter_text());
    db.add_report_message(&report.id, "hub", false, &notice)
        .await?;
    tell_reporter(db, config, report, &notice).await
}

/// Record the assessment: CVSS v3.1 or v4.0 vector (empty clears it), affected product models
/// and version ranges (text), and the assignee (a staff account, or none).
pub async fn assess(
    db: &Db,
    actor: &Actor,
    report: &Report,
    vector: &str,
    affected: &str,
    assignee: Option<&UserId>,
) -> Result<()> {
    let scored = match vector.trim() {
        "" => None,
        v => Some(cvss::parse(v).map_err(|e| IntakeError::Invalid(e.to_string()))?),
    };
    let affected = text(
        "Affected products and versions",
        affected,
        MAX_MESSAGE,
        false,
    )?;
    let assignee_name = match assignee {
        None => "-".to_owned(),
        Some(id) => {
            let user = db
                .user(id)
                .await?
                .filter(|u| {
                    matches!(
                        u.role,
                        crate::db::users::Role::Admin | crate::db::users::Role::Operator
                    ) && u.status == crate::db::users::Status::Active
                })
                .ok_or_else(|| {
                    IntakeError::Invalid("The assignee must be an active staff account.".into())
                })?;
            user.username.to_string()
        }
    };
    db.set_report_assessment(&report.id, scored.as_ref(), &affected, assignee)
        .await?;
    let detail = format!(
        "cvss {}; assignee {assignee_name}",
        scored.as_ref().map_or_else(
            || "none".to_owned(),
            |c| format!(
                "{} ({})",
                cvss::fmt_score(c.score_tenths),
                c.severity.as_str()
            )
        )
    );
    accounts::audit(
        db,
        actor,
        "report.assess",
        report.id.as_str(),
        Outcome::Success,
        &detail,
    )
    .await?;
    Ok(())
}

/// Add a staff message: an internal note, or a reply the reporter reads (and is
/// e-mailed about).
pub async fn staff_message(
    db: &Db,
    config: &Config,
    actor: &Actor,
    report: &Report,
    body: &str,
    internal: bool,
) -> Result<()> {
    let body = text("The message", body, MAX_MESSAGE, true)?;
    db.add_report_message(&report.id, &actor.name, internal, &body)
        .await?;
    accounts::audit(
        db,
        actor,
        "report.message",
        report.id.as_str(),
        Outcome::Success,
        if internal {
            "internal note"
        } else {
            "message to the reporter"
        },
    )
    .await?;
    if !internal {
        tell_reporter(
            db,
            config,
            report,
            "We sent you a message about your report.",
        )
        .await?;
    }
    Ok(())
}
