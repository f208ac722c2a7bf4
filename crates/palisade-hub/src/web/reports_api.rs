//! `/api/v1/reports`: vulnerability-report triage for scripts (staff only, VULN-3).
//! The same operations as the console, with the policy deadlines and what is overdue.

use super::AppState;
use super::access::Principal;
use super::devices::json_body;
use super::error::WebError;
use super::middleware::ClientAddr;
use crate::accounts::Actor;
use crate::db::now;
use crate::db::reports::{Message, Report, ReportId};
use crate::ids::UserId;
use crate::vuln::intake;
use crate::vuln::triage::{self, Deadlines, Kind, State as ReportState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

/// Most reports in one answer.
const LIST_LIMIT: i64 = 500;

/// A report with its deadlines under the policy.
#[derive(Serialize)]
pub struct ReportView {
    #[serde(flatten)]
    report: Report,
    deadlines: Deadlines,
    overdue: Vec<Kind>,
    next_states: Vec<ReportState>,
}

fn view(state: &AppState, report: Report) -> ReportView {
    let deadlines = triage::deadlines(&state.config.disclosure, &report.timeline());
    ReportView {
        overdue: deadlines.overdue(now()),
        next_states: report.state.next().to_vec(),
        deadlines,
        report,
    }
}

async fn load(state: &AppState, id: &str) -> Result<Report, WebError> {
    let id = ReportId::parse(id).ok_or(WebError::NotFound)?;
    state.db.report(&id).await?.ok_or(WebError::NotFound)
}

/// `GET /api/v1/reports`.
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<ReportView>>, WebError> {
    p.require_staff()?;
    let reports = state.db.reports(LIST_LIMIT).await?;
    Ok(Json(reports.into_iter().map(|r| view(&state, r)).collect()))
}

#[derive(Serialize)]
pub struct ReportDetail {
    #[serde(flatten)]
    view: ReportView,
    /// Every message, internal notes included (`internal: true`).
    messages: Vec<Message>,
}

async fn detail(state: &AppState, id: &str) -> Result<Json<ReportDetail>, WebError> {
    let report = load(state, id).await?;
    let messages = state.db.report_messages(&report.id, true).await?;
    Ok(Json(ReportDetail {
        view: view(state, report),
        messages,
    }))
}

/// `GET /api/v1/reports/{id}`.
pub async fn show(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<ReportDetail>, WebError> {
    p.require_staff()?;
    detail(&state, &id).await
}

#[derive(Deserialize)]
struct StateRequest {
    state: String,
}

/// `POST /api/v1/reports/{id}/state`.
pub async fn set_state(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReportDetail>, WebError> {
    p.require_staff()?;
    let request: StateRequest = json_body(&headers, &body)?;
    let report = load(&state, &id).await?;
    let to = ReportState::parse(&request.state)
        .ok_or_else(|| WebError::BadRequest("Unknown state.".into()))?;
    intake::change_state(
        &state.db,
        &state.config,
        &Actor::user(&p.user, ip),
        &report,
        to,
    )
    .await?;
    detail(&state, &id).await
}

#[derive(Deserialize)]
struct AssessmentRequest {
    #[serde(default)]
    cvss_vector: String,
    #[serde(default)]
    affected: String,
    #[serde(default)]
    assignee: Option<String>,
}

/// `POST /api/v1/reports/{id}/assessment`.
pub async fn assess(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReportDetail>, WebError> {
    p.require_staff()?;
    let request: AssessmentRequest = json_body(&headers, &body)?;
    let report = load(&state, &id).await?;
    let assignee = match request.assignee.as_deref() {
        None | Some("") => None,
        Some(typed) => Some(
            UserId::parse(typed).ok_or_else(|| WebError::BadRequest("Unknown assignee.".into()))?,
        ),
    };
    intake::assess(
        &state.db,
        &Actor::user(&p.user, ip),
        &report,
        &request.cvss_vector,
        &request.affected,
        assignee.as_ref(),
    )
    .await?;
    detail(&state, &id).await
}

#[derive(Deserialize)]
struct MessageRequest {
    body: String,
    /// An internal note (never shown to the reporter) unless `false`.
    #[serde(default = "yes")]
    internal: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/v1/reports/{id}/messages`.
pub async fn message(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReportDetail>, WebError> {
    p.require_staff()?;
    let request: MessageRequest = json_body(&headers, &body)?;
    let report = load(&state, &id).await?;
    intake::staff_message(
        &state.db,
        &state.config,
        &Actor::user(&p.user, ip),
        &report,
        &request.body,
        request.internal,
    )
    .await
    .map_err(WebError::from)?;
    detail(&state, &id).await
}

#[derive(Deserialize)]
struct ExploitedRequest {
    note: String,
    /// When staff learnt of the exploitation (Unix seconds); now when absent.
    #[serde(default)]
    aware_at: Option<i64>,
}

/// `POST /api/v1/reports/{id}/exploited` (VULN-7).
pub async fn exploited(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReportDetail>, WebError> {
    p.require_staff()?;
    let request: ExploitedRequest = json_body(&headers, &body)?;
    let report = load(&state, &id).await?;
    crate::vuln::cra::mark_exploited(
        &state.db,
        &state.config,
        &Actor::user(&p.user, ip),
        &report,
        request.aware_at.unwrap_or_else(now),
        &request.note,
    )
    .await?;
    detail(&state, &id).await
}

#[derive(Deserialize)]
struct CraRequest {
    reference: String,
}

/// `POST /api/v1/reports/{id}/cra/{stage}`: record a CRA report as sent (VULN-7).
pub async fn cra_sent(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path((id, stage)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReportDetail>, WebError> {
    p.require_staff()?;
    let request: CraRequest = json_body(&headers, &body)?;
    let report = load(&state, &id).await?;
    let stage = triage::CraStage::parse(&stage).ok_or(WebError::NotFound)?;
    crate::vuln::cra::record_sent(
        &state.db,
        &Actor::user(&p.user, ip),
        &report,
        stage,
        &request.reference,
    )
    .await?;
    detail(&state, &id).await
}
