//! Software integrity at start (INT-1): the agent's configuration and the active slot's
//! firmware image are checked before anything else is done; on a mismatch the agent
//! only reports it to the hub ([`crate::run`]) and `palisade-agent status` says why.
//!
//! - The files not covered by TUF — `agent.json`, `ca.pem`, `device.pem` and
//!   `update-root.json` — have their SHA-256 recorded in `integrity.json` at every
//!   legitimate change (enrolment, certificate renewal, `update-root`), sealed with an
//!   HMAC-SHA256 whose key is derived from the device's private key. A changed, added or
//!   removed file, a changed seal or a changed device key is detected.
//! - The active slot's image: its length and SHA-256 must be what the signed targets
//!   metadata (offline targets key) lists for it, checked again at every start against
//!   the trusted `update-metadata/` (signatures verified with the trusted root). Its
//!   digest is also sealed at commit ([`seal_image`]), so a `boot.json` edited to point
//!   at a different signed image is noticed. A factory image (not installed by an update)
//!   has no signed metadata: its digest is sealed the first time the agent starts with
//!   it (trust on first start) and checked from then on.
//!
//! What this does NOT protect against, deliberately said: someone with root (or the
//! agent's user) on the device can read `device.key` and re-seal anything; without
//! hardware secure boot, software cannot prove the software checking itself is
//! unmodified. It detects casual and accidental changes and corruption, and it reports
//! them to the hub instead of running on.

use crate::slots::Slots;
use crate::state::{CA_FILE, CERT_FILE, CONFIG_FILE, KEY_FILE, StateDir};
use crate::update::{METADATA_DIR, UPDATE_ROOT_FILE};
use crate::{Error, Result, fsutil};
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The seal: digests of the covered files and slot images, with their HMAC.
pub const SEAL_FILE: &str = "integrity.json";
/// Written while an integrity problem stops the agent (read by `status`).
pub const ALERT_FILE: &str = "integrity-alert.json";
/// The files sealed with the device key.
pub const SEALED_FILES: [&str; 4] = [CONFIG_FILE, CA_FILE, CERT_FILE, UPDATE_ROOT_FILE];
/// Domain separation for the MAC key derived from the device key.
const MAC_CONTEXT: &[u8] = b"palisade-agent integrity seal v1\0";
const MAX_FILE: u64 = 1024 * 1024;
/// At most this many findings are reported (each bounded too).
pub const MAX_FINDINGS: usize = 16;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Body {
    /// File name → SHA-256 hex, `None` for a file that did not exist when sealed.
    files: BTreeMap<String, Option<String>>,
    /// Slot name → SHA-256 hex of its image.
    images: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seal {
    #[serde(flatten)]
    body: Body,
    mac: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mac_key(state: &StateDir) -> Result<Option<hmac::Key>> {
    let path = state.path(KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let key = fsutil::read_bounded(&path, MAX_FILE)?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(MAC_CONTEXT);
    ctx.update(&key);
    Ok(Some(hmac::Key::new(
        hmac::HMAC_SHA256,
        ctx.finish().as_ref(),
    )))
}

fn body_bytes(body: &Body) -> Result<Vec<u8>> {
    // BTreeMaps: the serialisation is deterministic.
    serde_json::to_vec(body).map_err(|e| Error::json("integrity seal", e))
}

/// SHA-256 (hex) and length of a file, `None` if it does not exist.
pub fn file_digest(path: &Path) -> Result<Option<(String, u64)>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
    };
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        ctx.update(&buf[..n]);
    }
    Ok(Some((hex(ctx.finish().as_ref()), total)))
}

fn current_files(state: &StateDir) -> Result<BTreeMap<String, Option<String>>> {
    let mut files = BTreeMap::new();
    for name in SEALED_FILES {
        files.insert(
            name.to_owned(),
            file_digest(&state.path(name))?.map(|(h, _)| h),
        );
    }
    Ok(files)
}

