//! UPD-1, UPD-5, UPD-6 (issue 4, "staged rollouts"): a release reaches devices only
//! through a rollout, stage by stage. With simulated devices (mosquitto clients on the
//! real MQTT listener): stage 1 (10 %) offers the release to exactly ceil(10 % × 10)
//! = 1 device, chosen by the fair rank, and the rest get nothing (negative); the stage
//! does not advance before its devices report nor before its soak time has passed
//! (negative); after reports and the soak it admits 50 %, then 100 %; a device
//! enrolled mid-rollout is included at 100 %; the rollout completes and a device
//! enrolled after that still gets the release. A second unfinished rollout of the
//! same model is refused.

mod common;

use common::TestHub;
use common::devices::{TestDevice, eventually, publish, run};
use palisade_hub::accounts::Actor;
use palisade_hub::db::releases::{NewRelease, UpdateReport};
use palisade_hub::updates::rollouts::{self, Moved, Request};
// The hub's engine also runs every 15 s; moves are checked by their outcome, and the
// `Nothing` checks hold whoever runs the pass (nothing may move then).
use std::time::Duration;

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

/// The devices `updates::offer` would offer the release to right now.
async fn offered(hub: &TestHub, devices: &[TestDevice]) -> Vec<String> {
    let db = &hub.hub.db;
    let mut out = Vec::new();
    for d in devices {
        let device = db.device(&d.id).await.expect("db").expect("device");
        if palisade_hub::updates::offer(db, &device)
            .await
            .expect("offer")
            .is_some()
        {
            out.push(d.id.as_str().to_owned());
        }
    }
    out
}

async fn commit(hub: &TestHub, device: &TestDevice, release: &str) {
    let db = &hub.hub.db;
    db.insert_update_report(
        &device.id,
        &UpdateReport {
            release: release.into(),
            version: "2.0.0".into(),
            step: "committed".into(),
            reason: String::new(),
            downtime_ms: Some(900),
            at_ms: palisade_hub::telemetry::now_ms(),
        },
    )
    .await
    .expect("report");
    db.set_firmware_version(&device.id, "2.0.0")
        .await
        .expect("firmware");
}

