//! Advisories in the console (staff only, VULN-6, UPD-7): the list with drafts, a new
//! advisory (blank or from a fixed report), editing, publishing, the fleet exposure
//! with the owners concerned, and "notify affected owners".

use super::{Ctx, redirect};
use crate::accounts::Actor;
use crate::db::advisories::{Advisory, AdvisoryId};
use crate::db::notices::NoticeKind;
use crate::db::reports::ReportId;
use crate::vuln::advisories::{self as ops, AdvisoryInput, MAX_DETAILS, MAX_SUMMARY};
use crate::vuln::intake::IntakeError;
use crate::web::AppState;
use crate::web::advisories::{Row, row};
use crate::web::error::WebError;
use crate::web::pages;
use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "advisories_manage.html")]
struct ListPage {
    c: pages::Chrome,
    advisories: Vec<Row>,
}

/// `GET /manage/advisories`.
pub async fn list(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let advisories = state.db.advisories(true).await?;
    pages::render(ListPage {
        c: ctx.chrome(&state, "Advisories"),
        advisories: advisories.iter().map(row).collect(),
    })
}

pub struct OwnerRow {
    username: String,
    devices: usize,
}

#[derive(Template)]
#[template(path = "advisory_manage.html")]
struct EditPage {
    c: pages::Chrome,
    /// `None` for a new advisory.
    id: Option<String>,
    published: String,
    is_published: bool,
    form: AdvisoryInput,
    max_summary: usize,
    max_details: usize,
    exposure: Option<ExposureView>,
    /// Fixed versions with their release records (VULN-6); empty for a new advisory.
    fixed: Vec<crate::web::advisories::FixedRow>,
}

struct ExposureView {
    affected_devices: usize,
    unknown_version: usize,
    unowned: usize,
    owners: Vec<OwnerRow>,
    notified: i64,
}

fn input_of(a: &Advisory) -> AdvisoryInput {
    AdvisoryInput {
        cve: a.cve.clone().unwrap_or_default(),
        summary: a.summary.clone(),
        details: a.details.clone(),
        affected: ops::affected_text(&a.affected),
        fixed_version: a.fixed_version.clone(),
        cvss_vector: a
            .cvss
            .as_ref()
            .map(|c| c.vector.clone())
            .unwrap_or_default(),
        remediation: a.remediation.clone(),
        credit: a.credit.clone(),
        report: a.report_id.clone().unwrap_or_default(),
    }
}

async fn load(state: &AppState, id: &str) -> Result<Advisory, WebError> {
    let id = AdvisoryId::parse(id).ok_or(WebError::NotFound)?;
    state.db.advisory(&id).await?.ok_or(WebError::NotFound)
}

async fn edit_view(
    state: &AppState,
    ctx: &Ctx,
    a: &Advisory,
    form: Option<AdvisoryInput>,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, WebError> {
    let e = ops::exposure(&state.db, a).await?;
    let notified = state
        .db
        .notices_about(NoticeKind::Security, a.id.as_str())
        .await?;
    let fixed = crate::web::advisories::fixed_rows(state, a).await?;
    let mut c = ctx.chrome(state, &format!("Advisory {}", a.id));
    c.notice = notice;
    c.error = error;
    pages::render(EditPage {
        c,
        fixed,
        id: Some(a.id.to_string()),
        published: a
            .published_at
            .map_or_else(|| "draft (not public)".into(), pages::fmt_time),
        is_published: a.is_published(),
        form: form.unwrap_or_else(|| input_of(a)),
        max_summary: MAX_SUMMARY,
        max_details: MAX_DETAILS,
        exposure: Some(ExposureView {
            affected_devices: e.affected_devices,
            unknown_version: e.unknown_version,
            unowned: e.unowned,
            owners: e
                .owners
                .into_iter()
                .map(|o| OwnerRow {
                    username: o.username,
                    devices: o.devices,
                })
                .collect(),
            notified,
        }),
    })
}

#[derive(Deserialize)]
pub struct NewQuery {
    #[serde(default)]
    report: String,
}

/// `GET /manage/advisories/new[?report=VR-…]`: the form, prefilled from a report.
pub async fn new_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<NewQuery>,
) -> Result<Response, WebError> {
    let mut form = AdvisoryInput::default();
    if let Some(id) = ReportId::parse(q.report.trim())
        && let Some(r) = state.db.report(&id).await?
    {
        form.report = r.id.to_string();
        form.summary = r.title.chars().take(MAX_SUMMARY).collect();
        form.cvss_vector = r.cvss.map(|c| c.vector).unwrap_or_default();
        form.credit = r.reporter_name.clone();
    }
    new_view(&state, &ctx, form, None)
}

