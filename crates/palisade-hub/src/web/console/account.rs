//! The signed-in user's own account: second-factor enrolment, password change,
//! recovery codes, sessions and API tokens. Every action is on the caller's own
//! account only (the user id comes from the session, never from the request).

use super::signin::{check_second_factor, decode_secret};
use super::{Ctx, redirect, with_session_cookie};
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::now;
use crate::db::sessions::Stage;
use crate::web::AppState;
use crate::web::error::WebError;
use crate::web::pages::{self, AccountPage, CodesPage, EnrolPage, TokenRow};
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use palisade_crypto::password::{self, Password, PasswordContext};
use palisade_crypto::token;
use palisade_crypto::totp::{self, TotpSecret};
use serde::Deserialize;

/// API tokens live 90 days.
const API_TOKEN_TTL: i64 = 90 * 86_400;

/// Make ten new recovery codes for the account, store only their digests (the old
/// ones stop working), and return them to be shown once.
async fn replace_recovery_codes(
    state: &AppState,
    user: &crate::ids::UserId,
) -> Result<Vec<String>, WebError> {
    let codes = totp::recovery_codes();
    let digests: Vec<String> = codes
        .iter()
        .map(|c| token::digest(&token::normalize_code(c)))
        .collect();
    state.db.replace_recovery_codes(user, &digests).await?;
    Ok(codes)
}

pub async fn enrol_form(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let me = ctx.me()?;
    let Some(secret) = me.user.totp_pending.as_deref().and_then(decode_secret) else {
        // Nothing pending: a full session starts enrolment from the account page.
        return Ok(redirect("/account"));
    };
    pages::render(EnrolPage {
        c: ctx.chrome(&state, "Set up two-factor authentication"),
        required: me.user.role.requires_mfa(),
        qr_svg: pages::qr_svg(
            &secret.provisioning_uri(&state.config.product_name, me.user.username.as_str()),
        ),
        uri: secret.provisioning_uri(&state.config.product_name, me.user.username.as_str()),
        secret: secret.to_base32(),
    })
}

#[derive(Deserialize)]
pub struct CodeForm {
    code: String,
}

pub async fn enrol_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CodeForm>,
) -> Result<Response, WebError> {
    state
        .auth
        .attempt_from(ctx.ip)
        .map_err(WebError::TooManyRequests)?;
    let me = ctx.me()?.clone();
    let actor = Actor::user(&me.user, ctx.ip);
    let Some(secret) = me.user.totp_pending.as_deref().and_then(decode_secret) else {
        return Ok(redirect("/account"));
    };
    let Some(step) = secret.verify(&form.code, now().max(0) as u64) else {
        accounts::audit(
            &state.db,
            &actor,
            "mfa.enrol",
            me.user.username.as_str(),
            Outcome::Failure,
            "wrong code",
        )
        .await?;
        let mut c = ctx.chrome(&state, "Set up two-factor authentication");
        c.error = Some("That code is not right. Check the app shows the account you just added, and that this device's clock is correct.".into());
        return pages::render(EnrolPage {
            c,
            required: me.user.role.requires_mfa(),
            qr_svg: pages::qr_svg(
                &secret.provisioning_uri(&state.config.product_name, me.user.username.as_str()),
            ),
            uri: secret.provisioning_uri(&state.config.product_name, me.user.username.as_str()),
            secret: secret.to_base32(),
        });
    };
    if !state.db.activate_totp(&me.user.id, step as i64).await? {
        return Ok(redirect("/account"));
    }
    let codes = replace_recovery_codes(&state, &me.user.id).await?;
    accounts::audit(
        &state.db,
        &actor,
        "mfa.enrol",
        me.user.username.as_str(),
        Outcome::Success,
        "totp",
    )
    .await?;
    accounts::notify(
        &state.db,
        &me.user,
        "Two-factor authentication turned on",
        "Two-factor authentication (TOTP) was turned on for your account.",
    )
    .await?;
    let page = CodesPage {
        c: ctx.chrome(&state, "Save your recovery codes"),
        codes,
        next: "/",
    };
    let session = me.session().ok_or(WebError::Unauthorized)?;
    if session.stage == Stage::Enrol {
        // Enrolment completes sign-in: a fresh full session replaces the enrolment one.
        state.db.delete_session(&session.token_hash).await?;
        let times = state.auth.session_times;
        let (token, _) = state
            .db
            .create_session(
                &me.user.id,
                Stage::Full,
                times,
                &ctx.ip.to_string(),
                &ctx.user_agent,
            )
            .await?;
        state.db.record_login(&me.user.id).await?;
        accounts::audit(
            &state.db,
            &actor,
            "login",
            me.user.username.as_str(),
            Outcome::Success,
            "password+totp enrolment",
        )
        .await?;
        let mut c = page.c.clone();
        c.nav = Some(pages::Nav {
            username: me.user.username.to_string(),
            admin: me.user.role == crate::db::users::Role::Admin,
            staff: matches!(
                me.user.role,
                crate::db::users::Role::Admin | crate::db::users::Role::Operator
            ),
            unread: 0,
        });
        c.csrf = state
            .db
            .session(&token, times)
            .await?
            .map(|s| s.csrf)
            .unwrap_or_default();
        return Ok(with_session_cookie(
            pages::render(CodesPage { c, ..page })?,
            &token,
            times.absolute_secs,
        ));
    }
    pages::render(page)
}

