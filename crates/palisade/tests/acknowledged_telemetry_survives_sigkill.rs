//! RES-1: a QoS 1 telemetry message is acknowledged only after it is durably stored, so
//! killing the hub with SIGKILL in the middle of a stream loses no acknowledged message.
//! The hub is the real `palisade serve` in its own process; the device (provisioned in
//! the data directory beforehand through the hub library) is the real `mosquitto_pub -l`
//! streaming numbered messages over MQTT 3.1.1 with its certificate. After the kill and
//! a restart, every message whose PUBACK the client received is in the telemetry table.

use palisade_hub::config::Config;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::ids::{DeviceId, ProductId};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Messages streamed; the hub is killed once a fifth of them are acknowledged.
const MESSAGES: u32 = 5000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Device {
    id: DeviceId,
    dir: std::path::PathBuf,
}

/// Create a product, a claim code and an enrolled device directly in the data
/// directory, as an operator's tooling and the enrolment API would.
fn provision(config: &Config, dir: &Path) -> Device {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let db = palisade_hub::open_database(config).await.expect("database");
        let pki = palisade_hub::pki::load_or_create(config).expect("pki");
        let product = ProductId::parse("meter-v1").expect("product id");
        db.insert_product(&ProductModel {
            id: product.clone(),
            name: "Meter".into(),
            hardware_revision: "1".into(),
            fields: vec![FieldSpec {
                name: "seq".into(),
                kind: FieldKind::Integer,
                unit: String::new(),
                purpose: "message number (test)".into(),
                personal: false,
                retention_days: None,
                optional: false,
            }],
            created_at: 0,
        })
        .await
        .expect("product");
        let codes = db
            .create_claim_codes(&product, 1, 3600)
            .await
            .expect("code");
        let id = DeviceId::generate();
        let (key, csr) = palisade_crypto::ca::device_key_and_csr(id.as_str()).expect("csr");
        let cert = pki.hub_ca.issue_device(&csr, id.as_str()).expect("cert");
        db.enroll_device(&codes[0].claim, &id, &cert.sha256, cert.not_after)
            .await
            .expect("enrol")
            .expect("code valid");
        db.close().await;
        let dev = dir.join("device");
        std::fs::create_dir_all(&dev).expect("device dir");
        std::fs::write(dev.join("dev.pem"), &cert.cert_pem).expect("cert");
        std::fs::write(dev.join("dev.key"), &key).expect("key");
        std::fs::write(dev.join("ca.pem"), &pki.hub_ca_pem).expect("ca");
        Device { id, dir: dev }
    })
}

fn serve(config_file: &Path, data: &Path, mqtt_port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "serve",
            "--config",
            &config_file.display().to_string(),
            "--data-dir",
            &data.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--mqtt-listen",
            &format!("127.0.0.1:{mqtt_port}"),
        ])
        .env("PALISADE_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("palisade starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", mqtt_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the device listener never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// The `seq` of every stored message.
fn stored(config: &Config, device: &DeviceId) -> BTreeSet<u32> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let db = palisade_hub::open_database(config).await.expect("database");
        let rows = db.telemetry(device, 10_000).await.expect("telemetry");
        db.close().await;
        rows.iter()
            .map(|(_, payload)| {
                let v: serde_json::Value = serde_json::from_str(payload).expect("json");
                u32::try_from(v["seq"].as_u64().expect("seq")).expect("u32")
            })
            .collect()
    })
}

#[test]
fn no_acknowledged_message_is_lost_when_the_hub_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = Config::for_data_dir(&data);
    let device = provision(&config, dir.path());
    // A generous publish rate, so the stream measures storage and not the rate limit.
    let config_file = dir.path().join("palisade.toml");
    std::fs::write(
        &config_file,
        "[limits]\nmqtt_publishes_per_minute = 1000000\n",
    )
    .expect("config");
    let mqtt_port = free_port();
    let mut hub = serve(&config_file, &data, mqtt_port);

    let mut publisher = Command::new("mosquitto_pub")
        .current_dir(&device.dir)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt_port.to_string(),
            "--cafile",
            "ca.pem",
            "--cert",
            "dev.pem",
            "--key",
            "dev.key",
            "-V",
            "mqttv311",
            "-q",
            "1",
            "-d",
            "-l",
            "-t",
            &format!("devices/{}/telemetry", device.id),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
    let mut stdin = publisher.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for seq in 1..=MESSAGES {
            if writeln!(stdin, "{{\"seq\": {seq}}}").is_err() {
                return; // the publisher is gone
            }
        }
        // Keep stdin open: closing it would end the stream before the kill.
        std::thread::sleep(Duration::from_secs(60));
    });
    // mosquitto_pub numbers messages 1, 2, … in the order of the lines, so the message
    // id of a PUBACK is the `seq` of the message it acknowledges.
    let stdout = publisher.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("received PUBACK (Mid: ").nth(1)
                && let Some(mid) = rest.split(',').next().and_then(|m| m.parse().ok())
                && tx.send(mid).is_err()
            {
                return;
            }
        }
    });

    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.len() < (MESSAGES / 5) as usize && Instant::now() < deadline {
        if let Ok(mid) = rx.recv_timeout(Duration::from_millis(100)) {
            acked.insert(mid);
        }
    }
    assert!(
        !acked.is_empty(),
        "the hub acknowledged messages before the kill"
    );
    hub.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let _ = hub.wait();

    // Every PUBACK the client got was sent before the kill; collect the rest of them
    // (until the output has been quiet for a second; bounded).
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(mid) => {
                acked.insert(mid);
            }
            Err(_) => break,
        }
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
    let _ = reader.join();
    drop(feeder); // it ends on its own once the publisher's stdin is closed

    // Restart the hub on the same data: it comes up, and nothing acknowledged is lost.
    let mut restarted = serve(&config_file, &data, mqtt_port);
    let kept = stored(&config, &device.id);
    let _ = restarted.kill();
    let _ = restarted.wait();
    let lost: Vec<u32> = acked.difference(&kept).copied().collect();
    eprintln!(
        "streamed up to {MESSAGES}; acknowledged {}; stored {}",
        acked.len(),
        kept.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged but not stored after SIGKILL: {} messages, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(kept.len() >= acked.len());
}
