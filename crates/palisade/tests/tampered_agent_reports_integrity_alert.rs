//! INT-1: the real agent against the real hub. A device is enrolled, claimed and runs
//! cleanly (its factory slot image is recorded at that first start). Then the attack:
//! the slot image is modified on disk while the agent is stopped. At the next start
//! the agent detects it, publishes only an integrity alert on `devices/{id}/events`
//! and sends no telemetry; the hub stores the event, audits it and puts a security
//! notice in the owner's and the administrator's inbox (e-mailed once).
//! `palisade-agent status` says why. The image repaired, the agent runs normally
//! again (negative case: untouched files raise no alert and telemetry flows). Then the
//! same for an edit of the agent's configuration (`agent.json`).

use palisade_agent::enroll::{ClaimCode, EnrollOptions, enroll};
use palisade_agent::limits::Limits;
use palisade_agent::run::{RunOptions, run};
use palisade_agent::telemetry::{Source, parse_fields};
use palisade_agent::update::{Options, Source as UpdateSource, status_text};
use palisade_hub::config::Config;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::notices::NoticeKind;
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{DeviceId, Email, ProductId, Username};
use std::path::Path;
use std::time::Duration;

/// Wait (bounded, 30 s) until `check` holds.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..150 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<palisade_agent::Result<()>>,
}

fn start(state_dir: &Path) -> Running {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(
        RunOptions {
            state_dir: state_dir.to_owned(),
            source: Source::Simulate {
                fields: parse_fields("temperature:number").expect("fields"),
                interval: Duration::from_millis(200),
            },
            limits: Limits::default(),
        },
        stopped,
    ));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let ended = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the agent stops")
            .expect("join");
        ended.expect("the agent ends cleanly");
    }
}

