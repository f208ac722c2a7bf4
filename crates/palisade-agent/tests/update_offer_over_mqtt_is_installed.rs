//! The MQTT path of an update (UPD-2, UPD-5): the running agent receives an offer on
//! `devices/{id}/update`, fetches TUF metadata and the target from the hub's HTTPS
//! (`/tuf/MODEL/...`, pinned hub CA, device certificate as client identity), reports
//! each step on `devices/{id}/update/status`, restarts into the new slot, reconnects,
//! commits with the measured downtime and then reports the new firmware version. An
//! older version offered afterwards is refused and reported as failed.
//!
//! Real parts: Mosquitto with mutual TLS, a loopback HTTPS server (rustls, client
//! certificates required from the hub CA) serving a python-tuf repository, the real
//! `palisade-agent run`.

mod common;
mod tuf_common;

use common::*;
use palisade_agent::state::StateDir;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// An HTTPS server for `/tuf/MODEL/{metadata,targets}/...` from a step directory that
/// accepts only clients with a certificate from the hub CA. Counts served requests.
fn https_server(
    ca_pem: &str,
    cert: &palisade_crypto::ca::CertAndKey,
    step: PathBuf,
) -> (u16, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca")).expect("root");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .expect("verifier");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    std::thread::spawn(move || {
        for tcp in listener.incoming().take(1000) {
            let Ok(tcp) = tcp else { continue };
            let (config, step, counter) = (Arc::clone(&config), step.clone(), Arc::clone(&counter));
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let conn = rustls::ServerConnection::new(config).expect("conn");
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let file = path
                    .strip_prefix("/tuf/MODEL/")
                    .filter(|rest| !rest.split('/').any(|p| p == ".."))
                    .and_then(|rest| std::fs::read(step.join(rest)).ok());
                let _ = match file {
                    Some(body) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        tls.write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| tls.write_all(&body))
                    }
                    None => tls.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, served)
}

fn set_hub_url(state: &Path, url: &str) {
    let path = state.join("agent.json");
    let mut config = StateDir::new(state).load_config().expect("config");
    config.hub_url = url.to_owned();
    std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write");
    // A deliberate change by the device's maintainer: sealed again (INT-1).
    palisade_agent::integrity::seal(&StateDir::new(state)).expect("seal");
}

#[test]
fn update_offer_over_mqtt_is_installed() {
    let Some(python) = tuf_common::python() else {
        return;
    };
    let scenario = tuf_common::Scenario::build(&python, "firmware");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = palisade_crypto::ca::HubCa::generate().expect("ca");
    let ca_file = write(&dir.path().join("ca.pem"), &ca.material.cert_pem);
    let port = free_port();
    let server = server_cert(&ca, &["127.0.0.1", "localhost"]);
    let _broker = Broker::start(dir.path(), port, &ca.material.cert_pem, &server);
    let (https_port, served) = https_server(&ca.material.cert_pem, &server, scenario.step("v1"));
    let operator = client_files(dir.path(), &ca, "operator-test");
    let state = enrolled_state(dir.path(), &ca, "127.0.0.1", port);
    set_hub_url(&state, &format!("https://127.0.0.1:{https_port}"));
    let state_arg = state.to_str().expect("utf-8 path").to_owned();
    let root = scenario.trusted_root();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-agent"))
        .args(["update-root", "--state-dir", &state_arg])
        .arg(&root)
        .output()
        .expect("update-root");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let states = format!("devices/{DEVICE_ID}/state");
    let status = format!("devices/{DEVICE_ID}/update/status");
    let offers = format!("devices/{DEVICE_ID}/update");
    let mut sub = Subscriber::start(port, &ca_file, &operator, &[&states, &status]);
    let mut agent = Agent::start(&[
        "run",
        "--state-dir",
        &state_arg,
        "--firmware-version",
        "1.0.0",
        "--health-timeout",
        "60s",
    ]);
    let online = sub.next_on(&states, WAIT);
    assert_eq!(online["firmware_version"], "1.0.0");

    let offer = json!({"release": "rel-2", "product": "MODEL", "version": "2.0.0",
        "target": "MODEL-2.0.0.img", "security": true, "notes": "fixes CVE-0000-0001"});
    publish(port, &ca_file, &operator, &offers, &offer.to_string());
    let mut steps = Vec::new();
    let committed = loop {
        let report = sub.next_on(&status, WAIT);
        assert_eq!(report["release"], "rel-2", "{report}");
        assert_eq!(report["version"], "2.0.0");
        let step = report["step"].as_str().expect("step").to_owned();
        steps.push(step.clone());
        assert!(
            ["downloading", "verified", "installed", "committed"].contains(&step.as_str()),
            "{report}\n{}",
            agent.drain_log()
        );
        if step == "committed" {
            break report;
        }
    };
    assert_eq!(steps, ["downloading", "verified", "installed", "committed"]);
    let downtime = committed["downtime_ms"].as_u64().expect("downtime_ms");
    eprintln!("downtime from stop to reconnected: {downtime} ms");
    assert!(
        served.load(Ordering::SeqCst) >= 4,
        "fetched over the hub's HTTPS"
    );
    // After the restart the agent reports the new slot's version.
    let state_doc = loop {
        let doc = sub.next_on(&states, WAIT);
        if doc["status"] == "online" {
            break doc;
        }
    };
    assert_eq!(state_doc["firmware_version"], "2.0.0");
    agent.wait_for_log("restarting into the new slot", WAIT);

    // An older version: refused, reported with the reason, nothing installed.
    let older = json!({"release": "rel-old", "product": "MODEL", "version": "1.0.0",
        "target": "MODEL-1.0.0.img", "security": false, "notes": ""});
    publish(port, &ca_file, &operator, &offers, &older.to_string());
    let report = sub.next_on(&status, WAIT);
    assert_eq!(report["release"], "rel-old");
    assert_eq!(report["step"], "failed");
    assert!(
        report["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not newer"),
        "{report}"
    );
    assert_eq!(agent.terminate(), Some(0));
    let boot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("slots/boot.json")).expect("boot.json"))
            .expect("json");
    assert_eq!(boot["active"], "b");

    // INT-1: at the next start the committed image is checked against the signed
    // targets metadata and its sealed digest; modified on disk, it is found.
    let slots = palisade_agent::slots::Slots::new(state.join("slots"));
    let check = || palisade_agent::integrity::check(&StateDir::new(&state), &slots);
    assert_eq!(check().expect("check"), Vec::<String>::new());
    std::fs::write(state.join("slots/b/image"), b"modified").expect("tamper");
    let found = check().expect("check");
    assert!(
        found.iter().any(|f| f.contains("slot b image")),
        "{found:?}"
    );
}
