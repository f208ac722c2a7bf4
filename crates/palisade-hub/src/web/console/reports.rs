//! Triage of vulnerability reports in the console (staff only, VULN-3): the list with
//! policy deadlines (overdue first, marked), one report with its assessment, state
//! changes along the allowed transitions, and messages or internal notes.

use super::{Ctx, redirect};
use crate::accounts::Actor;
use crate::db::now;
use crate::db::reports::{Report, ReportId};
use crate::db::users::{Role, Status};
use crate::ids::UserId;
use crate::vuln::cvss;
use crate::vuln::intake;
use crate::vuln::triage::{self, State as ReportState};
use crate::web::AppState;
use crate::web::error::WebError;
use crate::web::pages::{self, fmt_time};
use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

/// Most reports listed on one page.
const LIST_LIMIT: i64 = 500;

pub struct ReportRow {
    id: String,
    title: String,
    state: &'static str,
    severity: String,
    assignee: String,
    received: String,
    next: String,
    overdue: String,
}

#[derive(Template)]
#[template(path = "reports.html")]
struct ReportsPage {
    c: pages::Chrome,
    reports: Vec<ReportRow>,
    acknowledge_days: i64,
    update_days: i64,
}

fn severity_text(r: &Report) -> String {
    r.cvss.as_ref().map_or_else(
        || "unscored".into(),
        |c| {
            format!(
                "{} {}",
                c.severity.as_str(),
                cvss::fmt_score(c.score_tenths)
            )
        },
    )
}

async fn usernames(state: &AppState) -> Result<Vec<(UserId, String, bool)>, WebError> {
    Ok(state
        .db
        .users()
        .await?
        .into_iter()
        .map(|u| {
            let staff =
                matches!(u.role, Role::Admin | Role::Operator) && u.status == Status::Active;
            (u.id, u.username.to_string(), staff)
        })
        .collect())
}

fn name_of(users: &[(UserId, String, bool)], id: Option<&UserId>) -> String {
    id.and_then(|id| users.iter().find(|u| &u.0 == id))
        .map_or_else(|| "-".into(), |u| u.1.clone())
}

