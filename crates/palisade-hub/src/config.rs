//! The hub's one typed configuration: TOML file, then `PALISADE_*` environment
//! variables, then command-line flags, each overriding the one before. Secrets may be
//! given as files (`*_file`) and are never printed. `check` lists every problem at once.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Bounds on every network input (DESIGN.md invariant 4). One place, documented in
/// `docs/operations.md`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Concurrent HTTPS connections; more wait in the kernel backlog.
    pub max_connections: usize,
    /// Seconds a client has to finish the TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a request may take before the hub answers 408/503.
    pub request_timeout_secs: u64,
    /// Seconds an HTTPS connection (HTTP/1.1 keep-alive or HTTP/2) may stay without
    /// any traffic before the hub closes it, so idle connections cannot hold every slot.
    pub http_idle_timeout_secs: u64,
    /// Sign-in, setup and recovery attempts per source address per minute.
    pub auth_attempts_per_minute_per_source: u32,
    /// Password hashes computed at once (each takes ~19 MiB and one core).
    pub hashing_concurrency: usize,
    /// Seconds a request waits for a hashing slot before it is refused with 503.
    pub hashing_queue_timeout_secs: u64,
    /// A session ends after this many minutes without a request.
    pub session_idle_minutes: i64,
    /// A session ends this many hours after sign-in, whatever its use.
    pub session_absolute_hours: i64,
    /// Concurrent device (MQTT) connections.
    pub mqtt_max_connections: usize,
    /// Largest MQTT packet accepted from a device, in bytes.
    pub mqtt_max_packet_bytes: usize,
    /// Longest keep-alive a device may ask for, in seconds.
    pub mqtt_keep_alive_max_secs: u64,
    /// Messages a device may publish per minute; more are refused (v5: PUBACK 0x97 quota
    /// exceeded; 3.1.1: the connection is closed), RES-2.
    pub mqtt_publishes_per_minute: u32,
    /// Topic filters in one SUBSCRIBE.
    pub mqtt_topics_per_subscribe: usize,
    /// QoS 1 messages from one connection waiting for storage before it is read no further.
    pub mqtt_inflight: usize,
    /// Telemetry messages stored per transaction (group commit).
    pub telemetry_batch_max: usize,
    /// Vulnerability reports accepted from one source address (IPv6: its /64) per hour.
    pub reports_per_hour_per_source: u32,
    /// Vulnerability reports accepted from everyone together per hour (bounds storage
    /// and outgoing mail under an address-spraying flood).
    pub reports_per_hour: u32,
    /// Messages a reporter may add to one report per hour through its status link.
    pub report_replies_per_hour: u32,
    /// Lifetime of a device certificate, in seconds (default 30 days, AUTH-10); agents
    /// renew with a third of it left, and the hub accepts a renewal once half has passed.
    pub device_cert_lifetime_secs: i64,
    /// Longest MQTT session expiry a device may ask for, in seconds (v3.1.1 persistent
    /// sessions get exactly this); 0 turns persistent sessions off.
    pub mqtt_session_expiry_max_secs: u64,
    /// Lifetime of the TUF timestamp metadata the hub signs, in seconds (short, so a
    /// frozen hub is noticed; re-signed when half has passed).
    pub tuf_timestamp_expiry_secs: i64,
    /// Lifetime of the TUF snapshot metadata the hub signs, in seconds.
    pub tuf_snapshot_expiry_secs: i64,
    /// Largest release image accepted, in bytes.
    pub max_image_bytes: u64,
    /// Seconds an image or metadata upload may go without receiving a byte before the
    /// hub answers 408 and closes it (these routes are exempt from
    /// `request_timeout_secs`, so a slow link can upload a large image, but a stalled
    /// or slow-loris upload is still cut off).
    pub upload_idle_timeout_secs: u64,
    /// Seconds one image or metadata upload may take in total.
    pub upload_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_connections: 1024,
            tls_handshake_timeout_secs: 10,
            request_timeout_secs: 30,
            http_idle_timeout_secs: 120,
            auth_attempts_per_minute_per_source: 20,
            hashing_concurrency: 2,
            hashing_queue_timeout_secs: 10,
            session_idle_minutes: 30,
            session_absolute_hours: 12,
            mqtt_max_connections: 100_000,
            mqtt_max_packet_bytes: 64 * 1024,
            mqtt_keep_alive_max_secs: 600,
            mqtt_publishes_per_minute: 600,
            mqtt_topics_per_subscribe: 8,
            mqtt_inflight: 32,
            telemetry_batch_max: 512,
            reports_per_hour_per_source: 5,
            reports_per_hour: 60,
            report_replies_per_hour: 10,
            device_cert_lifetime_secs: 30 * 86_400,
            mqtt_session_expiry_max_secs: 7 * 86_400,
            tuf_timestamp_expiry_secs: 86_400,
            tuf_snapshot_expiry_secs: 7 * 86_400,
            max_image_bytes: 2 * 1024 * 1024 * 1024,
            upload_idle_timeout_secs: 60,
            upload_timeout_secs: 6 * 3600,
        }
    }
}

