//! The bare TUF client (`palisade-agent tuf`): the TUF 1.0 client workflow, done by tough,
//! with the trusted metadata kept under plain names and fetched over the agent's reqwest.
//!
//! tough runs the whole workflow of the specification's §5 (root chain with both
//! thresholds and version+1 steps, timestamp, snapshot, targets and delegations, rollback
//! and freeze checks, lengths and hashes, consistent snapshots). This module only adds
//! what tough leaves to its caller or does differently from the client-under-test
//! interface (UPD-2, UPD-4):
//!
//! - a [`tough::Transport`] over reqwest 0.12 (tough's own `http` feature brings reqwest
//!   0.13). Sizes are bounded by tough, which stops reading at the length the metadata
//!   declares (or its fixed limit for unversioned root and timestamp files);
//! - metadata files hold the exact bytes the repository signed. tough re-serialises what
//!   it verified; after each run, each file tough wrote is replaced by the fetched bytes
//!   that parse to the same value, and delegated roles tough stored as `N.ROLE.json`
//!   (consistent snapshots) move to `ROLE.json`;
//! - no persisted clock: tough keeps `latest_known_time.json` and refuses a clock that
//!   went back; the interface asks for the wall clock at each command, so the file is
//!   removed before and after each run;
//! - consistent-snapshot target URLs of nested paths: tough asks for `HASH.dir/file`, the
//!   specification (and python-tuf) serve `dir/HASH.file`; the transport rewrites that one
//!   form, and tough still verifies length and hash of what comes back;
//! - `download` does not fetch a target again when the file in the output directory
//!   already has the trusted length and SHA-256.

use crate::{Error, Result, fsutil};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tough::schema::{Root, Signed, Snapshot, Targets, Timestamp};
use tough::{
    Bytes, Repository, RepositoryLoader, TargetName, Transport, TransportError, TransportErrorKind,
    TransportStream,
};
use url::Url;

/// Largest trusted root file `init` and `refresh` read from disk (tough's own limit for
/// downloaded root files).
const MAX_ROOT_FILE: u64 = 1024 * 1024;
/// Largest metadata body kept to restore the signed bytes (tough's default limit for
/// targets metadata without a declared length).
const MAX_CAPTURE: usize = 10 * 1024 * 1024;
/// tough's record of the last clock reading; see the module comment.
const CLOCK_FILE: &str = "latest_known_time.json";
const TOP_LEVEL: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

/// Python's `urllib.parse.quote(name, safe="")`, which tough and python-tuf use for file
/// names made from role and target names: no `/`, so a name cannot leave its directory.
const FILE_NAME_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// `palisade-agent tuf init`: trust `trusted_root_file` (no network). The file must be
/// a root metadata signed by its own threshold; it is stored byte for byte as `root.json`.
pub fn init(metadata_dir: &Path, trusted_root_file: &Path) -> Result<()> {
    let bytes = fsutil::read_bounded(trusted_root_file, MAX_ROOT_FILE)?;
    let root: Signed<Root> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::json(format!("parse {}", trusted_root_file.display()), e))?;
    root.signed
        .verify_role(&root)
        .map_err(|e| Error::invalid("trusted root", e.to_string()))?;
    std::fs::create_dir_all(metadata_dir)
        .map_err(|e| Error::io(format!("create {}", metadata_dir.display()), e))?;
    fsutil::write_atomic(&metadata_dir.join("root.json"), &bytes, 0o644)
}

