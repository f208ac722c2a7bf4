//! Request middleware: who is calling, CSRF defence, deadlines, and the headers and
//! error pages every response gets.

use super::AppState;
use super::access::{Credential, Principal};
use super::error::{ErrorMessage, WebError};
use crate::db::tokens::API_TOKEN_PREFIX;
use crate::db::users::Status;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};

/// Session cookie. `__Host-` pins it to this origin, path `/`, HTTPS only.
pub const SESSION_COOKIE: &str = "__Host-palisade_session";
/// Anti-CSRF cookie for forms shown before sign-in (double submit).
pub const CSRF_COOKIE: &str = "__Host-palisade_csrf";

/// The anti-CSRF token that forms on this page must send back.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// How many unread notices the signed-in user has (for the console header).
#[derive(Debug, Clone, Copy)]
pub struct UnreadNotices(pub i64);

/// The client's address (TLS peer; no proxy headers are trusted).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// The value of a cookie in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value with the attributes every Palisade cookie has.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

fn plausible_token(s: &str) -> bool {
    (20..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Resolve the caller from a bearer token or session cookie, and the CSRF token.
pub async fn resolve_principal(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, WebError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    request.extensions_mut().insert(ClientAddr(peer));
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_owned);
    let session_token = cookie(headers, SESSION_COOKIE)
        .filter(|t| plausible_token(t))
        .map(str::to_owned);
    let csrf_cookie = cookie(headers, CSRF_COOKIE)
        .filter(|t| plausible_token(t))
        .map(str::to_owned);

    let mut principal = None;
    let is_api = request.uri().path().starts_with("/api/");
    if let Some(raw) = bearer {
        // A presented but invalid token is refused outright, never treated as anonymous.
        // API tokens are for /api/ only: they cannot drive the console (for example to
        // mint more tokens or change the password).
        if !raw.starts_with(API_TOKEN_PREFIX) || !is_api {
            return Err(WebError::Unauthorized);
        }
        let user_id = state
            .db
            .api_token_user(&raw)
            .await?
            .ok_or(WebError::Unauthorized)?;
        let user = state
            .db
            .user(&user_id)
            .await?
            .ok_or(WebError::Unauthorized)?;
        if user.status != Status::Active {
            return Err(WebError::Unauthorized);
        }
        principal = Some(Principal {
            user,
            credential: Credential::ApiToken,
        });
    } else if let Some(raw) = &session_token
        && let Some(session) = state.db.session(raw, state.auth.session_times).await?
    {
        match state.db.user(&session.user_id).await? {
            Some(user) if user.status != Status::Disabled => {
                principal = Some(Principal {
                    user,
                    credential: Credential::Session(session),
                });
            }
            _ => state.db.delete_session(&session.token_hash).await?,
        }
    }
    let mut new_csrf_cookie = None;
    let csrf = match principal.as_ref().and_then(Principal::session) {
        Some(session) => session.csrf.clone(),
        None => match csrf_cookie {
            Some(existing) => existing,
            None => {
                let fresh = palisade_crypto::token::random_token();
                new_csrf_cookie = Some(fresh.clone());
                fresh
            }
        },
    };
    request.extensions_mut().insert(CsrfToken(csrf));
    // Console pages show the inbox count in the header: one COUNT on an index.
    if !is_api && let Some(p) = principal.as_ref().filter(|p| p.is_full()) {
        let n = state.db.unread_notices(&p.user.id).await?;
        request.extensions_mut().insert(UnreadNotices(n));
    }
    if let Some(p) = principal {
        request.extensions_mut().insert(p);
    }
    let mut response = next.run(request).await;
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if let Some(fresh) = new_csrf_cookie.filter(|_| is_page) {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(CSRF_COOKIE, &fresh, 12 * 3600),
        );
    }
    Ok(response)
}