/// `[retention]`: when the retention job runs and the periods an operator may set
/// (DATA-2). Every other period is fixed in `privacy::inventory::RETENTION`, the one
/// table the job and the published inventory both read.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Minutes between two runs of the retention job.
    pub interval_minutes: u64,
    /// Days telemetry readings are kept when their field declares no period.
    pub telemetry_days: u32,
    /// Days audit log entries are kept; at least [`AUDIT_MINIMUM_DAYS`] (the security
    /// record the operator must be able to show).
    pub audit_days: u32,
    /// Rows removed per statement, so a run never holds a long write lock on ingest.
    pub batch_rows: u32,
    /// Milliseconds the job pauses between two batches.
    pub pause_ms: u64,
}

/// The shortest audit retention the hub accepts: one year.
pub const AUDIT_MINIMUM_DAYS: u32 = 365;

impl Default for Retention {
    fn default() -> Self {
        Self {
            interval_minutes: 60,
            telemetry_days: crate::privacy::inventory::TELEMETRY_RETENTION_DAYS,
            audit_days: 730,
            batch_rows: 1000,
            pause_ms: 20,
        }
    }
}

fn check_retention(r: &Retention, problems: &mut Vec<Problem>) {
    let mut bad = |ok: bool, message: String| {
        if !ok {
            problems.push(Problem {
                key: "retention",
                message,
            });
        }
    };
    bad(
        (1..=7 * 24 * 60).contains(&r.interval_minutes),
        "interval_minutes must be between 1 and 10080 (a week)".into(),
    );
    bad(
        (1..=3650).contains(&r.telemetry_days),
        "telemetry_days must be between 1 and 3650".into(),
    );
    bad(
        (AUDIT_MINIMUM_DAYS..=3650).contains(&r.audit_days),
        format!("audit_days must be between {AUDIT_MINIMUM_DAYS} (the security record) and 3650"),
    );
    bad(
        (1..=100_000).contains(&r.batch_rows),
        "batch_rows must be between 1 and 100000".into(),
    );
    bad(
        r.pause_ms <= 10_000,
        "pause_ms must be at most 10000".into(),
    );
}

/// `[disclosure]`: the vulnerability disclosure policy (VULN-1, VULN-2, VULN-3). The
/// defaults are a complete, safe policy: the hub's own report page is always a point
/// of contact, so nothing has to be configured for reports to reach the vendor.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Disclosure {
    /// An e-mail address for reports, published in security.txt and on `/security`,
    /// and told of each new report. Optional: the report form is always a contact.
    pub contact_email: Option<String>,
    /// Days within which a new report is acknowledged.
    pub acknowledge_days: i64,
    /// Longest gap, in days, between status updates to the reporter until resolved.
    pub update_days: i64,
    /// Days from receipt to a fix, by CVSS severity (unscored reports count as critical).
    pub fix_days_critical: i64,
    pub fix_days_high: i64,
    pub fix_days_medium: i64,
    pub fix_days_low: i64,
    /// security.txt `Preferred-Languages` (comma-separated language tags).
    pub preferred_languages: String,
    /// security.txt is valid this many days ahead; `Expires` is recomputed every day,
    /// so it never lapses while the hub runs (RFC 9116 §2.5.5: less than a year).
    pub security_txt_days: i64,
    /// An ASCII-armoured OpenPGP secret key (mode 0600) that signs security.txt
    /// (RFC 9116 §2.3); without one the file is served unsigned.
    pub security_txt_openpgp_key: Option<PathBuf>,
    /// A file (mode 0600) with that key's passphrase; `PALISADE_SECURITY_TXT_KEY_PASSPHRASE`
    /// wins over it. Never the passphrase itself in this file.
    pub security_txt_openpgp_passphrase_file: Option<PathBuf>,
}

