//! Device pages: the fleet (staff) or one's own devices (owners, ACC-2, ACC-5) with
//! claiming by pairing code, and a device's detail page with its declared telemetry
//! (DATA-1, PRIV-3), identity and life (ACC-3, SUP-3), a server-drawn SVG chart, the
//! newest messages and its audit trail. Staff may revoke a device, which drops its live
//! connection at once (AUTH-10); its owner (or staff) may release it for the next owner
//! (ACC-3). A device the caller may not see answers exactly like
//! one that does not exist (404), so ids of other owners' devices are not confirmed.

use super::chart::{self, Chart};
use super::{Ctx, redirect};
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::device_admin::ClaimOutcome;
use crate::db::devices::{Device, DeviceStatus, FieldKind};
use crate::web::AppState;
use crate::web::access::Principal;
use crate::web::devices::{owner_view_since_ms, release_device, revoke_device, visible_device};
use crate::web::error::WebError;
use crate::web::pages::{self, AuditRow, Chrome};
use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use std::collections::HashMap;

/// Longest pairing code accepted as typed (dashes and spaces included).
const MAX_CODE_CHARS: usize = 128;
/// Telemetry messages listed on the detail page.
const RECENT_MESSAGES: usize = 20;
/// Longest payload shown in the message table (characters).
const MAX_PAYLOAD_CHARS: usize = 300;
/// Audit entries shown on the detail page.
const AUDIT_ENTRIES: i64 = 50;

/// The one answer for every failed claim: whether a device exists, is enrolled or has
/// an owner is not revealed.
const CANNOT_CLAIM: &str = "This pairing code cannot be claimed. Check the code on the device's label and type it again; a new device must be switched on and connected before it can be claimed.";

/// A row of the device list.
pub struct DeviceRow {
    pub id: String,
    pub product: String,
    pub status: &'static str,
    pub owner: String,
    pub firmware: String,
    pub last_seen: String,
    pub online: bool,
    pub rejected: i64,
}

#[derive(Template)]
#[template(path = "devices.html")]
pub struct DevicesPage {
    pub c: Chrome,
    pub staff: bool,
    pub q: String,
    pub status: String,
    pub devices: Vec<DeviceRow>,
    pub capped: bool,
}

/// A declared telemetry field, as shown to the owner.
pub struct FieldRow {
    pub name: String,
    pub kind: &'static str,
    pub unit: String,
    pub purpose: String,
    /// The owner may switch it off (PRIV-3).
    pub optional: bool,
    /// Switched on for this device.
    pub enabled: bool,
}

#[derive(Template)]
#[template(path = "device.html")]
pub struct DevicePage {
    pub c: Chrome,
    pub staff: bool,
    pub id: String,
    pub status: &'static str,
    pub revoked: bool,
    pub online: bool,
    pub owner: String,
    pub product_id: String,
    pub model: String,
    pub hardware_revision: String,
    pub fields: Vec<FieldRow>,
    /// The caller owns the device, so may switch its optional fields (PRIV-3).
    pub is_owner: bool,
    /// The model's sensing capabilities (PRIV-4): (label, purpose).
    pub sensing: Vec<(String, String)>,
    pub firmware: String,
    pub agent: String,
    /// The caller may release the device (its owner, or staff while it has one).
    pub releasable: bool,
    pub cert_sha256: String,
    pub cert_expiry: String,
    pub first_seen: String,
    pub last_seen: String,
    pub rejected: i64,
    pub charts: Vec<Chart>,
    pub chart_width: String,
    pub chart_height: String,
    pub messages: Vec<(String, String)>,
    /// Stored device events: (time, name, source, document shortened).
    pub events: Vec<(String, String, String, String)>,
    /// Reported install steps (issue 4): (time, version, step, reason, downtime).
    pub updates: Vec<(String, String, String, String, String)>,
    pub audit: Vec<AuditRow>,
    /// The owner's automatic-install switch (UPD-3), as text.
    pub auto_update: String,
    /// Automatic install is not simply on: show the warning.
    pub auto_update_warning: bool,
    /// Known vulnerabilities of the firmware it runs (VULN-5).
    pub vulns: Vec<VulnRow>,
    /// Whether an SBOM of that firmware is stored (else components cannot be matched).
    pub vuln_sbom: bool,
}

