//! The SQL of a device's later life (ACC-3, DATA-3): release by its owner, decommission
//! after a factory reset (the claim code re-armed for a fresh enrolment), owner views
//! limited to the current ownership, and the versions a device reports (SUP-3).

use super::{Db, now};
use crate::error::Result;
use crate::ids::{DeviceId, UserId};
use sqlx::Row;

/// A re-armed claim code stays valid at least this long (a reset device may sit in a
/// drawer before it is switched on again).
pub const REARMED_CLAIM_TTL_SECS: i64 = 365 * 24 * 3600;

/// What a release or decommission removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleared {
    /// The owner the device had, if any.
    pub previous_owner: Option<UserId>,
    /// Telemetry rows deleted with the ownership.
    pub telemetry_deleted: u64,
}

/// Who releases a device.
#[derive(Debug, Clone, Copy)]
pub enum Releaser<'a> {
    /// Only if it is theirs at the moment of the update.
    Owner(&'a UserId),
    /// Staff: whoever owns it.
    Staff,
}

impl Db {
    /// Clear the device's owner and delete the telemetry stored while it was owned, in
    /// one transaction: the owner's data goes with the ownership (DATA-1 minimisation),
    /// so the next owner can never see it. `None` if the device has no owner (or, for
    /// [`Releaser::Owner`], not this owner) at the moment of the update.
    pub async fn release_device(&self, id: &DeviceId, by: Releaser<'_>) -> Result<Option<Cleared>> {
        let mut tx = self.pool().begin().await?;
        // The UPDATE is the decision; its WHERE names the owner, so two releases (or a
        // release racing a claim) cannot both act on one ownership.
        let owner: Option<String> = match by {
            Releaser::Owner(owner) => sqlx::query(
                "UPDATE devices SET owner_id = NULL, owned_since_ms = NULL WHERE id = $1 AND owner_id = $2 RETURNING id",
            )
            .bind(id.as_str())
            .bind(owner.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|_| owner.as_str().to_owned()),
            Releaser::Staff => {
                // A no-op write that reads the owner: it takes the write lock first (two
                // SQLite readers upgrading at once fail with "database is locked") and
                // the row lock on PostgreSQL, so the update below acts on this owner.
                let current = sqlx::query(
                    "UPDATE devices SET owner_id = owner_id WHERE id = $1 AND owner_id IS NOT NULL RETURNING owner_id",
                )
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                match current {
                    None => None,
                    Some(row) => {
                        let owner: String = row.try_get("owner_id")?;
                        sqlx::query(
                            "UPDATE devices SET owner_id = NULL, owned_since_ms = NULL WHERE id = $1 AND owner_id = $2 RETURNING id",
                        )
                        .bind(id.as_str())
                        .bind(&owner)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|_| owner)
                    }
                }
            }
        };
        let Some(owner) = owner else {
            return Ok(None);
        };
        let deleted = sqlx::query("DELETE FROM telemetry WHERE device_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // The events of that ownership go with its telemetry.
        sqlx::query("DELETE FROM device_events WHERE device_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        // UPD-3: the previous owner's "off" or postponement must not stay with the
        // device: the next owner starts with automatic updates on (sent to the device).
        sqlx::query(
            "UPDATE device_update_policy SET mode = 'on', postpone_until = 0, changed_at = $2 \
             WHERE device_id = $1",
        )
        .bind(id.as_str())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Cleared {
            previous_owner: UserId::parse(&owner),
            telemetry_deleted: deleted,
        }))
    }

    /// A factory reset reached the hub (DATA-3): in one transaction the device becomes
    /// `decommissioned` (its certificate is refused from now on), loses its owner and
    /// its telemetry, gives up its pairing code, and its claim code is re-armed, so the
    /// reset device can enrol again, as a NEW device id with nothing of the old
    /// identity or owner. `None` if the device is not active (nothing changed).
    pub async fn decommission_device(&self, id: &DeviceId) -> Result<Option<Cleared>> {
        let at = now();
        let mut tx = self.pool().begin().await?;
        // A no-op write that reads the owner, as in `release_device`: of two concurrent
        // decommissions one waits for the other and then finds the device not active.
        let current = sqlx::query(
            "UPDATE devices SET status = status WHERE id = $1 AND status = 'active' RETURNING owner_id",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(current) = current else {
            return Ok(None);
        };
        let owner: Option<String> = current.try_get("owner_id")?;
        // The pairing code moves to the next enrolment; the old row keeps a value that
        // no typed code hashes to (digests are hex), so it stays unique and unclaimable.
        let changed = sqlx::query(
            "UPDATE devices SET status = 'decommissioned', owner_id = NULL, owned_since_ms = NULL, \
             pairing_code_hash = 'decommissioned:' || id WHERE id = $1 AND status = 'active'",
        )
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE claim_codes SET used_at = NULL, device_id = NULL, \
             expires_at = CASE WHEN expires_at < $2 THEN $2 ELSE expires_at END WHERE device_id = $1",
        )
        .bind(id.as_str())
        .bind(at + REARMED_CLAIM_TTL_SECS)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM telemetry WHERE device_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // The events of that ownership go with its telemetry.
        sqlx::query("DELETE FROM device_events WHERE device_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Cleared {
            previous_owner: owner.as_deref().and_then(UserId::parse),
            telemetry_deleted: deleted,
        }))
    }

    /// The newest telemetry of a device received at or after `since_ms`, newest first:
    /// what an owner may see (their ownership started then).
    pub async fn telemetry_since(
        &self,
        id: &DeviceId,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT received_at_ms, payload FROM telemetry WHERE device_id = $1 AND received_at_ms >= $2 \
             ORDER BY received_at_ms DESC LIMIT $3",
        )
        .bind(id.as_str())
        .bind(since_ms)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("received_at_ms")?, r.try_get("payload")?)))
            .collect()
    }

    /// Record the versions a device reports (SUP-3); a `None` leaves the stored one.
    pub async fn set_device_versions(
        &self,
        id: &DeviceId,
        firmware: Option<&str>,
        agent: Option<&str>,
    ) -> Result<()> {
        if firmware.is_none() && agent.is_none() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE devices SET firmware_version = CASE WHEN $1 = '' THEN firmware_version ELSE $1 END, \
             agent_version = CASE WHEN $2 = '' THEN agent_version ELSE $2 END WHERE id = $3",
        )
        .bind(firmware.unwrap_or(""))
        .bind(agent.unwrap_or(""))
        .bind(id.as_str())
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
