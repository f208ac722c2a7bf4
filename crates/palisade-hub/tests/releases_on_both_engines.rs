//! UPD-1, UPD-6, SUP-1, STOR (issue 4): releases, reported install steps and support
//! periods keep one contract on embedded SQLite and on a real PostgreSQL server. The
//! newest release is chosen by version (not by text or time); the same version twice is
//! refused; reports are bounded per device; a support end date can be extended and is
//! never shortened (the attack), and its notice is due once.

#[path = "common/postgres.rs"]
mod postgres;

use palisade_hub::db::Db;
use palisade_hub::db::devices::ProductModel;
use palisade_hub::db::releases::{MAX_REPORTS_PER_DEVICE, NewRelease, UpdateReport};
use palisade_hub::error::Error;
use palisade_hub::ids::{DeviceId, ProductId};
use postgres::PgCluster;

fn release<'a>(
    product: &'a ProductId,
    version: (u64, u64, u64),
    target: &'a str,
) -> NewRelease<'a> {
    NewRelease {
        product,
        version,
        target,
        length: 42,
        sha256: "00",
        security: version.1 == 10,
        notes: "notes",
        created_by: "release-manager",
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
    assert!(db.newest_release(&product).await.expect("newest").is_none());
    db.insert_release(&release(&product, (1, 9, 0), "lamp-v1-1.9.0.img"))
        .await
        .expect("1.9.0");
    let v110 = db
        .insert_release(&release(&product, (1, 10, 0), "lamp-v1-1.10.0.img"))
        .await
        .expect("1.10.0");
    // Numeric order: 1.10.0 is newer than 1.9.0 (text order would say otherwise).
    let newest = db
        .newest_release(&product)
        .await
        .expect("newest")
        .expect("some");
    assert_eq!(newest.version, "1.10.0");
    assert!(newest.security);
    assert_eq!(
        db.release(&v110.id)
            .await
            .expect("get")
            .expect("some")
            .target,
        "lamp-v1-1.10.0.img"
    );
    assert_eq!(db.releases().await.expect("list").len(), 2);
    // The same version again: refused.
    assert!(matches!(
        db.insert_release(&release(&product, (1, 10, 0), "x.img"))
            .await,
        Err(Error::Conflict(_))
    ));

    // Reports: stored newest first, bounded per device.
    let device = DeviceId::generate();
    for i in 0..(MAX_REPORTS_PER_DEVICE + 5) {
        db.insert_update_report(
            &device,
            &UpdateReport {
                release: v110.id.clone(),
                version: "1.10.0".into(),
                step: if i % 2 == 0 { "downloading" } else { "failed" }.into(),
                reason: format!("attempt {i}"),
                downtime_ms: (i % 3 == 0).then_some(i),
                at_ms: 1_000 + i,
            },
        )
        .await
        .expect("report");
    }
    let reports = db.update_reports(&device, 1_000).await.expect("reports");
    assert_eq!(reports.len() as i64, MAX_REPORTS_PER_DEVICE);
    assert_eq!(
        reports[0].reason,
        format!("attempt {}", MAX_REPORTS_PER_DEVICE + 4)
    );
    assert_eq!(reports[0].at_ms, 1_000 + MAX_REPORTS_PER_DEVICE + 4);

    // Support periods.
    db.set_support_end(&product, "2030-01-01")
        .await
        .expect("publish");
    db.set_support_end(&product, "2031-01-01")
        .await
        .expect("extend");
    assert!(matches!(
        db.set_support_end(&product, "2030-06-01").await,
        Err(Error::Conflict(_))
    ));
    let periods = db.support_periods().await.expect("periods");
    assert_eq!(periods.len(), 1);
    assert_eq!(periods[0].security_updates_until, "2031-01-01");
    assert!(
        db.support_notices_due("2030-12-31")
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(
        db.support_notices_due("2031-01-01")
            .await
            .expect("due")
            .len(),
        1
    );
    db.mark_support_notice_sent("lamp-v1").await.expect("mark");
    assert!(
        db.support_notices_due("2031-01-01")
            .await
            .expect("due")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
    contract(Db::connect(&url).await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_on_postgres() {
    let cluster = PgCluster::start().await;
    let url = cluster.fresh_database_url().await;
    contract(Db::connect(&url).await.expect("postgres")).await;
}
