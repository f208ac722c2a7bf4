//! The Palisade device agent as a library.
//!
//! The agent runs on each device. It never listens on a socket: it only connects out,
//! and only over TLS with the hub's CA pinned.
//!
//! - [`enroll`]: generate the device key on the device, send a CSR with a claim code to
//!   the hub over HTTPS (pinned CA), save the issued certificate (ENC-2, ENC-3, AUTH-10).
//! - [`run`]: connect to the hub's MQTT server with the device certificate, publish
//!   telemetry from a durable on-disk [`queue`] (RES-1), execute [`commands`] with replay
//!   protection (ENC-4), reconnect with jittered exponential [`backoff`].
//! - [`renew`]: renew the device certificate over MQTT with a new key, before expiry.
//! - [`reset`]: factory reset: wipe the key and delete certificate, state and queue.
//! - [`tuf`]: the bare TUF client (`palisade-agent tuf`) for checking an update
//!   repository independently (UPD-2, UPD-4).
//! - [`update`]: automatic verified updates from the hub's offers: TUF-verified,
//!   resumable download, install into the inactive [`slots`] slot (or an install
//!   command), restart, health check, commit or roll back (UPD-2, UPD-3, UPD-5).
//!
//! - [`integrity`]: software integrity at start (INT-1): the slot image against the
//!   signed targets metadata, the configuration against a seal keyed from the device
//!   key; on a finding only an integrity alert is sent to the hub.
//!
//! Every size, count and timeout applied to network input is in [`limits::Limits`].
#![forbid(unsafe_code)]

pub mod backoff;
pub mod commands;
pub mod enroll;
pub mod fields;
pub mod fsutil;
pub mod integrity;
pub mod limits;
pub mod mqtt;
pub mod queue;
pub mod renew;
pub mod reset;
pub mod run;
pub mod slots;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod tuf;
pub mod update;

use std::path::PathBuf;

/// Everything that can go wrong in the agent library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "this device is already enrolled (device id {device_id}, state in {}); run `palisade-agent reset --state-dir {}` first to enrol it again",
        state_dir.display(),
        state_dir.display()
    )]
    AlreadyEnrolled {
        device_id: String,
        state_dir: PathBuf,
    },
    #[error(
        "this device is not enrolled (no agent.json in {}); run `palisade-agent enroll` first",
        .0.display()
    )]
    NotEnrolled(PathBuf),
    #[error("another palisade-agent process is using the state directory {}", .0.display())]
    Busy(PathBuf),
    #[error("invalid hub URL: {0}")]
    HubUrl(String),
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("TLS with {peer} failed: {source}{}", tls_hint(source))]
    Tls {
        peer: String,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot reach {peer}: {reason}")]
    Connect { peer: String, reason: String },
    #[error("{what} timed out after {secs} s")]
    Timeout { what: &'static str, secs: u64 },
    #[error("the hub refused the claim code (wrong, already used or expired)")]
    ClaimRejected,
    #[error("the hub rejected the certificate request: {0}")]
    CsrRejected(String),
    #[error("the hub is throttling enrolment attempts; try again later{}", retry_hint(*.retry_after_secs))]
    Throttled { retry_after_secs: Option<u64> },
    #[error("the hub answered enrolment with unexpected status {status}")]
    UnexpectedStatus { status: u16 },
    #[error("the hub's enrolment response is invalid: {0}")]
    BadResponse(String),
    #[error("HTTP request to the hub failed: {0}")]
    Http(String),
    #[error("MQTT: {0}")]
    Mqtt(String),
    #[error("the MQTT server refused the connection: {0}")]
    ConnectRefused(String),
    #[error("the MQTT connection was closed")]
    Closed,
    #[error("key generation failed: {0}")]
    Key(String),
    #[error("TUF {context}")]
    Tuf {
        context: String,
        #[source]
        source: Box<tough::error::Error>,
    },
    #[error("TUF: {0}")]
    TufRefused(String),
}

fn tls_hint(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            " (the server's certificate is not issued by the pinned hub CA)"
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => " (the server's certificate is not valid for this host name)",
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            " (the server's certificate has expired, or this device's clock is wrong)"
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            " (the server's certificate is not valid yet, or this device's clock is wrong)"
        }
        rustls::Error::AlertReceived(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::CertificateRevoked
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateRequired,
        ) => {
            " (the hub refused this device's certificate: revoked, expired, or issued by another hub)"
        }
        _ => "",
    }
}

fn retry_hint(secs: Option<u64>) -> String {
    secs.map(|s| format!(" (in {s} s)")).unwrap_or_default()
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            reason: reason.into(),
        }
    }

    /// The certificate problem, when this error is a refused server certificate.
    pub fn certificate_problem(&self) -> Option<&rustls::CertificateError> {
        match self {
            Self::Tls {
                source: rustls::Error::InvalidCertificate(problem),
                ..
            } => Some(problem),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Resolves once `shutdown` is true (or its sender is gone). The borrow of the watch
/// value ends inside, so the future stays `Send`.
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Current time as Unix seconds (0 if the clock is before 1970).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Current time as Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
