//! Optional telemetry fields switched off per device by its owner (PRIV-3). The
//! switch is stored, audited, and handed to the device's live connection at once:
//! the hub stops storing the field from its next message and publishes
//! `{"disabled_fields": [...]}` on `devices/{id}/config`, which the agent keeps and
//! applies before anything leaves the device. Required fields cannot be switched off.

use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::Db;
use crate::db::devices::Device;
use crate::error::Result;
use crate::mqtt::Fleet;
use serde::Serialize;

/// Why a switch was refused (the message is for the owner).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this device's model declares no field {0:?}")]
    NotDeclared(String),
    #[error(
        "{0:?} is a required field of this device's model: it cannot be switched off (only optional fields can)"
    )]
    Required(String),
}

/// One declared field and whether it is on for a device.
#[derive(Debug, Clone, Serialize)]
pub struct FieldState {
    pub name: String,
    pub optional: bool,
    pub enabled: bool,
}

/// The device's declared fields with their switches.
pub async fn states(db: &Db, device: &Device) -> Result<Vec<FieldState>> {
    let disabled = db.disabled_fields(&device.id).await?;
    let fields = db
        .product(&device.product_id)
        .await?
        .map(|m| m.fields)
        .unwrap_or_default();
    Ok(fields
        .into_iter()
        .map(|f| FieldState {
            enabled: !disabled.contains(&f.name),
            optional: f.optional,
            name: f.name,
        })
        .collect())
}

/// Switch `field` on or off on `device` (the caller checked that `actor` owns it).
/// Returns `Ok(Err(_))` when refused, `Ok(Ok(changed))` otherwise.
pub async fn switch(
    db: &Db,
    fleet: &Fleet,
    actor: &Actor,
    device: &Device,
    field: &str,
    enabled: bool,
) -> Result<std::result::Result<bool, Refused>> {
    let shown: String = field.chars().take(40).collect();
    let declared = db
        .product(&device.product_id)
        .await?
        .and_then(|m| m.fields.into_iter().find(|f| f.name == field));
    let refused = match declared {
        None => Some(Refused::NotDeclared(shown.clone())),
        Some(f) if !f.optional && !enabled => Some(Refused::Required(shown.clone())),
        Some(_) => None,
    };
    if let Some(why) = refused {
        accounts::audit(
            db,
            actor,
            "device.telemetry_field",
            device.id.as_str(),
            Outcome::Denied,
            &why.to_string(),
        )
        .await?;
        return Ok(Err(why));
    }
    let changed = db.set_field_enabled(&device.id, field, enabled).await?;
    if changed {
        accounts::audit(
            db,
            actor,
            "device.telemetry_field",
            device.id.as_str(),
            Outcome::Success,
            &format!("{shown} {}", if enabled { "on" } else { "off" }),
        )
        .await?;
        fleet.config_changed(&device.id);
    }
    Ok(Ok(changed))
}
