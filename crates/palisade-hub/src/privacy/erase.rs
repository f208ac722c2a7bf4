//! Deleting an owner's account and data (DATA-3). In order:
//!
//! 1. refuse for the last active administrator (the hub would be left unmanaged);
//! 2. disable the account, end its sessions and delete its API tokens: from here on
//!    nothing can sign in or act as it, even while the rest runs;
//! 3. delete its devices' telemetry in bounded batches ([`BATCH_ROWS`], each its own
//!    short transaction, then a pause as long as the batch took), so ingest from
//!    other devices keeps going between batches;
//! 4. in one transaction: release its devices (they must be claimed again), delete
//!    the last telemetry rows and the events, its mail, consents, policy acceptances,
//!    recovery codes, one-time links, and the account row itself;
//! 5. audit the deletion WITHOUT personal data (actor `account:<id>`, target the
//!    random account id, counts only), and queue a confirmation to the address the
//!    account had, as an `erasure` message whose outbox row is deleted once delivered.
//!
//! A crash between steps leaves a disabled account that can be deleted again (by an
//! administrator, or by the same call). SQLite runs with `secure_delete` on every
//! connection, so the deleted rows are overwritten in the file; on PostgreSQL rows are
//! deleted and VACUUM reclaims them (docs/operations.md). Kept on purpose (docs/privacy.md):
//! audit log entries written before the deletion (the security log, a legal and
//! security need; removed by retention), and vulnerability reports (not account data).

use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::users::{Role, Status, User};
use crate::db::{Db, now};
use crate::error::{Error, Result};
use crate::mail::Category;
use sqlx::Row;

/// Telemetry rows deleted per transaction before the final one.
pub const BATCH_ROWS: i64 = 5_000;
/// Longest pause between two batches.
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// What a deletion removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    pub devices_released: u64,
    pub telemetry_deleted: u64,
    pub events_deleted: u64,
    pub mail_deleted: u64,
}

/// Delete `user`'s account and data; `source` is the client address for the audit
/// entry. Sends the confirmation to the account's (former) address.
pub async fn erase_account(db: &Db, user: &User, source: &str, product: &str) -> Result<Erased> {
    if user.role == Role::Admin
        && user.status == Status::Active
        && db.active_admin_count().await? <= 1
    {
        return Err(Error::Conflict(
            "The last administrator cannot delete their account. Make someone else an administrator first."
                .into(),
        ));
    }
    let uid = user.id.as_str();
    db.set_status(&user.id, Status::Disabled).await?;
    db.delete_user_sessions(&user.id, None).await?;
    sqlx::query("DELETE FROM api_tokens WHERE user_id = $1")
        .bind(uid)
        .execute(db.pool())
        .await?;

    let devices = db.devices_owned_by(&user.id).await?;
    let mut erased = Erased::default();
    for d in &devices {
        loop {
            // The time of the BATCH_ROWS-th oldest row bounds the next batch (through
            // the (device_id, received_at_ms) index); fewer left: the final step.
            let edge = sqlx::query(
                "SELECT received_at_ms FROM telemetry WHERE device_id = $1 \
                 ORDER BY received_at_ms LIMIT 1 OFFSET $2",
            )
            .bind(d.id.as_str())
            .bind(BATCH_ROWS - 1)
            .fetch_optional(db.pool())
            .await?;
            let Some(edge) = edge else { break };
            let started = std::time::Instant::now();
            let edge: i64 = edge.try_get("received_at_ms")?;
            erased.telemetry_deleted +=
                sqlx::query("DELETE FROM telemetry WHERE device_id = $1 AND received_at_ms <= $2")
                    .bind(d.id.as_str())
                    .bind(edge)
                    .execute(db.pool())
                    .await?
                    .rows_affected();
            // Pause as long as the batch took (capped): a writer waiting for the
            // database (ingest's group commit; SQLite's busy handler backs off in
            // steps of up to 100 ms) gets its turn, so deletion holds the write lock
            // at most about half of the time.
            tokio::time::sleep(started.elapsed().min(MAX_PAUSE)).await;
        }
    }

    let mut tx = db.pool().begin().await?;
    for d in &devices {
        let released = sqlx::query(
            "UPDATE devices SET owner_id = NULL, owned_since_ms = NULL WHERE id = $1 AND owner_id = $2",
        )
        .bind(d.id.as_str())
        .bind(uid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if released == 0 {
            // Released meanwhile (by staff): its data went with that release.
            continue;
        }
        erased.devices_released += 1;
        erased.telemetry_deleted += sqlx::query("DELETE FROM telemetry WHERE device_id = $1")
            .bind(d.id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        erased.events_deleted += sqlx::query("DELETE FROM device_events WHERE device_id = $1")
            .bind(d.id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    erased.mail_deleted = sqlx::query("DELETE FROM outbox WHERE recipient = $1")
        .bind(user.email.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    // The foreign keys cascade too; explicit deletes do not depend on that.
    for sql in [
        "DELETE FROM sessions WHERE user_id = $1",
        "DELETE FROM api_tokens WHERE user_id = $1",
        "DELETE FROM recovery_codes WHERE user_id = $1",
        "DELETE FROM one_time_tokens WHERE user_id = $1",
        "DELETE FROM consents WHERE user_id = $1",
        "DELETE FROM policy_acceptances WHERE user_id = $1",
        "DELETE FROM notices WHERE user_id = $1",
        "DELETE FROM users WHERE id = $1",
    ] {
        sqlx::query(sql).bind(uid).execute(&mut *tx).await?;
    }
    tx.commit().await?;

    accounts::audit(
        db,
        &Actor {
            name: format!("account:{uid}"),
            source: source.to_owned(),
        },
        "account.delete",
        uid,
        Outcome::Success,
        &format!(
            "account and personal data deleted by its holder; {} devices released; {} telemetry rows, {} events, {} messages deleted",
            erased.devices_released,
            erased.telemetry_deleted,
            erased.events_deleted,
            erased.mail_deleted
        ),
    )
    .await?;
    let body = format!(
        "Hello,\n\nyour account on {product} was deleted at your request on {}, with its personal data, telemetry, device events, sessions, API tokens and consents. {} devices were released: to use them again, claim them anew with the pairing code on their label.\n\nThe security log keeps entries about past sign-ins and changes until its retention period ends; see the privacy policy.\n\nIf you did not ask for this, contact the operator of {product} at once.\n",
        crate::web::pages::fmt_time(now()),
        erased.devices_released,
    );
    db.enqueue_mail(
        user.email.as_str(),
        "Your account was deleted",
        &body,
        Category::Erasure,
    )
    .await?;
    Ok(erased)
}
