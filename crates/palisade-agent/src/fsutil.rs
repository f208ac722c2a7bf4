//! File-system helpers for the state directory: a private (0700) directory, atomic
//! replacement of files (write a new file, fsync, rename, fsync the directory), files
//! created with mode 0600 from the start, and overwrite-before-delete for key material.

use crate::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Create `dir` (and its parents) with mode 0700, or tighten an existing one to 0700.
/// Refuses a path that exists but is not a directory, or is a symbolic link.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(Error::invalid(
                "state directory",
                format!("{} is a symbolic link", dir.display()),
            ));
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(Error::invalid(
                "state directory",
                format!("{} exists and is not a directory", dir.display()),
            ));
        }
        Ok(meta) => {
            if meta.permissions().mode() & 0o777 != 0o700 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io(format!("chmod 0700 {}", dir.display()), e))?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            // `recursive` applies the mode only subject to the umask: set it exactly.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(format!("chmod 0700 {}", dir.display()), e))?;
        }
        Err(e) => return Err(Error::io(format!("inspect {}", dir.display()), e)),
    }
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// fsync a directory, so that a rename or unlink in it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replace `path` atomically with `bytes`: a new file is created (create_new, `mode`
/// from the start), written, fsynced, renamed over `path`, and the directory fsynced.
/// A reader (or a crash) sees either the old content or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = temp_path(path);
    // A leftover from an interrupted write: remove it (the state directory is private,
    // so this is our own file; removing a symbolic link removes only the link).
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("remove {}", tmp.display()), e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io(format!("rename to {}", path.display()), e))?;
    fsync_dir(parent(path))
}

/// [`write_atomic`] with mode 0600, for private keys and everything else in the state
/// directory.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes, 0o600)
}

/// Read a file in the state directory, at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if bytes.len() as u64 > max {
        return Err(Error::invalid(
            "state file",
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// Overwrite a file's content with random bytes, fsync, then delete it. Returns
/// whether there was a file. (On journaling or flash file systems an overwrite is not a
/// guarantee that no copy of the old blocks remains; it removes the easy recovery.)
pub fn wipe_file(path: &Path) -> Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("inspect {}", path.display()), e)),
    };
    if meta.is_file() {
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let mut remaining = meta.len();
        let mut block = [0u8; 4096];
        while remaining > 0 {
            let n = usize::try_from(remaining.min(block.len() as u64)).unwrap_or(block.len());
            getrandom::fill(&mut block[..n])
                .map_err(|e| Error::io("random bytes", std::io::Error::other(e.to_string())))?;
            file.write_all(&block[..n])
                .map_err(|e| Error::io(format!("overwrite {}", path.display()), e))?;
            remaining -= n as u64;
        }
        file.sync_all()
            .map_err(|e| Error::io(format!("fsync {}", path.display()), e))?;
    }
    remove_file(path)
}

/// Delete a file if it exists (and fsync its directory). Returns whether there was one.
pub fn remove_file(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            fsync_dir(parent(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_creates_0600_file_and_replaces_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        ensure_private_dir(&state).expect("dir");
        let mode = fs::metadata(&state).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let file = state.join("device.key");
        write_private(&file, b"one").expect("write");
        write_private(&file, b"two").expect("rewrite");
        assert_eq!(fs::read(&file).expect("read"), b"two");
        let mode = fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!temp_path(&file).exists());
        assert!(wipe_file(&file).expect("wipe"));
        assert!(!file.exists());
        assert!(!wipe_file(&file).expect("wipe again"));
    }
}