/// Whether the trusted top-level targets metadata in `metadata_dir` (its signatures
/// verified again with the trusted `root.json` there; expiry not checked: the image was
/// verified when current) lists a target with this SHA-256 (hex) and length. Used at
/// every start to check the active slot's image against the signed manifest (INT-1).
pub fn signed_target_with(metadata_dir: &Path, sha256_hex: &str, length: u64) -> Result<bool> {
    let read = |name: &str| fsutil::read_bounded(&metadata_dir.join(name), MAX_CAPTURE as u64);
    let root: Signed<Root> = serde_json::from_slice(&read("root.json")?)
        .map_err(|e| Error::json("parse the trusted root.json", e))?;
    let targets: Signed<Targets> = serde_json::from_slice(&read("targets.json")?)
        .map_err(|e| Error::json("parse the trusted targets.json", e))?;
    root.signed
        .verify_role(&targets)
        .map_err(|e| Error::TufRefused(format!("trusted targets.json: {e}")))?;
    Ok(targets.signed.targets_iter().any(|(_, t)| {
        t.length == length
            && t.hashes
                .sha256
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                == sha256_hex
    }))
}

/// What [`TufClient::download`] did with one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downloaded {
    /// Fetched and verified, then written to this path.
    Fetched(PathBuf),
    /// A file with the trusted length and hash was already at this path; nothing fetched.
    AlreadyPresent(PathBuf),
}

/// A target as the trusted metadata describes it, and where it is served.
#[derive(Debug, Clone)]
pub struct TrustedTarget {
    pub name: String,
    pub length: u64,
    pub sha256: Vec<u8>,
    /// The target's `custom` object (signed with the targets metadata).
    pub custom: HashMap<String, serde_json::Value>,
    pub url: Url,
}

/// One client instance: a metadata directory, a repository and a transport.
pub struct TufClient {
    metadata_dir: PathBuf,
    metadata_base: Url,
    targets_base: Url,
    transport: HttpTransport,
}

impl TufClient {
    /// `metadata_url` and `target_base_url` may be `http://` or `https://`: TUF metadata
    /// carries its own integrity. Without a target base URL only `refresh` is possible.
    pub fn new(
        metadata_dir: &Path,
        metadata_url: &str,
        target_base_url: Option<&str>,
    ) -> Result<Self> {
        Self::with_tls(metadata_dir, metadata_url, target_base_url, None)
    }

