//! ACC-2, ACC-3, AUTH-10 (and IDOR): authorisation is per device. An owner claims a
//! device with the pairing code on its label and then sees only their own devices;
//! another owner's device id answers 404 exactly like an id that does not exist; a
//! device that already has an owner cannot be claimed away (409, without saying whose);
//! owners cannot revoke; administrators and operators see the whole fleet and revoke,
//! which drops the live connection at once.

mod common;

use common::{Browser, TestHub};
use palisade_crypto::ca::device_key_and_csr;
use palisade_hub::db::devices::{ClaimCode, DeviceStatus, FieldKind, FieldSpec, ProductModel};
use palisade_hub::ids::{DeviceId, ProductId};
use serde_json::{Value, json};

/// Enrol a device through the API, as its agent would; returns its id.
async fn enrol(hub: &TestHub, code: &ClaimCode) -> String {
    let client = common::client(hub, Some("127.0.0.7".parse().expect("ip")));
    let (_, csr) = device_key_and_csr("device").expect("csr");
    let r = client
        .post(hub.url("/api/v1/devices/enroll"))
        .json(&json!({ "claim_code": code.claim, "csr_pem": csr }))
        .send()
        .await
        .expect("enrol");
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.expect("json");
    body["device_id"].as_str().expect("id").to_owned()
}

async fn api_get(b: &mut Browser, path: &str) -> (u16, Value) {
    let page = b.get(path).await;
    (
        page.status,
        serde_json::from_str(&page.body).unwrap_or(Value::Null),
    )
}

