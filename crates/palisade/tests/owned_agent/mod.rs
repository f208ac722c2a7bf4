//! Shared set-up for tests where an owner's switch on the hub must reach the real agent:
//! a hub with a `tracker-v1` model (`temperature` required, `location` optional), one
//! agent enrolled with a claim code and claimed by an owner, API tokens for that owner
//! and for an operator, and an HTTPS client that trusts the hub CA.

use palisade_agent::enroll::{ClaimCode, EnrollOptions, enroll};
use palisade_agent::limits::Limits;
use palisade_hub::RunningHub;
use palisade_hub::config::Config;
use palisade_hub::db::devices::{Device, FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{Email, ProductId, Username};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Wait (bounded, 30 s) until `check` holds.
pub async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..150 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn field(name: &str, optional: bool) -> FieldSpec {
    FieldSpec {
        name: name.into(),
        kind: FieldKind::Number,
        unit: String::new(),
        purpose: format!("{name} shown to the owner"),
        personal: optional,
        retention_days: None,
        optional,
    }
}

pub struct OwnedAgent {
    pub hub: RunningHub,
    /// Keeps the hub's and the agent's directories alive.
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub device: Device,
    pub client: reqwest::Client,
    pub owner: String,
    pub operator: String,
}

impl OwnedAgent {
    /// Start the hub, enrol the agent (not yet running) and let the owner claim it.
    pub async fn start() -> OwnedAgent {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = palisade_hub::start(Config::for_data_dir(&dir.path().join("hub")))
            .await
            .expect("hub");
        let product = ProductId::parse("tracker-v1").expect("id");
        hub.db
            .create_product(&ProductModel {
                id: product.clone(),
                name: "Tracker".into(),
                hardware_revision: "rev-a".into(),
                fields: vec![field("temperature", false), field("location", true)],
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
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("ca pem"))
            .build()
            .expect("client");
        let token_for = async |name: &str, role: Role| {
            let user = hub
                .db
                .insert_user(NewUser {
                    username: &Username::parse(name).expect("username"),
                    email: &Email::parse(&format!("{name}@example.org")).expect("email"),
                    role,
                    status: Status::Active,
                    password_hash: None,
                })
                .await
                .expect("user");
            hub.db
                .create_api_token(&user.id, "e2e", 3600)
                .await
                .expect("token")
                .1
        };
        let owner = token_for("owner-olga", Role::Owner).await;
        let operator = token_for("ops-otto", Role::Operator).await;
        let claimed = client
            .post(format!("{}/api/v1/devices/claim", hub.url()))
            .bearer_auth(&owner)
            .json(&json!({ "pairing_code": codes[0].pairing }))
            .send()
            .await
            .expect("claim");
        assert!(claimed.status().is_success(), "{}", claimed.status());
        OwnedAgent {
            hub,
            dir,
            state_dir,
            device,
            client,
            owner,
            operator,
        }
    }
}
