//! Reporting an actively exploited vulnerability to the authorities (VULN-7, EU Cyber
//! Resilience Act Art. 14): staff mark a report as actively exploited (the time they
//! learnt it starts the clock), the triage deadlines then include the early warning
//! (24 h), the notification (72 h) and the final report (14 days after the fix), and
//! staff record each as sent with the authority's reference. The hub drafts the text
//! of each from the report; sending it through the CRA single reporting platform is a
//! person's job (there is no public API to automate).

use super::intake::{self, IntakeError, line, text};
use super::triage::CraStage;
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::config::Config;
use crate::db::reports::Report;
use crate::db::{Db, now};

type Result<T> = std::result::Result<T, IntakeError>;

/// Longest authority reference (a case number) kept with a sent report.
pub const MAX_REFERENCE: usize = 200;

/// Record that the vulnerability is actively exploited, known since `aware_at` (at
/// most now; not before the report arrived, unless staff say so in the note). The
/// first recording stands: the clock cannot be restarted.
pub async fn mark_exploited(
    db: &Db,
    config: &Config,
    actor: &Actor,
    report: &Report,
    aware_at: i64,
    note: &str,
) -> Result<()> {
    let note = text("The note", note, intake::MAX_MESSAGE, true)?;
    if aware_at > now() + 60 {
        return Err(IntakeError::Invalid(
            "The time you learnt of the exploitation cannot be in the future.".into(),
        ));
    }
    if report.cra.exploited_at.is_some() {
        return Err(IntakeError::Conflict(
            "Already marked as actively exploited; the reporting clock runs from the first time recorded.".into(),
        ));
    }
    if !db.mark_report_exploited(&report.id, aware_at).await? {
        return Err(IntakeError::Conflict(
            "Someone else marked this report first; reload it.".into(),
        ));
    }
    db.add_report_message(
        &report.id,
        &actor.name,
        true,
        &format!("Marked actively exploited: {note}"),
    )
    .await?;
    accounts::audit(
        db,
        actor,
        "report.exploited",
        report.id.as_str(),
        Outcome::Success,
        &format!("aware since {aware_at}; CRA early warning due within 24 h"),
    )
    .await?;
    intake::tell_contact(
        db,
        config,
        report,
        "A reported vulnerability is marked ACTIVELY EXPLOITED: the CRA early warning to the authorities is due within 24 hours of awareness, the notification within 72 hours.",
    )
    .await
}

/// Record that `stage` was sent to the authorities, with their reference.
pub async fn record_sent(
    db: &Db,
    actor: &Actor,
    report: &Report,
    stage: CraStage,
    reference: &str,
) -> Result<()> {
    let reference = line("The reference", reference, MAX_REFERENCE, true)?;
    if let Some(why) = report.cra.refuse_recording(stage) {
        return Err(IntakeError::Conflict(why.into()));
    }
    if !db.record_cra_report(&report.id, stage, now()).await? {
        return Err(IntakeError::Conflict(
            "That report is already recorded as sent.".into(),
        ));
    }
    db.add_report_message(
        &report.id,
        &actor.name,
        true,
        &format!("{} sent; reference {reference}", stage.title()),
    )
    .await?;
    accounts::audit(
        db,
        actor,
        "report.cra",
        report.id.as_str(),
        Outcome::Success,
        &format!("{} sent; reference {reference}", stage.as_str()),
    )
    .await?;
    Ok(())
}

/// The text of a CRA report, filled in from the report as far as the hub knows it, for
/// staff to complete and submit. Each names what Art. 14(2) asks that stage to contain.
pub fn draft(config: &Config, report: &Report, stage: CraStage) -> String {
    let severity = report.cvss.as_ref().map_or_else(
        || "not scored yet".to_owned(),
        |c| {
            format!(
                "CVSS {} ({}) {}",
                super::cvss::fmt_score(c.score_tenths),
                c.severity.as_str(),
                c.vector
            )
        },
    );
    let affected = if report.affected.is_empty() {
        report.product.as_str()
    } else {
        report.affected.as_str()
    };
    let head = format!(
        "Manufacturer: {maker} (security contact: {contact})\nOur reference: {id}\nProduct(s) and versions affected: {affected}\nVulnerability: {title}\nSeverity: {severity}\n",
        maker = config.product_name,
        contact = config
            .disclosure
            .contact_email
            .as_deref()
            .unwrap_or("see /.well-known/security.txt"),
        id = report.id,
        title = report.title,
    );
    let body = match stage {
        CraStage::EarlyWarning => {
            "EARLY WARNING of an actively exploited vulnerability (CRA Art. 14(2)(a)).\n\
             - Member States where the product is made available: [list]\n\
             - Is the exploitation suspected to be malicious? [yes/no/unknown]\n"
        }
        CraStage::Notification => {
            "VULNERABILITY NOTIFICATION (CRA Art. 14(2)(b)).\n\
             - General nature of the exploit and of the vulnerability: [describe]\n\
             - Corrective or mitigating measures taken, and those users can take: [describe]\n\
             - How sensitive this information is: [e.g. not to be shared before the fix]\n"
        }
        CraStage::FinalReport => {
            "FINAL REPORT (CRA Art. 14(2)(c)), within 14 days of the corrective measure.\n\
             - Description of the vulnerability, its severity and impact: [describe]\n\
             - Information about any malicious actor that exploited it, where available: [describe]\n\
             - The security update or other corrective measures made available: [release, advisory ID]\n"
        }
    };
    format!("{head}\n{body}")
}
