//! The agent's state directory (mode 0700): what enrolment leaves there and how the
//! other commands read it back.
//!
//! | file | content |
//! |---|---|
//! | `device.key` | the device's P-256 private key, PKCS#8 PEM, mode 0600; made on the device, never sent |
//! | `device.pem` | the device certificate issued by the hub |
//! | `ca.pem` | the hub CA, used to verify the hub's MQTT server |
//! | `agent.json` | [`AgentConfig`]: device id, hub URL, MQTT host and port, certificate expiry |
//! | `renewal.json`, `device.key.old` | only while a renewed certificate is being stored ([`crate::renew`]) |
//! | `commands.json` | highest command sequence number executed (ENC-4) |
//! | `firmware_version` | the maker's firmware version, reported beside the agent's own (SUP-3) |
//! | `telemetry.queue`, `telemetry.queue.meta` | the durable outgoing queue (RES-1) |
//! | `update-root.json` | the maker's trusted TUF root for updates (none: automatic updates off) |
//! | `update-metadata/` | trusted TUF metadata of the update repository ([`crate::update`]) |
//! | `update-downloads/` | partial and verified downloads (`SHA256.part`), removed after install |
//! | `update.json` | pending offer, step in progress, last result, unacknowledged reports |
//! | `update-policy.json` | the owner's choice: automatic install off or postponed (UPD-3) |
//! | `slots/` | the A/B slots and `boot.json` ([`crate::slots`]; `--slots-dir` moves it) |
//! | `integrity.json` | digests of `agent.json`, `ca.pem`, `device.pem`, `update-root.json` and the slot images, sealed with a key derived from `device.key` ([`crate::integrity`], INT-1) |
//! | `integrity-alert.json` | what the last start found wrong (only then), for `status` |
//! | `agent.lock` | held by the running process so two agents never share a directory |

use crate::{Error, Result, fsutil, tls};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const KEY_FILE: &str = "device.key";
pub const CERT_FILE: &str = "device.pem";
pub const CA_FILE: &str = "ca.pem";
pub const CONFIG_FILE: &str = "agent.json";
pub const COMMANDS_FILE: &str = "commands.json";
pub const QUEUE_FILE: &str = "telemetry.queue";
pub const QUEUE_META_FILE: &str = "telemetry.queue.meta";
pub const LOCK_FILE: &str = "agent.lock";
pub const FIRMWARE_FILE: &str = "firmware_version";

/// Longest firmware version accepted (characters).
pub const MAX_FIRMWARE_VERSION: usize = 64;

/// A firmware version as the agent reports it: 1–64 printable ASCII characters
/// (spaces allowed), surrounding white space removed.
pub fn valid_firmware_version(text: &str) -> Result<String> {
    let v = text.trim();
    if v.is_empty()
        || v.len() > MAX_FIRMWARE_VERSION
        || !v.chars().all(|c| c.is_ascii_graphic() || c == ' ')
    {
        return Err(Error::invalid(
            "firmware version",
            format!("use 1 to {MAX_FIRMWARE_VERSION} printable ASCII characters"),
        ));
    }
    Ok(v.to_owned())
}

/// Largest state file read back (certificates, config).
const MAX_STATE_FILE: u64 = 256 * 1024;

/// What the agent remembers about its enrolment (`agent.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    pub device_id: String,
    /// The hub's HTTPS base URL, as given to `enroll`.
    pub hub_url: String,
    /// Host name (or IP address) of the hub's MQTT server; its certificate must be
    /// valid for this name.
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// Expiry of the device certificate, Unix seconds.
    pub not_after: i64,
    /// When enrolment completed, Unix seconds.
    pub enrolled_at: i64,
    /// When the current certificate was received by renewal, Unix seconds (0: it is
    /// the one from enrolment).
    #[serde(default)]
    pub cert_issued_at: i64,
}

