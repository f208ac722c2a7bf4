//! The data inventory, generated from the code (DATA-1, DATA-2, PRIV-3, PRIV-4): the
//! hub's own data categories from the one table below, and every product model's
//! declared telemetry fields from the database. `/privacy/data` and the policy page
//! both render this, so the published inventory cannot drift from what is stored.
//! [`RETENTION`] is the one table of retention periods: the retention job
//! (`crate::retention`) deletes by it and the pages publish it.

use crate::config;
use crate::db::Db;
use crate::db::devices::{FieldKind, Sensing};
use crate::error::Result;
use serde::Serialize;

/// How long telemetry readings are kept when a field declares no period of its own
/// and the operator set no other default (`[retention] telemetry_days`).
pub const TELEMETRY_RETENTION_DAYS: u32 = 365;

/// How a retention period is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Days {
    /// Fixed by the hub.
    Fixed(u32),
    /// Per telemetry field: its declared period, else `[retention] telemetry_days`.
    Telemetry,
    /// `[retention] audit_days` (at least `config::AUDIT_MINIMUM_DAYS`).
    Audit,
    /// Never deleted by the job.
    Never,
}

/// One retention rule: what the job deletes and when.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rule {
    /// Stable key: the job's counts and the console use it.
    pub key: &'static str,
    /// The [`Category`] it belongs to.
    pub category: &'static str,
    pub what: &'static str,
    /// The moment the period counts from.
    pub after: &'static str,
    pub days: Days,
}

/// Every retention period the hub applies (DATA-2). The job (`crate::retention`)
/// handles every key here; its unit test checks none is left out.
pub const RETENTION: &[Rule] = &[
    Rule {
        key: "telemetry",
        category: "Telemetry",
        what: "telemetry readings (a field with a shorter period than the others is removed from older readings)",
        after: "they were received",
        days: Days::Telemetry,
    },
    Rule {
        key: "device_events",
        category: "Device events and sessions",
        what: "device events",
        after: "they were received",
        days: Days::Fixed(365),
    },
    Rule {
        key: "mqtt_sessions",
        category: "Device events and sessions",
        what: "stored device sessions",
        after: "they expired",
        days: Days::Fixed(0),
    },
    Rule {
        key: "sessions",
        category: "Sessions and API tokens",
        what: "sign-in sessions",
        after: "they expired",
        days: Days::Fixed(0),
    },
    Rule {
        key: "api_tokens",
        category: "Sessions and API tokens",
        what: "API tokens",
        after: "they expired or were revoked",
        days: Days::Fixed(30),
    },
    Rule {
        key: "one_time_tokens",
        category: "Sessions and API tokens",
        what: "one-time links and setup codes",
        after: "they expired",
        days: Days::Fixed(0),
    },
    Rule {
        key: "outbox",
        category: "E-mail outbox",
        what: "records of delivered e-mail",
        after: "delivery",
        days: Days::Fixed(30),
    },
    Rule {
        key: "reports",
        category: "Vulnerability reports",
        what: "closed vulnerability reports (disclosed, duplicate, not a vulnerability) and their messages",
        after: "their last change",
        days: Days::Fixed(730),
    },
    Rule {
        key: "audit",
        category: "Audit log",
        what: "audit log entries (a checkpoint keeps the rest of the hash chain verifiable)",
        after: "they were recorded",
        days: Days::Audit,
    },
    Rule {
        key: "retention_runs",
        category: "Retention job",
        what: "records of retention runs",
        after: "the run",
        days: Days::Fixed(90),
    },
    Rule {
        key: "policy_acceptances",
        category: "Privacy policy and consents",
        what: "policy acceptances and consent choices: evidence of what was agreed",
        after: "-",
        days: Days::Never,
    },
];

/// A rule with its period resolved against the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    pub key: &'static str,
    pub category: &'static str,
    pub what: &'static str,
    pub after: &'static str,
    /// `None`: never deleted by the job.
    pub days: Option<u32>,
    /// How the period reads on the pages.
    pub text: String,
}

