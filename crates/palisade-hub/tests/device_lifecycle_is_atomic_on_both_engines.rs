//! ACC-3, DATA-3, SUP-3, STOR: release, decommission and reported versions keep one
//! contract on embedded SQLite and on a real PostgreSQL server. Of two releases racing
//! for one ownership exactly one acts; a release by someone who is not the owner does
//! nothing (the attack); a release deletes the ownership's telemetry; of two
//! decommissions exactly one acts; a decommissioned device keeps its row, loses owner
//! and data, gives its pairing code up and re-arms its claim code, so the reset device
//! enrols again as a new device that the next owner claims with the same label.

#[path = "common/postgres.rs"]
mod postgres;

use palisade_hub::db::Db;
use palisade_hub::db::device_admin::ClaimOutcome;
use palisade_hub::db::devices::{DeviceStatus, FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::lifecycle::Releaser;
use palisade_hub::db::users::{NewUser, Role, Status, User};
use palisade_hub::ids::{DeviceId, Email, ProductId, Username};
use postgres::PgCluster;

async fn add_owner(db: &Db, name: &str) -> User {
    let username = Username::parse(name).expect("name");
    let email = Email::parse(&format!("{name}@example.org")).expect("email");
    db.insert_user(NewUser {
        username: &username,
        email: &email,
        role: Role::Owner,
        status: Status::Active,
        password_hash: Some("$argon2id$test-hash"),
    })
    .await
    .expect("user")
}

async fn send(db: &Db, device: &DeviceId, at_ms: i64) {
    db.insert_telemetry_batch(&[(device.clone(), at_ms, r#"{"temperature":20}"#.into())])
        .await
        .expect("telemetry");
}

async fn contract(db: Db) {
    let product = ProductId::parse("cam-v2").expect("id");
    db.create_product(&ProductModel {
        id: product.clone(),
        name: "Camera".into(),
        hardware_revision: "B".into(),
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
        .create_claim_codes(&product, 1, 3600)
        .await
        .expect("codes");
    let old = DeviceId::generate();
    db.enroll_device(&codes[0].claim, &old, &"a".repeat(64), 1)
        .await
        .expect("db")
        .expect("enrolled");
    let anna = add_owner(&db, "anna").await;
    let bert = add_owner(&db, "bert").await;

    // Versions: each reported one is kept; a missing one leaves the stored value.
    db.set_device_versions(&old, Some("acme 1.0"), Some("0.1.0"))
        .await
        .expect("versions");
    db.set_device_versions(&old, None, Some("0.2.0"))
        .await
        .expect("versions");
    let d = db.device(&old).await.expect("db").expect("device");
    assert_eq!(
        (d.firmware_version.as_str(), d.agent_version.as_str()),
        ("acme 1.0", "0.2.0")
    );

    // Anna claims; her ownership starts then.
    assert!(matches!(
        db.claim_device(&codes[0].pairing, &anna.id)
            .await
            .expect("db"),
        ClaimOutcome::Claimed(_)
    ));
    let since = db
        .device(&old)
        .await
        .expect("db")
        .expect("device")
        .owned_since_ms
        .expect("owned since");
    send(&db, &old, since - 10_000).await;
    send(&db, &old, since + 1).await;
    let seen = db.telemetry_since(&old, since, 100).await.expect("db");
    assert_eq!(seen.len(), 1, "only what arrived since the claim");
    assert_eq!(db.telemetry(&old, 100).await.expect("db").len(), 2);

    // Attack: Bert, not the owner, releases Anna's device: nothing happens.
    assert_eq!(
        db.release_device(&old, Releaser::Owner(&bert.id))
            .await
            .expect("db"),
        None
    );
    assert_eq!(db.telemetry(&old, 100).await.expect("db").len(), 2);

    // Anna and staff release at once: exactly one acts, the data goes with it.
    let (a, b) = (db.clone(), db.clone());
    let (id_a, id_b, who) = (old.clone(), old.clone(), anna.id.clone());
    let owner_release =
        tokio::spawn(async move { a.release_device(&id_a, Releaser::Owner(&who)).await });
    let staff_release = tokio::spawn(async move { b.release_device(&id_b, Releaser::Staff).await });
    let results = [
        owner_release.await.expect("task").expect("db"),
        staff_release.await.expect("task").expect("db"),
    ];
    let acted: Vec<_> = results.iter().flatten().collect();
    assert_eq!(acted.len(), 1, "one release acts: {results:?}");
    assert_eq!(acted[0].previous_owner.as_ref(), Some(&anna.id));
    assert_eq!(acted[0].telemetry_deleted, 2);
    let d = db.device(&old).await.expect("db").expect("device");
    assert_eq!((d.owner_id, d.owned_since_ms), (None, None));
    assert!(db.telemetry(&old, 100).await.expect("db").is_empty());

    // Bert claims it with the label; then the device reports a factory reset, twice at
    // once (a resent notice): exactly one decommission acts.
    assert!(matches!(
        db.claim_device(&codes[0].pairing, &bert.id)
            .await
            .expect("db"),
        ClaimOutcome::Claimed(_)
    ));
    send(&db, &old, palisade_hub::telemetry::now_ms()).await;
    let (a, b) = (db.clone(), db.clone());
    let (id_a, id_b) = (old.clone(), old.clone());
    let first = tokio::spawn(async move { a.decommission_device(&id_a).await });
    let second = tokio::spawn(async move { b.decommission_device(&id_b).await });
    let results = [
        first.await.expect("task").expect("db"),
        second.await.expect("task").expect("db"),
    ];
    let acted: Vec<_> = results.iter().flatten().collect();
    assert_eq!(acted.len(), 1, "one decommission acts: {results:?}");
    assert_eq!(acted[0].previous_owner.as_ref(), Some(&bert.id));
    let gone = db.device(&old).await.expect("db").expect("row kept");
    assert_eq!(gone.status, DeviceStatus::Decommissioned);
    assert_eq!(gone.owner_id, None);
    assert!(db.telemetry(&old, 100).await.expect("db").is_empty());
    assert!(db.devices_owned_by(&bert.id).await.expect("db").is_empty());
    // The old certificate still maps to the row, which is not active: refused.
    let by_cert = db
        .device_by_certificate(&"a".repeat(64))
        .await
        .expect("db")
        .expect("row");
    assert_eq!(by_cert.status, DeviceStatus::Decommissioned);

    // The claim code is re-armed; the pairing code waits for the new enrolment.
    assert_eq!(
        db.claim_code_product(&codes[0].claim).await.expect("db"),
        Some(product.clone())
    );
    assert!(matches!(
        db.claim_device(&codes[0].pairing, &anna.id)
            .await
            .expect("db"),
        ClaimOutcome::NotEnrolledYet
    ));
    let new = DeviceId::generate();
    let fresh = db
        .enroll_device(&codes[0].claim, &new, &"b".repeat(64), 1)
        .await
        .expect("db")
        .expect("enrols again");
    assert_eq!(fresh.status, DeviceStatus::Active);
    assert_eq!(fresh.owner_id, None);
    assert!(
        db.enroll_device(&codes[0].claim, &DeviceId::generate(), &"c".repeat(64), 1)
            .await
            .expect("db")
            .is_none(),
        "single use again"
    );
    match db
        .claim_device(&codes[0].pairing, &anna.id)
        .await
        .expect("db")
    {
        ClaimOutcome::Claimed(device) => {
            assert_eq!(device.id, new, "the label names the new device")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(db.decommission_device(&old).await.expect("db"), None);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_lifecycle_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
    contract(Db::connect(&url).await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_lifecycle_on_postgres() {
    let cluster = PgCluster::start().await;
    let url = cluster.fresh_database_url().await;
    contract(Db::connect(&url).await.expect("postgres")).await;
}
