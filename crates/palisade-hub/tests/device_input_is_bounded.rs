//! INPUT-1, RES-2 (DESIGN.md invariant 4): what a device sends is bounded by `Limits` —
//! a packet announcing more than `mqtt_max_packet_bytes` ends the connection before its
//! body is read (MQTT 5 clients are told the maximum in CONNACK); QoS 2, which the hub
//! does not offer, ends the connection; more than `mqtt_publishes_per_minute` messages
//! per device are refused (MQTT 5: PUBACK 0x97 quota exceeded; 3.1.1: connection
//! closed), and reconnecting does not reset the budget; a connection that sends no
//! CONNECT within `tls_handshake_timeout_secs`, or stays silent for 1.5× its keep-alive,
//! is closed. Nothing refused is stored.
//! Real `mosquitto_pub` (MQTT 3.1.1 and 5), and a raw TLS client for the oversized packet.

mod common;

use common::TestHub;
use common::devices::{CONNECT_V311, publish, raw_tls, remaining_length, run};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_packet_ends_the_connection_before_it_is_buffered() {
    let hub = TestHub::start().await;
    let product = hub.create_product("cam-v2").await;
    let device = hub.enroll_device(&product).await;
    let max = hub.hub.state.config.limits.mqtt_max_packet_bytes;

    let mut tls = raw_tls(&hub, &device).await;
    tls.write_all(&CONNECT_V311).await.expect("CONNECT");
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "accepted");

    // A QoS 1 PUBLISH announcing more than the limit; only its first bytes are sent.
    let mut header = vec![0x32];
    header.extend(remaining_length(max + 1024));
    header.extend_from_slice(&[0, 1, b'x', 0, 1]);
    header.extend(std::iter::repeat_n(b'a', 512));
    tls.write_all(&header).await.expect("write");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the hub closed the connection without waiting for the body"
    );
    assert!(rest.is_empty(), "no PUBACK: {rest:?}");
    assert!(
        hub.hub
            .db
            .telemetry(&device.id, 100)
            .await
            .expect("telemetry")
            .is_empty()
    );
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_is_not_offered() {
    let hub = TestHub::start().await;
    let product = hub.create_product("cam-v2").await;
    let device = hub.enroll_device(&product).await;
    let topic = device.topic("telemetry");
    for version in ["mqttv311", "mqttv5"] {
        let r = publish(&hub, &device, version, 2, &topic, r#"{"seq": 2}"#).await;
        assert!(
            !r.stdout.contains("received PUBREC"),
            "{version}: {}",
            r.text()
        );
        assert!(
            !r.stdout.contains("received PUBCOMP"),
            "{version}: {}",
            r.text()
        );
        if version == "mqttv5" {
            // CONNACK said Maximum QoS 1, so the client does not even try.
            assert!(r.text().contains("QoS not supported"), "{}", r.text());
        }
    }
    assert!(
        hub.hub
            .db
            .telemetry(&device.id, 100)
            .await
            .expect("telemetry")
            .is_empty()
    );
    // The device still works afterwards.
    let ok = publish(&hub, &device, "mqttv5", 1, &topic, r#"{"seq": 3}"#).await;
    assert!(ok.stdout.contains("RC:0"), "{}", ok.text());
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_faster_than_the_limit_is_refused() {
    const PER_MINUTE: u32 = 5;
    let hub = TestHub::start_with(|c| c.limits.mqtt_publishes_per_minute = PER_MINUTE).await;
    let product = hub.create_product("cam-v2").await;
    let device = hub.enroll_device(&product).await;
    let topic = device.topic("telemetry");
    let lines: String = (1..=10).map(|i| format!("{{\"seq\": {i}}}\n")).collect();

    let mut args = device.args(hub.mqtt_port());
    args.extend(
        ["-V", "mqttv5", "-q", "1", "-d", "-l", "-t", &topic]
            .iter()
            .map(|s| s.to_string()),
    );
    let v5 = run(
        "mosquitto_pub",
        &args,
        Some(&lines),
        Duration::from_secs(20),
    )
    .await;
    let accepted = v5.stdout.matches("RC:0)").count();
    let refused = v5.stdout.matches("RC:151)").count();
    // A burst of one minute's worth, then refusals (a token may refill meanwhile).
    assert!(
        (PER_MINUTE as usize..=PER_MINUTE as usize + 1).contains(&accepted),
        "{}",
        v5.text()
    );
    assert_eq!(accepted + refused, 10, "{}", v5.text());
    let stored = hub
        .hub
        .db
        .telemetry(&device.id, 100)
        .await
        .expect("telemetry")
        .len();
    assert_eq!(stored, accepted);

    // 3.1.1 cannot refuse one message: over the limit, the connection is closed. The
    // budget belongs to the device, so reconnecting (mosquitto_pub does, and sends the
    // messages again) does not refill it. The publisher is stopped after a few seconds.
    let mut args = device.args(hub.mqtt_port());
    args.extend(
        ["-V", "mqttv311", "-q", "1", "-d", "-l", "-t", &topic]
            .iter()
            .map(|s| s.to_string()),
    );
    let v3 = run("mosquitto_pub", &args, Some(&lines), Duration::from_secs(4)).await;
    assert!(
        v3.stdout.matches("received PUBACK").count() <= 1,
        "{}",
        v3.text()
    );
    let stored_after = hub
        .hub
        .db
        .telemetry(&device.id, 100)
        .await
        .expect("telemetry")
        .len();
    // At most one token refilled meanwhile (one per 12 s at 5 per minute).
    assert!(stored_after <= stored + 1, "{stored} then {stored_after}");
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed() {
    let hub = TestHub::start_with(|c| c.limits.tls_handshake_timeout_secs = 1).await;
    let product = hub.create_product("cam-v2").await;
    let device = hub.enroll_device(&product).await;

    // No CONNECT after the TLS handshake: closed once the handshake timeout passes.
    let mut tls = raw_tls(&hub, &device).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a connection without CONNECT is closed");
    assert!(rest.is_empty(), "{rest:?}");

    // Keep-alive 1 s, then silence: closed after 1.5 × keep-alive.
    let mut tls = raw_tls(&hub, &device).await;
    let mut connect = CONNECT_V311;
    connect[10..12].copy_from_slice(&1u16.to_be_bytes());
    tls.write_all(&connect).await.expect("CONNECT");
    let mut connack = [0u8; 4];
    tls.read_exact(&mut connack).await.expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0]);
    assert!(hub.hub.state.fleet.is_connected(&device.id));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a silent device is disconnected");
    assert!(
        common::devices::eventually(async || !hub.hub.state.fleet.is_connected(&device.id)).await
    );

    // A device that pings stays connected past that point.
    let mut tls = raw_tls(&hub, &device).await;
    tls.write_all(&connect).await.expect("CONNECT");
    tls.read_exact(&mut connack).await.expect("CONNACK");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tls.write_all(&[0xC0, 0]).await.expect("PINGREQ");
        let mut pingresp = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut pingresp))
            .await
            .expect("PINGRESP in time")
            .expect("PINGRESP");
        assert_eq!(pingresp, [0xD0, 0]);
    }
    assert!(hub.hub.state.fleet.is_connected(&device.id));
    hub.hub.shutdown().await;
}
