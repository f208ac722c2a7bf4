//! DATA-3, ACC-3, AUTH-10: the real agent's factory reset against the real hub. Before
//! wiping, `palisade-agent reset` tells the hub with its current certificate; the hub
//! marks the device `decommissioned`, clears its owner, deletes its telemetry, audits
//! it and closes the connection. From then on the old certificate is refused (attack:
//! a copy of the old key and certificate kept from before the reset), the previous
//! owner's API calls for the device answer 404, and the reset device enrols again with
//! its claim code as a NEW device that the next owner claims with the label's pairing
//! code; the previous owner sees nothing of it. Attack: another device cannot
//! decommission this one (its reset notice on this device's topic is refused).

use palisade_agent::enroll::{ClaimCode, EnrollOptions, enroll};
use palisade_agent::limits::Limits;
use palisade_agent::mqtt::{Session, Target};
use palisade_agent::reset::{HubNotice, RESET_EVENT, factory_reset};
use palisade_agent::run::{RunOptions, run};
use palisade_agent::state::StateDir;
use palisade_agent::telemetry::{Source, parse_fields};
use palisade_hub::config::Config;
use palisade_hub::db::device_admin::ClaimOutcome;
use palisade_hub::db::devices::{DeviceStatus, FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{Email, ProductId, UserId, Username};
use std::path::Path;
use std::sync::Arc;
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

async fn owner(hub: &palisade_hub::RunningHub, name: &str) -> (UserId, String) {
    let user = hub
        .db
        .insert_user(NewUser {
            username: &Username::parse(name).expect("username"),
            email: &Email::parse(&format!("{name}@example.org")).expect("email"),
            role: Role::Owner,
            status: Status::Active,
            password_hash: None,
        })
        .await
        .expect("owner");
    let (_, token) = hub
        .db
        .create_api_token(&user.id, "e2e", 3600)
        .await
        .expect("token");
    (user.id, token)
}

/// A connection as the device in `state_dir` (or a copy of its files).
fn target(state_dir: &Path) -> Target {
    let identity = StateDir::new(state_dir).load_identity().expect("identity");
    let tls = palisade_agent::tls::client_config(
        &identity.ca_pem,
        Some((identity.cert_chain, identity.key)),
    )
    .expect("tls");
    Target {
        host: identity.config.mqtt_host.clone(),
        port: identity.config.mqtt_port,
        device_id: identity.config.device_id,
        tls: Arc::new(tls),
    }
}

/// `mosquitto_pub` (MQTT 5, QoS 1, debug output) with the files in `state_dir`.
fn mosquitto_pub(state_dir: &Path, port: u16, topic: &str, message: &str) -> String {
    let path = |name: &str| state_dir.join(name).display().to_string();
    let mut child = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["--cafile", &path("ca.pem")])
        .args(["--cert", &path("device.pem"), "--key", &path("device.key")])
        .args(["-V", "mqttv5", "-q", "1", "-t", topic, "-m", message, "-d"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
    for _ in 0..100 {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn copy_identity(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for name in ["device.key", "device.pem", "ca.pem", "agent.json"] {
        std::fs::copy(from.join(name), to.join(name)).expect("copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_reset_decommissions_the_device_and_it_returns_as_a_new_one() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = palisade_hub::start(Config::for_data_dir(&dir.path().join("hub")))
        .await
        .expect("hub");
    let product = ProductId::parse("cam-v2").expect("id");
    hub.db
        .create_product(&ProductModel {
            id: product.clone(),
            name: "Camera".into(),
            hardware_revision: "B".into(),
            fields: vec![FieldSpec {
                name: "temperature".into(),
                kind: FieldKind::Number,
                unit: String::new(),
                purpose: "shown to the owner".into(),
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
        .create_claim_codes(&product, 2, 3600)
        .await
        .expect("codes");
    let ca_pem = std::fs::read(&hub.ca_cert_path).expect("ca");
    let enrol = |code: &str, state_dir: &Path| EnrollOptions {
        hub_url: hub.url(),
        ca_pem: ca_pem.clone(),
        claim_code: ClaimCode::new(code.to_owned()).expect("code"),
        state_dir: state_dir.to_path_buf(),
        limits: Limits::default(),
    };
    let state_dir = dir.path().join("agent");
    let old_id = enroll(enrol(&codes[0].claim, &state_dir))
        .await
        .expect("the agent enrols")
        .device_id;
    let other_dir = dir.path().join("other-agent");
    enroll(enrol(&codes[1].claim, &other_dir))
        .await
        .expect("a second device enrols");
    let old = palisade_hub::ids::DeviceId::parse(&old_id).expect("id");

    // Anna owns the device; it sends telemetry for a while.
    let (anna, anna_token) = owner(&hub, "owner-anna").await;
    let (bert, bert_token) = owner(&hub, "owner-bert").await;
    assert!(matches!(
        hub.db
            .claim_device(&codes[0].pairing, &anna)
            .await
            .expect("claim"),
        ClaimOutcome::Claimed(_)
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(run(
        RunOptions {
            state_dir: state_dir.clone(),
            source: Source::Simulate {
                fields: parse_fields("temperature:number").expect("fields"),
                interval: Duration::from_millis(200),
            },
            limits: Limits::default(),
        },
        stopped,
    ));
    assert!(
        eventually(async || hub.db.telemetry(&old, 10).await.expect("db").len() >= 2).await,
        "telemetry stored"
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("ca pem"))
        .build()
        .expect("client");
    let get = async |token: &str, path: &str| {
        client
            .get(format!("{}{path}", hub.url()))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
            .status()
            .as_u16()
    };
    assert_eq!(
        get(&anna_token, &format!("/api/v1/devices/{old}")).await,
        200
    );

    // Attack: the other device publishes a reset notice on this device's topic.
    let out = mosquitto_pub(
        &other_dir,
        hub.mqtt_addr.port(),
        &format!("devices/{old}/events"),
        RESET_EVENT,
    );
    assert!(out.contains("received PUBACK (Mid: 1, RC:135)"), "{out}");
    let still = hub.db.device(&old).await.expect("db").expect("device");
    assert_eq!(still.status, DeviceStatus::Active);
    assert_eq!(still.owner_id.as_ref(), Some(&anna));

    // Keep a copy of the identity, as a thief or a careless reseller might.
    let copy = dir.path().join("copied-identity");
    copy_identity(&state_dir, &copy);

    // The factory reset: the hub is told, then everything is wiped.
    let report = factory_reset(&state_dir, &Limits::default())
        .await
        .expect("reset");
    assert_eq!(report.hub, HubNotice::Acknowledged);
    assert!(!report.wiped.is_empty());
    for name in ["device.key", "device.pem", "agent.json", "telemetry.queue"] {
        assert!(!state_dir.join(name).exists(), "{name} left behind");
    }

    // The hub: decommissioned, no owner, no data, audited, connection gone.
    let gone = hub
        .db
        .device(&old)
        .await
        .expect("db")
        .expect("device row kept");
    assert_eq!(gone.status, DeviceStatus::Decommissioned);
    assert_eq!(gone.owner_id, None);
    assert!(hub.db.telemetry(&old, 10).await.expect("db").is_empty());
    assert!(
        eventually(async || !hub.state.fleet.is_connected(&old)).await,
        "the reset connection is closed"
    );
    let audit = hub
        .db
        .audit_entries_for_target(old.as_str(), 50)
        .await
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "device.decommission" && e.outcome == "success"),
        "{audit:?}"
    );

    // Attack: the copied certificate is refused from now on.
    let limits = Limits {
        connect_timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    let refused = Session::establish(
        &target(&copy),
        &limits,
        &serde_json::json!({"status": "offline"}),
    )
    .await;
    assert!(
        matches!(refused, Err(palisade_agent::Error::ConnectRefused(_))),
        "old certificate refused: {refused:?}"
    );

    // The previous owner has no access: the device is gone from their list, and its id
    // answers 404 like any other device they do not own.
    assert_eq!(
        get(&anna_token, &format!("/api/v1/devices/{old}")).await,
        404
    );
    assert_eq!(
        get(&anna_token, &format!("/api/v1/devices/{old}/commands")).await,
        404
    );
    assert!(hub.db.devices_owned_by(&anna).await.expect("db").is_empty());

    // Enrolling again with the same claim code gives a NEW device, without owner.
    let again = enroll(enrol(&codes[0].claim, &state_dir))
        .await
        .expect("the reset device enrols again");
    assert_ne!(again.device_id, old_id, "a new identity");
    let new = palisade_hub::ids::DeviceId::parse(&again.device_id).expect("id");
    let fresh = hub.db.device(&new).await.expect("db").expect("device");
    assert_eq!(fresh.status, DeviceStatus::Active);
    assert_eq!(fresh.owner_id, None);
    assert!(hub.db.telemetry(&new, 10).await.expect("db").is_empty());
    // The claim code is single-use again: a second enrolment with it fails.
    assert!(
        enroll(enrol(&codes[0].claim, &dir.path().join("third")))
            .await
            .is_err()
    );

    // The next owner claims it with the label's pairing code; the previous owner
    // cannot take it back and sees neither the old nor the new device.
    assert!(matches!(
        hub.db
            .claim_device(&codes[0].pairing, &bert)
            .await
            .expect("claim"),
        ClaimOutcome::Claimed(_)
    ));
    assert!(matches!(
        hub.db
            .claim_device(&codes[0].pairing, &anna)
            .await
            .expect("claim"),
        ClaimOutcome::OwnedByAnother
    ));
    assert_eq!(
        get(&bert_token, &format!("/api/v1/devices/{new}")).await,
        200
    );
    assert_eq!(
        get(&bert_token, &format!("/api/v1/devices/{old}")).await,
        404
    );
    assert_eq!(
        get(&anna_token, &format!("/api/v1/devices/{new}")).await,
        404
    );

    hub.shutdown().await;
}
