//! ENC-4, ACC-2: commands from the hub reach the device. Staff send a command through
//! the API; it gets the device's next sequence number and an expiry, is published once
//! to the device subscribed with `mosquitto_sub` (its certificate is the identity) —
//! first what was pending when it subscribed, then what is sent while it listens — and
//! its PUBACK is recorded as delivery. The device's result on its events topic is
//! recorded once, only for its own commands. An owner (of another device, or of this
//! one) and an anonymous caller cannot send commands; inputs are bounded.

mod common;

use common::devices::{eventually, publish, run};
use common::{Browser, TestHub};
use palisade_hub::db::commands::CommandStatus;
use serde_json::{Value, json};
use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enc4_staff_commands_reach_the_subscribed_device_once_in_sequence() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;
    admin.get("/account").await;
    let product = hub.create_product("cmd-v1").await;
    let device = hub.enroll_device(&product).await;
    let other = hub.enroll_device(&product).await;
    let path = format!("/api/v1/devices/{}/commands", device.id);

    // Inputs are bounded and validated.
    for bad in [
        json!({ "name": "Ping" }),
        json!({ "name": "" }),
        json!({ "name": "a".repeat(33) }),
        json!({ "name": "ping", "ttl_secs": 5 }),
        json!({ "name": "ping", "ttl_secs": 86_401 }),
        json!({ "name": "ping", "args": [] }),
        json!({ "name": "ping", "args": { "x": "y".repeat(5000) } }),
        json!({ "name": "ping", "extra": 1 }),
    ] {
        let (status, body) = api_post(&mut admin, &path, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Sent while the device is offline: stored, pending, not delivered.
    let (status, first) = api_post(
        &mut admin,
        &path,
        json!({ "name": "ping", "args": {}, "ttl_secs": 300 }),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["delivered"], false);
    assert!(first["expires_at"].as_i64().expect("expires_at") > common::now() as i64 + 250);

    // The device subscribes (QoS 1) and stays for a while.
    let mut args = device.args(hub.mqtt_port());
    args.extend(
        [
            "-V",
            "mqttv311",
            "-q",
            "1",
            "-t",
            &device.topic("commands"),
            "-W",
            "8",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let subscriber =
        tokio::spawn(
            async move { run("mosquitto_sub", &args, None, Duration::from_secs(30)).await },
        );

    let delivered = |seq: u64| {
        let id = device.id.clone();
        async move {
            eventually(async || {
                db.command(&id, seq)
                    .await
                    .expect("command")
                    .is_some_and(|c| c.delivered_at.is_some())
            })
            .await
        }
    };
    assert!(
        delivered(1).await,
        "the pending command is delivered on subscribe"
    );

    // Sent while it listens: handed to the live connection at once.
    let (status, second) = api_post(
        &mut admin,
        &path,
        json!({ "name": "report-state", "ttl_secs": 60 }),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["seq"], 2);
    assert_eq!(second["delivered"], true);
    assert!(delivered(2).await, "the live command is acknowledged");

    let run = subscriber.await.expect("subscriber");
    let received: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("command JSON"))
        .collect();
    assert_eq!(
        received.len(),
        2,
        "each command exactly once: {}",
        run.text()
    );
    assert_eq!(received[0]["seq"], 1);
    assert_eq!(received[0]["name"], "ping");
    assert_eq!(received[0]["args"], json!({}));
    assert_eq!(received[1]["seq"], 2);
    assert_eq!(received[1]["name"], "report-state");
    assert!(received[1]["expires_at"].as_i64().is_some());

    // The device's result is recorded once, and only for its own commands.
    let result = json!({ "command_seq": 1, "result": "ok", "reason": null }).to_string();
    let r = publish(&hub, &device, "mqttv5", 1, &device.topic("events"), &result).await;
    assert!(r.success(), "{}", r.text());
    let again = json!({ "command_seq": 1, "result": "rejected", "reason": "late" }).to_string();
    let r = publish(&hub, &device, "mqttv5", 1, &device.topic("events"), &again).await;
    assert!(r.success(), "{}", r.text());
    let foreign = json!({ "command_seq": 1, "result": "rejected" }).to_string();
    let r = publish(&hub, &other, "mqttv5", 1, &other.topic("events"), &foreign).await;
    assert!(r.success(), "{}", r.text());
    let one = db.command(&device.id, 1).await.expect("db").expect("seq 1");
    assert_eq!(one.status, CommandStatus::Ok, "{one:?}");
    assert!(one.completed_at.is_some());
    assert!(db.command(&other.id, 1).await.expect("db").is_none());

    // Staff read the list, newest first.
    let page = admin.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let list: Value = serde_json::from_str(&page.body).expect("json");
    let seqs: Vec<i64> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [2, 1]);
    assert_eq!(list[1]["status"], "ok");
    assert_eq!(list[0]["status"], "delivered");

    // Owners cannot send commands, not to another's device nor to their own; they
    // read only their own device's commands. Anonymous callers get 401.
    let mut owner = hub.invite(&mut admin, "owner-olive", "owner").await;
    let me: Value = serde_json::from_str(&owner.get("/api/v1/me").await.body).expect("me");
    // The test devices have no printed label: bind the owner as a claim would.
    sqlx::query("UPDATE devices SET owner_id = $1 WHERE id = $2")
        .bind(me["id"].as_str().expect("owner id"))
        .bind(other.id.as_str())
        .execute(db.pool())
        .await
        .expect("owner");
    let (status, _) = api_post(&mut owner, &path, json!({ "name": "ping" })).await;
    assert_eq!(status, 403);
    let own_path = format!("/api/v1/devices/{}/commands", other.id);
    let (status, _) = api_post(&mut owner, &own_path, json!({ "name": "ping" })).await;
    assert_eq!(status, 403);
    assert_eq!(owner.get(&path).await.status, 404);
    assert_eq!(owner.get(&own_path).await.status, 200);
    let mut anonymous = hub.browser();
    anonymous.get("/login").await;
    let (status, _) = api_post(&mut anonymous, &path, json!({ "name": "ping" })).await;
    assert_eq!(status, 401);
    assert_eq!(anonymous.get(&path).await.status, 401);
    assert_eq!(
        db.recent_commands(&device.id, 100).await.expect("db").len(),
        2,
        "refused callers created nothing"
    );

    // Every command sent is in the audit log.
    let sent = db
        .audit_entries(100, None)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.action == "device.command" && e.outcome == "success")
        .count();
    assert_eq!(sent, 2);
    hub.hub.shutdown().await;
}
