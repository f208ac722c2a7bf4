//! UPD-5, UPD-6, UPD-4 (issue 4, "a rollout with injected failures halts at its
//! threshold"): a failure reported over MQTT in a stage above the threshold (default
//! 5 %) halts the rollout by itself: state `halted` with the reason, an audit entry,
//! an e-mail to staff, the reason and an SVG picture on the console page. Attacks and
//! negatives: no device is offered the release after the halt and the engine admits no
//! one; owners cannot start, pause or resume a rollout (403); a roll back to a LOWER
//! version is refused, explaining anti-rollback. Resume (accepting the failures), a new
//! failure halting again, roll back to a newer release for exactly the devices that
//! installed the bad one, and abort all work through the API.

mod common;

use common::devices::{TestDevice, eventually, publish, run};
use common::{ADMIN_EMAIL, Browser, TestHub};
use palisade_hub::db::releases::NewRelease;
use palisade_hub::updates::rollouts::{self, Moved};
use serde_json::{Value, json};
use std::time::Duration;

async fn api(
    b: &mut Browser,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let csrf = b.csrf.clone().expect("csrf token");
    let mut request = b.request(method, path).header("x-csrf-token", csrf);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let page = b.send(request).await;
    (
        page.status,
        serde_json::from_str(&page.body).unwrap_or(Value::Null),
    )
}

