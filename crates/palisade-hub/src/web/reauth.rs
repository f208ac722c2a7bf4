//! The "recent re-authentication" gate in one place (DATA-3, DATA-4): exporting or
//! deleting an account needs the password, and the second factor when the account has
//! one, typed again within the last [`WINDOW_SECS`]. A stolen session cookie or an
//! unattended signed-in browser is then not enough to carry off or destroy an account.
//!
//! - Console sessions: `POST /account/privacy/reauth` checks the credentials with
//!   [`confirm`] and stamps the session (`sessions.reauth_at`); [`require_recent`]
//!   then admits the export and the deletion for [`WINDOW_SECS`].
//! - API tokens have no session to stamp: each sensitive API request carries the
//!   password and the current code itself (headers [`PASSWORD_HEADER`] and
//!   [`CODE_HEADER`]), checked by the same [`confirm`]. A token alone (a script's
//!   credential, often stored on disk) never suffices.
//!
//! Every failed attempt counts toward the account lockout like a failed sign-in, and
//! every attempt is audited.

use super::AppState;
use super::access::{Credential, Principal};
use super::console::signin::check_second_factor;
use super::error::WebError;
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::now;
use axum::http::HeaderMap;
use palisade_crypto::password::Password;

/// How long a re-authentication stays recent.
pub const WINDOW_SECS: i64 = 5 * 60;

/// API header carrying the account password for a sensitive API request.
pub const PASSWORD_HEADER: &str = "x-palisade-password";
/// API header carrying the current TOTP (or a recovery) code for a sensitive API request.
pub const CODE_HEADER: &str = "x-palisade-code";

/// Did the session's holder re-authenticate within the window? Never for API tokens.
pub fn is_recent(principal: &Principal) -> bool {
    match &principal.credential {
        Credential::Session(s) => s.reauth_at > 0 && now() - s.reauth_at < WINDOW_SECS,
        Credential::ApiToken => false,
    }
}

/// Check the password (and the second factor, if the account has one) of the caller.
/// On success a console session is stamped as recently re-authenticated. Failures are
/// recorded toward the lockout. Throttled per client address like sign-in.
pub async fn confirm(
    state: &AppState,
    principal: &Principal,
    ip: std::net::IpAddr,
    password: &str,
    code: &str,
    purpose: &str,
) -> Result<bool, WebError> {
    state
        .auth
        .attempt_from(ip)
        .map_err(WebError::TooManyRequests)?;
    let user = &principal.user;
    let actor = Actor::user(user, ip);
    // A locked account (after failed attempts) cannot confirm either.
    let password_ok = !user.is_locked(now())
        && state
            .auth
            .verify(Password::new(password), user.password_hash.clone())
            .await?;
    // The code is checked only after the password, so a wrong password does not burn
    // a TOTP step or a recovery code.
    let ok =
        password_ok && (!user.has_mfa() || check_second_factor(state, user, code).await?.is_some());
    if !ok {
        accounts::record_failure(
            &state.db,
            &actor,
            user,
            &format!("failed re-authentication for {purpose}"),
            &state.config.public_url,
        )
        .await?;
        return Ok(false);
    }
    state.db.clear_failures(&user.id).await?;
    if let Credential::Session(s) = &principal.credential {
        state.db.mark_reauthenticated(&s.token_hash).await?;
    }
    accounts::audit(
        &state.db,
        &actor,
        "reauth",
        user.username.as_str(),
        Outcome::Success,
        purpose,
    )
    .await?;
    Ok(true)
}

/// Admit the request only after a recent re-authentication: a console session stamped
/// within the window, or (API token) the password and code in this request's headers.
pub async fn require_recent(
    state: &AppState,
    principal: &Principal,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
    purpose: &str,
) -> Result<(), WebError> {
    match &principal.credential {
        Credential::Session(_) if is_recent(principal) => Ok(()),
        Credential::Session(_) => Err(WebError::Forbidden),
        Credential::ApiToken => {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            let password = header(PASSWORD_HEADER);
            if password.is_empty() {
                return Err(WebError::Forbidden);
            }
            if confirm(
                state,
                principal,
                ip,
                &password,
                &header(CODE_HEADER),
                purpose,
            )
            .await?
            {
                Ok(())
            } else {
                Err(WebError::Forbidden)
            }
        }
    }
}