/// Refuse state-changing requests that come from another site or lack the CSRF token
/// (WEB-1). Requests authenticated by an API token carry no ambient credential and
/// need no token.
pub async fn csrf(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, WebError> {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return Ok(next.run(request).await);
    }
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Err(WebError::Csrf);
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| request.uri().authority().map(|a| a.to_string()));
        if host.is_none_or(|h| origin != format!("https://{h}")) {
            return Err(WebError::Csrf);
        }
    }
    if request
        .extensions()
        .get::<Principal>()
        .is_some_and(|p| matches!(p.credential, Credential::ApiToken))
    {
        return Ok(next.run(request).await);
    }
    // Device enrolment is the one exemption from the token check. CSRF abuses an
    // ambient credential (a cookie the browser adds by itself); enrolment has none: its
    // only credential is the claim code in the JSON body, its handler reads no session
    // or cookie, so a forged cross-site request can do nothing its forger could not do
    // directly. Devices have no page to fetch a token from. The Origin and
    // Fetch-Metadata checks above still apply, and the handler takes JSON only, which a
    // cross-site page cannot send without a CORS preflight the hub never grants.
    if request.method() == Method::POST && request.uri().path() == super::devices::ENROL_PATH {
        return Ok(next.run(request).await);
    }
    let expected = request
        .extensions()
        .get::<CsrfToken>()
        .map(|t| t.0.clone())
        .ok_or(WebError::Csrf)?;
    if let Some(sent) = request
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        if palisade_crypto::token::constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
            return Ok(next.run(request).await);
        }
        return Err(WebError::Csrf);
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(WebError::Csrf);
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, state.config.limits.max_body_bytes)
        .await
        .map_err(|_| WebError::BadRequest("The request is too large.".into()))?;
    let sent = form_urlencoded_value(&bytes, "csrf");
    if !sent.is_some_and(|s| {
        palisade_crypto::token::constant_time_eq(s.as_bytes(), expected.as_bytes())
    }) {
        return Err(WebError::Csrf);
    }
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}

fn form_urlencoded_value(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded_pairs(body)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn serde_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default()
}

/// The deadlines requests get (RES-2): one total limit for every request, except the
/// streamed uploads listed in the route table (`Routes::upload`), which get a longer
/// total limit and a limit on the pause between two received chunks instead.
#[derive(Clone)]
pub struct RequestDeadlines {
    pub request: std::time::Duration,
    pub upload_idle: std::time::Duration,
    pub upload_total: std::time::Duration,
    /// `(method, route path)` of the upload routes.
    pub uploads: std::sync::Arc<[(&'static str, &'static str)]>,
}

/// An upload received nothing for `upload_idle_timeout_secs`.
#[derive(Debug)]
pub struct UploadStalled;

impl std::fmt::Display for UploadStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upload stalled")
    }
}

impl std::error::Error for UploadStalled {}

/// Whether a request body error is (or wraps) `UploadStalled`.
pub fn is_stalled(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    // Bounded: error chains are short, and each step moves to the source.
    for _ in 0..8 {
        match current {
            Some(e) if e.is::<UploadStalled>() => return true,
            Some(e) => current = e.source(),
            None => return false,
        }
    }
    false
}

/// Give every request a deadline.
pub async fn deadline(
    State(limits): State<RequestDeadlines>,
    request: Request,
    next: Next,
) -> Response {
    let is_upload = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|matched| {
            limits.uploads.iter().any(|(method, path)| {
                *path == matched.as_str() && request.method().as_str() == *method
            })
        });
    let (limit, request) = if is_upload {
        let idle = limits.upload_idle;
        let (parts, body) = request.into_parts();
        let chunks = futures_util::stream::unfold(Some(body.into_data_stream()), move |state| {
            use futures_util::StreamExt;
            async move {
                let mut inner = state?;
                match tokio::time::timeout(idle, inner.next()).await {
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(inner))),
                    Ok(Some(Err(e))) => Some((Err(axum::BoxError::from(e)), None)),
                    Ok(None) => None,
                    Err(_) => Some((Err(axum::BoxError::from(UploadStalled)), None)),
                }
            }
        });
        (
            limits.upload_total,
            Request::from_parts(parts, Body::from_stream(chunks)),
        )
    } else {
        (limits.request, request)
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => WebError::Timeout.into_response(),
    }
}

/// Security headers on every response (WEB-2, WEB-3), and console error pages.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    if !is_api
        && let Some(ErrorMessage(message)) = response.extensions().get::<ErrorMessage>().cloned()
    {
        let status = response.status();
        let retry = response.headers().get(header::RETRY_AFTER).cloned();
        let mut page = super::pages::error_page(status, &message).into_response();
        *page.status_mut() = status;
        if let Some(retry) = retry {
            page.headers_mut().insert(header::RETRY_AFTER, retry);
        }
        for cookie in response.headers().get_all(header::SET_COOKIE) {
            page.headers_mut()
                .append(header::SET_COOKIE, cookie.clone());
        }
        response = page;
    }
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    );
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    // `same-origin`, not `no-referrer`: with no-referrer browsers send `Origin: null` on
    // form posts, which the CSRF check (rightly) refuses. Nothing leaks to other sites.
    set(h, "referrer-policy", "same-origin");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    set(
        h,
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    response
}
