//! Setup, sign-in (password, then TOTP or recovery code), sign-out, owner sign-up
//! with e-mail verification, password recovery and invitation acceptance.

use super::{Ctx, clear_session_cookie, redirect, with_session_cookie};
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::now;
use crate::db::sessions::Stage;
use crate::db::tokens::Purpose;
use crate::db::users::{NewUser, Role, Status, User};
use crate::ids::{Email, Username};
use crate::mail::Category;
use crate::web::AppState;
use crate::web::error::WebError;
use crate::web::pages::{self, Field, FormPage, MessagePage};
use axum::Form;
use axum::extract::{Query, State};
use axum::response::Response;
use palisade_crypto::password::{self, Password, PasswordContext};
use palisade_crypto::totp::TotpSecret;
use serde::Deserialize;

const VERIFY_TTL: i64 = 24 * 3600;
const RESET_TTL: i64 = 3600;
pub const INVITE_TTL: i64 = 72 * 3600;

/// Count an authentication attempt from this source (AUTH-7, RES-2).
fn throttle(state: &AppState, ctx: &Ctx) -> Result<(), WebError> {
    state
        .auth
        .attempt_from(ctx.ip)
        .map_err(WebError::TooManyRequests)
}

/// The words a new password must not contain (AUTH-6).
fn context_words<'a>(state: &'a AppState, username: &'a str, email: &'a str) -> Vec<&'a str> {
    vec![
        username,
        email,
        state.config.product_name.as_str(),
        "palisade",
    ]
}

fn check_password(
    state: &AppState,
    typed: &str,
    username: &str,
    email: &str,
    has_mfa: bool,
) -> Result<Password, String> {
    let password = Password::new(typed);
    password::check_policy(
        &password,
        &PasswordContext {
            words: context_words(state, username, email),
            has_mfa,
        },
    )
    .map_err(|r| r.to_string())?;
    Ok(password)
}

/// Validate what a new account was given (setup, sign-up): the first problem, as the
/// message to show, or the typed values.
fn new_account(
    state: &AppState,
    username: &str,
    email: &str,
    password: &str,
) -> Result<(Username, Email, Password), String> {
    let username = Username::parse(username).map_err(|e| e.to_string())?;
    let email = Email::parse(email).map_err(|e| e.to_string())?;
    let password = check_password(state, password, username.as_str(), email.as_str(), false)?;
    Ok((username, email, password))
}

fn password_hint() -> String {
    format!(
        "At least {} characters; up to {}. Any characters, including spaces and emoji. A few unrelated words make a strong passphrase.",
        password::MIN_LEN_SINGLE_FACTOR,
        password::MAX_LEN
    )
}

// ---------------------------------------------------------------- setup

#[derive(Deserialize)]
pub struct SetupForm {
    code: String,
    username: String,
    email: String,
    password: String,
}

fn setup_page(
    state: &AppState,
    ctx: &Ctx,
    error: Option<String>,
    form: Option<&SetupForm>,
) -> Result<Response, WebError> {
    let mut c = ctx.chrome(state, "Set up this hub");
    c.error = error;
    pages::render(FormPage {
        c,
        intro: vec![
            "Enter the one-time setup code printed by the hub when it started (or run `palisade setup --new-code` on the hub machine), and create the first administrator.".into(),
            "There is no default account or password: this administrator is the only way in. You will set up two-factor authentication next.".into(),
        ],
        action: "/setup",
        fields: vec![
            Field::text("code", "Setup code", "off"),
            Field::text("username", "Administrator user name", "username").value(form.map_or("", |f| f.username.as_str())),
            Field::email("email", "E-mail").value(form.map_or("", |f| f.email.as_str())),
            Field::password("password", "Password", "new-password").hint(password_hint()),
        ],
        submit: "Create administrator",
        links: vec![],
    })
}

pub async fn setup_form(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    if state.db.active_admin_count().await? > 0 {
        return Err(WebError::NotFound);
    }
    setup_page(&state, &ctx, None, None)
}