/// The seal as stored, if it exists and verifies with the device key.
fn load(state: &StateDir, key: &hmac::Key) -> std::result::Result<Body, String> {
    let path = state.path(SEAL_FILE);
    if !path.exists() {
        return Err(format!("{SEAL_FILE} (the integrity seal) is missing"));
    }
    let bytes = fsutil::read_bounded(&path, MAX_FILE).map_err(|e| e.to_string())?;
    let seal: Seal = serde_json::from_slice(&bytes)
        .map_err(|_| format!("{SEAL_FILE} (the integrity seal) is corrupt"))?;
    let tag = (0..seal.mac.len())
        .step_by(2)
        .map(|i| {
            seal.mac
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_default();
    let body = body_bytes(&seal.body).map_err(|e| e.to_string())?;
    hmac::verify(key, &body, &tag).map_err(|_| {
        format!("the integrity seal does not verify ({SEAL_FILE} or {KEY_FILE} was changed)")
    })?;
    Ok(seal.body)
}

fn store(state: &StateDir, key: &hmac::Key, body: Body) -> Result<()> {
    let tag = hmac::sign(key, &body_bytes(&body)?);
    let seal = Seal {
        body,
        mac: hex(tag.as_ref()),
    };
    let json = serde_json::to_vec_pretty(&seal).map_err(|e| Error::json("integrity seal", e))?;
    fsutil::write_private(&state.path(SEAL_FILE), &json)
}

/// Record the covered files as they are now: called after each legitimate change
/// (enrolment, renewal, `update-root`). Sealed image digests are kept when the old seal
/// verifies. Without a device key (not enrolled) there is nothing to seal with.
pub fn seal(state: &StateDir) -> Result<()> {
    let Some(key) = mac_key(state)? else {
        return Ok(());
    };
    // After a renewal the key is new: the old seal's images are read with the old key
    // only if that still verifies, so they are kept by the caller sealing them again.
    let images = load(state, &key).map(|b| b.images).unwrap_or_default();
    let body = Body {
        files: current_files(state)?,
        images,
    };
    store(state, &key, body)
}

/// [`seal`] across a change of the device key (renewal): the image digests the old
/// seal held are carried over if it verified before the change.
pub fn images_before_rekey(state: &StateDir) -> BTreeMap<String, String> {
    match mac_key(state) {
        Ok(Some(key)) => load(state, &key).map(|b| b.images).unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

/// Seal with the given image digests (after a key change, see [`images_before_rekey`]).
pub fn seal_with_images(state: &StateDir, images: BTreeMap<String, String>) -> Result<()> {
    let Some(key) = mac_key(state)? else {
        return Ok(());
    };
    let body = Body {
        files: current_files(state)?,
        images,
    };
    store(state, &key, body)
}

/// Record the digest of the image now active in `slot` (after a verified install is
/// committed, or the first start with a factory image). Refused when the existing seal
/// does not verify: a broken seal is not silently repaired.
pub fn seal_image(state: &StateDir, slot: &str, sha256_hex: &str) -> Result<()> {
    let Some(key) = mac_key(state)? else {
        return Ok(());
    };
    let mut body = load(state, &key).map_err(|why| Error::invalid("integrity seal", why))?;
    body.images.insert(slot.to_owned(), sha256_hex.to_owned());
    store(state, &key, body)
}

/// Check everything at start; the findings (empty: intact). `metadata_dir`: the trusted
/// TUF metadata of the update repository.
pub fn check(state: &StateDir, slots: &Slots) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let Some(key) = mac_key(state)? else {
        return Ok(vec![format!(
            "{KEY_FILE} (the device key) is missing: cannot check the integrity seal"
        )]);
    };
    let sealed = match load(state, &key) {
        Ok(body) => body,
        Err(why) => return Ok(vec![why]),
    };
    let now = current_files(state)?;
    for (name, digest) in &now {
        match sealed.files.get(name) {
            Some(recorded) if recorded == digest => {}
            _ => found.push(match digest {
                Some(_) => format!("{name} changed since it was sealed"),
                None => format!("{name} was removed since it was sealed"),
            }),
        }
    }
    let boot = match slots.load() {
        Ok(b) => b,
        Err(e) => {
            found.push(format!("boot.json is corrupt: {e}"));
            return Ok(found);
        }
    };
    let slot = boot.active;
    let image = slots.image_path(slot);
    let recorded = sealed.images.get(slot.name());
    let signed = boot.info(slot).sha256.as_ref();
    match file_digest(&image)? {
        None => {
            if recorded.is_some() || signed.is_some() {
                found.push(format!("the slot {} image is missing", slot.name()));
            }
        }
        Some((actual, length)) => {
            if let (Some(r), Some(s)) = (recorded, signed)
                && r != s
            {
                found.push(format!(
                    "boot.json names a different image for slot {} than was installed",
                    slot.name()
                ));
            }
            match (recorded, signed) {
                (None, None) => {
                    // A factory image: no signed metadata exists for it. Trust on first
                    // start, checked from now on (see the module comment).
                    tracing::warn!(
                        slot = slot.name(),
                        "factory image digest recorded (first start with it)"
                    );
                    seal_image(state, slot.name(), &actual)?;
                }
                (r, s) => {
                    if r.or(s).is_some_and(|want| want != &actual) {
                        found.push(format!(
                            "the slot {} image does not match its recorded digest (modified on disk)",
                            slot.name()
                        ));
                    } else if let Some(s) = s {
                        let metadata = state.path(METADATA_DIR);
                        match crate::tuf::signed_target_with(&metadata, s, length) {
                            Ok(true) => {}
                            Ok(false) => found.push(format!(
                                "the slot {} image is not listed in the signed targets metadata",
                                slot.name()
                            )),
                            Err(e) => found.push(format!(
                                "the signed targets metadata cannot be checked: {e}"
                            )),
                        }
                    }
                }
            }
        }
    }
    Ok(found)
}

/// What the agent found at its last start, for `status` (`None`: nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub at: i64,
    pub what: Vec<String>,
}

/// Bound the findings for the wire and the status file.
pub fn bounded(what: &[String]) -> Vec<String> {
    what.iter()
        .take(MAX_FINDINGS)
        .map(|w| crate::update::printable(w, 200))
        .collect()
}

/// Remember the findings for `status` (or clear them once the start is clean).
pub fn record_alert(state: &StateDir, what: &[String]) -> Result<()> {
    let path = state.path(ALERT_FILE);
    if what.is_empty() {
        fsutil::remove_file(&path)?;
        return Ok(());
    }
    let alert = Alert {
        at: crate::unix_now(),
        what: bounded(what),
    };
    let json = serde_json::to_vec_pretty(&alert).map_err(|e| Error::json("integrity alert", e))?;
    fsutil::write_private(&path, &json)
}

/// The findings of the last start, if it found any.
pub fn last_alert(state: &StateDir) -> Option<Alert> {
    let bytes = fsutil::read_bounded(&state.path(ALERT_FILE), MAX_FILE).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::{BootState, Slot, SlotInfo};

    fn enrolled() -> (tempfile::TempDir, StateDir, Slots) {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path().join("state"));
        std::fs::create_dir_all(state.root()).expect("dir");
        for (name, text) in [
            (KEY_FILE, "key one"),
            (CONFIG_FILE, "{\"device_id\":\"d\"}"),
            (CA_FILE, "ca"),
            (CERT_FILE, "cert"),
        ] {
            std::fs::write(state.path(name), text).expect("write");
        }
        seal(&state).expect("seal");
        let slots = Slots::new(state.path("slots"));
        (dir, state, slots)
    }

    #[test]
    fn int1_untouched_files_pass_and_edits_are_found() {
        let (_dir, state, slots) = enrolled();
        assert!(check(&state, &slots).expect("check").is_empty());
        std::fs::write(state.path(CONFIG_FILE), "{\"device_id\":\"e\"}").expect("edit");
        let found = check(&state, &slots).expect("check");
        assert_eq!(
            found,
            vec![format!("{CONFIG_FILE} changed since it was sealed")]
        );
        // A legitimate change re-seals.
        seal(&state).expect("seal");
        assert!(check(&state, &slots).expect("check").is_empty());
        // An added trusted root is a change too.
        std::fs::write(state.path(UPDATE_ROOT_FILE), "{}").expect("root");
        assert_eq!(check(&state, &slots).expect("check").len(), 1);
    }

    #[test]
    fn int1_a_forged_or_missing_seal_is_found() {
        let (_dir, state, slots) = enrolled();
        // The attacker edits the file and the digest in the seal, but cannot make the MAC.
        std::fs::write(state.path(CA_FILE), "evil ca").expect("edit");
        let text = std::fs::read_to_string(state.path(SEAL_FILE)).expect("seal");
        let old = file_digest(&state.path(CA_FILE)).expect("d");
        let forged = text.replace(
            &hex(digest::digest(&digest::SHA256, b"ca").as_ref()),
            &old.expect("exists").0,
        );
        std::fs::write(state.path(SEAL_FILE), forged).expect("forge");
        let found = check(&state, &slots).expect("check");
        assert!(found[0].contains("does not verify"), "{found:?}");
        // Another device key does not verify the seal either.
        std::fs::write(state.path(KEY_FILE), "key two").expect("key");
        assert!(check(&state, &slots).expect("check")[0].contains("does not verify"));
        std::fs::remove_file(state.path(SEAL_FILE)).expect("rm");
        assert!(check(&state, &slots).expect("check")[0].contains("missing"));
        std::fs::write(state.path(SEAL_FILE), "{not json").expect("corrupt");
        assert!(check(&state, &slots).expect("check")[0].contains("corrupt"));
    }

    #[test]
    fn int1_slot_image_is_checked_against_its_recorded_digest() {
        let (_dir, state, slots) = enrolled();
        std::fs::create_dir_all(slots.dir().join("a")).expect("slot dir");
        std::fs::write(slots.image_path(Slot::A), b"factory image").expect("image");
        // First start: the factory image is recorded, then checked.
        assert!(check(&state, &slots).expect("check").is_empty());
        assert!(check(&state, &slots).expect("check").is_empty());
        std::fs::write(slots.image_path(Slot::A), b"factory imagE").expect("tamper");
        let found = check(&state, &slots).expect("check");
        assert!(found[0].contains("does not match"), "{found:?}");
        std::fs::write(slots.image_path(Slot::A), b"factory image").expect("repair");
        assert!(check(&state, &slots).expect("check").is_empty());
        std::fs::remove_file(slots.image_path(Slot::A)).expect("rm");
        assert!(check(&state, &slots).expect("check")[0].contains("missing"));
        // A corrupt boot.json is reported, not a crash.
        std::fs::write(slots.dir().join("boot.json"), b"{").expect("corrupt");
        assert!(check(&state, &slots).expect("check")[0].contains("boot.json"));
    }

    #[test]
    fn int1_boot_json_pointing_elsewhere_is_found() {
        let (_dir, state, slots) = enrolled();
        std::fs::create_dir_all(slots.dir().join("b")).expect("slot dir");
        std::fs::write(slots.image_path(Slot::B), b"v2").expect("image");
        let v2 = hex(digest::digest(&digest::SHA256, b"v2").as_ref());
        seal_image(&state, "b", &v2).expect("seal image");
        let boot = BootState {
            active: Slot::B,
            b: SlotInfo {
                version: Some("2".into()),
                release: None,
                sha256: Some(hex(digest::digest(&digest::SHA256, b"v3").as_ref())),
            },
            ..BootState::default()
        };
        slots.store(&boot).expect("boot");
        let found = check(&state, &slots).expect("check");
        assert!(
            found.iter().any(|f| f.contains("different image")),
            "{found:?}"
        );
    }
}
