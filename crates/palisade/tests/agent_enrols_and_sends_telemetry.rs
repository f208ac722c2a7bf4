//! AUTH-10, ENC-1, ENC-2, ENC-3, DATA-1: the real agent against the real hub. The agent
//! makes its key on the device, enrols over HTTPS with the hub CA pinned and a claim
//! code, connects over MQTT with its client certificate, and its telemetry is stored;
//! the claim code cannot be used twice; revoking the device stops its data at once.

use palisade_agent::enroll::{ClaimCode, EnrollOptions, enroll};
use palisade_agent::limits::Limits;
use palisade_agent::run::{RunOptions, run};
use palisade_agent::telemetry::{Source, parse_fields};
use palisade_hub::config::Config;
use palisade_hub::db::devices::{DeviceStatus, FieldKind, FieldSpec, ProductModel};
use palisade_hub::ids::ProductId;
use std::time::Duration;

fn field(name: &str) -> FieldSpec {
    FieldSpec {
        name: name.into(),
        kind: FieldKind::Number,
        unit: String::new(),
        purpose: format!("{name} shown to the owner"),
        personal: false,
        retention_days: None,
        optional: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_enrols_connects_and_its_telemetry_is_stored() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = palisade_hub::start(Config::for_data_dir(&dir.path().join("hub")))
        .await
        .expect("hub");
    let product = ProductId::parse("thermo-v1").expect("id");
    hub.db
        .create_product(&ProductModel {
            id: product.clone(),
            name: "Thermometer".into(),
            hardware_revision: "rev-a".into(),
            fields: vec![field("temperature"), field("humidity")],
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
    let options = EnrollOptions {
        hub_url: hub.url(),
        ca_pem: ca_pem.clone(),
        claim_code: ClaimCode::new(codes[0].claim.clone()).expect("code"),
        state_dir: state_dir.clone(),
        limits: Limits::default(),
    };
    let enrolled = enroll(options).await.expect("the agent enrols");
    let device_json = std::fs::read_to_string(state_dir.join("agent.json")).expect("agent.json");
    let devices = hub.db.devices().await.expect("devices");
    assert_eq!(devices.len(), 1);
    let device = devices[0].clone();
    assert!(device_json.contains(device.id.as_str()), "{device_json}");
    let _ = enrolled;

    // The same claim code cannot enrol a second device.
    let again = EnrollOptions {
        hub_url: hub.url(),
        ca_pem,
        claim_code: ClaimCode::new(codes[0].claim.clone()).expect("code"),
        state_dir: dir.path().join("second"),
        limits: Limits::default(),
    };
    assert!(enroll(again).await.is_err(), "a used claim code is refused");
    assert_eq!(hub.db.devices().await.expect("devices").len(), 1);

    // Run the agent: simulated telemetry every 200 ms until a few rows are stored.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(run(
        RunOptions {
            state_dir: state_dir.clone(),
            source: Source::Simulate {
                fields: parse_fields("temperature:number,humidity:number").expect("fields"),
                interval: Duration::from_millis(200),
            },
            limits: Limits::default(),
        },
        stopped,
    ));
    let mut stored = Vec::new();
    for _ in 0..150 {
        stored = hub.db.telemetry(&device.id, 100).await.expect("telemetry");
        if stored.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stored.len() >= 3,
        "telemetry from the agent is stored: {}",
        stored.len()
    );
    let sample: serde_json::Value = serde_json::from_str(&stored[0].1).expect("json");
    assert!(
        sample["temperature"].is_number() && sample["humidity"].is_number(),
        "{sample}"
    );
    assert!(
        hub.state.fleet.is_connected(&device.id),
        "the device holds a live connection"
    );
    // The agent's state report names its own version (SUP-3).
    let mut version = String::new();
    for _ in 0..50 {
        version = hub
            .db
            .device(&device.id)
            .await
            .expect("db")
            .expect("device")
            .agent_version;
        if !version.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(version, env!("CARGO_PKG_VERSION"));

    // Revocation drops the live connection at once, and no more data is accepted.
    assert!(
        hub.db
            .set_device_status(&device.id, DeviceStatus::Revoked)
            .await
            .expect("revoke")
    );
    assert!(hub.state.fleet.disconnect(&device.id));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_revoke = hub
        .db
        .telemetry(&device.id, 10_000)
        .await
        .expect("telemetry")
        .len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        hub.db
            .telemetry(&device.id, 10_000)
            .await
            .expect("telemetry")
            .len(),
        after_revoke,
        "nothing stored after revocation"
    );
    assert!(!hub.state.fleet.is_connected(&device.id));

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    hub.shutdown().await;
}
