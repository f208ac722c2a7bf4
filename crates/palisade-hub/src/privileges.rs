//! Which user the hub runs as (ACC-4): the hub needs no root, so running as UID 0 is
//! reported at start, in the log and on the administrators' console home page. The
//! hardened service unit that runs it as a dedicated user is `deploy/palisade-hub.service`.

use std::os::unix::fs::MetadataExt;

/// The process's effective user id, read from the owner of `/proc/self` (Linux sets it
/// to the effective UID). Read from the file system rather than through `geteuid(2)` so
/// the crate keeps `#![forbid(unsafe_code)]` and adds no dependency. `None` where
/// `/proc` is not mounted.
pub fn effective_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Whether the hub runs as root.
pub fn runs_as_root() -> bool {
    effective_uid() == Some(0)
}

/// The warning shown when the hub runs as root.
pub const ROOT_WARNING: &str = "The hub runs as root (UID 0), which it does not need. \
    Run it as a dedicated user with the hardened unit deploy/palisade-hub.service \
    (see docs/operations.md, \"Least privilege\").";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_uid_is_the_owner_of_files_we_create() {
        // A file we create is owned by our effective UID (no set-user-ID here).
        let dir = std::env::temp_dir().join(format!("palisade-uid-{}", std::process::id()));
        std::fs::write(&dir, b"x").expect("write");
        let owner = std::fs::metadata(&dir).expect("stat").uid();
        std::fs::remove_file(&dir).expect("remove");
        assert_eq!(effective_uid(), Some(owner));
        assert_eq!(runs_as_root(), owner == 0);
    }
}
