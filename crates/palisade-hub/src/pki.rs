//! The data directory and the hub's TLS material: created on first start (directory
//! 0700, private keys 0600), reused afterwards; or the operator's own certificate.

use crate::config::Config;
use crate::error::{Error, Result};
use palisade_crypto::ca::{self, CertAndKey, HubCa};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What the hub serves TLS with, and what it tells the operator.
pub struct Pki {
    pub server_config: Arc<ServerConfig>,
    /// The console's certificate, replaced in place when renewed or when the
    /// operator's files change.
    pub console_certificate: Arc<LiveCertificate>,
    /// The hub-CA server certificate devices see, replaced in place when renewed.
    pub device_certificate: Arc<LiveCertificate>,
    /// TLS for device connections: the hub-CA server certificate, and a client
    /// certificate issued by the hub CA required (mutual TLS).
    pub device_server_config: Arc<ServerConfig>,
    /// The hub CA, which issues device certificates.
    pub hub_ca: Arc<HubCa>,
    /// The hub CA certificate (PEM), handed to devices at enrolment.
    pub hub_ca_pem: String,
    /// The hub CA certificate (clients pin this), or the operator's chain.
    pub ca_cert_path: PathBuf,
    /// SHA-256 fingerprint of that CA certificate.
    pub ca_fingerprint: String,
    /// SHA-256 of the server key's SubjectPublicKeyInfo, base64 (for pinning, e.g.
    /// Chromium's `--ignore-certificate-errors-spki-list`).
    pub server_spki_sha256: String,
}

/// A server certificate that can be replaced while the hub runs: new handshakes get
/// the new one, established connections keep theirs. Without it a hub running for
/// longer than the certificate's lifetime would serve an expired certificate.
#[derive(Debug)]
pub struct LiveCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl LiveCertificate {
    fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(key)),
        })
    }

    fn replace(&self, key: CertifiedKey) {
        // A poisoned lock only means a panic while swapping an Arc; the value inside
        // is still a whole certificate.
        let mut slot = self.current.write().unwrap_or_else(|e| e.into_inner());
        *slot = Arc::new(key);
    }

    /// The leaf certificate served now (DER).
    pub fn leaf_der(&self) -> Vec<u8> {
        let slot = self.current.read().unwrap_or_else(|e| e.into_inner());
        slot.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }
}

impl ResolvesServerCert for LiveCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let slot = self.current.read().unwrap_or_else(|e| e.into_inner());
        Some(slot.clone())
    }
}

/// Build a certified key (chain + signing key) from PEM files.
fn certified_key(chain: Vec<CertificateDer<'static>>, key_path: &Path) -> Result<CertifiedKey> {
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| Error::Tls(format!("{}: {e}", key_path.display())))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| Error::Tls(format!("{}: {e}", key_path.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| Error::Tls(format!("{}: {e}", key_path.display())))?;
    Ok(certified)
}

/// The console's chain: the operator's file as given, or the hub server certificate
/// followed by the hub CA (so clients that pin the CA can build the chain).
fn console_chain(config: &Config, dir: &Path) -> Result<(Vec<CertificateDer<'static>>, PathBuf)> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok((pem_chain(cert)?, key.clone())),
        _ => {
            let mut chain = pem_chain(&dir.join("server.pem"))?;
            chain.extend(pem_chain(&dir.join("ca.pem"))?);
            Ok((chain, dir.join("server.key")))
        }
    }
}

