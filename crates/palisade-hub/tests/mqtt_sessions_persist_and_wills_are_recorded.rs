//! RES-1, ENC-4, ACC-2, INPUT-1: MQTT session features on the hub's device listener.
//!
//! - Persistent sessions (v3.1.1 clean_session=0, v5 clean_start=0 with a session
//!   expiry): the hub remembers the subscriptions, CONNACK's session-present flag says
//!   so, and a QoS 1 command that was not acknowledged is delivered again on the next
//!   connection without a new SUBSCRIBE. A clean session forgets everything.
//! - Will messages: accepted only on the device's own topics (a will on another
//!   device's topic is refused: 3.1.1 return code 5, v5 reason 0x87); recorded as a
//!   device event when the connection ends without DISCONNECT; discarded by a normal
//!   DISCONNECT; v5 DISCONNECT with reason 0x04 records it.
//! - Device events: a valid event (JSON object with an `event` name) is stored and
//!   listed by `GET /api/v1/devices/{id}/events` to staff and the owner only; an
//!   invalid one is refused (v5 PUBACK 0x99) and not stored.

mod common;

use common::TestHub;
use common::devices::{TestDevice, eventually, publish, raw_tls, remaining_length};
use palisade_hub::db::commands::{CommandName, CommandStatus};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

fn str16(s: &str) -> Vec<u8> {
    let mut out = u16::try_from(s.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// A CONNECT packet: MQTT 3.1.1 or 5, clean or not, with an optional will (QoS 0) and
/// (v5) session expiry.
fn connect(v5: bool, clean: bool, will: Option<(&str, &str)>, expiry: Option<u32>) -> Vec<u8> {
    let mut body = str16("MQTT");
    body.push(if v5 { 5 } else { 4 });
    let mut flags = 0u8;
    if clean {
        flags |= 0x02;
    }
    if will.is_some() {
        flags |= 0x04;
    }
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    if v5 {
        let mut props = Vec::new();
        if let Some(e) = expiry {
            props.push(0x11);
            props.extend_from_slice(&e.to_be_bytes());
        }
        body.extend(remaining_length(props.len()));
        body.extend(props);
    }
    body.extend(str16("t"));
    if let Some((topic, message)) = will {
        if v5 {
            body.push(0); // no will properties
        }
        body.extend(str16(topic));
        body.extend(str16(message));
    }
    let mut packet = vec![0x10];
    packet.extend(remaining_length(body.len()));
    packet.extend(body);
    packet
}

/// Read one packet: (first byte, body).
async fn read_packet(tls: &mut Tls) -> (u8, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut first = [0u8; 1];
        tls.read_exact(&mut first).await.expect("packet");
        let mut len = 0usize;
        for shift in 0..4 {
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.expect("length");
            len |= usize::from(b[0] & 0x7f) << (7 * shift);
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        tls.read_exact(&mut body).await.expect("body");
        (first[0], body)
    })
    .await
    .expect("a packet in time")
}

/// Connect; returns the stream and CONNACK's (session present, return/reason code).
async fn open(hub: &TestHub, device: &TestDevice, packet: &[u8]) -> (Tls, bool, u8) {
    let mut tls = raw_tls(hub, device).await;
    tls.write_all(packet).await.expect("CONNECT");
    let (kind, body) = read_packet(&mut tls).await;
    assert_eq!(kind, 0x20, "CONNACK");
    (tls, body[0] & 1 == 1, body[1])
}

/// SUBSCRIBE (QoS 1) to one filter and read the SUBACK's first code.
async fn subscribe(tls: &mut Tls, v5: bool, filter: &str) -> u8 {
    let mut body = vec![0, 1];
    if v5 {
        body.push(0);
    }
    body.extend(str16(filter));
    body.push(1);
    let mut packet = vec![0x82];
    packet.extend(remaining_length(body.len()));
    packet.extend(body);
    tls.write_all(&packet).await.expect("SUBSCRIBE");
    let (kind, body) = read_packet(tls).await;
    assert_eq!(kind, 0x90, "SUBACK");
    *body.last().expect("code")
}

/// Read a QoS 1 PUBLISH (3.1.1): (packet id, topic, payload).
async fn read_publish(tls: &mut Tls) -> (u16, String, Vec<u8>) {
    let (kind, body) = read_packet(tls).await;
    assert_eq!(kind & 0xf0, 0x30, "PUBLISH, got {kind:#x}");
    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + tlen].to_vec()).expect("topic");
    let id = u16::from_be_bytes([body[2 + tlen], body[3 + tlen]]);
    (id, topic, body[4 + tlen..].to_vec())
}