/// A known vulnerability of a device's firmware, as its page shows it.
pub struct VulnRow {
    /// Advisory id (`PAL-…`) or OSV record id.
    pub id: String,
    /// The public advisory page; empty for an OSV record.
    pub link: String,
    pub severity: String,
    pub summary: String,
    /// What is affected: the firmware itself, or a component and its version.
    pub component: String,
    /// The version that fixes it, or empty.
    pub fixed: String,
}

/// The rows of the device page's vulnerability table, from the one per-device query
/// the API also answers with (`vuln::matching::for_device`).
fn vuln_rows(v: crate::vuln::matching::DeviceVulnerabilities) -> Vec<VulnRow> {
    use crate::vuln::cvss;
    let mut rows: Vec<VulnRow> = v
        .advisories
        .into_iter()
        .map(|a| VulnRow {
            link: format!("/advisories/{}", a.id),
            severity: match (a.severity.as_str(), a.score_tenths) {
                ("", _) => "not scored".into(),
                (s, Some(t)) => format!("{s} {}", cvss::fmt_score(t)),
                (s, None) => s.to_owned(),
            },
            summary: match a.cve {
                Some(c) => format!("{} ({c})", a.summary),
                None => a.summary,
            },
            component: format!("firmware {}", v.firmware_version),
            fixed: a.fixed.unwrap_or_default(),
            id: a.id,
        })
        .collect();
    rows.extend(v.vulnerabilities.into_iter().map(|f| VulnRow {
        severity: match cvss::parse(&f.vulnerability.severity) {
            Ok(c) => format!(
                "{} {}",
                c.severity.as_str(),
                cvss::fmt_score(c.score_tenths)
            ),
            Err(_) if f.vulnerability.severity.is_empty() => "not scored".into(),
            Err(_) => f.vulnerability.severity.clone(),
        },
        summary: if f.vulnerability.aliases.is_empty() {
            f.vulnerability.summary
        } else {
            format!(
                "{} ({})",
                f.vulnerability.summary,
                f.vulnerability.aliases.join(", ")
            )
        },
        component: format!("{} {}", f.component, f.version),
        fixed: f.fixed.unwrap_or_default(),
        link: String::new(),
        id: f.vulnerability.id,
    }));
    rows
}

fn parse_status(s: &str) -> Option<DeviceStatus> {
    match s {
        "active" => Some(DeviceStatus::Active),
        "revoked" => Some(DeviceStatus::Revoked),
        "decommissioned" => Some(DeviceStatus::Decommissioned),
        _ => None,
    }
}

fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Number => "number",
        FieldKind::Integer => "integer",
        FieldKind::Boolean => "boolean",
        FieldKind::String => "string",
    }
}

fn last_seen(device: &Device) -> String {
    device
        .last_seen_at
        .map_or_else(|| "never".into(), pages::fmt_time)
}

#[derive(Deserialize)]
pub struct FleetQuery {
    q: Option<String>,
    status: Option<String>,
    done: Option<String>,
}

