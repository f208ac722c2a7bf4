//! DATA-1, INPUT-1, RES-1: telemetry is a JSON object of fields the product model
//! declares, with their declared types. A declared payload published with QoS 1 is
//! acknowledged after it is stored; an undeclared field, a wrong type or a payload that
//! is not a JSON object is refused (MQTT 5: PUBACK 0x99; 3.1.1: connection closed),
//! nothing of it is stored, and the device's `rejected_messages` counts it.
//! Real `mosquitto_pub`, MQTT 3.1.1 and 5.

mod common;

use common::TestHub;
use common::devices::{eventually, publish};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_telemetry_is_stored_and_anything_else_refused_and_counted() {
    let hub = TestHub::start().await;
    let product = hub.create_product("cam-v2").await;
    let device = hub.enroll_device(&product).await;
    let topic = device.topic("telemetry");
    let db = &hub.hub.db;

    // Declared fields, right types, both versions: acknowledged, and stored by then.
    let v5 = publish(
        &hub,
        &device,
        "mqttv5",
        1,
        &topic,
        r#"{"temperature": 21.5, "seq": 1, "on": true, "label": "kitchen"}"#,
    )
    .await;
    assert!(
        v5.stdout.contains("received PUBACK (Mid: 1, RC:0)"),
        "{}",
        v5.text()
    );
    let v3 = publish(
        &hub,
        &device,
        "mqttv311",
        1,
        &topic,
        r#"{"temperature": 19}"#,
    )
    .await;
    assert!(v3.success(), "{}", v3.text());
    assert!(v3.stdout.contains("received PUBACK"), "{}", v3.text());
    let stored = db.telemetry(&device.id, 100).await.expect("telemetry");
    let payloads: Vec<&str> = stored.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(payloads.len(), 2, "{payloads:?}");
    assert!(
        payloads.contains(&r#"{"label":"kitchen","on":true,"seq":1,"temperature":21.5}"#),
        "{payloads:?}"
    );
    assert!(payloads.contains(&r#"{"temperature":19}"#), "{payloads:?}");

    // Refused on MQTT 5 with 0x99, the connection answering per message.
    let refused_v5 = [
        r#"{"temperature": 20, "location": "51.5,-0.1"}"#, // undeclared field
        r#"{"seq": 1.5}"#,                                 // integer expected
        r#"{"on": "yes"}"#,                                // boolean expected
        r#"{"temperature": {"celsius": 20}}"#,             // number expected
        "not json",
        "[1, 2, 3]",
        "{}",
    ];
    for payload in refused_v5 {
        let r = publish(&hub, &device, "mqttv5", 1, &topic, payload).await;
        assert!(
            r.stdout.contains("received PUBACK (Mid: 1, RC:153)"),
            "{payload}: {}",
            r.text()
        );
        assert!(r.stderr.contains("Payload format invalid"), "{}", r.text());
    }
    let long_label = format!(r#"{{"label": "{}"}}"#, "x".repeat(257));
    let r = publish(&hub, &device, "mqttv5", 1, &topic, &long_label).await;
    assert!(r.stdout.contains("RC:153"), "{}", r.text());

    // Refused on MQTT 3.1.1: no negative PUBACK exists, the connection is closed.
    for payload in [r#"{"humidity": 40}"#, "hello"] {
        let r = publish(&hub, &device, "mqttv311", 1, &topic, payload).await;
        assert!(!r.success(), "{payload}: {}", r.text());
        assert!(
            !r.stdout.contains("received PUBACK"),
            "{payload}: {}",
            r.text()
        );
    }

    let expected_rejections = i64::try_from(refused_v5.len() + 1 + 2).expect("count");
    let d = db
        .device(&device.id)
        .await
        .expect("device")
        .expect("exists");
    assert_eq!(d.rejected_messages, expected_rejections);
    assert_eq!(
        db.telemetry(&device.id, 100)
            .await
            .expect("telemetry")
            .len(),
        2,
        "nothing refused was stored"
    );

    // QoS 0 telemetry is stored the same way, without an acknowledgement.
    let q0 = publish(&hub, &device, "mqttv5", 0, &topic, r#"{"seq": 7}"#).await;
    assert!(q0.success(), "{}", q0.text());
    assert!(
        eventually(async || db
            .telemetry(&device.id, 100)
            .await
            .expect("telemetry")
            .iter()
            .any(|(_, p)| p == r#"{"seq":7}"#))
        .await,
        "QoS 0 telemetry stored"
    );
    assert!(d.last_seen_at.is_some(), "connecting records last seen");
    hub.hub.shutdown().await;
}
