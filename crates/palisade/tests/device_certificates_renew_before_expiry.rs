//! AUTH-10, ENC-3: device certificates are short-lived and the real agent renews its
//! certificate before expiry over its mutually authenticated MQTT connection, with a
//! NEW key made on the device each time. After success the old key is gone (the key
//! file holds the new one, mode 0600, and no leftover copy exists), the hub accepts
//! the new certificate and retires the old one once the device connects with it, the
//! renewal is audited, and telemetry keeps flowing.
//!
//! The attacks that must fail: a renewal too early (a fresh certificate), a renewal
//! presenting another device's certificate, a renewal for a revoked device, and a
//! retired certificate connecting again. Until the new certificate is used the old one
//! stays valid, so a device that crashes mid-renewal is not locked out.

use palisade_agent::enroll::{ClaimCode, EnrollOptions, enroll};
use palisade_agent::limits::Limits;
use palisade_agent::run::{RunOptions, run};
use palisade_agent::telemetry::{Source, parse_fields};
use palisade_hub::config::Config;
use palisade_hub::db::certificates::RenewalRefusal;
use palisade_hub::db::devices::{DeviceStatus, FieldKind, FieldSpec, ProductModel};
use palisade_hub::ids::ProductId;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// The shortest lifetime the hub allows: the agent renews after half of it.
const LIFETIME_SECS: i64 = 60;