/// Renew what is due, without a restart: re-issue the hub server certificate when
/// fewer than `SERVER_RENEW_DAYS` remain (or the names changed), and pick up the
/// operator's certificate files when they were replaced (e.g. by an ACME client).
/// Returns whether anything new is now served. A failure leaves the served
/// certificates as they were.
pub fn renew_if_due(config: &Config, pki: &Pki) -> Result<bool> {
    let dir = config.data_dir.join("pki");
    let (server_cert, server_key, reissued) =
        ensure_hub_server_certificate(config, &pki.hub_ca, &dir)?;
    let mut changed = false;
    if reissued {
        let mut chain = pem_chain(&server_cert)?;
        chain.extend(pem_chain(&dir.join("ca.pem"))?);
        pki.device_certificate
            .replace(certified_key(chain, &server_key)?);
        changed = true;
    }
    let (chain, key_path) = console_chain(config, &dir)?;
    let leaf = chain.first().map(|c| c.to_vec()).unwrap_or_default();
    if leaf != pki.console_certificate.leaf_der() {
        pki.console_certificate
            .replace(certified_key(chain, &key_path)?);
        changed = true;
    }
    Ok(changed)
}

/// Create the data directory (mode 0700) or tighten an existing one.
pub fn prepare_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(dir, e))
}

/// Set a file to mode 0600.
pub fn restrict_file(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Write a file atomically (temporary file, fsync, rename) with the given mode.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    file.write_all(contents).map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Load or create the CA and server certificate under `DATA_DIR/pki/`, or load the
/// operator's certificate, and build the TLS server configuration.
pub fn load_or_create(config: &Config) -> Result<Pki> {
    let dir = config.data_dir.join("pki");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(&dir, e))?;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let ca_name_path = dir.join("ca.name");
    let hub_ca = if ca_cert_path.exists() {
        HubCa::load(
            read(&ca_name_path)?.trim().to_owned(),
            CertAndKey {
                cert_pem: read(&ca_cert_path)?,
                key_pem: read(&ca_key_path)?,
            },
        )
    } else {
        let created = HubCa::generate()?;
        write_atomic(&ca_key_path, created.material.key_pem.as_bytes(), 0o600)?;
        write_atomic(&ca_name_path, created.common_name.as_bytes(), 0o644)?;
        write_atomic(&ca_cert_path, created.material.cert_pem.as_bytes(), 0o644)?;
        tracing::info!("created the hub CA in {}", dir.display());
        created
    };

    // The hub-CA server certificate always exists: devices pin the hub CA, so the
    // device listener serves it even when the console uses the operator's certificate.
    let (hub_server_cert, hub_server_key, _) =
        ensure_hub_server_certificate(config, &hub_ca, &dir)?;
    let (chain_path, fingerprint_source) = match &config.tls_cert {
        Some(cert) => (cert.clone(), cert.clone()),
        None => (hub_server_cert.clone(), ca_cert_path.clone()),
    };
    let (chain, key_path) = console_chain(config, &dir)?;
    let fingerprint_der = CertificateDer::pem_file_iter(&fingerprint_source)
        .map_err(|e| Error::Tls(e.to_string()))?
        .last()
        .ok_or_else(|| {
            Error::Tls(format!(
                "{} holds no certificate",
                fingerprint_source.display()
            ))
        })?
        .map_err(|e| Error::Tls(e.to_string()))?;
    let console_certificate = LiveCertificate::new(certified_key(chain, &key_path)?);
    let server_config = server_config(console_certificate.clone())?;
    let spki = server_config_spki(&key_path)?;
    let mut device_chain = pem_chain(&hub_server_cert)?;
    device_chain.extend(pem_chain(&ca_cert_path)?);
    let device_certificate = LiveCertificate::new(certified_key(device_chain, &hub_server_key)?);
    let device_server_config = device_server_config(device_certificate.clone(), &ca_cert_path)?;
    Ok(Pki {
        server_config,
        console_certificate,
        device_certificate,
        device_server_config,
        hub_ca: Arc::new(hub_ca),
        hub_ca_pem: read(&ca_cert_path)?,
        ca_cert_path: if config.tls_cert.is_some() {
            chain_path
        } else {
            ca_cert_path
        },
        ca_fingerprint: ca::fingerprint(fingerprint_der.as_ref()),
        server_spki_sha256: spki,
    })
}

