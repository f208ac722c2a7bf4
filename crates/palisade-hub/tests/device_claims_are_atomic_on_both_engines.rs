//! AUTH-2, ACC-3, STOR: claim codes and pairing codes keep one contract on embedded
//! SQLite and on a real PostgreSQL server. A claim code enrols one device only; of
//! several owners racing to claim one device with its pairing code exactly one wins;
//! the others learn only that it has an owner; an owner lists only their devices.

#[path = "common/postgres.rs"]
mod postgres;

use palisade_hub::db::Db;
use palisade_hub::db::device_admin::ClaimOutcome;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
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

async fn contract(db: Db) {
    let product = ProductId::parse("cam-v2").expect("id");
    let model = ProductModel {
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
    };
    db.create_product(&model).await.expect("product");
    let mut invalid = model.clone();
    invalid.id = ProductId::parse("cam-v3").expect("id");
    invalid.fields[0].purpose.clear();
    assert!(
        db.create_product(&invalid).await.is_err(),
        "a field without a purpose is refused"
    );
    assert_eq!(db.products().await.expect("products").len(), 1);

    let codes = db
        .create_claim_codes(&product, 2, 3600)
        .await
        .expect("codes");
    let first = DeviceId::generate();
    let enrolled = db
        .enroll_device(&codes[0].claim, &first, &"a".repeat(64), 1)
        .await
        .expect("db");
    assert!(enrolled.is_some());
    let again = db
        .enroll_device(&codes[0].claim, &DeviceId::generate(), &"b".repeat(64), 1)
        .await
        .expect("db");
    assert!(again.is_none(), "a claim code enrols one device only");

    let owners = [
        add_owner(&db, "anna").await,
        add_owner(&db, "bert").await,
        add_owner(&db, "cleo").await,
        add_owner(&db, "dora").await,
    ];
    assert!(matches!(
        db.claim_device(&codes[1].pairing, &owners[0].id)
            .await
            .expect("db"),
        ClaimOutcome::NotEnrolledYet
    ));
    assert!(matches!(
        db.claim_device("AAAA-BBBB", &owners[0].id)
            .await
            .expect("db"),
        ClaimOutcome::Unknown
    ));

    // Four owners race for one device: exactly one wins.
    let races: Vec<_> = owners
        .iter()
        .map(|o| {
            let (db, pairing, id) = (db.clone(), codes[0].pairing.clone(), o.id.clone());
            tokio::spawn(async move { db.claim_device(&pairing, &id).await.expect("db") })
        })
        .collect();
    let mut winners = Vec::new();
    for (race, owner) in races.into_iter().zip(&owners) {
        match race.await.expect("task") {
            ClaimOutcome::Claimed(device) => {
                assert_eq!(device.id, first);
                assert_eq!(device.owner_id.as_ref(), Some(&owner.id));
                winners.push(owner.id.clone());
            }
            ClaimOutcome::OwnedByAnother => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one owner wins");
    let winner = &winners[0];
    assert!(matches!(
        db.claim_device(&codes[0].pairing.to_lowercase(), winner)
            .await
            .expect("db"),
        ClaimOutcome::AlreadyYours(_)
    ));
    for owner in &owners {
        let mine = db.devices_owned_by(&owner.id).await.expect("db");
        if &owner.id == winner {
            assert_eq!(mine.len(), 1);
            assert_eq!(mine[0].id, first);
        } else {
            assert!(mine.is_empty(), "{} sees no device", owner.username);
        }
    }
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_claims_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
    contract(Db::connect(&url).await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_claims_on_postgres() {
    let cluster = PgCluster::start().await;
    let url = cluster.fresh_database_url().await;
    contract(Db::connect(&url).await.expect("postgres")).await;
}
