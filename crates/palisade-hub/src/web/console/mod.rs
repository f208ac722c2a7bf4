//! Console pages (server-rendered HTML, forms, no scripts).

pub mod account;
pub mod admin;
pub mod advisories;
pub mod chart;
pub mod devices;
pub mod inbox;
pub mod reports;
pub mod signin;

use super::AppState;
use super::access::Principal;
use super::error::WebError;
use super::middleware::{ClientAddr, CsrfToken, SESSION_COOKIE, UnreadNotices, set_cookie};
use super::pages::{self, Chrome, HomePage};
use axum::Extension;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

/// What a console handler knows about the request.
pub struct Ctx {
    pub csrf: CsrfToken,
    pub ip: IpAddr,
    pub principal: Option<Principal>,
    pub user_agent: String,
    /// Unread notices of the signed-in user.
    pub unread: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Ctx {
            csrf: parts
                .extensions
                .get::<CsrfToken>()
                .cloned()
                .ok_or(WebError::Csrf)?,
            ip: parts
                .extensions
                .get::<ClientAddr>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0),
            principal: parts.extensions.get::<Principal>().cloned(),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            unread: parts.extensions.get::<UnreadNotices>().map_or(0, |u| u.0),
        })
    }
}

impl Ctx {
    pub fn chrome(&self, state: &AppState, title: &str) -> Chrome {
        let mut c = Chrome::new(
            title,
            &state.config.product_name,
            &self.csrf,
            self.principal.as_ref(),
        );
        if let Some(nav) = c.nav.as_mut() {
            nav.unread = self.unread;
        }
        c
    }
    /// The signed-in principal (the route's access decision guarantees one).
    pub fn me(&self) -> Result<&Principal, WebError> {
        self.principal.as_ref().ok_or(WebError::Unauthorized)
    }
}

/// `303 See Other` to `to`.
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Attach a new session cookie to a response.
pub fn with_session_cookie(mut response: Response, token: &str, max_age_secs: i64) -> Response {
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, token, max_age_secs),
    );
    response
}

/// Attach a cookie that removes the session cookie.
pub fn clear_session_cookie(mut response: Response) -> Response {
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    response
}

/// `/`: the console home when signed in; otherwise on to setup or sign-in.
pub async fn home(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let Some(p) = ctx.principal.as_ref().filter(|p| p.is_full()) else {
        if state.db.active_admin_count().await? == 0 {
            return Ok(redirect("/setup"));
        }
        return Ok(redirect("/login"));
    };
    if state.db.must_accept_policy(&p.user).await?.is_some() {
        return Ok(redirect("/privacy/accept"));
    }
    let mut chrome = ctx.chrome(&state, &format!("{} console", state.config.product_name));
    let mut notices = Vec::new();
    // SUP-2: models whose security support ends within 90 days.
    if let Some(banner) =
        crate::updates::support_banner(&state.db, &p.user.id, p.is_staff()).await?
    {
        notices.push(banner);
    }
    // ACC-4: administrators see that the hub runs with more privilege than it needs.
    if p.is_admin() && crate::privileges::runs_as_root() {
        notices.push(crate::privileges::ROOT_WARNING.to_owned());
    }
    if !notices.is_empty() {
        chrome = chrome.notice(notices.join(" "));
    }
    // Issue 4: TUF metadata about to expire (staff only; they re-sign it).
    if p.is_staff()
        && let Some(expiry) = crate::updates::expiry::banner(&state.updates)?
    {
        let text = match chrome.notice.take() {
            Some(support) => format!("{support} {expiry}"),
            None => expiry,
        };
        chrome = chrome.notice(text);
    }
    // VULN-2: the OpenPGP key that signs security.txt stops signing within 30 days.
    if p.is_admin()
        && let Some(warning) =
            crate::vuln::security_txt::key_warning(&state.config, crate::db::now())
    {
        chrome = chrome.error(warning);
    }
    pages::render(HomePage {
        c: chrome,
        username: p.user.username.to_string(),
        role: p.user.role.as_str(),
        mfa: p.user.has_mfa(),
        admin: p.is_admin(),
        last_login: p
            .user
            .last_login_at
            .map_or_else(|| "never".into(), pages::fmt_time),
    })
}

/// `Extension` re-export for handlers that need a typed principal.
pub type Me = Extension<Principal>;
