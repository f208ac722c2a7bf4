//! SUP-1, SUP-2: every product model's security-support end date is published at
//! `/support` without sign-in, and in `GET /api/v1/products`. Once published, a date
//! may be extended but never shortened (attack: a shorter date is refused and the
//! published one stays). Owners are told once, 90 days before the end.

mod common;

use common::TestHub;
use palisade_hub::error::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_dates_are_public_and_never_shortened() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let lamp = hub.create_product("lamp-v1").await;
    let cam = hub.create_product("cam-v2").await;
    db.set_support_end(&lamp, "2031-06-30")
        .await
        .expect("publish");

    // No session, no cookie: the page lists every model, with its date or "not yet".
    let mut anonymous = hub.browser();
    let page = anonymous.get("/support").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("lamp-v1"), "{}", page.body);
    assert!(page.body.contains("2031-06-30"), "{}", page.body);
    assert!(page.body.contains("cam-v2"), "{}", page.body);
    assert!(page.body.contains("not yet declared"), "{}", page.body);

    // Extending is fine.
    db.set_support_end(&lamp, "2032-01-31")
        .await
        .expect("extend");
    // Attack: shortening is refused with a clear message; the published date stays.
    match db.set_support_end(&lamp, "2030-01-01").await {
        Err(Error::Conflict(why)) => {
            assert!(why.contains("never shortened"), "{why}");
            assert!(why.contains("2032-01-31"), "{why}");
        }
        other => panic!("shortening must be refused, got {other:?}"),
    }
    // Not a date: refused.
    assert!(db.set_support_end(&cam, "2031-02-30").await.is_err());
    assert!(db.set_support_end(&cam, "soon").await.is_err());
    let page = anonymous.get("/support").await;
    assert!(page.body.contains("2032-01-31"), "{}", page.body);
    assert!(!page.body.contains("2030-01-01"), "{}", page.body);

    // The API lists the date with each product (signed in).
    let (mut admin, _) = hub.setup_admin().await;
    let page = admin.get("/api/v1/products").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let products: serde_json::Value = serde_json::from_str(&page.body).expect("json");
    let lamp_row = products
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["id"] == "lamp-v1")
        .expect("lamp listed");
    assert_eq!(lamp_row["security_updates_until"], "2032-01-31");

    // SUP-2: a model whose support ends within 90 days is announced once to owners.
    db.set_support_end(&cam, "2000-01-01")
        .await
        .expect("past date");
    let sent = palisade_hub::updates::send_support_notices(db, "https://127.0.0.1")
        .await
        .expect("notices");
    assert_eq!(sent, 1, "cam-v2 ends within 90 days; lamp-v1 does not");
    let again = palisade_hub::updates::send_support_notices(db, "https://127.0.0.1")
        .await
        .expect("notices");
    assert_eq!(again, 0, "once per published date");
    // ... and the console shows a banner (staff: every such model).
    let home = admin.get("/").await;
    assert!(
        home.body
            .contains("Security updates end soon: cam-v2 on 2000-01-01"),
        "{}",
        home.body
    );
    assert!(!home.body.contains("lamp-v1 on"), "{}", home.body);
}
