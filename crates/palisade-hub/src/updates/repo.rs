//! The hub's TUF repository, one per product model, under `DATA_DIR/tuf/`: the hub
//! holds ONLY the snapshot and timestamp keys (`tuf/keys/*.pk8`, 0600, made at first
//! use). Root and targets metadata arrive signed offline and are checked before they
//! are stored; the hub re-signs snapshot and timestamp after each change and before
//! they expire. Metadata under plain names (`root.json`, `N.root.json`,
//! `timestamp.json`, `snapshot.json`, `targets.json`), targets as files.

use super::tuf::{self, SigningKey};
use crate::error::{Error, Result};
use crate::ids::ProductId;
use crate::pki::write_atomic;
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tough::schema::{Hashes, Metafile, Root, Signed, Snapshot, Targets, Timestamp};

/// Largest metadata file accepted from an offline tool.
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;

/// Why the repository refused an upload (shown to the caller), or a hub failure.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Hub(#[from] Error),
}

type RepoResult<T> = std::result::Result<T, RepoError>;

fn refused<T>(why: impl Into<String>) -> RepoResult<T> {
    Err(RepoError::Refused(why.into()))
}

/// A role's metadata that expires soon (see [`Repository::expiring`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub product: String,
    pub role: &'static str,
    pub version: u64,
    /// Unix seconds.
    pub expires: i64,
}

/// The repositories of all product models.
pub struct Repository {
    dir: PathBuf,
    snapshot: SigningKey,
    timestamp: SigningKey,
    snapshot_expiry_secs: i64,
    timestamp_expiry_secs: i64,
    /// One change at a time (upload, rotation, refresh).
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("dir", &self.dir)
            .finish()
    }
}

fn load_or_create_key(path: &Path) -> Result<SigningKey> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| Error::io(path, e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(Error::Config(format!(
                    "{} is readable by others (mode {:o}); it must be 0600",
                    path.display(),
                    mode & 0o777
                )));
            }
            SigningKey::from_pkcs8(&bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (bytes, key) = SigningKey::generate()?;
            write_atomic(path, &bytes, 0o600)?;
            tracing::info!(path = %path.display(), key = %key.id_hex(), "TUF online key created");
            Ok(key)
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(dir, e))
}

/// Whether `name` is a metadata file the repository serves.
pub fn valid_metadata_name(name: &str) -> bool {
    match name {
        "root.json" | "timestamp.json" | "snapshot.json" | "targets.json" => true,
        _ => name.strip_suffix(".root.json").is_some_and(|n| {
            !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit())
        }),
    }
}

