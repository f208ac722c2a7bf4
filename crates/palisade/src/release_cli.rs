//! `palisade keys init` and `palisade release init-repo|publish` (issue 4): the
//! OFFLINE half of the update trust model. Root and targets keys are made and used
//! here, on the release manager's machine, and never sent to the hub; the hub gets
//! only signed metadata and images.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use palisade_hub::updates::tuf::{self, SigningKey, Version};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tough::schema::{Hashes, RoleType, Root, Signed, Target, Targets};

/// Days the offline-signed root and targets metadata stay valid.
const OFFLINE_EXPIRY_DAYS: i64 = 365;

#[derive(Subcommand)]
pub enum KeysAction {
    /// Create the offline root keys and the targets key (files 0600 in DIR)
    Init {
        /// Directory for the key files (created 0700; must not be readable by others)
        #[arg(long)]
        out: PathBuf,
        /// Root signatures required for a new root
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=9))]
        root_threshold: u8,
        /// Root keys to create
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
        root_keys: u8,
    },
}

/// How to reach the hub's API.
#[derive(clap::Args, Clone)]
pub struct HubArgs {
    /// The hub's base URL, e.g. https://hub.example.com
    #[arg(long)]
    pub(crate) hub: String,
    /// An API token of a staff account (or PALISADE_TOKEN)
    #[arg(long, env = "PALISADE_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
    /// The hub's CA certificate (PEM) when its certificate is from the hub CA
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ReleaseAction {
    /// Create a product model's TUF repository on the hub: a root signed offline by the
    /// root threshold (listing the hub's snapshot and timestamp keys) and empty targets
    InitRepo {
        #[arg(long)]
        product: String,
        /// The directory made by `palisade keys init`
        #[arg(long)]
        keys: PathBuf,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Sign a release offline and publish it: upload the image, then targets metadata
    /// listing MODEL-VERSION.img signed with the offline targets key
    Publish {
        #[arg(long)]
        product: String,
        /// MAJOR.MINOR.PATCH, newer than every published release of the model
        #[arg(long)]
        version: String,
        /// The image file
        #[arg(long)]
        file: PathBuf,
        /// A security update (announced as such to owners)
        #[arg(long)]
        security: bool,
        /// Release notes (text file)
        #[arg(long)]
        notes: Option<PathBuf>,
        /// An SBOM (CycloneDX JSON) for this version
        #[arg(long)]
        sbom: Option<PathBuf>,
        /// The directory made by `palisade keys init`
        #[arg(long)]
        keys: PathBuf,
        /// Start a staged rollout right after publishing, e.g. 1,10,50,100 (percent of
        /// the eligible devices per stage; without it, start one on the console)
        #[arg(long, value_name = "STAGES")]
        rollout: Option<String>,
        /// Soak time per stage of that rollout, in minutes
        #[arg(long, default_value_t = 60, requires = "rollout")]
        soak_minutes: i64,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Rotate a model's root keys (and targets key): root N+1 lists the keys of
    /// NEW_DIR (from `palisade keys init`) and is signed by the current root threshold
    /// (OLD_DIR) and by the new keys, so devices that trust root N follow the chain.
    /// The current targets metadata is then re-signed with the new targets key.
    RotateRoot {
        #[arg(long)]
        product: String,
        /// The current offline keys (those the hub's root.json lists)
        #[arg(long)]
        keys: PathBuf,
        /// The new offline keys, made by `palisade keys init --out NEW_DIR`
        #[arg(long)]
        new_keys: PathBuf,
        #[command(flatten)]
        hub: HubArgs,
    },
}

pub fn keys(action: KeysAction) -> Result<ExitCode> {
    let KeysAction::Init {
        out,
        root_threshold,
        root_keys,
    } = action;
    if root_threshold > root_keys {
        bail!("--root-threshold {root_threshold} is more than --root-keys {root_keys}");
    }
    if out.exists() {
        let mode = std::fs::metadata(&out)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by others (mode {:o}): offline keys need a private directory (chmod 700)",
                out.display(),
                mode & 0o777
            );
        }
    } else {
        std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut names: Vec<String> = (1..=root_keys).map(|i| format!("root-{i}.pk8")).collect();
    names.push("targets.pk8".into());
    for name in names.iter().chain(std::iter::once(&"keys.json".to_owned())) {
        if out.join(name).exists() {
            bail!(
                "{} exists: keys are never overwritten (use a new directory)",
                out.join(name).display()
            );
        }
    }
    let mut ids = Vec::new();
    for name in &names {
        let (pkcs8, key) = SigningKey::generate()?;
        write_new(&out.join(name), &pkcs8, 0o600)?;
        println!("{name}  {}", key.id_hex());
        ids.push(key.id_hex());
    }
    let summary = serde_json::json!({
        "root_threshold": root_threshold,
        "root": &ids[..ids.len() - 1],
        "targets": ids.last(),
    });
    write_new(
        &out.join("keys.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
        0o600,
    )?;
    println!(
        "{} root key(s) (threshold {root_threshold}) and a targets key written to {} (mode 0600).",
        root_keys,
        out.display()
    );
    println!("Keep this directory offline: the hub never holds these keys.");
    Ok(ExitCode::SUCCESS)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// The offline keys of a `keys init` directory.
struct OfflineKeys {
    root: Vec<SigningKey>,
    root_threshold: u64,
    targets: SigningKey,
}

fn load_keys(dir: &Path) -> Result<OfflineKeys> {
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("keys.json")).with_context(|| {
            format!(
                "read {}/keys.json (made by `palisade keys init`)",
                dir.display()
            )
        })?)?;
    let root_threshold = summary["root_threshold"]
        .as_u64()
        .context("keys.json: root_threshold")?;
    let load = |name: &str| -> Result<SigningKey> {
        let path = dir.join(name);
        let mode = std::fs::metadata(&path)
            .with_context(|| format!("read {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by others (mode {:o}); refusing to use it",
                path.display(),
                mode & 0o777
            );
        }
        Ok(SigningKey::from_pkcs8(&std::fs::read(&path)?)?)
    };
    let mut root = Vec::new();
    for i in 1..=9 {
        let name = format!("root-{i}.pk8");
        if dir.join(&name).exists() {
            root.push(load(&name)?);
        }
    }
    if (root.len() as u64) < root_threshold {
        bail!(
            "only {} root key(s) in {}; the threshold is {root_threshold}",
            root.len(),
            dir.display()
        );
    }
    Ok(OfflineKeys {
        root,
        root_threshold,
        targets: load("targets.pk8")?,
    })
}

struct Hub {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Hub {
    fn new(args: &HubArgs) -> Result<Self> {
        let base = args.hub.trim_end_matches('/').to_owned();
        if !base.starts_with("https://") {
            bail!("--hub must be an https:// URL");
        }
        let mut roots = rustls::RootCertStore::empty();
        match &args.ca {
            Some(path) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
                for cert in rustls_pemfile(&pem)? {
                    roots.add(cert)?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(std::time::Duration::from_secs(15))
            .build()?;
        Ok(Self {
            client,
            base,
            token: args.token.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        // The TUF repository is public, and the hub refuses API tokens outside /api/.
        if path.starts_with("/api/") {
            request.bearer_auth(&self.token)
        } else {
            request
        }
    }

    async fn check(response: reqwest::Response, what: &str) -> Result<reqwest::Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(body);
        bail!("{what}: the hub answered {status}: {message}")
    }

    /// POST a JSON document to the hub's API and fail with the hub's message (`what`
    /// failed) unless it is accepted.
    async fn post_json(&self, path: &str, body: Vec<u8>, what: &str) -> Result<reqwest::Response> {
        let response = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Hub::check(response, what).await
    }

    async fn get_bytes(&self, path: &str, what: &str) -> Result<Vec<u8>> {
        let r = self.request(reqwest::Method::GET, path).send().await?;
        Ok(Self::check(r, what).await?.bytes().await?.to_vec())
    }
}

/// PEM certificates from a file.
fn rustls_pemfile(pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("not PEM certificates")?;
    if certs.is_empty() {
        bail!("no certificate in the --ca file");
    }
    Ok(certs)
}

/// The root a `keys init` directory and the hub's online keys make (version 1).
fn build_root(
    keys: &OfflineKeys,
    snapshot: tough::schema::key::Key,
    timestamp: tough::schema::key::Key,
) -> Result<Signed<Root>> {
    let root_keys: Vec<&SigningKey> = keys.root.iter().collect();
    Ok(tuf::new_root(
        1,
        &root_keys,
        keys.root_threshold,
        &keys.targets,
        snapshot,
        timestamp,
        palisade_hub::db::now() + OFFLINE_EXPIRY_DAYS * 86_400,
        &root_keys,
    )?)
}

fn key_of(value: &serde_json::Value, role: &str) -> Result<tough::schema::key::Key> {
    serde_json::from_value(value[role]["key"].clone())
        .with_context(|| format!("the hub's {role} key is not a TUF key"))
}

pub async fn release(action: ReleaseAction) -> Result<ExitCode> {
    match action {
        ReleaseAction::InitRepo { product, keys, hub } => {
            let keys = load_keys(&keys)?;
            let hub = Hub::new(&hub)?;
            let online: serde_json::Value = serde_json::from_slice(
                &hub.get_bytes(
                    &format!("/api/v1/products/{product}/tuf/keys"),
                    "fetch the hub's online keys",
                )
                .await?,
            )?;
            let root = build_root(
                &keys,
                key_of(&online, "snapshot")?,
                key_of(&online, "timestamp")?,
            )?;
            let root_bytes = tuf::to_bytes(&root)?;
            hub.post_json(
                &format!("/api/v1/products/{product}/tuf/root"),
                root_bytes.clone(),
                "upload the root",
            )
            .await?;
            let targets =
                tuf::empty_targets(palisade_hub::db::now() + OFFLINE_EXPIRY_DAYS * 86_400)?;
            let signed = tuf::sign(targets, &[&keys.targets])?;
            hub.post_json(
                &format!("/api/v1/products/{product}/tuf/targets"),
                tuf::to_bytes(&signed)?,
                "upload the first targets metadata",
            )
            .await?;
            println!(
                "TUF repository of {product} created: root version 1 (threshold {} of {} root keys), targets key {}.",
                keys.root_threshold,
                keys.root.len(),
                keys.targets.id_hex()
            );
            println!(
                "Devices trust this root: {}/tuf/{product}/metadata/1.root.json (check it against your keys before shipping).",
                hub.base
            );
            Ok(ExitCode::SUCCESS)
        }
        ReleaseAction::RotateRoot {
            product,
            keys,
            new_keys,
            hub,
        } => rotate_root(&product, &keys, &new_keys, &hub).await,
        ReleaseAction::Publish {
            product,
            version,
            file,
            security,
            notes,
            sbom,
            keys,
            rollout,
            soak_minutes,
            hub,
        } => {
            let parsed = Version::parse(&version)
                .with_context(|| format!("--version {version:?} is not MAJOR.MINOR.PATCH"))?;
            let keys = load_keys(&keys)?;
            let notes = match notes {
                Some(p) => {
                    std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?
                }
                None => String::new(),
            };
            let hub = Hub::new(&hub)?;
            // The current targets, checked against the root the hub serves and against
            // OUR targets key (a hub cannot feed us someone else's repository).
            let root: Signed<Root> = tuf::parse(
                &hub.get_bytes(
                    &format!("/tuf/{product}/metadata/root.json"),
                    "fetch root.json",
                )
                .await?,
            )
            .map_err(anyhow::Error::msg)?;
            root.signed
                .verify_role(&root)
                .context("the hub's root.json is not validly signed")?;
            let listed = root
                .signed
                .roles
                .get(&RoleType::Targets)
                .is_some_and(|r| r.keyids.contains(keys.targets.id()));
            if !listed {
                bail!(
                    "the hub's root for {product} does not list this targets key: wrong --keys or product?"
                );
            }
            let current: Signed<Targets> = tuf::parse(
                &hub.get_bytes(
                    &format!("/tuf/{product}/metadata/targets.json"),
                    "fetch targets.json",
                )
                .await?,
            )
            .map_err(anyhow::Error::msg)?;
            root.signed
                .verify_role(&current)
                .context("the hub's targets.json is not signed by the targets key")?;
            // Refuse early (the hub checks again) a version not newer than a release.
            let published: Vec<serde_json::Value> = serde_json::from_slice(
                &hub.get_bytes("/api/v1/releases", "list the releases")
                    .await?,
            )?;
            for r in published
                .iter()
                .filter(|r| r["product"] == product.as_str())
            {
                let theirs = r["version"].as_str().and_then(Version::parse);
                if theirs.is_some_and(|v| parsed <= v) {
                    bail!(
                        "version {parsed} is not newer than the published {}",
                        r["version"].as_str().unwrap_or("?")
                    );
                }
            }
            // The model's published end of security updates travels in the signed
            // target, so the device can show it (SUP-1, `palisade-agent status`).
            let products: Vec<serde_json::Value> = serde_json::from_slice(
                &hub.get_bytes("/api/v1/products", "list the product models")
                    .await?,
            )?;
            let support_until = products
                .iter()
                .find(|p| p["id"] == product.as_str())
                .and_then(|p| p["security_updates_until"].as_str())
                .map(str::to_owned);
            let name = tuf::target_name(&product, &parsed);
            // Hash the image (streamed).
            let (length, digest) = palisade_hub::updates::repo::file_digest(&file)
                .await?
                .with_context(|| format!("{} not found", file.display()))?;
            eprintln!("{name}: {length} bytes, sha256 {}", tuf::hex(&digest));
            upload(&hub, &product, &name, &file, length).await?;
            let mut targets = current.signed.clone();
            targets.version = targets
                .version
                .checked_add(1)
                .context("targets version overflow")?;
            targets.expires = tuf::expiry(palisade_hub::db::now() + OFFLINE_EXPIRY_DAYS * 86_400)?;
            let mut custom = HashMap::new();
            custom.insert("version".to_owned(), serde_json::json!(parsed.to_string()));
            custom.insert("security".to_owned(), serde_json::json!(security));
            custom.insert("product".to_owned(), serde_json::json!(product.as_str()));
            if let Some(date) = &support_until {
                custom.insert("support_until".to_owned(), serde_json::json!(date));
            }
            targets.targets.insert(
                tough::TargetName::new(name.clone())?,
                Target {
                    length,
                    hashes: Hashes {
                        sha256: digest.into(),
                        _extra: HashMap::new(),
                    },
                    custom,
                    _extra: HashMap::new(),
                },
            );
            let signed = tuf::sign(targets, &[&keys.targets])?;
            let body = serde_json::json!({
                "version": parsed.to_string(),
                "security": security,
                "notes": notes,
                "targets": signed,
            });
            let r = hub
                .request(
                    reqwest::Method::POST,
                    &format!("/api/v1/products/{product}/releases"),
                )
                .json(&body)
                .send()
                .await?;
            let release: serde_json::Value =
                Hub::check(r, "publish the release").await?.json().await?;
            println!(
                "release {} of {product} published ({name}), id {}",
                parsed,
                release["id"].as_str().unwrap_or("?")
            );
            if let Some(sbom) = sbom {
                let bytes =
                    std::fs::read(&sbom).with_context(|| format!("read {}", sbom.display()))?;
                let r = hub
                    .request(
                        reqwest::Method::POST,
                        &format!("/api/v1/products/{product}/versions/{parsed}/sbom"),
                    )
                    .header("content-type", "application/json")
                    .body(bytes)
                    .send()
                    .await?;
                if r.status() == reqwest::StatusCode::NOT_FOUND {
                    eprintln!(
                        "warning: this hub does not accept SBOMs yet; the SBOM was not uploaded"
                    );
                } else {
                    Hub::check(r, "upload the SBOM").await?;
                    println!("SBOM uploaded for {product} {parsed}");
                }
            }
            if let Some(stages) = rollout {
                let stages = stages
                    .split(',')
                    .map(|s| s.trim().trim_end_matches('%').parse::<u32>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .context("--rollout takes percents separated by commas, e.g. 1,10,50,100")?;
                let r = hub
                    .request(reqwest::Method::POST, "/api/v1/rollouts")
                    .json(&serde_json::json!({
                        "release": release["id"],
                        "stages": stages,
                        "soak_minutes": soak_minutes,
                    }))
                    .send()
                    .await?;
                let started: serde_json::Value =
                    Hub::check(r, "start the rollout").await?.json().await?;
                println!(
                    "rollout {} started: stages {:?}, soak {soak_minutes} min ({}/rollouts/{})",
                    started["id"].as_str().unwrap_or("?"),
                    stages,
                    hub.base,
                    started["id"].as_str().unwrap_or("?")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `release rotate-root`: see [`ReleaseAction::RotateRoot`].
async fn rotate_root(
    product: &str,
    old_dir: &Path,
    new_dir: &Path,
    hub_args: &HubArgs,
) -> Result<ExitCode> {
    let old = load_keys(old_dir)?;
    let new = load_keys(new_dir)?;
    let hub = Hub::new(hub_args)?;
    let current: Signed<Root> = tuf::parse(
        &hub.get_bytes(
            &format!("/tuf/{product}/metadata/root.json"),
            "fetch root.json",
        )
        .await?,
    )
    .map_err(anyhow::Error::msg)?;
    current
        .signed
        .verify_role(&current)
        .context("the hub's root.json is not validly signed")?;
    // Enough of OUR old keys must be root keys of the current root: otherwise the
    // hub and every device would refuse the new root anyway.
    let listed = current
        .signed
        .roles
        .get(&RoleType::Root)
        .map(|r| {
            old.root
                .iter()
                .filter(|k| r.keyids.contains(k.id()))
                .count() as u64
        })
        .unwrap_or(0);
    let threshold = current
        .signed
        .roles
        .get(&RoleType::Root)
        .map_or(u64::MAX, |r| r.threshold.get());
    if listed < threshold {
        bail!(
            "only {listed} of the keys in {} are root keys of the hub's root version {} (threshold {threshold}): wrong --keys?",
            old_dir.display(),
            current.signed.version
        );
    }
    let online: serde_json::Value = serde_json::from_slice(
        &hub.get_bytes(
            &format!("/api/v1/products/{product}/tuf/keys"),
            "fetch the hub's online keys",
        )
        .await?,
    )?;
    let version = current
        .signed
        .version
        .get()
        .checked_add(1)
        .context("root version overflow")?;
    let new_root_keys: Vec<&SigningKey> = new.root.iter().collect();
    // Signed by every old root key we hold (at least the old threshold) and every new
    // root key (at least the new threshold): TUF 5.3.4 checks both.
    let mut signers: Vec<&SigningKey> = Vec::new();
    for k in old.root.iter().chain(new.root.iter()) {
        if !signers.iter().any(|s| s.id() == k.id()) {
            signers.push(k);
        }
    }
    let root = tuf::new_root(
        version,
        &new_root_keys,
        new.root_threshold,
        &new.targets,
        key_of(&online, "snapshot")?,
        key_of(&online, "timestamp")?,
        palisade_hub::db::now() + OFFLINE_EXPIRY_DAYS * 86_400,
        &signers,
    )?;
    hub.post_json(
        &format!("/api/v1/products/{product}/tuf/root"),
        tuf::to_bytes(&root)?,
        "upload the new root",
    )
    .await?;
    println!(
        "root version {version} of {product} uploaded: {} root key(s), threshold {}, targets key {}.",
        new.root.len(),
        new.root_threshold,
        new.targets.id_hex()
    );
    // The targets metadata the hub serves is signed by the old targets key: re-sign the
    // same targets with the new one, or devices would refuse the repository.
    let targets: Signed<Targets> = tuf::parse(
        &hub.get_bytes(
            &format!("/tuf/{product}/metadata/targets.json"),
            "fetch targets.json",
        )
        .await?,
    )
    .map_err(anyhow::Error::msg)?;
    current
        .signed
        .verify_role(&targets)
        .context("the hub's targets.json is not signed by the previous targets key")?;
    let mut resigned = targets.signed.clone();
    resigned.version = resigned
        .version
        .checked_add(1)
        .context("targets version overflow")?;
    resigned.expires = tuf::expiry(palisade_hub::db::now() + OFFLINE_EXPIRY_DAYS * 86_400)?;
    let signed = tuf::sign(resigned, &[&new.targets])?;
    hub.post_json(
        &format!("/api/v1/products/{product}/tuf/targets"),
        tuf::to_bytes(&signed)?,
        "upload the re-signed targets metadata",
    )
    .await?;
    println!(
        "targets metadata re-signed with the new targets key (version {}). Publish with --keys {} from now on; keep {} offline until no device is older than this rotation, then destroy it.",
        signed.signed.version,
        new_dir.display(),
        old_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Upload the image as a stream, drawing a progress bar on stderr.
async fn upload(hub: &Hub, product: &str, name: &str, file: &Path, length: u64) -> Result<()> {
    use futures_util::StreamExt;
    let f = tokio::fs::File::open(file).await?;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let stream = futures_util::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
    .map(move |chunk| {
        if let Ok(c) = &chunk {
            let done = counter.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed)
                + c.len() as u64;
            draw_bar(done, length);
        }
        chunk
    });
    let r = hub
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/products/{product}/targets/{name}"),
        )
        .header("content-type", "application/octet-stream")
        .header("content-length", length)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await?;
    eprintln!();
    Hub::check(r, "upload the image").await?;
    Ok(())
}

fn draw_bar(done: u64, total: u64) {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    eprint!(
        "\r[{}{}] {percent:>3}% {:.1}/{:.1} MiB",
        "#".repeat(filled as usize),
        " ".repeat((WIDTH - filled) as usize),
        done as f64 / 1_048_576.0,
        total as f64 / 1_048_576.0
    );
}
