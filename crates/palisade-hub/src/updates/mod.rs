//! Signed releases and their delivery (issue 4, hub side): the TUF metadata helpers
//! (`tuf`), the hub's per-model TUF repository holding only online keys (`repo`),
//! staged rollouts, the only way a release is offered to devices (`rollouts`), the
//! install steps devices report (here), and the end-of-support notices (SUP-2).
//!
//! Wire contract with the agent (MQTT, QoS 1):
//! - hub → device `devices/{id}/update`:
//!   `{"release","product","version","target","security","notes"}`
//! - device → hub `devices/{id}/update/status`:
//!   `{"release","version","step","reason","downtime_ms"}`, step one of
//!   [`STEPS`].

pub mod auto_update;
pub mod expiry;
pub mod repo;
pub mod rollouts;
pub mod tuf;

use crate::db::Db;
use crate::db::devices::Device;
use crate::db::releases::{Release, UpdateReport};
use crate::error::Result;
use crate::ids::DeviceId;
use serde::{Deserialize, Serialize};

/// The install steps a device may report.
pub const STEPS: [&str; 6] = [
    "downloading",
    "verified",
    "installed",
    "committed",
    "rolled_back",
    "failed",
];
/// Longest failure reason kept from a device.
pub const MAX_REASON_CHARS: usize = 500;
/// Longest release notes shown in an offer.
pub const MAX_NOTES_CHARS: usize = 4000;

/// What the hub offers a device on `devices/{id}/update`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Offer {
    pub release: String,
    pub product: String,
    pub version: String,
    pub target: String,
    pub security: bool,
    pub notes: String,
}

impl Offer {
    pub fn of(release: &Release) -> Offer {
        Offer {
            release: release.id.clone(),
            product: release.product.clone(),
            version: release.version.clone(),
            target: release.target.clone(),
            security: release.security,
            notes: release.notes.chars().take(MAX_NOTES_CHARS).collect(),
        }
    }