pub async fn setup_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<SetupForm>,
) -> Result<Response, WebError> {
    if state.db.active_admin_count().await? > 0 {
        return Err(WebError::NotFound);
    }
    throttle(&state, &ctx)?;
    let actor = Actor::anonymous(ctx.ip);
    let fail = |msg: String| setup_page(&state, &ctx, Some(msg), Some(&form));
    if !state.db.setup_code_valid(&form.code).await? {
        accounts::audit(
            &state.db,
            &actor,
            "setup",
            "-",
            Outcome::Failure,
            "invalid or expired setup code",
        )
        .await?;
        return fail("That setup code is not valid: it may be mistyped, used or expired. Run `palisade setup --new-code` on the hub for a new one.".into());
    }
    let (username, email, password) =
        match new_account(&state, &form.username, &form.email, &form.password) {
            Ok(parts) => parts,
            Err(msg) => return fail(msg),
        };
    let hash = state.auth.hash(password).await?;
    // Use the code up only now, atomically: exactly one request can win it.
    if !state.db.consume_setup_code(&form.code).await? {
        return fail("That setup code was just used or has expired.".into());
    }
    let user = state
        .db
        .insert_user(NewUser {
            username: &username,
            email: &email,
            role: Role::Admin,
            status: Status::Active,
            password_hash: Some(&hash),
        })
        .await
        .map_err(WebError::Internal)?;
    state
        .db
        .set_totp_pending(&user.id, Some(&TotpSecret::generate().to_base32()))
        .await?;
    accounts::audit(
        &state.db,
        &actor,
        "setup",
        username.as_str(),
        Outcome::Success,
        "first administrator created",
    )
    .await?;
    let (token, _) = state
        .db
        .create_session(
            &user.id,
            Stage::Enrol,
            state.auth.session_times,
            &ctx.ip.to_string(),
            &ctx.user_agent,
        )
        .await?;
    Ok(with_session_cookie(
        redirect("/mfa/enrol"),
        &token,
        state.auth.session_times.idle_secs,
    ))
}

// ---------------------------------------------------------------- sign-in

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
}

fn login_page(
    state: &AppState,
    ctx: &Ctx,
    error: Option<String>,
    notice: Option<String>,
    username: &str,
) -> Result<Response, WebError> {
    let mut c = ctx.chrome(state, "Sign in");
    c.error = error;
    c.notice = notice;
    pages::render(FormPage {
        c,
        intro: vec![],
        action: "/login",
        fields: vec![
            Field::text("username", "User name", "username").value(username),
            Field::password("password", "Password", "current-password"),
        ],
        submit: "Sign in",
        links: vec![
            ("/recover", "Forgot your password?"),
            ("/signup", "Create an owner account"),
        ],
    })
}

pub async fn login_form(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    if ctx.principal.as_ref().is_some_and(|p| p.is_full()) {
        return Ok(redirect("/"));
    }
    login_page(&state, &ctx, None, None, "")
}

const BAD_CREDENTIALS: &str = "The user name or password is not correct.";

fn locked_message(until: i64, hard: bool) -> String {
    if hard {
        "This account is locked after too many failed attempts. Use the link we e-mailed (or \"Forgot your password?\"), or ask an administrator to unlock it.".into()
    } else {
        let wait = (until - now()).max(1);
        format!(
            "Too many failed attempts. Wait {wait} seconds before trying again, or reset your password."
        )
    }
}

/// End the session the request came with (a new one is issued at every sign-in step,
/// so a token planted before sign-in is worthless: session fixation).
async fn end_current_session(state: &AppState, ctx: &Ctx) -> Result<(), WebError> {
    if let Some(s) = ctx.principal.as_ref().and_then(|p| p.session()) {
        state.db.delete_session(&s.token_hash).await?;
    }
    Ok(())
}

