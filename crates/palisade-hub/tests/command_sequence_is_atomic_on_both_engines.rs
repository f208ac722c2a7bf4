//! ENC-4, STOR: command sequence numbers keep one contract on embedded SQLite and on a
//! real PostgreSQL server. Concurrent senders get distinct, gapless numbers per device
//! (1, 2, 3, …, independently for each device); pending means undelivered, unanswered
//! and unexpired; delivery and the result are recorded once, only for a command the
//! device has; deleting the device deletes its commands.

#[path = "common/postgres.rs"]
mod postgres;

use palisade_hub::db::Db;
use palisade_hub::db::commands::{CommandName, CommandResult, CommandStatus, ResultRecorded};
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::ids::{DeviceId, ProductId};
use postgres::PgCluster;
use serde_json::json;

async fn device(db: &Db, product: &ProductId, fingerprint: char) -> DeviceId {
    let codes = db
        .create_claim_codes(product, 1, 3600)
        .await
        .expect("codes");
    let id = DeviceId::generate();
    db.enroll_device(&codes[0].claim, &id, &fingerprint.to_string().repeat(64), 1)
        .await
        .expect("enrol")
        .expect("enrolled");
    id
}

async fn contract(db: Db) {
    let product = ProductId::parse("cmd-v1").expect("id");
    db.create_product(&ProductModel {
        id: product.clone(),
        name: "Plug".into(),
        hardware_revision: "A".into(),
        fields: vec![FieldSpec {
            name: "watts".into(),
            kind: FieldKind::Number,
            unit: "W".into(),
            purpose: "shown to the owner".into(),
            personal: false,
            retention_days: None,
            optional: false,
        }],
        created_at: 0,
    })
    .await
    .expect("product");
    let a = device(&db, &product, 'a').await;
    let b = device(&db, &product, 'b').await;
    let ping = CommandName::parse("ping").expect("name");

    // Concurrent senders: distinct, gapless seqs per device.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (db, ping) = (db.clone(), ping.clone());
        let target = if i % 3 == 0 { b.clone() } else { a.clone() };
        tasks.push(tokio::spawn(async move {
            db.create_command(&target, &ping, &json!({ "i": i }), 60, "tester")
                .await
                .expect("command")
                .seq
        }));
    }
    let mut seqs_a = Vec::new();
    let mut seqs_b = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let seq = task.await.expect("task");
        if i % 3 == 0 {
            seqs_b.push(seq);
        } else {
            seqs_a.push(seq);
        }
    }
    seqs_a.sort_unstable();
    seqs_b.sort_unstable();
    assert_eq!(seqs_a, (1..=8).collect::<Vec<u64>>());
    assert_eq!(seqs_b, (1..=4).collect::<Vec<u64>>());

    // Bounded inputs are refused by the storage layer too.
    assert!(
        db.create_command(&a, &ping, &json!({ "x": "y".repeat(5000) }), 60, "t")
            .await
            .is_err()
    );
    assert!(
        db.create_command(&a, &ping, &json!({}), 5, "t")
            .await
            .is_err()
    );

    // Pending, delivered, answered once.
    assert_eq!(db.pending_commands(&a).await.expect("pending").len(), 8);
    assert!(db.mark_command_delivered(&a, 1).await.expect("delivered"));
    assert!(!db.mark_command_delivered(&a, 1).await.expect("again"));
    assert_eq!(
        db.record_command_result(&a, 2, CommandResult::Ok, None)
            .await
            .expect("result"),
        ResultRecorded::Recorded
    );
    assert_eq!(
        db.record_command_result(&a, 2, CommandResult::Rejected, Some("replay"))
            .await
            .expect("result"),
        ResultRecorded::AlreadyRecorded
    );
    assert_eq!(
        db.record_command_result(&a, 99, CommandResult::Ok, None)
            .await
            .expect("result"),
        ResultRecorded::Unknown
    );
    let pending: Vec<u64> = db
        .pending_commands(&a)
        .await
        .expect("pending")
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(pending, (3..=8).collect::<Vec<u64>>());
    let recent = db.recent_commands(&a, 3).await.expect("recent");
    assert_eq!(recent.iter().map(|c| c.seq).collect::<Vec<_>>(), [8, 7, 6]);
    let two = db.command(&a, 2).await.expect("db").expect("seq 2");
    assert_eq!(two.status, CommandStatus::Ok);
    assert!(two.delivered_at.is_some() && two.completed_at.is_some());
    assert_eq!(
        db.command(&a, 1).await.expect("db").expect("1").status,
        CommandStatus::Delivered
    );
    assert_eq!(
        db.command(&a, 3).await.expect("db").expect("3").status,
        CommandStatus::Pending
    );

    // An expired command is no longer pending.
    sqlx::query("UPDATE commands SET expires_at = 0 WHERE device_id = $1 AND seq = 3")
        .bind(a.as_str())
        .execute(db.pool())
        .await
        .expect("expire");
    assert_eq!(
        db.command(&a, 3).await.expect("db").expect("3").status,
        CommandStatus::Expired
    );
    assert_eq!(db.pending_commands(&a).await.expect("pending").len(), 5);

    // Deleting a device deletes its commands.
    sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(b.as_str())
        .execute(db.pool())
        .await
        .expect("delete");
    assert!(
        db.recent_commands(&b, 100)
            .await
            .expect("recent")
            .is_empty()
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_sequence_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
    contract(Db::connect(&url).await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_sequence_on_postgres() {
    let cluster = PgCluster::start().await;
    let url = cluster.fresh_database_url().await;
    contract(Db::connect(&url).await.expect("postgres")).await;
}
