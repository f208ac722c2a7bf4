//! ACC-2 (DESIGN.md invariant 6): a device publishes only to `devices/{its id}/…` and
//! subscribes only to filters under its own id. Device A publishing to B's telemetry is
//! refused (MQTT 5: PUBACK 0x87; 3.1.1: the connection is closed) and nothing is stored
//! for B; wildcard subscriptions reaching other devices are refused (SUBACK 0x87 / 0x80);
//! A's own command topic can be subscribed. Real `mosquitto_pub`/`mosquitto_sub`.

mod common;

use common::TestHub;
use common::devices::{publish, run};
use std::time::Duration;

const GOOD: &str = r#"{"temperature": 20.5}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_as_another_device() {
    let hub = TestHub::start().await;
    let product = hub.create_product("cam-v2").await;
    let a = hub.enroll_device(&product).await;
    let b = hub.enroll_device(&product).await;
    let b_telemetry = b.topic("telemetry");

    // MQTT 5, QoS 1: a negative PUBACK (0x87 not authorised), the connection stays up.
    let v5 = publish(&hub, &a, "mqttv5", 1, &b_telemetry, GOOD).await;
    assert!(
        v5.stdout.contains("received PUBACK (Mid: 1, RC:135)"),
        "{}",
        v5.text()
    );
    assert!(v5.stderr.contains("Not authorized"), "{}", v5.text());

    // MQTT 3.1.1, QoS 1: no negative PUBACK exists, so the connection is closed.
    let v3 = publish(&hub, &a, "mqttv311", 1, &b_telemetry, GOOD).await;
    assert!(!v3.success(), "{}", v3.text());
    assert!(!v3.stdout.contains("received PUBACK"), "{}", v3.text());

    // QoS 0 cannot be answered per message: the connection ends either way.
    for version in ["mqttv311", "mqttv5"] {
        let q0 = publish(&hub, &a, version, 0, &b_telemetry, GOOD).await;
        assert!(q0.code.is_some(), "{version}: {}", q0.text());
    }

    // Other topics outside A's own are refused too.
    for topic in [
        format!("devices/{}/commands", a.id),
        format!("devices/{}", a.id),
        "devices/telemetry".to_owned(),
    ] {
        let r = publish(&hub, &a, "mqttv5", 1, &topic, GOOD).await;
        assert!(r.stdout.contains("RC:135"), "{topic}: {}", r.text());
    }

    assert!(
        hub.hub
            .db
            .telemetry(&b.id, 100)
            .await
            .expect("b")
            .is_empty(),
        "nothing stored for B"
    );
    assert!(
        hub.hub
            .db
            .telemetry(&a.id, 100)
            .await
            .expect("a")
            .is_empty(),
        "nor for A"
    );

    // A's own topics work on both versions (events and state are acknowledged too).
    for version in ["mqttv311", "mqttv5"] {
        for leaf in ["telemetry", "events", "state"] {
            // An event needs an `event` name (anything else on events is refused).
            let message = if leaf == "events" {
                r#"{"event": "test", "temperature": 20.5}"#
            } else {
                GOOD
            };
            let own = publish(&hub, &a, version, 1, &a.topic(leaf), message).await;
            assert!(own.success(), "{version} {leaf}: {}", own.text());
            assert!(
                own.stdout.contains("received PUBACK (Mid: 1, RC:0)"),
                "{version} {leaf}: {}",
                own.text()
            );
        }
    }
    assert_eq!(hub.hub.db.telemetry(&a.id, 100).await.expect("a").len(), 2);
    hub.hub.shutdown().await;
}

/// `mosquitto_sub -d` as `device` on `filters`, ended by its own `-W` timeout.
async fn subscribe(
    hub: &TestHub,
    device: &common::devices::TestDevice,
    version: &str,
    filters: &[&str],
) -> String {
    let mut args = device.args(hub.mqtt_port());
    args.extend(
        ["-V", version, "-d", "-W", "2"]
            .iter()
            .map(|s| s.to_string()),
    );
    for f in filters {
        args.push("-t".into());
        args.push(f.to_string());
    }
    let r = run("mosquitto_sub", &args, None, Duration::from_secs(20)).await;
    assert!(r.code.is_some(), "{}", r.text());
    format!("{}\n{}", r.stdout, r.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_subscribe_to_other_devices() {
    let hub = TestHub::start().await;
    let product = hub.create_product("cam-v2").await;
    let a = hub.enroll_device(&product).await;
    let b = hub.enroll_device(&product).await;
    let b_commands = b.topic("commands");

    for filter in [
        "devices/+/telemetry",
        "#",
        "devices/#",
        "+/+/commands",
        &b_commands,
    ] {
        let v5 = subscribe(&hub, &a, "mqttv5", &[filter]).await;
        assert!(v5.contains("Subscribed (mid: 1): 135"), "{filter}: {v5}");
        let v3 = subscribe(&hub, &a, "mqttv311", &[filter]).await;
        assert!(v3.contains("Subscribed (mid: 1): 128"), "{filter}: {v3}");
    }

    // Own filters are granted; in one SUBSCRIBE each filter is decided on its own.
    let own = a.topic("commands");
    let own_all = format!("devices/{}/#", a.id);
    let v3 = subscribe(&hub, &a, "mqttv311", &[&own]).await;
    assert!(v3.contains("Subscribed (mid: 1): 0"), "{v3}");
    let v5 = subscribe(&hub, &a, "mqttv5", &[&own, &b_commands, &own_all]).await;
    assert!(v5.contains("Subscribed (mid: 1): 0, 135, 0"), "{v5}");

    // More filters than mqtt_topics_per_subscribe in one SUBSCRIBE: all refused.
    let max = hub.hub.state.config.limits.mqtt_topics_per_subscribe;
    let many: Vec<String> = (0..=max)
        .map(|i| format!("devices/{}/c{i}", a.id))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let v5 = subscribe(&hub, &a, "mqttv5", &refs).await;
    let quota = vec!["151"; max + 1].join(", ");
    assert!(
        v5.contains(&format!("Subscribed (mid: 1): {quota}")),
        "{v5}"
    );
    hub.hub.shutdown().await;
}