impl Default for Disclosure {
    fn default() -> Self {
        Self {
            contact_email: None,
            acknowledge_days: 3,
            update_days: 14,
            fix_days_critical: 14,
            fix_days_high: 30,
            fix_days_medium: 90,
            fix_days_low: 180,
            preferred_languages: "en".into(),
            security_txt_days: 180,
            security_txt_openpgp_key: None,
            security_txt_openpgp_passphrase_file: None,
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server cannot.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: allowed only to a relay on this machine (loopback).
    None,
}

/// `[smtp]` as written in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpFile {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub security: Option<SmtpSecurity>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: Option<String>,
    /// Extra CA certificate (PEM) for a relay with a private certificate.
    pub ca_file: Option<PathBuf>,
}

/// A validated SMTP relay. The password never appears in `Debug` output.
#[derive(Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub credentials: Option<(String, String)>,
    pub from: String,
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// The configuration file as written (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub mqtt_listen: Option<String>,
    pub database_url: Option<String>,
    pub database_url_file: Option<PathBuf>,
    pub public_url: Option<String>,
    pub hostnames: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub product_name: Option<String>,
    pub limits: Option<Limits>,
    pub smtp: Option<SmtpFile>,
    pub disclosure: Option<Disclosure>,
    pub retention: Option<Retention>,
    /// An operator-supplied secrets key file (mode 0600) instead of `DATA_DIR/secrets.key`.
    pub secrets_key_file: Option<PathBuf>,
}

/// Values given on the command line (they win over file and environment).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub mqtt_listen: Option<String>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// Where the database lives.
#[derive(Clone, PartialEq)]
pub enum DatabaseLocation {
    /// The embedded SQLite file inside the data directory.
    Embedded,
    /// A URL (`postgres://…` or `sqlite:…`); may contain a password, so never printed.
    Url(String),
}

impl std::fmt::Debug for DatabaseLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded => f.write_str("Embedded"),
            Self::Url(url) => write!(f, "Url({})", redact_url(url)),
        }
    }
}

/// A database URL with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The effective, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Where devices connect (MQTT over mutual TLS).
    pub mqtt_listen: SocketAddr,
    pub database: DatabaseLocation,
    /// Base URL used in e-mailed links, e.g. `https://hub.example.com:8443`.
    pub public_url: String,
    /// Extra DNS names / IP addresses for the generated server certificate.
    pub hostnames: Vec<String>,
    /// Operator-supplied certificate chain and key (both or neither).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Product name, used as the TOTP issuer and as a password context word.
    pub product_name: String,
    pub limits: Limits,
    /// Outgoing mail relay; without one, mail is written to `DATA_DIR/mail/`.
    pub smtp: Option<Smtp>,
    /// The vulnerability disclosure policy (security.txt, `/security`, triage deadlines).
    pub disclosure: Disclosure,
    /// The retention job's schedule and the operator-set periods (DATA-2).
    pub retention: Retention,
    /// The key file that seals secrets in the database (STOR-3); `None` means
    /// `DATA_DIR/secrets.key`, created at first start.
    pub secrets_key_file: Option<PathBuf>,
    /// The loaded OpenPGP key that signs security.txt, if one is configured (checked
    /// at load: private file, parses, unlocks, signs, not expired).
    pub security_txt_key: Option<std::sync::Arc<crate::vuln::openpgp::SecurityTxtKey>>,
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_MQTT_LISTEN: &str = "127.0.0.1:8883";
pub const DEFAULT_DATA_DIR: &str = "./palisade-data";