    pub fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Whether a device reporting firmware `reported` runs something older than
/// `release`. A version that is not `MAJOR.MINOR.PATCH` is not compared: nothing is
/// offered until the device reports one (the agent does at every connection).
pub fn is_older(reported: &str, release: &str) -> bool {
    match (tuf::Version::parse(reported), tuf::Version::parse(release)) {
        (Some(have), Some(offer)) => have < offer,
        _ => false,
    }
}

/// THE decision of which release a device is offered: see [`rollouts::offer`] (a
/// release reaches devices only through a staged rollout).
pub async fn offer(db: &Db, device: &Device) -> Result<Option<Offer>> {
    rollouts::offer(db, device).await
}

#[derive(Deserialize)]
struct StatusWire {
    release: String,
    version: String,
    step: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    downtime_ms: Option<i64>,
}

/// Validate a status report from a device (bounded fields, a known step, a release of
/// the device's own model). `Err` says why it is refused.
pub async fn parse_status(
    db: &Db,
    device: &DeviceId,
    payload: &[u8],
) -> Result<std::result::Result<UpdateReport, String>> {
    let Ok(wire) = serde_json::from_slice::<StatusWire>(payload) else {
        return Ok(Err("not a status report object".into()));
    };
    if !STEPS.contains(&wire.step.as_str()) {
        return Ok(Err("unknown step".into()));
    }
    if wire.release.len() > 64 || tuf::Version::parse(&wire.version).is_none() {
        return Ok(Err("release or version not valid".into()));
    }
    if wire.reason.chars().count() > MAX_REASON_CHARS
        || wire.reason.chars().any(|c| c.is_control() && c != '\n')
    {
        return Ok(Err("reason too long or not printable".into()));
    }
    if wire
        .downtime_ms
        .is_some_and(|d| !(0..=7 * 86_400_000).contains(&d))
    {
        return Ok(Err("downtime_ms out of range".into()));
    }
    let (Some(release), Some(dev)) = (db.release(&wire.release).await?, db.device(device).await?)
    else {
        return Ok(Err("unknown release".into()));
    };
    if release.product != dev.product_id.as_str() || release.version != wire.version {
        return Ok(Err("not a release of this device's model".into()));
    }
    Ok(Ok(UpdateReport {
        release: wire.release,
        version: wire.version,
        step: wire.step,
        reason: wire.reason,
        downtime_ms: wire.downtime_ms,
        at_ms: crate::telemetry::now_ms(),
    }))
}

/// Days before the end of security support at which owners are told (SUP-2).
pub const SUPPORT_NOTICE_DAYS: i64 = 90;

/// The ISO date [`SUPPORT_NOTICE_DAYS`] from today.
fn notice_horizon() -> String {
    let horizon =
        time::OffsetDateTime::now_utc().date() + time::Duration::days(SUPPORT_NOTICE_DAYS);
    format!(
        "{:04}-{:02}-{:02}",
        horizon.year(),
        u8::from(horizon.month()),
        horizon.day()
    )
}

/// The console banner (SUP-2): the models whose security support ends within
/// [`SUPPORT_NOTICE_DAYS`] (or has ended) — of the caller's own devices, or every
/// model for staff. `None` when there is nothing to say.
pub async fn support_banner(
    db: &Db,
    user: &crate::ids::UserId,
    staff: bool,
) -> Result<Option<String>> {
    let due = db.support_notices_due_any(&notice_horizon()).await?;
    if due.is_empty() {
        return Ok(None);
    }
    let mine: Vec<String> = if staff {
        Vec::new()
    } else {
        db.devices_owned_by(user)
            .await?
            .into_iter()
            .map(|d| d.product_id.as_str().to_owned())
            .collect()
    };
    let parts: Vec<String> = due
        .iter()
        .filter(|p| staff || mine.contains(&p.product))
        .map(|p| format!("{} on {}", p.product, p.security_updates_until))
        .collect();
    Ok((!parts.is_empty()).then(|| {
        format!(
            "Security updates end soon: {}. See /support.",
            parts.join(", ")
        )
    }))
}

/// Tell the owners of every model whose security support ends within
/// [`SUPPORT_NOTICE_DAYS`], once per published end date (e-mail through the outbox,
/// audited). Returns how many models were announced.
pub async fn send_support_notices(db: &Db, public_url: &str) -> Result<usize> {
    let horizon =
        time::OffsetDateTime::now_utc().date() + time::Duration::days(SUPPORT_NOTICE_DAYS);
    let by = format!(
        "{:04}-{:02}-{:02}",
        horizon.year(),
        u8::from(horizon.month()),
        horizon.day()
    );
    let due = db.support_notices_due(&by).await?;
    for period in &due {
        let mut owners = std::collections::HashSet::new();
        for device in db.devices().await? {
            if device.product_id.as_str() == period.product
                && let Some(owner) = device.owner_id
            {
                owners.insert(owner);
            }
        }
        for owner in owners {
            if let Some(user) = db.user(&owner).await? {
                db.enqueue_mail(
                    user.email.as_str(),
                    &format!("Security updates for your {} end on {}", period.product, period.security_updates_until),
                    &format!(
                        "Your {} device receives security updates until {}. After that date no more security fixes are published for it, and it may become vulnerable.\n\nWhat you can do: keep using it with care, replace it before that date, or check {}/support for this and other models.",
                        period.product, period.security_updates_until, public_url.trim_end_matches('/')
                    ),
                    crate::mail::Category::Service,
                )
                .await?;
            }
        }
        db.mark_support_notice_sent(&period.product).await?;
        crate::accounts::audit(
            db,
            &crate::accounts::Actor {
                name: "hub".into(),
                source: "support-notice".into(),
            },
            "support.end_notice",
            &period.product,
            crate::audit::Outcome::Success,
            &format!(
                "owners told: security updates end {}",
                period.security_updates_until
            ),
        )
        .await?;
    }
    Ok(due.len())
}
