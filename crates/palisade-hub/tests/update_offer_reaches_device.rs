//! UPD-1, UPD-7 (offer), UPD-5 (report): the hub offers the release of a rollout that
//! admitted a device on `devices/{id}/update` (QoS 1) to a device whose reported
//! firmware is older, when it subscribes (and at once when a rollout starts while it
//! listens); the device reports install steps on
//! `devices/{id}/update/status`, which are stored and shown in `GET /api/v1/devices/{id}`.
//! Attacks: a report with an unknown step, an unknown release, or another model's
//! release is refused and not stored; a device already on the release gets no offer.

mod common;

use common::TestHub;
use common::devices::{eventually, publish, run};
use palisade_hub::accounts::Actor;
use palisade_hub::db::releases::NewRelease;
use palisade_hub::updates::rollouts::{self, Request};
use std::time::Duration;

async fn subscribe_once(hub: &TestHub, device: &common::devices::TestDevice, wait: u32) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offer_arrives_and_install_steps_are_stored() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let product = hub.create_product("lamp-v1").await;
    let other = hub.create_product("cam-v2").await;
    let device = hub.enroll_device(&product).await;
    db.set_firmware_version(&device.id, "1.0.0")
        .await
        .expect("firmware");
    let release = db
        .insert_release(&NewRelease {
            product: &product,
            version: (2, 0, 0),
            target: "lamp-v1-2.0.0.img",
            length: 10,
            sha256: &"ab".repeat(32),
            security: true,
            notes: "Fixes CVE-2026-0001.",
            created_by: "test",
        })
        .await
        .expect("release");
    let foreign = db
        .insert_release(&NewRelease {
            product: &other,
            version: (9, 0, 0),
            target: "cam-v2-9.0.0.img",
            length: 10,
            sha256: &"cd".repeat(32),
            security: false,
            notes: "",
            created_by: "test",
        })
        .await
        .expect("release");

    // A published release alone is offered to nobody: only a rollout offers it.
    assert!(
        palisade_hub::updates::offer(
            db,
            &db.device(&device.id).await.expect("db").expect("device")
        )
        .await
        .expect("offer")
        .is_none()
    );
    let fleet = hub.hub.state.fleet.clone();
    let first = rollouts::create(
        db,
        &fleet,
        &Actor::cli(),
        &Request {
            release: release.id.clone(),
            stages: vec![100],
            soak_minutes: 0,
            failure_threshold_pct: 5,
            devices: Vec::new(),
        },
    )
    .await
    .expect("rollout");

    let got = subscribe_once(&hub, &device, 10).await;
    let offer: serde_json::Value = serde_json::from_str(got.trim()).expect("offer JSON");
    assert_eq!(offer["release"], release.id.as_str());
    assert_eq!(offer["product"], "lamp-v1");
    assert_eq!(offer["version"], "2.0.0");
    assert_eq!(offer["target"], "lamp-v1-2.0.0.img");
    assert_eq!(offer["security"], true);
    assert_eq!(offer["notes"], "Fixes CVE-2026-0001.");

    // Reports: a good one is stored.
    let status = device.topic("update/status");
    let good = serde_json::json!({"release": release.id, "version": "2.0.0", "step": "committed", "reason": "", "downtime_ms": 1234});
    let r = publish(&hub, &device, "mqttv5", 1, &status, &good.to_string()).await;
    assert!(r.success(), "{}", r.text());
    assert!(
        eventually(async || !db
            .update_reports(&device.id, 10)
            .await
            .expect("reports")
            .is_empty())
        .await,
        "the report is stored"
    );

    // Attacks: unknown step, unknown release, another model's release.
    for bad in [
        serde_json::json!({"release": release.id, "version": "2.0.0", "step": "pwned"}),
        serde_json::json!({"release": "f".repeat(32), "version": "2.0.0", "step": "failed"}),
        serde_json::json!({"release": foreign.id, "version": "9.0.0", "step": "committed"}),
        serde_json::json!({"release": release.id, "version": "2.0.0", "step": "failed", "reason": "x".repeat(600)}),
    ] {
        publish(&hub, &device, "mqttv5", 1, &status, &bad.to_string()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reports = db.update_reports(&device.id, 10).await.expect("reports");
    assert_eq!(
        reports.len(),
        1,
        "only the valid report is stored: {reports:?}"
    );
    assert_eq!(reports[0].step, "committed");
    assert_eq!(reports[0].downtime_ms, Some(1234));

    // The API shows the install state.
    let (mut admin, _) = hub.setup_admin().await;
    let page = admin.get(&format!("/api/v1/devices/{}", device.id)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let shown: serde_json::Value = serde_json::from_str(&page.body).expect("json");
    assert_eq!(shown["update"][0]["step"], "committed");
    assert_eq!(shown["update"][0]["version"], "2.0.0");
    // ... and so does the console's device page.
    let page = admin.get(&format!("/devices/{}", device.id)).await;
    assert!(page.body.contains("id=\"device-updates\""), "{}", page.body);
    assert!(page.body.contains("committed"), "{}", page.body);

    // A device already on 2.0.0 gets no offer.
    db.set_firmware_version(&device.id, "2.0.0")
        .await
        .expect("firmware");
    let got = subscribe_once(&hub, &device, 3).await;
    assert!(got.trim().is_empty(), "no offer expected, got {got}");

    // A rollout started while the device listens reaches it at once.
    rollouts::abort(db, &Actor::cli(), &first.id)
        .await
        .expect("abort");
    let listener = subscribe_once(&hub, &device, 15);
    let publisher = async {
        // Bounded: let the device connect and subscribe first (if it subscribes later,
        // the offer reaches it on subscription instead).
        for _ in 0..50 {
            if fleet.is_connected(&device.id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let newer = db
            .insert_release(&NewRelease {
                product: &product,
                version: (2, 1, 0),
                target: "lamp-v1-2.1.0.img",
                length: 10,
                sha256: &"ef".repeat(32),
                security: false,
                notes: "",
                created_by: "test",
            })
            .await
            .expect("release");
        rollouts::create(
            db,
            &fleet,
            &Actor::cli(),
            &Request {
                release: newer.id.clone(),
                stages: vec![100],
                soak_minutes: 0,
                failure_threshold_pct: 5,
                devices: Vec::new(),
            },
        )
        .await
        .expect("rollout")
    };
    let (got, _) = tokio::join!(listener, publisher);
    let offer: serde_json::Value =
        serde_json::from_str(got.trim()).expect("offer on rollout start");
    assert_eq!(offer["version"], "2.1.0");
}
