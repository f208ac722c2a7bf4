//! ACC-2, ACC-3, ACC-5, AUTH-10 in the console: the device pages respect ownership.
//! An owner lists only their own devices and claims one with the pairing code through
//! the console form (single owner: a device with an owner cannot be claimed away, and
//! the refusal does not say why); another owner's device page answers 404 exactly like
//! an id that does not exist (IDOR); the detail page draws telemetry as server-side SVG
//! with no script and escapes what devices send; operators see the fleet, search it,
//! and revoke a device, which drops its live connection at once.

mod common;

use common::devices::eventually;
use common::{Browser, TestHub};
use palisade_hub::db::devices::DeviceStatus;
use palisade_hub::ids::DeviceId;
use std::process::Stdio;
use std::time::Duration;

/// Claim through the console form, as a person would: open the page, submit the form.
async fn claim(b: &mut Browser, pairing: &str) -> common::Page {
    let page = b.get("/devices").await;
    assert!(page.body.contains("id=\"claim-form\""), "{}", page.body);
    b.post_form("/devices/claim", &[("pairing_code", pairing)])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_pages_show_owners_only_their_devices_and_staff_the_fleet() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;
    let mut operator = hub.invite(&mut admin, "ops-olga", "operator").await;
    let mut anna = hub.invite(&mut admin, "owner-anna", "owner").await;
    let mut bert = hub.invite(&mut admin, "owner-bert", "owner").await;

    let product = hub.create_product("cam-v2").await;
    let codes = db
        .create_claim_codes(&product, 2, 3600)
        .await
        .expect("codes");
    let mut ids = Vec::new();
    for (code, fingerprint) in codes.iter().zip(["ab", "cd"]) {
        let id = DeviceId::generate();
        db.enroll_device(&code.claim, &id, &fingerprint.repeat(32), 4_000_000_000)
            .await
            .expect("enrol")
            .expect("code valid");
        ids.push(id);
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());

    // The nav links to the device pages.
    assert!(anna.get("/").await.body.contains("href=\"/devices\""));

    // Each owner claims their device with the code from its label, typed loosely.
    let typed = codes[0].pairing.to_lowercase().replace('-', " ");
    let page = claim(&mut anna, &typed).await;
    assert_eq!(page.location(), format!("/devices/{a}?done=claimed"));
    let page = claim(&mut bert, &codes[1].pairing).await;
    assert_eq!(page.location(), format!("/devices/{b}?done=claimed"));
    let page = anna.get(&format!("/devices/{a}?done=claimed")).await;
    assert!(
        page.body.contains("The device is now yours."),
        "{}",
        page.body
    );

    // Single owner: Bert cannot claim Anna's device, and is not told why.
    let page = claim(&mut bert, &codes[0].pairing).await;
    assert!(page.body.contains("cannot be claimed"), "{}", page.body);
    assert!(!page.body.contains("owner-anna") && !page.body.contains(a.as_str()));
    let unknown = claim(&mut bert, "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GG").await;
    assert!(unknown.body.contains("cannot be claimed"));
    let owner = db.device(&a).await.expect("db").expect("device").owner_id;
    let anna_id = db
        .users()
        .await
        .expect("users")
        .into_iter()
        .find(|u| u.username.as_str() == "owner-anna")
        .expect("anna")
        .id;
    assert_eq!(owner, Some(anna_id), "still Anna's");
    // Claiming again is harmless. Without the CSRF token a claim is refused.
    let page = claim(&mut anna, &codes[0].pairing).await;
    assert_eq!(page.location(), format!("/devices/{a}?done=yours"));
    let page = anna
        .post_raw("/devices/claim", &[("pairing_code", &codes[1].pairing)])
        .await;
    assert_eq!(page.status, 403);

    // Each owner lists only their own device, without the owner column.
    let list = anna.get("/devices").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(a.as_str()) && !list.body.contains(b.as_str()));
    assert!(!list.body.contains("<th>Owner</th>"));
    let list = bert.get("/devices").await;
    assert!(list.body.contains(b.as_str()) && !list.body.contains(a.as_str()));

    // IDOR: another owner's device is indistinguishable from one that does not exist.
    let theirs = anna.get(&format!("/devices/{b}")).await;
    let missing = anna
        .get(&format!("/devices/{}", DeviceId::generate()))
        .await;
    assert_eq!(theirs.status, 404);
    assert_eq!(missing.status, 404);
    assert_eq!(theirs.body, missing.body);
    assert_eq!(anna.get("/devices/not-an-id").await.status, 404);

    // Telemetry stored for Anna's device is drawn as SVG; what the device sent is
    // escaped, and the page carries no script.
    let start = 1_800_000_000_000_i64;
    let batch: Vec<(DeviceId, i64, String)> = (0..30)
        .map(|i| {
            (
                a.clone(),
                start + i * 60_000,
                format!(
                    r#"{{"temperature": {}, "seq": {i}, "on": true, "label": "<script>alert(1)</script>"}}"#,
                    20.0 + f64::from(i32::try_from(i % 7).expect("small")) / 2.0
                ),
            )
        })
        .collect();
    db.insert_telemetry_batch(&batch).await.expect("telemetry");
    let page = anna.get(&format!("/devices/{a}")).await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    assert!(body.contains("<svg"), "{body}");
    assert!(body.contains("<polyline") && body.contains("viewBox=\"0 0 600 160\""));
    assert!(!body.to_lowercase().contains("<script"), "{body}");
    assert!(body.contains("alert(1)"), "the payload is shown, escaped");
    assert!(
        body.contains(">23</text>") && body.contains(">20</text>"),
        "axis min/max"
    );
    // Declared fields with their purpose (DATA-1), identity and life (ACC-3, SUP-3).
    assert!(body.contains("test telemetry"));
    assert!(body.contains(&"ab".repeat(32)));
    assert!(body.contains("First seen") && body.contains("Certificate expires"));
    // The device's audit trail shows the claim; owners have no revoke button.
    assert!(body.contains("device.claim"));
    assert!(!body.contains("revoke-form"));
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );

    // Owners cannot revoke, not even their own device.
    let page = anna.post_form(&format!("/devices/{a}/revoke"), &[]).await;
    assert_eq!(page.status, 403);
    let status = db.device(&a).await.expect("db").expect("device").status;
    assert_eq!(status, DeviceStatus::Active);

    // Staff see the fleet with owners, search it and filter by status.
    let list = operator.get("/devices").await;
    assert!(list.body.contains(a.as_str()) && list.body.contains(b.as_str()));
    assert!(list.body.contains("owner-anna") && list.body.contains("owner-bert"));
    let found = operator
        .get(&format!("/devices?q={}", &b.as_str()[..12]))
        .await;
    assert!(found.body.contains(b.as_str()) && !found.body.contains(a.as_str()));
    let found = operator.get("/devices?q=CAM-V2&status=active").await;
    assert!(found.body.contains(a.as_str()) && found.body.contains(b.as_str()));
    let found = operator.get("/devices?status=revoked").await;
    assert!(!found.body.contains(a.as_str()) && found.body.contains("No devices match"));
    let found = operator
        .get(&format!("/devices?q=%25{}", "x".repeat(5000)))
        .await;
    assert_eq!(found.status, 200, "a long search is cut, not an error");
    let page = operator.get(&format!("/devices/{b}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("revoke-form"));

    // A device with a real certificate connects; an operator revokes it in the console
    // and its live connection drops at once (AUTH-10).
    let live = hub.enroll_device(&product).await;
    let mut args = live.args(hub.mqtt_port());
    args.extend(
        ["-V", "mqttv311", "-t", &live.topic("commands"), "-W", "60"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut sub = tokio::process::Command::new("mosquitto_sub")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub runs (apt-get install mosquitto-clients)");
    let fleet = hub.hub.state.fleet.clone();
    let id = live.id.clone();
    assert!(
        eventually(async || fleet.is_connected(&id)).await,
        "connected"
    );
    let page = operator.get(&format!("/devices/{}", live.id)).await;
    assert!(page.body.contains("● online"), "{}", page.body);
    let page = operator
        .post_form(&format!("/devices/{}/revoke", live.id), &[])
        .await;
    assert_eq!(
        page.location(),
        format!("/devices/{}?done=revoked", live.id)
    );
    tokio::time::timeout(Duration::from_secs(30), sub.wait())
        .await
        .expect("the connection was dropped")
        .expect("wait");
    assert!(!hub.hub.state.fleet.is_connected(&live.id));
    let page = operator.get(page.location()).await;
    assert!(page.body.contains("The device is revoked"), "{}", page.body);
    assert!(page.body.contains("device.revoke"));
    assert!(!page.body.contains("revoke-form"), "no second revoke");
    let status = db
        .device(&live.id)
        .await
        .expect("db")
        .expect("device")
        .status;
    assert_eq!(status, DeviceStatus::Revoked);
    let found = operator.get("/devices?status=revoked").await;
    assert!(found.body.contains(live.id.as_str()) && !found.body.contains(a.as_str()));

    hub.hub.shutdown().await;
}
