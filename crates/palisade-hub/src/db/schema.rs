//! Embedded, forward-only schema migrations. Written by hand rather than with
//! `sqlx::migrate!` because that macro needs sqlx's proc-macro feature, which doubles
//! the release build of SQLite and the TLS stack on our 2-core machine; the whole
//! mechanism is a version table and a list.

use super::{Backend, Db, now};
use crate::error::{Error, Result};
use sqlx::Row;

/// Each migration is applied once, in order, inside a transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "accounts, sessions, audit, outbox", V1),
    (2, "product models, claim codes, devices, telemetry", V2),
    (3, "commands to devices", V3),
    (
        4,
        "certificate renewal, device events, persistent MQTT sessions",
        V4,
    ),
    (5, "device agent version and ownership start", V5),
    (6, "vulnerability reports and their messages", V6),
    (7, "privacy policy versions, acceptances, consents", V7),
    (8, "releases, update reports, support periods", V8),
    (
        9,
        "offline vulnerability database, SBOMs and their components",
        V9,
    ),
    (
        10,
        "advisories, affected ranges, owner notices",
        super::advisories::SCHEMA_V10,
    ),
    (
        11,
        "retention runs, audit checkpoint, optional telemetry fields, sensing capabilities",
        V11,
    ),
    (12, "recent re-authentication of a session", V12),
    (13, "staged rollouts and the devices they admitted", V13),
    (14, "the owner's automatic-install switch per device", V14),
    (
        15,
        "actively exploited vulnerabilities and their CRA reports",
        V15,
    ),
];

/// The newest schema this binary understands.
pub const LATEST_VERSION: i64 = 15;

/// How many migrations there are (versions may have gaps while branches are merged).
pub const MIGRATION_COUNT: i64 = MIGRATIONS.len() as i64;

