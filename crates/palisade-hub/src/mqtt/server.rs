//! The device listener: MQTT over mutual TLS only (there is no plaintext listener), a
//! bounded number of connections (`mqtt_max_connections`), a TLS handshake deadline
//! (`tls_handshake_timeout_secs`), and the device identified from its verified client
//! certificate — the SHA-256 of the end-entity certificate must be the one the hub
//! issued to an active device, or the one a renewal replaced while the new one has not
//! been used yet (AUTH-10). Expired persistent sessions are swept every 10 minutes. The session itself is in [`super::session`];
//! telemetry storage in [`crate::telemetry`].

use super::Fleet;
use super::session::{self, Admission, Shared};
use crate::config::Config;
use crate::db::Db;
use crate::db::devices::DeviceStatus;
use crate::telemetry::{Schema, Writer};
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// How long shutdown waits for queued telemetry to be stored.
const WRITER_DRAIN: Duration = Duration::from_secs(10);

/// Serve device connections on `listener` until `stop` turns true. Runs the telemetry
/// writer, and on shutdown lets it store what was queued.
pub async fn serve_devices(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    db: Db,
    config: Arc<Config>,
    fleet: Arc<Fleet>,
    hub_ca: Arc<palisade_crypto::ca::HubCa>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = config.limits.clone();
    let (writer, writer_task) = Writer::spawn(db.clone(), &limits);
    let handshake_timeout = Duration::from_secs(limits.tls_handshake_timeout_secs);
    let slots = Arc::new(Semaphore::new(limits.mqtt_max_connections));
    let shared = Arc::new(Shared {
        db,
        fleet,
        writer,
        limits,
        budgets: Default::default(),
        hub_ca,
    });
    let sweeper = tokio::spawn(sweep_sessions(shared.db.clone(), stop.clone()));
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("device accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp));
            let tls_stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "device TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "device TLS handshake timed out");
                        return;
                    }
                },
                _ = stop.changed() => return,
            };
            let admission = admit(&shared, &tls_stream, peer).await;
            session::run(tls_stream, admission, shared, stop, peer).await;
        });
    }
    // Connections see `stop` too and drop their writer handles; the writer then stores
    // what is queued and ends.
    drop(shared);
    sweeper.abort();
    if tokio::time::timeout(WRITER_DRAIN, writer_task)
        .await
        .is_err()
    {
        tracing::warn!("telemetry writer did not finish in time");
    }
}

/// How often expired persistent sessions are deleted.
const SESSION_SWEEP: Duration = Duration::from_secs(600);

/// Delete expired persistent MQTT sessions now and then (their state is bounded per
/// device; this bounds the number of devices holding one).
async fn sweep_sessions(db: Db, mut stop: watch::Receiver<bool>) {
    loop {
        match db.delete_expired_mqtt_sessions(crate::db::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "expired MQTT sessions deleted"),
            Err(e) => tracing::warn!("could not delete expired MQTT sessions: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SESSION_SWEEP) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Decide from the verified client certificate whether this is an active device.
async fn admit(
    shared: &Shared,
    tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: SocketAddr,
) -> Admission {
    // The verifier required a chain to the hub CA; the end entity comes first.
    let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        return Admission::Refused;
    };
    let fingerprint = palisade_crypto::token::sha256_hex(cert.as_ref());
    let device = match shared.db.device_by_certificate(&fingerprint).await {
        Ok(Some(d)) if d.status == DeviceStatus::Active => d,
        Ok(Some(d)) => {
            tracing::info!(device = %d.id, %peer, status = d.status.as_str(), "inactive device refused");
            return Admission::Refused;
        }
        Ok(None) => {
            tracing::info!(%peer, "certificate of no current device refused");
            return Admission::Refused;
        }
        Err(e) => {
            tracing::warn!(%peer, "device lookup failed: {e}");
            return Admission::Unavailable;
        }
    };
    match shared.db.product(&device.product_id).await {
        Ok(Some(model)) => Admission::Device {
            id: device.id,
            schema: Schema::new(&model),
            fingerprint,
        },
        Ok(None) => {
            tracing::warn!(device = %device.id, "device has no product model; refused");
            Admission::Refused
        }
        Err(e) => {
            tracing::warn!(device = %device.id, "product lookup failed: {e}");
            Admission::Unavailable
        }
    }
}
