//! Warnings before TUF metadata expires (issue 4): a device refuses a repository whose
//! root or targets metadata has expired, and those two are signed offline, so staff
//! are warned [`OFFLINE_WARNING_DAYS`] ahead, on the console (home and `/releases`) and
//! once per role version by audit entry and e-mail. Snapshot and timestamp are re-signed
//! by the hub; they are reported only when that refresh has evidently failed.

use super::repo::{Expiring, Repository};
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::Db;
use crate::error::Result;

/// Days before root or targets metadata expires from which staff are warned.
pub const OFFLINE_WARNING_DAYS: i64 = 30;

fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| {
            let d = t.date();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        })
        .unwrap_or_else(|_| "?".into())
}

/// What to tell staff about one expiring role, including what to do.
pub fn message(e: &Expiring, now: i64) -> String {
    let when = if e.expires <= now {
        format!("expired on {}", date(e.expires))
    } else {
        format!(
            "expires on {} (in {} days)",
            date(e.expires),
            (e.expires - now) / 86_400
        )
    };
    match e.role {
        "root" | "targets" => format!(
            "{}: the {} metadata (version {}) {when}; devices then refuse every update. Re-sign it offline: `palisade release rotate-root --product {} --keys KEYS --new-keys KEYS` (the same key directory twice renews root and targets for a year).",
            e.product, e.role, e.version, e.product
        ),
        _ => format!(
            "{}: the {} metadata (version {}) {when}, although the hub re-signs it automatically: the refresh is failing (see the hub log).",
            e.product, e.role, e.version
        ),
    }
}

/// Everything expiring soon, as console text; `None` when nothing is.
pub fn banner(repo: &Repository) -> Result<Option<String>> {
    let now = crate::db::now();
    let expiring = repo.expiring(now, OFFLINE_WARNING_DAYS * 86_400)?;
    Ok((!expiring.is_empty()).then(|| {
        expiring
            .iter()
            .map(|e| message(e, now))
            .collect::<Vec<_>>()
            .join(" ")
    }))
}

/// Audit and e-mail staff once per expiring role version. Returns how many alerts were
/// raised now.
pub async fn alert(db: &Db, repo: &Repository) -> Result<usize> {
    let now = crate::db::now();
    let mut raised = 0;
    for e in repo.expiring(now, OFFLINE_WARNING_DAYS * 86_400)? {
        if !repo.mark_alerted(&e.product, e.role, e.version)? {
            continue;
        }
        let text = message(&e, now);
        accounts::audit(
            db,
            &Actor {
                name: "hub".into(),
                source: "tuf-expiry".into(),
            },
            "tuf.expiry_warning",
            &e.product,
            Outcome::Success,
            &text,
        )
        .await?;
        for email in db.staff_emails().await? {
            db.enqueue_mail(
                &email,
                &format!("Update metadata of {} expires soon", e.product),
                &text,
                crate::mail::Category::Security,
            )
            .await?;
        }
        raised += 1;
    }
    Ok(raised)
}
