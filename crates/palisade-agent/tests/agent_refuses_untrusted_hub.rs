//! ENC-2 (and security invariant 1): the agent talks only to a hub that proves itself
//! with a certificate chained to the pinned hub CA, valid for the hub's host name and
//! not expired — for enrolment over HTTPS and for MQTT. There is no switch to turn this
//! off, so each case is a refusal.
//!
//! Real components: Mosquitto (mutual TLS) as the MQTT server, `openssl s_server` as the
//! HTTPS server (the refusal happens in the TLS handshake, before any HTTP), the real
//! `palisade-agent` binary, and the agent library's own connection code.

mod common;

use common::*;
use palisade_agent::enroll::{ClaimCode, EnrollOptions};
use palisade_agent::limits::Limits;
use palisade_agent::mqtt::{Session, Target};
use palisade_agent::state::StateDir;
use palisade_crypto::ca::{CertAndKey, HubCa};
use rustls::CertificateError;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// The three ways a server certificate must be refused, with the certificate for each.
fn bad_certificates(ca: &HubCa) -> Vec<(&'static str, CertAndKey)> {
    let other_ca = HubCa::generate().expect("other ca");
    vec![
        (
            "not chained to the pinned CA",
            server_cert(&other_ca, &["127.0.0.1", "localhost"]),
        ),
        ("for another host name", server_cert(ca, &["other.example"])),
        ("expired", expired_server_cert(ca)),
    ]
}

