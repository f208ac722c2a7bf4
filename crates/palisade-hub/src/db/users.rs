//! The `users` and `recovery_codes` tables.

use super::{Db, now, optional};
use crate::error::{Error, Result};
use crate::ids::{Email, UserId, Username};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// What an account may do. Checked on the server for every request (ACC-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including accounts, keys and the audit log. MFA is mandatory.
    Admin,
    /// Fleet work; no account or key administration.
    Operator,
    /// A consumer who owns devices; sees only their own things.
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Owner => "owner",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
    /// Whether this role must have a second factor before it gets a full session.
    pub fn requires_mfa(self) -> bool {
        self == Role::Admin
    }
}

/// Where an account is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, waiting for e-mail verification (owners) or invite acceptance (staff).
    Pending,
    Active,
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Disabled => "disabled",
        }
    }
    fn parse(s: &str) -> Status {
        match s {
            "active" => Status::Active,
            "pending" => Status::Pending,
            _ => Status::Disabled, // anything unknown fails closed
        }
    }
}

/// An account as stored. Secrets (hash, TOTP) never leave the hub: not `Serialize`,
/// and `Debug` leaves them out.
#[derive(Clone)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub email: Email,
    pub role: Role,
    pub status: Status,
    pub password_hash: Option<String>,
    pub totp_secret: Option<String>,
    pub totp_pending: Option<String>,
    pub totp_last_step: i64,
    pub failed_logins: i64,
    pub locked_until: i64,
    pub hard_locked: bool,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("status", &self.status)
            .field("mfa", &self.has_mfa())
            .field("failed_logins", &self.failed_logins)
            .finish_non_exhaustive()
    }
}

impl User {
    pub fn has_mfa(&self) -> bool {
        self.totp_secret.is_some()
    }
    /// Whether sign-in is currently refused because of failed attempts.
    pub fn is_locked(&self, at: i64) -> bool {
        self.hard_locked || self.locked_until > at
    }
}

/// The columns of `users`, as a literal so queries are built with `concat!` at compile
/// time (static SQL only).
macro_rules! user_columns {
    () => {
        "id, username, email, role, status, password_hash, totp_secret, totp_pending, \
         totp_last_step, failed_logins, locked_until, hard_locked, created_at, last_login_at"
    };
}

fn from_row(db: &Db, row: &AnyRow) -> Result<User> {
    let role: String = row.try_get("role")?;
    let id: String = row.try_get("id")?;
    // TOTP secrets are sealed at rest (STOR-3), bound to the account they belong to.
    let context = totp_context(&id);
    let open = |v: Option<String>| v.map(|v| db.open_secret(&context, &v)).transpose();
    Ok(User {
        totp_secret: open(row.try_get("totp_secret")?)?,
        totp_pending: open(row.try_get("totp_pending")?)?,
        id: UserId::from_db(id),
        username: Username::from_db(row.try_get("username")?),
        email: Email::from_db(row.try_get("email")?),
        role: Role::parse(&role).unwrap_or(Role::Owner),
        status: Status::parse(&row.try_get::<String, _>("status")?),
        password_hash: row.try_get("password_hash")?,
        totp_last_step: row.try_get("totp_last_step")?,
        failed_logins: row.try_get("failed_logins")?,
        locked_until: row.try_get("locked_until")?,
        hard_locked: row.try_get::<i64, _>("hard_locked")? != 0,
        created_at: row.try_get("created_at")?,
        last_login_at: row.try_get("last_login_at")?,
    })
}

/// A new account.
pub struct NewUser<'a> {
    pub username: &'a Username,
    pub email: &'a Email,
    pub role: Role,
    pub status: Status,
    pub password_hash: Option<&'a str>,
}