impl Config {
    /// Build the configuration from an optional TOML file, the given environment
    /// (`PALISADE_*` variables) and flags. Returns every problem found, not just the first.
    pub fn load(
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut file = FileConfig::default();
        let config_path = overrides
            .config_file
            .clone()
            .or_else(|| env("PALISADE_CONFIG").map(PathBuf::from));
        if let Some(path) = &config_path {
            match std::fs::read_to_string(path) {
                Ok(text) => match toml::from_str::<FileConfig>(&text) {
                    Ok(parsed) => file = parsed,
                    Err(e) => problems.push(Problem {
                        key: "config",
                        message: format!("{}: {}", path.display(), e.message()),
                    }),
                },
                Err(e) => problems.push(Problem {
                    key: "config",
                    message: format!("cannot read {}: {e}", path.display()),
                }),
            }
        }
        let pick = |flag: Option<String>, var: &str, from_file: Option<String>| {
            flag.or_else(|| env(var)).or(from_file)
        };
        let data_dir = PathBuf::from(
            pick(
                overrides.data_dir.as_ref().map(|p| p.display().to_string()),
                "PALISADE_DATA_DIR",
                file.data_dir.as_ref().map(|p| p.display().to_string()),
            )
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
        );
        let listen_text = pick(
            overrides.listen.clone(),
            "PALISADE_LISTEN",
            file.listen.clone(),
        )
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(Problem {
                key: "listen",
                message: format!("{listen_text:?} is not an address:port such as 127.0.0.1:8443"),
            });
            SocketAddr::from(([127, 0, 0, 1], 8443))
        });

        let mqtt_text = pick(
            overrides.mqtt_listen.clone(),
            "PALISADE_MQTT_LISTEN",
            file.mqtt_listen.clone(),
        )
        .unwrap_or_else(|| DEFAULT_MQTT_LISTEN.into());
        let mqtt_listen = mqtt_text.parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(Problem {
                key: "mqtt_listen",
                message: format!("{mqtt_text:?} is not an address:port such as 127.0.0.1:8883"),
            });
            SocketAddr::from(([127, 0, 0, 1], 8883))
        });

        let url_file = env("PALISADE_DATABASE_URL_FILE")
            .map(PathBuf::from)
            .or(file.database_url_file.clone());
        let mut database_url = pick(
            overrides.database_url.clone(),
            "PALISADE_DATABASE_URL",
            file.database_url.clone(),
        );
        if database_url.is_none()
            && let Some(path) = url_file
        {
            match read_secret_file(&path) {
                Ok(url) => database_url = Some(url),
                Err(message) => problems.push(Problem {
                    key: "database_url_file",
                    message,
                }),
            }
        }
        let database = match database_url {
            None => DatabaseLocation::Embedded,
            Some(url) => {
                check_database_url(&url, &mut problems);
                DatabaseLocation::Url(url)
            }
        };

        let public_url = pick(
            overrides.public_url.clone(),
            "PALISADE_PUBLIC_URL",
            file.public_url.clone(),
        );
        if public_url.is_none() && listen.ip().is_unspecified() {
            problems.push(Problem {
                key: "public_url",
                message: format!(
                    "listening on {listen} (all addresses): set public_url to the https:// address clients use, for links in e-mails"
                ),
            });
        }
        let public_url = public_url.unwrap_or_else(|| format!("https://{listen}"));
        if !public_url.starts_with("https://") {
            problems.push(Problem {
                key: "public_url",
                message: format!(
                    "{public_url:?} must start with https:// (there is no plaintext listener)"
                ),
            });
        }
        let public_url = public_url.trim_end_matches('/').to_owned();

        let tls_cert = overrides
            .tls_cert
            .clone()
            .or_else(|| env("PALISADE_TLS_CERT").map(PathBuf::from))
            .or(file.tls_cert.clone());
        let tls_key = overrides
            .tls_key
            .clone()
            .or_else(|| env("PALISADE_TLS_KEY").map(PathBuf::from))
            .or(file.tls_key.clone());
        match (&tls_cert, &tls_key) {
            (Some(_), None) | (None, Some(_)) => problems.push(Problem {
                key: "tls_cert/tls_key",
                message: "give both a certificate and its private key, or neither (the hub then uses its own CA)".into(),
            }),
            (Some(cert), Some(key)) => {
                for (key_name, path) in [("tls_cert", cert), ("tls_key", key)] {
                    if !path.is_file() {
                        problems.push(Problem {
                            key: key_name,
                            message: format!("{} does not exist or is not a file", path.display()),
                        });
                    }
                }
                if let Some(message) = world_readable(key) {
                    problems.push(Problem {
                        key: "tls_key",
                        message,
                    });
                }
            }
            (None, None) => {}
        }

        let limits = file.limits.clone().unwrap_or_default();
        check_limits(&limits, &mut problems);
        let mut hostnames = file.hostnames.clone().unwrap_or_default();
        for name in &hostnames {
            if name.is_empty()
                || name.len() > 253
                || name.contains(['/', ' ', ':']) && name.parse::<std::net::IpAddr>().is_err()
            {
                problems.push(Problem {
                    key: "hostnames",
                    message: format!("{name:?} is not a host name or IP address"),
                });
            }
        }
        hostnames.dedup();
        let product_name = file
            .product_name
            .clone()
            .unwrap_or_else(|| "Palisade".into());

        let smtp = file
            .smtp
            .as_ref()
            .and_then(|smtp| check_smtp(smtp, env, &mut problems));

        let mut disclosure = file.disclosure.clone().unwrap_or_default();
        check_disclosure(&disclosure, &mut problems);
        // Publish the address normalised (trimmed, lower case), as it was validated.
        disclosure.contact_email = disclosure
            .contact_email
            .map(|typed| crate::ids::Email::parse(&typed).map_or(typed, |e| e.as_str().to_owned()));
        let security_txt_key = load_security_txt_key(&disclosure, env, &mut problems);
        let retention = file.retention.clone().unwrap_or_default();
        check_retention(&retention, &mut problems);
        let secrets_key_file = env("PALISADE_SECRETS_KEY_FILE")
            .map(PathBuf::from)
            .or(file.secrets_key_file.clone());
        if let Some(path) = &secrets_key_file {
            // An operator-supplied key is never created for them: a missing one is an error.
            if !path.is_file() {
                problems.push(Problem {
                    key: "secrets_key_file",
                    message: format!("{} does not exist or is not a file", path.display()),
                });
            } else if let Some(message) = world_readable(path) {
                problems.push(Problem {
                    key: "secrets_key_file",
                    message,
                });
            }
        }

        if problems.is_empty() {
            Ok(Config {
                data_dir,
                listen,
                mqtt_listen,
                database,
                public_url,
                hostnames,
                tls_cert,
                tls_key,
                product_name,
                limits,
                smtp,
                disclosure,
                retention,
                secrets_key_file,
                security_txt_key,
            })
        } else {
            Err(problems)
        }
    }

    /// A configuration for tests and embedding: data in `data_dir`, listening on
    /// `127.0.0.1:0`, everything else at its default.
    pub fn for_data_dir(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: DatabaseLocation::Embedded,
            public_url: "https://127.0.0.1".into(),
            hostnames: Vec::new(),
            tls_cert: None,
            tls_key: None,
            product_name: "Palisade".into(),
            limits: Limits::default(),
            smtp: None,
            disclosure: Disclosure::default(),
            retention: Retention::default(),
            secrets_key_file: None,
            security_txt_key: None,
        }
    }

    /// The SQLite file used when no database URL is configured.
    pub fn embedded_database_path(&self) -> PathBuf {
        self.data_dir.join("palisade.sqlite3")
    }
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Some(message) = world_readable(path) {
        return Err(message);
    }
    Ok(text.trim().to_owned())
}

