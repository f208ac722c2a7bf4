//! `--database-url postgres://…` gives the same hub: setup with the one-time code, TOTP
//! enrolment, sign-in with a fresh code, the audit chain, and a restart that reuses
//! the CA and finds setup already done — on a real PostgreSQL server.

mod common;

use common::postgres::PgCluster;
use common::{ADMIN, ADMIN_PASSWORD, TestHub};
use palisade_hub::config::DatabaseLocation;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_behaves_the_same_on_postgresql() {
    let pg = PgCluster::start().await;
    let url = pg.fresh_database_url().await;
    let hub = TestHub::start_with(|c| c.database = DatabaseLocation::Url(url.clone())).await;
    assert!(
        !hub.data_dir().join("palisade.sqlite3").exists(),
        "no SQLite file when PostgreSQL is chosen"
    );
    let (mut admin, secret) = hub.setup_admin().await;
    assert_eq!(admin.get("/users").await.status, 200);
    let mut again = hub.browser();
    let page = again
        .sign_in(ADMIN, ADMIN_PASSWORD, Some((&secret, common::now() + 30)))
        .await;
    assert_eq!(page.location(), "/", "{}", page.body);
    assert_eq!(
        hub.hub
            .db
            .verify_audit_chain()
            .await
            .expect("verify")
            .first_broken,
        None
    );

    // Restart on the same data directory and database: same CA, no new setup code.
    let fingerprint = hub.hub.ca_fingerprint.clone();
    let data_dir = hub.data_dir();
    let TestHub { hub: running, dir } = hub;
    running.shutdown().await;
    let mut config = palisade_hub::config::Config::for_data_dir(&data_dir);
    config.database = DatabaseLocation::Url(url);
    let restarted = palisade_hub::start(config).await.expect("restart");
    assert_eq!(restarted.ca_fingerprint, fingerprint, "the CA is reused");
    assert!(restarted.setup_code.is_none(), "setup happens once");
    restarted.shutdown().await;
    drop(dir);
}