/// The retention periods in force under `retention` (the job and the pages both call
/// this, so what is published is what is applied).
pub fn periods(retention: &config::Retention) -> Vec<Period> {
    RETENTION
        .iter()
        .map(|rule| {
            let days = match rule.days {
                Days::Fixed(d) => Some(d),
                Days::Telemetry => Some(retention.telemetry_days),
                Days::Audit => Some(retention.audit_days),
                Days::Never => None,
            };
            let text = match (rule.days, days) {
                (_, None) => "not deleted by the retention job (removed with the account)".into(),
                (Days::Telemetry, Some(d)) => {
                    format!(
                        "each field's declared period (below), else {d} days after {}",
                        rule.after
                    )
                }
                (_, Some(0)) => format!("deleted once {}", rule.after),
                (_, Some(d)) => format!("{d} days after {}", rule.after),
            };
            Period {
                key: rule.key,
                category: rule.category,
                what: rule.what,
                after: rule.after,
                days,
                text,
            }
        })
        .collect()
}

/// One kind of data the hub itself keeps.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Category {
    pub name: &'static str,
    /// The tables that hold it.
    pub tables: &'static str,
    pub what: &'static str,
    pub purpose: &'static str,
    pub retention: &'static str,
    pub personal: bool,
    /// Whether it is sealed with the secrets key at rest (STOR-3).
    pub encrypted: bool,
}

/// Every category of data the hub stores. A new table belongs here; the test
/// `privacy_policy_is_public_and_versioned.rs` checks every table is listed.
pub const CATEGORIES: &[Category] = &[
    Category {
        name: "Account",
        tables: "users",
        what: "user name, e-mail address, role, status, password hash (Argon2id), sign-in counters, creation and last sign-in time",
        purpose: "to let you sign in, secure your account and contact you about it",
        retention: "as long as the account exists",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "Second factor",
        tables: "users (TOTP secret), recovery_codes",
        what: "the TOTP secret of your authenticator app (encrypted), digests of recovery codes",
        purpose: "two-factor authentication",
        retention: "until you turn two-factor authentication off or the account is deleted",
        personal: true,
        encrypted: true,
    },
    Category {
        name: "Sessions and API tokens",
        tables: "sessions, api_tokens, one_time_tokens, setup_codes",
        what: "digests of session and token values, IP address and browser name of each session, times (including when you last re-entered your password to export or delete your data)",
        purpose: "to keep you signed in and let you see and end your sessions",
        retention: "sessions end after the idle or absolute lifetime or at sign-out; API tokens after 90 days; one-time links after use or expiry",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "Audit log",
        tables: "audit_log, audit_head, audit_checkpoint",
        what: "security events: who (user name), from where (IP address), what, when, outcome",
        purpose: "security monitoring and evidence of who changed what (tamper-evident hash chain)",
        retention: "kept for the security record (see the retention periods below); entries are never edited",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "E-mail outbox",
        tables: "outbox",
        what: "recipient, subject, body of messages the hub sends you (body encrypted until delivered, then erased)",
        purpose: "to deliver account, security and policy notices (and marketing only if you opted in)",
        retention: "the body is erased at delivery; the delivery record is deleted later (see the retention periods below)",
        personal: true,
        encrypted: true,
    },
    Category {
        name: "Privacy policy and consents",
        tables: "privacy_policies, policy_acceptances, consents",
        what: "every published policy version, which version you accepted and when, your marketing choice and when you made it",
        purpose: "to show what was agreed and to respect your choices",
        retention: "policy versions are kept permanently; acceptances and consents as long as the account exists",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "Devices",
        tables: "devices, claim_codes, product_models, product_sensing, device_update_policy",
        what: "device id, product model, owner, certificate fingerprint and expiry, firmware version, last seen time, whether you switched automatic updates off or postponed them",
        purpose: "to connect your devices securely and show them to you",
        retention: "as long as the device is registered",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "Telemetry",
        tables: "telemetry, device_field_settings",
        what: "the readings your devices send: only the fields declared for their product model, listed below, without the optional fields you switched off; and which optional fields you switched off",
        purpose: "as declared per field below",
        retention: "declared per field below; deleted by the retention job when the period ends (see the retention periods below)",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "Vulnerability reports",
        tables: "vuln_reports, report_messages",
        what: "security reports sent through /security: title, description, optional name and e-mail address of the reporter, a digest of the status link, the source network (for rate limits), triage notes and messages",
        purpose: "to fix reported vulnerabilities and keep the reporter informed",
        retention: "open reports are kept; closed ones are deleted after their period (see the retention periods below)",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "Device events and sessions",
        tables: "device_events, mqtt_sessions",
        what: "events your devices report (an event name and its details, at most 200 kept per device), the last message of a device that lost its connection, and the topics a device listens on between connections",
        purpose: "to show what happened on your devices and deliver commands after a reconnect",
        retention: "the newest 200 events per device, and none older than their period; a session until it expires (at most 7 days by default); see the retention periods below",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "Commands to devices",
        tables: "commands",
        what: "command name, arguments, who sent it, delivery and result",
        purpose: "to operate devices and keep a record of what was asked of them",
        retention: "as long as the device is registered",
        personal: false,
        encrypted: false,
    },
    Category {
        name: "Retention job",
        tables: "retention_runs",
        what: "when the retention job ran and how many rows of each kind it deleted (counts, never contents)",
        purpose: "to show that retention periods are applied",
        retention: "see the retention periods below",
        personal: false,
        encrypted: false,
    },
    Category {
        name: "Releases and updates",
        tables: "releases, update_reports, support_periods, rollouts, rollout_targets, rollout_devices",
        what: "signed releases of each product model (version, image hash, notes, who published it), the install steps each device reports (downloading, verified, installed, committed, rolled back, failed with the reason and the downtime), each model's published end of security updates, and the staged rollouts (who started them, their stages and state, the devices each admitted and the last step each reported)",
        purpose: "to deliver verified security updates, to see and stop a failing rollout, and to publish how long each model is supported",
        retention: "releases and support dates permanently (devices in the field may need them); the newest 100 install reports per device, deleted with the device; rollouts and the devices they admitted permanently (the record of what each device was offered)",
        personal: false,
        encrypted: false,
    },
    Category {
        name: "Security advisories and notices",
        tables: "advisories, advisory_affected, advisory_numbers, notices",
        what: "published and draft security advisories with their affected versions, and the notices in your console inbox (security advisories, policy changes)",
        purpose: "to tell you which devices are affected by a vulnerability and what to do",
        retention: "advisories permanently; your notices as long as the account exists",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "Software bills of materials and known vulnerabilities",
        tables: "sboms, sbom_components, vuln_records, vuln_affected",
        what: "the components of each release (from its SBOM) and the public vulnerability records imported to match them",
        purpose: "to find releases and devices that run components with known vulnerabilities",
        retention: "until replaced by a newer SBOM or record",
        personal: false,
        encrypted: false,
    },
];