/// A complaint if a secret file can be read by other users.
fn world_readable(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} is readable by other users (mode {:o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        )
    })
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_smtp(
    smtp: &SmtpFile,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<Smtp> {
    let mut bad = |message: String| {
        problems.push(Problem {
            key: "smtp",
            message,
        })
    };
    let Some(host) = smtp.host.clone().filter(|h| !h.is_empty()) else {
        bad("host is missing".into());
        return None;
    };
    let security = smtp.security.unwrap_or_default();
    if security == SmtpSecurity::None && !is_loopback_host(&host) {
        bad(format!(
            "security = \"none\" sends mail unencrypted; it is allowed only to a relay on this machine, not {host:?}"
        ));
    }
    let from = smtp.from.clone().unwrap_or_default();
    if from.parse::<lettre::message::Mailbox>().is_err() {
        bad(format!(
            "from = {from:?} is not a mailbox such as \"Palisade <hub@example.com>\""
        ));
    }
    let password = match (&smtp.password_file, env("PALISADE_SMTP_PASSWORD")) {
        (_, Some(p)) => Some(p),
        (Some(path), None) => match read_secret_file(path) {
            Ok(p) => Some(p),
            Err(message) => {
                bad(format!("password_file: {message}"));
                None
            }
        },
        (None, None) => None,
    };
    let credentials = match (smtp.username.clone(), password) {
        (Some(user), Some(pass)) => Some((user, pass)),
        (None, None) => None,
        (Some(_), None) => {
            bad("username is set but no password (password_file or PALISADE_SMTP_PASSWORD)".into());
            None
        }
        (None, Some(_)) => {
            bad("a password is given but no username".into());
            None
        }
    };
    if credentials.is_some() && security == SmtpSecurity::None {
        bad("a password is never sent over an unencrypted connection: use starttls or tls".into());
    }
    if let Some(ca) = &smtp.ca_file
        && !ca.is_file()
    {
        bad(format!("ca_file {} does not exist", ca.display()));
    }
    let port = smtp.port.unwrap_or(match security {
        SmtpSecurity::Tls => 465,
        SmtpSecurity::Starttls => 587,
        SmtpSecurity::None => 25,
    });
    Some(Smtp {
        host,
        port,
        security,
        credentials,
        from,
        ca_file: smtp.ca_file.clone(),
    })
}

fn check_database_url(url: &str, problems: &mut Vec<Problem>) {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        let authority = url
            .split("://")
            .nth(1)
            .map(|rest| rest.split(['/', '?']).next().unwrap_or(""))
            .map(|a| a.rsplit_once('@').map_or(a, |(_, h)| h))
            .unwrap_or("");
        let host = if authority.starts_with('[') {
            authority
                .split(']')
                .next()
                .map(|h| format!("{h}]"))
                .unwrap_or_default()
        } else {
            authority.split(':').next().unwrap_or("").to_owned()
        };
        let host = host.as_str();
        let local = host.is_empty() || is_loopback_host(host) || host.starts_with("%2F");
        let encrypted = lower.contains("sslmode=require") || lower.contains("sslmode=verify");
        if !(local || encrypted) {
            problems.push(Problem {
                key: "database_url",
                message: format!(
                    "PostgreSQL on {host:?} is not on this machine: add sslmode=verify-full (or require) so the connection is encrypted"
                ),
            });
        }
    } else if !lower.starts_with("sqlite:") {
        problems.push(Problem {
            key: "database_url",
            message: format!("{} is neither postgres://… nor sqlite:…", redact_url(url)),
        });
    }
}

