//! VULN-6 (issue 5: "fixed version (linked to the release)"), VULN-2: an advisory's
//! fixed version is resolved to the release record of that product model and version
//! — on the staff page (a link into the release list), the staff API
//! (`fixed_releases`), and the public page (release id, date, image digest) — and the
//! OSV record keeps its `fixed` event. An advisory scored with a CVSS v4.0 vector shows
//! that score and carries a `CVSS_V4` severity in OSV. Negatives: while the fixed
//! version is not a published release the advisory is still saved (it is often written
//! first) but staff are warned and the public page says "not released yet"; a release
//! of the same version of ANOTHER model does not count.

mod common;

use common::{Browser, TestHub};
use palisade_hub::db::releases::NewRelease;
use reqwest::Method;
use serde_json::{Value, json};

async fn api(b: &mut Browser, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let csrf = b.csrf.clone().unwrap_or_default();
    let mut req = b.request(method, path).header("x-csrf-token", csrf);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let page = b.send(req).await;
    (
        page.status,
        serde_json::from_str(&page.body).unwrap_or(Value::Null),
    )
}

const V4: &str = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_version_is_linked_once_released() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let thermo = hub.create_product("thermo-1").await;
    let lamp = hub.create_product("lamp-1").await;
    let db = &hub.hub.db;
    let release = |product, version| NewRelease {
        product,
        version,
        target: "firmware.bin",
        length: 42,
        sha256: "ab12",
        security: true,
        notes: "fix",
        created_by: "release-manager",
    };
    // Another model's 1.3.0 is published: it must not count for thermo-1.
    db.insert_release(&release(&lamp, (1, 3, 0)))
        .await
        .expect("lamp release");

    admin.get("/manage/advisories").await;
    let (status, created) = api(
        &mut admin,
        Method::POST,
        "/api/v1/advisories",
        Some(json!({
            "summary": "Unauthenticated firmware upload",
            "details": "The upload endpoint skipped the signature check.",
            "affected": "thermo-1 1.2.0 1.3.0",
            "fixed_version": "1.3.0",
            "cvss_vector": V4,
            "remediation": "Update to 1.3.0.",
        })),
    )
    .await;
    assert_eq!(
        status, 201,
        "written before the release: saved, with a warning"
    );
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["cvss"]["score_tenths"], 93, "{created}");
    assert_eq!(created["fixed_releases"][0]["product"], "thermo-1");
    assert_eq!(created["fixed_releases"][0]["version"], "1.3.0");
    assert!(
        created["fixed_releases"][0]["release"].is_null(),
        "{created}"
    );
    let warnings = created["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{created}");
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("thermo-1 1.3.0 is not a published release")),
        "{created}"
    );
    let manage = format!("/manage/advisories/{id}");
    let page = admin.get(&manage).await;
    assert!(
        page.body.contains("not a published release yet"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("class=\"fixed-release\""));

    // Published before the fix is released: the public page says so.
    let (status, _) = api(
        &mut admin,
        Method::POST,
        &format!("/api/v1/advisories/{id}/publish"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let mut anon = hub.browser();
    let page = anon.get(&format!("/advisories/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("not released yet"), "{}", page.body);
    assert!(page.body.contains("critical 9.3"), "{}", page.body);

    // The fix is released: every view links to it.
    let published = db
        .insert_release(&release(&thermo, (1, 3, 0)))
        .await
        .expect("thermo release");
    let (_, detail) = api(
        &mut admin,
        Method::GET,
        &format!("/api/v1/advisories/{id}"),
        None,
    )
    .await;
    assert_eq!(
        detail["fixed_releases"][0]["release"]["id"],
        published.id.as_str(),
        "{detail}"
    );
    assert_eq!(detail["warnings"], json!([]), "{detail}");
    let page = admin.get(&manage).await;
    assert!(
        page.body
            .contains("href=\"/releases#release-thermo-1-1.3.0\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("not a published release yet"));
    let releases = admin.get("/releases").await;
    assert!(
        releases.body.contains("id=\"release-thermo-1-1.3.0\""),
        "the link's target exists"
    );
    let page = anon.get(&format!("/advisories/{id}")).await;
    assert!(page.body.contains(&published.id), "{}", page.body);
    assert!(page.body.contains("class=\"fixed-release\""));
    assert!(!page.body.contains("not released yet"));

    // OSV keeps the fixed event and names the v4.0 vector as such.
    let page = anon.get(&format!("/advisories/{id}.json")).await;
    let osv: Value = serde_json::from_str(&page.body).expect("json");
    assert_eq!(
        osv["affected"][0]["ranges"][0]["events"],
        json!([{"introduced": "1.2.0"}, {"fixed": "1.3.0"}])
    );
    assert_eq!(osv["severity"], json!([{"type": "CVSS_V4", "score": V4}]));
    hub.hub.shutdown().await;
}
