//! ENC-4: the real agent against the real hub. An operator sends `ping` through the
//! API; the agent receives it on its commands topic, executes it and reports "ok",
//! which the hub records. The same command delivered again (a replay, pushed through
//! the hub's own delivery path with the old payload) is rejected by the agent, and the
//! hub records the rejection in the audit log while the first result stands.

use palisade_agent::enroll::{ClaimCode, EnrollOptions, enroll};
use palisade_agent::limits::Limits;
use palisade_agent::run::{RunOptions, run};
use palisade_agent::telemetry::{Source, parse_fields};
use palisade_hub::config::Config;
use palisade_hub::db::commands::CommandStatus;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{Email, ProductId, Username};
use serde_json::{Value, json};
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
async fn agent_executes_a_command_once_and_refuses_its_replay() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = palisade_hub::start(Config::for_data_dir(&dir.path().join("hub")))
        .await
        .expect("hub");
    let product = ProductId::parse("plug-v1").expect("id");
    hub.db
        .create_product(&ProductModel {
            id: product.clone(),
            name: "Plug".into(),
            hardware_revision: "rev-a".into(),
            fields: vec![FieldSpec {
                name: "watts".into(),
                kind: FieldKind::Number,
                unit: "W".into(),
                purpose: "energy use shown to the owner".into(),
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
    enroll(EnrollOptions {
        hub_url: hub.url(),
        ca_pem: ca_pem.clone(),
        claim_code: ClaimCode::new(codes[0].claim.clone()).expect("code"),
        state_dir: state_dir.clone(),
        limits: Limits::default(),
    })
    .await
    .expect("the agent enrols");
    let device = hub.db.devices().await.expect("devices")[0].clone();

    // An operator with an API token.
    let operator = hub
        .db
        .insert_user(NewUser {
            username: &Username::parse("ops-otto").expect("username"),
            email: &Email::parse("otto@example.org").expect("email"),
            role: Role::Operator,
            status: Status::Active,
            password_hash: None,
        })
        .await
        .expect("operator");
    let (_, token) = hub
        .db
        .create_api_token(&operator.id, "e2e", 3600)
        .await
        .expect("token");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("ca pem"))
        .build()
        .expect("client");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(run(
        RunOptions {
            state_dir: state_dir.clone(),
            source: Source::Simulate {
                fields: parse_fields("watts:number").expect("fields"),
                interval: Duration::from_secs(1),
            },
            limits: Limits::default(),
        },
        stopped,
    ));
    assert!(
        eventually(async || hub.state.fleet.is_connected(&device.id)).await,
        "the agent connects"
    );

    // `ping` through the API: delivered now or when the agent subscribes.
    let response = client
        .post(format!(
            "{}/api/v1/devices/{}/commands",
            hub.url(),
            device.id
        ))
        .bearer_auth(&token)
        .json(&json!({ "name": "ping", "args": {}, "ttl_secs": 300 }))
        .send()
        .await
        .expect("POST command");
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["seq"], 1, "{created}");
    assert!(
        eventually(async || {
            hub.db
                .command(&device.id, 1)
                .await
                .expect("command")
                .is_some_and(|c| c.status == CommandStatus::Ok)
        })
        .await,
        "the agent executed ping and its \"ok\" is recorded: {:?}",
        hub.db.command(&device.id, 1).await
    );

    // Replay: the very same payload delivered again through the hub's delivery path.
    let first = hub
        .db
        .command(&device.id, 1)
        .await
        .expect("command")
        .expect("seq 1");
    assert!(
        hub.state.fleet.send_command(&device.id, first.payload()),
        "the live, subscribed connection takes the replayed payload"
    );
    let replay_refused = async || {
        hub.db
            .audit_entries(200, None)
            .await
            .expect("audit")
            .iter()
            .any(|e| {
                e.action == "device.command"
                    && e.outcome == "denied"
                    && e.target == device.id.as_str()
                    && e.detail.contains("repeated delivery of command 1")
            })
    };
    assert!(
        eventually(replay_refused).await,
        "the agent's rejection of the replay is recorded"
    );
    let after = hub
        .db
        .command(&device.id, 1)
        .await
        .expect("command")
        .expect("seq 1");
    assert_eq!(after.status, CommandStatus::Ok, "the first result stands");
    assert_eq!(after.completed_at, first.completed_at);

    // The owner-facing list shows it too (staff read it here).
    let list: Value = client
        .get(format!(
            "{}/api/v1/devices/{}/commands",
            hub.url(),
            device.id
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET commands")
        .json()
        .await
        .expect("json");
    assert_eq!(list[0]["seq"], 1, "{list}");
    assert_eq!(list[0]["result"], "ok", "{list}");

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    hub.shutdown().await;
}
