//! AUTH-2, AUTH-10, ENC-3: a device enrols by trading a single-use, expiring claim code
//! and a CSR made with its own key for a certificate from the hub CA. Attacks that must
//! fail: reusing a claim code, an expired code, a guessed code, a CSR whose signature
//! does not verify (no proof of key possession), a cross-site request, and a flood of
//! guesses from one source (failed attempts are throttled per source, AUTH-7/RES-2).
//! The claim code never reaches the audit log.

mod common;

use common::TestHub;
use palisade_crypto::ca::device_key_and_csr;
use palisade_hub::db::Db;
use palisade_hub::db::devices::{DeviceStatus, FieldKind, FieldSpec, ProductModel};
use palisade_hub::ids::{DeviceId, ProductId};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

async fn product(db: &Db, id: &str) -> ProductId {
    let id = ProductId::parse(id).expect("product id");
    db.create_product(&ProductModel {
        id: id.clone(),
        name: "Garden camera".into(),
        hardware_revision: "B2".into(),
        fields: vec![FieldSpec {
            name: "temperature".into(),
            kind: FieldKind::Number,
            unit: "celsius".into(),
            purpose: "room temperature shown to the owner".into(),
            personal: false,
            retention_days: None,
            optional: false,
        }],
        created_at: 0,
    })
    .await
    .expect("product");
    id
}

