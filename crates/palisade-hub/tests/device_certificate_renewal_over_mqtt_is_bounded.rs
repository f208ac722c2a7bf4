//! AUTH-10, ENC-3, ACC-2: certificate renewal over the device's MQTT connection, at the
//! protocol level. A renewal request is answered only for the device's own id, only
//! to a device subscribed to its certificate topic, only once half the certificate's
//! lifetime has passed; the new certificate is published on `devices/{id}/certificate`
//! and recorded for the same device; the old certificate keeps working until the new
//! one is first used, and is then retired.
//!
//! The attacks that must fail: a CSR on another device's topic (0x87), a CSR before
//! the device may renew (0x97, audited once), a CSR nobody will receive the answer to
//! (0x83), a CSR that is not one (0x99), and the retired certificate connecting again.

mod common;

use common::TestHub;
use common::devices::{TestDevice, eventually, raw_tls, remaining_length};
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

fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut p = vec![first];
    p.extend(remaining_length(body.len()));
    p.extend(body);
    p
}

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

/// MQTT 5 CONNECT (clean start) as `device`; returns the stream and the reason code.
async fn connect(hub: &TestHub, device: &TestDevice) -> (Tls, u8) {
    let mut tls = raw_tls(hub, device).await;
    let mut body = str16("MQTT");
    body.extend([5, 0x02, 0, 60, 0]);
    body.extend(str16("r"));
    tls.write_all(&packet(0x10, body)).await.expect("CONNECT");
    let (kind, body) = read_packet(&mut tls).await;
    assert_eq!(kind, 0x20);
    (tls, body[1])
}

async fn subscribe(tls: &mut Tls, filter: &str) {
    let mut body = vec![0, 1, 0];
    body.extend(str16(filter));
    body.push(1);
    tls.write_all(&packet(0x82, body)).await.expect("SUBSCRIBE");
    let (kind, body) = read_packet(tls).await;
    assert_eq!((kind, body[3]), (0x90, 1), "granted QoS 1");
}

/// PUBLISH QoS 1 with packet id `id`; returns the PUBACK reason code (0 = success),
/// and whatever PUBLISH arrived before it.
async fn publish(tls: &mut Tls, id: u16, topic: &str, payload: &[u8]) -> (u8, Vec<Vec<u8>>) {
    let mut body = str16(topic);
    body.extend(id.to_be_bytes());
    body.push(0);
    body.extend_from_slice(payload);
    tls.write_all(&packet(0x32, body)).await.expect("PUBLISH");
    let mut received = Vec::new();
    loop {
        let (kind, body) = read_packet(tls).await;
        match kind & 0xf0 {
            0x40 => {
                assert_eq!(u16::from_be_bytes([body[0], body[1]]), id);
                return (body.get(2).copied().unwrap_or(0), received);
            }
            0x30 => received.push(body),
            other => panic!("unexpected packet {other:#x}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth10_renewal_over_mqtt_is_for_the_own_id_bounded_and_retires_the_old_certificate() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let product = hub.create_product("renew-v2").await;
    let device = hub.enroll_device(&product).await;
    let other = hub.enroll_device(&product).await;
    let old = db.device(&device.id).await.expect("db").expect("device");
    let (new_key, csr) =
        palisade_crypto::ca::device_key_and_csr(other.id.as_str()).expect("key and CSR");

    let (mut tls, rc) = connect(&hub, &device).await;
    assert_eq!(rc, 0);
    // Nobody listens for the answer yet: nothing is signed.
    let (rc, _) = publish(
        &mut tls,
        1,
        &device.topic("certificate/csr"),
        csr.as_bytes(),
    )
    .await;
    assert_eq!(rc, 0x83, "not subscribed to its certificate topic");
    subscribe(&mut tls, &device.topic("certificate")).await;
    // Another device's renewal topic is not this device's to use.
    let (rc, _) = publish(&mut tls, 2, &other.topic("certificate/csr"), csr.as_bytes()).await;
    assert_eq!(rc, 0x87, "not authorised");
    // A fresh certificate: too early (twice; audited once).
    for id in [3, 4] {
        let (rc, got) = publish(
            &mut tls,
            id,
            &device.topic("certificate/csr"),
            csr.as_bytes(),
        )
        .await;
        assert_eq!(rc, 0x97, "quota exceeded: too early");
        assert!(got.is_empty());
    }
    let denied = db
        .audit_entries_for_target(device.id.as_str(), 50)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.action == "device.certificate.renew" && e.outcome == "denied")
        .count();
    assert_eq!(denied, 1, "one refusal per connection is audited");
    assert_eq!(
        db.device(&device.id)
            .await
            .expect("db")
            .expect("d")
            .cert_sha256,
        old.cert_sha256
    );

    // Half the lifetime has passed (the test moves the issue time back).
    let now = palisade_hub::db::now();
    sqlx::query("UPDATE devices SET cert_issued_at = $1, cert_not_after = $2 WHERE id = $3")
        .bind(now - 1000)
        .bind(now + 100)
        .bind(device.id.as_str())
        .execute(db.pool())
        .await
        .expect("age the certificate");
    let (rc, _) = publish(&mut tls, 5, &device.topic("certificate/csr"), b"not a CSR").await;
    assert_eq!(rc, 0x99, "payload format invalid");
    // A CSR asking for another device's name gets a certificate for THIS device.
    let (rc, mut got) = publish(
        &mut tls,
        6,
        &device.topic("certificate/csr"),
        csr.as_bytes(),
    )
    .await;
    assert_eq!(rc, 0);
    if got.is_empty() {
        let (kind, body) = read_packet(&mut tls).await;
        assert_eq!(kind & 0xf0, 0x30);
        got.push(body);
    }
    let body = &got[0];
    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    assert_eq!(&body[2..2 + tlen], device.topic("certificate").as_bytes());
    // QoS 0: no packet id; then the (empty) v5 properties.
    let answer: serde_json::Value = serde_json::from_slice(&body[3 + tlen..]).expect("json");
    let sha = answer["sha256"].as_str().expect("sha256").to_owned();
    let renewed = db.device(&device.id).await.expect("db").expect("device");
    assert_eq!(renewed.cert_sha256, sha);
    assert!(
        db.device(&other.id)
            .await
            .expect("db")
            .expect("o")
            .cert_sha256
            != sha
    );
    drop(tls);

    // The old certificate still works until the new one is used.
    let (tls, rc) = connect(&hub, &device).await;
    assert_eq!(
        rc, 0,
        "old certificate accepted before first use of the new one"
    );
    drop(tls);
    let id = device.id.clone();
    assert!(eventually(async || !hub.hub.state.fleet.is_connected(&id)).await);

    let dir = hub.dir.path().join("renewed");
    std::fs::create_dir_all(&dir).expect("dir");
    let renewed_device = TestDevice {
        id: device.id.clone(),
        cert: dir.join("dev.pem"),
        key: dir.join("dev.key"),
        ca: device.ca.clone(),
    };
    std::fs::write(
        &renewed_device.cert,
        answer["certificate_pem"].as_str().expect("pem"),
    )
    .expect("cert");
    std::fs::write(&renewed_device.key, &new_key).expect("key");
    let (tls, rc) = connect(&hub, &renewed_device).await;
    assert_eq!(rc, 0, "the renewed certificate connects");
    drop(tls);
    assert!(eventually(async || !hub.hub.state.fleet.is_connected(&id)).await);
    // Now the old one is retired.
    let (_, rc) = connect(&hub, &device).await;
    assert_eq!(rc, 0x87, "retired certificate refused");
    hub.hub.shutdown().await;
}
