//! Enrolment: the device makes its own P-256 key (it never leaves the device), sends a
//! certificate signing request with its claim code to the hub over HTTPS with only the
//! hub CA trusted (ENC-2, ENC-3), and stores the certificate it gets back.
//!
//! Contract with the hub: `POST {hub}/api/v1/devices/enroll` with
//! `{"claim_code", "csr_pem"}` → 201 `{"device_id", "certificate_pem", "ca_pem",
//! "not_after", "mqtt_port"}`; 403 bad/used/expired claim code; 400 bad CSR; 429
//! throttled.

use crate::limits::Limits;
use crate::state::{AgentConfig, StateDir, valid_device_id};
use crate::{Error, Result, fsutil, tls};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A claim code: a secret, so it is never printed (Debug is redacted).
#[derive(Clone)]
pub struct ClaimCode(String);

impl ClaimCode {
    pub fn new(code: impl Into<String>) -> Result<Self> {
        let code: String = code.into().trim().to_owned();
        if code.is_empty() || code.len() > 256 || code.chars().any(char::is_control) {
            return Err(Error::invalid(
                "claim code",
                "must be 1-256 printable characters",
            ));
        }
        Ok(Self(code))
    }
}

impl std::fmt::Debug for ClaimCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimCode(…)")
    }
}

/// What `palisade-agent enroll` needs.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// `https://host[:port][/base]`.
    pub hub_url: String,
    /// The hub CA certificate (PEM) to pin.
    pub ca_pem: Vec<u8>,
    pub claim_code: ClaimCode,
    pub state_dir: PathBuf,
    pub limits: Limits,
}

#[derive(Serialize)]
struct EnrollRequest<'a> {
    claim_code: &'a str,
    csr_pem: &'a str,
}

/// `not_after` as the hub sends it: Unix seconds, or an RFC 3339 timestamp.
#[derive(Deserialize)]
#[serde(untagged)]
enum Timestamp {
    Unix(i64),
    Text(String),
}

impl Timestamp {
    fn unix(&self) -> Result<i64> {
        match self {
            Self::Unix(s) => Ok(*s),
            Self::Text(t) => {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map(time::OffsetDateTime::unix_timestamp)
                    .map_err(|_| Error::BadResponse("not_after is not a timestamp".into()))
            }
        }
    }
}

#[derive(Deserialize)]
struct EnrollResponse {
    device_id: String,
    certificate_pem: String,
    ca_pem: String,
    not_after: Timestamp,
    mqtt_port: u16,
}

/// The parsed, validated hub URL: the enrolment endpoint and the host name the MQTT
/// server must present a certificate for.
#[derive(Debug, Clone)]
pub struct HubUrl {
    pub base: String,
    pub endpoint: reqwest::Url,
    pub host: String,
}

/// Validate a hub URL: `https` only (no plaintext), a host, no credentials, no query or
/// fragment.
pub fn parse_hub_url(raw: &str) -> Result<HubUrl> {
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| Error::HubUrl(e.to_string()))?;
    if url.scheme() != "https" {
        return Err(Error::HubUrl(format!(
            "scheme must be https (got {}): the agent never talks to the hub in plaintext",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::HubUrl("must not contain credentials".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::HubUrl("must not have a query or fragment".into()));
    }
    let host = match url.host_str() {
        // IPv6 literals come bracketed; the TLS server name is the bare address.
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        _ => return Err(Error::HubUrl("has no host".into())),
    };
    let base = url.as_str().trim_end_matches('/').to_owned();
    let endpoint = reqwest::Url::parse(&format!("{base}/api/v1/devices/enroll"))
        .map_err(|e| Error::HubUrl(e.to_string()))?;
    Ok(HubUrl {
        base,
        endpoint,
        host,
    })
}

/// A new P-256 key pair and a CSR for it (PEM key, PEM CSR). The CSR's subject is a
/// placeholder: the hub decides what the certificate says.
pub fn generate_key_and_csr() -> Result<(String, String)> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| Error::Key(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "palisade-device");
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| Error::Key(e.to_string()))?;
    Ok((key.serialize_pem(), csr))
}

/// Enrol this device. Refuses if the state directory already holds an enrolment.
pub async fn enroll(opts: EnrollOptions) -> Result<AgentConfig> {
    let hub = parse_hub_url(&opts.hub_url)?;
    // Fail closed on a bad CA before generating anything.
    let tls_config = tls::client_config(&opts.ca_pem, None)?;
    let state = StateDir::new(&opts.state_dir);
    let _lock = state.lock()?;
    if let Some(device_id) = state.enrolled_device()? {
        return Err(Error::AlreadyEnrolled {
            device_id,
            state_dir: opts.state_dir.clone(),
        });
    }

    let (key_pem, csr_pem) = generate_key_and_csr()?;
    // The key is on disk (0600, durable) before the hub sees the CSR.
    state.save_key(&key_pem)?;
    let outcome = request_certificate(&hub, tls_config, &opts, &csr_pem).await;
    let response = match outcome {
        Ok(r) => r,
        Err(e) => {
            // No certificate will ever match this key: don't leave it behind.
            if let Err(wipe) = fsutil::wipe_file(&state.path(crate::state::KEY_FILE)) {
                tracing::warn!("could not remove the unused device key: {wipe}");
            }
            return Err(e);
        }
    };
    let saved = save_response(&state, &hub, &key_pem, response);
    if saved.is_err() {
        for name in [
            crate::state::CONFIG_FILE,
            crate::state::CERT_FILE,
            crate::state::CA_FILE,
        ] {
            let _ = fsutil::remove_file(&state.path(name));
        }
    }
    saved
}

