//! Factory reset (DATA-3 basics): overwrite and delete the private key, delete the
//! certificate, CA, configuration, command state and telemetry queue. Only the agent's
//! own files are touched; the directory itself stays (it may be a mount point).

use crate::state::{
    CA_FILE, CERT_FILE, COMMANDS_FILE, CONFIG_FILE, KEY_FILE, QUEUE_FILE, QUEUE_META_FILE, StateDir,
};
use crate::{Result, fsutil};
use std::path::{Path, PathBuf};

/// One file the reset handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiped {
    pub path: PathBuf,
    /// `"overwritten and deleted"` or `"deleted"`.
    pub how: &'static str,
}

/// Reset the state directory. Returns what was removed (empty if nothing was there).
/// Refuses while an agent is running on the directory.
pub fn reset(state_dir: &Path) -> Result<Vec<Wiped>> {
    let mut wiped = Vec::new();
    if !state_dir.exists() {
        return Ok(wiped);
    }
    let state = StateDir::new(state_dir);
    let _lock = state.lock()?;
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
        COMMANDS_FILE,
        QUEUE_FILE,
        QUEUE_META_FILE,
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
        for name in [KEY_FILE, CERT_FILE, CA_FILE, CONFIG_FILE, QUEUE_FILE] {
            fsutil::write_private(&state.path(name), b"x").expect("write");
        }
        std::fs::write(dir.path().join("unrelated.txt"), b"keep").expect("write");
        let wiped = reset(dir.path()).expect("reset");
        assert_eq!(wiped.len(), 5);
        assert_eq!(wiped[0].path, state.path(KEY_FILE));
        assert_eq!(wiped[0].how, "overwritten and deleted");
        for name in [KEY_FILE, CERT_FILE, CA_FILE, CONFIG_FILE, QUEUE_FILE] {
            assert!(!state.path(name).exists(), "{name} left behind");
        }
        assert!(dir.path().join("unrelated.txt").exists());
        assert!(reset(dir.path()).expect("again").is_empty());
    }
}
