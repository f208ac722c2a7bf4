//! The owner's privacy page `/account/privacy` (what is collected about them, consents,
//! policy acceptance), the export of their data (DATA-4: console download and
//! `GET /api/v1/me/export`, streamed) and the deletion of their account (DATA-3). Both
//! need a recent re-authentication (`web::reauth`); every step is audited.

use super::AppState;
use super::access::Principal;
use super::console::{Ctx, clear_session_cookie, redirect};
use super::error::WebError;
use super::pages::{self, Chrome};
use super::reauth;
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::privacy::{self, erase, export, inventory};
use askama::Template;
use axum::Form;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Frame;
use serde::Deserialize;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

#[derive(Template)]
#[template(path = "owner_privacy.html")]
pub struct OwnerPrivacyPage {
    pub c: Chrome,
    pub username: String,
    pub email: String,
    pub inventory: inventory::Inventory,
    pub devices: Vec<(String, String, String)>,
    pub marketing: bool,
    pub marketing_changed: String,
    pub policy_accepted: String,
    pub policy_current: String,
    pub mfa: bool,
    /// Re-authenticated within the window: export and delete are offered.
    pub recent: bool,
    pub window_minutes: i64,
    pub last_admin: bool,
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    done: String,
}

async fn render_page(
    state: &AppState,
    ctx: &Ctx,
    notice: Option<String>,
    error: Option<String>,
    recent_override: Option<bool>,
) -> Result<Response, WebError> {
    let me = ctx.me()?;
    let user = state
        .db
        .user(&me.user.id)
        .await?
        .ok_or(WebError::Unauthorized)?;
    let mut c = ctx.chrome(state, "Your data and privacy");
    c.notice = notice;
    c.error = error;
    let marketing = state
        .db
        .consent(&user.id, privacy::Purpose::Marketing)
        .await?;
    let devices = state
        .db
        .devices_owned_by(&user.id)
        .await?
        .into_iter()
        .map(|d| {
            (
                d.id.to_string(),
                d.product_id.to_string(),
                d.owned_since_ms
                    .map_or_else(String::new, |ms| pages::fmt_time(ms / 1000)),
            )
        })
        .collect();
    let policy_accepted = state
        .db
        .accepted_policy(&user.id)
        .await?
        .map_or_else(String::new, |(v, at)| {
            format!("version {v} on {}", pages::fmt_time(at))
        });
    let policy_current = state
        .db
        .current_policy()
        .await?
        .map_or_else(String::new, |p| p.version.to_string());
    let last_admin =
        user.role == crate::db::users::Role::Admin && state.db.active_admin_count().await? <= 1;
    pages::render(OwnerPrivacyPage {
        c,
        username: user.username.to_string(),
        email: user.email.to_string(),
        inventory: inventory::build(&state.db, &state.config.retention).await?,
        devices,
        marketing: marketing.granted,
        marketing_changed: marketing
            .changed_at
            .map_or_else(|| "never changed; off by default".into(), pages::fmt_time),
        policy_accepted,
        policy_current,
        mfa: user.has_mfa(),
        recent: recent_override.unwrap_or_else(|| reauth::is_recent(me)),
        window_minutes: reauth::WINDOW_SECS / 60,
        last_admin,
    })
}

/// `GET /account/privacy`.
pub async fn page(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<PageQuery>,
) -> Result<Response, WebError> {
    let notice = match q.done.as_str() {
        "reauth" => Some(format!(
            "Identity confirmed. For the next {} minutes you can export or delete your data.",
            reauth::WINDOW_SECS / 60
        )),
        _ => None,
    };
    render_page(&state, &ctx, notice, None, None).await
}

#[derive(Deserialize)]
pub struct ReauthForm {
    password: String,
    #[serde(default)]
    code: String,
}

/// `POST /account/privacy/reauth`: type the password (and code) again.
pub async fn reauth_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<ReauthForm>,
) -> Result<Response, WebError> {
    let me = ctx.me()?.clone();
    if reauth::confirm(
        &state,
        &me,
        ctx.ip,
        &form.password,
        &form.code,
        "data export or account deletion",
    )
    .await?
    {
        return Ok(redirect("/account/privacy?done=reauth"));
    }
    render_page(
        &state,
        &ctx,
        None,
        Some("The password or code is not correct.".into()),
        Some(false),
    )
    .await
}

/// A response body fed by a channel: the export task sends chunks as it produces them,
/// and waits when the client is slow (the channel is bounded).
struct ChannelBody(mpsc::Receiver<Vec<u8>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(Bytes::from(c)))))
    }
}