/// Whether `name` may be a target file name: one path segment of safe characters.
pub fn valid_target_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn stored<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<Signed<T>>> {
    match read_optional(path)? {
        None => Ok(None),
        Some(bytes) => tuf::parse(&bytes)
            .map(Some)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

fn next_version(v: Option<NonZeroU64>) -> NonZeroU64 {
    v.and_then(|v| v.checked_add(1)).unwrap_or(NonZeroU64::MIN)
}

impl Repository {
    /// Open (and on first use create) the repository and the hub's two online keys.
    pub fn open(
        data_dir: &Path,
        snapshot_expiry_secs: i64,
        timestamp_expiry_secs: i64,
    ) -> Result<Self> {
        let dir = data_dir.join("tuf");
        private_dir(&dir)?;
        private_dir(&dir.join("keys"))?;
        let snapshot = load_or_create_key(&dir.join("keys/snapshot.pk8"))?;
        let timestamp = load_or_create_key(&dir.join("keys/timestamp.pk8"))?;
        Ok(Self {
            dir,
            snapshot,
            timestamp,
            snapshot_expiry_secs: snapshot_expiry_secs.max(2),
            timestamp_expiry_secs: timestamp_expiry_secs.max(2),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The PUBLIC halves of the hub's keys, for an offline tool writing a root.
    pub fn online_keys(&self) -> serde_json::Value {
        serde_json::json!({
            "snapshot": {"keyid": self.snapshot.id_hex(), "key": self.snapshot.key()},
            "timestamp": {"keyid": self.timestamp.id_hex(), "key": self.timestamp.key()},
        })
    }

    fn metadata_dir(&self, model: &ProductId) -> PathBuf {
        self.dir.join("repos").join(model.as_str()).join("metadata")
    }

    fn targets_dir(&self, model: &ProductId) -> PathBuf {
        self.dir.join("repos").join(model.as_str()).join("targets")
    }

    /// Where a served metadata file is, if the name is one the repository serves.
    pub fn metadata_path(&self, model: &ProductId, file: &str) -> Option<PathBuf> {
        valid_metadata_name(file).then(|| self.metadata_dir(model).join(file))
    }

    /// Where a target's file is, if the name is valid.
    pub fn target_path(&self, model: &ProductId, name: &str) -> Option<PathBuf> {
        valid_target_name(name).then(|| self.targets_dir(model).join(name))
    }

    /// A fresh temporary file path for an upload into the model's targets directory.
    pub fn upload_path(&self, model: &ProductId) -> Result<PathBuf> {
        let dir = self.targets_dir(model);
        private_dir(&dir)?;
        let tag = tuf::hex(&palisade_crypto::token::random_bytes::<8>());
        Ok(dir.join(format!(".upload-{tag}")))
    }

    pub fn root(&self, model: &ProductId) -> Result<Option<Signed<Root>>> {
        stored(&self.metadata_dir(model).join("root.json"))
    }

    pub fn targets(&self, model: &ProductId) -> Result<Option<Signed<Targets>>> {
        stored(&self.metadata_dir(model).join("targets.json"))
    }

    /// Every model that has a repository.
    fn models(&self) -> Result<Vec<ProductId>> {
        let dir = self.dir.join("repos");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| ProductId::parse(&e.file_name().to_string_lossy()).ok())
            .collect())
    }

    /// Accept a root signed offline: a first root (version 1, self-signed, the hub's
    /// keys exactly in snapshot and timestamp), or the next root signed by the current
    /// root's threshold and its own (rotation). Anything else is refused.
    pub async fn install_root(&self, model: &ProductId, bytes: &[u8]) -> RepoResult<u64> {
        if bytes.len() > MAX_METADATA_BYTES {
            return refused("the root metadata is too large");
        }
        let new: Signed<Root> = tuf::parse(bytes).map_err(RepoError::Refused)?;
        let _guard = self.lock.lock().await;
        match self.root(model)? {
            None => tuf::check_first_root(&new).map_err(RepoError::Refused)?,
            Some(old) => tuf::check_root_rotation(&old, &new).map_err(RepoError::Refused)?,
        }
        tuf::check_online_roles(&new.signed, self.snapshot.id(), self.timestamp.id())
            .map_err(RepoError::Refused)?;
        if new.signed.consistent_snapshot {
            return refused("this repository serves plain names: set consistent_snapshot to false");
        }
        if new.signed.expires.as_second() <= crate::db::now() {
            return refused("the root has already expired");
        }
        let dir = self.metadata_dir(model);
        private_dir(&dir)?;
        let version = new.signed.version.get();
        write_atomic(&dir.join(format!("{version}.root.json")), bytes, 0o644)?;
        write_atomic(&dir.join("root.json"), bytes, 0o644)?;
        if self.targets(model)?.is_some() {
            // Roles may have changed keys: sign fresh snapshot and timestamp.
            self.resign(model, true)?;
        }
        Ok(version)
    }

    /// Accept targets metadata signed offline: verified against the stored root's
    /// targets role (the hub holds no targets key), a higher version than stored, and
    /// every listed target already uploaded with exactly the declared length and
    /// SHA-256. Then snapshot and timestamp are signed anew.
    pub async fn install_targets(
        &self,
        model: &ProductId,
        bytes: &[u8],
    ) -> RepoResult<Signed<Targets>> {
        if bytes.len() > MAX_METADATA_BYTES {
            return refused("the targets metadata is too large");
        }
        let new: Signed<Targets> = tuf::parse(bytes).map_err(RepoError::Refused)?;
        let _guard = self.lock.lock().await;
        let Some(root) = self.root(model)? else {
            return refused(
                "this product has no TUF repository yet: run `palisade release init-repo`",
            );
        };
        root.signed.verify_role(&new).map_err(|e| {
            RepoError::Refused(format!(
                "targets metadata not signed by the offline targets key(s) of this product's root: {e}"
            ))
        })?;
        if let Some(old) = self.targets(model)?
            && new.signed.version <= old.signed.version
        {
            return refused(format!(
                "targets version {} is not newer than the published {}",
                new.signed.version, old.signed.version
            ));
        }
        if new.signed.expires.as_second() <= crate::db::now() {
            return refused("the targets metadata has already expired");
        }
        if new
            .signed
            .delegations
            .as_ref()
            .is_some_and(|d| !d.roles.is_empty())
        {
            return refused("delegated targets roles are not supported by this hub");
        }
        for (name, target) in &new.signed.targets {
            let name = name.raw();
            let Some(path) = self.target_path(model, name) else {
                return refused(format!("target name {name:?} is not valid"));
            };
            let (length, digest) = match file_digest(&path).await {
                Ok(Some(d)) => d,
                Ok(None) => return refused(format!("target {name} has not been uploaded")),
                Err(e) => return Err(e.into()),
            };
            if length != target.length || digest != target.hashes.sha256.as_ref() {
                return refused(format!(
                    "the uploaded {name} does not match the length and SHA-256 in the targets metadata"
                ));
            }
        }
        let dir = self.metadata_dir(model);
        write_atomic(&dir.join("targets.json"), bytes, 0o644)?;
        self.resign(model, true)?;
        Ok(new)
    }

    /// Sign a new timestamp (and, if `snapshot` or none exists, a new snapshot).
    fn resign(&self, model: &ProductId, snapshot: bool) -> Result<()> {
        let dir = self.metadata_dir(model);
        let now = crate::db::now();
        let targets_bytes = read_optional(&dir.join("targets.json"))?
            .ok_or_else(|| Error::Config(format!("{model}: no targets.json")))?;
        let targets: Signed<Targets> = tuf::parse(&targets_bytes).map_err(Error::Config)?;
        let old_snapshot: Option<Signed<Snapshot>> = stored(&dir.join("snapshot.json"))?;
        let snapshot_bytes = match (&old_snapshot, snapshot) {
            (Some(_), false) => read_optional(&dir.join("snapshot.json"))?
                .ok_or_else(|| Error::Config("snapshot.json vanished".into()))?,
            _ => {
                let mut s = Snapshot::new(
                    tuf::SPEC_VERSION.into(),
                    next_version(old_snapshot.as_ref().map(|s| s.signed.version)),
                    tuf::expiry(now + self.snapshot_expiry_secs)?,
                );
                s.meta.insert(
                    "targets.json".into(),
                    Metafile {
                        length: Some(targets_bytes.len() as u64),
                        hashes: Some(Hashes {
                            sha256: sha256(&targets_bytes).into(),
                            _extra: HashMap::new(),
                        }),
                        version: targets.signed.version,
                        _extra: HashMap::new(),
                    },
                );
                let bytes = tuf::to_bytes(&tuf::sign(s, &[&self.snapshot])?)?;
                write_atomic(&dir.join("snapshot.json"), &bytes, 0o644)?;
                bytes
            }
        };
        let snap: Signed<Snapshot> = tuf::parse(&snapshot_bytes).map_err(Error::Config)?;
        let old_timestamp: Option<Signed<Timestamp>> = stored(&dir.join("timestamp.json"))?;
        let mut t = Timestamp::new(
            tuf::SPEC_VERSION.into(),
            next_version(old_timestamp.map(|t| t.signed.version)),
            tuf::expiry(now + self.timestamp_expiry_secs)?,
        );
        t.meta.insert(
            "snapshot.json".into(),
            Metafile {
                length: Some(snapshot_bytes.len() as u64),
                hashes: Some(Hashes {
                    sha256: sha256(&snapshot_bytes).into(),
                    _extra: HashMap::new(),
                }),
                version: snap.signed.version,
                _extra: HashMap::new(),
            },
        );
        let bytes = tuf::to_bytes(&tuf::sign(t, &[&self.timestamp])?)?;
        write_atomic(&dir.join("timestamp.json"), &bytes, 0o644)
    }

    /// Re-sign timestamp (and snapshot) of every model whose metadata has less than
    /// half its lifetime left, so clients never see them expire while the hub runs.
    /// Returns how many models were refreshed.
    pub async fn refresh_due(&self) -> Result<usize> {
        let _guard = self.lock.lock().await;
        let now = crate::db::now();
        let mut refreshed = 0;
        for model in self.models()? {
            let dir = self.metadata_dir(&model);
            if !dir.join("targets.json").exists() {
                continue;
            }
            let snapshot: Option<Signed<Snapshot>> = stored(&dir.join("snapshot.json"))?;
            let timestamp: Option<Signed<Timestamp>> = stored(&dir.join("timestamp.json"))?;
            let snapshot_due = snapshot
                .is_none_or(|s| s.signed.expires.as_second() - now < self.snapshot_expiry_secs / 2);
            let timestamp_due = timestamp.is_none_or(|t| {
                t.signed.expires.as_second() - now < self.timestamp_expiry_secs / 2
            });
            if snapshot_due || timestamp_due {
                self.resign(&model, snapshot_due)?;
                refreshed += 1;
            }
        }
        Ok(refreshed)
    }

    /// Seconds between checks of [`Repository::refresh_due`]: a quarter of the
    /// timestamp lifetime, at most an hour.
    pub fn refresh_interval_secs(&self) -> u64 {
        (self.timestamp_expiry_secs / 4).clamp(1, 3600) as u64
    }

    /// Every role of every model whose metadata expires within its warning horizon:
    /// `offline_horizon_secs` for root and targets (signed offline: only the operator
    /// can re-sign them), and a quarter of their lifetime for snapshot and timestamp
    /// (the hub re-signs them at half, so one this close means the refresh failed).
    pub fn expiring(&self, now: i64, offline_horizon_secs: i64) -> Result<Vec<Expiring>> {
        let mut found = Vec::new();
        for model in self.models()? {
            let dir = self.metadata_dir(&model);
            let mut check = |role: &'static str, version: u64, expires: i64, horizon: i64| {
                if expires - now < horizon {
                    found.push(Expiring {
                        product: model.as_str().to_owned(),
                        role,
                        version,
                        expires,
                    });
                }
            };
            if let Some(r) = stored::<Root>(&dir.join("root.json"))? {
                let (v, e) = (r.signed.version.get(), r.signed.expires.as_second());
                check("root", v, e, offline_horizon_secs);
            }
            if let Some(t) = stored::<Targets>(&dir.join("targets.json"))? {
                let (v, e) = (t.signed.version.get(), t.signed.expires.as_second());
                check("targets", v, e, offline_horizon_secs);
            }
            if let Some(s) = stored::<Snapshot>(&dir.join("snapshot.json"))? {
                let (v, e) = (s.signed.version.get(), s.signed.expires.as_second());
                check("snapshot", v, e, self.snapshot_expiry_secs / 4);
            }
            if let Some(t) = stored::<Timestamp>(&dir.join("timestamp.json"))? {
                let (v, e) = (t.signed.version.get(), t.signed.expires.as_second());
                check("timestamp", v, e, self.timestamp_expiry_secs / 4);
            }
        }
        Ok(found)
    }

    /// Record that staff were alerted about `role` version `version` of `model`;
    /// returns false if they already were (one alert per role version).
    pub fn mark_alerted(&self, model: &str, role: &str, version: u64) -> Result<bool> {
        let Ok(model) = ProductId::parse(model) else {
            return Ok(false);
        };
        let path = self
            .dir
            .join("repos")
            .join(model.as_str())
            .join("expiry-alerts");
        let line = format!("{role} {version}");
        let existing = read_optional(&path)?.unwrap_or_default();
        if String::from_utf8_lossy(&existing)
            .lines()
            .any(|l| l == line)
        {
            return Ok(false);
        }
        let mut next = existing;
        next.extend_from_slice(line.as_bytes());
        next.push(b'\n');
        write_atomic(&path, &next, 0o600)?;
        Ok(true)
    }

    /// Publish `file` (a finished upload) as target `name`. An existing target of the
    /// same name must have the same content (targets never change under a name).
    pub async fn place_target(
        &self,
        model: &ProductId,
        upload: &Path,
        name: &str,
    ) -> RepoResult<()> {
        let Some(path) = self.target_path(model, name) else {
            let _ = std::fs::remove_file(upload);
            return refused("target name not valid");
        };
        let _guard = self.lock.lock().await;
        if path.exists() {
            let same = match (file_digest(upload).await?, file_digest(&path).await?) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            };
            let _ = std::fs::remove_file(upload);
            if same {
                return Ok(());
            }
            return refused(format!(
                "a different {name} was uploaded before; targets never change"
            ));
        }
        std::fs::rename(upload, &path).map_err(|e| Error::io(&path, e))?;
        Ok(())
    }
}

/// Length and SHA-256 of a file, read in chunks; `None` if it does not exist.
pub async fn file_digest(path: &Path) -> Result<Option<(u64, Vec<u8>)>> {
    use tokio::io::AsyncReadExt;
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut length = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        length += n as u64;
        context.update(&buf[..n]);
    }
    Ok(Some((length, context.finish().as_ref().to_vec())))
}
