//! The owner's automatic-install switch (UPD-3) kept by the hub: on, off, or postponed
//! until a time. Stored per device (`device_update_policy`, no row = never set), audited,
//! and handed to the device in its config message on `devices/{id}/config` as
//! `"auto_update": "on" | "off" | {"postpone_until": UNIX_SECONDS}` next to
//! `disabled_fields`. The agent keeps it exactly like its local `auto-update` command.
//! Offers (and their security flag and notes) still reach the device and the owner.

use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::Db;
use crate::db::devices::Device;
use crate::error::Result;
use crate::ids::DeviceId;
use crate::mqtt::Fleet;
use serde::{Deserialize, Serialize};

/// The owner's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoUpdate {
    On,
    Off,
    /// No automatic install before this time (Unix seconds).
    #[serde(untagged)]
    Postponed {
        postpone_until: i64,
    },
}

/// Longest postponement an owner may choose (a year): security fixes must not wait
/// forever by accident; "off" is the explicit choice for that.
pub const MAX_POSTPONE_SECS: i64 = 366 * 86_400;

impl AutoUpdate {
    /// What the console shows.
    pub fn describe(&self) -> String {
        match self {
            AutoUpdate::On => "on".into(),
            AutoUpdate::Off => "off".into(),
            AutoUpdate::Postponed { postpone_until } => format!(
                "postponed until {}",
                crate::web::pages::fmt_time(*postpone_until)
            ),
        }
    }
}

impl Db {
    /// The owner's switch for `device`; `None` when never set (the device decides: on
    /// by default, or what was set on the device itself).
    pub async fn auto_update(&self, device: &DeviceId) -> Result<Option<AutoUpdate>> {
        use sqlx::Row;
        let row = sqlx::query(
            "SELECT mode, postpone_until FROM device_update_policy WHERE device_id = $1",
        )
        .bind(device.as_str())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mode: String = row.try_get("mode")?;
        let until: i64 = row.try_get("postpone_until")?;
        Ok(Some(match mode.as_str() {
            "off" => AutoUpdate::Off,
            "postpone" => AutoUpdate::Postponed {
                postpone_until: until,
            },
            _ => AutoUpdate::On,
        }))
    }

    /// Store the owner's switch for `device`.
    pub async fn set_auto_update(&self, device: &DeviceId, choice: AutoUpdate) -> Result<()> {
        let (mode, until) = match choice {
            AutoUpdate::On => ("on", 0),
            AutoUpdate::Off => ("off", 0),
            AutoUpdate::Postponed { postpone_until } => ("postpone", postpone_until),
        };
        sqlx::query(
            "INSERT INTO device_update_policy (device_id, mode, postpone_until, changed_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (device_id) DO UPDATE SET \
             mode = excluded.mode, postpone_until = excluded.postpone_until, changed_at = excluded.changed_at",
        )
        .bind(device.as_str())
        .bind(mode)
        .bind(until)
        .bind(crate::db::now())
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

/// The value of `auto_update` in the device's config message, if the owner set one.
pub async fn config_value(db: &Db, device: &DeviceId) -> Result<Option<serde_json::Value>> {
    Ok(db
        .auto_update(device)
        .await?
        .and_then(|c| serde_json::to_value(c).ok()))
}

/// Store, audit and hand the owner's switch to the device's live connection (the
/// caller checked that the actor owns the device and that a postponement is bounded).
pub async fn set(
    db: &Db,
    fleet: &Fleet,
    actor: &Actor,
    device: &Device,
    choice: AutoUpdate,
) -> Result<()> {
    db.set_auto_update(&device.id, choice).await?;
    accounts::audit(
        db,
        actor,
        "device.auto_update",
        device.id.as_str(),
        Outcome::Success,
        &choice.describe(),
    )
    .await?;
    fleet.config_changed(&device.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_a_word_or_a_postponement() {
        assert_eq!(
            serde_json::to_string(&AutoUpdate::On).expect("json"),
            "\"on\""
        );
        assert_eq!(
            serde_json::to_string(&AutoUpdate::Off).expect("json"),
            "\"off\""
        );
        assert_eq!(
            serde_json::to_string(&AutoUpdate::Postponed {
                postpone_until: 1_900_000_000
            })
            .expect("json"),
            r#"{"postpone_until":1900000000}"#
        );
    }
}
