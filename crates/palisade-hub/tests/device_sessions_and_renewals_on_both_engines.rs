//! AUTH-10, RES-1, INPUT-1, STOR: the storage of certificate renewals, persistent MQTT
//! sessions and device events keeps one contract on embedded SQLite and on a real
//! PostgreSQL server (migration 4: added columns, a unique index on nullable values,
//! an upsert, and a bounded per-device delete).
//!
//! - Renewal: refused too early, allowed from half the lifetime; recording it keeps the
//!   old certificate accepted until the new one is used, then retires it; a renewal
//!   with a certificate that is not the device's, or for a revoked device, changes
//!   nothing; a lost certificate may be re-issued, but not at once.
//! - Sessions: stored, replaced (upsert), expired ones not returned and swept.
//! - Events: stored newest first and bounded per device.

#[path = "common/postgres.rs"]
mod postgres;

use palisade_hub::db::certificates::{REISSUE_AFTER_SECS, RenewalRefusal};
use palisade_hub::db::device_events::{EventSource, MAX_EVENTS_PER_DEVICE};
use palisade_hub::db::devices::{DeviceStatus, FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::{Db, now};
use palisade_hub::ids::{DeviceId, ProductId};
use postgres::PgCluster;

async fn contract(db: Db) {
    let product = ProductId::parse("renew-v1").expect("id");
    db.create_product(&ProductModel {
        id: product.clone(),
        name: "Sensor".into(),
        hardware_revision: "A".into(),
        fields: vec![FieldSpec {
            name: "temperature".into(),
            kind: FieldKind::Number,
            unit: "celsius".into(),
            purpose: "shown to the owner".into(),
            personal: false,
            retention_days: None,
            optional: false,
        }],
        created_at: 0,
    })
    .await
    .expect("product");
    let codes = db
        .create_claim_codes(&product, 2, 3600)
        .await
        .expect("codes");
    let (a, b) = (DeviceId::generate(), DeviceId::generate());
    let t0 = now();
    let (a1, a2, a3) = ("a".repeat(64), "c".repeat(64), "d".repeat(64));
    db.enroll_device(&codes[0].claim, &a, &a1, t0 + 1000)
        .await
        .expect("db")
        .expect("a");
    db.enroll_device(&codes[1].claim, &b, &"b".repeat(64), t0 + 1000)
        .await
        .expect("db")
        .expect("b");

    // Too early, then allowed from half the lifetime.
    assert!(matches!(
        db.renewal_allowed(&a, &a1, t0).await.expect("db"),
        Err(RenewalRefusal::TooEarly { .. })
    ));
    assert_eq!(
        db.renewal_allowed(&a, &a1, t0 + 600).await.expect("db"),
        Ok(())
    );
    // Another device's certificate is no use.
    assert_eq!(
        db.renewal_allowed(&b, &a1, t0 + 600).await.expect("db"),
        Err(RenewalRefusal::Superseded)
    );
    assert!(
        !db.record_renewed_certificate(&b, &a1, &a2, t0 + 2000, t0)
            .await
            .expect("db")
    );

    // Recorded: both certificates are accepted until the new one is used.
    assert!(
        db.record_renewed_certificate(&a, &a1, &a2, t0 + 2000, t0)
            .await
            .expect("db")
    );
    let by_old = db
        .device_by_certificate(&a1)
        .await
        .expect("db")
        .expect("old");
    assert_eq!(by_old.id, a);
    assert_eq!(by_old.previous_cert_sha256.as_deref(), Some(a1.as_str()));
    assert_eq!(by_old.cert_sha256, a2);
    assert_eq!(by_old.cert_not_after, t0 + 2000);
    assert!(db.device_by_certificate(&a2).await.expect("db").is_some());
    // The new one was lost: re-issue only after a pause, and then it replaces it.
    assert_eq!(
        db.renewal_allowed(&a, &a1, t0 + 1).await.expect("db"),
        Err(RenewalRefusal::TooOften)
    );
    assert_eq!(
        db.renewal_allowed(&a, &a1, t0 + REISSUE_AFTER_SECS)
            .await
            .expect("db"),
        Ok(())
    );
    assert!(
        db.record_renewed_certificate(&a, &a1, &a3, t0 + 3000, t0 + REISSUE_AFTER_SECS)
            .await
            .expect("db")
    );
    assert!(db.device_by_certificate(&a2).await.expect("db").is_none());
    // First use of the new one retires the old one.
    assert!(!db.retire_previous_certificate(&a, &a1).await.expect("db"));
    assert!(db.retire_previous_certificate(&a, &a3).await.expect("db"));
    assert!(db.device_by_certificate(&a1).await.expect("db").is_none());
    assert!(!db.retire_previous_certificate(&a, &a3).await.expect("db"));
    // A revoked device cannot renew.
    assert!(
        db.set_device_status(&b, DeviceStatus::Revoked)
            .await
            .expect("db")
    );
    let b1 = "b".repeat(64);
    assert_eq!(
        db.renewal_allowed(&b, &b1, t0 + 900).await.expect("db"),
        Err(RenewalRefusal::NotActive)
    );
    assert!(
        !db.record_renewed_certificate(&b, &b1, &"e".repeat(64), t0 + 2000, t0 + 900)
            .await
            .expect("db")
    );

    // Sessions: upsert, expiry, sweep.
    let subs = vec![(format!("devices/{a}/commands"), 1u8)];
    db.save_mqtt_session(&a, &subs, t0 + 100)
        .await
        .expect("save");
    let more = vec![(format!("devices/{a}/#"), 0u8); 40];
    db.save_mqtt_session(&a, &more, t0 + 200)
        .await
        .expect("replace");
    let (stored, expires) = db.mqtt_session(&a, t0).await.expect("db").expect("session");
    assert_eq!(expires, t0 + 200);
    assert_eq!(stored.len(), 32, "bounded");
    assert!(
        db.mqtt_session(&a, t0 + 200).await.expect("db").is_none(),
        "expired"
    );
    db.save_mqtt_session(&b, &subs, t0 + 50)
        .await
        .expect("save");
    assert_eq!(
        db.delete_expired_mqtt_sessions(t0 + 100)
            .await
            .expect("sweep"),
        1
    );
    db.delete_mqtt_session(&a).await.expect("delete");
    assert!(db.mqtt_session(&a, 0).await.expect("db").is_none());

    // Events: newest first, bounded per device, other devices untouched.
    db.insert_device_event(&b, 1, "other", EventSource::Device, r#"{"event":"other"}"#)
        .await
        .expect("event");
    let extra = 5;
    for i in 0..MAX_EVENTS_PER_DEVICE + extra {
        db.insert_device_event(
            &a,
            1000 + i,
            "tick",
            EventSource::Device,
            &format!(r#"{{"event":"tick","i":{i}}}"#),
        )
        .await
        .expect("event");
    }
    let events = db.device_events(&a, 1000).await.expect("events");
    assert_eq!(events.len() as i64, MAX_EVENTS_PER_DEVICE);
    assert_eq!(events[0].payload["i"], MAX_EVENTS_PER_DEVICE + extra - 1);
    assert_eq!(events.last().expect("oldest").payload["i"], extra);
    assert_eq!(db.device_events(&b, 10).await.expect("events").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_sessions_and_renewals_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
    contract(Db::connect(&url).await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_sessions_and_renewals_on_postgres() {
    let cluster = PgCluster::start().await;
    let url = cluster.fresh_database_url().await;
    contract(Db::connect(&url).await.expect("postgres")).await;
}
