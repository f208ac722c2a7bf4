//! The A/B slot installer (UPD-5): two slot directories `a/` and `b/` holding a firmware
//! image each, and `boot.json`, replaced atomically, saying which slot is active and
//! which one is on trial.
//!
//! An update writes the inactive slot (fsynced), then switches `boot.json` to
//! "tentative = new slot, tries = 0" with a one-time restart token, and restarts. Only
//! the planned restart (the process that carries that token) may try the new slot: it
//! sets tries = 1 before the health check and commits (active = new) after it. Any other
//! start that finds a tentative slot — a crash, kill or power loss after the switch or
//! during the health check — falls back to the active (previous) slot. So a slot becomes
//! active only after one healthy start, and a start never depends on a half-written
//! slot: the switch happens after the slot is complete and durable.

use crate::{Error, Result, fsutil};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const BOOT_FILE: &str = "boot.json";
/// The image file inside a slot directory.
pub const IMAGE_FILE: &str = "image";
const MAX_BOOT_FILE: u64 = 64 * 1024;

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }
}

/// What a slot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    /// The firmware version of the image in the slot (`None`: the factory image, whose
    /// version is the agent's `firmware_version`).
    pub version: Option<String>,
    /// The hub's release id it came from.
    pub release: Option<String>,
    /// SHA-256 (hex) of the image, as TUF verified it.
    pub sha256: Option<String>,
}

/// `boot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootState {
    pub active: Slot,
    /// The slot on trial, if an update is between switch and commit.
    pub tentative: Option<Slot>,
    /// Starts of the tentative slot so far (0 or 1).
    pub tries: u32,
    /// The token only the planned restart carries.
    pub restart_token: Option<String>,
    /// When the agent stopped for the restart (Unix ms), for the downtime figure.
    pub stopped_at_ms: Option<u64>,
    pub a: SlotInfo,
    pub b: SlotInfo,
}

impl Default for BootState {
    fn default() -> Self {
        Self {
            active: Slot::A,
            tentative: None,
            tries: 0,
            restart_token: None,
            stopped_at_ms: None,
            a: SlotInfo::default(),
            b: SlotInfo::default(),
        }
    }
}

impl BootState {
    pub fn info(&self, slot: Slot) -> &SlotInfo {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    fn info_mut(&mut self, slot: Slot) -> &mut SlotInfo {
        match slot {
            Slot::A => &mut self.a,
            Slot::B => &mut self.b,
        }
    }
}

/// The slot directory.
#[derive(Debug, Clone)]
pub struct Slots {
    dir: PathBuf,
}

impl Slots {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn image_path(&self, slot: Slot) -> PathBuf {
        self.dir.join(slot.name()).join(IMAGE_FILE)
    }

    /// The current `boot.json` (the default, slot `a` active, if there is none yet).
    pub fn load(&self) -> Result<BootState> {
        let path = self.dir.join(BOOT_FILE);
        if !path.exists() {
            return Ok(BootState::default());
        }
        let bytes = fsutil::read_bounded(&path, MAX_BOOT_FILE)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(format!("parse {}", path.display()), e))
    }

    /// Replace `boot.json` atomically (write, fsync, rename, fsync the directory).
    pub fn store(&self, state: &BootState) -> Result<()> {
        fsutil::ensure_private_dir(&self.dir)?;
        let json = serde_json::to_vec_pretty(state).map_err(|e| Error::json("boot.json", e))?;
        fsutil::write_private(&self.dir.join(BOOT_FILE), &json)
    }