pub async fn login_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    throttle(&state, &ctx)?;
    let actor = Actor::anonymous(ctx.ip);
    let user = match Username::parse(&form.username) {
        Ok(name) => state.db.user_by_username(&name).await?,
        Err(_) => None,
    };
    let Some(user) = user else {
        // Same work as a real check, so timing does not reveal which accounts exist.
        state
            .auth
            .verify(Password::new(&form.password), None)
            .await?;
        accounts::audit(
            &state.db,
            &actor,
            "login",
            "unknown account",
            Outcome::Failure,
            "no such user",
        )
        .await?;
        return login_page(
            &state,
            &ctx,
            Some(BAD_CREDENTIALS.into()),
            None,
            &form.username,
        );
    };
    let actor = Actor {
        name: user.username.to_string(),
        source: ctx.ip.to_string(),
    };
    if user.is_locked(now()) {
        accounts::audit(
            &state.db,
            &actor,
            "login",
            user.username.as_str(),
            Outcome::Denied,
            "account locked",
        )
        .await?;
        return login_page(
            &state,
            &ctx,
            Some(locked_message(user.locked_until, user.hard_locked)),
            None,
            &form.username,
        );
    }
    let ok = state
        .auth
        .verify(Password::new(&form.password), user.password_hash.clone())
        .await?;
    if !ok {
        let (until, hard) = accounts::record_failure(
            &state.db,
            &actor,
            &user,
            "wrong password",
            &state.config.public_url,
        )
        .await?;
        let message = if until > 0 || hard {
            locked_message(until, hard)
        } else {
            BAD_CREDENTIALS.into()
        };
        return login_page(&state, &ctx, Some(message), None, &form.username);
    }
    match user.status {
        Status::Active => {}
        Status::Pending => {
            return login_page(
                &state,
                &ctx,
                Some("Confirm your e-mail address first: open the link we sent you.".into()),
                None,
                &form.username,
            );
        }
        Status::Disabled => {
            accounts::audit(
                &state.db,
                &actor,
                "login",
                user.username.as_str(),
                Outcome::Denied,
                "account disabled",
            )
            .await?;
            return login_page(
                &state,
                &ctx,
                Some("This account is disabled. Ask an administrator.".into()),
                None,
                &form.username,
            );
        }
    }
    end_current_session(&state, &ctx).await?;
    let times = state.auth.session_times;
    if user.has_mfa() {
        let (token, _) = state
            .db
            .create_session(
                &user.id,
                Stage::Mfa,
                times,
                &ctx.ip.to_string(),
                &ctx.user_agent,
            )
            .await?;
        return Ok(with_session_cookie(
            redirect("/login/mfa"),
            &token,
            times.idle_secs,
        ));
    }
    if user.role.requires_mfa() {
        if user.totp_pending.is_none() {
            state
                .db
                .set_totp_pending(&user.id, Some(&TotpSecret::generate().to_base32()))
                .await?;
        }
        let (token, _) = state
            .db
            .create_session(
                &user.id,
                Stage::Enrol,
                times,
                &ctx.ip.to_string(),
                &ctx.user_agent,
            )
            .await?;
        return Ok(with_session_cookie(
            redirect("/mfa/enrol"),
            &token,
            times.idle_secs,
        ));
    }
    complete_sign_in(&state, &ctx, &user, "password").await
}

/// Issue the full session after every factor passed.
pub(super) async fn complete_sign_in(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    factors: &str,
) -> Result<Response, WebError> {
    end_current_session(state, ctx).await?;
    let times = state.auth.session_times;
    let (token, _) = state
        .db
        .create_session(
            &user.id,
            Stage::Full,
            times,
            &ctx.ip.to_string(),
            &ctx.user_agent,
        )
        .await?;
    state.db.record_login(&user.id).await?;
    let actor = Actor::user(user, ctx.ip);
    accounts::audit(
        &state.db,
        &actor,
        "login",
        user.username.as_str(),
        Outcome::Success,
        factors,
    )
    .await?;
    accounts::notify(
        &state.db,
        user,
        "New sign-in to your account",
        &format!(
            "Someone signed in to your account from {} ({}) at {}.",
            ctx.ip,
            ctx.user_agent.chars().take(80).collect::<String>(),
            pages::fmt_time(now())
        ),
    )
    .await?;
    Ok(with_session_cookie(
        redirect("/"),
        &token,
        times.absolute_secs,
    ))
}

#[derive(Deserialize)]
pub struct CodeForm {
    code: String,
}