fn check_disclosure(d: &Disclosure, problems: &mut Vec<Problem>) {
    let mut bad = |ok: bool, message: String| {
        if !ok {
            problems.push(Problem {
                key: "disclosure",
                message,
            });
        }
    };
    if let Some(email) = &d.contact_email {
        bad(
            crate::ids::Email::parse(email).is_ok(),
            format!("contact_email = {email:?} is not an e-mail address"),
        );
    }
    bad(
        (1..=30).contains(&d.acknowledge_days),
        "acknowledge_days must be between 1 and 30".into(),
    );
    bad(
        (1..=90).contains(&d.update_days),
        "update_days must be between 1 and 90".into(),
    );
    let fix = [
        d.fix_days_critical,
        d.fix_days_high,
        d.fix_days_medium,
        d.fix_days_low,
    ];
    bad(
        fix.iter().all(|n| (1..=365).contains(n)),
        "fix_days_* must each be between 1 and 365".into(),
    );
    bad(
        fix.windows(2).all(|w| w[0] <= w[1]),
        "fix_days_critical <= fix_days_high <= fix_days_medium <= fix_days_low: a more severe issue never gets longer".into(),
    );
    bad(
        !d.preferred_languages.trim().is_empty()
            && d.preferred_languages.len() <= 100
            && d.preferred_languages.split(',').all(|t| {
                let t = t.trim();
                !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }),
        format!(
            "preferred_languages = {:?} must be language tags separated by commas, such as \"en, de\"",
            d.preferred_languages
        ),
    );
    bad(
        (7..=364).contains(&d.security_txt_days),
        "security_txt_days must be between 7 and 364 (RFC 9116: less than a year)".into(),
    );
}

