//! STOR, VULN-6, UPD-7: the advisory and notice tables keep one contract on SQLite
//! and on a real PostgreSQL server. Advisory numbers are per year and never repeat,
//! also when several writers create advisories at once; publishing is a one-time
//! compare-and-set; drafts stay out of the public list; an edit replaces the affected
//! ranges; a device without owner decodes as such. A notice exists at most once per
//! user, kind and subject, also when inserted concurrently, so an owner can never be
//! told twice about one advisory.

#[path = "common/postgres.rs"]
mod postgres;

use palisade_hub::db::Db;
use palisade_hub::db::advisories::{AdvisoryFields, Affected};
use palisade_hub::db::devices::ProductModel;
use palisade_hub::db::notices::NoticeKind;
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{DeviceId, Email, ProductId, Username};
use postgres::PgCluster;
use std::collections::BTreeSet;

fn fields(product: &ProductId, summary: &str) -> AdvisoryFields {
    AdvisoryFields {
        summary: summary.into(),
        details: "d".into(),
        remediation: "r".into(),
        affected: vec![Affected {
            product: product.clone(),
            introduced: "1.2.0".into(),
            fixed: None,
        }],
        ..AdvisoryFields::default()
    }
}

async fn contract(url: &str) {
    let ring = palisade_crypto::sealed::KeyRing::generate().expect("key");
    let db = Db::connect_with_secrets(url, ring).await.expect("connect");
    let product = ProductId::parse("thermo-1").expect("id");
    db.insert_product(&ProductModel {
        id: product.clone(),
        name: "Thermo".into(),
        hardware_revision: "1".into(),
        fields: Vec::new(),
        created_at: 0,
    })
    .await
    .expect("product");

    // Numbers per year, distinct under concurrent writers.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (db, f) = (db.clone(), fields(&product, &format!("a{i}")));
        tasks.push(tokio::spawn(
            async move { db.insert_advisory(2026, &f).await },
        ));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.expect("task").expect("insert").to_string());
    }
    let want: BTreeSet<String> = (1..=6).map(|n| format!("PAL-2026-{n:04}")).collect();
    assert_eq!(ids, want);
    let next_year = db
        .insert_advisory(2027, &fields(&product, "b"))
        .await
        .expect("insert");
    assert_eq!(next_year.as_str(), "PAL-2027-0001");

    // Drafts are not listed publicly; publishing happens once.
    assert!(db.advisories(false).await.expect("list").is_empty());
    assert_eq!(db.advisories(true).await.expect("list").len(), 7);
    assert!(db.publish_advisory(&next_year).await.expect("publish"));
    assert!(
        !db.publish_advisory(&next_year)
            .await
            .expect("publish again")
    );
    let public = db.advisories(false).await.expect("list");
    assert_eq!(public.len(), 1);
    assert_eq!(public[0].affected.len(), 1);
    assert_eq!(public[0].affected[0].fixed, None);
    assert!(public[0].cve.is_none() && public[0].cvss.is_none());

    // An edit replaces the ranges.
    let mut f = fields(&product, "edited");
    f.affected[0].fixed = Some("1.3.0".into());
    f.cve = Some("CVE-2026-0001".into());
    assert!(db.update_advisory(&next_year, &f).await.expect("edit"));
    let a = db
        .advisory(&next_year)
        .await
        .expect("db")
        .expect("advisory");
    assert_eq!(a.summary, "edited");
    assert_eq!(a.affected[0].fixed.as_deref(), Some("1.3.0"));
    assert_eq!(a.cve.as_deref(), Some("CVE-2026-0001"));

    // A device without an owner decodes as one.
    let codes = db
        .create_claim_codes(&product, 1, 3600)
        .await
        .expect("codes");
    let device = DeviceId::generate();
    db.enroll_device(&codes[0].claim, &device, "00", i64::MAX / 2)
        .await
        .expect("enrol")
        .expect("valid");
    let fleet = db.active_devices_of_product(&product).await.expect("fleet");
    assert_eq!(fleet.len(), 1);
    assert!(fleet[0].owner.is_none());

    // Notices: one per user, kind and subject, also under concurrency.
    let name = Username::parse("owner-anna").expect("name");
    let email = Email::parse("owner-anna@example.org").expect("email");
    let user = db
        .insert_user(NewUser {
            username: &name,
            email: &email,
            role: Role::Owner,
            status: Status::Active,
            password_hash: Some("$argon2id$test-hash"),
        })
        .await
        .expect("user");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (db, id) = (db.clone(), user.id.clone());
        tasks.push(tokio::spawn(async move {
            db.insert_notice(&id, NoticeKind::Security, "PAL-2027-0001", "s", "b")
                .await
        }));
    }
    let mut added = 0;
    for t in tasks {
        added += usize::from(t.await.expect("task").expect("insert"));
    }
    assert_eq!(added, 1, "exactly one insert wins");
    assert!(
        db.insert_notice(&user.id, NoticeKind::Policy, "PAL-2027-0001", "s", "b")
            .await
            .expect("other kind")
    );
    assert!(
        db.insert_notice(&user.id, NoticeKind::Security, "PAL-2027-0002", "s", "b")
            .await
            .expect("other subject")
    );
    assert_eq!(db.unread_notices(&user.id).await.expect("count"), 3);
    assert_eq!(
        db.notices_about(NoticeKind::Security, "PAL-2027-0001")
            .await
            .expect("n"),
        1
    );
    assert_eq!(db.mark_notices_read(&user.id).await.expect("read"), 3);
    assert_eq!(db.unread_notices(&user.id).await.expect("count"), 0);
    assert!(
        db.notices(&user.id)
            .await
            .expect("list")
            .iter()
            .all(|n| n.read_at.is_some())
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisories_and_notices_on_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    contract(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("hub.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisories_and_notices_on_postgres() {
    let cluster = PgCluster::start().await;
    contract(&cluster.fresh_database_url().await).await;
}
