//! ENC-1, WEB-3, SURF-1: the hub speaks only TLS (1.3, or 1.2 with ECDHE + AEAD) and
//! every response carries the browser security headers. `openssl s_client` is the
//! independent client for the protocol checks.

mod common;

use common::TestHub;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Run `openssl s_client` against the hub with extra arguments; true if a session was
/// established (a cipher was negotiated).
fn handshake(hub: &TestHub, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", hub.port()),
            "-CAfile",
        ])
        .arg(&hub.hub.ca_cert_path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (scripts/test.sh installs it)");
    drop(child.stdin.take()); // EOF: s_client closes after the handshake
    let out = child.wait_with_output().expect("openssl ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let established = text.contains("Verify return code: 0 (ok)")
        && !text.contains("Cipher is (NONE)")
        && !text.contains("Cipher    : 0000");
    (established, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_http_to_the_tls_port_gets_no_http_answer() {
    let hub = TestHub::start().await;
    let port = hub.port();
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    })
    .await
    .expect("task");
    let text = String::from_utf8_lossy(&reply);
    assert!(
        !text.contains("HTTP/1."),
        "plain HTTP must never be answered: {text:?}"
    );
    assert!(!text.contains("ok"), "no content over plaintext: {text:?}");
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_protocols_and_non_aead_suites_are_refused() {
    let hub = TestHub::start().await;
    let (ok, text) = handshake(&hub, &["-tls1_3"]);
    assert!(ok, "TLS 1.3 works: {text}");
    let (ok, text) = handshake(
        &hub,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
    );
    assert!(ok, "TLS 1.2 with ECDHE + AES-GCM works: {text}");
    let (ok, text) = handshake(
        &hub,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
    );
    assert!(ok, "TLS 1.2 with ECDHE + ChaCha20-Poly1305 works: {text}");
    // The attacks: downgrade to old protocols or to CBC/SHA-1 (non-AEAD) suites.
    for args in [
        &["-tls1", "-cipher", "ALL:@SECLEVEL=0"][..],
        &["-tls1_1", "-cipher", "ALL:@SECLEVEL=0"][..],
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:AES128-SHA:AES256-GCM-SHA384",
        ][..],
    ] {
        let (ok, text) = handshake(&hub, args);
        assert!(!ok, "{args:?} must be refused: {text}");
    }
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_has_security_headers_and_no_version_banner() {
    let hub = TestHub::start().await;
    let mut b = hub.browser();
    for path in ["/healthz", "/login", "/no-such-page", "/users"] {
        let page = b.get(path).await;
        assert_eq!(
            page.header("strict-transport-security"),
            "max-age=31536000; includeSubDomains",
            "{path}"
        );
        let csp = page.header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("script-src"),
            "no script is allowed at all: {csp}"
        );
        assert_eq!(page.header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(
            page.header("server"),
            "",
            "{path}: no server banner (SURF-2)"
        );
    }
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directory_and_private_keys_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let hub = TestHub::start().await;
    let mode =
        |p: std::path::PathBuf| std::fs::metadata(&p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(hub.data_dir()), 0o700);
    assert_eq!(mode(hub.data_dir().join("pki")), 0o700);
    assert_eq!(mode(hub.data_dir().join("pki/ca.key")), 0o600);
    assert_eq!(mode(hub.data_dir().join("pki/server.key")), 0o600);
    assert_eq!(mode(hub.data_dir().join("palisade.sqlite3")), 0o600);
    // Restart: the same CA is reused (clients that pinned it keep working).
    let fingerprint = hub.hub.ca_fingerprint.clone();
    let data_dir = hub.data_dir();
    let TestHub { hub: running, dir } = hub;
    running.shutdown().await;
    let again = palisade_hub::start(palisade_hub::config::Config::for_data_dir(&data_dir))
        .await
        .expect("restart");
    assert_eq!(again.ca_fingerprint, fingerprint);
    again.shutdown().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_supplied_certificate_is_served() {
    use std::os::unix::fs::PermissionsExt;
    common::install_crypto();
    let own = tempfile::tempdir().expect("tempdir");
    let ca = palisade_crypto::ca::HubCa::generate().expect("operator CA");
    let leaf = ca.issue_server(&["127.0.0.1".into()]).expect("leaf");
    let cert = own.path().join("hub.pem");
    let key = own.path().join("hub.key");
    std::fs::write(&cert, &leaf.cert_pem).expect("write");
    std::fs::write(&key, &leaf.key_pem).expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let hub = TestHub::start_with(|c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await;
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.material.cert_pem.as_bytes()).expect("pem"),
        )
        .build()
        .expect("client");
    let r = client
        .get(hub.url("/healthz"))
        .send()
        .await
        .expect("the operator's certificate verifies");
    assert_eq!(r.status(), 200);
    // The hub's own CA does not sign what is served now.
    let own_ca = std::fs::read(hub.data_dir().join("pki/ca.pem")).expect("hub ca");
    let pinned_to_hub_ca = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&own_ca).expect("pem"))
        .build()
        .expect("client");
    assert!(
        pinned_to_hub_ca
            .get(hub.url("/healthz"))
            .send()
            .await
            .is_err()
    );
    hub.hub.shutdown().await;
}
