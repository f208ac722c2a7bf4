//! Published security advisories (VULN-6), readable by anyone without signing in:
//! `/advisories` (list), `/advisories/{id}` (page), `/advisories/{id}.json` (one OSV
//! record), `/advisories/osv.json` (every published record, a JSON array) and
//! `/advisories.atom`. Drafts answer exactly like ids that do not exist. Also the
//! staff API (`/api/v1/advisories…`) and an owner's notices (`/api/v1/notices`).

use super::AppState;
use super::access::Principal;
use super::console::Ctx;
use super::devices::json_body;
use super::error::WebError;
use super::middleware::ClientAddr;
use super::pages::{self, fmt_time};
use crate::accounts::Actor;
use crate::db::advisories::{Advisory, AdvisoryId};
use crate::db::notices::Notice;
use crate::db::now;
use crate::privacy::markdown;
use crate::vuln::advisories::{self as ops, AdvisoryInput, Exposure, Notified};
use crate::vuln::{cvss, feeds};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;

/// A published advisory, or 404 (drafts are not public).
async fn published(state: &AppState, id: &str) -> Result<Advisory, WebError> {
    let id = AdvisoryId::parse(id).ok_or(WebError::NotFound)?;
    state
        .db
        .advisory(&id)
        .await?
        .filter(Advisory::is_published)
        .ok_or(WebError::NotFound)
}

pub struct Row {
    pub id: String,
    pub cve: String,
    pub summary: String,
    pub severity: String,
    pub severity_class: &'static str,
    pub published: String,
    pub modified: String,
    pub affected: String,
}

pub fn severity_text(a: &Advisory) -> String {
    a.cvss.as_ref().map_or_else(
        || "not scored".into(),
        |c| {
            format!(
                "{} {}",
                c.severity.as_str(),
                cvss::fmt_score(c.score_tenths)
            )
        },
    )
}

pub fn affected_line(a: &Advisory) -> String {
    a.affected
        .iter()
        .map(|r| match &r.fixed {
            Some(f) => format!("{} ≥ {}, < {f}", r.product, r.introduced),
            None => format!("{} ≥ {} (no fix yet)", r.product, r.introduced),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn row(a: &Advisory) -> Row {
    Row {
        id: a.id.to_string(),
        cve: a.cve.clone().unwrap_or_default(),
        summary: a.summary.clone(),
        severity: severity_text(a),
        severity_class: a.severity.map_or("sev-none", |s| match s.as_str() {
            "critical" => "sev-critical",
            "high" => "sev-high",
            _ => "sev-other",
        }),
        published: a.published_at.map_or_else(|| "draft".into(), fmt_time),
        modified: fmt_time(a.modified_at),
        affected: affected_line(a),
    }
}

#[derive(Template)]
#[template(path = "advisories.html")]
struct ListPage {
    c: pages::Chrome,
    advisories: Vec<Row>,
}

/// `GET /advisories`.
pub async fn list(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let advisories = state.db.advisories(false).await?;
    pages::render(ListPage {
        c: ctx.chrome(&state, "Security advisories"),
        advisories: advisories.iter().map(row).collect(),
    })
}

/// A fixed version as the advisory pages show it, with its release record if published.
pub struct FixedRow {
    pub product: String,
    pub version: String,
    /// Empty while no release of that version is published.
    pub release_id: String,
    pub released: String,
    pub sha256: String,
}

/// The fixed versions of an advisory, resolved to release records (one place for the
/// public and the staff page).
pub async fn fixed_rows(state: &AppState, a: &Advisory) -> Result<Vec<FixedRow>, WebError> {
    Ok(ops::fixed_releases(&state.db, a)
        .await?
        .into_iter()
        .map(|f| FixedRow {
            product: f.product.to_string(),
            version: f.version,
            release_id: f.release.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
            released: f
                .release
                .as_ref()
                .map(|r| fmt_time(r.created_at))
                .unwrap_or_default(),
            sha256: f.release.map(|r| r.sha256).unwrap_or_default(),
        })
        .collect())
}

#[derive(Template)]
#[template(path = "advisory.html")]
struct AdvisoryPage {
    c: pages::Chrome,
    a: Row,
    details_html: String,
    fixed_version: String,
    fixed: Vec<FixedRow>,
    remediation: String,
    credit: String,
    vector: String,
}

/// `GET /advisories/{id}` (a page) and `GET /advisories/{id}.json` (its OSV record).
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    if let Some(bare) = id.strip_suffix(".json") {
        let a = published(&state, bare).await?;
        return Ok(json_file(&feeds::osv(&state.config, &a)));
    }
    let a = published(&state, &id).await?;
    let fixed = fixed_rows(&state, &a).await?;
    pages::render(AdvisoryPage {
        fixed,
        c: ctx.chrome(&state, &format!("{}: {}", a.id, a.summary)),
        a: row(&a),
        // The safe Markdown subset: everything escaped first, no raw HTML, https links only.
        details_html: markdown::to_html(&a.details),
        fixed_version: a.fixed_version.clone(),
        remediation: a.remediation.clone(),
        credit: a.credit.clone(),
        vector: a
            .cvss
            .as_ref()
            .map(|c| c.vector.clone())
            .unwrap_or_default(),
    })
}

fn json_file(v: &serde_json::Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        serde_json::to_string_pretty(v).unwrap_or_default(),
    )
        .into_response()
}

/// `GET /advisories/osv.json`: every published advisory as an OSV record (an array).
pub async fn osv_all(State(state): State<AppState>) -> Result<Response, WebError> {
    let records: Vec<serde_json::Value> = state
        .db
        .advisories(false)
        .await?
        .iter()
        .map(|a| feeds::osv(&state.config, a))
        .collect();
    Ok(json_file(&serde_json::Value::Array(records)))
}

/// `GET /advisories.atom`.
pub async fn atom(State(state): State<AppState>) -> Result<Response, WebError> {
    let advisories = state.db.advisories(false).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/atom+xml; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        feeds::atom(&state.config, &advisories, now()),
    )
        .into_response())
}

