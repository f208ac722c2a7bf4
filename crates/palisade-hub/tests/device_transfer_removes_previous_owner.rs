//! ACC-3, ACC-2, DATA-1 (minimisation), MON/audit: transferring a device. Its owner
//! releases it (console button, or `POST /api/v1/devices/{id}/release`); the owner is
//! cleared at once, the release is audited, and the telemetry of that ownership is
//! deleted. The previous owner then gets 404 for the device like for any device they
//! do not own; the next owner claims it with the label's pairing code and sees none of
//! the previous owner's history (telemetry, audit entries, commands), nor anything the
//! device sent while it had no owner. Attacks: another owner (or the next owner before
//! claiming) cannot release someone else's device; a release without the CSRF token is
//! refused; the previous owner cannot take it back once it is claimed. Staff may
//! release any device.

mod common;

use common::{Browser, TestHub};
use palisade_crypto::ca::device_key_and_csr;
use palisade_hub::ids::DeviceId;
use serde_json::{Value, json};

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

/// Store one telemetry message for `device`, received `ago_ms` milliseconds ago.
async fn telemetry(hub: &TestHub, device: &DeviceId, ago_ms: i64, label: &str) {
    let at = palisade_hub::telemetry::now_ms() - ago_ms;
    let payload = json!({ "temperature": 21.5, "label": label }).to_string();
    hub.hub
        .db
        .insert_telemetry_batch(&[(device.clone(), at, payload)])
        .await
        .expect("telemetry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_device_leaves_nothing_to_its_previous_owner() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;
    let mut anna = hub.invite(&mut admin, "owner-anna", "owner").await;
    let mut bert = hub.invite(&mut admin, "owner-bert", "owner").await;
    let mut mallory = hub.invite(&mut admin, "owner-mallory", "owner").await;

    let product = hub.create_product("thermo-v1").await;
    let codes = db
        .create_claim_codes(&product, 1, 3600)
        .await
        .expect("codes");
    let (_, csr) = device_key_and_csr("device").expect("csr");
    let r = common::client(&hub, None)
        .post(hub.url("/api/v1/devices/enroll"))
        .json(&json!({ "claim_code": codes[0].claim, "csr_pem": csr }))
        .send()
        .await
        .expect("enrol");
    assert_eq!(r.status(), 201);
    let enrolled: Value = r.json().await.expect("json");
    let id = enrolled["device_id"].as_str().expect("id").to_owned();
    let device = DeviceId::parse(&id).expect("id");

    // Anna claims it; it sends data during her ownership; staff send it a command.
    let (status, body) = api_post(
        &mut anna,
        "/api/v1/devices/claim",
        json!({ "pairing_code": codes[0].pairing }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    telemetry(&hub, &device, 0, "anna-living-room").await;
    admin.get("/account").await;
    let (status, _) = api_post(
        &mut admin,
        &format!("/api/v1/devices/{id}/commands"),
        json!({ "name": "ping" }),
    )
    .await;
    assert_eq!(status, 201);
    let page = anna.get(&format!("/devices/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("anna-living-room"), "{}", page.body);
    assert!(
        page.body.contains("id=\"release-form\""),
        "a release button"
    );

    // Attack: another owner, and the future owner, cannot release Anna's device; the
    // answer is the same 404 as for a device that does not exist.
    for b in [&mut mallory, &mut bert] {
        let (status, _) = api_post(b, &format!("/api/v1/devices/{id}/release"), json!({})).await;
        assert_eq!(status, 404);
        let page = b.post_form(&format!("/devices/{id}/release"), &[]).await;
        assert_eq!(page.status, 404);
    }
    // Attack: a release without the CSRF token (a forged cross-site form) is refused.
    let page = anna.post_raw(&format!("/devices/{id}/release"), &[]).await;
    assert_eq!(page.status, 403);
    let still = db.device(&device).await.expect("db").expect("device");
    assert!(still.owner_id.is_some(), "still Anna's");

    // Anna releases it with the console button.
    anna.get(&format!("/devices/{id}")).await;
    let page = anna.post_form(&format!("/devices/{id}/release"), &[]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location(), "/devices?done=released");
    let released = db.device(&device).await.expect("db").expect("device");
    assert_eq!(released.owner_id, None);
    assert_eq!(released.owned_since_ms, None);
    assert!(
        db.telemetry(&device, 100).await.expect("db").is_empty(),
        "the previous owner's telemetry is deleted with the ownership"
    );
    let entries = db.audit_entries_for_target(&id, 50).await.expect("audit");
    assert!(
        entries.iter().any(|e| e.action == "device.release"
            && e.actor == "owner-anna"
            && e.outcome == "success"),
        "{entries:?}"
    );

    // At once, Anna has no access: pages and API answer 404; releasing again too.
    let missing = DeviceId::generate();
    let gone = anna.get(&format!("/api/v1/devices/{id}")).await;
    let never = anna.get(&format!("/api/v1/devices/{missing}")).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.body, never.body);
    assert_eq!(anna.get(&format!("/devices/{id}")).await.status, 404);
    let (status, _) = api_get(&mut anna, &format!("/api/v1/devices/{id}/commands")).await;
    assert_eq!(status, 404);
    let (_, list) = api_get(&mut anna, "/api/v1/devices").await;
    assert_eq!(list, json!([]));
    anna.get("/devices").await;
    let (status, _) = api_post(
        &mut anna,
        &format!("/api/v1/devices/{id}/release"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);

    // The device keeps sending before its next owner claims it (still in Anna's home).
    telemetry(&hub, &device, 5_000, "unowned-gap").await;

    // Bert claims it with the pairing code on the label and sees no earlier history.
    let (status, body) = api_post(
        &mut bert,
        "/api/v1/devices/claim",
        json!({ "pairing_code": codes[0].pairing }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["owned_since_ms"].is_i64(), "{body}");
    let page = bert.get(&format!("/devices/{id}")).await;
    assert_eq!(page.status, 200);
    for earlier in [
        "anna-living-room",
        "unowned-gap",
        "owner-anna",
        "device.release",
    ] {
        assert!(
            !page.body.contains(earlier),
            "{earlier} shown to the next owner"
        );
    }
    let (status, commands) = api_get(&mut bert, &format!("/api/v1/devices/{id}/commands")).await;
    assert_eq!(status, 200);
    assert_eq!(
        commands,
        json!([]),
        "commands of the previous ownership hidden"
    );
    // Staff still see the command history.
    let (_, commands) = api_get(&mut admin, &format!("/api/v1/devices/{id}/commands")).await;
    assert_eq!(commands.as_array().map(Vec::len), Some(1));

    // Attack: Anna cannot take it back.
    anna.get("/account").await;
    let (status, _) = api_post(
        &mut anna,
        "/api/v1/devices/claim",
        json!({ "pairing_code": codes[0].pairing }),
    )
    .await;
    assert_eq!(status, 409);

    // Staff may release any device (e.g. on a support request); Bert loses access.
    let (status, body) = api_post(
        &mut admin,
        &format!("/api/v1/devices/{id}/release"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["owner_id"], Value::Null);
    assert_eq!(bert.get(&format!("/api/v1/devices/{id}")).await.status, 404);
    // Nothing left to release.
    let (status, _) = api_post(
        &mut admin,
        &format!("/api/v1/devices/{id}/release"),
        json!({}),
    )
    .await;
    assert_eq!(status, 409);

    hub.hub.shutdown().await;
}
