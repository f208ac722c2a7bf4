//! An HTTPS connection without traffic is closed after `http_idle_timeout_secs`, for
//! HTTP/1.1 keep-alive and for HTTP/2 (RES-2): otherwise a client that opens
//! `max_connections` connections and sends nothing more would hold every slot and lock
//! everyone out. A connection in use is not closed.

mod common;

use common::TestHub;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn connect(
    hub: &TestHub,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&hub.hub.ca_cert_path).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(hub.hub.addr)
        .await
        .expect("connect");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake")
}

/// Read until the server closes the connection (EOF or reset); bounded by `limit`.
/// Returns whether it was closed within the limit.
async fn closed_within(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    limit: Duration,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // responses, HTTP/2 SETTINGS or GOAWAY frames
        }
    }
}

async fn idle_hub() -> TestHub {
    TestHub::start_with(|c| {
        c.limits.http_idle_timeout_secs = 1;
        c.limits.request_timeout_secs = 2;
    })
    .await
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed() {
    let hub = idle_hub().await;
    let mut stream = connect(&hub, b"http/1.1").await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Keep-alive: the connection stays open after the response, until the idle deadline.
    assert!(
        closed_within(&mut stream, Duration::from_secs(20)).await,
        "an idle HTTP/1.1 connection must be closed"
    );
    hub.hub.shutdown().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let hub = idle_hub().await;
    let mut stream = connect(&hub, b"h2").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The HTTP/2 preface and an empty SETTINGS frame, then nothing: a connection that
    // holds a slot without ever sending a request.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    assert!(
        closed_within(&mut stream, Duration::from_secs(20)).await,
        "an idle HTTP/2 connection must be closed"
    );
    hub.hub.shutdown().await;
}

#[tokio::test]
async fn a_connection_in_use_is_not_closed() {
    let hub = idle_hub().await;
    let mut stream = connect(&hub, b"http/1.1").await;
    let mut buf = vec![0u8; 4096];
    // Requests every 300 ms for longer than the idle deadline, on one connection.
    for _ in 0..8 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("the connection is still open");
        let n = stream.read(&mut buf).await.expect("response");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    hub.hub.shutdown().await;
}