fn expected_problem(case: &str, problem: Option<&CertificateError>) -> bool {
    match case {
        "not chained to the pinned CA" => matches!(problem, Some(CertificateError::UnknownIssuer)),
        "for another host name" => matches!(
            problem,
            Some(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "expired" => matches!(
            problem,
            Some(CertificateError::Expired | CertificateError::ExpiredContext { .. })
        ),
        _ => false,
    }
}

fn device_tls(state: &Path) -> (Target, Limits) {
    let identity = StateDir::new(state).load_identity().expect("identity");
    let tls = palisade_agent::tls::client_config(
        &identity.ca_pem,
        Some((identity.cert_chain, identity.key)),
    )
    .expect("tls config");
    let limits = Limits {
        connect_timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    let target = Target {
        host: identity.config.mqtt_host.clone(),
        port: identity.config.mqtt_port,
        device_id: identity.config.device_id.clone(),
        tls: Arc::new(tls),
    };
    (target, limits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_untrusted_mqtt_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = HubCa::generate().expect("ca");

    // Control: the genuine server certificate is accepted (full mTLS session, CONNACK).
    let port = free_port();
    let state = enrolled_state(&dir.path().join("good"), &ca, "127.0.0.1", port);
    let broker = Broker::start(
        dir.path(),
        port,
        &ca.material.cert_pem,
        &server_cert(&ca, &["127.0.0.1", "localhost"]),
    );
    let (target, limits) = device_tls(&state);
    let session = Session::establish(&target, &limits, &serde_json::json!({"status": "offline"}))
        .await
        .expect("the genuine hub is accepted");
    session.disconnect().await;
    drop(broker);

    for (case, cert) in bad_certificates(&ca) {
        let port = free_port();
        let case_dir = dir.path().join(case.replace(' ', "-"));
        let state = enrolled_state(&case_dir, &ca, "127.0.0.1", port);
        // The broker trusts the device's CA, so only the agent's check can refuse.
        let broker = Broker::start(&case_dir, port, &ca.material.cert_pem, &cert);
        let (target, limits) = device_tls(&state);
        let err = palisade_agent::mqtt::connect_tls(
            &target.host,
            target.port,
            target.tls.clone(),
            limits.connect_timeout,
        )
        .await
        .expect_err(case);
        assert!(
            expected_problem(case, err.certificate_problem()),
            "{case}: refused for the wrong reason: {err}"
        );
        assert!(
            !broker.log_text().contains("New client connected"),
            "{case}: a session was established:\n{}",
            broker.log_text()
        );
    }
}

#[test]
fn agent_run_logs_refusal_and_keeps_retrying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = HubCa::generate().expect("ca");
    let impostor = HubCa::generate().expect("impostor ca");
    let port = free_port();
    let state = enrolled_state(dir.path(), &ca, "127.0.0.1", port);
    let broker = Broker::start(
        dir.path(),
        port,
        &ca.material.cert_pem,
        &server_cert(&impostor, &["127.0.0.1"]),
    );
    let mut agent = Agent::start(&[
        "run",
        "--state-dir",
        state.to_str().expect("utf-8"),
        "--simulate",
    ]);
    let line = agent.wait_for_log("connection attempt refused", Duration::from_secs(30));
    assert!(line.contains("not issued by the pinned hub CA"), "{line}");
    agent.wait_for_log("reconnecting in", Duration::from_secs(30));
    assert_eq!(agent.terminate(), Some(0));
    assert!(!broker.log_text().contains("New client connected"));
    // What it measured meanwhile is kept for later (RES-1).
    let queued =
        std::fs::read_to_string(state.join(palisade_agent::state::QUEUE_FILE)).unwrap_or_default();
    assert!(queued.lines().count() >= 1, "simulated telemetry queued");
}

/// `openssl s_server` presenting `cert` on a free loopback port, killed on drop.
struct TlsServer {
    child: Child,
    port: u16,
}

impl TlsServer {
    fn start(dir: &Path, cert: &CertAndKey) -> Self {
        let port = free_port();
        let cert_file = write(&dir.join(format!("https-{port}.pem")), &cert.cert_pem);
        let key_file = write(&dir.join(format!("https-{port}.key")), &cert.key_pem);
        let child = Command::new(require_tool("openssl"))
            .args([
                "s_server",
                "-quiet",
                "-www",
                "-accept",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("-cert")
            .arg(&cert_file)
            .arg("-key")
            .arg(&key_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        wait_until(
            "openssl s_server to listen",
            Duration::from_secs(10),
            || {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .map(|_| ())
            },
        );
        Self { child, port }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enroll_options(ca: &HubCa, port: u16, state_dir: &Path) -> EnrollOptions {
    EnrollOptions {
        hub_url: format!("https://127.0.0.1:{port}"),
        ca_pem: ca.material.cert_pem.clone().into_bytes(),
        claim_code: ClaimCode::new("TEST-CLAIM-CODE").expect("claim code"),
        state_dir: state_dir.to_path_buf(),
        limits: Limits {
            // s_server answers no POST: a request that gets past TLS just waits.
            enroll_timeout: Duration::from_secs(3),
            ..Limits::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_untrusted_enrolment_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = HubCa::generate().expect("ca");

    // Control: with the genuine certificate the TLS handshake succeeds and the request
    // is sent (it then times out: s_server does not answer POST).
    let good = TlsServer::start(dir.path(), &server_cert(&ca, &["127.0.0.1", "localhost"]));
    let err =
        palisade_agent::enroll::enroll(enroll_options(&ca, good.port, &dir.path().join("good")))
            .await
            .expect_err("s_server does not enrol");
    assert!(
        matches!(err, palisade_agent::Error::Timeout { .. }),
        "the genuine server should pass TLS: {err}"
    );
    drop(good);

    for (case, cert) in bad_certificates(&ca) {
        let server = TlsServer::start(dir.path(), &cert);
        let state_dir = dir.path().join(case.replace(' ', "-"));
        let err = palisade_agent::enroll::enroll(enroll_options(&ca, server.port, &state_dir))
            .await
            .expect_err(case);
        assert!(
            expected_problem(case, err.certificate_problem()),
            "{case}: refused for the wrong reason: {err}"
        );
        // Nothing is left that looks like an enrolment, not even the unused key.
        for name in ["device.key", "device.pem", "ca.pem", "agent.json"] {
            assert!(!state_dir.join(name).exists(), "{case}: {name} left behind");
        }
    }

    // The binary: a clear message and a failing exit code.
    let impostor = HubCa::generate().expect("impostor");
    let server = TlsServer::start(dir.path(), &server_cert(&impostor, &["127.0.0.1"]));
    let ca_file = write(&dir.path().join("hub-ca.pem"), &ca.material.cert_pem);
    let state_dir = dir.path().join("binary");
    let hub = format!("https://127.0.0.1:{}", server.port);
    let mut agent = Agent::start(&[
        "enroll",
        "--hub",
        &hub,
        "--ca",
        ca_file.to_str().expect("utf-8"),
        "--claim",
        "TEST-CLAIM-CODE",
        "--state-dir",
        state_dir.to_str().expect("utf-8"),
    ]);
    let (code, _) = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(1));
    let log = agent.drain_log();
    assert!(log.contains("not issued by the pinned hub CA"), "{log}");
    assert!(
        !log.contains("TEST-CLAIM-CODE"),
        "the claim code must not be printed"
    );
}
