//! The OpenAPI document served at /api/v1/openapi.json describes exactly the API
//! routes of the route table (same paths and methods), so it cannot drift.

mod common;

use common::TestHub;
use palisade_hub::web::route_table;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_api_route_and_nothing_else() {
    let hub = TestHub::start().await;
    let doc: serde_json::Value =
        serde_json::from_str(palisade_hub::web::api::OPENAPI).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: BTreeSet<(String, String)> = route_table(hub.hub.state.clone())
        .into_iter()
        .filter(|r| r.path.starts_with("/api/") || r.path == "/healthz")
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, routed);

    // Served to signed-in callers only, as JSON.
    let (mut admin, _) = hub.setup_admin().await;
    let page = admin.get("/api/v1/openapi.json").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("application/json"));
    assert_eq!(hub.browser().get("/api/v1/openapi.json").await.status, 401);
    hub.hub.shutdown().await;
}
