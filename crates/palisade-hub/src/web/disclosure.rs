//! The public vulnerability-disclosure surface (VULN-1, VULN-2): security.txt, the
//! policy page with its report form, and a report's private status page. None needs
//! an account; the status page needs its report's secret, and an unknown or wrong
//! secret answers exactly like a page that does not exist.

use super::AppState;
use super::console::Ctx;
use super::error::WebError;
use super::pages::{self, fmt_time};
use crate::db::now;
use crate::db::reports::Report;
use crate::vuln::intake::{self, IntakeError, Submission};
use crate::vuln::security_txt;
use crate::vuln::triage::State as ReportState;
use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

impl From<IntakeError> for WebError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Invalid(m) => WebError::BadRequest(m),
            IntakeError::Conflict(m) => WebError::Conflict(m),
            IntakeError::TooMany(secs) => WebError::TooManyRequests(secs),
            IntakeError::Internal(e) => WebError::Internal(e),
        }
    }
}

/// `GET /.well-known/security.txt`: cleartext-signed when an OpenPGP key is configured
/// (one signature per distinct content, cached), otherwise plain.
pub async fn security_txt(State(state): State<AppState>) -> Result<Response, WebError> {
    let at = now();
    let text = security_txt::render(&state.config, at);
    let body = match &state.config.security_txt_key {
        None => text,
        Some(key) => key
            .signed(&text, security_txt::expires_at(&state.config, at), at)
            .await?
            .to_string(),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "security.html")]
struct SecurityPage {
    c: pages::Chrome,
    contact_email: Option<String>,
    acknowledge_days: i64,
    update_days: i64,
    fix_critical: i64,
    fix_high: i64,
    fix_medium: i64,
    fix_low: i64,
    max_title: usize,
    max_short: usize,
    max_description: usize,
    title: String,
    product: String,
    description: String,
    name: String,
    email: String,
}

/// What the report form sends.
#[derive(Deserialize, Default)]
pub struct ReportForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    product: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
}

fn security_page(
    state: &AppState,
    ctx: &Ctx,
    error: Option<String>,
    form: &ReportForm,
) -> Result<Response, WebError> {
    let d = &state.config.disclosure;
    let mut c = ctx.chrome(state, "Security and vulnerability disclosure");
    c.error = error;
    let page = pages::render(SecurityPage {
        c,
        contact_email: d.contact_email.clone(),
        acknowledge_days: d.acknowledge_days,
        update_days: d.update_days,
        fix_critical: d.fix_days_critical,
        fix_high: d.fix_days_high,
        fix_medium: d.fix_days_medium,
        fix_low: d.fix_days_low,
        max_title: intake::MAX_TITLE,
        max_short: intake::MAX_SHORT,
        max_description: intake::MAX_DESCRIPTION,
        title: form.title.clone(),
        product: form.product.clone(),
        description: form.description.clone(),
        name: form.name.clone(),
        email: form.email.clone(),
    })?;
    Ok(page)
}

/// `GET /security`: the disclosure policy and the report form.
pub async fn policy(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    security_page(&state, &ctx, None, &ReportForm::default())
}

#[derive(Template)]
#[template(path = "report_received.html")]
struct ReceivedPage {
    c: pages::Chrome,
    id: String,
    link: String,
    emailed: bool,
    acknowledge_days: i64,
    update_days: i64,
}

/// `POST /security/reports`: accept a report from anyone (bounded, rate-limited).
pub async fn submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<ReportForm>,
) -> Result<Response, WebError> {
    let result = intake::submit(
        &state.db,
        &state.config,
        ctx.ip,
        Submission {
            title: &form.title,
            description: &form.description,
            product: &form.product,
            name: &form.name,
            email: &form.email,
        },
    )
    .await;
    let (report, secret) = match result {
        Ok(done) => done,
        Err(IntakeError::Invalid(message)) => {
            let mut page = security_page(&state, &ctx, Some(message), &form)?;
            *page.status_mut() = axum::http::StatusCode::BAD_REQUEST;
            return Ok(page);
        }
        Err(e) => return Err(e.into()),
    };
    let d = &state.config.disclosure;
    pages::render(ReceivedPage {
        c: ctx.chrome(&state, "Report received"),
        id: report.id.to_string(),
        link: intake::status_link(&state.config, &secret),
        emailed: report.reporter_email.is_some(),
        acknowledge_days: d.acknowledge_days,
        update_days: d.update_days,
    })
}

struct MessageRow {
    at: String,
    author: String,
    body: String,
}

#[derive(Template)]
#[template(path = "report_status.html")]
struct StatusPage {
    c: pages::Chrome,
    id: String,
    received: String,
    state_text: &'static str,
    title: String,
    description: String,
    messages: Vec<MessageRow>,
    can_reply: bool,
    token: String,
    max_message: usize,
    acknowledge_days: i64,
    update_days: i64,
}

async fn status_view(
    state: &AppState,
    ctx: &Ctx,
    report: &Report,
    token: &str,
    notice: Option<String>,
) -> Result<Response, WebError> {
    // Only messages meant for the reporter: internal notes are filtered in the query.
    let messages = state
        .db
        .report_messages(&report.id, false)
        .await?
        .into_iter()
        .map(|m| MessageRow {
            at: fmt_time(m.at),
            author: match m.author.as_str() {
                "reporter" => "you".to_owned(),
                "hub" => "status".to_owned(),
                _ => format!("{} security team", state.config.product_name),
            },
            body: m.body,
        })
        .collect();
    let d = &state.config.disclosure;
    let mut c = ctx.chrome(state, "Your vulnerability report");
    c.notice = notice;
    pages::render(StatusPage {
        c,
        id: report.id.to_string(),
        received: fmt_time(report.received_at),
        state_text: report.state.reporter_text(),
        title: report.title.clone(),
        description: report.description.clone(),
        messages,
        can_reply: report.state != ReportState::Disclosed,
        token: token.to_owned(),
        max_message: intake::MAX_MESSAGE,
        acknowledge_days: d.acknowledge_days,
        update_days: d.update_days,
    })
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// The report a secret opens, or 404 (the same for a wrong and a missing secret).
async fn report_for(state: &AppState, token: &str) -> Result<Report, WebError> {
    state
        .db
        .report_by_secret(token)
        .await?
        .ok_or(WebError::NotFound)
}

/// `GET /security/status?token=…`: the reporter's view of their report.
pub async fn status(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<TokenQuery>,
) -> Result<Response, WebError> {
    let report = report_for(&state, &q.token).await?;
    status_view(&state, &ctx, &report, &q.token, None).await
}

#[derive(Deserialize)]
pub struct ReplyForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    body: String,
}

/// `POST /security/status`: the reporter replies (the secret travels in the form).
pub async fn reply(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<ReplyForm>,
) -> Result<Response, WebError> {
    let report = report_for(&state, &form.token).await?;
    intake::reporter_reply(&state.db, &state.config, ctx.ip, &report, &form.body).await?;
    status_view(
        &state,
        &ctx,
        &report,
        &form.token,
        Some("Your message was sent.".into()),
    )
    .await
}
