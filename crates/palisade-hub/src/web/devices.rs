//! `/api/v1` for devices: enrolment by claim code (public: the code is the
//! credential), product models, the fleet with per-object access (owners see only
//! their own devices, ACC-2), owner claiming by pairing code, revocation that
//! drops the live connection at once (AUTH-10), release by the owner (ACC-3), and
//! commands to a device (ENC-4:
//! sequence-numbered, with an expiry; staff send, staff and the owner read).

use super::AppState;
use super::access::Principal;
use super::error::WebError;
use super::middleware::ClientAddr;
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::commands::{self as cmd, Command, CommandName};
use crate::db::device_admin::ClaimOutcome;
use crate::db::devices::{Device, DeviceStatus, ProductModel};
use crate::db::lifecycle::Releaser;
use crate::devices_lifecycle;
use crate::ids::DeviceId;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The enrolment route. The CSRF middleware exempts exactly this path from the token
/// check (see `middleware::csrf`), so it is named once, here.
pub const ENROL_PATH: &str = "/api/v1/devices/enroll";
/// Largest certificate signing request accepted (PEM).
pub const MAX_CSR_BYTES: usize = 8 * 1024;
/// Largest JSON body of these routes.
const MAX_JSON_BYTES: usize = 16 * 1024;
/// Longest claim or pairing code accepted as typed (dashes and spaces included).
const MAX_CODE_CHARS: usize = 128;

const CLAIM_NOT_VALID: &str = "claim code not valid: mistyped, already used or expired";
const PAIRING_NOT_VALID: &str =
    "pairing code not valid: check the code on the device's label and type it again";

/// Parse a bounded JSON body; the message never echoes what was sent.
pub(crate) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, WebError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(WebError::BadRequest(
            "Send a JSON body with Content-Type: application/json.".into(),
        ));
    }
    if body.len() > MAX_JSON_BYTES {
        return Err(WebError::BadRequest(format!(
            "The request body is larger than {MAX_JSON_BYTES} bytes."
        )));
    }
    serde_json::from_slice(body).map_err(|_| {
        WebError::BadRequest("The request body is not the JSON object this route takes.".into())
    })
}

fn plausible_code(code: &str) -> bool {
    !code.trim().is_empty() && code.chars().count() <= MAX_CODE_CHARS
}

/// A device as the API shows it: what is stored (never the pairing code's digest)
/// and whether it is connected now.
#[derive(Serialize)]
pub struct DeviceView {
    #[serde(flatten)]
    device: Device,
    connected: bool,
    /// The install steps the device reported for offered releases, newest first
    /// (issue 4); only in the single-device view.
    #[serde(skip_serializing_if = "Option::is_none")]
    update: Option<Vec<crate::db::releases::UpdateReport>>,
}

fn view(state: &AppState, device: Device) -> DeviceView {
    DeviceView {
        connected: state.fleet.is_connected(&device.id),
        device,
        update: None,
    }
}

/// A product model with its published security-support end date (SUP-1).
#[derive(Serialize)]
pub struct ProductView {
    #[serde(flatten)]
    model: ProductModel,
    security_updates_until: Option<String>,
}

/// Per-object access (ACC-2): staff see every device, an owner only their own.
pub(crate) fn may_see(p: &Principal, device: &Device) -> bool {
    p.is_staff() || device.owner_id.as_ref() == Some(&p.user.id)
}