    /// [`TufClient::new`] with the TLS configuration to use for `https://` (the agent's
    /// update path: the pinned hub CA and the device certificate as client identity);
    /// `None` trusts the public web PKI, for independent checking.
    pub fn with_tls(
        metadata_dir: &Path,
        metadata_url: &str,
        target_base_url: Option<&str>,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self> {
        let metadata_base = base_url(metadata_url, "metadata URL")?;
        let targets_base = match target_base_url {
            Some(u) => base_url(u, "target base URL")?,
            // refresh never fetches a target; tough needs some base.
            None => metadata_base.clone(),
        };
        let transport = HttpTransport::new(&metadata_base, &targets_base, tls)?;
        Ok(Self {
            metadata_dir: metadata_dir.to_path_buf(),
            metadata_base,
            targets_base,
            transport,
        })
    }

    /// The full client workflow from the trusted `root.json` in the metadata directory.
    pub async fn refresh(&self) -> Result<Repository> {
        let root_path = self.metadata_dir.join("root.json");
        if !root_path.exists() {
            return Err(Error::invalid(
                "metadata directory",
                format!(
                    "no trusted {}: run `palisade-agent tuf --metadata-dir {} init ROOT_FILE` first",
                    root_path.display(),
                    self.metadata_dir.display()
                ),
            ));
        }
        let trusted_root = fsutil::read_bounded(&root_path, MAX_ROOT_FILE)?;
        self.forget_clock()?;
        let loaded = RepositoryLoader::new(
            &trusted_root,
            self.metadata_base.clone(),
            self.targets_base.clone(),
        )
        .transport(self.transport.clone())
        .datastore(&self.metadata_dir)
        .load()
        .await;
        // Whatever tough persisted before a failure (a newer root, say) is trusted too.
        let settled = self.settle_metadata(&trusted_root);
        self.forget_clock()?;
        let repo = loaded.map_err(|e| Error::Tuf {
            context: "refresh".into(),
            source: Box::new(e),
        })?;
        settled?;
        self.transport
            .consistent
            .store(repo.root().signed.consistent_snapshot, Ordering::SeqCst);
        Ok(repo)
    }

    /// Download and verify target `name` into `target_dir` (as the name percent-encoded
    /// into one file name, like python-tuf), unless a verified copy is already there.
    pub async fn download(
        &self,
        repo: &Repository,
        name: &str,
        target_dir: &Path,
    ) -> Result<Downloaded> {
        let result = self.download_inner(repo, name, target_dir).await;
        self.forget_clock()?;
        result
    }

    async fn download_inner(
        &self,
        repo: &Repository,
        name: &str,
        target_dir: &Path,
    ) -> Result<Downloaded> {
        let target_name =
            TargetName::new(name).map_err(|e| Error::invalid("target name", e.to_string()))?;
        let target = repo
            .targets()
            .signed
            .find_target(&target_name, false)
            .map_err(|_| Error::TufRefused(format!("no trusted metadata for target {name:?}")))?;
        let file_name = utf8_percent_encode(name, FILE_NAME_ESCAPES).to_string();
        // `/` is encoded, but `.` is not: these two would name a directory.
        if file_name.is_empty() || file_name == "." || file_name == ".." {
            return Err(Error::invalid("target name", format!("{name:?}")));
        }
        let path = target_dir.join(file_name);
        if has_content(&path, target.length, target.hashes.sha256.as_ref())? {
            return Ok(Downloaded::AlreadyPresent(path));
        }
        let mut stream = repo
            .read_target(&target_name)
            .await
            .map_err(|e| Error::Tuf {
                context: format!("target {name:?}"),
                source: Box::new(e),
            })?
            .ok_or_else(|| Error::TufRefused(format!("no trusted metadata for target {name:?}")))?;
        std::fs::create_dir_all(target_dir)
            .map_err(|e| Error::io(format!("create {}", target_dir.display()), e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(target_dir)
            .map_err(|e| Error::io(format!("create a file in {}", target_dir.display()), e))?;
        use futures_util::StreamExt;
        // tough ends the stream with an error past the declared length or on a hash
        // mismatch; the temporary file is then dropped (deleted), never renamed.
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Tuf {
                context: format!("target {name:?}"),
                source: Box::new(e),
            })?;
            tmp.write_all(&chunk)
                .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        tmp.persist(&path)
            .map_err(|e| Error::io(format!("rename to {}", path.display()), e.error))?;
        fsutil::fsync_dir(target_dir)?;
        Ok(Downloaded::Fetched(path))
    }

    /// What the trusted targets metadata (top-level or delegated) says about `name`.
    pub fn trusted_target(&self, repo: &Repository, name: &str) -> Result<TrustedTarget> {
        let target_name =
            TargetName::new(name).map_err(|e| Error::invalid("target name", e.to_string()))?;
        let target = repo
            .targets()
            .signed
            .find_target(&target_name, false)
            .map_err(|_| Error::TufRefused(format!("no trusted metadata for target {name:?}")))?;
        let sha256 = target.hashes.sha256.as_ref().to_vec();
        let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
        let served = if repo.root().signed.consistent_snapshot {
            match name.rsplit_once('/') {
                Some((dir, file)) => format!("{dir}/{hex}.{file}"),
                None => format!("{hex}.{name}"),
            }
        } else {
            name.to_owned()
        };
        let url = self
            .targets_base
            .join(&served)
            .map_err(|e| Error::invalid("target name", e.to_string()))?;
        Ok(TrustedTarget {
            name: name.to_owned(),
            length: target.length,
            sha256,
            custom: target.custom.clone().into_iter().collect(),
            url,
        })
    }

    /// Download `target` into `part` resumably: bytes already in `part` are kept and
    /// the rest is asked for with a `Range` request (a server that answers with the
    /// whole file restarts it). Reading stops one byte past the declared length: a
    /// longer body is refused and the partial file deleted. When complete, the whole
    /// file's length and SHA-256 must be the trusted ones, or it is deleted and refused.
    /// Returns whether bytes were fetched (false: `part` was already complete).
    pub async fn fetch_resumable(&self, target: &TrustedTarget, part: &Path) -> Result<bool> {
        use std::io::Seek;
        let refuse = |why: String| -> Result<bool> {
            fsutil::remove_file(part)?;
            Err(Error::TufRefused(format!(
                "target {:?}: {why}",
                target.name
            )))
        };
        let mut have = match std::fs::metadata(part) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(format!("inspect {}", part.display()), e)),
        };
        if have > target.length {
            fsutil::remove_file(part)?;
            have = 0;
        }
        let mut fetched = false;
        if have < target.length {
            fetched = true;
            let mut request = self.transport.client.get(target.url.clone());
            if have > 0 {
                request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
            }
            let mut response = request
                .send()
                .await
                .map_err(|e| Error::Http(format!("{}: {e}", target.url)))?;
            let status = response.status();
            let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0;
            if !status.is_success() {
                return Err(Error::Http(format!("{}: HTTP status {status}", target.url)));
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(part)
                .map_err(|e| Error::io(format!("open {}", part.display()), e))?;
            if !resumed {
                file.set_len(0)
                    .map_err(|e| Error::io(format!("truncate {}", part.display()), e))?;
                have = 0;
            }
            file.seek(std::io::SeekFrom::Start(have))
                .map_err(|e| Error::io(format!("seek {}", part.display()), e))?;
            loop {
                let chunk = response
                    .chunk()
                    .await
                    .map_err(|e| Error::Http(format!("{}: {e}", target.url)))?;
                let Some(chunk) = chunk else { break };
                if have + chunk.len() as u64 > target.length {
                    drop(file);
                    return refuse(format!(
                        "the server sent more than the {} bytes the targets metadata declares",
                        target.length
                    ));
                }
                file.write_all(&chunk)
                    .map_err(|e| Error::io(format!("write {}", part.display()), e))?;
                have += chunk.len() as u64;
            }
            file.sync_all()
                .map_err(|e| Error::io(format!("fsync {}", part.display()), e))?;
        }
        if !has_content(part, target.length, &target.sha256)? {
            return refuse(
                "length or SHA-256 differs from the signed targets metadata (tampered or truncated)"
                    .into(),
            );
        }
        Ok(fetched)
    }

    fn forget_clock(&self) -> Result<()> {
        fsutil::remove_file(&self.metadata_dir.join(CLOCK_FILE)).map(|_| ())
    }

    /// Replace each metadata file tough wrote with the signed bytes it was parsed from.
    fn settle_metadata(&self, trusted_root: &[u8]) -> Result<()> {
        let captured = self.transport.take_captured();
        let dir = &self.metadata_dir;
        // root.json: the last root of the chain tough accepted, or the one it started from.
        if let Some(stored) = read_if_exists(&dir.join("root.json"))? {
            let version = serde_json::from_slice::<serde_json::Value>(&stored)
                .ok()
                .and_then(|v| v.pointer("/signed/version").and_then(|n| n.as_u64()));
            let mut candidates: Vec<&[u8]> = vec![trusted_root];
            if let Some(v) = version.and_then(|v| captured.get(&format!("{v}.root.json"))) {
                candidates.push(v);
            }
            replace_if_same::<Root>(&dir.join("root.json"), &stored, &candidates)?;
        }
        for (role, plain) in [
            ("timestamp", "timestamp.json"),
            ("snapshot", "snapshot.json"),
            ("targets", "targets.json"),
        ] {
            let Some(stored) = read_if_exists(&dir.join(plain))? else {
                continue;
            };
            let candidates: Vec<&[u8]> = captured
                .iter()
                .filter(|(file, _)| split_versioned(file).1 == role)
                .map(|(_, body)| body.as_slice())
                .collect();
            let path = dir.join(plain);
            match role {
                "timestamp" => replace_if_same::<Timestamp>(&path, &stored, &candidates)?,
                "snapshot" => replace_if_same::<Snapshot>(&path, &stored, &candidates)?,
                _ => replace_if_same::<Targets>(&path, &stored, &candidates)?,
            }
        }
        // Delegated roles: tough stored them under the name it fetched them by.
        for (file, body) in &captured {
            let (version, role) = split_versioned(file);
            if TOP_LEVEL.contains(&role) || role.is_empty() {
                continue;
            }
            let written = dir.join(file);
            let Some(stored) = read_if_exists(&written)? else {
                continue;
            };
            let plain = dir.join(format!("{role}.json"));
            if same_value::<Targets>(body, &stored) {
                fsutil::write_atomic(&plain, body, 0o644)?;
            }
            if version.is_some() {
                fsutil::remove_file(&written)?;
            }
        }
        Ok(())
    }
}

/// `name.json` or `VERSION.name.json` (as fetched) into (version, name); the name stays
/// percent-encoded, as tough and python-tuf store it.
fn split_versioned(file: &str) -> (Option<u64>, &str) {
    let Some(stem) = file.strip_suffix(".json") else {
        return (None, "");
    };
    match stem.split_once('.') {
        Some((v, rest)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            (v.parse().ok(), rest)
        }
        _ => (None, stem),
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

/// Whether `raw` parses to the value tough stored (`stored`, its re-serialisation).
fn same_value<T: DeserializeOwned + Serialize>(raw: &[u8], stored: &[u8]) -> bool {
    let Ok(parsed) = serde_json::from_slice::<Signed<T>>(raw) else {
        return false;
    };
    let (Ok(ours), Ok(theirs)) = (
        serde_json::to_value(&parsed),
        serde_json::from_slice::<serde_json::Value>(stored),
    ) else {
        return false;
    };
    ours == theirs
}

fn replace_if_same<T: DeserializeOwned + Serialize>(
    path: &Path,
    stored: &[u8],
    candidates: &[&[u8]],
) -> Result<()> {
    match candidates.iter().find(|raw| same_value::<T>(raw, stored)) {
        Some(raw) if *raw != stored => fsutil::write_atomic(path, raw, 0o644),
        _ => Ok(()),
    }
}

/// Whether `path` holds exactly `length` bytes whose SHA-256 is `sha256`.
fn has_content(path: &Path, length: u64, sha256: &[u8]) -> Result<bool> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
    };
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut reader = file.take(length.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        context.update(&buf[..n]);
    }
    Ok(total == length && context.finish().as_ref() == sha256)
}

fn base_url(text: &str, what: &'static str) -> Result<Url> {
    let mut url = Url::parse(text).map_err(|e| Error::invalid(what, format!("{text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid(
            what,
            format!("{text:?}: not http:// or https://"),
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// tough's [`Transport`] over the agent's reqwest 0.12. It also keeps the complete body
/// of each metadata file it served, so the signed bytes can be stored.
#[derive(Debug, Clone)]
struct HttpTransport {
    client: reqwest::Client,
    metadata_base: String,
    targets_base: String,
    /// Set from the trusted root after a refresh; see [`HttpTransport::target_url`].
    consistent: Arc<AtomicBool>,
    captured: Captured,
}

impl HttpTransport {
    fn new(
        metadata_base: &Url,
        targets_base: &Url,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self> {
        let tls = match tls {
            Some(tls) => tls,
            None => {
                // Public CAs for https:// (the repository's metadata, not TLS, is what
                // is trusted); the agent's single provider, never a process default.
                let roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::invalid("TLS configuration", e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth()
            }
        };
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| Error::Http(e.to_string()))?;
        Ok(Self {
            client,
            metadata_base: metadata_base.as_str().to_owned(),
            targets_base: targets_base.as_str().to_owned(),
            consistent: Arc::new(AtomicBool::new(false)),
            captured: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn take_captured(&self) -> HashMap<String, Vec<u8>> {
        match self.captured.lock() {
            Ok(mut map) => std::mem::take(&mut *map),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// tough asks for `BASE/HASH.dir/file` for a nested target under consistent
    /// snapshots; TUF 1.0 §5.7.3 names it `BASE/dir/HASH.file`.
    fn target_url(&self, url: Url) -> Url {
        if !self.consistent.load(Ordering::SeqCst) {
            return url;
        }
        let Some(rest) = url.as_str().strip_prefix(self.targets_base.as_str()) else {
            return url;
        };
        let Some((hash, path)) = rest.split_once('.') else {
            return url;
        };
        let is_digest = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        let Some((dir, file)) = path.rsplit_once('/') else {
            return url;
        };
        if !is_digest {
            return url;
        }
        Url::parse(&format!("{}{dir}/{hash}.{file}", self.targets_base)).unwrap_or(url)
    }
}

#[tough::async_trait]
impl Transport for HttpTransport {
    async fn fetch(&self, url: Url) -> std::result::Result<TransportStream, TransportError> {
        use TransportErrorKind::{FileNotFound, Other, UnsupportedUrlScheme};
        let url = self.target_url(url);
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TransportError::new(UnsupportedUrlScheme, url));
        }
        let response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| TransportError::new_with_cause(Other, &url, e))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            return Err(TransportError::new(FileNotFound, url));
        }
        if !status.is_success() {
            return Err(TransportError::new_with_cause(
                Other,
                &url,
                format!("HTTP status {status}"),
            ));
        }
        let capture = url
            .as_str()
            .strip_prefix(self.metadata_base.as_str())
            .filter(|rest| rest.ends_with(".json") && !rest.contains('/'))
            .map(|rest| (rest.to_owned(), Arc::clone(&self.captured)));
        // A small channel: the reader stays at most a few chunks ahead of tough, which
        // drops the stream at the declared length; the reader then stops.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(pump(response, url, tx, capture));
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        )))
    }
}

type Chunk = std::result::Result<Bytes, TransportError>;
/// Complete metadata bodies by file name under the metadata base URL.
type Captured = Arc<Mutex<HashMap<String, Vec<u8>>>>;

async fn pump(
    mut response: reqwest::Response,
    url: Url,
    tx: tokio::sync::mpsc::Sender<Chunk>,
    capture: Option<(String, Captured)>,
) {
    let mut body: Option<Vec<u8>> = capture.as_ref().map(|_| Vec::new());
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if let Some(b) = body.as_mut() {
                    if b.len() + chunk.len() > MAX_CAPTURE {
                        body = None;
                    } else {
                        b.extend_from_slice(&chunk);
                    }
                }
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                // Recorded before `tx` is dropped, so before tough sees the end.
                if let (Some(b), Some((file, map))) = (body, capture)
                    && let Ok(mut map) = map.lock()
                {
                    map.insert(file, b);
                }
                return;
            }
            Err(e) => {
                let _ = tx
                    .send(Err(TransportError::new_with_cause(
                        TransportErrorKind::Other,
                        &url,
                        e,
                    )))
                    .await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names_split() {
        assert_eq!(split_versioned("timestamp.json"), (None, "timestamp"));
        assert_eq!(split_versioned("3.snapshot.json"), (Some(3), "snapshot"));
        assert_eq!(split_versioned("12.role1.json"), (Some(12), "role1"));
        assert_eq!(split_versioned("a.b.json"), (None, "a.b"));
        assert_eq!(split_versioned("x.txt"), (None, ""));
    }

    #[test]
    fn nested_consistent_target_urls_follow_the_specification() {
        let base = Url::parse("http://127.0.0.1:1/targets/").expect("url");
        let t = HttpTransport::new(&base, &base, None).expect("transport");
        let hash = "ab".repeat(32);
        let asked = Url::parse(&format!("{base}{hash}.dir/sub/file.txt")).expect("url");
        assert_eq!(
            t.target_url(asked.clone()),
            asked,
            "off until a root says so"
        );
        t.consistent.store(true, Ordering::SeqCst);
        assert_eq!(
            t.target_url(asked).as_str(),
            format!("{base}dir/sub/{hash}.file.txt")
        );
        let flat = Url::parse(&format!("{base}{hash}.file.txt")).expect("url");
        assert_eq!(t.target_url(flat.clone()), flat);
    }
}