async fn account_page(
    state: &AppState,
    ctx: &Ctx,
    notice: Option<String>,
    error: Option<String>,
    new_token: Option<String>,
) -> Result<Response, WebError> {
    let me = ctx.me()?;
    let user = state
        .db
        .user(&me.user.id)
        .await?
        .ok_or(WebError::Unauthorized)?;
    let mut c = ctx.chrome(state, "Your account");
    c.notice = notice;
    c.error = error;
    let sessions = state
        .db
        .user_sessions(&user.id)
        .await?
        .into_iter()
        .map(|(_, created, seen, source, agent)| {
            (
                pages::fmt_time(created),
                pages::fmt_time(seen),
                source,
                agent.chars().take(60).collect(),
            )
        })
        .collect();
    let tokens = state
        .db
        .api_tokens(&user.id)
        .await?
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            name: t.name,
            created: pages::fmt_time(t.created_at),
            expires: pages::fmt_time(t.expires_at),
            last_used: t
                .last_used_at
                .map_or_else(|| "never".into(), pages::fmt_time),
        })
        .collect();
    let marketing = state
        .db
        .consent(&user.id, crate::privacy::Purpose::Marketing)
        .await?;
    let policy_accepted = state
        .db
        .accepted_policy(&user.id)
        .await?
        .map_or_else(String::new, |(v, at)| {
            format!("version {v} on {}", pages::fmt_time(at))
        });
    pages::render(AccountPage {
        c,
        username: user.username.to_string(),
        email: user.email.to_string(),
        role: user.role.as_str(),
        min_len: if user.has_mfa() {
            password::MIN_LEN_WITH_MFA
        } else {
            password::MIN_LEN_SINGLE_FACTOR
        },
        mfa: user.has_mfa(),
        mfa_required: user.role.requires_mfa(),
        recovery_left: state.db.unused_recovery_codes(&user.id).await?,
        sessions,
        tokens,
        new_token,
        marketing: marketing.granted,
        marketing_changed: marketing
            .changed_at
            .map_or_else(|| "never changed; off by default".into(), pages::fmt_time),
        policy_accepted,
    })
}

pub async fn page(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    account_page(&state, &ctx, None, None, None).await
}

#[derive(Deserialize)]
pub struct PasswordChange {
    current: String,
    new_password: String,
}

pub async fn change_password(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<PasswordChange>,
) -> Result<Response, WebError> {
    state
        .auth
        .attempt_from(ctx.ip)
        .map_err(WebError::TooManyRequests)?;
    let me = ctx.me()?.clone();
    let actor = Actor::user(&me.user, ctx.ip);
    if !state
        .auth
        .verify(Password::new(&form.current), me.user.password_hash.clone())
        .await?
    {
        accounts::record_failure(
            &state.db,
            &actor,
            &me.user,
            "wrong current password at password change",
            &state.config.public_url,
        )
        .await?;
        return account_page(
            &state,
            &ctx,
            None,
            Some("The current password is not correct.".into()),
            None,
        )
        .await;
    }
    let new = Password::new(&form.new_password);
    let words = vec![
        me.user.username.as_str(),
        me.user.email.as_str(),
        state.config.product_name.as_str(),
        "palisade",
    ];
    if let Err(rejection) = password::check_policy(
        &new,
        &PasswordContext {
            words,
            has_mfa: me.user.has_mfa(),
        },
    ) {
        return account_page(&state, &ctx, None, Some(rejection.to_string()), None).await;
    }
    let hash = state.auth.hash(new).await?;
    state.db.set_password_hash(&me.user.id, &hash).await?;
    let current = me.session().map(|s| s.token_hash.as_str());
    let ended = state.db.delete_user_sessions(&me.user.id, current).await?;
    accounts::audit(
        &state.db,
        &actor,
        "password.change",
        me.user.username.as_str(),
        Outcome::Success,
        &format!("{ended} other sessions ended"),
    )
    .await?;
    accounts::notify(
        &state.db,
        &me.user,
        "Your password was changed",
        "The password of your account was changed, and your other sessions were signed out.",
    )
    .await?;
    account_page(
        &state,
        &ctx,
        Some(format!(
            "Password changed. {ended} other sessions were signed out."
        )),
        None,
        None,
    )
    .await
}

pub async fn mfa_start(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    let me = ctx.me()?;
    if me.user.has_mfa() {
        return Ok(redirect("/account"));
    }
    state
        .db
        .set_totp_pending(&me.user.id, Some(&TotpSecret::generate().to_base32()))
        .await?;
    Ok(redirect("/mfa/enrol"))
}

#[derive(Deserialize)]
pub struct DisableMfa {
    password: String,
    code: String,
}

