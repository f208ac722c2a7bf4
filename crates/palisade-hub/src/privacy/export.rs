//! An owner's data export (DATA-4): everything the hub holds about one account, as a
//! ZIP archive of JSON files and `telemetry.csv`, produced while it is sent. Rows are
//! read from the database in pages of [`PAGE_ROWS`] and handed on in chunks of about
//! [`CHUNK_BYTES`] through a channel of [`CHANNEL_CHUNKS`] slots, so memory stays
//! bounded whatever the account's size, and a slow client slows the reading instead
//! of filling memory. Secrets never leave: no password hash, TOTP secret, recovery
//! code, session or token digest, certificate or pairing-code digest, and no mail body
//! (a body may hold a one-time link; it is sealed, and emptied once delivered).
//!
//! Which rows belong to the account: the account row, its sessions, API tokens,
//! consents and policy acceptances; the devices it owns now, with the telemetry and
//! events they sent since it claimed them (what the owner sees, ACC-3; earlier data
//! went with earlier ownerships); the mail addressed to it; and the audit entries it
//! caused or that name it (actor or target is its user name or id).
//! Archive layout: see docs/privacy.md ("Export"). A new table holding an owner's data
//! is one more section below (as the inbox `notices` is), written like
//! `mail.json`: a paged query by the owner's id, one JSON object per row, and a line in
//! `README`; `privacy::erase` deletes it in its final transaction.

use super::zip::ZipWriter;
use crate::db::users::User;
use crate::db::{Db, now};
use crate::error::Result;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::sync::mpsc;

/// Rows read per query.
pub const PAGE_ROWS: i64 = 5_000;
/// Bytes gathered before a chunk is handed to the response.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks that may wait for the client.
pub const CHANNEL_CHUNKS: usize = 4;

/// What an export contained (for the audit entry and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub devices: u64,
    pub telemetry: u64,
    pub events: u64,
    pub audit: u64,
    pub mail: u64,
    pub notices: u64,
    pub bytes: u64,
}

/// The export's file name as offered to the browser.
pub fn file_name(user: &User) -> String {
    format!("palisade-export-{}-{}.zip", user.username, now())
}

/// The archive being written, drained into the channel as it grows.
struct Out {
    zip: ZipWriter,
    tx: mpsc::Sender<Vec<u8>>,
    bytes: u64,
    /// False once the receiver (the client) went away: stop reading.
    open: bool,
}

impl Out {
    async fn flush(&mut self, all: bool) {
        if self.open && (all || self.zip.pending() >= CHUNK_BYTES) {
            let chunk = self.zip.take();
            self.bytes += chunk.len() as u64;
            if !chunk.is_empty() && self.tx.send(chunk).await.is_err() {
                self.open = false;
            }
        }
    }
    async fn write(&mut self, data: &[u8]) {
        self.zip.write(data);
        self.flush(false).await;
    }
    async fn json_file(&mut self, name: &str, value: &Value) {
        self.zip.start(name);
        let text = serde_json::to_vec_pretty(value).unwrap_or_default();
        self.write(&text).await;
        self.write(b"\n").await;
    }
}