fn cert_sha256(path: &std::path::Path) -> String {
    let der = CertificateDer::pem_file_iter(path)
        .expect("certificate file")
        .next()
        .expect("one certificate")
        .expect("PEM");
    palisade_crypto::token::sha256_hex(der.as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth10_the_agent_renews_with_a_new_key_and_the_old_one_is_gone() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::for_data_dir(&dir.path().join("hub"));
    config.limits.device_cert_lifetime_secs = LIFETIME_SECS;
    let hub = palisade_hub::start(config).await.expect("hub");
    let db = &hub.db;
    let product = ProductId::parse("renew-v1").expect("id");
    db.create_product(&ProductModel {
        id: product.clone(),
        name: "Renewing thermometer".into(),
        hardware_revision: "a".into(),
        fields: vec![FieldSpec {
            name: "temperature".into(),
            kind: FieldKind::Number,
            unit: "°C".into(),
            purpose: "shown to the owner".into(),
            personal: false,
            retention_days: None,
            optional: false,
        }],
        created_at: 0,
    })
    .await
    .expect("product");
    let codes = db
        .create_claim_codes(&product, 2, 3600)
        .await
        .expect("codes");
    let ca_pem = std::fs::read(&hub.ca_cert_path).expect("ca");
    let state_dir = dir.path().join("agent");
    enroll(EnrollOptions {
        hub_url: hub.url(),
        ca_pem: ca_pem.clone(),
        claim_code: ClaimCode::new(codes[0].claim.clone()).expect("code"),
        state_dir: state_dir.clone(),
        limits: Limits::default(),
    })
    .await
    .expect("the agent enrols");
    let device = db.devices().await.expect("devices")[0].clone();
    let old_fp = device.cert_sha256.clone();
    assert_eq!(cert_sha256(&state_dir.join("device.pem")), old_fp);
    assert!(
        device.cert_not_after <= palisade_hub::db::now() + LIFETIME_SECS + 1,
        "the configured short lifetime applies"
    );
    let old_key = std::fs::read(state_dir.join("device.key")).expect("key");

    // Too early: a fresh certificate cannot be renewed.
    let now = palisade_hub::db::now();
    assert!(matches!(
        db.renewal_allowed(&device.id, &old_fp, now)
            .await
            .expect("db"),
        Err(RenewalRefusal::TooEarly { .. })
    ));

    let limits = Limits {
        renew_remaining_percent: 50,
        renew_retry: Duration::from_secs(1),
        ..Limits::default()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(run(
        RunOptions {
            state_dir: state_dir.clone(),
            source: Source::Simulate {
                fields: parse_fields("temperature:number").expect("fields"),
                interval: Duration::from_millis(500),
            },
            limits,
        },
        stopped,
    ));

    // Renewed (half the lifetime in) and in use: the hub's current certificate is the
    // agent's new one, and the old one was retired when the device connected with it.
    let mut renewed = false;
    for _ in 0..200 {
        let current = db.device(&device.id).await.expect("db").expect("device");
        if current.cert_sha256 != old_fp
            && db
                .device_by_certificate(&old_fp)
                .await
                .expect("db")
                .is_none()
            && hub.state.fleet.is_connected(&device.id)
        {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        renewed,
        "the agent renewed its certificate and reconnected with it"
    );
    let current = db.device(&device.id).await.expect("db").expect("device");
    assert_eq!(
        cert_sha256(&state_dir.join("device.pem")),
        current.cert_sha256
    );
    let agent_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("agent.json")).expect("agent.json"))
            .expect("json");
    assert_eq!(agent_json["not_after"], current.cert_not_after);

    // The old key is gone: a new key in its place, 0600, no copy left behind.
    let new_key = std::fs::read(state_dir.join("device.key")).expect("key");
    assert_ne!(new_key, old_key, "a new key pair was made");
    let mode = std::fs::metadata(state_dir.join("device.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    for leftover in [
        "device.key.old",
        "renewal.json",
        ".renewal.json.tmp",
        ".device.key.tmp",
    ] {
        assert!(!state_dir.join(leftover).exists(), "{leftover} left behind");
    }
    let audit = db
        .audit_entries_for_target(device.id.as_str(), 50)
        .await
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "device.certificate.renew" && e.outcome == "success"),
        "the renewal is audited"
    );

    // Telemetry keeps flowing over the new connection.
    let before = db.telemetry(&device.id, 10_000).await.expect("t").len();
    let mut flowing = false;
    for _ in 0..100 {
        if db.telemetry(&device.id, 10_000).await.expect("t").len() > before {
            flowing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(flowing, "telemetry stored after the renewal");

    // The attacks. The retired certificate is no longer any device's.
    assert!(
        db.device_by_certificate(&old_fp)
            .await
            .expect("db")
            .is_none()
    );
    // A second device cannot renew by presenting the first device's certificate, and
    // no renewal can be recorded for it with that certificate.
    let other_id = palisade_hub::ids::DeviceId::generate();
    let (_, csr) = palisade_crypto::ca::device_key_and_csr(device.id.as_str()).expect("csr");
    let other_cert = hub
        .state
        .hub_ca
        .issue_device_for(&csr, other_id.as_str(), LIFETIME_SECS)
        .expect("cert");
    db.enroll_device(
        &codes[1].claim,
        &other_id,
        &other_cert.sha256,
        other_cert.not_after,
    )
    .await
    .expect("db")
    .expect("enrolled");
    let later = palisade_hub::db::now() + LIFETIME_SECS;
    assert_eq!(
        db.renewal_allowed(&other_id, &current.cert_sha256, later)
            .await
            .expect("db"),
        Err(RenewalRefusal::Superseded)
    );
    assert!(
        !db.record_renewed_certificate(
            &other_id,
            &current.cert_sha256,
            "f".repeat(64).as_str(),
            later,
            later
        )
        .await
        .expect("db")
    );

    // No lock-out: a renewal recorded but never used leaves the old certificate valid.
    let unused = "e".repeat(64);
    assert!(
        db.record_renewed_certificate(
            &other_id,
            &other_cert.sha256,
            &unused,
            later,
            palisade_hub::db::now()
        )
        .await
        .expect("db")
    );
    assert!(
        db.device_by_certificate(&other_cert.sha256)
            .await
            .expect("db")
            .is_some()
    );
    assert!(
        db.device_by_certificate(&unused)
            .await
            .expect("db")
            .is_some()
    );
    // Asking again at once with the old certificate is too often.
    assert_eq!(
        db.renewal_allowed(&other_id, &other_cert.sha256, palisade_hub::db::now())
            .await
            .expect("db"),
        Err(RenewalRefusal::TooOften)
    );

    // A revoked device cannot renew, however late.
    assert!(
        db.set_device_status(&device.id, DeviceStatus::Revoked)
            .await
            .expect("revoke")
    );
    hub.state.fleet.disconnect(&device.id);
    assert_eq!(
        db.renewal_allowed(&device.id, &current.cert_sha256, later)
            .await
            .expect("db"),
        Err(RenewalRefusal::NotActive)
    );
    assert!(
        !db.record_renewed_certificate(
            &device.id,
            &current.cert_sha256,
            "d".repeat(64).as_str(),
            later,
            later
        )
        .await
        .expect("db")
    );

    stop.send(true).expect("stop");
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    hub.shutdown().await;
}