/// The device `id` if the caller may see it. Anything else is 404, so the answer
/// does not confirm that another owner's device id exists.
pub(crate) async fn visible_device(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<Device, WebError> {
    let id = DeviceId::parse(id).ok_or(WebError::NotFound)?;
    match state.db.device(&id).await? {
        Some(device) if may_see(p, &device) => Ok(device),
        _ => Err(WebError::NotFound),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    claim_code: String,
    csr_pem: String,
}

#[derive(Serialize)]
pub struct EnrolResponse {
    device_id: DeviceId,
    certificate_pem: String,
    ca_pem: String,
    not_after: i64,
    mqtt_port: u16,
}

/// `POST /api/v1/devices/enroll`: a device trades its single-use claim code and a
/// CSR for its certificate (AUTH-2). Takes no session or cookie: the claim code in
/// the body is the only credential. Failed attempts are throttled per source address.
pub async fn enroll(
    State(state): State<AppState>,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let request: EnrolRequest = json_body(&headers, &body)?;
    if request.csr_pem.len() > MAX_CSR_BYTES {
        return Err(WebError::BadRequest(format!(
            "csr_pem is larger than {MAX_CSR_BYTES} bytes."
        )));
    }
    // Check the code before signing anything, so an invalid code costs no signature.
    let product = if plausible_code(&request.claim_code) {
        state.db.claim_code_product(&request.claim_code).await?
    } else {
        None
    };
    let Some(product) = product else {
        refused(&state, ip, "claim code not valid").await?;
        return Err(WebError::Denied(CLAIM_NOT_VALID.into()));
    };
    let device_id = DeviceId::generate();
    let cert = match state.hub_ca.issue_device_for(
        &request.csr_pem,
        device_id.as_str(),
        state.config.limits.device_cert_lifetime_secs,
    ) {
        Ok(cert) => cert,
        Err(e) => {
            tracing::info!(%ip, "enrolment CSR refused: {e}");
            refused(&state, ip, "certificate signing request not valid").await?;
            return Err(WebError::BadRequest(
                "csr_pem is not a valid PEM certificate signing request signed by the device's key."
                    .into(),
            ));
        }
    };
    // One transaction uses the code up and registers the device: one enrolment wins.
    let Some(device) = state
        .db
        .enroll_device(
            &request.claim_code,
            &device_id,
            &cert.sha256,
            cert.not_after,
        )
        .await?
    else {
        refused(&state, ip, "claim code not valid").await?;
        return Err(WebError::Denied(CLAIM_NOT_VALID.into()));
    };
    accounts::audit(
        &state.db,
        &Actor::anonymous(ip),
        "device.enroll",
        device.id.as_str(),
        Outcome::Success,
        &format!("product {product}; certificate sha256 {}", cert.sha256),
    )
    .await?;
    let body = EnrolResponse {
        device_id: device.id,
        certificate_pem: cert.cert_pem,
        ca_pem: state.hub_ca_pem.to_string(),
        not_after: cert.not_after,
        mqtt_port: state.mqtt_port,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Count a failed attempt from `ip`: once a source is over the per-source limit its
/// failures answer 429. Only failures count, so a factory line enrolling many devices
/// from one address is not slowed, while guessing (which always fails) is.
fn count_failure(state: &AppState, ip: IpAddr) -> Result<(), WebError> {
    state
        .auth
        .attempt_from(ip)
        .map_err(WebError::TooManyRequests)
}

/// Count and record a refused enrolment (never the claim code itself).
async fn refused(state: &AppState, ip: IpAddr, detail: &str) -> Result<(), WebError> {
    count_failure(state, ip)?;
    accounts::audit(
        &state.db,
        &Actor::anonymous(ip),
        "device.enroll",
        "-",
        Outcome::Denied,
        detail,
    )
    .await?;
    Ok(())
}

/// `GET /api/v1/products`: product models and the telemetry each declares (DATA-1).
pub async fn products(
    State(state): State<AppState>,
    _: Principal,
) -> Result<Json<Vec<ProductView>>, WebError> {
    let periods = state.db.support_periods().await?;
    Ok(Json(
        state
            .db
            .products()
            .await?
            .into_iter()
            .map(|model| ProductView {
                security_updates_until: periods
                    .iter()
                    .find(|s| s.product == model.id.as_str())
                    .map(|s| s.security_updates_until.clone()),
                model,
            })
            .collect(),
    ))
}

/// `GET /api/v1/devices`: the whole fleet for staff, an owner's own devices otherwise.
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<DeviceView>>, WebError> {
    let devices = if p.is_staff() {
        state.db.devices().await?
    } else {
        state.db.devices_owned_by(&p.user.id).await?
    };
    Ok(Json(devices.into_iter().map(|d| view(&state, d)).collect()))
}

/// `GET /api/v1/devices/{id}`.
pub async fn show(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, WebError> {
    let device = visible_device(&state, &p, &id).await?;
    let reports = state.db.update_reports(&device.id, 20).await?;
    let mut shown = view(&state, device);
    shown.update = Some(reports);
    Ok(Json(shown))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pairing_code: String,
}

/// `POST /api/v1/devices/claim`: an owner binds a device to their account with the
/// pairing code from its label (ACC-3). A device that already has an owner stays
/// theirs (409, without saying whose).
pub async fn claim(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let request: ClaimRequest = json_body(&headers, &body)?;
    let actor = Actor::user(&p.user, ip);
    let outcome = if plausible_code(&request.pairing_code) {
        state
            .db
            .claim_device(&request.pairing_code, &p.user.id)
            .await?
    } else {
        ClaimOutcome::Unknown
    };
    // Failures count against the source (and answer 429 beyond the limit) before
    // they are recorded, so neither guessing nor the audit log grows unbounded.
    let refuse = async |detail: &str| -> Result<(), WebError> {
        count_failure(&state, ip)?;
        accounts::audit(
            &state.db,
            &actor,
            "device.claim",
            "-",
            Outcome::Denied,
            detail,
        )
        .await?;
        Ok(())
    };
    match outcome {
        ClaimOutcome::Claimed(device) => {
            accounts::audit(
                &state.db,
                &actor,
                "device.claim",
                device.id.as_str(),
                Outcome::Success,
                "claimed",
            )
            .await?;
            Ok((StatusCode::OK, Json(view(&state, device))).into_response())
        }
        ClaimOutcome::AlreadyYours(device) => {
            Ok((StatusCode::OK, Json(view(&state, device))).into_response())
        }
        ClaimOutcome::OwnedByAnother => {
            refuse("device already has an owner").await?;
            Err(WebError::Conflict(
                "This device already belongs to an account and cannot be claimed.".into(),
            ))
        }
        ClaimOutcome::NotEnrolledYet => {
            refuse("device not enrolled yet").await?;
            Err(WebError::Conflict(
                "This device has not connected to the hub yet. Switch it on, wait a minute and try again."
                    .into(),
            ))
        }
        ClaimOutcome::Unknown => {
            refuse("pairing code not valid").await?;
            Err(WebError::Denied(PAIRING_NOT_VALID.into()))
        }
    }
}

/// `POST /api/v1/devices/{id}/revoke` (staff): the device's certificate is no longer
/// accepted and its live connection, if any, drops at once (AUTH-10).
pub async fn revoke(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, WebError> {
    if !p.is_staff() {
        return Err(WebError::Forbidden);
    }
    let device = visible_device(&state, &p, &id).await?;
    revoke_device(&state, &Actor::user(&p.user, ip), &device).await?;
    let device = state
        .db
        .device(&device.id)
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(Json(view(&state, device)))
}

/// Revoke a device (console and API): its certificate is refused from now on, its live
/// connection drops at once (AUTH-10), and the audit entry is written before the answer.
pub(crate) async fn revoke_device(
    state: &AppState,
    actor: &Actor,
    device: &Device,
) -> Result<(), WebError> {
    state
        .db
        .set_device_status(&device.id, DeviceStatus::Revoked)
        .await?;
    let dropped = state.fleet.disconnect(&device.id);
    accounts::audit(
        &state.db,
        actor,
        "device.revoke",
        device.id.as_str(),
        Outcome::Success,
        if dropped {
            "live connection dropped"
        } else {
            "not connected"
        },
    )
    .await?;
    Ok(())
}

/// Release a device from its owner (console and API): the owner, or staff, clears the
/// ownership; the previous owner's telemetry is deleted with it and they lose access at
/// once (ACC-3). The audit entry is written before the answer. False if the device had
/// no owner (or stopped being the caller's) when the release was decided.
pub(crate) async fn release_device(
    state: &AppState,
    p: &Principal,
    actor: &Actor,
    device: &Device,
) -> Result<bool, WebError> {
    let by = if device.owner_id.as_ref() == Some(&p.user.id) {
        Releaser::Owner(&p.user.id)
    } else if p.is_staff() {
        Releaser::Staff
    } else {
        return Err(WebError::NotFound);
    };
    Ok(devices_lifecycle::release(&state.db, actor, &device.id, by)
        .await?
        .is_some())
}

/// `POST /api/v1/devices/{id}/release`: the owner (or staff) gives the device up; the
/// next owner claims it with the pairing code on its label (ACC-3).
pub async fn release(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, WebError> {
    let device = visible_device(&state, &p, &id).await?;
    if !release_device(&state, &p, &Actor::user(&p.user, ip), &device).await? {
        return Err(WebError::Conflict("This device has no owner.".into()));
    }
    let device = state
        .db
        .device(&device.id)
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(Json(view(&state, device)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSwitchRequest {
    field: String,
    enabled: bool,
}

/// Switch an optional telemetry field of `device` on or off (PRIV-3). Only the
/// device's owner may: it is their choice, not the operator's.
pub(crate) async fn switch_field(
    state: &AppState,
    p: &Principal,
    ip: IpAddr,
    device: &Device,
    field: &str,
    enabled: bool,
) -> Result<bool, WebError> {
    if device.owner_id.as_ref() != Some(&p.user.id) {
        return Err(WebError::Denied(
            "Only the device's owner can switch its telemetry fields.".into(),
        ));
    }
    match crate::privacy::fields::switch(
        &state.db,
        &state.fleet,
        &Actor::user(&p.user, ip),
        device,
        field,
        enabled,
    )
    .await?
    {
        Ok(changed) => Ok(changed),
        Err(why) => Err(WebError::BadRequest(format!("Not changed: {why}."))),
    }
}

/// `POST /api/v1/devices/{id}/telemetry-fields` with `{"field", "enabled"}`: the owner
/// switches an optional field on or off; answers every declared field's state.
pub async fn telemetry_fields(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Vec<crate::privacy::fields::FieldState>>, WebError> {
    let device = visible_device(&state, &p, &id).await?;
    let request: FieldSwitchRequest = json_body(&headers, &body)?;
    switch_field(&state, &p, ip, &device, &request.field, request.enabled).await?;
    Ok(Json(
        crate::privacy::fields::states(&state.db, &device).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoUpdateRequest {
    auto_update: crate::updates::auto_update::AutoUpdate,
}

/// The owner switches automatic install of `device` on, off, or postpones it (UPD-3).
/// Only the owner may: staff cannot silently stop a device's security updates.
pub(crate) async fn set_auto_update(
    state: &AppState,
    p: &Principal,
    ip: IpAddr,
    device: &Device,
    choice: crate::updates::auto_update::AutoUpdate,
) -> Result<(), WebError> {
    use crate::updates::auto_update::{AutoUpdate, MAX_POSTPONE_SECS};
    if device.owner_id.as_ref() != Some(&p.user.id) {
        return Err(WebError::Denied(
            "Only the device's owner can switch its automatic updates.".into(),
        ));
    }
    if let AutoUpdate::Postponed { postpone_until } = choice {
        let now = crate::db::now();
        if postpone_until <= now || postpone_until > now + MAX_POSTPONE_SECS {
            return Err(WebError::BadRequest(
                "Postpone to a time in the future, at most a year ahead.".into(),
            ));
        }
    }
    crate::updates::auto_update::set(
        &state.db,
        &state.fleet,
        &Actor::user(&p.user, ip),
        device,
        choice,
    )
    .await?;
    Ok(())
}

/// `POST /api/v1/devices/{id}/auto-update` with `{"auto_update": "on" | "off" |
/// {"postpone_until": UNIX_SECONDS}}`: the owner's switch (UPD-3), with a warning
/// whenever security updates will not install.
pub async fn auto_update(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, WebError> {
    use crate::updates::auto_update::AutoUpdate;
    let device = visible_device(&state, &p, &id).await?;
    let request: AutoUpdateRequest = json_body(&headers, &body)?;
    set_auto_update(&state, &p, ip, &device, request.auto_update).await?;
    let warning = match request.auto_update {
        AutoUpdate::On => None,
        AutoUpdate::Off => Some(
            "Automatic updates are off: security fixes will not be installed on this device until you switch them on again.",
        ),
        AutoUpdate::Postponed { .. } => {
            Some("Automatic updates are postponed: security fixes wait until then.")
        }
    };
    Ok(Json(serde_json::json!({
        "auto_update": request.auto_update,
        "warning": warning,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    name: String,
    #[serde(default)]
    args: Option<serde_json::Value>,
    #[serde(default)]
    ttl_secs: Option<i64>,
}

#[derive(Serialize)]
pub struct CommandCreated {
    seq: u64,
    expires_at: i64,
    /// Handed to the device's live, subscribed connection now (its PUBACK is then
    /// recorded as `delivered_at`); otherwise sent when the device next subscribes.
    delivered: bool,
}

/// Default lifetime of a command.
const DEFAULT_COMMAND_TTL_SECS: i64 = 300;
/// Commands listed per device.
const RECENT_COMMANDS: i64 = 100;

/// `POST /api/v1/devices/{id}/commands` (staff): store a command with the device's
/// next sequence number and an expiry, audit it, and hand it to the live connection.
pub async fn send_command(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    if !p.is_staff() {
        return Err(WebError::Forbidden);
    }
    let request: CommandRequest = json_body(&headers, &body)?;
    let name = CommandName::parse(&request.name)
        .ok_or_else(|| WebError::BadRequest("name must match [a-z][a-z0-9-]{0,31}.".into()))?;
    let args = request
        .args
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if !args.is_object() {
        return Err(WebError::BadRequest("args must be a JSON object.".into()));
    }
    if args.to_string().len() > cmd::MAX_ARGS_BYTES {
        return Err(WebError::BadRequest(format!(
            "args is larger than {} bytes.",
            cmd::MAX_ARGS_BYTES
        )));
    }
    let ttl = request.ttl_secs.unwrap_or(DEFAULT_COMMAND_TTL_SECS);
    if !cmd::TTL_SECS.contains(&ttl) {
        return Err(WebError::BadRequest(format!(
            "ttl_secs must be between {} and {}.",
            cmd::TTL_SECS.start(),
            cmd::TTL_SECS.end()
        )));
    }
    let device = visible_device(&state, &p, &id).await?;
    if device.status != DeviceStatus::Active {
        return Err(WebError::Conflict(
            "This device is not active: it cannot receive commands.".into(),
        ));
    }
    let command = state
        .db
        .create_command(&device.id, &name, &args, ttl, p.user.id.as_str())
        .await?;
    // Recorded before the command leaves the hub (DESIGN.md invariant 9). The
    // arguments are not logged: they are the caller's data.
    accounts::audit(
        &state.db,
        &Actor::user(&p.user, ip),
        "device.command",
        device.id.as_str(),
        Outcome::Success,
        &format!("command {} seq {}", name.as_str(), command.seq),
    )
    .await?;
    let delivered = state.fleet.send_command(&device.id, command.payload());
    let body = CommandCreated {
        seq: command.seq,
        expires_at: command.expires_at,
        delivered,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /api/v1/devices/{id}/commands`: the device's recent commands, newest first,
/// with their status (staff, or the device's owner).
pub async fn list_commands(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vec<Command>>, WebError> {
    let device = visible_device(&state, &p, &id).await?;
    let commands = state
        .db
        .recent_commands(&device.id, RECENT_COMMANDS)
        .await?;
    // An owner sees what was sent during their ownership only (ACC-3).
    let since_ms = owner_view_since_ms(&p, &device);
    Ok(Json(
        commands
            .into_iter()
            .filter(|c| c.created_at.saturating_mul(1000) >= since_ms)
            .collect(),
    ))
}

/// Events stored per device and listed by the API, at most.
const RECENT_EVENTS: i64 = crate::db::device_events::MAX_EVENTS_PER_DEVICE;

/// `GET /api/v1/devices/{id}/events`: the device's stored events (what it reported on
/// `devices/{id}/events`, and will messages of ungraceful disconnects), newest first
/// (staff, or the device's owner).
pub async fn list_events(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vec<crate::db::device_events::DeviceEvent>>, WebError> {
    let device = visible_device(&state, &p, &id).await?;
    Ok(Json(
        state
            .db
            .device_events_since(&device.id, owner_view_since_ms(&p, &device), RECENT_EVENTS)
            .await?,
    ))
}

/// From when (Unix milliseconds) the caller may see a device's history: everything for
/// staff, the start of their ownership for its owner, so nothing of a previous owner's
/// time (or of an unowned gap) is shown to the next one (ACC-3). Records kept in whole
/// seconds are shown only if their second starts at or after it (in doubt, hidden).
pub(crate) fn owner_view_since_ms(p: &Principal, device: &Device) -> i64 {
    if p.is_staff() {
        i64::MIN
    } else {
        device.owned_since_ms.unwrap_or(i64::MAX)
    }
}