/// Quote a CSV field (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Write the export of `user` into `tx`, chunk by chunk. Returns `None` if the client
/// went away before the end (nothing more is read).
pub async fn write(db: &Db, user: &User, tx: mpsc::Sender<Vec<u8>>) -> Result<Option<Counts>> {
    let mut out = Out {
        zip: ZipWriter::new(),
        tx,
        bytes: 0,
        open: true,
    };
    let mut counts = Counts::default();
    let uid = user.id.as_str();

    out.zip.start("README.txt");
    out.write(README.as_bytes()).await;

    // The account, without any secret.
    let sessions: Vec<Value> = db
        .user_sessions(&user.id)
        .await?
        .into_iter()
        .map(|(_, created, seen, source, agent)| {
            json!({ "created_at": created, "last_seen_at": seen, "source": source, "user_agent": agent })
        })
        .collect();
    let tokens: Vec<Value> = db
        .api_tokens(&user.id)
        .await?
        .into_iter()
        .map(|t| {
            json!({ "id": t.id, "name": t.name, "created_at": t.created_at,
                    "expires_at": t.expires_at, "last_used_at": t.last_used_at })
        })
        .collect();
    let account = json!({
        "id": uid,
        "username": user.username.as_str(),
        "email": user.email.as_str(),
        "role": user.role.as_str(),
        "status": user.status.as_str(),
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
        "two_factor_enabled": user.has_mfa(),
        "unused_recovery_codes": db.unused_recovery_codes(&user.id).await?,
        "sessions": sessions,
        "api_tokens": tokens,
        "exported_at": now(),
    });
    out.json_file("account.json", &account).await;

    // Consents and policy acceptances.
    let consents: Vec<Value> = sqlx::query(
        "SELECT purpose, granted, changed_at FROM consents WHERE user_id = $1 ORDER BY purpose",
    )
    .bind(uid)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|r| -> Result<Value> {
        Ok(json!({
            "purpose": r.try_get::<String, _>("purpose")?,
            "granted": r.try_get::<i64, _>("granted")? != 0,
            "changed_at": r.try_get::<i64, _>("changed_at")?,
        }))
    })
    .collect::<Result<_>>()?;
    let acceptances: Vec<Value> = sqlx::query(
        "SELECT version, accepted_at FROM policy_acceptances WHERE user_id = $1 ORDER BY version",
    )
    .bind(uid)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|r| -> Result<Value> {
        Ok(json!({
            "policy_version": r.try_get::<i64, _>("version")?,
            "accepted_at": r.try_get::<i64, _>("accepted_at")?,
        }))
    })
    .collect::<Result<_>>()?;
    out.json_file(
        "consents.json",
        &json!({ "consents": consents, "policy_acceptances": acceptances }),
    )
    .await;

    // Devices, and their events since the owner claimed each.
    let devices = db.devices_owned_by(&user.id).await?;
    counts.devices = devices.len() as u64;
    let device_rows: Vec<Value> = devices
        .iter()
        .map(|d| {
            json!({
                "id": d.id.as_str(), "product_id": d.product_id.as_str(),
                "status": d.status.as_str(), "firmware_version": d.firmware_version,
                "agent_version": d.agent_version, "created_at": d.created_at,
                "last_seen_at": d.last_seen_at, "owned_since_ms": d.owned_since_ms,
            })
        })
        .collect();
    out.json_file("devices.json", &Value::Array(device_rows))
        .await;
    out.zip.start("device_events.json");
    out.write(b"[").await;
    for d in &devices {
        let since = d.owned_since_ms.unwrap_or(i64::MAX);
        // Events are bounded per device (`MAX_EVENTS_PER_DEVICE`): one query each.
        let mut events = db
            .device_events_since(
                &d.id,
                since,
                crate::db::device_events::MAX_EVENTS_PER_DEVICE,
            )
            .await?;
        events.reverse();
        for e in events {
            let row = json!({ "device_id": d.id.as_str(), "received_at_ms": e.received_at_ms,
                              "name": e.name, "source": e.source, "payload": e.payload });
            let sep: &[u8] = if counts.events == 0 { b"\n" } else { b",\n" };
            out.write(sep).await;
            out.write(row.to_string().as_bytes()).await;
            counts.events += 1;
        }
    }
    out.write(b"\n]\n").await;

    // Telemetry, device by device, oldest first, in pages. The cursor is (time, rows
    // already sent at that time), ordered by payload among equal times, so a page
    // boundary inside a run of equal timestamps neither repeats nor skips a row.
    out.zip.start("telemetry.csv");
    out.write(b"device_id,received_at_ms,payload\n").await;
    for d in &devices {
        let Some(since) = d.owned_since_ms else {
            continue;
        };
        let (mut at, mut skip) = (since, 0i64);
        loop {
            if !out.open {
                return Ok(None);
            }
            let rows = sqlx::query(
                "SELECT received_at_ms, payload FROM telemetry WHERE device_id = $1 AND received_at_ms >= $2 \
                 ORDER BY received_at_ms, payload LIMIT $3 OFFSET $4",
            )
            .bind(d.id.as_str())
            .bind(at)
            .bind(PAGE_ROWS)
            .bind(skip)
            .fetch_all(db.pool())
            .await?;
            let n = rows.len() as i64;
            let mut text = String::with_capacity(rows.len() * 96);
            let mut last = at;
            let mut same = 0i64;
            for r in &rows {
                let t: i64 = r.try_get("received_at_ms")?;
                let payload: String = r.try_get("payload")?;
                text.push_str(d.id.as_str());
                text.push(',');
                text.push_str(&t.to_string());
                text.push(',');
                text.push_str(&csv_field(&payload));
                text.push('\n');
                if t == last {
                    same += 1;
                } else {
                    last = t;
                    same = 1;
                }
            }
            out.write(text.as_bytes()).await;
            counts.telemetry += n as u64;
            if n < PAGE_ROWS {
                break;
            }
            if last == at {
                skip += n;
            } else {
                at = last;
                skip = same;
            }
        }
    }

    // Mail addressed to the account: envelope only (bodies are not kept after delivery).
    out.zip.start("mail.json");
    out.write(b"[").await;
    let mail = sqlx::query(
        "SELECT id, subject, category, created_at, COALESCE(sent_at, 0) AS sent_at FROM outbox \
         WHERE recipient = $1 ORDER BY created_at, id",
    )
    .bind(user.email.as_str())
    .fetch_all(db.pool())
    .await?;
    for r in &mail {
        let sent: i64 = r.try_get("sent_at")?;
        let row = json!({
            "id": r.try_get::<String, _>("id")?,
            "to": user.email.as_str(),
            "subject": r.try_get::<String, _>("subject")?,
            "category": r.try_get::<String, _>("category")?,
            "queued_at": r.try_get::<i64, _>("created_at")?,
            "sent_at": (sent > 0).then_some(sent),
        });
        let sep: &[u8] = if counts.mail == 0 { b"\n" } else { b",\n" };
        out.write(sep).await;
        out.write(row.to_string().as_bytes()).await;
        counts.mail += 1;
    }
    out.write(b"\n]\n").await;

    // The console inbox: security advisories and policy notices sent to the account.
    out.zip.start("notices.json");
    out.write(b"[").await;
    let notices = sqlx::query(
        "SELECT id, kind, ref_id, subject, body, created_at, read_at FROM notices \
         WHERE user_id = $1 ORDER BY created_at, id",
    )
    .bind(uid)
    .fetch_all(db.pool())
    .await?;
    for r in &notices {
        let read: i64 = r.try_get("read_at")?;
        let row = json!({
            "id": r.try_get::<String, _>("id")?,
            "kind": r.try_get::<String, _>("kind")?,
            "about": r.try_get::<String, _>("ref_id")?,
            "subject": r.try_get::<String, _>("subject")?,
            "body": r.try_get::<String, _>("body")?,
            "created_at": r.try_get::<i64, _>("created_at")?,
            "read_at": (read > 0).then_some(read),
        });
        let sep: &[u8] = if counts.notices == 0 { b"\n" } else { b",\n" };
        out.write(sep).await;
        out.write(row.to_string().as_bytes()).await;
        counts.notices += 1;
    }
    out.write(b"\n]\n").await;

    // Audit entries the account caused or that name it, oldest first, in pages.
    out.zip.start("audit.json");
    out.write(b"[").await;
    let mut after = 0i64;
    loop {
        if !out.open {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT seq, at, actor, source, action, target, outcome, detail FROM audit_log \
             WHERE seq > $1 AND (actor = $2 OR target = $2 OR target = $3) ORDER BY seq LIMIT $4",
        )
        .bind(after)
        .bind(user.username.as_str())
        .bind(uid)
        .bind(PAGE_ROWS)
        .fetch_all(db.pool())
        .await?;
        for r in &rows {
            after = r.try_get("seq")?;
            let row = json!({
                "seq": after,
                "at": r.try_get::<i64, _>("at")?,
                "actor": r.try_get::<String, _>("actor")?,
                "source": r.try_get::<String, _>("source")?,
                "action": r.try_get::<String, _>("action")?,
                "target": r.try_get::<String, _>("target")?,
                "outcome": r.try_get::<String, _>("outcome")?,
                "detail": r.try_get::<String, _>("detail")?,
            });
            let sep: &[u8] = if counts.audit == 0 { b"\n" } else { b",\n" };
            out.write(sep).await;
            out.write(row.to_string().as_bytes()).await;
            counts.audit += 1;
        }
        if (rows.len() as i64) < PAGE_ROWS {
            break;
        }
    }
    out.write(b"\n]\n").await;

    out.zip.finish();
    out.flush(true).await;
    counts.bytes = out.bytes;
    Ok(out.open.then_some(counts))
}

const README: &str = "\
Palisade data export
====================

Everything the hub holds about your account, as of the export time.

README.txt          this file
account.json        your account: name, e-mail, role, status, times, whether
                    two-factor authentication is on, your sessions (time, address,
                    browser) and API tokens (name and times; never the token itself)
consents.json       your consents (given or not, and when) and the privacy policy
                    versions you accepted (version, time)
devices.json        the devices you own now
device_events.json  the events your devices sent since you claimed them
telemetry.csv       the telemetry your devices sent since you claimed them:
                    device_id, received_at_ms (Unix milliseconds), payload (JSON)
mail.json           the e-mail the hub sent you (recipient, subject, kind, times;
                    message texts are not kept after delivery)
notices.json        the notices in your console inbox (security advisories, policy
                    changes), with when you read them
audit.json          the security log entries you caused or that name you

Times are Unix seconds unless the name ends in _ms (milliseconds).
Secrets (password digest, two-factor secret, recovery codes, token digests) are
never exported.
";
