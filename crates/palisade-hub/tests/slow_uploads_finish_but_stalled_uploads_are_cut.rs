//! Release image uploads are exempt from `request_timeout_secs` (a large image over a
//! slow link takes longer than any sensible request deadline) but not unbounded
//! (RES-2, UPD-1): a slow but steady upload that runs longer than the request deadline
//! is stored; an upload that stops sending (slow loris) is answered 408 and closed after
//! `upload_idle_timeout_secs`, and leaves no file behind.

mod common;

use common::TestHub;
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{Email, Username};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(hub: &TestHub) -> Tls {
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
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(hub.hub.addr)
        .await
        .expect("connect");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake")
}

/// A hub whose request deadline (1 s) is shorter than the uploads below, with a 2 s
/// pause allowed between upload chunks; a staff API token and a product model.
async fn hub() -> (TestHub, String) {
    let hub = TestHub::start_with(|c| {
        c.limits.request_timeout_secs = 1;
        c.limits.upload_idle_timeout_secs = 2;
    })
    .await;
    hub.create_product("lamp-v1").await;
    let staff = hub
        .hub
        .db
        .insert_user(NewUser {
            username: &Username::parse("release-manager").expect("username"),
            email: &Email::parse("rm@example.org").expect("email"),
            role: Role::Operator,
            status: Status::Active,
            password_hash: None,
        })
        .await
        .expect("staff");
    let (_, token) = hub
        .hub
        .db
        .create_api_token(&staff.id, "release", 3600)
        .await
        .expect("token");
    (hub, token)
}

fn put_head(name: &str, token: &str, length: usize) -> String {
    format!(
        "PUT /api/v1/products/lamp-v1/targets/{name} HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// Read the response head and whatever follows until the server closes (bounded).
async fn response(stream: &mut Tls, limit: Duration) -> (String, bool) {
    let mut text = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&text).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&text).into_owned(), true),
            Ok(Ok(n)) => text.extend_from_slice(&buf[..n]),
        }
    }
}

fn uploads_left(hub: &TestHub) -> Vec<String> {
    let dir = hub.data_dir().join("tuf").join("repos").join("lamp-v1");
    let mut found = Vec::new();
    let mut stack = vec![dir];
    // Bounded: the repository has two levels.
    for _ in 0..16 {
        let Some(d) = stack.pop() else { break };
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                stack.push(e.path());
            } else if name.starts_with(".upload-") {
                found.push(name);
            }
        }
    }
    found
}

#[tokio::test]
async fn a_slow_steady_upload_longer_than_the_request_deadline_is_stored() {
    let (hub, token) = hub().await;
    let chunk = vec![7u8; 4096];
    let chunks = 10;
    let mut stream = connect(&hub).await;
    stream
        .write_all(put_head("lamp-v1-1.0.0.img", &token, chunk.len() * chunks).as_bytes())
        .await
        .expect("head");
    // 10 chunks 300 ms apart: about 3 s in all, three times the request deadline, but
    // never a pause near the 2 s idle limit.
    for _ in 0..chunks {
        stream.write_all(&chunk).await.expect("chunk accepted");
        stream.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
        .await
        .expect("an answer")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert!(head.contains("\"length\":40960"), "{head}");
    hub.hub.shutdown().await;
}

#[tokio::test]
async fn a_stalled_upload_is_answered_408_and_closed() {
    let (hub, token) = hub().await;
    let mut stream = connect(&hub).await;
    // Announces 1 MiB, sends 4 KiB, then nothing: a slow-loris upload.
    stream
        .write_all(put_head("lamp-v1-1.0.0.img", &token, 1024 * 1024).as_bytes())
        .await
        .expect("head");
    stream.write_all(&[7u8; 4096]).await.expect("first chunk");
    stream.flush().await.expect("flush");
    let (text, closed) = response(&mut stream, Duration::from_secs(30)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(closed, "the stalled upload's connection must be closed");
    assert!(
        uploads_left(&hub).is_empty(),
        "a cut upload leaves no partial file: {:?}",
        uploads_left(&hub)
    );
    hub.hub.shutdown().await;
}

#[tokio::test]
async fn other_requests_still_get_the_request_deadline() {
    // The exemption is for the upload routes only: a slow body on another route is cut
    // by the 1 s request deadline, long before the upload limits.
    let (hub, _token) = hub().await;
    let mut stream = connect(&hub).await;
    stream
        .write_all(
            b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: \
              application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nusername=a",
        )
        .await
        .expect("head");
    stream.flush().await.expect("flush");
    let (text, _) = response(&mut stream, Duration::from_secs(30)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    hub.hub.shutdown().await;
}
