//! The Palisade hub as a library: configuration, storage, TLS server, accounts,
//! console, API and audit. `start` runs it; the `palisade` binary is a thin CLI on top.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod config;
pub mod db;
pub mod devices_lifecycle;
pub mod error;
pub mod ids;
pub mod mail;
pub mod mqtt;
pub mod pki;
pub mod privacy;
pub mod privileges;
pub mod retention;
pub mod secrets;
pub mod server;
pub mod telemetry;
pub mod updates;
pub mod vuln;
pub mod web;

use config::Config;
use db::Db;
use error::{Error, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

pub use error::Error as HubError;

/// A hub that is running.
pub struct RunningHub {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The device (MQTT over mutual TLS) address actually bound.
    pub mqtt_addr: SocketAddr,
    pub ca_cert_path: PathBuf,
    pub ca_fingerprint: String,
    /// Base64 SHA-256 of the server key's SubjectPublicKeyInfo.
    pub server_spki_sha256: String,
    /// The one-time setup code, when no administrator exists yet.
    pub setup_code: Option<String>,
    pub db: Db,
    pub state: web::AppState,
    pki: Arc<pki::Pki>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningHub {
    /// The console URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stop serving and wait for the background tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.db.close().await;
    }

    /// Renew the served certificates now if due (the hub also checks every
    /// [`CERTIFICATE_CHECK_INTERVAL`]); returns whether a new one is served.
    pub fn renew_certificates_if_due(&self) -> Result<bool> {
        pki::renew_if_due(&self.state.config, &self.pki)
    }

    /// The leaf certificate (DER) new console connections get.
    pub fn console_certificate_der(&self) -> Vec<u8> {
        self.pki.console_certificate.leaf_der()
    }

    /// Wait until the server task ends (it runs until shutdown).
    pub async fn wait(mut self) {
        if let Some(server) = self.tasks.first_mut() {
            let _ = server.await;
        }
    }
}

/// How often the running hub checks whether its server certificate needs renewing
/// (at `SERVER_RENEW_DAYS` before expiry) or the operator replaced theirs.
pub const CERTIFICATE_CHECK_INTERVAL: std::time::Duration =
    std::time::Duration::from_secs(6 * 3600);

/// Open the database for a configuration (creating the data directory), for CLI work.
pub async fn open_database(config: &Config) -> Result<Db> {
    pki::prepare_data_dir(&config.data_dir)?;
    Db::open(config).await
}

/// Start the hub: data directory, TLS material, database, setup code if needed,
/// HTTPS listener and background jobs.
pub async fn start(config: Config) -> Result<RunningHub> {
    if privileges::runs_as_root() {
        tracing::warn!("{}", privileges::ROOT_WARNING);
    }
    pki::prepare_data_dir(&config.data_dir)?;
    let pki = Arc::new(pki::load_or_create(&config)?);
    let delivery = mail::Delivery::from_config(&config)?;
    let db = Db::open(&config).await?;
    let updates = Arc::new(updates::repo::Repository::open(
        &config.data_dir,
        config.limits.tuf_snapshot_expiry_secs,
        config.limits.tuf_timestamp_expiry_secs,
    )?);
    let setup_code = if db.active_admin_count().await? == 0 {
        Some(
            accounts::issue_setup_code(
                &db,
                &accounts::Actor {
                    name: "hub".into(),
                    source: "start".into(),
                },
            )
            .await?,
        )
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Config(e.to_string()))?;
    let mqtt_listener = tokio::net::TcpListener::bind(config.mqtt_listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.mqtt_listen)))?;
    let mqtt_addr = mqtt_listener
        .local_addr()
        .map_err(|e| Error::Config(e.to_string()))?;
    if let Some(key) = &config.security_txt_key {
        tracing::info!(fingerprint = %key.fingerprint, "security.txt is OpenPGP-signed");
        if let Some(warning) = vuln::security_txt::key_warning(&config, db::now()) {
            tracing::warn!("{warning}");
        }
    }
    let config = Arc::new(config);
    let state = web::AppState {
        db: db.clone(),
        auth: auth::Auth::new(&config.limits),
        config: config.clone(),
        hub_ca: pki.hub_ca.clone(),
        hub_ca_pem: pki.hub_ca_pem.clone().into(),
        fleet: Arc::new(mqtt::Fleet::default()),
        mqtt_port: mqtt_addr.port(),
        updates: updates.clone(),
    };
    let app = web::app(state.clone());
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(server::serve_tls(
        listener,
        pki.server_config.clone(),
        app,
        config.limits.max_connections,
        server::Deadlines {
            handshake: std::time::Duration::from_secs(config.limits.tls_handshake_timeout_secs),
            idle: std::time::Duration::from_secs(config.limits.http_idle_timeout_secs),
            request: std::time::Duration::from_secs(config.limits.request_timeout_secs),
        },
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(mqtt::serve_devices(
        mqtt_listener,
        pki.device_server_config.clone(),
        db.clone(),
        config.clone(),
        state.fleet.clone(),
        pki.hub_ca.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(mail::run_delivery(
        db.clone(),
        delivery,
        stop_rx.clone(),
    )));
    let (renew_config, renew_pki) = (config.clone(), pki.clone());
    let mut stop_renew = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CERTIFICATE_CHECK_INTERVAL) => {}
                _ = stop_renew.changed() => return,
            }
            let (config, pki) = (renew_config.clone(), renew_pki.clone());
            match tokio::task::spawn_blocking(move || pki::renew_if_due(&config, &pki)).await {
                Ok(Ok(true)) => tracing::info!("serving a renewed server certificate"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "server certificate renewal failed; still serving the current one"),
                Err(e) => tracing::error!(error = %e, "server certificate renewal task failed"),
            }
        }
    }));
    // TUF timestamp and snapshot are re-signed well before they expire (issue 4), and
    // owners are told 90 days before a model's security support ends (SUP-2).
    let (refresh_db, refresh_url) = (db.clone(), config.public_url.clone());
    let mut stop_refresh = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let interval = std::time::Duration::from_secs(updates.refresh_interval_secs());
        let mut last_notice: Option<std::time::Instant> = None;
        loop {
            match updates.refresh_due().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(models = n, "TUF timestamp re-signed"),
                Err(e) => tracing::error!(error = %e, "TUF metadata refresh failed"),
            }
            // Staff hear once per role version that metadata is about to expire.
            if let Err(e) = updates::expiry::alert(&refresh_db, &updates).await {
                tracing::error!(error = %e, "TUF expiry warning failed");
            }
            if last_notice.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(3600)) {
                last_notice = Some(std::time::Instant::now());
                if let Err(e) = updates::send_support_notices(&refresh_db, &refresh_url).await {
                    tracing::error!(error = %e, "end-of-support notices failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop_refresh.changed() => return,
            }
        }
    }));
    // Staged rollouts: halt, advance, complete, admit late enrolments (issue 4).
    let (engine_db, engine_fleet, engine_url) =
        (db.clone(), state.fleet.clone(), config.public_url.clone());
    let mut stop_engine = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(updates::rollouts::TICK_SECS)) => {}
                _ = stop_engine.changed() => return,
            }
            if let Err(e) = updates::rollouts::tick(&engine_db, &engine_fleet, &engine_url).await {
                tracing::error!(error = %e, "rollout engine pass failed");
            }
        }
    }));
    tasks.push(tokio::spawn(retention::run_periodically(
        db.clone(),
        config.retention.clone(),
        stop_rx.clone(),
    )));
    let auth = state.auth.clone();
    let mut stop_sweep = stop_rx;
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => auth.forget_idle_sources(),
                _ = stop_sweep.changed() => return,
            }
        }
    }));
    Ok(RunningHub {
        addr,
        mqtt_addr,
        ca_cert_path: pki.ca_cert_path.clone(),
        ca_fingerprint: pki.ca_fingerprint.clone(),
        server_spki_sha256: pki.server_spki_sha256.clone(),
        pki,
        setup_code,
        db,
        state,
        stop,
        tasks,
    })
}