async fn admitted(hub: &TestHub, rollout: &str) -> i64 {
    hub.hub
        .db
        .rollout_step_counts(rollout)
        .await
        .expect("counts")
        .iter()
        .map(|c| c.devices)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_admit_their_share_and_late_devices_join_at_100() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let fleet = hub.hub.state.fleet.clone();
    let url = "https://hub.example";
    let product = hub.create_product("lamp-v1").await;
    let mut devices = Vec::new();
    for _ in 0..10 {
        let d = hub.enroll_device(&product).await;
        db.set_firmware_version(&d.id, "1.0.0")
            .await
            .expect("firmware");
        devices.push(d);
    }
    let release = db
        .insert_release(&NewRelease {
            product: &product,
            version: (2, 0, 0),
            target: "lamp-v1-2.0.0.img",
            length: 10,
            sha256: &"ab".repeat(32),
            security: false,
            notes: "",
            created_by: "test",
        })
        .await
        .expect("release");
    // Published, but no rollout: nobody is offered it.
    assert!(offered(&hub, &devices).await.is_empty());

    let rollout = rollouts::create(
        db,
        &fleet,
        &Actor::cli(),
        &Request {
            release: release.id.clone(),
            stages: vec![10, 50, 100],
            soak_minutes: 60,
            failure_threshold_pct: 5,
            devices: Vec::new(),
        },
    )
    .await
    .expect("rollout");

    // A second unfinished rollout of the model is refused.
    let second = rollouts::create(
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
    .await;
    assert!(
        matches!(&second, Err(palisade_hub::error::Error::Conflict(m)) if m.contains("already running")),
        "{second:?}"
    );

    // Stage 1: exactly one device, the first in the rollout's fair order.
    let first = offered(&hub, &devices).await;
    assert_eq!(first.len(), 1, "ceil(10 % of 10) = 1: {first:?}");
    let expected = devices
        .iter()
        .min_by_key(|d| rollouts::rank(&rollout.id, d.id.as_str()))
        .expect("devices");
    assert_eq!(first[0], expected.id.as_str(), "admitted by rank");
    let canary = devices
        .iter()
        .find(|d| d.id.as_str() == first[0])
        .expect("canary");
    let other = devices
        .iter()
        .find(|d| d.id.as_str() != first[0])
        .expect("other");
    // Over MQTT: the canary gets the offer, another device gets nothing.
    let got = subscribe_once(&hub, canary, 10).await;
    let offer: serde_json::Value = serde_json::from_str(got.trim()).expect("offer JSON");
    assert_eq!(offer["release"], release.id.as_str());
    assert_eq!(offer["version"], "2.0.0");
    let got = subscribe_once(&hub, other, 3).await;
    assert!(got.trim().is_empty(), "not admitted yet, got {got}");

    // No report yet: the engine does not advance (and admits nobody else).
    let moved = rollouts::tick(db, &fleet, url).await.expect("tick");
    assert_eq!(moved, vec![(rollout.id.clone(), Moved::Nothing)]);
    assert_eq!(admitted(&hub, &rollout.id).await, 1);

    // The canary reports over MQTT (the real status path) that it committed.
    let status = serde_json::json!({"release": release.id, "version": "2.0.0", "step": "committed", "reason": "", "downtime_ms": 800});
    let r = publish(
        &hub,
        canary,
        "mqttv5",
        1,
        &canary.topic("update/status"),
        &status.to_string(),
    )
    .await;
    assert!(r.success(), "{}", r.text());
    assert!(
        eventually(async || db
            .rollout_step_counts(&rollout.id)
            .await
            .expect("counts")
            .iter()
            .any(|c| c.step == "committed"))
        .await,
        "the rollout counts the committed step"
    );
    db.set_firmware_version(&canary.id, "2.0.0")
        .await
        .expect("firmware");
    // Settled, but the soak time (60 min) has not passed: still stage 1.
    let moved = rollouts::tick(db, &fleet, url).await.expect("tick");
    assert_eq!(moved, vec![(rollout.id.clone(), Moved::Nothing)]);
    assert_eq!(admitted(&hub, &rollout.id).await, 1);

    // Move the stage's start back past the soak: stage 2 admits ceil(50 % of 10) = 5.
    db.set_rollout_stage_started(&rollout.id, palisade_hub::db::now() - 3601)
        .await
        .expect("clock");
    let moved = rollouts::tick(db, &fleet, url).await.expect("tick");
    // (The hub's own engine may have made this move first: check the outcome.)
    assert!(moved.len() <= 1, "{moved:?}");
    let now = db.rollout(&rollout.id).await.expect("db").expect("rollout");
    assert_eq!((now.stage, now.state.as_str()), (1, "running"), "{moved:?}");
    assert_eq!(admitted(&hub, &rollout.id).await, 5);
    let second_stage = offered(&hub, &devices).await;
    assert_eq!(second_stage.len(), 4, "4 new (the canary runs 2.0.0 now)");
    // The five are the five best ranked.
    let mut ranked: Vec<&TestDevice> = devices.iter().collect();
    ranked.sort_by_key(|d| rollouts::rank(&rollout.id, d.id.as_str()));
    for d in &ranked[1..5] {
        assert!(second_stage.contains(&d.id.as_str().to_owned()));
    }
    for d in &ranked[5..] {
        assert!(!second_stage.contains(&d.id.as_str().to_owned()));
    }

    // Stage 2 commits; after the soak, stage 3 (100 %) admits everyone.
    for d in &ranked[1..5] {
        commit(&hub, d, &release.id).await;
    }
    db.set_rollout_stage_started(&rollout.id, palisade_hub::db::now() - 3601)
        .await
        .expect("clock");
    let moved = rollouts::tick(db, &fleet, url).await.expect("tick");
    // (The hub's own engine may have made this move first: check the outcome.)
    assert!(moved.len() <= 1, "{moved:?}");
    let now = db.rollout(&rollout.id).await.expect("db").expect("rollout");
    assert_eq!((now.stage, now.state.as_str()), (2, "running"), "{moved:?}");
    assert_eq!(admitted(&hub, &rollout.id).await, 10);

    // A device enrolled now (on the old version) is included: it connects and gets the offer.
    let late = hub.enroll_device(&product).await;
    db.set_firmware_version(&late.id, "1.0.0")
        .await
        .expect("firmware");
    let got = subscribe_once(&hub, &late, 10).await;
    let offer: serde_json::Value = serde_json::from_str(got.trim()).expect("late offer");
    assert_eq!(offer["version"], "2.0.0");
    assert_eq!(admitted(&hub, &rollout.id).await, 11);

    // Everyone commits; after the soak the rollout completes.
    for d in ranked[5..].iter().copied().chain([&late]) {
        commit(&hub, d, &release.id).await;
    }
    db.set_rollout_stage_started(&rollout.id, palisade_hub::db::now() - 3601)
        .await
        .expect("clock");
    let moved = rollouts::tick(db, &fleet, url).await.expect("tick");
    // (The hub's own engine may have made this move first: check the outcome.)
    assert!(moved.len() <= 1, "{moved:?}");
    let now = db.rollout(&rollout.id).await.expect("db").expect("rollout");
    assert_eq!(
        (now.stage, now.state.as_str()),
        (2, "completed"),
        "{moved:?}"
    );
    let done = db.rollout(&rollout.id).await.expect("db").expect("rollout");
    assert_eq!(done.state, "completed");
    // A device enrolled after completion still gets the release (the model's current one).
    let later = hub.enroll_device(&product).await;
    db.set_firmware_version(&later.id, "1.0.0")
        .await
        .expect("firmware");
    assert_eq!(offered(&hub, std::slice::from_ref(&later)).await.len(), 1);
}
