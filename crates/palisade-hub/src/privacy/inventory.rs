//! The data inventory, generated from the code (DATA-1, DATA-2, PRIV-3, PRIV-4): the
//! hub's own data categories from the one table below, and every product model's
//! declared telemetry fields from the database. `/privacy/data` and the policy page
//! both render this, so the published inventory cannot drift from what is stored.

use crate::db::Db;
use crate::db::devices::FieldKind;
use crate::error::Result;
use serde::Serialize;

/// How long telemetry readings are kept when a field declares no period of its own.
pub const TELEMETRY_RETENTION_DAYS: u32 = 365;

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
        tables: "audit_log, audit_head",
        what: "security events: who (user name), from where (IP address), what, when, outcome",
        purpose: "security monitoring and evidence of who changed what (tamper-evident hash chain)",
        retention: "kept for the security record; entries are never edited",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "E-mail outbox",
        tables: "outbox",
        what: "recipient, subject, body of messages the hub sends you (body encrypted until delivered, then erased)",
        purpose: "to deliver account, security and policy notices (and marketing only if you opted in)",
        retention: "the body is erased at delivery; the delivery record stays",
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
        tables: "devices, claim_codes, product_models",
        what: "device id, product model, owner, certificate fingerprint and expiry, firmware version, last seen time",
        purpose: "to connect your devices securely and show them to you",
        retention: "as long as the device is registered",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "Telemetry",
        tables: "telemetry",
        what: "the readings your devices send: only the fields declared for their product model, listed below",
        purpose: "as declared per field below",
        retention: "declared per field below (default 365 days); the job that deletes readings when their period ends is not built yet, so today readings are kept until the device is removed",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "Vulnerability reports",
        tables: "vuln_reports, report_messages",
        what: "security reports sent through /security: title, description, optional name and e-mail address of the reporter, a digest of the status link, the source network (for rate limits), triage notes and messages",
        purpose: "to fix reported vulnerabilities and keep the reporter informed",
        retention: "kept for the security record; no deletion period is set yet",
        personal: true,
        encrypted: false,
    },
    Category {
        name: "Device events and sessions",
        tables: "device_events, mqtt_sessions",
        what: "events your devices report (an event name and its details, at most 200 kept per device), the last message of a device that lost its connection, and the topics a device listens on between connections",
        purpose: "to show what happened on your devices and deliver commands after a reconnect",
        retention: "the newest 200 events per device; a session until it expires (at most 7 days by default)",
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
}

/// The inventory as the pages show it.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub categories: &'static [Category],
    pub fields: Vec<FieldRow>,
}

fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Number => "number",
        FieldKind::Integer => "integer",
        FieldKind::Boolean => "boolean",
        FieldKind::String => "string",
    }
}

/// Build the inventory from the code's table and the stored product models.
pub async fn build(db: &Db) -> Result<Inventory> {
    let mut fields = Vec::new();
    for model in db.products().await? {
        for f in &model.fields {
            fields.push(FieldRow {
                product: model.id.to_string(),
                product_name: model.name.clone(),
                name: f.name.clone(),
                kind: kind_name(f.kind),
                unit: f.unit.clone(),
                purpose: f.purpose.clone(),
                personal: f.personal,
                retention_days: f.retention_days.unwrap_or(TELEMETRY_RETENTION_DAYS),
            });
        }
    }
    Ok(Inventory {
        categories: CATEGORIES,
        fields,
    })
}