fn mfa_page(state: &AppState, ctx: &Ctx, error: Option<String>) -> Result<Response, WebError> {
    let mut c = ctx.chrome(state, "Two-factor authentication");
    c.error = error;
    pages::render(FormPage {
        c,
        intro: vec![
            "Enter the six-digit code from your authenticator app, or one of your recovery codes."
                .into(),
        ],
        action: "/login/mfa",
        fields: vec![Field::text("code", "Code", "one-time-code")],
        submit: "Verify",
        links: vec![],
    })
}

pub async fn mfa_form(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    mfa_page(&state, &ctx, None)
}

/// Check a TOTP code (refusing replays) or use up a recovery code.
pub(crate) async fn check_second_factor(
    state: &AppState,
    user: &User,
    code: &str,
) -> Result<Option<&'static str>, WebError> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
        let Some(secret) = user.totp_secret.as_deref().and_then(decode_secret) else {
            return Ok(None);
        };
        let Some(step) = secret.verify(&digits, now().max(0) as u64) else {
            return Ok(None);
        };
        return Ok(state
            .db
            .accept_totp_step(&user.id, step as i64)
            .await?
            .then_some("password+totp"));
    }
    let digest = palisade_crypto::token::digest(&palisade_crypto::token::normalize_code(code));
    Ok(state
        .db
        .use_recovery_code(&user.id, &digest)
        .await?
        .then_some("password+recovery code"))
}

pub(super) fn decode_secret(base32: &str) -> Option<TotpSecret> {
    data_encoding::BASE32_NOPAD
        .decode(base32.as_bytes())
        .ok()
        .and_then(|b| TotpSecret::from_bytes(b).ok())
}

pub async fn mfa_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CodeForm>,
) -> Result<Response, WebError> {
    throttle(&state, &ctx)?;
    let user = ctx.me()?.user.clone();
    let actor = Actor::user(&user, ctx.ip);
    if user.is_locked(now()) {
        end_current_session(&state, &ctx).await?;
        return Ok(clear_session_cookie(login_page(
            &state,
            &ctx,
            Some(locked_message(user.locked_until, user.hard_locked)),
            None,
            "",
        )?));
    }
    match check_second_factor(&state, &user, &form.code).await? {
        Some(factors) => complete_sign_in(&state, &ctx, &user, factors).await,
        None => {
            let (until, hard) = accounts::record_failure(
                &state.db,
                &actor,
                &user,
                "wrong or reused second-factor code",
                &state.config.public_url,
            )
            .await?;
            if until > 0 || hard {
                end_current_session(&state, &ctx).await?;
                return Ok(clear_session_cookie(login_page(
                    &state,
                    &ctx,
                    Some(locked_message(until, hard)),
                    None,
                    "",
                )?));
            }
            mfa_page(&state, &ctx, Some("That code is not valid. Codes work once; wait for the next one if you just used this one.".into()))
        }
    }
}

pub async fn logout(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    if let Some(p) = &ctx.principal {
        end_current_session(&state, &ctx).await?;
        accounts::audit(
            &state.db,
            &Actor::user(&p.user, ctx.ip),
            "logout",
            p.user.username.as_str(),
            Outcome::Success,
            "",
        )
        .await?;
    }
    Ok(clear_session_cookie(redirect("/login")))
}

// ---------------------------------------------------------------- owner sign-up

#[derive(Deserialize)]
pub struct SignupForm {
    username: String,
    email: String,
    password: String,
}

fn signup_page(
    state: &AppState,
    ctx: &Ctx,
    error: Option<String>,
    form: Option<&SignupForm>,
) -> Result<Response, WebError> {
    let mut c = ctx.chrome(state, "Create an owner account");
    c.error = error;
    pages::render(FormPage {
        c,
        intro: vec!["Owner accounts are for people who own devices. We will e-mail you a link to confirm your address.".into()],
        action: "/signup",
        fields: vec![
            Field::text("username", "User name", "username").value(form.map_or("", |f| f.username.as_str())),
            Field::email("email", "E-mail").value(form.map_or("", |f| f.email.as_str())),
            Field::password("password", "Password", "new-password").hint(password_hint()),
        ],
        submit: "Create account",
        links: vec![("/login", "Already have an account? Sign in")],
    })
}