async fn enrol(client: &reqwest::Client, hub: &TestHub, claim: &str, csr: &str) -> (u16, Value) {
    let r = client
        .post(hub.url("/api/v1/devices/enroll"))
        .json(&json!({ "claim_code": claim, "csr_pem": csr }))
        .send()
        .await
        .expect("enrol request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Flip one base64 character near the end of the PEM body: inside the signature's
/// `s` value, so the DER still parses but the signature no longer verifies.
fn break_signature(csr: &str) -> String {
    let lines: Vec<&str> = csr.lines().collect();
    let body: String = lines[1..lines.len() - 1].concat();
    let trimmed = body.trim_end_matches('=');
    let at = trimmed.len() - 10;
    let mut bytes = body.into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let body = String::from_utf8(bytes).expect("ascii");
    let wrapped: Vec<String> = body
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!(
        "{}\n{}\n{}\n",
        lines[0],
        wrapped.join("\n"),
        lines[lines.len() - 1]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_code_enrols_exactly_one_device_before_it_expires() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let product = product(db, "cam-v2").await;
    let codes = db
        .create_claim_codes(&product, 2, 3600)
        .await
        .expect("codes");
    let expired = db
        .create_claim_codes(&product, 1, -60)
        .await
        .expect("expired code");
    // No cookies, no CSRF token: a device has neither.
    let client = common::client(&hub, None);
    let (key_pem, csr) = device_key_and_csr("attacker-chosen-name").expect("csr");

    // A CSR whose signature does not verify is refused (400), and the attempt does not
    // use the code up.
    let broken = break_signature(&csr);
    let dir = tempfile::tempdir().expect("tempdir");
    let broken_file = dir.path().join("broken.csr");
    std::fs::write(&broken_file, &broken).expect("write");
    let (_, text) = openssl(&["req", "-in", path(&broken_file), "-noout", "-verify"]);
    assert!(
        text.contains("verify failure"),
        "OpenSSL parses the CSR and finds only its signature bad: {text}"
    );
    let (status, body) = enrol(&client, &hub, &codes[0].claim, &broken).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = enrol(&client, &hub, &codes[0].claim, "not a CSR").await;
    assert_eq!(status, 400, "{body}");

    // Guessed and expired codes are refused with a clear message.
    let (status, body) = enrol(&client, &hub, "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GG", &csr).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("claim code not valid")),
        "{body}"
    );
    let (status, body) = enrol(&client, &hub, &expired[0].claim, &csr).await;
    assert_eq!(status, 403, "an expired code is refused: {body}");

    // A cross-site page cannot drive enrolment either (Origin check still applies).
    let r = client
        .post(hub.url("/api/v1/devices/enroll"))
        .header("origin", "https://evil.example")
        .json(&json!({ "claim_code": codes[0].claim, "csr_pem": csr }))
        .send()
        .await
        .expect("cross-site");
    assert_eq!(r.status(), 403);

    // The real thing.
    let (status, body) = enrol(&client, &hub, &codes[0].claim, &csr).await;
    assert_eq!(status, 201, "{body}");
    let device_id = body["device_id"].as_str().expect("device_id").to_owned();
    let id = DeviceId::parse(&device_id).expect("a device id");
    let cert_pem = body["certificate_pem"].as_str().expect("certificate");
    let ca_pem = body["ca_pem"].as_str().expect("ca");
    assert_eq!(
        ca_pem,
        std::fs::read_to_string(&hub.hub.ca_cert_path).expect("hub CA file"),
        "the CA handed out is the hub CA"
    );
    assert!(body["not_after"].as_i64().expect("not_after") > common::now() as i64);
    assert_eq!(
        body["mqtt_port"].as_u64(),
        Some(u64::from(hub.hub.mqtt_addr.port())),
        "the port devices really connect to"
    );
    assert!(
        !body.to_string().contains("PRIVATE KEY"),
        "the hub never has the device key"
    );

    // Independent check with OpenSSL: the certificate chains to the hub CA for client
    // authentication, names the device id, and certifies the device's own key.
    let (ca_file, cert_file, key_file) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca_file, ca_pem).expect("write");
    std::fs::write(&cert_file, cert_pem).expect("write");
    std::fs::write(&key_file, &key_pem).expect("write");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        path(&ca_file),
        "-purpose",
        "sslclient",
        path(&cert_file),
    ]);
    assert!(ok && text.contains("OK"), "{text}");
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        path(&cert_file),
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("CN = {device_id}")) || text.contains(&format!("CN={device_id}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("URI:urn:palisade:device:{device_id}")),
        "{text}"
    );
    assert!(
        !text.contains("attacker-chosen-name"),
        "names asked for in the CSR are ignored: {text}"
    );
    let (_, cert_key) = openssl(&["x509", "-in", path(&cert_file), "-noout", "-pubkey"]);
    let (_, own_key) = openssl(&["pkey", "-in", path(&key_file), "-pubout"]);
    assert_eq!(cert_key, own_key, "the certificate is for the device's key");

    // The hub recorded the device under that certificate.
    let device = db.device(&id).await.expect("db").expect("device stored");
    assert_eq!(device.status, DeviceStatus::Active);
    assert_eq!(device.product_id, product);
    assert_eq!(device.owner_id, None);
    let (_, fingerprint) = openssl(&[
        "x509",
        "-in",
        path(&cert_file),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    assert!(
        fingerprint
            .to_lowercase()
            .replace(':', "")
            .contains(&device.cert_sha256),
        "{fingerprint} vs {}",
        device.cert_sha256
    );

    // Single use: the same code again, even with a fresh key, is refused.
    let (_, csr2) = device_key_and_csr("second").expect("csr");
    let (status, body) = enrol(&client, &hub, &codes[0].claim, &csr2).await;
    assert_eq!(status, 403, "a used code is refused: {body}");
    assert_eq!(db.devices().await.expect("db").len(), 1);

    // Codes are compared as typed by a person: case, spaces and dashes do not matter.
    let typed = codes[1].claim.to_lowercase().replace('-', " ");
    let (status, body) = enrol(&client, &hub, &typed, &csr2).await;
    assert_eq!(status, 201, "{body}");

    // Audit: the enrolment is recorded; no claim code, in any form, is.
    let entries = db.audit_entries(1000, None).await.expect("audit");
    assert!(
        entries.iter().any(|e| e.action == "device.enroll"
            && e.target == device_id
            && e.outcome == "success"),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e.action == "device.enroll" && e.outcome == "denied"),
        "refused attempts are recorded too"
    );
    let log = serde_json::to_string(&entries)
        .expect("json")
        .to_uppercase();
    for code in codes.iter().chain(expired.iter()) {
        let plain = code.claim.replace('-', "");
        assert!(
            !log.contains(&code.claim) && !log.contains(&plain),
            "claim code in the audit log"
        );
    }
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_claim_codes_from_one_source_is_throttled() {
    let hub = TestHub::start().await;
    let source: std::net::IpAddr = "127.0.0.9".parse().expect("ip");
    let client = common::client(&hub, Some(source));
    let (_, csr) = device_key_and_csr("guess").expect("csr");
    let mut throttled = None;
    for i in 0..40 {
        let r = client
            .post(hub.url("/api/v1/devices/enroll"))
            .json(&json!({ "claim_code": format!("GUESS-{i:04}"), "csr_pem": csr }))
            .send()
            .await
            .expect("enrol");
        if r.status() == 429 {
            throttled = Some(r);
            break;
        }
        assert_eq!(r.status(), 403);
    }
    let r = throttled.expect("a flood of guesses is throttled (429)");
    assert!(r.headers().contains_key("retry-after"));
    // Only failures count: a device with a valid code behind the same address (a
    // factory line) still enrols.
    let product = product(&hub.hub.db, "cam-v2").await;
    let codes = hub
        .hub
        .db
        .create_claim_codes(&product, 1, 3600)
        .await
        .expect("codes");
    let (status, body) = enrol(&client, &hub, &codes[0].claim, &csr).await;
    assert_eq!(status, 201, "{body}");
    // Another source is not affected.
    let other = common::client(&hub, Some("127.0.0.10".parse().expect("ip")));
    let r = other
        .post(hub.url("/api/v1/devices/enroll"))
        .json(&json!({ "claim_code": "GUESS", "csr_pem": csr }))
        .send()
        .await
        .expect("enrol");
    assert_eq!(r.status(), 403);
    hub.hub.shutdown().await;
}