fn new_view(
    state: &AppState,
    ctx: &Ctx,
    form: AdvisoryInput,
    error: Option<String>,
) -> Result<Response, WebError> {
    let mut c = ctx.chrome(state, "New advisory");
    c.error = error;
    pages::render(EditPage {
        c,
        id: None,
        published: String::new(),
        is_published: false,
        form,
        max_summary: MAX_SUMMARY,
        max_details: MAX_DETAILS,
        exposure: None,
        fixed: Vec::new(),
    })
}

/// `POST /manage/advisories`: create a draft.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<AdvisoryInput>,
) -> Result<Response, WebError> {
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    match ops::create(&state.db, &actor, &form).await {
        Ok(id) => Ok(redirect(&format!("/manage/advisories/{id}"))),
        Err(IntakeError::Invalid(m) | IntakeError::Conflict(m)) => {
            new_view(&state, &ctx, form, Some(m))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /manage/advisories/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let a = load(&state, &id).await?;
    edit_view(&state, &ctx, &a, None, None, None).await
}

/// `POST /manage/advisories/{id}`: save the edited fields.
pub async fn edit(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<AdvisoryInput>,
) -> Result<Response, WebError> {
    let a = load(&state, &id).await?;
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    match ops::edit(&state.db, &actor, &a.id, &form).await {
        Ok(()) => Ok(redirect(&format!("/manage/advisories/{}", a.id))),
        Err(IntakeError::Invalid(m) | IntakeError::Conflict(m)) => {
            edit_view(&state, &ctx, &a, Some(form), None, Some(m)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /manage/advisories/{id}/publish`.
pub async fn publish(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let a = load(&state, &id).await?;
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    match ops::publish(&state.db, &state.config, &actor, &a).await {
        Ok(()) => Ok(redirect(&format!("/manage/advisories/{}", a.id))),
        Err(IntakeError::Invalid(m) | IntakeError::Conflict(m)) => {
            edit_view(&state, &ctx, &a, None, None, Some(m)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /manage/advisories/{id}/notify`.
pub async fn notify(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let a = load(&state, &id).await?;
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    match ops::notify(&state.db, &state.config, &actor, &a).await {
        Ok(n) => {
            let msg = format!(
                "{} owners were sent a security notice; {} had already been told.",
                n.sent, n.already
            );
            edit_view(&state, &ctx, &a, None, Some(msg), None).await
        }
        Err(IntakeError::Invalid(m) | IntakeError::Conflict(m)) => {
            edit_view(&state, &ctx, &a, None, None, Some(m)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /manage/advisories/{id}/rollout`: the one-step security rollout of the
/// advisory's fixed release (issue 5), or a message saying why there is none.
pub async fn rollout(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let a = load(&state, &id).await?;
    let actor = Actor::user(&ctx.me()?.user, ctx.ip);
    match crate::updates::rollouts::from_advisory(&state.db, &state.fleet, &actor, &a).await {
        Ok(r) => Ok(redirect(&format!("/rollouts/{}", r.id))),
        Err(crate::error::Error::Conflict(m)) => {
            edit_view(&state, &ctx, &a, None, None, Some(m)).await
        }
        Err(e) => Err(WebError::Internal(e)),
    }
}