pub async fn signup_form(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    signup_page(&state, &ctx, None, None)
}

fn check_email_page(state: &AppState, ctx: &Ctx, email: &str) -> Result<Response, WebError> {
    pages::render(MessagePage {
        c: ctx.chrome(state, "Check your e-mail"),
        paragraphs: vec![format!(
            "If {email} can receive mail, a message with a confirmation link is on its way. The link works once, for 24 hours."
        )],
        links: vec![("/login", "Sign in")],
    })
}

pub async fn signup_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<SignupForm>,
) -> Result<Response, WebError> {
    throttle(&state, &ctx)?;
    let fail = |msg: String| signup_page(&state, &ctx, Some(msg), Some(&form));
    let (username, email, password) =
        match new_account(&state, &form.username, &form.email, &form.password) {
            Ok(parts) => parts,
            Err(msg) => return fail(msg),
        };
    // Hash before looking the address up, so both paths take the same time.
    let hash = state.auth.hash(password).await?;
    if let Some(existing) = state.db.user_by_email(&email).await? {
        // Do not reveal that the address has an account; tell its holder instead.
        accounts::notify(&state.db, &existing, "Sign-up attempt with your address", "Someone tried to create a new account with your e-mail address. You already have one; use \"Forgot your password?\" if you cannot sign in.").await?;
        return check_email_page(&state, &ctx, email.as_str());
    }
    if state.db.user_by_username(&username).await?.is_some() {
        return fail("That user name is taken. Choose another.".into());
    }
    let user = match state
        .db
        .insert_user(NewUser {
            username: &username,
            email: &email,
            role: Role::Owner,
            status: Status::Pending,
            password_hash: Some(&hash),
        })
        .await
    {
        Ok(u) => u,
        Err(crate::error::Error::Conflict(msg)) => return fail(msg),
        Err(e) => return Err(e.into()),
    };
    let token = state
        .db
        .create_one_time_token(&user.id, Purpose::VerifyEmail, VERIFY_TTL)
        .await?;
    state
        .db
        .enqueue_mail(
            email.as_str(),
            "Confirm your e-mail address",
            &format!("Hello {username},\n\nConfirm your address to finish creating your account (link valid 24 hours, works once):\n{}/verify-email?token={token}\n\nIf you did not sign up, ignore this message.\n", state.config.public_url),
            Category::Account,
        )
        .await?;
    accounts::audit(
        &state.db,
        &Actor::anonymous(ctx.ip),
        "signup",
        username.as_str(),
        Outcome::Success,
        "owner account pending verification",
    )
    .await?;
    check_email_page(&state, &ctx, email.as_str())
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// Links in e-mails only show a confirmation form (no state change on GET, and mail
/// scanners that prefetch links cannot use them up).
fn token_confirm_page(
    state: &AppState,
    ctx: &Ctx,
    title: &str,
    intro: &str,
    action: &'static str,
    token: &str,
    submit: &'static str,
) -> Result<Response, WebError> {
    pages::render(FormPage {
        c: ctx.chrome(state, title),
        intro: vec![intro.to_owned()],
        action,
        fields: vec![Field::hidden("token", token)],
        submit,
        links: vec![],
    })
}

fn plausible(token: &str) -> bool {
    (20..=100).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn link_invalid() -> WebError {
    WebError::BadRequest("This link is not valid: it may have expired or been used already.".into())
}

pub async fn verify_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<TokenQuery>,
) -> Result<Response, WebError> {
    if !plausible(&q.token) {
        return Err(link_invalid());
    }
    token_confirm_page(
        &state,
        &ctx,
        "Confirm your e-mail address",
        "Confirm that this address is yours to activate your account.",
        "/verify-email",
        &q.token,
        "Confirm",
    )
}

#[derive(Deserialize)]
pub struct TokenForm {
    token: String,
}

pub async fn verify_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<TokenForm>,
) -> Result<Response, WebError> {
    throttle(&state, &ctx)?;
    if !plausible(&form.token) {
        return Err(link_invalid());
    }
    let Some(user_id) = state
        .db
        .one_time_token_user(&form.token, Purpose::VerifyEmail, true)
        .await?
    else {
        return Err(link_invalid());
    };
    let user = state.db.user(&user_id).await?.ok_or_else(link_invalid)?;
    if user.status == Status::Pending {
        state.db.set_status(&user.id, Status::Active).await?;
    }
    accounts::audit(
        &state.db,
        &Actor::user(&user, ctx.ip),
        "email.verify",
        user.username.as_str(),
        Outcome::Success,
        "",
    )
    .await?;
    login_page(
        &state,
        &ctx,
        None,
        Some("Your e-mail address is confirmed. Sign in.".into()),
        user.username.as_str(),
    )
}