async fn subscribe_once(hub: &TestHub, device: &TestDevice, wait: u32) -> String {
    let mut args = device.args(hub.mqtt_port());
    args.extend(
        [
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            &device.topic("update"),
            "-C",
            "1",
            "-W",
            &wait.to_string(),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    run("mosquitto_sub", &args, None, Duration::from_secs(30))
        .await
        .stdout
}

async fn offered(hub: &TestHub, devices: &[TestDevice]) -> Vec<String> {
    let db = &hub.hub.db;
    let mut out = Vec::new();
    for d in devices {
        let device = db.device(&d.id).await.expect("db").expect("device");
        if let Some(o) = palisade_hub::updates::offer(db, &device)
            .await
            .expect("offer")
        {
            out.push(format!("{} {}", d.id, o.version));
        }
    }
    out
}

async fn report(hub: &TestHub, device: &TestDevice, release: &str, step: &str) {
    let status = json!({"release": release, "version": "2.0.0", "step": step, "reason": "health check failed: sensor bus timeout", "downtime_ms": 1200});
    let r = publish(
        hub,
        device,
        "mqttv5",
        1,
        &device.topic("update/status"),
        &status.to_string(),
    )
    .await;
    assert!(r.success(), "{}", r.text());
}

async fn release(
    hub: &TestHub,
    product: &palisade_hub::ids::ProductId,
    v: (u64, u64, u64),
) -> String {
    hub.hub
        .db
        .insert_release(&NewRelease {
            product,
            version: v,
            target: &format!("lamp-v1-{}.{}.{}.img", v.0, v.1, v.2),
            length: 10,
            sha256: &"ab".repeat(32),
            security: false,
            notes: "",
            created_by: "test",
        })
        .await
        .expect("release")
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_over_the_threshold_halt_the_rollout() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let fleet = hub.hub.state.fleet.clone();
    let url = "https://hub.example";
    let (mut admin, _) = hub.setup_admin().await;
    admin.get("/account").await;
    let mut owner = hub.invite(&mut admin, "owner-oskar", "owner").await;
    let product = hub.create_product("lamp-v1").await;
    let mut devices = Vec::new();
    for _ in 0..10 {
        let d = hub.enroll_device(&product).await;
        db.set_firmware_version(&d.id, "1.0.0")
            .await
            .expect("firmware");
        devices.push(d);
    }
    let v1 = release(&hub, &product, (1, 0, 0)).await;
    let v2 = release(&hub, &product, (2, 0, 0)).await;

    // Attack: an owner cannot start a rollout.
    let start = json!({"release": v2, "stages": [50, 100], "soak_minutes": 0});
    let (status, _) = api(
        &mut owner,
        reqwest::Method::POST,
        "/api/v1/rollouts",
        Some(start.clone()),
    )
    .await;
    assert_eq!(status, 403);
    assert!(db.rollouts(10).await.expect("list").is_empty());

    // Staff start it (threshold: the default 5 %).
    let (status, body) = api(
        &mut admin,
        reqwest::Method::POST,
        "/api/v1/rollouts",
        Some(start),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["failure_threshold_pct"], 5);
    assert_eq!(body["progress"][0]["admitted"], 5);
    let id = body["id"].as_str().expect("id").to_owned();
    let admitted: Vec<&TestDevice> = {
        let offers = offered(&hub, &devices).await;
        assert_eq!(offers.len(), 5, "{offers:?}");
        devices
            .iter()
            .filter(|d| offers.iter().any(|o| o.starts_with(d.id.as_str())))
            .collect()
    };
    let waiting: Vec<&TestDevice> = devices
        .iter()
        .filter(|d| !admitted.iter().any(|a| a.id == d.id))
        .collect();

    // Attack: an owner cannot pause it.
    for action in ["pause", "resume", "abort"] {
        let (status, _) = api(
            &mut owner,
            reqwest::Method::POST,
            &format!("/api/v1/rollouts/{id}/{action}"),
            None,
        )
        .await;
        assert_eq!(status, 403, "{action}");
    }

    // One of five fails (20 % > 5 %): the engine halts the rollout.
    report(&hub, admitted[0], &v2, "rolled_back").await;
    assert!(
        eventually(async || db
            .rollout_step_counts(&id)
            .await
            .expect("counts")
            .iter()
            .any(|c| c.step == "rolled_back"))
        .await
    );
    // (The hub's own engine may have halted it first: check the outcome.)
    let moved = rollouts::tick(db, &fleet, url).await.expect("tick");
    assert!(
        !matches!(&moved[..], [(_, Moved::Advanced(_) | Moved::Completed)]),
        "{moved:?}"
    );
    assert_eq!(
        db.rollout(&id).await.expect("db").expect("r").state,
        "halted",
        "{moved:?}"
    );
    let halted = db.rollout(&id).await.expect("db").expect("rollout");
    assert_eq!(halted.state, "halted");
    assert!(
        halted.halted_reason.contains("1 of 5"),
        "{}",
        halted.halted_reason
    );
    let audit = db.audit_entries(50, None).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "rollout.halt" && e.target == id)
    );
    let mail = hub.wait_for_mail(ADMIN_EMAIL, "halted").await;
    assert!(mail.contains(&format!("/rollouts/{id}")), "{mail}");

    // Negative: after the halt nobody is offered the release, over MQTT either, and the
    // engine admits nobody.
    assert!(offered(&hub, &devices).await.is_empty());
    let got = subscribe_once(&hub, admitted[1], 3).await;
    assert!(got.trim().is_empty(), "halted: no offer, got {got}");
    assert!(
        rollouts::tick(db, &fleet, url)
            .await
            .expect("tick")
            .is_empty()
    );

    // The console shows the reason and the picture.
    let page = admin.get(&format!("/rollouts/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"halted-reason\""), "{}", page.body);
    assert!(page.body.contains("<svg"), "{}", page.body);
    assert!(page.body.contains("#c62828"), "a red failed segment");
    assert!(!page.body.contains("<script"));
    let page = owner.get(&format!("/rollouts/{id}")).await;
    assert_eq!(page.status, 403);

    // Resume accepts that failure: offers flow again and the engine does not re-halt.
    let (status, body) = api(
        &mut admin,
        reqwest::Method::POST,
        &format!("/api/v1/rollouts/{id}/resume"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "running");
    assert_eq!(
        offered(&hub, &devices).await.len(),
        5,
        "4 admitted + the rolled-back one retry"
    );
    let moved = rollouts::tick(db, &fleet, url).await.expect("tick");
    assert!(!matches!(&moved[..], [(_, Moved::Halted(_))]), "{moved:?}");
    assert_eq!(
        db.rollout(&id).await.expect("db").expect("r").state,
        "running"
    );
    // Pause: nothing offered; resume again.
    let (status, _) = api(
        &mut admin,
        reqwest::Method::POST,
        &format!("/api/v1/rollouts/{id}/pause"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(offered(&hub, &devices).await.is_empty());
    let (status, _) = api(
        &mut admin,
        reqwest::Method::POST,
        &format!("/api/v1/rollouts/{id}/pause"),
        None,
    )
    .await;
    assert_eq!(status, 409, "only a running rollout can be paused");
    let (status, _) = api(
        &mut admin,
        reqwest::Method::POST,
        &format!("/api/v1/rollouts/{id}/resume"),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // A new failure halts it again.
    report(&hub, admitted[1], &v2, "failed").await;
    assert!(
        eventually(async || db
            .rollout_step_counts(&id)
            .await
            .expect("counts")
            .iter()
            .any(|c| c.step == "failed"))
        .await
    );
    // (The hub's own engine may have halted it first: check the outcome.)
    let moved = rollouts::tick(db, &fleet, url).await.expect("tick");
    assert!(
        !matches!(&moved[..], [(_, Moved::Advanced(_) | Moved::Completed)]),
        "{moved:?}"
    );
    assert_eq!(
        db.rollout(&id).await.expect("db").expect("r").state,
        "halted",
        "{moved:?}"
    );

    // Two devices installed 2.0.0 (the bad one). Attack: "roll back" to 1.0.0 is a
    // downgrade, which devices refuse (anti-rollback): refused, saying why.
    for d in &admitted[2..4] {
        db.set_firmware_version(&d.id, "2.0.0")
            .await
            .expect("firmware");
    }
    let (status, body) = api(
        &mut admin,
        reqwest::Method::POST,
        &format!("/api/v1/rollouts/{id}/rollback"),
        Some(json!({"release": v1})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let why = body["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("anti-rollback") && why.contains("2.0.1"),
        "{why}"
    );
    assert_eq!(
        db.rollout(&id).await.expect("db").expect("r").state,
        "halted"
    );

    // Roll back to 2.0.1 (the old image re-published higher): exactly those two devices.
    let v201 = release(&hub, &product, (2, 0, 1)).await;
    let (status, body) = api(
        &mut admin,
        reqwest::Method::POST,
        &format!("/api/v1/rollouts/{id}/rollback"),
        Some(json!({"release": v201})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rolled_back"]["state"], "rolled_back");
    assert_eq!(body["replacement"]["release"], v201.as_str());
    let replacement = body["replacement"]["id"].as_str().expect("id").to_owned();
    let mut expected: Vec<String> = admitted[2..4]
        .iter()
        .map(|d| format!("{} 2.0.1", d.id))
        .collect();
    expected.sort();
    let mut got = offered(&hub, &devices).await;
    got.sort();
    assert_eq!(got, expected, "only the devices that installed 2.0.0");
    for d in &waiting {
        assert!(!got.iter().any(|o| o.starts_with(d.id.as_str())));
    }

    // Abort the replacement: nothing is offered any more; aborting twice is refused.
    let (status, body) = api(
        &mut admin,
        reqwest::Method::POST,
        &format!("/api/v1/rollouts/{replacement}/abort"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "aborted");
    assert!(offered(&hub, &devices).await.is_empty());
    let (status, _) = api(
        &mut admin,
        reqwest::Method::POST,
        &format!("/api/v1/rollouts/{replacement}/abort"),
        None,
    )
    .await;
    assert_eq!(status, 409);
    let audit = db.audit_entries(100, None).await.expect("audit");
    for action in [
        "rollout.create",
        "rollout.resume",
        "rollout.pause",
        "rollout.rollback",
        "rollout.abort",
    ] {
        assert!(audit.iter().any(|e| e.action == action), "{action} audited");
    }
    // The list shows both.
    let (status, body) = api(&mut admin, reqwest::Method::GET, "/api/v1/rollouts", None).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().map(Vec::len), Some(2));

    // The console form: bad stages are refused with the reason; good ones start it.
    admin.get("/rollouts").await;
    let form = |stages: &'static str| {
        [
            ("release", v201.clone()),
            ("stages", stages.to_owned()),
            ("soak_minutes", "5".to_owned()),
            ("failure_threshold_pct", "10".to_owned()),
            ("devices", String::new()),
        ]
    };
    let fields = form("50,40");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let page = admin.post_form("/rollouts", &fields).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("must increase"), "{}", page.body);
    let fields = form("50,100");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let page = admin.post_form("/rollouts", &fields).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let started = db
        .rollout_of_model("lamp-v1", &["running"])
        .await
        .expect("db")
        .expect("running");
    assert_eq!(page.location(), format!("/rollouts/{}", started.id));
    assert_eq!(
        (
            started.stages,
            started.soak_minutes,
            started.failure_threshold_pct
        ),
        (vec![50, 100], 5, 10)
    );
}