fn status(state_dir: &Path) -> String {
    status_text(&Options {
        state_dir: state_dir.to_owned(),
        slots_dir: Options::default_slots_dir(state_dir),
        install_command: None,
        health_command: None,
        health_timeout: Duration::from_secs(60),
        source: UpdateSource::Hub,
    })
    .expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_agent_reports_integrity_alert_and_sends_nothing_else() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = palisade_hub::start(Config::for_data_dir(&dir.path().join("hub")))
        .await
        .expect("hub");
    let product = ProductId::parse("lock-v1").expect("id");
    hub.db
        .create_product(&ProductModel {
            id: product.clone(),
            name: "Door lock".into(),
            hardware_revision: "rev-a".into(),
            fields: vec![FieldSpec {
                name: "temperature".into(),
                kind: FieldKind::Number,
                unit: String::new(),
                purpose: "battery health".into(),
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
    let user = async |name: &str, role: Role| {
        hub.db
            .insert_user(NewUser {
                username: &Username::parse(name).expect("username"),
                email: &Email::parse(&format!("{name}@example.org")).expect("email"),
                role,
                status: Status::Active,
                password_hash: None,
            })
            .await
            .expect("user")
    };
    let owner = user("owner-olga", Role::Owner).await;
    let admin = user("admin-ada", Role::Admin).await;

    let state_dir = dir.path().join("agent");
    enroll(EnrollOptions {
        hub_url: hub.url(),
        ca_pem: std::fs::read(&hub.ca_cert_path).expect("ca"),
        claim_code: ClaimCode::new(codes[0].claim.clone()).expect("code"),
        state_dir: state_dir.clone(),
        limits: Limits::default(),
    })
    .await
    .expect("the agent enrols");
    let device: DeviceId = hub.db.devices().await.expect("devices")[0].id.clone();
    hub.db
        .claim_device(&codes[0].pairing, &owner.id)
        .await
        .expect("claim");
    // The factory image in slot a.
    let image = state_dir.join("slots/a/image");
    std::fs::create_dir_all(image.parent().expect("slot dir")).expect("slot dir");
    std::fs::write(&image, b"factory firmware 1.0.0").expect("image");

    let rows = async || {
        hub.db
            .telemetry(&device, 100_000)
            .await
            .expect("rows")
            .len()
    };
    // A message a stopped agent sent just before it stopped may still be on its way into
    // storage: count once the number has stopped moving (bounded wait).
    let settled_rows = async || {
        let mut count = rows().await;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = rows().await;
            if now == count {
                break;
            }
            count = now;
        }
        count
    };
    let integrity_events = async || {
        hub.db
            .device_events(&device, 200)
            .await
            .expect("events")
            .into_iter()
            .filter(|e| e.name == "integrity")
            .collect::<Vec<_>>()
    };
    let notices = async |id| {
        hub.db
            .notices(id)
            .await
            .expect("notices")
            .into_iter()
            .filter(|n| n.kind == NoticeKind::Security && n.about.starts_with("integrity:"))
            .count()
    };

    // Negative case: untouched files, no alert, telemetry flows.
    let agent = start(&state_dir);
    assert!(
        eventually(async || rows().await >= 3).await,
        "telemetry flows"
    );
    agent.stop().await;
    assert!(integrity_events().await.is_empty());
    assert!(status(&state_dir).contains("integrity: no problem"));

    // The attack: the firmware image is modified on disk while the agent is stopped.
    std::fs::write(&image, b"factory firmware 1.0.0 + backdoor").expect("tamper");
    let before = settled_rows().await;
    let agent = start(&state_dir);
    assert!(
        eventually(async || !integrity_events().await.is_empty()).await,
        "the hub stores the integrity alert"
    );
    let event = integrity_events().await.remove(0);
    let what = event.payload["what"].to_string();
    assert!(what.contains("slot a image"), "{what}");
    assert!(
        eventually(async || notices(&owner.id).await == 1 && notices(&admin.id).await == 1).await,
        "owner and administrator get a security notice"
    );
    let audited = hub
        .db
        .audit_entries_for_target(device.as_str(), 100)
        .await
        .expect("audit");
    assert!(
        audited
            .iter()
            .any(|e| e.action == "device.integrity_alert" && e.detail.contains("slot a image")),
        "the alert is audited"
    );
    let text = status(&state_dir);
    assert!(
        text.contains("integrity: ALERT") && text.contains("slot a image"),
        "{text}"
    );
    // Nothing else leaves the device: the simulated sensor would produce five samples a
    // second, none is stored.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rows().await, before, "no telemetry after the alert");
    agent.stop().await;
    // The same finding again at the next start tells no one twice.
    let agent = start(&state_dir);
    assert!(eventually(async || integrity_events().await.len() == 2).await);
    agent.stop().await;
    assert_eq!(notices(&owner.id).await, 1);

    // Repaired: the image is what was installed again; the agent runs normally.
    std::fs::write(&image, b"factory firmware 1.0.0").expect("repair");
    let agent = start(&state_dir);
    assert!(
        eventually(async || rows().await >= before + 3).await,
        "telemetry flows again"
    );
    agent.stop().await;
    assert!(status(&state_dir).contains("integrity: no problem"));
    assert_eq!(integrity_events().await.len(), 2);

    // The configuration is edited on disk (it still parses, the hub is still reachable).
    let config_path = state_dir.join("agent.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("agent.json")).expect("json");
    config["enrolled_at"] = serde_json::json!(1);
    std::fs::write(&config_path, serde_json::to_vec(&config).expect("json")).expect("edit");
    let before = settled_rows().await;
    let agent = start(&state_dir);
    assert!(
        eventually(async || integrity_events().await.len() == 3).await,
        "the configuration change is reported"
    );
    let newest = integrity_events().await.remove(0);
    assert!(
        newest.payload["what"].to_string().contains("agent.json"),
        "{}",
        newest.payload
    );
    assert!(
        eventually(async || notices(&owner.id).await == 2).await,
        "a new finding is a new notice"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rows().await, before, "no telemetry after the alert");
    agent.stop().await;
    hub.shutdown().await;
}