/// One declared telemetry field of one product model.
#[derive(Debug, Clone, Serialize)]
pub struct FieldRow {
    pub product: String,
    pub product_name: String,
    pub name: String,
    pub kind: &'static str,
    pub unit: String,
    pub purpose: String,
    pub personal: bool,
    pub retention_days: u32,
    /// Whether the owner may switch the field off per device (PRIV-3).
    pub optional: bool,
}

/// One declared sensing capability of one product model (PRIV-4).
#[derive(Debug, Clone, Serialize)]
pub struct SensingRow {
    pub product: String,
    pub product_name: String,
    pub capability: Sensing,
    pub purpose: String,
}

/// The inventory as the pages show it.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub categories: &'static [Category],
    pub fields: Vec<FieldRow>,
    pub sensing: Vec<SensingRow>,
    /// The retention periods in force, from [`RETENTION`].
    pub periods: Vec<Period>,
}

fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Number => "number",
        FieldKind::Integer => "integer",
        FieldKind::Boolean => "boolean",
        FieldKind::String => "string",
    }
}

/// Build the inventory from the code's tables, the configured periods and the stored
/// product models.
pub async fn build(db: &Db, retention: &config::Retention) -> Result<Inventory> {
    let mut fields = Vec::new();
    let mut sensing = Vec::new();
    for model in db.products().await? {
        for s in db.product_sensing(&model.id).await? {
            sensing.push(SensingRow {
                product: model.id.to_string(),
                product_name: model.name.clone(),
                capability: s.capability,
                purpose: s.purpose,
            });
        }
        for f in &model.fields {
            fields.push(FieldRow {
                product: model.id.to_string(),
                product_name: model.name.clone(),
                name: f.name.clone(),
                kind: kind_name(f.kind),
                unit: f.unit.clone(),
                purpose: f.purpose.clone(),
                personal: f.personal,
                retention_days: f.retention_days.unwrap_or(retention.telemetry_days),
                optional: f.optional,
            });
        }
    }
    Ok(Inventory {
        categories: CATEGORIES,
        fields,
        sensing,
        periods: periods(retention),
    })
}
