//! AUTH-10, ENC-1: devices connect only over mutual TLS with a certificate the hub CA
//! issued to an active device. Plaintext MQTT gets no answer; no client certificate,
//! or one from another CA → the TLS handshake fails; a revoked device → CONNACK "not
//! authorised" (3.1.1 return code 5, v5 reason 0x87); revoking a connected device
//! drops its live connection at once. The clients are the real `mosquitto_pub` and
//! `mosquitto_sub`.

mod common;

use common::TestHub;
use common::devices::{TestDevice, eventually, publish, run};
use palisade_hub::db::devices::DeviceStatus;
use std::process::Stdio;
use std::time::Duration;

const GOOD: &str = r#"{"temperature": 20.5}"#;

async fn stored(hub: &TestHub, device: &TestDevice) -> usize {
    hub.hub
        .db
        .telemetry(&device.id, 100)
        .await
        .expect("telemetry")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_a_valid_unrevoked_certificate_is_refused() {
    let hub = TestHub::start().await;
    let product = hub.create_product("cam-v2").await;
    let device = hub.enroll_device(&product).await;
    let topic = device.topic("telemetry");

    // The enrolled device connects and publishes (the control case).
    for version in ["mqttv311", "mqttv5"] {
        let ok = publish(&hub, &device, version, 1, &topic, GOOD).await;
        assert!(ok.success(), "{version}: {}", ok.text());
        assert!(ok.stdout.contains("received PUBACK"), "{}", ok.text());
    }
    assert_eq!(stored(&hub, &device).await, 2);

    // Plaintext MQTT: there is no plaintext listener (DESIGN.md invariant 1).
    let plain_args: Vec<String> = [
        "-h",
        "127.0.0.1",
        "-p",
        &hub.mqtt_port().to_string(),
        "-V",
        "mqttv311",
        "-q",
        "1",
        "-d",
        "-t",
        &topic,
        "-m",
        GOOD,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let plain = run("mosquitto_pub", &plain_args, None, Duration::from_secs(20)).await;
    assert!(!plain.success(), "{}", plain.text());
    assert!(!plain.stdout.contains("CONNACK"), "{}", plain.text());

    // No client certificate: the handshake fails, nothing is stored.
    let mut args = vec![
        "-h".to_string(),
        "127.0.0.1".into(),
        "-p".into(),
        hub.mqtt_port().to_string(),
        "--cafile".into(),
        device.ca.display().to_string(),
    ];
    args.extend(
        ["-V", "mqttv5", "-q", "1", "-d", "-t", &topic, "-m", GOOD]
            .iter()
            .map(|s| s.to_string()),
    );
    let no_cert = run("mosquitto_pub", &args, None, Duration::from_secs(20)).await;
    assert!(!no_cert.success(), "{}", no_cert.text());
    assert!(!no_cert.stdout.contains("CONNACK"), "{}", no_cert.text());
    assert!(
        no_cert.text().contains("certificate required"),
        "{}",
        no_cert.text()
    );

    // A certificate from another CA: refused in the handshake.
    let foreign = hub.foreign_device();
    let other = publish(&hub, &foreign, "mqttv5", 1, &topic, GOOD).await;
    assert!(!other.success(), "{}", other.text());
    assert!(!other.stdout.contains("CONNACK"), "{}", other.text());
    assert!(other.text().contains("unknown ca"), "{}", other.text());

    // A revoked device: CONNACK not authorised, on both protocol versions.
    assert!(
        hub.hub
            .db
            .set_device_status(&device.id, DeviceStatus::Revoked)
            .await
            .expect("revoke")
    );
    let v3 = publish(&hub, &device, "mqttv311", 1, &topic, GOOD).await;
    assert!(!v3.success(), "{}", v3.text());
    assert!(v3.stdout.contains("received CONNACK (5)"), "{}", v3.text());
    let v5 = publish(&hub, &device, "mqttv5", 1, &topic, GOOD).await;
    assert!(!v5.success(), "{}", v5.text());
    assert!(
        v5.stdout.contains("received CONNACK (135)"),
        "{}",
        v5.text()
    );

    assert_eq!(stored(&hub, &device).await, 2, "nothing more was stored");
    assert!(!hub.hub.state.fleet.is_connected(&device.id));
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_connected_device_drops_its_live_connection() {
    let hub = TestHub::start().await;
    let product = hub.create_product("cam-v2").await;
    for version in ["mqttv311", "mqttv5"] {
        let device = hub.enroll_device(&product).await;
        let mut args = device.args(hub.mqtt_port());
        // -W bounds the subscriber should the connection not be dropped.
        args.extend(
            [
                "-V",
                version,
                "-d",
                "-t",
                &device.topic("commands"),
                "-W",
                "60",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let mut sub = tokio::process::Command::new("mosquitto_sub")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_sub runs (apt-get install mosquitto-clients)");
        let fleet = hub.hub.state.fleet.clone();
        let id = device.id.clone();
        assert!(
            eventually(async || fleet.is_listening(&id)).await,
            "{version}: the subscriber connected and subscribed"
        );

        // As the API revokes: status first (no reconnection is accepted), then drop.
        hub.hub
            .db
            .set_device_status(&device.id, DeviceStatus::Revoked)
            .await
            .expect("revoke");
        assert!(hub.hub.state.fleet.disconnect(&device.id));

        let out = tokio::time::timeout(Duration::from_secs(30), sub.wait())
            .await
            .unwrap_or_else(|_| panic!("{version}: mosquitto_sub still connected after revocation"))
            .expect("wait");
        let mut stdout = String::new();
        if let Some(mut pipe) = sub.stdout.take() {
            use tokio::io::AsyncReadExt;
            let _ = pipe.read_to_string(&mut stdout).await;
        }
        assert!(
            out.code() != Some(27),
            "{version}: ended by the hub, not by its own -W timeout: {stdout}"
        );
        assert!(stdout.contains("Subscribed"), "{version}: {stdout}");
        if version == "mqttv5" {
            // Told why: 0x98 administrative action.
            assert!(stdout.contains("DISCONNECT (152)"), "{stdout}");
        }
        assert!(!hub.hub.state.fleet.is_connected(&device.id));
    }
    hub.hub.shutdown().await;
}
