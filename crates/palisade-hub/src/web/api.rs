//! `/api/v1`: JSON for scripts, authenticated by API token (`Authorization: Bearer
//! pal_…`) or by a console session (state changes then need `X-CSRF-Token`).
//! The OpenAPI document is `openapi.json` beside this file; a test keeps it in step
//! with the route table.

use super::AppState;
use super::access::{AdminPrincipal, Principal};
use super::error::WebError;
use super::middleware::ClientAddr;
use crate::accounts::{self, Actor};
use crate::db::now;
use crate::ids::UserId;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

pub async fn openapi(_: Principal) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// An account as the API shows it (never secrets).
#[derive(Serialize)]
pub struct UserView {
    id: String,
    username: String,
    email: String,
    role: &'static str,
    status: &'static str,
    mfa: bool,
    locked: bool,
    failed_logins: i64,
    created_at: i64,
    last_login_at: Option<i64>,
}

impl From<&crate::db::users::User> for UserView {
    fn from(u: &crate::db::users::User) -> Self {
        Self {
            id: u.id.to_string(),
            username: u.username.to_string(),
            email: u.email.to_string(),
            role: u.role.as_str(),
            status: u.status.as_str(),
            mfa: u.has_mfa(),
            locked: u.is_locked(now()),
            failed_logins: u.failed_logins,
            created_at: u.created_at,
            last_login_at: u.last_login_at,
        }
    }
}

pub async fn me(p: Principal) -> Json<UserView> {
    Json(UserView::from(&p.user))
}

pub async fn users(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
) -> Result<Json<Vec<UserView>>, WebError> {
    Ok(Json(
        state.db.users().await?.iter().map(UserView::from).collect(),
    ))
}

async fn target(state: &AppState, id: &str) -> Result<crate::db::users::User, WebError> {
    let id = UserId::parse(id).ok_or(WebError::NotFound)?;
    state.db.user(&id).await?.ok_or(WebError::NotFound)
}

fn conflict(e: crate::error::Error) -> WebError {
    match e {
        crate::error::Error::Conflict(msg) => WebError::BadRequest(msg),
        other => WebError::Internal(other),
    }
}

pub async fn unlock_user(
    State(state): State<AppState>,
    AdminPrincipal(admin): AdminPrincipal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, WebError> {
    let user = target(&state, &id).await?;
    accounts::unlock(&state.db, &Actor::user(&admin.user, ip), &user)
        .await
        .map_err(conflict)?;
    Ok(Json(UserView::from(&target(&state, &id).await?)))
}

pub async fn disable_user(
    State(state): State<AppState>,
    AdminPrincipal(admin): AdminPrincipal,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, WebError> {
    let user = target(&state, &id).await?;
    if user.id == admin.user.id {
        return Err(WebError::BadRequest("You cannot disable yourself.".into()));
    }
    accounts::disable(&state.db, &Actor::user(&admin.user, ip), &user)
        .await
        .map_err(conflict)?;
    Ok(Json(UserView::from(&target(&state, &id).await?)))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    before: Option<i64>,
    limit: Option<i64>,
}

pub async fn audit(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, WebError> {
    let entries = state
        .db
        .audit_entries(q.limit.unwrap_or(100).clamp(1, 1000), q.before)
        .await?;
    Ok(Json(json!({ "entries": entries })))
}

pub async fn audit_verify(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
) -> Result<Json<Value>, WebError> {
    let report = state.db.verify_audit_chain().await?;
    Ok(Json(
        json!({ "intact": report.first_broken.is_none(), "entries": report.entries, "first_broken": report.first_broken }),
    ))
}
