//! UPD-6, UPD-7, VULN-6 (issue 5, "one-step security rollout"): on a published
//! advisory's staff page, "Roll out the fixed release" starts a rollout of the release
//! of the advisory's product whose version is the fixed version, with the security
//! defaults (10 %, then 100 % after a short soak). Negatives: without such a release it
//! says so and starts nothing; an owner cannot press it (403); the console form without
//! its CSRF token is refused.

mod common;

use common::TestHub;
use palisade_hub::db::releases::NewRelease;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advisory_page_starts_the_fixed_release_rollout() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;
    let mut owner = hub.invite(&mut admin, "owner-ida", "owner").await;
    let thermo = hub.create_product("thermo-1").await;
    for _ in 0..3 {
        let d = hub.enroll_device(&thermo).await;
        db.set_firmware_version(&d.id, "1.2.0")
            .await
            .expect("firmware");
    }

    admin.get("/manage/advisories/new").await;
    let page = admin
        .post_form(
            "/manage/advisories",
            &[
                ("summary", "Unauthenticated firmware upload"),
                ("affected", "thermo-1 1.2.0 1.3.0"),
                ("fixed_version", "1.3.0"),
                ("remediation", "Update to firmware 1.3.0."),
                (
                    "details",
                    "The upload endpoint skipped the signature check.",
                ),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let manage = page.location().to_owned();
    let page = admin.post_form(&format!("{manage}/publish"), &[]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let page = admin.get(&manage).await;
    assert!(
        page.body.contains("id=\"security-rollout\""),
        "{}",
        page.body
    );

    // No release 1.3.0 yet: a clear message, nothing started.
    let page = admin.post_form(&format!("{manage}/rollout"), &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("no published release matches the fixed version (thermo-1 1.3.0)"),
        "{}",
        page.body
    );
    assert!(db.rollouts(10).await.expect("db").is_empty());

    let release = db
        .insert_release(&NewRelease {
            product: &thermo,
            version: (1, 3, 0),
            target: "thermo-1-1.3.0.img",
            length: 10,
            sha256: &"ab".repeat(32),
            security: true,
            notes: "Fixes the upload check.",
            created_by: "test",
        })
        .await
        .expect("release");

    // Attacks: an owner cannot start it; the form without its token is refused.
    let page = owner.post_form(&format!("{manage}/rollout"), &[]).await;
    assert_eq!(page.status, 403);
    let page = admin.post_raw(&format!("{manage}/rollout"), &[]).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(db.rollouts(10).await.expect("db").is_empty());

    let page = admin.post_form(&format!("{manage}/rollout"), &[]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let rollout_page = page.location().to_owned();
    let rollouts = db.rollouts(10).await.expect("db");
    assert_eq!(rollouts.len(), 1);
    let r = &rollouts[0];
    assert_eq!(rollout_page, format!("/rollouts/{}", r.id));
    assert_eq!(r.release, release.id);
    assert_eq!(r.stages, vec![10, 100]);
    assert_eq!(
        r.soak_minutes,
        palisade_hub::updates::rollouts::SECURITY_SOAK_MINUTES
    );
    assert_eq!(r.state, "running");
    // ceil(10 % of 3) = 1 device admitted at once.
    let admitted: i64 = db
        .rollout_step_counts(&r.id)
        .await
        .expect("counts")
        .iter()
        .map(|c| c.devices)
        .sum();
    assert_eq!(admitted, 1);
    // The console shows it with its picture; pressing again is refused (one at a time).
    let page = admin.get(&rollout_page).await;
    assert!(
        page.body.contains("<svg") && page.body.contains("thermo-1 1.3.0"),
        "{}",
        page.body
    );
    let page = admin.get("/rollouts").await;
    assert!(page.body.contains(&r.id), "{}", page.body);
    let page = admin.post_form(&format!("{manage}/rollout"), &[]).await;
    assert!(page.body.contains("already running"), "{}", page.body);
}