/// Is `id` usable as a device id: 1–128 characters from `[A-Za-z0-9._-]`, so it is a
/// single MQTT topic level with no wildcard and a safe file-name fragment.
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The state directory and the paths in it.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// The exclusive lock on a state directory, released when dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Create the directory (0700) if needed and take its lock, so that no other agent
    /// process (run, enroll, reset) works in it at the same time.
    pub fn lock(&self) -> Result<StateLock> {
        fsutil::ensure_private_dir(&self.root)?;
        let path = self.path(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy(self.root.clone())),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("lock {}", path.display()), e))
            }
        }
    }

    /// The device id if this directory holds a completed enrolment (or a certificate
    /// from one), `None` if it is fresh.
    pub fn enrolled_device(&self) -> Result<Option<String>> {
        if self.path(CONFIG_FILE).exists() {
            return Ok(Some(self.load_config()?.device_id));
        }
        if self.path(CERT_FILE).exists() {
            return Ok(Some("(unknown: agent.json is missing)".to_owned()));
        }
        Ok(None)
    }

    pub fn load_config(&self) -> Result<AgentConfig> {
        let path = self.path(CONFIG_FILE);
        if !path.exists() {
            return Err(Error::NotEnrolled(self.root.clone()));
        }
        let bytes = fsutil::read_bounded(&path, MAX_STATE_FILE)?;
        let config: AgentConfig = serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(format!("parse {}", path.display()), e))?;
        if !valid_device_id(&config.device_id) {
            return Err(Error::invalid(
                "agent.json",
                "device_id is not a valid device id",
            ));
        }
        if config.mqtt_port == 0 || config.mqtt_host.is_empty() {
            return Err(Error::invalid("agent.json", "MQTT host or port is missing"));
        }
        Ok(config)
    }

    /// Save the results of enrolment. `agent.json` is written last: its presence means
    /// the enrolment is complete.
    pub fn save_enrollment(
        &self,
        cert_pem: &str,
        ca_pem: &str,
        config: &AgentConfig,
    ) -> Result<()> {
        fsutil::write_private(&self.path(CERT_FILE), cert_pem.as_bytes())?;
        fsutil::write_private(&self.path(CA_FILE), ca_pem.as_bytes())?;
        let json = serde_json::to_vec_pretty(config)
            .map_err(|e| Error::json("serialise agent.json", e))?;
        fsutil::write_private(&self.path(CONFIG_FILE), &json)?;
        // Sealed with the device key (INT-1): a later edit on disk is found at start.
        crate::integrity::seal(self)
    }

    /// Save a newly generated private key (mode 0600, atomically).
    pub fn save_key(&self, key_pem: &str) -> Result<()> {
        fsutil::write_private(&self.path(KEY_FILE), key_pem.as_bytes())
    }

    /// Remember the maker's firmware version (validated; mode 0600, atomically).
    pub fn save_firmware_version(&self, version: &str) -> Result<()> {
        let v = valid_firmware_version(version)?;
        fsutil::write_private(&self.path(FIRMWARE_FILE), v.as_bytes())
    }

    /// The firmware version saved by [`StateDir::save_firmware_version`], if any.
    pub fn firmware_version(&self) -> Result<Option<String>> {
        let path = self.path(FIRMWARE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = fsutil::read_bounded(&path, MAX_FIRMWARE_VERSION as u64 + 2)?;
        let text = String::from_utf8_lossy(&bytes);
        valid_firmware_version(&text).map(Some)
    }

    /// Load everything needed to connect: config, CA, certificate chain and key.
    pub fn load_identity(&self) -> Result<Identity> {
        let config = self.load_config()?;
        let ca_pem = fsutil::read_bounded(&self.path(CA_FILE), MAX_STATE_FILE)?;
        let cert_pem = fsutil::read_bounded(&self.path(CERT_FILE), MAX_STATE_FILE)?;
        let key_pem = fsutil::read_bounded(&self.path(KEY_FILE), MAX_STATE_FILE)?;
        Ok(Identity {
            config,
            ca_pem,
            cert_chain: tls::parse_certs(&cert_pem, "device certificate")?,
            key: tls::parse_key(&key_pem, "device key")?,
        })
    }
}

/// The device's enrolled identity, loaded from the state directory.
pub struct Identity {
    pub config: AgentConfig,
    pub ca_pem: Vec<u8>,
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_single_topic_levels() {
        assert!(valid_device_id("0123456789abcdef"));
        assert!(valid_device_id("dev-1.a_b"));
        for bad in ["", "a/b", "+", "#", "a b", "é", &"x".repeat(129)] {
            assert!(!valid_device_id(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn firmware_versions_are_bounded_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        assert_eq!(state.firmware_version().expect("none"), None);
        state.save_firmware_version(" 2.1.0-rc1\n").expect("save");
        assert_eq!(
            state.firmware_version().expect("read").as_deref(),
            Some("2.1.0-rc1")
        );
        for bad in ["", "a\u{7}b", "é", &"1".repeat(65)] {
            assert!(valid_firmware_version(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn second_lock_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path().join("s"));
        let _held = state.lock().expect("first lock");
        assert!(matches!(state.lock(), Err(Error::Busy(_))));
    }
}