    /// Copy `image` into the inactive slot, hashing what is written: the copy must have
    /// exactly `length` bytes with SHA-256 `sha256`, the values TUF verified (so a file
    /// changed after verification is never installed). The slot file is fsynced, renamed
    /// into place, and the directory fsynced. Returns the slot written.
    pub fn write_inactive(&self, image: &Path, length: u64, sha256: &[u8]) -> Result<Slot> {
        let state = self.load()?;
        let slot = state.active.other();
        let slot_dir = self.dir.join(slot.name());
        fsutil::ensure_private_dir(&self.dir)?;
        fsutil::ensure_private_dir(&slot_dir)?;
        let mut source = std::fs::File::open(image)
            .map_err(|e| Error::io(format!("open {}", image.display()), e))?
            .take(length.saturating_add(1));
        let mut tmp = tempfile::NamedTempFile::new_in(&slot_dir)
            .map_err(|e| Error::io(format!("create a file in {}", slot_dir.display()), e))?;
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total: u64 = 0;
        loop {
            let n = source
                .read(&mut buf)
                .map_err(|e| Error::io(format!("read {}", image.display()), e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            context.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| Error::io(format!("write slot {}", slot.name()), e))?;
        }
        if total != length || context.finish().as_ref() != sha256 {
            return Err(Error::TufRefused(format!(
                "{} changed after verification: not installed",
                image.display()
            )));
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io(format!("fsync slot {}", slot.name()), e))?;
        let path = self.image_path(slot);
        tmp.persist(&path)
            .map_err(|e| Error::io(format!("rename to {}", path.display()), e.error))?;
        fsutil::fsync_dir(&slot_dir)?;
        Ok(slot)
    }

    /// Make `slot` tentative (atomically): the next planned start tries it.
    pub fn switch(
        &self,
        slot: Slot,
        info: SlotInfo,
        token: &str,
        stopped_at_ms: u64,
    ) -> Result<()> {
        let mut state = self.load()?;
        if slot == state.active {
            return Err(Error::invalid(
                "slot switch",
                "the new slot is the active one",
            ));
        }
        *state.info_mut(slot) = info;
        state.tentative = Some(slot);
        state.tries = 0;
        state.restart_token = Some(token.to_owned());
        state.stopped_at_ms = Some(stopped_at_ms);
        self.store(&state)
    }

    /// The new slot passed its health check: it becomes the active one.
    pub fn commit(&self) -> Result<BootState> {
        let mut state = self.load()?;
        if let Some(slot) = state.tentative.take() {
            state.active = slot;
        }
        state.tries = 0;
        state.restart_token = None;
        state.stopped_at_ms = None;
        self.store(&state)?;
        Ok(state)
    }

    /// Back to the previous slot: the tentative one is abandoned.
    pub fn roll_back(&self) -> Result<BootState> {
        let mut state = self.load()?;
        state.tentative = None;
        state.tries = 0;
        state.restart_token = None;
        state.stopped_at_ms = None;
        self.store(&state)?;
        Ok(state)
    }

    /// Record the planned start of the tentative slot (tries = 1) before its health
    /// check, so a crash during the check is seen at the next start.
    pub fn mark_trial(&self) -> Result<BootState> {
        let mut state = self.load()?;
        state.tries = state.tries.saturating_add(1);
        state.restart_token = None;
        self.store(&state)?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_switch_commit_and_roll_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = Slots::new(dir.path().join("slots"));
        let image = dir.path().join("img");
        std::fs::write(&image, b"firmware").expect("image");
        let sha = ring::digest::digest(&ring::digest::SHA256, b"firmware");
        // A wrong length or hash is never installed.
        assert!(slots.write_inactive(&image, 7, sha.as_ref()).is_err());
        assert!(slots.write_inactive(&image, 8, &[0u8; 32]).is_err());
        let slot = slots
            .write_inactive(&image, 8, sha.as_ref())
            .expect("write");
        assert_eq!(slot, Slot::B);
        assert_eq!(
            std::fs::read(slots.image_path(Slot::B)).expect("slot"),
            b"firmware"
        );
        slots
            .switch(slot, SlotInfo::default(), "t", 1)
            .expect("switch");
        assert_eq!(slots.load().expect("load").tentative, Some(Slot::B));
        assert_eq!(slots.roll_back().expect("roll back").active, Slot::A);
        slots
            .switch(slot, SlotInfo::default(), "t", 1)
            .expect("switch");
        let state = slots.commit().expect("commit");
        assert_eq!((state.active, state.tentative), (Slot::B, None));
    }
}
