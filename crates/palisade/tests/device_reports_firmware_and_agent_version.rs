//! SUP-3, ACC-5: the real agent against the real hub. Given the maker's firmware
//! version (`run --firmware-version`, kept in its state directory), the agent reports it
//! next to its own version in its state report; the hub stores both and the API shows
//! both to the device's owner. Attack: a version that is not bounded printable text is
//! refused by the agent, and a state report carrying one does not overwrite what the
//! hub shows.

use palisade_agent::enroll::{ClaimCode, EnrollOptions, enroll};
use palisade_agent::limits::Limits;
use palisade_agent::run::{RunOptions, run, set_firmware_version};
use palisade_agent::telemetry::Source;
use palisade_hub::config::Config;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{DeviceId, Email, ProductId, Username};
use serde_json::Value;
use std::time::Duration;

/// Wait (bounded, 20 s) until `check` holds.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maker_firmware_version_and_the_agent_version_are_both_shown() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = palisade_hub::start(Config::for_data_dir(&dir.path().join("hub")))
        .await
        .expect("hub");
    let product = ProductId::parse("lock-v3").expect("id");
    hub.db
        .create_product(&ProductModel {
            id: product.clone(),
            name: "Door lock".into(),
            hardware_revision: "C".into(),
            fields: vec![FieldSpec {
                name: "locked".into(),
                kind: FieldKind::Boolean,
                unit: String::new(),
                purpose: "door state shown to the owner".into(),
                personal: false,
                retention_days: None,
                optional: false,
            }],
            created_at: 0,
        })
        .await
        .expect("product");
    let codes = hub
        .db
        .create_claim_codes(&product, 1, 3600)
        .await
        .expect("codes");
    let ca_pem = std::fs::read(&hub.ca_cert_path).expect("ca");
    let state_dir = dir.path().join("agent");
    let config = enroll(EnrollOptions {
        hub_url: hub.url(),
        ca_pem: ca_pem.clone(),
        claim_code: ClaimCode::new(codes[0].claim.clone()).expect("code"),
        state_dir: state_dir.clone(),
        limits: Limits::default(),
    })
    .await
    .expect("the agent enrols");
    let device = DeviceId::parse(&config.device_id).expect("id");

    // Attack: control characters or an overlong version are refused on the device.
    for bad in ["1.0\n<script>", "", &"9".repeat(65)] {
        assert!(
            set_firmware_version(&state_dir, bad).is_err(),
            "{bad:?} accepted"
        );
    }
    set_firmware_version(&state_dir, "acme-lock 3.2.1").expect("firmware version");

    let owner = hub
        .db
        .insert_user(NewUser {
            username: &Username::parse("owner-olive").expect("username"),
            email: &Email::parse("olive@example.org").expect("email"),
            role: Role::Owner,
            status: Status::Active,
            password_hash: None,
        })
        .await
        .expect("owner");
    hub.db
        .claim_device(&codes[0].pairing, &owner.id)
        .await
        .expect("claim");
    let (_, token) = hub
        .db
        .create_api_token(&owner.id, "e2e", 3600)
        .await
        .expect("token");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(run(
        RunOptions {
            state_dir: state_dir.clone(),
            source: Source::None,
            limits: Limits::default(),
        },
        stopped,
    ));
    let agent_version = env!("CARGO_PKG_VERSION");
    assert!(
        eventually(async || {
            let d = hub.db.device(&device).await.expect("db").expect("device");
            d.firmware_version == "acme-lock 3.2.1" && d.agent_version == agent_version
        })
        .await,
        "both versions stored: {:?}",
        hub.db.device(&device).await.expect("db")
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("ca pem"))
        .build()
        .expect("client");
    let shown: Value = client
        .get(format!("{}/api/v1/devices/{device}", hub.url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["firmware_version"], "acme-lock 3.2.1", "{shown}");
    assert_eq!(shown["agent_version"], agent_version, "{shown}");
    assert_eq!(shown["product_id"], "lock-v3", "{shown}");
    assert!(shown["cert_sha256"].as_str().is_some_and(|s| s.len() == 64));

    // A report with a version that is not bounded printable text changes nothing.
    palisade_hub::devices_lifecycle::record_state(
        &hub.db,
        &device,
        br#"{"firmware_version":"x\u0007<b>","agent_version":""}"#,
    )
    .await
    .expect("report");
    let d = hub.db.device(&device).await.expect("db").expect("device");
    assert_eq!(d.firmware_version, "acme-lock 3.2.1");
    assert_eq!(d.agent_version, agent_version);

    hub.shutdown().await;
}
