//! Factory reset (DATA-3): first tell the hub, when it can, so that the hub decommissions
//! the device (owner cleared, certificate refused, its data deleted); then, whatever the
//! hub answered, overwrite and delete the private key, and delete the certificate, CA,
//! configuration, firmware version, command state and telemetry queue. Only the agent's
//! own files are touched; the directory itself stays (it may be a mount point).
//!
//! The notice is `{"event":"factory_reset"}`, QoS 1, on `devices/{id}/events`, sent with
//! the device's current certificate over the usual pinned mutual-TLS connection; the
//! whole attempt is bounded by [`Limits::reset_notice_timeout`]. A device that cannot
//! reach the hub is still wiped: its owner can release it from the console.

use crate::limits::Limits;
use crate::mqtt::{Incoming, PubOutcome, Session, Target};
use crate::state::{
    CA_FILE, CERT_FILE, COMMANDS_FILE, CONFIG_FILE, FIRMWARE_FILE, KEY_FILE, QUEUE_FILE,
    QUEUE_META_FILE, StateDir,
};
use crate::{Error, Result, fsutil, tls};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The event a resetting device publishes.
pub const RESET_EVENT: &str = r#"{"event":"factory_reset"}"#;

/// One file the reset handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiped {
    pub path: PathBuf,
    /// `"overwritten and deleted"` or `"deleted"`.
    pub how: &'static str,
}

/// What the hub heard of the reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubNotice {
    /// The hub acknowledged the notice: it has decommissioned the device.
    Acknowledged,
    /// The directory held no enrolment: there was nobody to tell.
    NotEnrolled,
    /// The hub could not be told (unreachable, refused, timed out); the reason.
    Failed(String),
}

/// The outcome of [`factory_reset`].
#[derive(Debug, Clone)]
pub struct ResetReport {
    pub hub: HubNotice,
    pub wiped: Vec<Wiped>,
}

/// Reset the state directory without telling the hub. Returns what was removed (empty
/// if nothing was there). Refuses while an agent is running on the directory.
pub fn reset(state_dir: &Path) -> Result<Vec<Wiped>> {
    if !state_dir.exists() {
        return Ok(Vec::new());
    }
    let state = StateDir::new(state_dir);
    let _lock = state.lock()?;
    wipe(&state)
}

/// Tell the hub (bounded by `limits.reset_notice_timeout`), then wipe, whatever the
/// hub answered. Refuses, touching nothing, while an agent is running on the directory.
pub async fn factory_reset(state_dir: &Path, limits: &Limits) -> Result<ResetReport> {
    if !state_dir.exists() {
        return Ok(ResetReport {
            hub: HubNotice::NotEnrolled,
            wiped: Vec::new(),
        });
    }
    let state = StateDir::new(state_dir);
    let _lock = state.lock()?;
    let hub = if state.path(CONFIG_FILE).exists() {
        let timeout = limits.reset_notice_timeout;
        match tokio::time::timeout(timeout, tell_hub(&state, limits)).await {
            Ok(Ok(())) => HubNotice::Acknowledged,
            Ok(Err(e)) => HubNotice::Failed(e.to_string()),
            Err(_) => HubNotice::Failed(format!("no answer within {} s", timeout.as_secs_f64())),
        }
    } else {
        HubNotice::NotEnrolled
    };
    match &hub {
        HubNotice::Acknowledged => tracing::info!("the hub acknowledged the factory reset"),
        HubNotice::Failed(why) => {
            tracing::warn!("the hub was not told of the factory reset: {why}");
        }
        HubNotice::NotEnrolled => {}
    }
    let wiped = wipe(&state)?;
    Ok(ResetReport { hub, wiped })
}

