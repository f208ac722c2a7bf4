//! Administrator pages: users (roles, invitations, unlock, disable) and the audit log.

use super::Ctx;
use super::signin::INVITE_TTL;
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::now;
use crate::db::tokens::Purpose;
use crate::db::users::{NewUser, Role, Status, User};
use crate::ids::{Email, UserId, Username};
use crate::mail::Category;
use crate::web::AppState;
use crate::web::access::AdminPrincipal;
use crate::web::error::WebError;
use crate::web::pages::{self, AuditPage, AuditRow, RetentionPage, UserRow, UsersPage};
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

async fn users_view(
    state: &AppState,
    ctx: &Ctx,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, WebError> {
    let me = ctx.me()?;
    let at = now();
    let users = state
        .db
        .users()
        .await?
        .into_iter()
        .map(|u| UserRow {
            id: u.id.to_string(),
            username: u.username.to_string(),
            email: u.email.to_string(),
            role: u.role.as_str(),
            status: u.status.as_str(),
            mfa: if u.has_mfa() { "yes" } else { "no" },
            lock: if u.hard_locked {
                format!("locked ({} failures)", u.failed_logins)
            } else if u.locked_until > at {
                format!("delayed until {}", pages::fmt_time(u.locked_until))
            } else {
                u.last_login_at.map_or_else(
                    || "never signed in".into(),
                    |t| format!("last {}", pages::fmt_time(t)),
                )
            },
            locked: u.is_locked(at) || u.failed_logins > 0,
            is_self: u.id == me.user.id,
        })
        .collect();
    let mut c = ctx.chrome(state, "Users");
    c.notice = notice;
    c.error = error;
    pages::render(UsersPage { c, users })
}

pub async fn users_page(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    ctx: Ctx,
) -> Result<Response, WebError> {
    users_view(&state, &ctx, None, None).await
}

#[derive(Deserialize)]
pub struct InviteForm {
    username: String,
    email: String,
    role: String,
}

pub async fn invite(
    State(state): State<AppState>,
    AdminPrincipal(admin): AdminPrincipal,
    ctx: Ctx,
    Form(form): Form<InviteForm>,
) -> Result<Response, WebError> {
    let fail = |msg: String| users_view(&state, &ctx, None, Some(msg));
    let username = match Username::parse(&form.username) {
        Ok(u) => u,
        Err(e) => return fail(e.to_string()).await,
    };
    let email = match Email::parse(&form.email) {
        Ok(e) => e,
        Err(e) => return fail(e.to_string()).await,
    };
    let Some(role) = Role::parse(&form.role) else {
        return fail("Choose a role.".into()).await;
    };
    let user = match state
        .db
        .insert_user(NewUser {
            username: &username,
            email: &email,
            role,
            status: Status::Pending,
            password_hash: None,
        })
        .await
    {
        Ok(u) => u,
        Err(crate::error::Error::Conflict(msg)) => return fail(msg).await,
        Err(e) => return Err(e.into()),
    };
    let token = state
        .db
        .create_one_time_token(&user.id, Purpose::Invite, INVITE_TTL)
        .await?;
    state
        .db
        .enqueue_mail(
            email.as_str(),
            "You are invited to a Palisade hub",
            &format!(
                "Hello {username},\n\n{} invited you to the hub as {}. Choose your password here (link valid 72 hours, works once):\n{}/invite?token={token}\n",
                admin.user.username,
                role.as_str(),
                state.config.public_url
            ),
            Category::Account,
        )
        .await?;
    accounts::audit(
        &state.db,
        &Actor::user(&admin.user, ctx.ip),
        "user.invite",
        username.as_str(),
        Outcome::Success,
        role.as_str(),
    )
    .await?;
    users_view(
        &state,
        &ctx,
        Some(format!("Invitation sent to {email}.")),
        None,
    )
    .await
}

async fn target(state: &AppState, id: &str) -> Result<User, WebError> {
    let id = UserId::parse(id).ok_or(WebError::NotFound)?;
    state.db.user(&id).await?.ok_or(WebError::NotFound)
}

#[derive(Deserialize)]
pub struct RoleForm {
    role: String,
}

fn refuse_self(admin: &crate::web::access::Principal, user: &User) -> Result<(), WebError> {
    if admin.user.id == user.id {
        return Err(WebError::BadRequest(
            "You cannot change your own role or disable yourself; ask another administrator."
                .into(),
        ));
    }
    Ok(())
}

async fn after(
    state: &AppState,
    ctx: &Ctx,
    result: crate::error::Result<()>,
    done: String,
) -> Result<Response, WebError> {
    match result {
        Ok(()) => users_view(state, ctx, Some(done), None).await,
        Err(crate::error::Error::Conflict(msg)) => users_view(state, ctx, None, Some(msg)).await,
        Err(e) => Err(e.into()),
    }
}

pub async fn set_role(
    State(state): State<AppState>,
    AdminPrincipal(admin): AdminPrincipal,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<RoleForm>,
) -> Result<Response, WebError> {
    let user = target(&state, &id).await?;
    refuse_self(&admin, &user)?;
    let role =
        Role::parse(&form.role).ok_or_else(|| WebError::BadRequest("Unknown role.".into()))?;
    let result =
        accounts::set_role(&state.db, &Actor::user(&admin.user, ctx.ip), &user, role).await;
    after(
        &state,
        &ctx,
        result,
        format!("{} is now {}.", user.username, role.as_str()),
    )
    .await
}

pub async fn unlock(
    State(state): State<AppState>,
    AdminPrincipal(admin): AdminPrincipal,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let user = target(&state, &id).await?;
    let result = accounts::unlock(&state.db, &Actor::user(&admin.user, ctx.ip), &user).await;
    after(
        &state,
        &ctx,
        result,
        format!("{} is unlocked.", user.username),
    )
    .await
}

pub async fn disable(
    State(state): State<AppState>,
    AdminPrincipal(admin): AdminPrincipal,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let user = target(&state, &id).await?;
    refuse_self(&admin, &user)?;
    let result = accounts::disable(&state.db, &Actor::user(&admin.user, ctx.ip), &user).await;
    after(
        &state,
        &ctx,
        result,
        format!("{} is disabled.", user.username),
    )
    .await
}

pub async fn enable(
    State(state): State<AppState>,
    AdminPrincipal(admin): AdminPrincipal,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let user = target(&state, &id).await?;
    let result = accounts::enable(&state.db, &Actor::user(&admin.user, ctx.ip), &user).await;
    after(
        &state,
        &ctx,
        result,
        format!("{} is enabled.", user.username),
    )
    .await
}

#[derive(Deserialize)]
pub struct Paging {
    before: Option<i64>,
}

pub async fn audit_page(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    ctx: Ctx,
    Query(paging): Query<Paging>,
) -> Result<Response, WebError> {
    const PAGE: i64 = 200;
    let report = state.db.verify_audit_chain().await?;
    let entries = state.db.audit_entries(PAGE, paging.before).await?;
    let older = (entries.len() as i64 == PAGE)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    let (intact, chain) = match report.first_broken {
        None => (
            true,
            format!("Chain intact: {} entries verified.", report.entries),
        ),
        Some(seq) => (
            false,
            format!(
                "TAMPERING DETECTED: the audit chain breaks at entry {seq}. Entries from there on cannot be trusted."
            ),
        ),
    };
    pages::render(AuditPage {
        c: ctx.chrome(&state, "Audit log"),
        intact,
        chain,
        entries: entries
            .into_iter()
            .map(|e| AuditRow {
                seq: e.seq,
                at: pages::fmt_time(e.at),
                actor: e.actor,
                source: e.source,
                action: e.action,
                target: e.target,
                outcome: e.outcome,
                detail: e.detail,
            })
            .collect(),
        older,
    })
}

/// `GET /retention` (admin): the retention job's last and next run and what it
/// deleted, as counts (DATA-2).
pub async fn retention_page(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    ctx: Ctx,
) -> Result<Response, WebError> {
    let retention = &state.config.retention;
    let runs = crate::retention::recent_runs(&state.db, crate::retention::RUNS_SHOWN).await?;
    let interval = i64::try_from(retention.interval_minutes)
        .unwrap_or(i64::MAX / 120)
        .saturating_mul(60);
    let (last_run, next_run, last_counts) = match runs.first() {
        Some(last) => (
            pages::fmt_time(last.finished_at),
            pages::fmt_time(last.started_at.saturating_add(interval)),
            last.counts.clone(),
        ),
        None => (
            "never".to_owned(),
            format!(
                "{} seconds after the hub starts, then every {} minutes",
                crate::retention::FIRST_RUN_DELAY.as_secs(),
                retention.interval_minutes
            ),
            Vec::new(),
        ),
    };
    pages::render(RetentionPage {
        c: ctx.chrome(&state, "Retention"),
        interval_minutes: retention.interval_minutes,
        batch_rows: retention.batch_rows,
        last_run,
        next_run,
        last_counts,
        runs: runs
            .iter()
            .map(|r| {
                (
                    pages::fmt_time(r.started_at),
                    pages::fmt_time(r.finished_at),
                    r.counts.iter().map(|(_, n)| n).sum(),
                    r.error.clone(),
                )
            })
            .collect(),
        periods: crate::privacy::inventory::periods(retention),
    })
}
