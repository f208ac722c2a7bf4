//! E-mail: an outbox table with retries, and its delivery — over SMTP (lettre, TLS
//! required except to a loopback relay) when `[smtp]` is configured, otherwise as
//! `.eml` files under `DATA_DIR/mail/` (mode 0600) where a local user can read them.

use crate::config::{Config, SmtpSecurity};
use crate::db::{Db, now};
use crate::error::{Error, Result};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Kinds of message. Security notices are never mixed with anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Verification, recovery, invitations.
    Account,
    /// Security events on the account (new sign-in, password or MFA change, lockout).
    Security,
    /// Correspondence about a vulnerability report (to its reporter or the contact).
    Disclosure,
    /// Service notices every owner gets, such as a substantive privacy policy change.
    Service,
    /// News and offers: only to owners who opted in (PRIV-2).
    Marketing,
    /// The confirmation that an account was deleted (DATA-3): its outbox row (the
    /// former address) is deleted once delivered instead of kept.
    Erasure,
}

impl Category {
    fn as_str(self) -> &'static str {
        match self {
            Category::Account => "account",
            Category::Security => "security",
            Category::Disclosure => "disclosure",
            Category::Service => "service",
            Category::Marketing => "marketing",
            Category::Erasure => "erasure",
        }
    }
}

/// How many times delivery is tried before a message is given up (its last error stays
/// in the outbox row).
const MAX_ATTEMPTS: i64 = 8;