/// Load the security.txt signing key, if configured (fail closed: a configured key that
/// cannot sign is a problem, never a silent fall-back to an unsigned file).
fn load_security_txt_key(
    d: &Disclosure,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<std::sync::Arc<crate::vuln::openpgp::SecurityTxtKey>> {
    let mut bad = |message: String| {
        problems.push(Problem {
            key: "disclosure.security_txt_openpgp_key",
            message,
        })
    };
    let Some(path) = &d.security_txt_openpgp_key else {
        if d.security_txt_openpgp_passphrase_file.is_some() {
            bad(
                "security_txt_openpgp_passphrase_file is set but no security_txt_openpgp_key"
                    .into(),
            );
        }
        return None;
    };
    let passphrase = match (
        env("PALISADE_SECURITY_TXT_KEY_PASSPHRASE"),
        &d.security_txt_openpgp_passphrase_file,
    ) {
        (Some(p), _) => Some(zeroize::Zeroizing::new(p)),
        (None, Some(file)) => match read_secret_file(file) {
            Ok(p) => Some(zeroize::Zeroizing::new(p)),
            Err(message) => {
                bad(format!("passphrase file: {message}"));
                return None;
            }
        },
        (None, None) => None,
    };
    match crate::vuln::openpgp::SecurityTxtKey::load(
        path,
        passphrase.as_ref().map(|p| p.as_str()),
        crate::db::now(),
    ) {
        Ok(key) => Some(std::sync::Arc::new(key)),
        Err(e) => {
            bad(e
                .to_string()
                .trim_start_matches("configuration: ")
                .to_owned());
            None
        }
    }
}

fn check_limits(l: &Limits, problems: &mut Vec<Problem>) {
    let mut bad = |ok: bool, message: &str| {
        if !ok {
            problems.push(Problem {
                key: "limits",
                message: message.into(),
            });
        }
    };
    bad(
        (1024..=16 * 1024 * 1024).contains(&l.max_body_bytes),
        "max_body_bytes must be between 1 KiB and 16 MiB",
    );
    bad(
        (1..=1_000_000).contains(&l.max_connections),
        "max_connections must be between 1 and 1000000",
    );
    bad(
        (1..=120).contains(&l.tls_handshake_timeout_secs),
        "tls_handshake_timeout_secs must be between 1 and 120",
    );
    bad(
        (1..=600).contains(&l.request_timeout_secs),
        "request_timeout_secs must be between 1 and 600",
    );
    bad(
        (4..=7 * 86_400).contains(&l.tuf_timestamp_expiry_secs),
        "tuf_timestamp_expiry_secs must be between 4 seconds and 7 days",
    );
    bad(
        (l.tuf_timestamp_expiry_secs..=366 * 86_400).contains(&l.tuf_snapshot_expiry_secs),
        "tuf_snapshot_expiry_secs must be at least tuf_timestamp_expiry_secs and at most a year",
    );
    bad(
        (1024..=64 * 1024 * 1024 * 1024).contains(&l.max_image_bytes),
        "max_image_bytes must be between 1 KiB and 64 GiB",
    );
    bad(
        (1..=600).contains(&l.upload_idle_timeout_secs),
        "upload_idle_timeout_secs must be between 1 and 600",
    );
    bad(
        (1..=7 * 86_400).contains(&l.upload_timeout_secs),
        "upload_timeout_secs must be between 1 second and 7 days",
    );
    bad(
        (1..=3600).contains(&l.http_idle_timeout_secs),
        "http_idle_timeout_secs must be between 1 and 3600",
    );
    bad(
        (1..=1000).contains(&l.auth_attempts_per_minute_per_source),
        "auth_attempts_per_minute_per_source must be between 1 and 1000",
    );
    bad(
        (1..=64).contains(&l.hashing_concurrency),
        "hashing_concurrency must be between 1 and 64",
    );
    bad(
        (1..=120).contains(&l.hashing_queue_timeout_secs),
        "hashing_queue_timeout_secs must be between 1 and 120",
    );
    bad(
        (1..=24 * 60).contains(&l.session_idle_minutes),
        "session_idle_minutes must be between 1 and 1440",
    );
    bad(
        (1..=10_000_000).contains(&l.mqtt_max_connections),
        "mqtt_max_connections must be between 1 and 10000000",
    );
    bad(
        (1024..=16 * 1024 * 1024).contains(&l.mqtt_max_packet_bytes),
        "mqtt_max_packet_bytes must be between 1 KiB and 16 MiB",
    );
    bad(
        (10..=3600).contains(&l.mqtt_keep_alive_max_secs),
        "mqtt_keep_alive_max_secs must be between 10 and 3600",
    );
    bad(
        (1..=1_000_000).contains(&l.mqtt_publishes_per_minute),
        "mqtt_publishes_per_minute must be between 1 and 1000000",
    );
    bad(
        (1..=100).contains(&l.mqtt_topics_per_subscribe),
        "mqtt_topics_per_subscribe must be between 1 and 100",
    );
    bad(
        (1..=65_535).contains(&l.mqtt_inflight),
        "mqtt_inflight must be between 1 and 65535",
    );
    bad(
        (1..=100_000).contains(&l.telemetry_batch_max),
        "telemetry_batch_max must be between 1 and 100000",
    );
    bad(
        (60..=397 * 86_400).contains(&l.device_cert_lifetime_secs),
        "device_cert_lifetime_secs must be between 60 and 34300800 (397 days)",
    );
    bad(
        l.mqtt_session_expiry_max_secs <= 30 * 86_400,
        "mqtt_session_expiry_max_secs must be at most 2592000 (30 days)",
    );
    bad(
        (1..=24 * 30).contains(&l.session_absolute_hours),
        "session_absolute_hours must be between 1 and 720",
    );
    bad(
        (1..=1000).contains(&l.reports_per_hour_per_source),
        "reports_per_hour_per_source must be between 1 and 1000",
    );
    bad(
        (1..=100_000).contains(&l.reports_per_hour),
        "reports_per_hour must be between 1 and 100000",
    );
    bad(
        (1..=1000).contains(&l.report_replies_per_hour),
        "report_replies_per_hour must be between 1 and 1000",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_loopback_https_and_embedded() {
        let config = Config::load(&Overrides::default(), &no_env).expect("defaults are valid");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.database, DatabaseLocation::Embedded);
        assert_eq!(config.public_url, "https://127.0.0.1:8443");
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("palisade.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1001\"\ndata_dir = \"/tmp/from-file\"\n",
        )
        .expect("write");
        let env = |k: &str| (k == "PALISADE_LISTEN").then(|| "127.0.0.1:1002".to_owned());
        let mut overrides = Overrides {
            config_file: Some(file),
            ..Overrides::default()
        };
        let config = Config::load(&overrides, &env).expect("valid");
        assert_eq!(config.listen.port(), 1002);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/from-file"));
        overrides.listen = Some("127.0.0.1:1003".into());
        assert_eq!(
            Config::load(&overrides, &env).expect("valid").listen.port(),
            1003
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let overrides = Overrides {
            listen: Some("not-an-address".into()),
            public_url: Some("http://plain.example".into()),
            tls_cert: Some("/nonexistent.pem".into()),
            database_url: Some("postgres://u:secretpw@db.example.com/palisade".into()),
            ..Overrides::default()
        };
        let problems = Config::load(&overrides, &no_env).expect_err("invalid");
        let keys: Vec<_> = problems.iter().map(|p| p.key).collect();
        assert!(keys.contains(&"listen"), "{problems:?}");
        assert!(keys.contains(&"public_url"), "{problems:?}");
        assert!(keys.contains(&"tls_cert/tls_key"), "{problems:?}");
        assert!(keys.contains(&"database_url"), "{problems:?}");
        let text = format!("{problems:?}");
        assert!(!text.contains("secretpw"), "secrets never printed: {text}");
    }

    #[test]
    fn stor3_an_operator_secrets_key_must_exist_and_be_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("secrets.key");
        let file = dir.path().join("palisade.toml");
        std::fs::write(
            &file,
            format!("secrets_key_file = {:?}\n", key.display().to_string()),
        )
        .expect("write");
        let overrides = Overrides {
            config_file: Some(file.clone()),
            ..Overrides::default()
        };
        let problems = Config::load(&overrides, &no_env).expect_err("missing key file");
        assert!(
            problems.iter().any(|p| p.key == "secrets_key_file"),
            "{problems:?}"
        );
        std::fs::write(&key, "palisade-secrets-key-v1 0011aabb x\n").expect("write");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
        let problems = Config::load(&overrides, &no_env).expect_err("readable key file");
        assert!(
            problems
                .iter()
                .any(|p| p.key == "secrets_key_file" && p.message.contains("readable")),
            "{problems:?}"
        );
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let config = Config::load(&overrides, &no_env).expect("private key file accepted");
        assert_eq!(config.secrets_key_file, Some(key));
    }

    #[test]
    fn smtp_fails_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("palisade.toml");
        std::fs::write(
            &file,
            "[smtp]\nhost = \"mail.example.com\"\nsecurity = \"none\"\nusername = \"hub\"\nfrom = \"not a mailbox\"\n",
        )
        .expect("write");
        let overrides = Overrides {
            config_file: Some(file.clone()),
            ..Overrides::default()
        };
        let env = |k: &str| (k == "PALISADE_SMTP_PASSWORD").then(|| "s3cret-smtp".to_owned());
        let problems = Config::load(&overrides, &env).expect_err("unsafe smtp refused");
        let text = format!("{problems:?}");
        assert!(text.contains("unencrypted"), "{text}");
        assert!(text.contains("not a mailbox"), "{text}");
        assert!(text.contains("never sent over an unencrypted"), "{text}");
        assert!(!text.contains("s3cret-smtp"), "{text}");
        std::fs::write(
            &file,
            "[smtp]\nhost = \"127.0.0.1\"\nport = 2525\nsecurity = \"none\"\nfrom = \"Hub <hub@example.org>\"\n",
        )
        .expect("write");
        let config = Config::load(&overrides, &no_env).expect("loopback relay allowed");
        let smtp = config.smtp.expect("smtp");
        assert_eq!((smtp.host.as_str(), smtp.port), ("127.0.0.1", 2525));
    }

    #[test]
    fn local_postgres_needs_no_tls_but_remote_does() {
        for (url, ok) in [
            ("postgres://u@127.0.0.1:5432/p", true),
            ("postgres://u@[::1]:5432/p", true),
            ("postgres://u@localhost/p", true),
            ("postgres://u@db.example.com/p", false),
            ("postgres://u@db.example.com/p?sslmode=verify-full", true),
        ] {
            let overrides = Overrides {
                database_url: Some(url.into()),
                ..Overrides::default()
            };
            assert_eq!(Config::load(&overrides, &no_env).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn listening_everywhere_needs_a_public_url() {
        let overrides = Overrides {
            listen: Some("0.0.0.0:8443".into()),
            ..Overrides::default()
        };
        assert!(Config::load(&overrides, &no_env).is_err());
        let overrides = Overrides {
            public_url: Some("https://hub.example.com".into()),
            ..overrides
        };
        assert!(Config::load(&overrides, &no_env).is_ok());
    }

    #[test]
    fn vuln1_disclosure_policy_is_validated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("palisade.toml");
        std::fs::write(
            &file,
            "[disclosure]\ncontact_email = \"not an address\"\nacknowledge_days = 0\nfix_days_critical = 200\nsecurity_txt_days = 400\npreferred_languages = \"en; <x>\"\n",
        )
        .expect("write");
        let overrides = Overrides {
            config_file: Some(file.clone()),
            ..Overrides::default()
        };
        let problems = Config::load(&overrides, &no_env).expect_err("bad policy refused");
        let text = format!("{problems:?}");
        for needle in [
            "contact_email",
            "acknowledge_days",
            "more severe",
            "security_txt_days",
            "preferred_languages",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        std::fs::write(
            &file,
            "[disclosure]\ncontact_email = \" Security@Example.com \"\nacknowledge_days = 5\n",
        )
        .expect("write");
        let config = Config::load(&overrides, &no_env).expect("valid policy");
        assert_eq!(config.disclosure.acknowledge_days, 5);
        assert_eq!(config.disclosure.update_days, 14, "default kept");
        assert_eq!(
            config.disclosure.contact_email.as_deref(),
            Some("security@example.com")
        );
    }

    #[test]
    fn redacts_database_password() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("sqlite:x.db"), "sqlite:x.db");
    }
}