/// The associated data that binds a sealed TOTP secret to its account. The pending and
/// the active secret share it: activation moves the sealed value between the columns.
pub(crate) fn totp_context(user_id: &str) -> String {
    format!("users.totp:{user_id}")
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

impl Db {
    pub async fn insert_user(&self, new: NewUser<'_>) -> Result<User> {
        let id = UserId::generate();
        let result = sqlx::query(
            "INSERT INTO users (id, username, email, role, status, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.as_str())
        .bind(new.username.as_str())
        .bind(new.email.as_str())
        .bind(new.role.as_str())
        .bind(new.status.as_str())
        .bind(new.password_hash)
        .bind(now())
        .execute(self.pool())
        .await;
        match result {
            Ok(_) => self
                .user(&id)
                .await?
                .ok_or_else(|| Error::Conflict("user vanished".into())),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict(
                "That user name or e-mail address is already registered.".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user(&self, id: &UserId) -> Result<Option<User>> {
        let q = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
        optional(
            sqlx::query(q)
                .bind(id.as_str())
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| from_row(self, &r))
        .transpose()
    }

    pub async fn user_by_username(&self, username: &Username) -> Result<Option<User>> {
        let q = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE username = $1"
        );
        optional(
            sqlx::query(q)
                .bind(username.as_str())
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| from_row(self, &r))
        .transpose()
    }

    pub async fn user_by_email(&self, email: &Email) -> Result<Option<User>> {
        let q = concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1");
        optional(
            sqlx::query(q)
                .bind(email.as_str())
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| from_row(self, &r))
        .transpose()
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let q = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY created_at, username"
        );
        sqlx::query(q)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| from_row(self, r))
            .collect()
    }

    /// Number of active administrators (setup is open while this is zero).
    pub async fn active_admin_count(&self) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND status = 'active'",
        )
        .fetch_one(self.pool())
        .await?
        .try_get("n")?)
    }

    pub async fn set_password_hash(&self, id: &UserId, hash: &str) -> Result<()> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Remove the password: no sign-in works until a new one is set by e-mailed link.
    pub async fn clear_password_hash(&self, id: &UserId) -> Result<()> {
        sqlx::query("UPDATE users SET password_hash = NULL WHERE id = $1")
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_status(&self, id: &UserId, status: Status) -> Result<()> {
        sqlx::query("UPDATE users SET status = $1 WHERE id = $2")
            .bind(status.as_str())
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_role(&self, id: &UserId, role: Role) -> Result<()> {
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Store (or clear) a TOTP secret being enrolled, not yet confirmed.
    pub async fn set_totp_pending(&self, id: &UserId, secret: Option<&str>) -> Result<()> {
        let sealed = secret
            .map(|s| self.seal_secret(&totp_context(id.as_str()), s))
            .transpose()?;
        sqlx::query("UPDATE users SET totp_pending = $1 WHERE id = $2")
            .bind(sealed)
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Make the pending secret the active one; `step` is the step just used to confirm it.
    pub async fn activate_totp(&self, id: &UserId, step: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $1 \
             WHERE id = $2 AND totp_pending IS NOT NULL",
        )
        .bind(step)
        .bind(id.as_str())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn clear_totp(&self, id: &UserId) -> Result<()> {
        sqlx::query("UPDATE users SET totp_secret = NULL, totp_pending = NULL WHERE id = $1")
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Accept a TOTP time step only if it is newer than every step accepted before
    /// (RFC 6238 §5.2: a code is used once). Atomic, so two racing requests cannot both win.
    pub async fn accept_totp_step(&self, id: &UserId, step: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1",
        )
        .bind(step)
        .bind(id.as_str())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Count one more consecutive failure and return the new count.
    pub async fn add_failed_login(&self, id: &UserId) -> Result<i64> {
        Ok(sqlx::query(
            "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 RETURNING failed_logins",
        )
        .bind(id.as_str())
        .fetch_one(self.pool())
        .await?
        .try_get("failed_logins")?)
    }

    pub async fn set_lock(&self, id: &UserId, locked_until: i64, hard: bool) -> Result<()> {
        sqlx::query("UPDATE users SET locked_until = $1, hard_locked = $2 WHERE id = $3")
            .bind(locked_until)
            .bind(i64::from(hard))
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forget failures and locks (successful sign-in, recovery or administrator unlock).
    pub async fn clear_failures(&self, id: &UserId) -> Result<()> {
        sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = 0, hard_locked = 0 WHERE id = $1",
        )
        .bind(id.as_str())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn record_login(&self, id: &UserId) -> Result<()> {
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        self.clear_failures(id).await
    }

    /// Replace the account's recovery codes with these digests.
    pub async fn replace_recovery_codes(&self, id: &UserId, digests: &[String]) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        for digest in digests {
            sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                .bind(id.as_str())
                .bind(digest)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Use up one recovery code; false if unknown or already used.
    pub async fn use_recovery_code(&self, id: &UserId, digest: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(now())
        .bind(id.as_str())
        .bind(digest)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn unused_recovery_codes(&self, id: &UserId) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(id.as_str())
        .fetch_one(self.pool())
        .await?
        .try_get("n")?)
    }
}