/// `GET /reports`.
pub async fn list(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let policy = &state.config.disclosure;
    let at = now();
    let users = usernames(&state).await?;
    let mut rows: Vec<(bool, i64, ReportRow)> = state
        .db
        .reports(LIST_LIMIT)
        .await?
        .into_iter()
        .map(|r| {
            let d = triage::deadlines(policy, &r.timeline());
            let overdue = d.overdue(at);
            let next = d.next();
            let row = ReportRow {
                id: r.id.to_string(),
                title: r.title.clone(),
                state: r.state.as_str(),
                severity: severity_text(&r),
                assignee: name_of(&users, r.assignee.as_ref()),
                received: fmt_time(r.received_at),
                next: next.map_or_else(
                    || "-".into(),
                    |(k, when)| format!("{} by {}", k.as_str(), fmt_time(when)),
                ),
                overdue: overdue
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            (!overdue.is_empty(), next.map_or(i64::MAX, |n| n.1), row)
        })
        .collect();
    // Overdue first, then by the nearest deadline.
    rows.sort_by_key(|(overdue, next, _)| (!*overdue, *next));
    pages::render(ReportsPage {
        c: ctx.chrome(&state, "Vulnerability reports"),
        reports: rows.into_iter().map(|r| r.2).collect(),
        acknowledge_days: policy.acknowledge_days,
        update_days: policy.update_days,
    })
}

struct DeadlineRow {
    kind: &'static str,
    at: String,
    overdue: bool,
}

struct MessageRow {
    at: String,
    author: String,
    internal: bool,
    body: String,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    c: pages::Chrome,
    id: String,
    state: &'static str,
    received: String,
    reporter: String,
    product: String,
    cvss: String,
    cvss_vector: String,
    affected: String,
    assignee: String,
    deadlines: Vec<DeadlineRow>,
    report_title: String,
    description: String,
    next_states: Vec<&'static str>,
    staff: Vec<(String, String, bool)>,
    messages: Vec<MessageRow>,
    max_message: usize,
    /// VULN-7: actively exploited since (empty when not marked).
    exploited: String,
    /// The CRA reports: (stage value, title, sent line or empty, draft text) in order.
    cra: Vec<CraRow>,
}

/// One CRA report on the report page.
pub struct CraRow {
    stage: &'static str,
    title: &'static str,
    /// "sent …" once recorded; empty while due.
    sent: String,
    /// Why it cannot be recorded now (empty when it can).
    blocked: &'static str,
    draft: String,
}

async fn load(state: &AppState, id: &str) -> Result<Report, WebError> {
    let id = ReportId::parse(id).ok_or(WebError::NotFound)?;
    state.db.report(&id).await?.ok_or(WebError::NotFound)
}

async fn detail_view(
    state: &AppState,
    ctx: &Ctx,
    report: &Report,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, WebError> {
    let at = now();
    let users = usernames(state).await?;
    let d = triage::deadlines(&state.config.disclosure, &report.timeline());
    let deadlines = d
        .all()
        .map(|(k, when)| DeadlineRow {
            kind: k.as_str(),
            at: fmt_time(when),
            overdue: when < at,
        })
        .collect();
    let cra = if report.cra.exploited_at.is_some() {
        triage::CRA_STAGES
            .into_iter()
            .map(|stage| CraRow {
                stage: stage.as_str(),
                title: stage.title(),
                sent: report
                    .cra
                    .sent_at(stage)
                    .map_or_else(String::new, |t| format!("sent {}", fmt_time(t))),
                blocked: report.cra.refuse_recording(stage).unwrap_or(""),
                draft: crate::vuln::cra::draft(&state.config, report, stage),
            })
            .collect()
    } else {
        Vec::new()
    };
    let messages = state
        .db
        .report_messages(&report.id, true)
        .await?
        .into_iter()
        .map(|m| MessageRow {
            at: fmt_time(m.at),
            author: m.author,
            internal: m.internal,
            body: m.body,
        })
        .collect();
    let mut c = ctx.chrome(state, &format!("Report {}", report.id));
    c.notice = notice;
    c.error = error;
    pages::render(ReportPage {
        c,
        id: report.id.to_string(),
        state: report.state.as_str(),
        received: fmt_time(report.received_at),
        reporter: match (&report.reporter_name, &report.reporter_email) {
            (n, Some(e)) if !n.is_empty() => format!("{n} <{e}>"),
            (_, Some(e)) => e.to_string(),
            (n, None) if !n.is_empty() => format!("{n} (no e-mail)"),
            _ => "anonymous (no e-mail)".into(),
        },
        product: report.product.clone(),
        cvss: report.cvss.as_ref().map_or_else(
            || "not scored yet (fix deadline counts it as critical)".into(),
            |c| {
                format!(
                    "{} {} — {}",
                    cvss::fmt_score(c.score_tenths),
                    c.severity.as_str(),
                    c.vector
                )
            },
        ),
        cvss_vector: report
            .cvss
            .as_ref()
            .map(|c| c.vector.clone())
            .unwrap_or_default(),
        affected: report.affected.clone(),
        assignee: name_of(&users, report.assignee.as_ref()),
        deadlines,
        report_title: report.title.clone(),
        description: report.description.clone(),
        next_states: report.state.next().iter().map(|s| s.as_str()).collect(),
        staff: users
            .iter()
            .filter(|u| u.2)
            .map(|u| {
                (
                    u.0.to_string(),
                    u.1.clone(),
                    report.assignee.as_ref() == Some(&u.0),
                )
            })
            .collect(),
        messages,
        max_message: intake::MAX_MESSAGE,
        exploited: report.cra.exploited_at.map_or_else(String::new, fmt_time),
        cra,
    })
}

/// `GET /reports/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let report = load(&state, &id).await?;
    detail_view(&state, &ctx, &report, None, None).await
}

/// Show the result of a change: back to the report, with the refusal if there was one.
async fn after(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    result: Result<(), intake::IntakeError>,
) -> Result<Response, WebError> {
    match result {
        Ok(()) => Ok(redirect(&format!("/reports/{id}"))),
        Err(intake::IntakeError::Invalid(m) | intake::IntakeError::Conflict(m)) => {
            let report = load(state, id).await?;
            detail_view(state, ctx, &report, None, Some(m)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct StateForm {
    state: String,
}

/// `POST /reports/{id}/state`.
pub async fn set_state(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<StateForm>,
) -> Result<Response, WebError> {
    let report = load(&state, &id).await?;
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    let result = match ReportState::parse(&form.state) {
        Some(to) => intake::change_state(&state.db, &state.config, &actor, &report, to).await,
        None => Err(intake::IntakeError::Invalid("Unknown state.".into())),
    };
    after(&state, &ctx, &id, result).await
}

#[derive(Deserialize)]
pub struct AssessForm {
    #[serde(default)]
    cvss: String,
    #[serde(default)]
    affected: String,
    #[serde(default)]
    assignee: String,
}

/// `POST /reports/{id}/assess`.
pub async fn assess(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<AssessForm>,
) -> Result<Response, WebError> {
    let report = load(&state, &id).await?;
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    let result = match form.assignee.as_str() {
        "" => Ok(None),
        typed => UserId::parse(typed)
            .map(Some)
            .ok_or_else(|| intake::IntakeError::Invalid("Unknown assignee.".into())),
    };
    let result = match result {
        Ok(assignee) => {
            intake::assess(
                &state.db,
                &actor,
                &report,
                &form.cvss,
                &form.affected,
                assignee.as_ref(),
            )
            .await
        }
        Err(e) => Err(e),
    };
    after(&state, &ctx, &id, result).await
}

#[derive(Deserialize)]
pub struct MessageForm {
    #[serde(default)]
    body: String,
    #[serde(default)]
    internal: Option<String>,
}

/// `POST /reports/{id}/messages`.
pub async fn message(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<MessageForm>,
) -> Result<Response, WebError> {
    let report = load(&state, &id).await?;
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    let result = intake::staff_message(
        &state.db,
        &state.config,
        &actor,
        &report,
        &form.body,
        form.internal.is_some(),
    )
    .await;
    after(&state, &ctx, &id, result).await
}

#[derive(Deserialize)]
pub struct ExploitedForm {
    #[serde(default)]
    note: String,
    /// Hours ago that staff learnt of the exploitation (0 = now).
    #[serde(default)]
    hours_ago: String,
}

/// `POST /reports/{id}/exploited` (VULN-7).
pub async fn exploited(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<ExploitedForm>,
) -> Result<Response, WebError> {
    let report = load(&state, &id).await?;
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    let result = match form.hours_ago.trim() {
        "" => Ok(0),
        h => h
            .parse::<i64>()
            .ok()
            .filter(|h| (0..=24 * 365).contains(h))
            .ok_or_else(|| {
                intake::IntakeError::Invalid("Hours ago must be a whole number of hours.".into())
            }),
    };
    let result = match result {
        Ok(hours) => {
            crate::vuln::cra::mark_exploited(
                &state.db,
                &state.config,
                &actor,
                &report,
                now() - hours * 3600,
                &form.note,
            )
            .await
        }
        Err(e) => Err(e),
    };
    after(&state, &ctx, &id, result).await
}

#[derive(Deserialize)]
pub struct CraForm {
    #[serde(default)]
    stage: String,
    #[serde(default)]
    reference: String,
}

/// `POST /reports/{id}/cra`: record a CRA report as sent (VULN-7).
pub async fn cra_sent(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<CraForm>,
) -> Result<Response, WebError> {
    let report = load(&state, &id).await?;
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    let result = match triage::CraStage::parse(&form.stage) {
        Some(stage) => {
            crate::vuln::cra::record_sent(&state.db, &actor, &report, stage, &form.reference).await
        }
        None => Err(intake::IntakeError::Invalid("Unknown CRA report.".into())),
    };
    after(&state, &ctx, &id, result).await
}
