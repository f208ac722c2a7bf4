//! Account operations shared by the console, the API and the CLI: each one checks
//! its rules, records the audit event before returning (DESIGN.md invariant 9), and
//! tells the account holder by e-mail where the event concerns them (MON-3).

use crate::audit::{Event, Outcome};
use crate::db::users::{Role, Status, User};
use crate::db::{Db, now};
use crate::error::{Error, Result};
use crate::mail::Category;
use palisade_crypto::token;

/// How long a setup code is valid.
pub const SETUP_CODE_TTL_SECS: i64 = 30 * 60;

/// Who does something and from where, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub source: String,
}

impl Actor {
    pub fn user(user: &User, source: impl ToString) -> Self {
        Self {
            name: user.username.to_string(),
            source: source.to_string(),
        }
    }
    pub fn anonymous(source: impl ToString) -> Self {
        Self {
            name: "-".into(),
            source: source.to_string(),
        }
    }
    /// The local command line (someone with access to the hub's data directory).
    pub fn cli() -> Self {
        Self {
            name: "cli".into(),
            source: "local".into(),
        }
    }
}

/// Record an audit event.
pub async fn audit(
    db: &Db,
    actor: &Actor,
    action: &str,
    target: &str,
    outcome: Outcome,
    detail: &str,
) -> Result<()> {
    db.audit(Event {
        actor: &actor.name,
        source: &actor.source,
        action,
        target,
        outcome,
        detail,
    })
    .await
    .map(|_| ())
}

/// Queue a security notice to the account holder.
pub async fn notify(db: &Db, user: &User, subject: &str, body: &str) -> Result<()> {
    let text = format!(
        "Hello {},\n\n{}\n\nIf this was not you, reset your password at once and tell your administrator.\n",
        user.username, body
    );
    db.enqueue_mail(user.email.as_str(), subject, &text, Category::Security)
        .await
}

/// Issue a fresh one-time setup code (≥128 bits), replacing any earlier one. Refused
/// once an administrator exists: setup happens once.
pub async fn issue_setup_code(db: &Db, actor: &Actor) -> Result<String> {
    if db.active_admin_count().await? > 0 {
        return Err(Error::Conflict(
            "setup is already complete: an administrator exists. Sign in, or ask an administrator."
                .into(),
        ));
    }
    let code = token::human_code(130);
    db.store_setup_code(&code, SETUP_CODE_TTL_SECS).await?;
    audit(
        db,
        actor,
        "setup.code_issued",
        "-",
        Outcome::Success,
        "valid 30 minutes",
    )
    .await?;
    Ok(code)
}

/// Clear failed attempts and locks.
pub async fn unlock(db: &Db, actor: &Actor, user: &User) -> Result<()> {
    db.clear_failures(&user.id).await?;
    audit(
        db,
        actor,
        "user.unlock",
        user.username.as_str(),
        Outcome::Success,
        "",
    )
    .await?;
    notify(
        db,
        user,
        "Your account was unlocked",
        "An administrator unlocked your account after failed sign-in attempts.",
    )
    .await
}

/// Disable an account: it can no longer sign in, and its sessions and tokens end.
pub async fn disable(db: &Db, actor: &Actor, user: &User) -> Result<()> {
    if user.role == Role::Admin
        && user.status == Status::Active
        && db.active_admin_count().await? <= 1
    {
        return Err(Error::Conflict(
            "The last administrator cannot be disabled.".into(),
        ));
    }
    db.set_status(&user.id, Status::Disabled).await?;
    db.delete_user_sessions(&user.id, None).await?;
    db.revoke_user_api_tokens(&user.id).await?;
    audit(
        db,
        actor,
        "user.disable",
        user.username.as_str(),
        Outcome::Success,
        "",
    )
    .await
}

/// Enable a disabled account.
pub async fn enable(db: &Db, actor: &Actor, user: &User) -> Result<()> {
    db.set_status(&user.id, Status::Active).await?;
    audit(
        db,
        actor,
        "user.enable",
        user.username.as_str(),
        Outcome::Success,
        "",
    )
    .await
}

/// Change an account's role; the last administrator keeps theirs.
pub async fn set_role(db: &Db, actor: &Actor, user: &User, role: Role) -> Result<()> {
    if user.role == Role::Admin && role != Role::Admin && db.active_admin_count().await? <= 1 {
        return Err(Error::Conflict(
            "The last administrator cannot lose that role.".into(),
        ));
    }
    db.set_role(&user.id, role).await?;
    // A changed role takes effect at the next sign-in: end current sessions.
    db.delete_user_sessions(&user.id, None).await?;
    let detail = format!("{} -> {}", user.role.as_str(), role.as_str());
    audit(
        db,
        actor,
        "user.role",
        user.username.as_str(),
        Outcome::Success,
        &detail,
    )
    .await?;
    notify(
        db,
        user,
        "Your role changed",
        &format!("Your role on the hub changed from {}.", detail),
    )
    .await
}

/// Remove an account's second factor (lost authenticator and recovery codes), after
/// the holder's identity was checked out of band. The password goes too — it may be
/// one of the 8–14 characters allowed only with a second factor — so the holder
/// chooses a new one through the e-mailed link (≥15 characters without MFA); their
/// sessions and API tokens end. Administrators enrol again at their next sign-in.
pub async fn reset_mfa(db: &Db, actor: &Actor, user: &User, public_url: &str) -> Result<()> {
    db.clear_totp(&user.id).await?;
    db.clear_password_hash(&user.id).await?;
    db.delete_user_sessions(&user.id, None).await?;
    db.revoke_user_api_tokens(&user.id).await?;
    audit(
        db,
        actor,
        "mfa.reset",
        user.username.as_str(),
        Outcome::Success,
        "second factor and password removed by an administrator",
    )
    .await?;
    let link = db
        .create_one_time_token(
            &user.id,
            crate::db::tokens::Purpose::ResetPassword,
            24 * 3600,
        )
        .await?;
    notify(
        db,
        user,
        "Two-factor authentication was reset",
        &format!(
            "An administrator removed the two-factor authentication and the password of your account. Choose a new password here (valid 24 hours, works once):\n{public_url}/recover/reset?token={link}\nThen set up two-factor authentication again (administrators are asked at their next sign-in)."
        ),
    )
    .await
}

/// Record a failed sign-in step and apply the lockout policy. Returns the lock state.
pub async fn record_failure(
    db: &Db,
    actor: &Actor,
    user: &User,
    what: &str,
    public_url: &str,
) -> Result<(i64, bool)> {
    let failures = db.add_failed_login(&user.id).await?;
    let (delay, hard) = crate::auth::lock_for(failures);
    let until = if delay > 0 { now() + delay } else { 0 };
    if delay > 0 || hard {
        db.set_lock(&user.id, until, hard).await?;
    }
    let detail = format!("{what}; {failures} consecutive failures");
    audit(
        db,
        actor,
        "login",
        user.username.as_str(),
        Outcome::Failure,
        &detail,
    )
    .await?;
    if hard && !user.hard_locked {
        audit(
            db,
            actor,
            "user.lockout",
            user.username.as_str(),
            Outcome::Success,
            "hard lock",
        )
        .await?;
        let link = db
            .create_one_time_token(&user.id, crate::db::tokens::Purpose::ResetPassword, 3600)
            .await?;
        notify(
            db,
            user,
            "Your account was locked",
            &format!(
                "After {failures} failed sign-in attempts your account is locked. To unlock it, choose a new password here (valid one hour):\n{public_url}/recover/reset?token={link}\nor ask an administrator to unlock it."
            ),
        )
        .await?;
    }
    Ok((until, hard))
}
