//! PRIV-3, PRIV-4 in the console: the device page shows which fields the device sends
//! (required or optional, on or off) and what it can sense, with why; the owner
//! switches an optional field off and on with a form (CSRF-protected like every form).
//! Negative cases: a required field cannot be switched off (the page says why), another
//! owner gets 404 for the device, an operator may look but not switch (403), and a form
//! without the CSRF token is refused.

mod common;

use common::TestHub;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel, Sensing, SensingSpec};
use palisade_hub::ids::{DeviceId, ProductId};

fn field(name: &str, optional: bool) -> FieldSpec {
    FieldSpec {
        name: name.into(),
        kind: FieldKind::Number,
        unit: String::new(),
        purpose: format!("{name} shown to the owner"),
        personal: optional,
        retention_days: None,
        optional,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_switches_optional_fields_and_sees_sensing_capabilities() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;
    let mut operator = hub.invite(&mut admin, "ops-olga", "operator").await;
    let mut anna = hub.invite(&mut admin, "owner-anna", "owner").await;
    let mut bert = hub.invite(&mut admin, "owner-bert", "owner").await;

    let product = ProductId::parse("cam-v3").expect("id");
    db.create_product(&ProductModel {
        id: product.clone(),
        name: "Camera".into(),
        hardware_revision: "3".into(),
        fields: vec![field("temperature", false), field("location", true)],
        created_at: 0,
    })
    .await
    .expect("product");
    db.set_product_sensing(
        &product,
        &[SensingSpec {
            capability: Sensing::Camera,
            purpose: "shows who is at the door".into(),
        }],
    )
    .await
    .expect("sensing");
    let codes = db
        .create_claim_codes(&product, 1, 3600)
        .await
        .expect("codes");
    let id = DeviceId::generate();
    db.enroll_device(&codes[0].claim, &id, &"ab".repeat(32), 4_000_000_000)
        .await
        .expect("enrol")
        .expect("code valid");
    let page = anna
        .post_form("/devices/claim", &[("pairing_code", &codes[0].pairing)])
        .await;
    assert_eq!(page.location(), format!("/devices/{id}?done=claimed"));

    let path = format!("/devices/{id}");
    let switch = format!("/devices/{id}/telemetry-fields");
    let page = anna.get(&path).await;
    assert!(
        page.body.contains("Camera (images or video)"),
        "{}",
        page.body
    );
    assert!(page.body.contains("shows who is at the door"));
    let row = |body: &str, name: &str| -> String {
        let start = body
            .find(&format!("id=\"field-{name}\""))
            .expect("field row");
        let end = body[start..].find("</tr>").expect("row end");
        body[start..start + end].to_owned()
    };
    assert!(row(&page.body, "temperature").contains("required"));
    assert!(!row(&page.body, "temperature").contains("<form"));
    assert!(row(&page.body, "location").contains("Switch off"));

    // Refused: a required field; a form without its CSRF token; another owner; staff.
    let refused = anna
        .post_form(&switch, &[("field", "temperature"), ("state", "off")])
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("required field"), "{}", refused.body);
    let forged = anna
        .post_raw(&switch, &[("field", "location"), ("state", "off")])
        .await;
    assert_eq!(forged.status, 403);
    bert.get("/devices").await;
    let other = bert
        .post_form(&switch, &[("field", "location"), ("state", "off")])
        .await;
    assert_eq!(other.status, 404);
    let staff_view = operator.get(&path).await;
    assert_eq!(staff_view.status, 200);
    assert!(!row(&staff_view.body, "location").contains("<form"));
    let staff = operator
        .post_form(&switch, &[("field", "location"), ("state", "off")])
        .await;
    assert_eq!(staff.status, 403);
    assert!(db.disabled_fields(&id).await.expect("settings").is_empty());

    // The owner switches it off, then on again.
    anna.get(&path).await;
    let done = anna
        .post_form(&switch, &[("field", "location"), ("state", "off")])
        .await;
    assert_eq!(done.location(), format!("/devices/{id}?done=field-off"));
    assert_eq!(
        db.disabled_fields(&id).await.expect("settings"),
        ["location"]
    );
    let page = anna.get(done.location()).await;
    assert!(page.body.contains("stores none of it from now on"));
    assert!(row(&page.body, "location").contains("Switch on"));
    let done = anna
        .post_form(&switch, &[("field", "location"), ("state", "on")])
        .await;
    assert_eq!(done.location(), format!("/devices/{id}?done=field-on"));
    assert!(db.disabled_fields(&id).await.expect("settings").is_empty());
    hub.hub.shutdown().await;
}