/// Connect with the current certificate, publish the reset notice and wait for the
/// hub's PUBACK.
async fn tell_hub(state: &StateDir, limits: &Limits) -> Result<()> {
    let identity = state.load_identity()?;
    let config = identity.config.clone();
    let tls_config =
        tls::client_config(&identity.ca_pem, Some((identity.cert_chain, identity.key)))?;
    let target = Target {
        host: config.mqtt_host.clone(),
        port: config.mqtt_port,
        device_id: config.device_id.clone(),
        tls: Arc::new(tls_config),
    };
    let mut limits = limits.clone();
    limits.connect_timeout = limits.connect_timeout.min(limits.reset_notice_timeout);
    let will = serde_json::json!({"status": "offline", "reason": "factory reset"});
    let mut session = Session::establish(&target, &limits, &will).await?;
    let packet_id = match session
        .publish(&target.topic("events"), RESET_EVENT.as_bytes(), &[])
        .await?
    {
        Ok(id) => id,
        Err(reason) => return Err(Error::Mqtt(format!("reset notice not sent: {reason}"))),
    };
    // Bounded by the caller's timeout; the hub closes the connection after its PUBACK.
    loop {
        let wake = session.wait().await;
        for item in session.handle(wake).await? {
            if let Incoming::Acked {
                packet_id: acked,
                outcome,
            } = item
                && acked == packet_id
            {
                return match outcome {
                    PubOutcome::Accepted => Ok(()),
                    PubOutcome::Refused(why) | PubOutcome::Retry(why) => Err(Error::Mqtt(format!(
                        "the hub refused the reset notice: {why}"
                    ))),
                };
            }
        }
    }
}

/// Wipe the agent's files in `state` (whose lock the caller holds).
fn wipe(state: &StateDir) -> Result<Vec<Wiped>> {
    let mut wiped = Vec::new();
    // The key first: the device identity is gone even if a later step fails.
    // (A renewal in progress holds a key too.)
    let renewal_tmp = format!(".{}.tmp", crate::renew::RENEWAL_FILE);
    for name in [
        KEY_FILE,
        &format!(".{KEY_FILE}.tmp"),
        crate::renew::OLD_KEY_FILE,
        crate::renew::RENEWAL_FILE,
        &renewal_tmp,
    ] {
        let path = state.path(name);
        if fsutil::wipe_file(&path)? {
            wiped.push(Wiped {
                path,
                how: "overwritten and deleted",
            });
        }
    }
    let others = [
        CERT_FILE,
        CA_FILE,
        CONFIG_FILE,
        FIRMWARE_FILE,
        COMMANDS_FILE,
        QUEUE_FILE,
        QUEUE_META_FILE,
        crate::fields::FIELDS_FILE,
        crate::integrity::SEAL_FILE,
        crate::integrity::ALERT_FILE,
    ];
    for name in others {
        for candidate in [name.to_owned(), format!(".{name}.tmp")] {
            let path = state.path(&candidate);
            if fsutil::remove_file(&path)? {
                wiped.push(Wiped {
                    path,
                    how: "deleted",
                });
            }
        }
    }
    Ok(wiped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_removes_identity_and_state_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        for name in [
            KEY_FILE,
            CERT_FILE,
            CA_FILE,
            CONFIG_FILE,
            FIRMWARE_FILE,
            QUEUE_FILE,
        ] {
            fsutil::write_private(&state.path(name), b"x").expect("write");
        }
        std::fs::write(dir.path().join("unrelated.txt"), b"keep").expect("write");
        let wiped = reset(dir.path()).expect("reset");
        assert_eq!(wiped.len(), 6);
        assert_eq!(wiped[0].path, state.path(KEY_FILE));
        assert_eq!(wiped[0].how, "overwritten and deleted");
        for name in [
            KEY_FILE,
            CERT_FILE,
            CA_FILE,
            CONFIG_FILE,
            FIRMWARE_FILE,
            QUEUE_FILE,
        ] {
            assert!(!state.path(name).exists(), "{name} left behind");
        }
        assert!(dir.path().join("unrelated.txt").exists());
        assert!(reset(dir.path()).expect("again").is_empty());
    }
}
