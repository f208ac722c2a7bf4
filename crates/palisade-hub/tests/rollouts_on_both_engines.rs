//! UPD-5, UPD-6, STOR (issue 4, staged rollouts): rollouts, their device lists and the
//! devices they admitted keep one contract on embedded SQLite and on a real PostgreSQL
//! server. Attacks and races: a second unfinished rollout of the same model is refused
//! by the database itself (a partial unique index, so two operators racing cannot
//! start two); a device is admitted once; a state change from the wrong state and a
//! stage skip do nothing.

#[path = "common/postgres.rs"]
mod postgres;

use palisade_hub::db::Db;
use palisade_hub::db::devices::ProductModel;
use palisade_hub::db::releases::{NewRelease, UpdateReport};
use palisade_hub::db::rollouts::{ABORTED, COMPLETED, HALTED, NewRollout, PAUSED, RUNNING};
use palisade_hub::error::Error;
use palisade_hub::ids::{DeviceId, ProductId};
use postgres::PgCluster;

fn spec<'a>(release: &'a str, targets: &'a [DeviceId]) -> NewRollout<'a> {
    NewRollout {
        release,
        product: "lamp-v1",
        stages: &[10, 50, 100],
        soak_minutes: 30,
        failure_threshold_pct: 5,
        targets,
        replaces: "",
        created_by: "rm",
    }
}