impl Db {
    /// Queue a message for delivery.
    pub async fn enqueue_mail(
        &self,
        recipient: &str,
        subject: &str,
        body: &str,
        category: Category,
    ) -> Result<()> {
        let id = data_encoding::HEXLOWER.encode(&palisade_crypto::token::random_bytes::<12>());
        let at = now();
        // A queued body may hold a one-time link: sealed until delivered (STOR-3).
        let body = self.seal_secret(&outbox_context(&id), body)?;
        sqlx::query(
            "INSERT INTO outbox (id, recipient, subject, body, category, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(recipient)
        .bind(subject)
        .bind(&body)
        .bind(category.as_str())
        .bind(at)
        .bind(at)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

/// The associated data binding a sealed mail body to its outbox row.
pub(crate) fn outbox_context(id: &str) -> String {
    format!("outbox:{id}")
}

/// Where mail goes.
#[derive(Clone)]
pub enum Delivery {
    /// Files in a directory (no SMTP configured).
    Files(PathBuf),
    /// An SMTP relay.
    Smtp {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Mailbox,
    },
}

impl Delivery {
    /// The delivery the configuration asks for.
    pub fn from_config(config: &Config) -> Result<Delivery> {
        let Some(smtp) = &config.smtp else {
            return Ok(Delivery::Files(config.data_dir.join("mail")));
        };
        let config_error = |e: &dyn std::fmt::Display| Error::Config(format!("smtp: {e}"));
        let mut tls = TlsParameters::builder(smtp.host.clone());
        if let Some(ca) = &smtp.ca_file {
            let pem = std::fs::read(ca).map_err(|e| Error::io(ca, e))?;
            tls = tls
                .add_root_certificate(Certificate::from_pem(&pem).map_err(|e| config_error(&e))?);
        }
        let tls = tls.build_rustls().map_err(|e| config_error(&e))?;
        // `builder_dangerous` only means "no TLS chosen yet": it is chosen right here,
        // and `none` passed the configuration check only for a loopback relay.
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
                .port(smtp.port)
                .timeout(Some(Duration::from_secs(30)))
                .tls(match smtp.security {
                    SmtpSecurity::Starttls => Tls::Required(tls),
                    SmtpSecurity::Tls => Tls::Wrapper(tls),
                    SmtpSecurity::None => Tls::None,
                });
        if let Some((user, password)) = &smtp.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let from = smtp.from.parse::<Mailbox>().map_err(|e| config_error(&e))?;
        Ok(Delivery::Smtp {
            transport: Box::new(builder.build()),
            from,
        })
    }

    async fn send(
        &self,
        id: &str,
        to: &str,
        subject: &str,
        body: &str,
        category: &str,
        created: i64,
    ) -> Result<(), String> {
        match self {
            Delivery::Files(dir) => {
                let message = render_eml(to, subject, body, category, created);
                write_file(dir, &format!("{}-{id}.eml", now()), &message)
                    .await
                    .map_err(|e| e.to_string())
            }
            Delivery::Smtp { transport, from } => {
                let to: Mailbox = to.parse().map_err(|e| format!("recipient: {e}"))?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(body.to_owned())
                    .map_err(|e| e.to_string())?;
                transport
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Deliver due messages once; returns how many were delivered.
pub async fn deliver_due(db: &Db, delivery: &Delivery) -> Result<usize> {
    let at = now();
    let rows = sqlx::query(
        "SELECT id, recipient, subject, body, category, created_at, attempts FROM outbox \
         WHERE sent_at IS NULL AND attempts < $1 AND next_attempt_at <= $2 ORDER BY created_at LIMIT 50",
    )
    .bind(MAX_ATTEMPTS)
    .bind(at)
    .fetch_all(db.pool())
    .await?;
    let mut delivered = 0;
    for row in rows {
        let id: String = row.try_get("id")?;
        let attempts: i64 = row.try_get("attempts")?;
        let body = db
            .open_secret(&outbox_context(&id), &row.try_get::<String, _>("body")?)
            .map_err(|e| e.to_string());
        let result = match body {
            Ok(body) => {
                delivery
                    .send(
                        &id,
                        &row.try_get::<String, _>("recipient")?,
                        &row.try_get::<String, _>("subject")?,
                        &body,
                        &row.try_get::<String, _>("category")?,
                        row.try_get("created_at")?,
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                // The body (it may hold a one-time link) is not kept once delivered;
                // nor anything of an erasure confirmation (its account is gone).
                if row.try_get::<String, _>("category")? == Category::Erasure.as_str() {
                    sqlx::query("DELETE FROM outbox WHERE id = $1")
                        .bind(&id)
                        .execute(db.pool())
                        .await?;
                } else {
                    sqlx::query(
                        "UPDATE outbox SET sent_at = $1, attempts = attempts + 1, body = '' WHERE id = $2",
                    )
                    .bind(now())
                    .bind(&id)
                    .execute(db.pool())
                    .await?;
                }
                delivered += 1;
            }
            Err(e) => {
                let backoff = 30 * (1_i64 << attempts.clamp(0, 10));
                tracing::warn!(id, attempts, "mail delivery failed: {e}");
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE id = $3",
                )
                .bind(now() + backoff)
                .bind(e.chars().take(500).collect::<String>())
                .bind(&id)
                .execute(db.pool())
                .await?;
            }
        }
    }
    Ok(delivered)
}

fn render_eml(to: &str, subject: &str, body: &str, category: &str, created: i64) -> String {
    // Header values come from validated addresses and our own subjects; strip line
    // breaks anyway so no header can be injected.
    let clean = |s: &str| s.replace(['\r', '\n'], " ");
    format!(
        "To: {}\r\nSubject: {}\r\nX-Palisade-Category: {}\r\nX-Palisade-Queued: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
        clean(to),
        clean(subject),
        category,
        created,
        body.replace('\n', "\r\n")
    )
}

async fn write_file(dir: &Path, name: &str, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = dir.to_owned();
    let path: PathBuf = dir.join(name);
    let contents = contents.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.write_all(contents.as_bytes())
            .map_err(|e| Error::io(&path, e))?;
        file.sync_all().map_err(|e| Error::io(&path, e))
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// Run delivery every few seconds until the hub stops.
pub async fn run_delivery(
    db: Db,
    delivery: Delivery,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = deliver_due(&db, &delivery).await {
            tracing::warn!("mail delivery: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}