fn save_response(
    state: &StateDir,
    hub: &HubUrl,
    key_pem: &str,
    response: EnrollResponse,
) -> Result<AgentConfig> {
    if !valid_device_id(&response.device_id) {
        return Err(Error::BadResponse(
            "device_id is not a valid device id".into(),
        ));
    }
    if response.mqtt_port == 0 {
        return Err(Error::BadResponse("mqtt_port is 0".into()));
    }
    let chain = tls::parse_certs(response.certificate_pem.as_bytes(), "device certificate")
        .map_err(|e| Error::BadResponse(e.to_string()))?;
    tls::pinned_roots(response.ca_pem.as_bytes()).map_err(|e| Error::BadResponse(e.to_string()))?;
    // The certificate must be for the key made here.
    let key = tls::parse_key(key_pem.as_bytes(), "device key")?;
    rustls::sign::CertifiedKey::from_der(chain, key, &tls::provider()).map_err(|e| {
        Error::BadResponse(format!(
            "the certificate does not match this device's key: {e}"
        ))
    })?;
    let config = AgentConfig {
        device_id: response.device_id,
        hub_url: hub.base.clone(),
        mqtt_host: hub.host.clone(),
        mqtt_port: response.mqtt_port,
        not_after: response.not_after.unix()?,
        enrolled_at: crate::unix_now(),
        cert_issued_at: 0,
    };
    state.save_enrollment(&response.certificate_pem, &response.ca_pem, &config)?;
    Ok(config)
}

async fn request_certificate(
    hub: &HubUrl,
    tls_config: rustls::ClientConfig,
    opts: &EnrollOptions,
    csr_pem: &str,
) -> Result<EnrollResponse> {
    let peer = hub.endpoint.origin().ascii_serialization();
    let map_err = |e: reqwest::Error| -> Error {
        if let Some(tls_error) = tls::find_rustls_error(&e) {
            return Error::Tls {
                peer: peer.clone(),
                source: tls_error.clone(),
            };
        }
        if e.is_timeout() {
            return Error::Timeout {
                what: "enrolment request",
                secs: opts.limits.enroll_timeout.as_secs(),
            };
        }
        // Without the URL: it is ours and already known; keeps messages short.
        Error::Http(describe_chain(&e.without_url()))
    };
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls_config)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(opts.limits.connect_timeout)
        .timeout(opts.limits.enroll_timeout)
        .user_agent(concat!("palisade-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(map_err)?;
    let body = EnrollRequest {
        claim_code: &opts.claim_code.0,
        csr_pem,
    };
    let mut response = client
        .post(hub.endpoint.clone())
        .json(&body)
        .send()
        .await
        .map_err(map_err)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Bounded read of the body, whatever the status.
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(map_err)? {
        if bytes.len() + chunk.len() > opts.limits.enroll_response_bytes {
            return Err(Error::BadResponse(format!(
                "larger than {} bytes",
                opts.limits.enroll_response_bytes
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    match status {
        201 => serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadResponse(format!("not the expected JSON: {e}"))),
        403 => Err(Error::ClaimRejected),
        400 => Err(Error::CsrRejected(short_message(&bytes))),
        429 => Err(Error::Throttled {
            retry_after_secs: retry_after,
        }),
        other => Err(Error::UnexpectedStatus { status: other }),
    }
}

/// A short, printable summary of an error body from the hub (its `error` or `message`
/// field when it is JSON).
fn short_message(bytes: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            ["error", "message", "detail"]
                .iter()
                .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_owned))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    let clean: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if clean.is_empty() {
        "no details".into()
    } else {
        clean
    }
}

fn describe_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut current = e.source();
    while let Some(s) = current {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_url_must_be_https_without_credentials() {
        let hub = parse_hub_url("https://hub.example:8443/").expect("valid");
        assert_eq!(
            hub.endpoint.as_str(),
            "https://hub.example:8443/api/v1/devices/enroll"
        );
        assert_eq!(hub.host, "hub.example");
        let hub = parse_hub_url("https://127.0.0.1:8443/base").expect("valid");
        assert_eq!(
            hub.endpoint.as_str(),
            "https://127.0.0.1:8443/base/api/v1/devices/enroll"
        );
        for bad in [
            "http://hub.example",
            "https://user:pw@hub.example",
            "https://hub.example/?x=1",
            "mqtt://hub.example",
            "hub.example",
        ] {
            assert!(parse_hub_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn key_and_csr_are_pem() {
        let (key, csr) = generate_key_and_csr().expect("key");
        assert!(key.contains("BEGIN PRIVATE KEY"));
        assert!(csr.contains("BEGIN CERTIFICATE REQUEST"));
        assert!(format!("{:?}", ClaimCode::new("SECRET").expect("code")).contains('…'));
        assert!(!format!("{:?}", ClaimCode::new("SECRET").expect("code")).contains("SECRET"));
    }
}