async fn gone(hub: &TestHub, device: &TestDevice) {
    let id = device.id.clone();
    assert!(
        eventually(async || !hub.hub.state.fleet.is_connected(&id)).await,
        "the hub noticed the connection ended"
    );
}

async fn events(
    hub: &TestHub,
    device: &TestDevice,
) -> Vec<palisade_hub::db::device_events::DeviceEvent> {
    hub.hub
        .db
        .device_events(&device.id, 100)
        .await
        .expect("events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn res1_persistent_sessions_keep_subscriptions_and_redeliver_unacknowledged_commands() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let product = hub.create_product("sess-v1").await;
    let device = hub.enroll_device(&product).await;
    let commands = device.topic("commands");

    // First persistent connection: no session yet; subscribe, then vanish.
    let (mut tls, present, rc) = open(&hub, &device, &connect(false, false, None, None)).await;
    assert_eq!((present, rc), (false, 0));
    assert_eq!(subscribe(&mut tls, false, &commands).await, 1);
    drop(tls);
    gone(&hub, &device).await;

    // A command while the device is offline.
    let ping = CommandName::parse("ping").expect("name");
    let command = db
        .create_command(&device.id, &ping, &serde_json::json!({}), 300, "test")
        .await
        .expect("command");

    // Back with clean_session=0: the session is present and the command arrives
    // without a new SUBSCRIBE. It is not acknowledged.
    let (mut tls, present, rc) = open(&hub, &device, &connect(false, false, None, None)).await;
    assert_eq!((present, rc), (true, 0), "session present");
    let (_, topic, payload) = read_publish(&mut tls).await;
    assert_eq!(topic, commands);
    let doc: serde_json::Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!(doc["seq"], command.seq);
    drop(tls);
    gone(&hub, &device).await;
    assert_eq!(
        db.command(&device.id, command.seq)
            .await
            .expect("c")
            .expect("c")
            .status,
        CommandStatus::Pending,
        "not acknowledged, so not delivered"
    );

    // Again: redelivered; now acknowledged and recorded delivered.
    let (mut tls, present, _) = open(&hub, &device, &connect(false, false, None, None)).await;
    assert!(present);
    let (id, _, payload) = read_publish(&mut tls).await;
    let doc: serde_json::Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!(doc["seq"], command.seq);
    let mut puback = vec![0x40, 2];
    puback.extend_from_slice(&id.to_be_bytes());
    tls.write_all(&puback).await.expect("PUBACK");
    let (dev, seq) = (device.id.clone(), command.seq);
    assert!(
        eventually(async || db
            .command(&dev, seq)
            .await
            .ok()
            .flatten()
            .is_some_and(|c| c.status == CommandStatus::Delivered))
        .await
    );
    tls.write_all(&[0xe0, 0]).await.expect("DISCONNECT");
    drop(tls);
    gone(&hub, &device).await;

    // A clean session forgets the subscription: no session present, and the next
    // persistent connection starts from nothing.
    let (tls, present, _) = open(&hub, &device, &connect(false, true, None, None)).await;
    assert!(!present, "a clean session is never present");
    drop(tls);
    gone(&hub, &device).await;
    let (tls, present, _) = open(&hub, &device, &connect(false, false, None, None)).await;
    assert!(!present, "the clean session removed the stored one");
    drop(tls);
    gone(&hub, &device).await;

    // v5: clean_start=0 with an expiry keeps the session; expiry 0 ends it with the
    // connection.
    let (mut tls, present, rc) = open(&hub, &device, &connect(true, true, None, Some(600))).await;
    assert_eq!((present, rc), (false, 0));
    assert_eq!(subscribe(&mut tls, true, &commands).await, 1);
    drop(tls);
    gone(&hub, &device).await;
    let (tls, present, _) = open(&hub, &device, &connect(true, false, None, Some(0))).await;
    assert!(present, "v5 session kept for its expiry");
    drop(tls);
    gone(&hub, &device).await;
    let (tls, present, _) = open(&hub, &device, &connect(true, false, None, Some(600))).await;
    assert!(!present, "expiry 0 ended the session with the connection");
    drop(tls);
    gone(&hub, &device).await;

    // Stored session state is bounded: at most 32 filters per device.
    assert!(
        db.mqtt_session(&device.id, 0)
            .await
            .expect("session")
            .is_none_or(|s| s.0.len() <= palisade_hub::db::mqtt_sessions::MAX_SESSION_SUBSCRIPTIONS)
    );
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acc2_wills_only_on_own_topics_and_recorded_on_ungraceful_disconnect() {
    let hub = TestHub::start().await;
    let product = hub.create_product("will-v1").await;
    let device = hub.enroll_device(&product).await;
    let other = hub.enroll_device(&product).await;
    let own = device.topic("state");
    let offline = r#"{"status":"offline"}"#;

    // The attack: a will on another device's topic is refused, on both versions.
    let (_, _, rc) = open(
        &hub,
        &device,
        &connect(false, true, Some((&other.topic("state"), offline)), None),
    )
    .await;
    assert_eq!(rc, 5, "3.1.1: not authorised");
    let (_, _, rc) = open(
        &hub,
        &device,
        &connect(true, true, Some((&other.topic("state"), offline)), None),
    )
    .await;
    assert_eq!(rc, 0x87, "v5: not authorised");
    // mosquitto_pub with such a will cannot connect either.
    let mut args = device.args(hub.mqtt_port());
    args.extend(
        [
            "-V",
            "mqttv311",
            "--will-topic",
            &other.topic("state"),
            "--will-payload",
            offline,
            "-t",
            &device.topic("telemetry"),
            "-m",
            r#"{"temperature": 1}"#,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let refused = common::devices::run("mosquitto_pub", &args, None, Duration::from_secs(20)).await;
    assert!(!refused.success(), "{}", refused.text());
    assert!(events(&hub, &other).await.is_empty());
    assert!(events(&hub, &device).await.is_empty());

    // A normal DISCONNECT discards the will (mosquitto_pub ends with DISCONNECT).
    let mut args = device.args(hub.mqtt_port());
    args.extend(
        [
            "-V",
            "mqttv5",
            "--will-topic",
            &own,
            "--will-payload",
            offline,
            "-t",
            &device.topic("telemetry"),
            "-m",
            r#"{"temperature": 1}"#,
            "-q",
            "1",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let graceful =
        common::devices::run("mosquitto_pub", &args, None, Duration::from_secs(20)).await;
    assert!(graceful.success(), "{}", graceful.text());
    gone(&hub, &device).await;
    let (tls, _, rc) = open(
        &hub,
        &device,
        &connect(false, true, Some((&own, offline)), None),
    )
    .await;
    assert_eq!(rc, 0);
    let mut tls = tls;
    tls.write_all(&[0xe0, 0]).await.expect("DISCONNECT");
    drop(tls);
    gone(&hub, &device).await;
    assert!(
        events(&hub, &device).await.is_empty(),
        "no will after DISCONNECT"
    );

    // The socket drops without DISCONNECT: the will is recorded as a device event.
    let (tls, _, rc) = open(
        &hub,
        &device,
        &connect(false, true, Some((&own, offline)), None),
    )
    .await;
    assert_eq!(rc, 0);
    drop(tls);
    gone(&hub, &device).await;
    let id = device.id.clone();
    assert!(
        eventually(async || hub
            .hub
            .db
            .device_events(&id, 10)
            .await
            .is_ok_and(|e| e.len() == 1))
        .await
    );
    let stored = events(&hub, &device).await;
    assert_eq!(stored[0].name, "will");
    assert_eq!(stored[0].source, "will");
    assert_eq!(stored[0].payload["topic"], "state");
    assert_eq!(stored[0].payload["payload"]["status"], "offline");

    // v5 DISCONNECT with reason 0x04 asks for the will: recorded too.
    let (mut tls, _, rc) = open(
        &hub,
        &device,
        &connect(true, true, Some((&own, offline)), None),
    )
    .await;
    assert_eq!(rc, 0);
    tls.write_all(&[0xe0, 1, 0x04])
        .await
        .expect("DISCONNECT 0x04");
    drop(tls);
    gone(&hub, &device).await;
    assert!(
        eventually(async || hub
            .hub
            .db
            .device_events(&id, 10)
            .await
            .is_ok_and(|e| e.len() == 2))
        .await
    );
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input1_device_events_are_validated_stored_and_listed_to_staff_and_owner_only() {
    let hub = TestHub::start().await;
    let product = hub.create_product("evt-v1").await;
    let device = hub.enroll_device(&product).await;
    let topic = device.topic("events");

    let good = publish(
        &hub,
        &device,
        "mqttv5",
        1,
        &topic,
        r#"{"event":"door.open","zone":3}"#,
    )
    .await;
    assert!(good.stdout.contains("RC:0)"), "{}", good.text());
    for bad in [
        r#"{"zone":3}"#,
        r#"{"event":"Bad Name"}"#,
        r#"[1,2]"#,
        "not json",
        &format!(r#"{{"event":"x","pad":"{}"}}"#, "a".repeat(5000)),
    ] {
        let refused = publish(&hub, &device, "mqttv5", 1, &topic, bad).await;
        assert!(
            refused.stdout.contains("RC:153)"),
            "{bad}: {}",
            refused.text()
        );
    }
    let stored = events(&hub, &device).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].name, "door.open");
    assert_eq!(stored[0].payload["zone"], 3);

    // Listed to staff; not to a caller without a session, nor an owner of nothing.
    let (mut admin, _) = hub.setup_admin().await;
    let path = format!("/api/v1/devices/{}/events", device.id);
    let page = admin.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let listed: serde_json::Value = serde_json::from_str(&page.body).expect("json");
    assert_eq!(listed[0]["name"], "door.open");
    assert_eq!(listed[0]["source"], "device");
    assert_eq!(hub.browser().get(&path).await.status, 401);
    // IDOR: an owner sees the events of their own device only.
    let other = hub.enroll_device(&product).await;
    let mut owner = hub.invite(&mut admin, "owner-evie", "owner").await;
    let me: serde_json::Value =
        serde_json::from_str(&owner.get("/api/v1/me").await.body).expect("me");
    sqlx::query("UPDATE devices SET owner_id = $1 WHERE id = $2")
        .bind(me["id"].as_str().expect("owner id"))
        .bind(other.id.as_str())
        .execute(hub.hub.db.pool())
        .await
        .expect("owner");
    assert_eq!(owner.get(&path).await.status, 404, "not theirs");
    let own = format!("/api/v1/devices/{}/events", other.id);
    assert_eq!(owner.get(&own).await.status, 200);
    let detail = admin.get(&format!("/devices/{}", device.id)).await;
    assert!(
        detail.body.contains("door.open"),
        "the console lists events"
    );
    hub.hub.shutdown().await;
}