/// Issue (or renew) the server certificate signed by the hub CA; returns its paths and
/// whether a new one was issued.
fn ensure_hub_server_certificate(
    config: &Config,
    hub_ca: &HubCa,
    dir: &Path,
) -> Result<(PathBuf, PathBuf, bool)> {
    let server_cert = dir.join("server.pem");
    let server_key = dir.join("server.key");
    let meta_path = dir.join("server.meta");
    let names = server_names(config);
    let wanted_meta = names.join(",");
    let now = crate::db::now();
    let fresh = read(&meta_path).ok().is_some_and(|meta| {
        let mut lines = meta.lines();
        let issued_names = lines.next().unwrap_or("");
        let not_after: i64 = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        issued_names == wanted_meta && not_after - now > ca::SERVER_RENEW_DAYS * 86_400
    }) && server_cert.exists()
        && server_key.exists();
    if !fresh {
        let issued = hub_ca.issue_server(&names)?;
        write_atomic(&server_key, issued.key_pem.as_bytes(), 0o600)?;
        write_atomic(&server_cert, issued.cert_pem.as_bytes(), 0o644)?;
        let meta = format!(
            "{wanted_meta}\n{}\n",
            now + ca::SERVER_VALIDITY_DAYS * 86_400
        );
        write_atomic(&meta_path, meta.as_bytes(), 0o644)?;
        tracing::info!(names = %wanted_meta, "issued the hub server certificate");
    }
    Ok((server_cert, server_key, !fresh))
}

fn pem_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))
}

/// Mutual TLS for devices (ENC-1, AUTH-10): TLS 1.3/1.2-AEAD as for the console, and a
/// client certificate chaining to the hub CA is required; a client without one never
/// completes the handshake. Which device it is, and whether it is revoked, is decided
/// after the handshake from the certificate itself.
pub fn device_server_config(
    certificate: Arc<LiveCertificate>,
    ca: &Path,
) -> Result<Arc<ServerConfig>> {
    let ca_chain = pem_chain(ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in ca_chain {
        roots.add(c).map_err(|e| Error::Tls(e.to_string()))?;
    }
    let provider = Arc::new(tls_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| Error::Tls(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    Ok(Arc::new(config))
}

/// The crypto provider with only TLS 1.3 suites and TLS 1.2 ECDHE + AEAD suites.
fn tls_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|suite| match suite {
        rustls::SupportedCipherSuite::Tls13(_) => true,
        rustls::SupportedCipherSuite::Tls12(s) => {
            let name = format!("{:?}", s.common.suite);
            name.starts_with("TLS_ECDHE_")
                && (name.contains("_GCM_") || name.contains("CHACHA20_POLY1305"))
        }
    });
    provider
}

fn server_config_spki(key_path: &Path) -> Result<String> {
    let key_pem = read(key_path)?;
    Ok(palisade_crypto::ca::spki_sha256_base64(&key_pem)?)
}

/// The names the generated server certificate covers: loopback, the listen address,
/// the public URL's host and any configured host names.
fn server_names(config: &Config) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let ip = config.listen.ip();
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    if let Some(host) = config
        .public_url
        .strip_prefix("https://")
        .and_then(|rest| rest.split('/').next())
    {
        let host = if host.starts_with('[') {
            host.trim_start_matches('[').split(']').next().unwrap_or("")
        } else {
            host.split(':').next().unwrap_or("")
        };
        if !host.is_empty() {
            names.push(host.to_owned());
        }
    }
    names.extend(config.hostnames.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// TLS 1.3, and TLS 1.2 only with ECDHE key exchange and AEAD ciphers (ENC-1).
pub fn server_config(certificate: Arc<LiveCertificate>) -> Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(Arc::new(tls_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?;
    // The console and API authenticate people with sessions, not certificates; device
    // connections (mutual TLS) have their own listener and verifier.
    let mut config = builder
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