async fn contract(db: Db) {
    let product = ProductId::parse("lamp-v1").expect("id");
    db.create_product(&ProductModel {
        id: product.clone(),
        name: "Lamp".into(),
        hardware_revision: "A".into(),
        fields: vec![],
        created_at: 0,
    })
    .await
    .expect("product");
    let mut devices = Vec::new();
    for i in 0..4 {
        let code = db
            .create_claim_codes(&product, 1, 3600)
            .await
            .expect("claim");
        let id = DeviceId::generate();
        db.enroll_device(&code[0].claim, &id, &format!("{i:064}"), i64::MAX / 2)
            .await
            .expect("enrol")
            .expect("enrolled");
        db.set_firmware_version(&id, if i == 3 { "2.0.0" } else { "1.0.0" })
            .await
            .expect("firmware");
        devices.push(id);
    }
    let release = db
        .insert_release(&NewRelease {
            product: &product,
            version: (2, 0, 0),
            target: "lamp-v1-2.0.0.img",
            length: 1,
            sha256: "00",
            security: true,
            notes: "",
            created_by: "rm",
        })
        .await
        .expect("release");
    let first = spec(&release.id, &[]);
    let r = db.insert_rollout(&first).await.expect("rollout");
    assert_eq!(r.state, RUNNING);
    assert_eq!(r.stages, vec![10, 50, 100]);
    assert_eq!(r.stage, 0);
    assert_eq!(r.soak_minutes, 30);
    // One unfinished rollout per model, enforced by the database.
    match db.insert_rollout(&first).await {
        Err(Error::Conflict(m)) => assert!(m.contains("already running"), "{m}"),
        other => panic!("second rollout must be refused: {other:?}"),
    }
    for state in [PAUSED, HALTED] {
        assert!(
            db.set_rollout_state(&r.id, &[RUNNING, PAUSED], state, "why")
                .await
                .expect("state")
        );
        assert!(
            db.insert_rollout(&first).await.is_err(),
            "{state} is unfinished"
        );
    }
    assert_eq!(
        db.rollout(&r.id)
            .await
            .expect("db")
            .expect("r")
            .halted_reason,
        "why"
    );
    // Wrong source state: nothing happens.
    assert!(
        !db.set_rollout_state(&r.id, &[PAUSED], COMPLETED, "")
            .await
            .expect("state")
    );
    assert!(db.resume_rollout(&r.id, 1).await.expect("resume"));
    let resumed = db.rollout(&r.id).await.expect("db").expect("r");
    assert_eq!(
        (resumed.state.as_str(), resumed.accepted_failures),
        (RUNNING, 1)
    );
    assert!(resumed.halted_reason.is_empty());

    // Candidates: every active device of the model, paged by id.
    let mut all = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let page = db
            .rollout_candidates(&resumed, &after, 3)
            .await
            .expect("page");
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        all.extend(page);
    }
    assert_eq!(all.len(), 4);
    assert!(all.iter().any(|(_, fw)| fw == "2.0.0"));

    // Admission is once per device.
    assert!(
        db.admit_to_rollout(&r.id, devices[0].as_str(), 0)
            .await
            .expect("admit")
    );
    assert!(
        !db.admit_to_rollout(&r.id, devices[0].as_str(), 0)
            .await
            .expect("again")
    );
    assert!(db.is_admitted(&r.id, &devices[0]).await.expect("is"));
    assert!(!db.is_admitted(&r.id, &devices[1]).await.expect("is"));
    assert_eq!(
        db.rollout_admitted(&r.id, "", 10)
            .await
            .expect("admitted")
            .len(),
        1
    );
    // A report for the release is counted on the rollout.
    db.insert_update_report(
        &devices[0],
        &UpdateReport {
            release: release.id.clone(),
            version: "2.0.0".into(),
            step: "failed".into(),
            reason: "no space".into(),
            downtime_ms: None,
            at_ms: 1,
        },
    )
    .await
    .expect("report");
    let counts = db.rollout_step_counts(&r.id).await.expect("counts");
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (counts[0].stage, counts[0].step.as_str(), counts[0].devices),
        (0, "failed", 1)
    );

    // Stages advance one at a time.
    assert!(!db.advance_rollout(&r.id, 2).await.expect("skip"));
    assert!(db.advance_rollout(&r.id, 1).await.expect("advance"));
    assert_eq!(db.rollout(&r.id).await.expect("db").expect("r").stage, 1);

    // Finished: a new rollout may start; a device list limits the candidates.
    assert!(
        db.set_rollout_state(&r.id, &[RUNNING], ABORTED, "")
            .await
            .expect("abort")
    );
    let listed = [devices[1].clone(), devices[2].clone()];
    let second = spec(&release.id, &listed);
    let r2 = db.insert_rollout(&second).await.expect("second rollout");
    assert_eq!(db.rollout_targets(&r2.id).await.expect("targets").len(), 2);
    let page = db.rollout_candidates(&r2, "", 10).await.expect("page");
    let mut ids: Vec<&str> = page.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort();
    let mut want = vec![devices[1].as_str(), devices[2].as_str()];
    want.sort();
    assert_eq!(ids, want);
    // A listed rollout, even completed, is not the model's general release.
    assert!(
        db.set_rollout_state(&r2.id, &[RUNNING], COMPLETED, "")
            .await
            .expect("done")
    );
    assert!(
        db.completed_fleet_rollout("lamp-v1")
            .await
            .expect("db")
            .is_none()
    );
    let r3 = db.insert_rollout(&first).await.expect("third");
    assert!(
        db.set_rollout_state(&r3.id, &[RUNNING], COMPLETED, "")
            .await
            .expect("done")
    );
    assert_eq!(
        db.completed_fleet_rollout("lamp-v1")
            .await
            .expect("db")
            .map(|r| r.id),
        Some(r3.id.clone())
    );
    assert_eq!(
        db.rollouts_in(&[RUNNING, PAUSED, HALTED])
            .await
            .expect("db")
            .len(),
        0
    );
    assert_eq!(db.rollouts(10).await.expect("db").len(), 3);
    assert_eq!(
        db.devices_on_version("lamp-v1", "2.0.0").await.expect("db"),
        vec![devices[3].clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
    contract(Db::connect(&url).await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_on_postgres() {
    let cluster = PgCluster::start().await;
    let url = cluster.fresh_database_url().await;
    contract(Db::connect(&url).await.expect("postgres")).await;
}
