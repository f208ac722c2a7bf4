//! PRIV-1, DATA-1, PRIV-3: the privacy policy is served at `/privacy` without sign-in,
//! rendered safely (the operator's Markdown cannot inject markup or script links);
//! every version is kept, with a history and a readable diff; the data inventory at
//! `/privacy/data` (and inside the policy page) is generated from the code's table of
//! hub data and the product models' declared telemetry fields, and lists every table
//! the database has. Only administrators can publish.

mod common;

use common::TestHub;
use palisade_hub::accounts::Actor;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::ids::ProductId;
use palisade_hub::privacy::{self, Change, inventory};

pub const POLICY_V1: &str = "# Privacy policy\n\nPlain words about your data.\n\n## What data we collect\n\n- your e-mail address\n- the temperature your thermostat measures\n\n## Why we collect it\n\nTo run the service. <script>alert(1)</script>\n\n## Who receives it\n\nNo third parties receive your data. [click](javascript:alert(1))\n\n## How long we keep it\n\nTelemetry for 30 days.\n\n## Your rights\n\nYou can export or delete your data from your account page.\n\n## Contact\n\nWrite to [privacy@example.org](mailto:privacy@example.org).\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_and_inventory_are_public_versioned_and_safe() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let mut anonymous = hub.browser();

    // Before any policy: the page exists and still shows the inventory.
    let page = anonymous.get("/privacy").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"no-policy\""), "{}", page.body);
    assert!(page.body.contains("id=\"hub-data\""));

    // A product model declares its fields: the inventory shows them as declared.
    db.create_product(&ProductModel {
        id: ProductId::parse("thermo-v1").expect("id"),
        name: "Thermostat".into(),
        hardware_revision: "A".into(),
        fields: vec![
            FieldSpec {
                name: "temperature".into(),
                kind: FieldKind::Number,
                unit: "celsius".into(),
                purpose: "room temperature shown to the owner".into(),
                personal: false,
                retention_days: Some(30),
                optional: false,
            },
            FieldSpec {
                name: "occupied".into(),
                kind: FieldKind::Boolean,
                unit: String::new(),
                purpose: "whether someone is home, for the schedule".into(),
                personal: true,
                retention_days: None,
                optional: false,
            },
        ],
        created_at: 0,
    })
    .await
    .expect("product");
    let data = anonymous.get("/privacy/data").await;
    assert_eq!(data.status, 200, "no sign-in needed");
    assert!(
        data.body.contains("<code>temperature</code>"),
        "{}",
        data.body
    );
    assert!(data.body.contains("room temperature shown to the owner"));
    assert!(data.body.contains("30 days"));
    assert!(
        data.body
            .contains(&format!("{} days", inventory::TELEMETRY_RETENTION_DAYS))
    );
    let occupied = data
        .body
        .find("<code>occupied</code>")
        .expect("field listed");
    assert!(
        data.body[occupied..].contains("<td>yes</td>"),
        "marked personal"
    );

    // Every table in the database is in the code's inventory: nothing stored is left
    // out of what the owner is told.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(db.pool())
    .await
    .expect("tables");
    for table in tables.iter().filter(|t| *t != "schema_migrations") {
        assert!(
            inventory::CATEGORIES.iter().any(|c| c
                .tables
                .split([',', ' ', '(', ')'])
                .any(|word| word == table)),
            "table {table} is missing from privacy::inventory::CATEGORIES"
        );
    }

    // Version 1, with markup an attacker (or a careless operator) might paste.
    let v1 = privacy::publish(
        db,
        &Actor::cli(),
        POLICY_V1,
        Change::Substantive,
        "first policy",
        "https://127.0.0.1",
    )
    .await
    .expect("publish");
    assert_eq!(v1.version, 1);
    let page = anonymous.get("/privacy").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Version 1"), "{}", page.body);
    assert!(
        page.body.contains("<h3>What data we collect</h3>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("href=\"mailto:privacy@example.org\""));
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        !page.body.contains("<script"),
        "no script in the policy page"
    );
    assert!(!page.body.contains("href=\"javascript:"), "no script links");
    assert!(
        page.body.contains("id=\"telemetry-fields\""),
        "the inventory is part of the policy page"
    );
    assert!(
        page.headers.get("content-security-policy").is_some(),
        "the strict CSP applies to the policy page"
    );

    // Version 2 changes one line; both versions stay readable, with a diff.
    let v2_text = POLICY_V1.replace("Telemetry for 30 days.", "Telemetry for 14 days.");
    privacy::publish(
        db,
        &Actor::cli(),
        &v2_text,
        Change::Minor,
        "shorter retention",
        "https://127.0.0.1",
    )
    .await
    .expect("publish v2");
    let page = anonymous.get("/privacy").await;
    assert!(page.body.contains("Version 2"));
    assert!(page.body.contains("Telemetry for 14 days."));
    let history = anonymous.get("/privacy/history").await;
    assert_eq!(history.status, 200);
    assert!(history.body.contains("shorter retention"));
    assert!(history.body.contains("first policy"));
    assert!(history.body.contains("/privacy/versions/1"));
    let diff = anonymous.get("/privacy/versions/2").await;
    assert_eq!(diff.status, 200);
    assert!(
        diff.body
            .contains("<span class=\"removed\">- Telemetry for 30 days.</span>"),
        "{}",
        diff.body
    );
    assert!(
        diff.body
            .contains("<span class=\"added\">+ Telemetry for 14 days.</span>")
    );
    let old = anonymous.get("/privacy/versions/1").await;
    assert!(
        old.body.contains("Telemetry for 30 days."),
        "version 1 is kept"
    );
    assert_eq!(anonymous.get("/privacy/versions/3").await.status, 404);
    assert_eq!(anonymous.get("/privacy/versions/x").await.status, 404);

    // Publishing is for administrators: anonymous callers are refused.
    anonymous.get("/login").await;
    let refused = anonymous
        .post_form(
            "/privacy/publish",
            &[("body", POLICY_V1), ("change", "minor"), ("summary", "")],
        )
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(db.policies().await.expect("versions").len(), 2);

    // An administrator publishes from the console.
    let (mut admin, _) = hub.setup_admin().await;
    let form = admin.get("/privacy/publish").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("Telemetry for 14 days."), "prefilled");
    let v3_text = v2_text.replace("Plain words", "Short, plain words");
    let done = admin
        .post_form(
            "/privacy/publish",
            &[
                ("body", &v3_text),
                ("change", "minor"),
                ("summary", "wording"),
            ],
        )
        .await;
    assert_eq!(done.status, 200);
    assert!(done.body.contains("Version 3 published"), "{}", done.body);
    assert_eq!(
        db.current_policy().await.expect("db").expect("v3").body,
        v3_text
    );
    let audit = db.audit_entries(100, None).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "privacy.publish" && e.target == "policy v3"),
        "publishing is audited"
    );
    hub.hub.shutdown().await;
}
