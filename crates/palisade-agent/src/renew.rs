//! Automatic renewal of the device certificate (AUTH-10, ENC-3), over the mutually
//! authenticated MQTT connection (the hub's HTTPS listener has no client
//! authentication).
//!
//! When less than `renew_when_remaining_percent` of the certificate's lifetime is
//! left (default a third), the agent makes a NEW key pair on the device, publishes a
//! CSR (QoS 1) on `devices/{id}/certificate/csr`, and receives the certificate on
//! `devices/{id}/certificate`. The hub keeps the old certificate valid until the device
//! first connects with the new one, and the agent keeps its old key until the new
//! certificate is safely stored:
//!
//! 1. the new key, certificate and expiry are written together to `renewal.json`
//!    (0600, atomic: temporary file, fsync, rename, directory fsync) — the commit point;
//! 2. [`apply`] then replaces `device.key`, `device.pem` and `agent.json` one by one
//!    (each atomically), overwrites the old key (kept reachable as `device.key.old`
//!    until the new one is in place) and wipes `renewal.json`.
//!
//! A crash before step 1 leaves the old identity (still accepted by the hub); a crash
//! during step 2 is finished by [`recover`] at the next start. Then the agent
//! reconnects with the new certificate.

use crate::state::{AgentConfig, CERT_FILE, CONFIG_FILE, KEY_FILE, StateDir};
use crate::{Error, Result, fsutil, tls};
use serde::{Deserialize, Serialize};

/// The renewal in progress, once the certificate has arrived (contains the new key).
pub const RENEWAL_FILE: &str = "renewal.json";
/// The old key while the new one replaces it; overwritten and deleted right after.
pub const OLD_KEY_FILE: &str = "device.key.old";

/// Largest renewal file or certificate message read.
const MAX_RENEWAL_BYTES: u64 = 64 * 1024;

/// A renewed identity ready to be stored.
#[derive(Serialize, Deserialize)]
pub struct Renewal {
    pub key_pem: String,
    pub cert_pem: String,
    pub not_after: i64,
    pub issued_at: i64,
}

impl std::fmt::Debug for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewal")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// When the certificate of `config` is due for renewal (Unix seconds): when less than
/// `remaining_percent` of its lifetime is left.
pub fn due_at(config: &AgentConfig, remaining_percent: u8) -> i64 {
    let issued = if config.cert_issued_at > 0 {
        config.cert_issued_at
    } else {
        config.enrolled_at
    };
    let lifetime = (config.not_after - issued).max(0);
    config.not_after - lifetime * i64::from(remaining_percent.min(100)) / 100
}

/// The hub's answer on `devices/{id}/certificate`.
#[derive(Deserialize)]
struct Issued {
    certificate_pem: String,
    not_after: i64,
}

/// Check the hub's answer against the key made for it: the certificate must chain to
/// the pinned CA's configuration and belong to `key_pem` (rustls refuses a key that
/// does not match), and must not be expired.
pub fn accept(payload: &[u8], key_pem: &str, ca_pem: &[u8], now: i64) -> Result<Renewal> {
    if payload.len() as u64 > MAX_RENEWAL_BYTES {
        return Err(Error::invalid("renewed certificate", "message too large"));
    }
    let issued: Issued = serde_json::from_slice(payload)
        .map_err(|e| Error::json("renewed certificate message", e))?;
    if issued.not_after <= now {
        return Err(Error::invalid("renewed certificate", "already expired"));
    }
    let chain = tls::parse_certs(issued.certificate_pem.as_bytes(), "renewed certificate")?;
    let key = tls::parse_key(key_pem.as_bytes(), "new device key")?;
    tls::client_config(ca_pem, Some((chain, key)))?;
    Ok(Renewal {
        key_pem: key_pem.to_owned(),
        cert_pem: issued.certificate_pem,
        not_after: issued.not_after,
        issued_at: now,
    })
}

/// Store a renewal: the commit point, then [`apply`].
pub fn commit(state: &StateDir, renewal: &Renewal) -> Result<AgentConfig> {
    let json = serde_json::to_vec(renewal).map_err(|e| Error::json("serialise renewal", e))?;
    fsutil::write_private(&state.path(RENEWAL_FILE), &json)?;
    apply(state)
}

/// Finish a renewal interrupted by a crash; true if there was one.
pub fn recover(state: &StateDir) -> Result<bool> {
    if state.path(RENEWAL_FILE).exists() {
        apply(state)?;
        tracing::info!("finished storing a renewed certificate");
        return Ok(true);
    }
    // The old key of a finished renewal that was not yet wiped.
    fsutil::wipe_file(&state.path(OLD_KEY_FILE))?;
    Ok(false)
}

