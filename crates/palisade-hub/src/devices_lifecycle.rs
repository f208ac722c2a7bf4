//! A device's later life, shared by the console, the API, the CLI and the MQTT session:
//! release by its owner or staff (transfer, ACC-3), decommission when the device reports
//! a factory reset (DATA-3), and the versions it reports (SUP-3). Each change is audited
//! before it is acknowledged (DESIGN.md invariant 9).
//!
//! Decisions (see docs/security-model.md):
//! - The telemetry stored while a device was owned belongs to that owner: it is deleted
//!   with the ownership (release or reset), not merely hidden. What a device sends while
//!   it has no owner is never shown to the next owner either: owners see telemetry,
//!   commands and audit entries only from the moment they claimed it.
//! - A reset device comes back as a NEW device: the old row stays `decommissioned` (the
//!   central record, its certificate refused for good), and its claim code is re-armed,
//!   so the agent enrols again with the claim code it carries and gets a new id and
//!   certificate; the label's pairing code moves to the new device for its next owner.

use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::Db;
use crate::db::lifecycle::{Cleared, Releaser};
use crate::error::Result;
use crate::ids::DeviceId;

/// Largest state report or event read for a lifecycle decision.
pub const MAX_REPORT_BYTES: usize = 4 * 1024;

/// Longest version string stored.
pub const MAX_VERSION_CHARS: usize = 64;

/// Release a device from its owner (owner or staff, per `by`) and audit it. `None` if
/// there was nothing to release (no owner, or not `by`'s at that moment).
pub async fn release(
    db: &Db,
    actor: &Actor,
    device: &DeviceId,
    by: Releaser<'_>,
) -> Result<Option<Cleared>> {
    let cleared = db.release_device(device, by).await?;
    if let Some(c) = &cleared {
        accounts::audit(
            db,
            actor,
            "device.release",
            device.as_str(),
            Outcome::Success,
            &format!(
                "owner cleared; {} telemetry rows of the previous owner deleted",
                c.telemetry_deleted
            ),
        )
        .await?;
    }
    Ok(cleared)
}

/// Is this event payload the agent's factory-reset notice `{"event":"factory_reset"}`?
pub fn is_factory_reset(payload: &[u8]) -> bool {
    payload.len() <= MAX_REPORT_BYTES
        && serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("event").and_then(|e| e.as_str().map(str::to_owned)))
            .is_some_and(|e| e == "factory_reset")
}

/// The device told the hub it is being reset: decommission it (owner cleared, data
/// deleted, certificate refused from now on, claim code re-armed) and audit it. The
/// caller then ends the device's connection. Repeating the notice changes nothing.
pub async fn factory_reset(db: &Db, device: &DeviceId, source: &str) -> Result<bool> {
    let actor = Actor {
        name: format!("device:{device}"),
        source: source.to_owned(),
    };
    decommission(db, &actor, device, "factory reset reported by the device").await
}

/// Decommission an active device and audit it with `why`: see
/// [`Db::decommission_device`]. Also for staff (`palisade device decommission`), when a
/// device was reset without reaching the hub or came back to the maker. False if the
/// device was not active.
pub async fn decommission(db: &Db, actor: &Actor, device: &DeviceId, why: &str) -> Result<bool> {
    let Some(cleared) = db.decommission_device(device).await? else {
        return Ok(false);
    };
    accounts::audit(
        db,
        actor,
        "device.decommission",
        device.as_str(),
        Outcome::Success,
        &format!(
            "{why}; certificate refused from now on; {}; {} telemetry rows deleted; claim code re-armed for a new enrolment",
            if cleared.previous_owner.is_some() {
                "owner cleared"
            } else {
                "had no owner"
            },
            cleared.telemetry_deleted
        ),
    )
    .await?;
    tracing::info!(%device, "device decommissioned: {why}");
    Ok(true)
}

/// A version string as stored: 1–64 printable ASCII characters (spaces allowed).
fn version(v: Option<&serde_json::Value>) -> Option<&str> {
    v?.as_str().filter(|s| {
        !s.is_empty()
            && s.len() <= MAX_VERSION_CHARS
            && s.chars().all(|c| c.is_ascii_graphic() || c == ' ')
    })
}

/// A state report: store the maker's firmware version (`firmware_version`) and the
/// agent's own version (`agent_version`) it names (SUP-3). Anything else in the report
/// is not stored; a malformed report is ignored.
pub async fn record_state(db: &Db, device: &DeviceId, payload: &[u8]) -> Result<()> {
    if payload.len() > MAX_REPORT_BYTES {
        return Ok(());
    }
    let Ok(serde_json::Value::Object(state)) = serde_json::from_slice(payload) else {
        return Ok(());
    };
    db.set_device_versions(
        device,
        version(state.get("firmware_version")),
        version(state.get("agent_version")),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reset_notice_is_a_reset() {
        assert!(is_factory_reset(br#"{"event":"factory_reset"}"#));
        assert!(!is_factory_reset(br#"{"event":"online"}"#));
        assert!(!is_factory_reset(br#"{"command_seq":1,"result":"ok"}"#));
        assert!(!is_factory_reset(b"factory_reset"));
        let big = format!(
            r#"{{"event":"factory_reset","pad":"{}"}}"#,
            "x".repeat(MAX_REPORT_BYTES)
        );
        assert!(!is_factory_reset(big.as_bytes()));
    }

    #[test]
    fn versions_are_bounded_printable_text() {
        let v = |s: &str| version(Some(&serde_json::Value::from(s))).map(str::to_owned);
        assert_eq!(v("1.4.2 build 7").as_deref(), Some("1.4.2 build 7"));
        assert_eq!(v(""), None);
        assert_eq!(v("a\nb"), None);
        assert_eq!(v(&"1".repeat(65)), None);
        assert_eq!(version(Some(&serde_json::json!(3))), None);
    }
}