/// Start the export of `principal`'s data as a streamed ZIP download, audited first.
async fn stream_export(
    state: &AppState,
    principal: &Principal,
    ip: std::net::IpAddr,
) -> Result<Response, WebError> {
    let user = principal.user.clone();
    accounts::audit(
        &state.db,
        &Actor::user(&user, ip),
        "account.export",
        user.username.as_str(),
        Outcome::Success,
        "export started",
    )
    .await?;
    let (tx, rx) = mpsc::channel(export::CHANNEL_CHUNKS);
    let db = state.db.clone();
    let name = export::file_name(&user);
    tokio::spawn(async move {
        // An error ends the stream early: the client gets a truncated archive, which
        // every ZIP reader refuses (its directory is missing), never a partial one
        // that looks complete.
        match export::write(&db, &user, tx).await {
            Ok(Some(c)) => tracing::info!(
                user = %user.id, telemetry = c.telemetry, bytes = c.bytes, "data export finished"
            ),
            Ok(None) => tracing::info!(user = %user.id, "data export abandoned by the client"),
            Err(e) => tracing::warn!(user = %user.id, "data export failed: {e}"),
        }
    });
    let mut response = Body::new(ChannelBody(rx)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// The privacy page with the re-authentication form, as `403 Forbidden`.
async fn refused(state: &AppState, ctx: &Ctx) -> Result<Response, WebError> {
    let mut page = render_page(
        state,
        ctx,
        None,
        Some("Confirm your identity first: type your password again.".into()),
        Some(false),
    )
    .await?;
    *page.status_mut() = axum::http::StatusCode::FORBIDDEN;
    Ok(page)
}

/// `GET /account/export`: the download, after a recent re-authentication.
pub async fn export_download(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let me = ctx.me()?.clone();
    if reauth::require_recent(&state, &me, ctx.ip, &headers, "data export")
        .await
        .is_err()
    {
        return refused(&state, &ctx).await;
    }
    stream_export(&state, &me, ctx.ip).await
}

/// `GET /api/v1/me/export`: the same archive for scripts. With an API token the
/// password and code travel in this request (`reauth::PASSWORD_HEADER`,
/// `reauth::CODE_HEADER`); with a console session it must have re-authenticated recently.
pub async fn export_api(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Ctx,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    reauth::require_recent(&state, &principal, ctx.ip, &headers, "data export").await?;
    stream_export(&state, &principal, ctx.ip).await
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

/// `POST /account/delete`: delete the account, after a recent re-authentication and
/// typing the user name as confirmation.
pub async fn delete_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Form(form): Form<DeleteForm>,
) -> Result<Response, WebError> {
    let me = ctx.me()?.clone();
    if reauth::require_recent(&state, &me, ctx.ip, &headers, "account deletion")
        .await
        .is_err()
    {
        return refused(&state, &ctx).await;
    }
    if form.confirm.trim() != me.user.username.as_str() {
        return render_page(
            &state,
            &ctx,
            None,
            Some("Type your user name exactly to confirm the deletion.".into()),
            None,
        )
        .await;
    }
    let erased = match erase::erase_account(
        &state.db,
        &me.user,
        &ctx.ip.to_string(),
        &state.config.product_name,
    )
    .await
    {
        Ok(e) => e,
        Err(crate::error::Error::Conflict(why)) => {
            return render_page(&state, &ctx, None, Some(why), None).await;
        }
        Err(e) => return Err(e.into()),
    };
    let mut c = Chrome {
        title: "Your account was deleted".into(),
        product: state.config.product_name.clone(),
        nav: None,
        csrf: String::new(),
        notice: None,
        error: None,
    };
    c.notice = Some("Your account and your data were deleted.".into());
    let page = pages::render(pages::MessagePage {
        c,
        paragraphs: vec![
            format!(
                "{} devices were released; to use them again they must be claimed anew with the pairing code on their label.",
                erased.devices_released
            ),
            format!(
                "{} telemetry rows and {} device events were deleted, with your sessions, API tokens, consents and messages.",
                erased.telemetry_deleted, erased.events_deleted
            ),
            "A confirmation was sent to your former e-mail address. The security log keeps entries about past sign-ins and changes until its retention period ends (see the privacy policy).".into(),
        ],
        links: vec![("/privacy", "Privacy policy")],
    })?;
    Ok(clear_session_cookie(page))
}