// --- staff API -----------------------------------------------------------------

async fn any_advisory(state: &AppState, id: &str) -> Result<Advisory, WebError> {
    let id = AdvisoryId::parse(id).ok_or(WebError::NotFound)?;
    state.db.advisory(&id).await?.ok_or(WebError::NotFound)
}

/// An advisory with its exposure in the fleet (staff).
#[derive(Serialize)]
pub struct AdvisoryDetail {
    #[serde(flatten)]
    advisory: Advisory,
    exposure: Exposure,
    owners_notified: i64,
    /// Each fixed version with its release record (`release: null` while unpublished).
    fixed_releases: Vec<ops::FixedRelease>,
    /// Fixed versions that are not published releases (yet).
    warnings: Vec<String>,
}

async fn detail(state: &AppState, id: &str) -> Result<Json<AdvisoryDetail>, WebError> {
    let advisory = any_advisory(state, id).await?;
    let exposure = ops::exposure(&state.db, &advisory).await?;
    let owners_notified = state
        .db
        .notices_about(
            crate::db::notices::NoticeKind::Security,
            advisory.id.as_str(),
        )
        .await?;
    let fixed_releases = ops::fixed_releases(&state.db, &advisory).await?;
    let warnings = fixed_releases
        .iter()
        .filter_map(ops::FixedRelease::warning)
        .collect();
    Ok(Json(AdvisoryDetail {
        advisory,
        exposure,
        owners_notified,
        fixed_releases,
        warnings,
    }))
}

/// `GET /api/v1/advisories`: all, drafts included (staff).
pub async fn api_list(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<Advisory>>, WebError> {
    p.require_staff()?;
    Ok(Json(state.db.advisories(true).await?))
}

/// `POST /api/v1/advisories`: create a draft (staff).
pub async fn api_create(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    p.require_staff()?;
    let input: AdvisoryInput = json_body(&headers, &body)?;
    let id = ops::create(&state.db, &Actor::user(&p.user, ip), &input).await?;
    let d = detail(&state, id.as_str()).await?;
    Ok((axum::http::StatusCode::CREATED, d).into_response())
}

/// `GET /api/v1/advisories/{id}` (staff).
pub async fn api_show(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<AdvisoryDetail>, WebError> {
    p.require_staff()?;
    detail(&state, &id).await
}

/// `PUT /api/v1/advisories/{id}`: replace the fields (staff; `modified` becomes now).
pub async fn api_edit(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AdvisoryDetail>, WebError> {
    p.require_staff()?;
    let input: AdvisoryInput = json_body(&headers, &body)?;
    let a = any_advisory(&state, &id).await?;
    ops::edit(&state.db, &Actor::user(&p.user, ip), &a.id, &input).await?;
    detail(&state, &id).await
}

/// `POST /api/v1/advisories/{id}/publish` (staff).
pub async fn api_publish(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
) -> Result<Json<AdvisoryDetail>, WebError> {
    p.require_staff()?;
    let a = any_advisory(&state, &id).await?;
    ops::publish(&state.db, &state.config, &Actor::user(&p.user, ip), &a).await?;
    detail(&state, &id).await
}

/// `POST /api/v1/advisories/{id}/notify` (staff): one security notice per affected owner.
pub async fn api_notify(
    State(state): State<AppState>,
    p: Principal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
) -> Result<Json<Notified>, WebError> {
    p.require_staff()?;
    let a = any_advisory(&state, &id).await?;
    Ok(Json(
        ops::notify(&state.db, &state.config, &Actor::user(&p.user, ip), &a).await?,
    ))
}

/// `GET /api/v1/notices`: the caller's own inbox.
pub async fn api_notices(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<Notice>>, WebError> {
    Ok(Json(state.db.notices(&p.user.id).await?))
}