async fn api_post(b: &mut Browser, path: &str, body: Value) -> (u16, Value) {
    let csrf = b.csrf.clone().expect("csrf token");
    let request = b
        .request(reqwest::Method::POST, path)
        .header("x-csrf-token", csrf)
        .json(&body);
    let page = b.send(request).await;
    (
        page.status,
        serde_json::from_str(&page.body).unwrap_or(Value::Null),
    )
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_see_and_claim_only_their_own_devices() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;
    let mut operator = hub.invite(&mut admin, "ops-olga", "operator").await;
    let mut anna = hub.invite(&mut admin, "owner-anna", "owner").await;
    let mut bert = hub.invite(&mut admin, "owner-bert", "owner").await;

    let product = ProductId::parse("thermo-v1").expect("id");
    db.create_product(&ProductModel {
        id: product.clone(),
        name: "Thermostat".into(),
        hardware_revision: "A".into(),
        fields: vec![FieldSpec {
            name: "temperature".into(),
            kind: FieldKind::Number,
            unit: "celsius".into(),
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
        .create_claim_codes(&product, 3, 3600)
        .await
        .expect("codes");
    let device_a = enrol(&hub, &codes[0]).await;
    let device_b = enrol(&hub, &codes[1]).await;

    // A pairing code of a device that has not enrolled yet: not claimable yet.
    let (status, body) = api_post(
        &mut anna,
        "/api/v1/devices/claim",
        json!({ "pairing_code": codes[2].pairing }),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    // Each owner claims their device with the pairing code from its label (as typed by
    // a person: lower case, spaces).
    let typed = codes[0].pairing.to_lowercase().replace('-', " ");
    let (status, body) = api_post(
        &mut anna,
        "/api/v1/devices/claim",
        json!({ "pairing_code": typed }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], device_a.as_str());
    let (status, body) = api_post(
        &mut bert,
        "/api/v1/devices/claim",
        json!({ "pairing_code": codes[1].pairing }),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A session's state change needs the CSRF token, JSON or not.
    let request = bert
        .request(reqwest::Method::POST, "/api/v1/devices/claim")
        .json(&json!({ "pairing_code": codes[0].pairing }));
    assert_eq!(bert.send(request).await.status, 403);

    // Attack: Bert claims Anna's device with its pairing code (say, read off the box).
    let (status, body) = api_post(
        &mut bert,
        "/api/v1/devices/claim",
        json!({ "pairing_code": codes[0].pairing }),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("anna") && !text.contains(&anna_id(&hub).await),
        "409 does not say whose: {text}"
    );
    let owner = db
        .device(&DeviceId::parse(&device_a).expect("id"))
        .await
        .expect("db")
        .expect("device")
        .owner_id
        .expect("owned");
    assert_eq!(owner.as_str(), anna_id(&hub).await, "still Anna's");
    // A made-up pairing code.
    let (status, _) = api_post(
        &mut bert,
        "/api/v1/devices/claim",
        json!({ "pairing_code": "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GG" }),
    )
    .await;
    assert_eq!(status, 403);

    // Each owner lists only their own device.
    let (status, list) = api_get(&mut anna, "/api/v1/devices").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&list), vec![device_a.clone()]);
    let (_, list) = api_get(&mut bert, "/api/v1/devices").await;
    assert_eq!(ids(&list), vec![device_b.clone()]);

    // IDOR: another owner's device id is indistinguishable from one that does not exist.
    let (status, own) = api_get(&mut anna, &format!("/api/v1/devices/{device_a}")).await;
    assert_eq!(status, 200);
    assert_eq!(own["id"], device_a.as_str());
    let theirs = anna.get(&format!("/api/v1/devices/{device_b}")).await;
    let missing = anna
        .get(&format!("/api/v1/devices/{}", DeviceId::generate()))
        .await;
    assert_eq!(theirs.status, 404);
    assert_eq!(missing.status, 404);
    assert_eq!(theirs.body, missing.body);

    // Owners cannot revoke, not even their own device.
    for target in [&device_a, &device_b] {
        let (status, _) = api_post(
            &mut anna,
            &format!("/api/v1/devices/{target}/revoke"),
            json!({}),
        )
        .await;
        assert_eq!(status, 403);
    }

    // Staff see the whole fleet; product models are readable by every signed-in role.
    let (status, list) = api_get(&mut operator, "/api/v1/devices").await;
    assert_eq!(status, 200);
    let mut both = vec![device_a.clone(), device_b.clone()];
    both.sort();
    assert_eq!(ids(&list), both);
    let (_, list) = api_get(&mut admin, "/api/v1/devices").await;
    assert_eq!(ids(&list), both);
    let (status, products) = api_get(&mut bert, "/api/v1/products").await;
    assert_eq!(status, 200);
    assert_eq!(products[0]["fields"][0]["purpose"], "shown to the owner");

    // An administrator revokes Anna's device while it is connected: the connection is
    // told to close at once (AUTH-10). An operator may revoke too.
    let id_a = DeviceId::parse(&device_a).expect("id");
    let live = hub.hub.state.fleet.register(&id_a);
    assert!(!*live.closed.borrow());
    admin.get("/account").await;
    let (status, body) = api_post(
        &mut admin,
        &format!("/api/v1/devices/{device_a}/revoke"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "revoked");
    assert!(*live.closed.borrow(), "the live connection was dropped");
    let (status, _) = api_post(
        &mut operator,
        &format!("/api/v1/devices/{device_b}/revoke"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    for id in [&device_a, &device_b] {
        let device = db
            .device(&DeviceId::parse(id).expect("id"))
            .await
            .expect("db")
            .expect("device");
        assert_eq!(device.status, DeviceStatus::Revoked);
    }

    let entries = db.audit_entries(1000, None).await.expect("audit");
    for (action, target) in [
        ("device.claim", &device_a),
        ("device.claim", &device_b),
        ("device.revoke", &device_a),
        ("device.revoke", &device_b),
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e.action == action && &e.target == target && e.outcome == "success"),
            "{action} {target} audited"
        );
    }
    assert!(
        entries.iter().any(|e| e.action == "device.claim"
            && e.actor == "owner-bert"
            && e.outcome == "denied"),
        "the attempt on Anna's device is audited"
    );
    let log = serde_json::to_string(&entries)
        .expect("json")
        .to_uppercase();
    for code in &codes {
        assert!(!log.contains(&code.pairing.replace('-', "")) && !log.contains(&code.pairing));
    }
    hub.hub.shutdown().await;
}

async fn anna_id(hub: &TestHub) -> String {
    let name = palisade_hub::ids::Username::parse("owner-anna").expect("name");
    hub.hub
        .db
        .user_by_username(&name)
        .await
        .expect("db")
        .expect("user")
        .id
        .to_string()
}