// ---------------------------------------------------------------- recovery

#[derive(Deserialize)]
pub struct RecoverForm {
    email: String,
}

pub async fn recover_form(State(state): State<AppState>, ctx: Ctx) -> Result<Response, WebError> {
    pages::render(FormPage {
        c: ctx.chrome(&state, "Reset your password"),
        intro: vec!["Enter your account's e-mail address. We will send a link to choose a new password; it also unlocks the account.".into()],
        action: "/recover",
        fields: vec![Field::email("email", "E-mail")],
        submit: "Send link",
        links: vec![("/login", "Back to sign-in")],
    })
}

pub async fn recover_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<RecoverForm>,
) -> Result<Response, WebError> {
    throttle(&state, &ctx)?;
    if let Ok(email) = Email::parse(&form.email)
        && let Some(user) = state.db.user_by_email(&email).await?
        && user.status != Status::Disabled
    {
        let token = state
            .db
            .create_one_time_token(&user.id, Purpose::ResetPassword, RESET_TTL)
            .await?;
        state
            .db
            .enqueue_mail(
                user.email.as_str(),
                "Reset your password",
                &format!("Hello {},\n\nChoose a new password here (link valid one hour, works once):\n{}/recover/reset?token={token}\n\nIf you did not ask for this, ignore this message; your password stays as it is.\n", user.username, state.config.public_url),
                Category::Account,
            )
            .await?;
        accounts::audit(
            &state.db,
            &Actor::anonymous(ctx.ip),
            "password.reset_requested",
            user.username.as_str(),
            Outcome::Success,
            "",
        )
        .await?;
    }
    pages::render(MessagePage {
        c: ctx.chrome(&state, "Check your e-mail"),
        paragraphs: vec![
            "If an account uses that address, a message with a reset link is on its way.".into(),
        ],
        links: vec![("/login", "Sign in")],
    })
}

#[derive(Deserialize)]
pub struct NewPasswordForm {
    token: String,
    password: String,
}

fn new_password_page(
    state: &AppState,
    ctx: &Ctx,
    title: &str,
    action: &'static str,
    token: &str,
    error: Option<String>,
) -> Result<Response, WebError> {
    let mut c = ctx.chrome(state, title);
    c.error = error;
    pages::render(FormPage {
        c,
        intro: vec![],
        action,
        fields: vec![
            Field::hidden("token", token),
            Field::password("password", "New password", "new-password").hint(password_hint()),
        ],
        submit: "Save password",
        links: vec![],
    })
}

pub async fn reset_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<TokenQuery>,
) -> Result<Response, WebError> {
    if !plausible(&q.token) {
        return Err(link_invalid());
    }
    new_password_page(
        &state,
        &ctx,
        "Choose a new password",
        "/recover/reset",
        &q.token,
        None,
    )
}

/// What redeeming an e-mailed link with a new password gave.
enum Redeemed {
    /// The link was valid and is now used up; the account and its new password hash.
    Done(User, String),
    /// The password was refused: the form again, with the reason (the link stays valid).
    Retry(Response),
}