pub async fn mfa_disable(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<DisableMfa>,
) -> Result<Response, WebError> {
    state
        .auth
        .attempt_from(ctx.ip)
        .map_err(WebError::TooManyRequests)?;
    let me = ctx.me()?.clone();
    let actor = Actor::user(&me.user, ctx.ip);
    if me.user.role.requires_mfa() {
        return Err(WebError::Forbidden);
    }
    let password_ok = state
        .auth
        .verify(Password::new(&form.password), me.user.password_hash.clone())
        .await?;
    let code_ok = password_ok
        && check_second_factor(&state, &me.user, &form.code)
            .await?
            .is_some();
    if !code_ok {
        accounts::record_failure(
            &state.db,
            &actor,
            &me.user,
            "failed re-authentication to turn off MFA",
            &state.config.public_url,
        )
        .await?;
        return account_page(
            &state,
            &ctx,
            None,
            Some("The password or code is not correct.".into()),
            None,
        )
        .await;
    }
    if Password::new(&form.password).chars() < password::MIN_LEN_SINGLE_FACTOR {
        return account_page(&state, &ctx, None, Some(format!(
            "Without two-factor authentication the password must have at least {} characters. Change your password first.",
            password::MIN_LEN_SINGLE_FACTOR
        )), None).await;
    }
    state.db.clear_totp(&me.user.id).await?;
    let current = me.session().map(|s| s.token_hash.as_str());
    state.db.delete_user_sessions(&me.user.id, current).await?;
    accounts::audit(
        &state.db,
        &actor,
        "mfa.disable",
        me.user.username.as_str(),
        Outcome::Success,
        "",
    )
    .await?;
    accounts::notify(
        &state.db,
        &me.user,
        "Two-factor authentication turned off",
        "Two-factor authentication was turned off for your account.",
    )
    .await?;
    account_page(
        &state,
        &ctx,
        Some("Two-factor authentication is off.".into()),
        None,
        None,
    )
    .await
}

pub async fn new_recovery_codes(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CodeForm>,
) -> Result<Response, WebError> {
    state
        .auth
        .attempt_from(ctx.ip)
        .map_err(WebError::TooManyRequests)?;
    let me = ctx.me()?.clone();
    let actor = Actor::user(&me.user, ctx.ip);
    if check_second_factor(&state, &me.user, &form.code)
        .await?
        .is_none()
    {
        accounts::record_failure(
            &state.db,
            &actor,
            &me.user,
            "wrong code for new recovery codes",
            &state.config.public_url,
        )
        .await?;
        return account_page(
            &state,
            &ctx,
            None,
            Some("That code is not valid.".into()),
            None,
        )
        .await;
    }
    let codes = replace_recovery_codes(&state, &me.user.id).await?;
    accounts::audit(
        &state.db,
        &actor,
        "mfa.recovery_codes",
        me.user.username.as_str(),
        Outcome::Success,
        "replaced",
    )
    .await?;
    accounts::notify(
        &state.db,
        &me.user,
        "New recovery codes",
        "New recovery codes were made for your account; the old ones no longer work.",
    )
    .await?;
    pages::render(CodesPage {
        c: ctx.chrome(&state, "Your new recovery codes"),
        codes,
        next: "/account",
    })
}

pub async fn end_other_sessions(
    State(state): State<AppState>,
    ctx: Ctx,
) -> Result<Response, WebError> {
    let me = ctx.me()?;
    let current = me.session().map(|s| s.token_hash.as_str());
    let ended = state.db.delete_user_sessions(&me.user.id, current).await?;
    accounts::audit(
        &state.db,
        &Actor::user(&me.user, ctx.ip),
        "sessions.end_others",
        me.user.username.as_str(),
        Outcome::Success,
        &format!("{ended} ended"),
    )
    .await?;
    account_page(
        &state,
        &ctx,
        Some(format!("{ended} other sessions were signed out.")),
        None,
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct TokenName {
    name: String,
}

pub async fn create_token(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<TokenName>,
) -> Result<Response, WebError> {
    let me = ctx.me()?;
    let name: String = form
        .name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    if name.is_empty() {
        return account_page(
            &state,
            &ctx,
            None,
            Some("Give the token a name.".into()),
            None,
        )
        .await;
    }
    let (id, raw) = state
        .db
        .create_api_token(&me.user.id, &name, API_TOKEN_TTL)
        .await?;
    accounts::audit(
        &state.db,
        &Actor::user(&me.user, ctx.ip),
        "api_token.create",
        &id,
        Outcome::Success,
        &name,
    )
    .await?;
    account_page(
        &state,
        &ctx,
        Some("API token created. Copy it now: it is not shown again.".into()),
        None,
        Some(raw),
    )
    .await
}

pub async fn revoke_token(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let me = ctx.me()?;
    if !state.db.revoke_api_token(&me.user.id, &id).await? {
        return Err(WebError::NotFound);
    }
    accounts::audit(
        &state.db,
        &Actor::user(&me.user, ctx.ip),
        "api_token.revoke",
        &id,
        Outcome::Success,
        "",
    )
    .await?;
    account_page(&state, &ctx, Some("Token revoked.".into()), None, None).await
}
