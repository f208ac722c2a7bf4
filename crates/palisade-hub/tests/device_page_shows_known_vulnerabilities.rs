//! VULN-5, VULN-6 (issue 5: "shows known vulnerabilities … per device"), ACC-2: the
//! console device page, for its owner and for staff, lists the known vulnerabilities
//! of the firmware the device runs — OSV records matching the SBOM of (model, firmware
//! version) and the hub's published advisories whose ranges include that version —
//! with severity, record or advisory id, and the fixed version; the per-device API
//! answers from the same query. Negatives: an owner cannot see another owner's device
//! or its vulnerabilities (404, page and API); a device on the fixed firmware lists
//! neither the record nor the advisory; a draft advisory is not listed.

mod common;

use common::{Browser, TestHub};
use palisade_hub::ids::{DeviceId, ProductId, Username};
use serde_json::{Value, json};

/// Enrol a device of `product`, give it to `owner`, record its firmware version.
async fn device(hub: &TestHub, product: &ProductId, owner: &str, firmware: &str) -> DeviceId {
    let db = &hub.hub.db;
    let codes = db
        .create_claim_codes(product, 1, 3600)
        .await
        .expect("codes");
    let id = DeviceId::generate();
    let sha = palisade_crypto::token::sha256_hex(id.as_str().as_bytes());
    db.enroll_device(&codes[0].claim, &id, &sha, common::now() as i64 + 86_400)
        .await
        .expect("enrol")
        .expect("claim code valid");
    let user = db
        .user_by_username(&Username::parse(owner).expect("name"))
        .await
        .expect("db")
        .expect("owner exists");
    db.claim_device(&codes[0].pairing, &user.id)
        .await
        .expect("claim");
    db.set_firmware_version(&id, firmware)
        .await
        .expect("version");
    id
}

async fn send(b: &mut Browser, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let request = b
        .request(method, path)
        .header("x-csrf-token", b.csrf.clone().unwrap_or_default())
        .header("content-type", "application/json")
        .body(body.to_string());
    let page = b.send(request).await;
    (
        page.status,
        serde_json::from_str(&page.body).unwrap_or(Value::Null),
    )
}

fn advisory(summary: &str) -> Value {
    json!({
        "summary": summary,
        "details": "details",
        "affected": "cam-v2 1.2.0 1.3.0",
        "fixed_version": "1.3.0",
        "cvss_vector": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        "remediation": "Update to 1.3.0.",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_staff_see_the_firmware_vulnerabilities() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let mut anna = hub.invite(&mut admin, "owner-anna", "owner").await;
    let mut bob = hub.invite(&mut admin, "owner-bob", "owner").await;
    let cam = hub.create_product("cam-v2").await;
    let annas = device(&hub, &cam, "owner-anna", "1.2.0").await;
    let bobs = device(&hub, &cam, "owner-bob", "1.3.0").await;
    use reqwest::Method;

    // The SBOM of 1.2.0 ships demo-codec 0.4.1; 1.3.0 ships the fixed 0.5.0.
    for (version, codec) in [("1.2.0", "0.4.1"), ("1.3.0", "0.5.0")] {
        let sbom = json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
            "components": [{"type": "library", "name": "demo-codec", "version": codec,
                            "purl": format!("pkg:cargo/demo-codec@{codec}")}]});
        let (status, body) = send(
            &mut admin,
            Method::POST,
            &format!("/api/v1/products/cam-v2/versions/{version}/sbom"),
            sbom,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let record = json!({
        "id": "DEMO-2026-0010", "modified": "2026-02-01T00:00:00Z",
        "summary": "Heap overflow in demo-codec", "aliases": ["CVE-2026-0010"],
        "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
        "affected": [{"package": {"ecosystem": "crates.io", "name": "demo-codec"},
                      "ranges": [{"type": "SEMVER", "events": [{"introduced": "0.4.0"}, {"fixed": "0.5.0"}]}]}]
    });
    let (status, body) = send(&mut admin, Method::POST, "/api/v1/vulndb/import", record).await;
    assert_eq!(status, 200, "{body}");

    // One published advisory on 1.2.x, one draft.
    admin.get("/manage/advisories").await;
    let (status, published) = send(
        &mut admin,
        Method::POST,
        "/api/v1/advisories",
        advisory("Camera stream without authentication"),
    )
    .await;
    assert_eq!(status, 201, "{published}");
    let pal = published["id"].as_str().expect("id").to_owned();
    let (status, _) = send(
        &mut admin,
        Method::POST,
        &format!("/api/v1/advisories/{pal}/publish"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    let (_, draft) = send(
        &mut admin,
        Method::POST,
        "/api/v1/advisories",
        advisory("Draft nobody may see yet"),
    )
    .await;
    let draft = draft["id"].as_str().expect("id").to_owned();

    // Anna's device, on 1.2.0: both, with severity and fixed versions.
    let page = anna.get(&format!("/devices/{annas}")).await;
    assert_eq!(page.status, 200);
    let table = page
        .body
        .split("id=\"device-vulnerabilities\"")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_else(|| panic!("no vulnerability table: {}", page.body));
    assert!(table.contains("DEMO-2026-0010") && table.contains("CVE-2026-0010"));
    assert!(
        table.contains("critical 9.8"),
        "the record's v3.1 score: {table}"
    );
    assert!(table.contains("demo-codec 0.4.1") && table.contains("0.5.0"));
    assert!(
        table.contains(&format!("href=\"/advisories/{pal}\"")),
        "{table}"
    );
    assert!(
        table.contains("critical 9.3"),
        "the advisory's v4.0 score: {table}"
    );
    assert!(table.contains("1.3.0"), "the advisory's fixed version");
    assert!(!table.contains(&draft), "drafts are not listed");
    // Staff see the same.
    let page = admin.get(&format!("/devices/{annas}")).await;
    assert!(page.body.contains("DEMO-2026-0010") && page.body.contains(&pal));

    // The API answers from the same query.
    let api = format!("/api/v1/devices/{annas}/vulnerabilities");
    let page = anna.get(&api).await;
    assert_eq!(page.status, 200);
    let v: Value = serde_json::from_str(&page.body).expect("json");
    assert_eq!(
        v["vulnerabilities"][0]["vulnerability"]["id"],
        "DEMO-2026-0010"
    );
    assert_eq!(v["vulnerabilities"][0]["fixed"], "0.5.0");
    assert_eq!(v["advisories"][0]["id"], pal.as_str());
    assert_eq!(v["advisories"][0]["fixed"], "1.3.0");
    assert_eq!(v["advisories"].as_array().map(Vec::len), Some(1));

    // Bob's device, on the fixed 1.3.0: nothing known.
    let page = bob.get(&format!("/devices/{bobs}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("id=\"no-vulnerabilities\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("DEMO-2026-0010") && !page.body.contains(&pal));

    // Neither owner sees the other's device or its vulnerabilities.
    assert_eq!(anna.get(&format!("/devices/{bobs}")).await.status, 404);
    assert_eq!(bob.get(&format!("/devices/{annas}")).await.status, 404);
    assert_eq!(bob.get(&api).await.status, 404);
    hub.hub.shutdown().await;
}