/// The shared part of password reset and invitation: a throttled, single-use link
/// whose new password must pass the policy; the link is used up only once the new
/// password is hashed, so a refused password does not burn it.
async fn redeem_link(
    state: &AppState,
    ctx: &Ctx,
    form: &NewPasswordForm,
    purpose: Purpose,
) -> Result<Redeemed, WebError> {
    throttle(state, ctx)?;
    if !plausible(&form.token) {
        return Err(link_invalid());
    }
    let user_id = state
        .db
        .one_time_token_user(&form.token, purpose, false)
        .await?
        .ok_or_else(link_invalid)?;
    let user = state.db.user(&user_id).await?.ok_or_else(link_invalid)?;
    // An invitee has no second factor yet; a reset keeps the account's factor.
    let has_mfa = purpose == Purpose::ResetPassword && user.has_mfa();
    let (title, action) = match purpose {
        Purpose::Invite => ("Accept your invitation", "/invite"),
        _ => ("Choose a new password", "/recover/reset"),
    };
    let password = match check_password(
        state,
        &form.password,
        user.username.as_str(),
        user.email.as_str(),
        has_mfa,
    ) {
        Ok(p) => p,
        Err(msg) => {
            return Ok(Redeemed::Retry(new_password_page(
                state,
                ctx,
                title,
                action,
                &form.token,
                Some(msg),
            )?));
        }
    };
    let hash = state.auth.hash(password).await?;
    if state
        .db
        .one_time_token_user(&form.token, purpose, true)
        .await?
        .is_none()
    {
        return Err(link_invalid());
    }
    Ok(Redeemed::Done(user, hash))
}

pub async fn reset_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<NewPasswordForm>,
) -> Result<Response, WebError> {
    let (user, hash) = match redeem_link(&state, &ctx, &form, Purpose::ResetPassword).await? {
        Redeemed::Done(user, hash) => (user, hash),
        Redeemed::Retry(page) => return Ok(page),
    };
    state.db.set_password_hash(&user.id, &hash).await?;
    state.db.clear_failures(&user.id).await?;
    state.db.delete_user_sessions(&user.id, None).await?;
    state.db.revoke_user_api_tokens(&user.id).await?;
    if user.status == Status::Pending {
        // The link reached the address, which is what verification proves.
        state.db.set_status(&user.id, Status::Active).await?;
    }
    let actor = Actor::user(&user, ctx.ip);
    accounts::audit(
        &state.db,
        &actor,
        "password.reset",
        user.username.as_str(),
        Outcome::Success,
        "via e-mailed link; sessions and API tokens ended, lock cleared",
    )
    .await?;
    accounts::notify(
        &state.db,
        &user,
        "Your password was changed",
        "Your password was reset with an e-mailed link; every session was signed out and every API token revoked.",
    )
    .await?;
    login_page(
        &state,
        &ctx,
        None,
        Some("Your password is changed. Sign in with it.".into()),
        user.username.as_str(),
    )
}

// ---------------------------------------------------------------- invitations

pub async fn invite_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<TokenQuery>,
) -> Result<Response, WebError> {
    if !plausible(&q.token) {
        return Err(link_invalid());
    }
    new_password_page(
        &state,
        &ctx,
        "Accept your invitation",
        "/invite",
        &q.token,
        None,
    )
}

pub async fn invite_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<NewPasswordForm>,
) -> Result<Response, WebError> {
    let (user, hash) = match redeem_link(&state, &ctx, &form, Purpose::Invite).await? {
        Redeemed::Done(user, hash) => (user, hash),
        Redeemed::Retry(page) => return Ok(page),
    };
    state.db.set_password_hash(&user.id, &hash).await?;
    state.db.set_status(&user.id, Status::Active).await?;
    accounts::audit(
        &state.db,
        &Actor::user(&user, ctx.ip),
        "invite.accept",
        user.username.as_str(),
        Outcome::Success,
        user.role.as_str(),
    )
    .await?;
    if user.role.requires_mfa() {
        state
            .db
            .set_totp_pending(&user.id, Some(&TotpSecret::generate().to_base32()))
            .await?;
        end_current_session(&state, &ctx).await?;
        let times = state.auth.session_times;
        let (token, _) = state
            .db
            .create_session(
                &user.id,
                Stage::Enrol,
                times,
                &ctx.ip.to_string(),
                &ctx.user_agent,
            )
            .await?;
        return Ok(with_session_cookie(
            redirect("/mfa/enrol"),
            &token,
            times.idle_secs,
        ));
    }
    complete_sign_in(&state, &ctx, &user, "invitation").await
}
