//! The hub renews its own server certificate while it runs, before the agent's expiry
//! check (ENC-2) would refuse it: a hub up for longer than the certificate's lifetime
//! must not start serving an expired certificate (ENC-1). New handshakes get the new
//! certificate, chained to the same pinned CA; established connections keep working;
//! a certificate that is not yet due is never replaced (no churn on every check).

mod common;

use common::TestHub;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS client that trusts only the hub CA, as devices and pinned clients do.
fn pinned_client(hub: &TestHub) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&hub.hub.ca_cert_path).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn connect(hub: &TestHub) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(hub.hub.addr)
        .await
        .expect("connect");
    pinned_client(hub)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake verifies against the pinned CA")
}

fn leaf(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server certificate")
        .to_vec()
}

async fn healthz(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Pretend the certificate was issued long ago: its recorded expiry is `days` away.
fn set_recorded_expiry(hub: &TestHub, days: i64) {
    let meta_path = hub.data_dir().join("pki").join("server.meta");
    let meta = std::fs::read_to_string(&meta_path).expect("server.meta");
    let names = meta.lines().next().expect("names line").to_owned();
    let not_after = common::now() as i64 + days * 86_400;
    std::fs::write(&meta_path, format!("{names}\n{not_after}\n")).expect("write meta");
}

#[tokio::test]
async fn a_certificate_near_expiry_is_replaced_without_a_restart() {
    let hub = TestHub::start().await;
    let mut before = connect(&hub).await;
    let old_leaf = leaf(&before);
    assert!(healthz(&mut before).await.starts_with("HTTP/1.1 200"));

    // Not due: nothing changes, however often the hub checks.
    assert!(!hub.hub.renew_certificates_if_due().expect("check"));
    assert!(!hub.hub.renew_certificates_if_due().expect("check"));
    assert_eq!(leaf(&connect(&hub).await), old_leaf);

    // Due (fewer than SERVER_RENEW_DAYS left): renewed in place.
    set_recorded_expiry(&hub, 10);
    assert!(hub.hub.renew_certificates_if_due().expect("renewal"));
    assert!(!hub.hub.console_certificate_der().is_empty());
    let after = connect(&hub).await;
    let new_leaf = leaf(&after);
    assert_ne!(
        new_leaf, old_leaf,
        "new handshakes get the renewed certificate"
    );
    assert_eq!(new_leaf, hub.hub.console_certificate_der());

    // The connection made before the renewal still works.
    assert!(healthz(&mut before).await.starts_with("HTTP/1.1 200"));

    // And the renewed certificate is not renewed again on the next check.
    assert!(!hub.hub.renew_certificates_if_due().expect("check"));

    // Devices get the renewed certificate too (same file, mutual-TLS listener).
    let device_pem = std::fs::read(hub.data_dir().join("pki").join("server.pem")).expect("pem");
    let device_leaf = CertificateDer::pem_slice_iter(&device_pem)
        .next()
        .expect("one certificate")
        .expect("PEM");
    assert_eq!(device_leaf.as_ref(), new_leaf.as_slice());
    hub.hub.shutdown().await;
}

#[tokio::test]
async fn a_failed_renewal_keeps_serving_the_current_certificate() {
    let hub = TestHub::start().await;
    let old_leaf = leaf(&connect(&hub).await);
    set_recorded_expiry(&hub, 10);
    // Make the renewal fail: the key file cannot be written.
    let pki = hub.data_dir().join("pki");
    std::fs::create_dir(pki.join("server.tmp")).expect("block the temporary file");
    assert!(hub.hub.renew_certificates_if_due().is_err());
    assert_eq!(leaf(&connect(&hub).await), old_leaf);
    std::fs::remove_dir(pki.join("server.tmp")).expect("unblock");
    assert!(hub.hub.renew_certificates_if_due().expect("renewal"));
    assert_ne!(leaf(&connect(&hub).await), old_leaf);
    hub.hub.shutdown().await;
}