// Issue 4: releases (the TUF metadata and images live under DATA_DIR/tuf), the
// install steps devices report, and the published security-support end dates.
// update_reports has no foreign key to devices so device deletion stays one statement
// per table (deleting a device must also delete its reports).
const V8: &str = r#"
CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    product_id TEXT NOT NULL REFERENCES product_models(id),
    version TEXT NOT NULL,
    major BIGINT NOT NULL,
    minor BIGINT NOT NULL,
    patch BIGINT NOT NULL,
    target_name TEXT NOT NULL,
    length BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    security BIGINT NOT NULL,
    notes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (product_id, version)
);
CREATE TABLE update_reports (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    release_id TEXT NOT NULL,
    version TEXT NOT NULL,
    step TEXT NOT NULL,
    reason TEXT NOT NULL,
    downtime_ms BIGINT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX update_reports_device ON update_reports (device_id, at_ms);
CREATE TABLE support_periods (
    product_id TEXT PRIMARY KEY REFERENCES product_models(id),
    until_date TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    notice_sent_at BIGINT NOT NULL
);
"#;

const V1: &str = r#"
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    status TEXT NOT NULL,
    password_hash TEXT,
    totp_secret TEXT,
    totp_pending TEXT,
    totp_last_step BIGINT NOT NULL DEFAULT 0,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0,
    hard_locked BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT
);
CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    source TEXT NOT NULL,
    user_agent TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE TABLE setup_codes (
    code_hash TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE TABLE one_time_tokens (
    token_hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    category TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    sent_at BIGINT,
    last_error TEXT
);
"#;

const V2: &str = r#"
CREATE TABLE product_models (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hardware_revision TEXT NOT NULL,
    fields TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE claim_codes (
    code_hash TEXT PRIMARY KEY,
    product_id TEXT NOT NULL REFERENCES product_models(id),
    pairing_code_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    device_id TEXT
);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    product_id TEXT NOT NULL REFERENCES product_models(id),
    status TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL UNIQUE,
    cert_not_after BIGINT NOT NULL,
    pairing_code_hash TEXT NOT NULL UNIQUE,
    owner_id TEXT REFERENCES users(id) ON DELETE SET NULL,
    firmware_version TEXT NOT NULL DEFAULT '',
    rejected_messages BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT
);
CREATE INDEX devices_owner ON devices (owner_id);
CREATE TABLE telemetry (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    received_at_ms BIGINT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX telemetry_device_time ON telemetry (device_id, received_at_ms);
"#;

const V3: &str = r#"
CREATE TABLE commands (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    delivered_at BIGINT,
    result TEXT,
    reason TEXT,
    completed_at BIGINT,
    PRIMARY KEY (device_id, seq)
);
"#;

/// Vulnerability reports (VULN-1, VULN-3). Absent values are '' or -1 rather than
/// NULL, so every column decodes the same way on both engines.
const V6: &str = r#"
CREATE TABLE vuln_reports (
    id TEXT PRIMARY KEY,
    status_hash TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    reporter_name TEXT NOT NULL,
    reporter_email TEXT NOT NULL,
    product TEXT NOT NULL,
    source_key TEXT NOT NULL,
    state TEXT NOT NULL,
    cvss_vector TEXT NOT NULL,
    cvss_score BIGINT NOT NULL,
    affected TEXT NOT NULL,
    assignee_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    last_update_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX vuln_reports_source ON vuln_reports (source_key, received_at);
CREATE INDEX vuln_reports_received ON vuln_reports (received_at);
CREATE TABLE report_messages (
    report_id TEXT NOT NULL REFERENCES vuln_reports(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    author TEXT NOT NULL,
    internal BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (report_id, seq)
);
"#;

const V7: &str = r#"
CREATE TABLE privacy_policies (
    version BIGINT PRIMARY KEY,
    body TEXT NOT NULL,
    substantive BIGINT NOT NULL,
    summary TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    published_by TEXT NOT NULL
);
CREATE TABLE policy_acceptances (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    accepted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE consents (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    granted BIGINT NOT NULL,
    changed_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, purpose)
);
"#;

/// DATA-2: what each retention run deleted (counts only), and the audit checkpoint:
/// the sequence number and hash of the last audit entry the job pruned, so the chain
/// that remains still verifies from there (see `audit.rs`). PRIV-3: the optional
/// telemetry fields an owner switched off, per device (a row means "off"). PRIV-4:
/// each product model's sensing capabilities with their purpose.
const V11: &str = r#"
CREATE TABLE retention_runs (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    counts TEXT NOT NULL,
    error TEXT NOT NULL
);
CREATE INDEX retention_runs_started ON retention_runs (started_at);
CREATE TABLE audit_checkpoint (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    pruned_at BIGINT NOT NULL
);
INSERT INTO audit_checkpoint (id, seq, hash, pruned_at) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0);
CREATE TABLE device_field_settings (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    field TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, field)
);
CREATE TABLE product_sensing (
    product_id TEXT NOT NULL REFERENCES product_models(id) ON DELETE CASCADE,
    capability TEXT NOT NULL,
    purpose TEXT NOT NULL,
    PRIMARY KEY (product_id, capability)
);
CREATE INDEX device_events_time ON device_events (received_at_ms);
CREATE INDEX outbox_sent ON outbox (sent_at);
"#;

// Issue 4: staged rollouts (docs/updates.md). At most one unfinished rollout per model,
// enforced by the partial unique index (both engines support it), so two operators
// racing cannot start two. `rollout_targets` is the optional device list (empty: the
// whole model); `rollout_devices` the devices admitted, with the stage that admitted
// them and the last step each reported for the rollout's release. `accepted_failures`
// counts failures an operator accepted when resuming a halted rollout.
const V13: &str = r#"
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    release_id TEXT NOT NULL REFERENCES releases(id),
    product_id TEXT NOT NULL,
    state TEXT NOT NULL,
    stages TEXT NOT NULL,
    stage BIGINT NOT NULL,
    stage_started_at BIGINT NOT NULL,
    soak_minutes BIGINT NOT NULL,
    failure_threshold_pct BIGINT NOT NULL,
    accepted_failures BIGINT NOT NULL,
    halted_reason TEXT NOT NULL,
    replaces TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX rollouts_one_unfinished ON rollouts (product_id)
    WHERE state IN ('running', 'paused', 'halted');
CREATE TABLE rollout_targets (
    rollout_id TEXT NOT NULL REFERENCES rollouts(id),
    device_id TEXT NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE TABLE rollout_devices (
    rollout_id TEXT NOT NULL REFERENCES rollouts(id),
    device_id TEXT NOT NULL,
    stage BIGINT NOT NULL,
    step TEXT NOT NULL,
    reason TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE INDEX rollout_devices_device ON rollout_devices (device_id);
"#;

// The owner's automatic-install switch (UPD-3): mode 'on', 'off' or 'postpone' (until
// `postpone_until`, Unix seconds); no row: never set by the owner in the console.
const V14: &str = r#"
CREATE TABLE device_update_policy (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    mode TEXT NOT NULL,
    postpone_until BIGINT NOT NULL DEFAULT 0,
    changed_at BIGINT NOT NULL
);
"#;

/// When the session's holder last typed their password (and second factor) again: an
/// export or deletion of the account needs it within the last few minutes (DATA-3,
/// DATA-4; see `web::reauth`). 0 = never.
const V12: &str = r#"
ALTER TABLE sessions ADD COLUMN reauth_at BIGINT NOT NULL DEFAULT 0;
"#;

/// VULN-7 (CRA Art. 14): when staff learnt a reported vulnerability is actively
/// exploited, when the report first reached `fixed`, and when each of the three reports
/// to the authorities was sent (the references are internal notes). 0 = not (yet).
const V15: &str = r#"
ALTER TABLE vuln_reports ADD COLUMN exploited_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE vuln_reports ADD COLUMN fixed_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE vuln_reports ADD COLUMN cra_early_warning_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE vuln_reports ADD COLUMN cra_notification_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE vuln_reports ADD COLUMN cra_final_report_at BIGINT NOT NULL DEFAULT 0;
"#;

// `previous_cert_sha256`: the certificate a renewal replaced, still accepted until the
// device first connects with the new one (no lock-out if the device crashes before it
// has stored the new certificate). `cert_issued_at`: when the current certificate was
// issued (renewal rate limit); 0 for certificates issued at enrolment (`created_at`).
const V4: &str = r#"
ALTER TABLE devices ADD COLUMN previous_cert_sha256 TEXT;
ALTER TABLE devices ADD COLUMN cert_issued_at BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX devices_previous_cert ON devices (previous_cert_sha256);
CREATE TABLE device_events (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    received_at_ms BIGINT NOT NULL,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX device_events_device_time ON device_events (device_id, received_at_ms);
CREATE TABLE mqtt_sessions (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    subscriptions TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX mqtt_sessions_expiry ON mqtt_sessions (expires_at);
"#;

/// The agent's own version beside the maker's firmware version (SUP-3), and when the
/// current owner claimed the device: an owner sees only what the device sent, and what
/// was done to it, since then (ACC-3). Owned devices get their enrolment time.
const V5: &str = r#"
ALTER TABLE devices ADD COLUMN agent_version TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN owned_since_ms BIGINT;
UPDATE devices SET owned_since_ms = created_at * 1000 WHERE owner_id IS NOT NULL;
"#;

/// The offline vulnerability database (VULN-4): OSV records, and their affected packages
/// indexed by `pkg_key` (ecosystem|name, normalised); SBOMs per (product model, version)
/// with their components indexed the same way. Keyed by the model and version strings,
/// not by a release row, so an SBOM can exist before or without a release.
const V9: &str = r#"
CREATE TABLE vuln_records (
    id TEXT PRIMARY KEY,
    modified BIGINT NOT NULL,
    published BIGINT NOT NULL,
    withdrawn BIGINT NOT NULL,
    aliases TEXT NOT NULL,
    summary TEXT NOT NULL,
    severity TEXT NOT NULL,
    imported_at BIGINT NOT NULL
);
CREATE TABLE vuln_affected (
    record_id TEXT NOT NULL REFERENCES vuln_records(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    ecosystem TEXT NOT NULL,
    name TEXT NOT NULL,
    pkg_key TEXT NOT NULL,
    affects TEXT NOT NULL,
    PRIMARY KEY (record_id, seq)
);
CREATE INDEX vuln_affected_pkg ON vuln_affected (pkg_key);
CREATE TABLE sboms (
    product_id TEXT NOT NULL,
    version TEXT NOT NULL,
    format TEXT NOT NULL,
    spec_version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    components BIGINT NOT NULL,
    uploaded_by TEXT NOT NULL,
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (product_id, version)
);
CREATE TABLE sbom_components (
    product_id TEXT NOT NULL,
    version TEXT NOT NULL,
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    component_version TEXT NOT NULL,
    purl TEXT NOT NULL,
    ecosystem TEXT NOT NULL,
    pkg_key TEXT NOT NULL,
    PRIMARY KEY (product_id, version, seq)
);
CREATE INDEX sbom_components_pkg ON sbom_components (pkg_key);
CREATE INDEX vuln_devices_model_firmware ON devices (product_id, firmware_version);
"#;

pub(super) async fn current_version(db: &Db) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get::<i64, _>("v")?)
}

/// PostgreSQL advisory lock key serialising the creation of `schema_migrations`
/// ("palisade" in ASCII).
const MIGRATION_LOCK: i64 = 0x7061_6c69_7361_6465;

pub(super) async fn migrate(db: &Db) -> Result<()> {
    let mut tx = db.pool().begin().await?;
    if db.backend() == Backend::Postgres {
        // Concurrent CREATE TABLE IF NOT EXISTS races in PostgreSQL's catalog (one
        // node fails with a duplicate pg_type key), and the table lock below needs
        // the table first: serialise on an advisory lock held until commit. Selected
        // through a constant because the Any driver cannot decode `void`.
        sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut *tx)
            .await?;
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let found = current_version(db).await?;
    if found > LATEST_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: LATEST_VERSION,
        });
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > found) {
        let mut tx = db.pool().begin().await?;
        if db.backend() == Backend::Postgres {
            // Two hub nodes starting together must not both migrate.
            sqlx::raw_sql("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        let already: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        if already == 0 {
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)")
                .bind(*version)
                .bind(*description)
                .bind(now())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        tracing::info!(version, description, "database schema migrated");
    }
    Ok(())
}
