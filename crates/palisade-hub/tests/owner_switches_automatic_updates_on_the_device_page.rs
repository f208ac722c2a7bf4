//! UPD-3 in the console: the device page shows whether automatic install is on, and its
//! owner switches it off, postpones it to a date, or on again with a form; off and
//! postponed carry a clear warning that security fixes will not install. Each change is
//! stored and audited. Negative cases: another owner gets 404, an operator may look but
//! not switch (403), a form without its CSRF token is refused, and a postponement in the
//! past is refused, and a released device does not keep its previous owner's "off".

mod common;

use common::TestHub;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::ids::{DeviceId, ProductId};
use palisade_hub::updates::auto_update::AutoUpdate;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_switches_automatic_updates_and_others_cannot() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;
    let mut operator = hub.invite(&mut admin, "ops-olga", "operator").await;
    let mut anna = hub.invite(&mut admin, "owner-anna", "owner").await;
    let mut bert = hub.invite(&mut admin, "owner-bert", "owner").await;

    let product = ProductId::parse("lamp-v1").expect("id");
    db.create_product(&ProductModel {
        id: product.clone(),
        name: "Lamp".into(),
        hardware_revision: "1".into(),
        fields: vec![FieldSpec {
            name: "on".into(),
            kind: FieldKind::Boolean,
            unit: String::new(),
            purpose: "lamp state".into(),
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
    let id = DeviceId::generate();
    db.enroll_device(&codes[0].claim, &id, &"cd".repeat(32), 4_000_000_000)
        .await
        .expect("enrol")
        .expect("code valid");
    let page = anna
        .post_form("/devices/claim", &[("pairing_code", &codes[0].pairing)])
        .await;
    assert_eq!(page.location(), format!("/devices/{id}?done=claimed"));

    let path = format!("/devices/{id}");
    let switch = format!("/devices/{id}/auto-update");
    let page = anna.get(&path).await;
    assert!(
        page.body.contains("<strong>on (default)</strong>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"auto-update-off\""));
    assert!(!page.body.contains("id=\"auto-update-warning\""));

    // Refused: no CSRF token; another owner; an operator; a date in the past.
    let forged = anna.post_raw(&switch, &[("state", "off")]).await;
    assert_eq!(forged.status, 403);
    bert.get("/devices").await;
    let other = bert.post_form(&switch, &[("state", "off")]).await;
    assert_eq!(other.status, 404);
    let staff_view = operator.get(&path).await;
    assert_eq!(staff_view.status, 200);
    assert!(!staff_view.body.contains("id=\"auto-update-off\""));
    let staff = operator.post_form(&switch, &[("state", "off")]).await;
    assert_eq!(staff.status, 403);
    anna.get(&path).await;
    let past = anna
        .post_form(&switch, &[("state", "postpone"), ("until", "2001-01-01")])
        .await;
    assert_eq!(past.status, 400);
    assert_eq!(db.auto_update(&id).await.expect("policy"), None);

    // The owner switches it off: stored, audited, and the page warns.
    anna.get(&path).await;
    let done = anna.post_form(&switch, &[("state", "off")]).await;
    assert_eq!(
        done.location(),
        format!("/devices/{id}?done=auto-update-off")
    );
    assert_eq!(
        db.auto_update(&id).await.expect("policy"),
        Some(AutoUpdate::Off)
    );
    let page = anna.get(done.location()).await;
    assert!(page.body.contains("<strong>off</strong>"), "{}", page.body);
    assert!(page.body.contains("id=\"auto-update-warning\""));
    assert!(page.body.contains("Security fixes are NOT installed"));

    // Postponed to a date next year, then on again.
    let next_year = time::OffsetDateTime::now_utc().year() + 1;
    let until = format!("{next_year}-01-15");
    let done = anna
        .post_form(&switch, &[("state", "postpone"), ("until", &until)])
        .await;
    assert_eq!(
        done.location(),
        format!("/devices/{id}?done=auto-update-postpone")
    );
    assert!(matches!(
        db.auto_update(&id).await.expect("policy"),
        Some(AutoUpdate::Postponed { .. })
    ));
    let page = anna.get(done.location()).await;
    assert!(
        page.body.contains(&format!("postponed until {until}")),
        "{}",
        page.body
    );
    let done = anna.post_form(&switch, &[("state", "on")]).await;
    assert_eq!(
        done.location(),
        format!("/devices/{id}?done=auto-update-on")
    );
    assert_eq!(
        db.auto_update(&id).await.expect("policy"),
        Some(AutoUpdate::On)
    );

    let audited = db
        .audit_entries_for_target(id.as_str(), 100)
        .await
        .expect("audit");
    let switches: Vec<_> = audited
        .iter()
        .filter(|e| e.action == "device.auto_update")
        .collect();
    assert_eq!(switches.len(), 3, "{audited:?}");

    // A released device does not keep its previous owner's "off" for the next owner.
    anna.get(&path).await;
    anna.post_form(&switch, &[("state", "off")]).await;
    assert_eq!(
        db.auto_update(&id).await.expect("policy"),
        Some(AutoUpdate::Off)
    );
    anna.get(&path).await;
    let released = anna.post_form(&format!("/devices/{id}/release"), &[]).await;
    assert_eq!(released.status, 303, "{}", released.body);
    assert_eq!(
        db.auto_update(&id).await.expect("policy"),
        Some(AutoUpdate::On)
    );
    hub.hub.shutdown().await;
}