/// Replace key, certificate and config from `renewal.json` (idempotent).
fn apply(state: &StateDir) -> Result<AgentConfig> {
    let path = state.path(RENEWAL_FILE);
    let bytes = fsutil::read_bounded(&path, MAX_RENEWAL_BYTES)?;
    let renewal: Renewal = serde_json::from_slice(&bytes)
        .map_err(|e| Error::json(format!("parse {}", path.display()), e))?;
    // The sealed image digests, read while the old key still verifies the seal.
    let images = crate::integrity::images_before_rekey(state);
    let key = state.path(KEY_FILE);
    let old = state.path(OLD_KEY_FILE);
    if key.exists() && !old.exists() {
        // Keep the old key's blocks reachable so they can be overwritten once the new
        // key has replaced it (a rename alone would leave them on disk).
        std::fs::hard_link(&key, &old)
            .map_err(|e| Error::io(format!("link {}", old.display()), e))?;
    }
    fsutil::write_private(&key, renewal.key_pem.as_bytes())?;
    fsutil::write_private(&state.path(CERT_FILE), renewal.cert_pem.as_bytes())?;
    let mut config = state.load_config()?;
    config.not_after = renewal.not_after;
    config.cert_issued_at = renewal.issued_at;
    let json =
        serde_json::to_vec_pretty(&config).map_err(|e| Error::json("serialise agent.json", e))?;
    fsutil::write_private(&state.path(CONFIG_FILE), &json)?;
    // A legitimate change: sealed again, with the new key (INT-1).
    crate::integrity::seal_with_images(state, images)?;
    fsutil::wipe_file(&old)?;
    fsutil::wipe_file(&path)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(enrolled_at: i64, not_after: i64) -> AgentConfig {
        AgentConfig {
            device_id: "d".into(),
            hub_url: "https://h".into(),
            mqtt_host: "h".into(),
            mqtt_port: 8883,
            not_after,
            enrolled_at,
            cert_issued_at: 0,
        }
    }

    #[test]
    fn renewal_is_due_with_a_third_of_the_lifetime_left() {
        let c = config(0, 300);
        assert_eq!(due_at(&c, 33), 201);
        let mut renewed = c.clone();
        renewed.cert_issued_at = 300;
        renewed.not_after = 600;
        assert_eq!(due_at(&renewed, 50), 450);
    }

    #[test]
    fn int1_a_renewal_is_sealed_with_the_new_key_and_keeps_the_image_digest() {
        use crate::integrity;
        use crate::slots::{Slot, Slots};
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        let json = serde_json::to_vec(&config(0, 300)).expect("json");
        std::fs::write(state.path(CONFIG_FILE), json).expect("config");
        std::fs::write(state.path(KEY_FILE), "old key").expect("key");
        std::fs::write(state.path(CERT_FILE), "old cert").expect("cert");
        integrity::seal(&state).expect("seal");
        let slots = Slots::new(dir.path().join("slots"));
        std::fs::create_dir_all(slots.dir().join("a")).expect("slot");
        std::fs::write(slots.image_path(Slot::A), b"fw").expect("image");
        assert!(integrity::check(&state, &slots).expect("check").is_empty());
        let renewal = Renewal {
            key_pem: "new key".into(),
            cert_pem: "new cert".into(),
            not_after: 900,
            issued_at: 600,
        };
        commit(&state, &renewal).expect("commit");
        assert!(integrity::check(&state, &slots).expect("check").is_empty());
        std::fs::write(slots.image_path(Slot::A), b"fw!").expect("tamper");
        assert_eq!(integrity::check(&state, &slots).expect("check").len(), 1);
    }

    #[test]
    fn an_interrupted_renewal_is_finished_and_the_old_key_wiped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        let json = serde_json::to_vec(&config(0, 300)).expect("json");
        std::fs::write(state.path(CONFIG_FILE), json).expect("config");
        std::fs::write(state.path(KEY_FILE), "old key").expect("key");
        std::fs::write(state.path(CERT_FILE), "old cert").expect("cert");
        let renewal = Renewal {
            key_pem: "new key".into(),
            cert_pem: "new cert".into(),
            not_after: 900,
            issued_at: 600,
        };
        // A crash right after the commit point: renewal.json and the old key's link.
        fsutil::write_private(
            &state.path(RENEWAL_FILE),
            &serde_json::to_vec(&renewal).expect("json"),
        )
        .expect("commit");
        std::fs::hard_link(state.path(KEY_FILE), state.path(OLD_KEY_FILE)).expect("link");
        assert!(recover(&state).expect("recover"));
        assert_eq!(
            std::fs::read_to_string(state.path(KEY_FILE)).expect("key"),
            "new key"
        );
        assert_eq!(
            std::fs::read_to_string(state.path(CERT_FILE)).expect("cert"),
            "new cert"
        );
        assert_eq!(state.load_config().expect("config").not_after, 900);
        assert!(!state.path(OLD_KEY_FILE).exists());
        assert!(!state.path(RENEWAL_FILE).exists());
        assert!(!recover(&state).expect("nothing to do"));
    }
}