async fn list_view(
    state: &AppState,
    ctx: &Ctx,
    query: &FleetQuery,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, WebError> {
    let me = ctx.me()?;
    let staff = me.is_staff();
    let q = crate::db::device_views::normalize_search(query.q.as_deref().unwrap_or(""));
    let status = query.status.as_deref().and_then(parse_status);
    let devices = if staff {
        state.db.fleet_devices(&q, status).await?
    } else {
        // An owner's own devices only (ACC-2), filtered the same way.
        state
            .db
            .devices_owned_by(&me.user.id)
            .await?
            .into_iter()
            .filter(|d| status.is_none_or(|s| d.status == s))
            .filter(|d| {
                q.is_empty()
                    || d.id.as_str().to_lowercase().contains(&q)
                    || d.product_id.as_str().to_lowercase().contains(&q)
            })
            .collect()
    };
    let owners: HashMap<String, String> = if staff {
        state
            .db
            .users()
            .await?
            .into_iter()
            .map(|u| (u.id.to_string(), u.username.to_string()))
            .collect()
    } else {
        HashMap::new()
    };
    let capped = staff && devices.len() as i64 >= crate::db::device_views::MAX_FLEET_ROWS;
    let rows = devices
        .into_iter()
        .map(|d| DeviceRow {
            id: d.id.to_string(),
            product: d.product_id.to_string(),
            status: d.status.as_str(),
            owner: d.owner_id.as_ref().map_or_else(
                || "—".into(),
                |o| {
                    owners
                        .get(o.as_str())
                        .cloned()
                        .unwrap_or_else(|| "?".into())
                },
            ),
            firmware: d.firmware_version.clone(),
            last_seen: last_seen(&d),
            online: state.fleet.is_connected(&d.id),
            rejected: d.rejected_messages,
        })
        .collect();
    let mut c = ctx.chrome(state, "Devices");
    c.notice = notice;
    c.error = error;
    pages::render(DevicesPage {
        c,
        staff,
        q,
        status: status.map_or("", DeviceStatus::as_str).to_owned(),
        devices: rows,
        capped,
    })
}

/// `GET /devices`: the fleet for staff (search by id or product, filter by status),
/// an owner's own devices otherwise, with the claim form.
pub async fn list(
    State(state): State<AppState>,
    _: Principal,
    ctx: Ctx,
    Query(query): Query<FleetQuery>,
) -> Result<Response, WebError> {
    let notice = (query.done.as_deref() == Some("released")).then(|| {
        "The device is released: it is no longer in your account and the data it sent was deleted.".to_owned()
    });
    list_view(&state, &ctx, &query, notice, None).await
}

#[derive(Deserialize)]
pub struct ClaimForm {
    pairing_code: String,
}

/// `POST /devices/claim`: bind a device to the signed-in account with the pairing code
/// from its label (ACC-3). Every attempt counts against the source address, so codes
/// cannot be guessed at speed; a device with an owner stays theirs.
pub async fn claim(
    State(state): State<AppState>,
    p: Principal,
    ctx: Ctx,
    Form(form): Form<ClaimForm>,
) -> Result<Response, WebError> {
    state
        .auth
        .attempt_from(ctx.ip)
        .map_err(WebError::TooManyRequests)?;
    let code = form.pairing_code.trim();
    let outcome = if code.is_empty() || code.chars().count() > MAX_CODE_CHARS {
        ClaimOutcome::Unknown
    } else {
        state.db.claim_device(code, &p.user.id).await?
    };
    let actor = Actor::user(&p.user, ctx.ip);
    let denied = match outcome {
        ClaimOutcome::Claimed(device) => {
            accounts::audit(
                &state.db,
                &actor,
                "device.claim",
                device.id.as_str(),
                Outcome::Success,
                "claimed in the console",
            )
            .await?;
            return Ok(redirect(&format!("/devices/{}?done=claimed", device.id)));
        }
        ClaimOutcome::AlreadyYours(device) => {
            return Ok(redirect(&format!("/devices/{}?done=yours", device.id)));
        }
        ClaimOutcome::OwnedByAnother => "device already has an owner",
        ClaimOutcome::NotEnrolledYet => "device not enrolled yet",
        ClaimOutcome::Unknown => "pairing code not valid",
    };
    accounts::audit(
        &state.db,
        &actor,
        "device.claim",
        "-",
        Outcome::Denied,
        denied,
    )
    .await?;
    let query = FleetQuery {
        q: None,
        status: None,
        done: None,
    };
    list_view(&state, &ctx, &query, None, Some(CANNOT_CLAIM.into())).await
}

#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// `GET /devices/{id}`: one device, if the caller may see it.
pub async fn detail(
    State(state): State<AppState>,
    p: Principal,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, WebError> {
    let device = visible_device(&state, &p, &id).await?;
    let staff = p.is_staff();
    let product = state.db.product(&device.product_id).await?;
    let (model, hardware_revision, specs) = product.map_or_else(
        || ("(unknown model)".to_owned(), "-".to_owned(), Vec::new()),
        |m| (m.name, m.hardware_revision, m.fields),
    );
    // An owner sees only what arrived, and what happened, since they claimed the
    // device: nothing of a previous owner's time (ACC-3).
    let since_ms = owner_view_since_ms(&p, &device);
    let samples = if staff {
        state.db.telemetry(&device.id, chart::MAX_SAMPLES).await?
    } else {
        state
            .db
            .telemetry_since(&device.id, since_ms, chart::MAX_SAMPLES)
            .await?
    };
    let charts = chart::charts(&specs, &samples, pages::fmt_time);
    let messages = samples
        .iter()
        .take(RECENT_MESSAGES)
        .map(|(at, payload)| {
            let mut shown: String = payload.chars().take(MAX_PAYLOAD_CHARS).collect();
            if payload.chars().count() > MAX_PAYLOAD_CHARS {
                shown.push('…');
            }
            (pages::fmt_time(at.div_euclid(1000)), shown)
        })
        .collect();
    let events = state
        .db
        .device_events_since(&device.id, since_ms, RECENT_MESSAGES as i64)
        .await?
        .into_iter()
        .map(|e| {
            let doc = e.payload.to_string();
            let mut shown: String = doc.chars().take(MAX_PAYLOAD_CHARS).collect();
            if doc.chars().count() > MAX_PAYLOAD_CHARS {
                shown.push('…');
            }
            (
                pages::fmt_time(e.received_at_ms.div_euclid(1000)),
                e.name,
                e.source,
                shown,
            )
        })
        .collect();
    let entries = state
        .db
        .audit_entries_for_target(device.id.as_str(), AUDIT_ENTRIES)
        .await?;
    // For an owner, the ownership starts at the newest successful claim (entries are in
    // append order, so this also separates a release and a claim in the same second);
    // if that claim is older than the page, every entry shown is newer than it.
    let first_seq = if staff {
        i64::MIN
    } else {
        entries
            .iter()
            .filter(|e| e.action == "device.claim" && e.outcome == "success")
            .map(|e| e.seq)
            .max()
            .unwrap_or(i64::MIN)
    };
    let audit = entries
        .into_iter()
        .filter(|e| e.at >= since_ms.div_euclid(1000) && e.seq >= first_seq)
        .map(|e| AuditRow {
            seq: e.seq,
            at: pages::fmt_time(e.at),
            actor: e.actor,
            // Where staff acted from is theirs to know, not the owner's.
            source: if staff { e.source } else { String::new() },
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            detail: e.detail,
        })
        .collect();
    let owner = match (&device.owner_id, staff) {
        (None, _) => "no owner yet".to_owned(),
        (Some(o), true) => match state.db.user(o).await? {
            Some(u) => u.username.to_string(),
            None => "?".into(),
        },
        (Some(_), false) => p.user.username.to_string(),
    };
    let notice = match done.done.as_deref() {
        Some("claimed") => Some("The device is now yours."),
        Some("yours") => Some("This device is already yours."),
        Some("revoked") => Some("The device is revoked; its connection was dropped."),
        Some("released") => Some(
            "The device is released: it has no owner and its stored data was deleted. The next owner claims it with the pairing code on its label.",
        ),
        Some("field-off") => Some(
            "The field is switched off: the hub stores none of it from now on, and the device was told to stop sending it.",
        ),
        Some("field-on") => Some("The field is switched on again."),
        Some("auto-update-on") => Some("Automatic updates are on."),
        Some("auto-update-off") => Some(
            "Automatic updates are OFF: security fixes will not be installed on this device until you switch them on again.",
        ),
        Some("auto-update-postpone") => {
            Some("Automatic updates are postponed: security fixes wait until the date you chose.")
        }
        _ => None,
    };
    let disabled = state.db.disabled_fields(&device.id).await?;
    let sensing = state
        .db
        .product_sensing(&device.product_id)
        .await?
        .into_iter()
        .map(|s| (s.capability.label().to_owned(), s.purpose))
        .collect();
    let is_owner = device.owner_id.as_ref() == Some(&p.user.id);
    let known = crate::vuln::matching::for_device(&state.db, &device).await?;
    let vuln_sbom = known.sbom;
    let vulns = vuln_rows(known);
    let choice = state.db.auto_update(&device.id).await?;
    let auto_update_warning = matches!(
        choice,
        Some(crate::updates::auto_update::AutoUpdate::Off)
            | Some(crate::updates::auto_update::AutoUpdate::Postponed { .. })
    );
    let auto_update = choice.map_or_else(|| "on (default)".to_owned(), |c| c.describe());
    let mut c = ctx.chrome(&state, &format!("Device {}", device.id));
    c.notice = notice.map(str::to_owned);
    pages::render(DevicePage {
        c,
        staff,
        id: device.id.to_string(),
        status: device.status.as_str(),
        revoked: device.status == DeviceStatus::Revoked,
        online: state.fleet.is_connected(&device.id),
        owner,
        product_id: device.product_id.to_string(),
        model,
        hardware_revision,
        fields: specs
            .into_iter()
            .map(|f| FieldRow {
                enabled: !disabled.contains(&f.name),
                optional: f.optional,
                name: f.name,
                kind: kind_name(f.kind),
                unit: f.unit,
                purpose: f.purpose,
            })
            .collect(),
        is_owner,
        sensing,
        firmware: if device.firmware_version.is_empty() {
            "unknown".into()
        } else {
            device.firmware_version.clone()
        },
        agent: if device.agent_version.is_empty() {
            "unknown".into()
        } else {
            device.agent_version.clone()
        },
        releasable: device.owner_id.is_some(),
        cert_sha256: device.cert_sha256.clone(),
        cert_expiry: pages::fmt_time(device.cert_not_after),
        first_seen: pages::fmt_time(device.created_at),
        last_seen: last_seen(&device),
        rejected: device.rejected_messages,
        charts,
        chart_width: format!("{:.0}", chart::WIDTH),
        chart_height: format!("{:.0}", chart::HEIGHT),
        messages,
        events,
        updates: state
            .db
            .update_reports(&device.id, 20)
            .await?
            .into_iter()
            .map(|r| {
                (
                    pages::fmt_time(r.at_ms / 1000),
                    r.version,
                    r.step,
                    r.reason,
                    r.downtime_ms.map(|d| format!("{d} ms")).unwrap_or_default(),
                )
            })
            .collect(),
        audit,
        vulns,
        vuln_sbom,
        auto_update,
        auto_update_warning,
    })
}

#[derive(Deserialize)]
pub struct FieldSwitch {
    field: String,
    /// "on" or "off".
    state: String,
}

/// `POST /devices/{id}/telemetry-fields`: the owner switches an optional field on or
/// off (PRIV-3); the hub stops storing it at once and tells the device.
pub async fn switch_field(
    State(state): State<AppState>,
    p: Principal,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<FieldSwitch>,
) -> Result<Response, WebError> {
    let device = visible_device(&state, &p, &id).await?;
    let enabled = match form.state.as_str() {
        "on" => true,
        "off" => false,
        _ => return Err(WebError::BadRequest("Choose on or off.".into())),
    };
    crate::web::devices::switch_field(&state, &p, ctx.ip, &device, &form.field, enabled).await?;
    Ok(redirect(&format!(
        "/devices/{}?done=field-{}",
        device.id, form.state
    )))
}

#[derive(Deserialize)]
pub struct AutoUpdateForm {
    /// "on", "off" or "postpone".
    state: String,
    /// For "postpone": YYYY-MM-DD (UTC midnight).
    #[serde(default)]
    until: String,
}

/// `POST /devices/{id}/auto-update`: the owner switches automatic install on, off, or
/// postpones it (UPD-3).
pub async fn auto_update(
    State(state): State<AppState>,
    p: Principal,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<AutoUpdateForm>,
) -> Result<Response, WebError> {
    use crate::updates::auto_update::AutoUpdate;
    let device = visible_device(&state, &p, &id).await?;
    let choice = match form.state.as_str() {
        "on" => AutoUpdate::On,
        "off" => AutoUpdate::Off,
        "postpone" => {
            let date = time::Date::parse(
                form.until.trim(),
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map_err(|_| WebError::BadRequest("Give the date as YYYY-MM-DD.".into()))?;
            AutoUpdate::Postponed {
                postpone_until: date.midnight().assume_utc().unix_timestamp(),
            }
        }
        _ => return Err(WebError::BadRequest("Choose on, off or postpone.".into())),
    };
    crate::web::devices::set_auto_update(&state, &p, ctx.ip, &device, choice).await?;
    Ok(redirect(&format!(
        "/devices/{}?done=auto-update-{}",
        device.id, form.state
    )))
}

/// `POST /devices/{id}/revoke` (staff): the certificate is no longer accepted and the
/// live connection, if any, drops at once (AUTH-10).
pub async fn revoke(
    State(state): State<AppState>,
    p: Principal,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    if !p.is_staff() {
        return Err(WebError::Forbidden);
    }
    let device = visible_device(&state, &p, &id).await?;
    revoke_device(&state, &Actor::user(&p.user, ctx.ip), &device).await?;
    Ok(redirect(&format!("/devices/{}?done=revoked", device.id)))
}

/// `POST /devices/{id}/release`: the owner (or staff) gives the device up. The owner
/// loses access at once (their next request for it is 404) and the telemetry of their
/// ownership is deleted (ACC-3).
pub async fn release(
    State(state): State<AppState>,
    p: Principal,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let device = visible_device(&state, &p, &id).await?;
    let actor = Actor::user(&p.user, ctx.ip);
    if !release_device(&state, &p, &actor, &device).await? {
        return Err(WebError::Conflict("This device has no owner.".into()));
    }
    Ok(if p.is_staff() {
        redirect(&format!("/devices/{}?done=released", device.id))
    } else {
        redirect("/devices?done=released")
    })
}
