//! VULN-6, ACC-1, ACC-5, WEB-2: published advisories are readable without signing in
//! (page, OSV JSON, Atom); drafts are not — they answer 404 everywhere public, exactly
//! like an id that does not exist. Attacks that must fail: creating, editing or
//! publishing an advisory without signing in or as a device owner (console and API);
//! publishing from a report that is not fixed; script in the details (escaped).
//! Publishing from a fixed report discloses the report and tells the reporter; an edit
//! moves the `modified` time and is audited.

mod common;

use common::{Browser, TestHub};
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

fn input(summary: &str, report: &str) -> Value {
    json!({
        "summary": summary,
        "details": "<script>alert(1)</script> **bold** [x](javascript:alert(1))",
        "affected": "thermo-1 1.2.0 1.3.0",
        "fixed_version": "1.3.0",
        "cvss_vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N",
        "remediation": "Update to 1.3.0.",
        "credit": "Rita",
        "report": report,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_stay_private_and_only_staff_write() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let mut operator = hub.invite(&mut admin, "ops-olga", "operator").await;
    let mut owner = hub.invite(&mut admin, "owner-anna", "owner").await;
    hub.create_product("thermo-1").await;

    // A researcher's report, to publish from later.
    let mut rita = hub.browser();
    rita.get("/security").await;
    rita.post_form(
        "/security/reports",
        &[
            ("title", "Info leak"),
            ("description", "details"),
            ("email", "rita@example.org"),
        ],
    )
    .await;
    let report = hub.hub.db.reports(1).await.expect("reports")[0]
        .id
        .to_string();

    // Staff (an operator) create a draft from it through the API.
    operator.get("/manage/advisories").await;
    let (status, created) = api(
        &mut operator,
        Method::POST,
        "/api/v1/advisories",
        Some(input("Leaky <b>diagnostics</b> page", &report)),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(created["published_at"].is_null());

    // Nobody signed in, and an owner, cannot create, edit or publish (console or API).
    let mut anon = hub.browser();
    anon.get("/advisories").await;
    for b in [&mut anon, &mut owner] {
        let want = |s: u16| s == 401 || s == 403;
        let (s, _) = api(b, Method::POST, "/api/v1/advisories", Some(input("x", ""))).await;
        assert!(want(s), "create {s}");
        let (s, _) = api(
            b,
            Method::PUT,
            &format!("/api/v1/advisories/{id}"),
            Some(input("x", "")),
        )
        .await;
        assert!(want(s), "edit {s}");
        let (s, _) = api(
            b,
            Method::POST,
            &format!("/api/v1/advisories/{id}/publish"),
            None,
        )
        .await;
        assert!(want(s), "publish {s}");
        let (s, _) = api(b, Method::GET, &format!("/api/v1/advisories/{id}"), None).await;
        assert!(want(s), "read draft via API {s}");
        assert!(want(
            b.post_form("/manage/advisories", &[("summary", "x")])
                .await
                .status
        ));
        assert!(want(
            b.post_form(&format!("/manage/advisories/{id}"), &[("summary", "x")])
                .await
                .status
        ));
        assert!(want(
            b.post_form(&format!("/manage/advisories/{id}/publish"), &[])
                .await
                .status
        ));
        assert!(want(
            b.get(&format!("/manage/advisories/{id}")).await.status
        ));
    }
    assert_eq!(
        hub.hub.db.advisories(true).await.expect("db").len(),
        1,
        "nothing created"
    );

    // The draft is invisible publicly: 404 like an unknown id, absent from every feed.
    for path in [
        format!("/advisories/{id}"),
        format!("/advisories/{id}.json"),
        "/advisories/PAL-2026-9999".to_owned(),
        "/advisories/not-an-id".to_owned(),
    ] {
        assert_eq!(anon.get(&path).await.status, 404, "{path}");
    }
    for path in ["/advisories", "/advisories/osv.json", "/advisories.atom"] {
        let page = anon.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            !page.body.contains(&id) && !page.body.contains("diagnostics"),
            "{path}"
        );
    }

    // The report is not fixed yet: publishing is refused and nothing becomes public.
    let (s, body) = api(
        &mut operator,
        Method::POST,
        &format!("/api/v1/advisories/{id}/publish"),
        None,
    )
    .await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(anon.get(&format!("/advisories/{id}")).await.status, 404);

    // Fix the report, publish: public now, the report disclosed, the reporter told.
    let report_id = palisade_hub::db::reports::ReportId::parse(&report).expect("id");
    for st in ["acknowledged", "triaged", "fixing", "fixed"] {
        let (s, b) = api(
            &mut operator,
            Method::POST,
            &format!("/api/v1/reports/{report}/state"),
            Some(json!({"state": st})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, body) = api(
        &mut operator,
        Method::POST,
        &format!("/api/v1/advisories/{id}/publish"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let published_at = body["published_at"].as_i64().expect("published");
    let r = hub
        .hub
        .db
        .report(&report_id)
        .await
        .expect("db")
        .expect("report");
    assert_eq!(r.state.as_str(), "disclosed");
    hub.wait_for_mail("rita@example.org", "disclosed").await;

    let page = anon.get(&format!("/advisories/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Leaky &#60;b&#62;diagnostics")
            || page.body.contains("Leaky &lt;b&gt;diagnostics"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>alert") && !page.body.contains("href=\"javascript"));
    assert!(
        page.body.contains("<strong>bold</strong>"),
        "the safe Markdown subset renders"
    );
    assert!(
        page.body.contains("thermo-1 ≥ 1.2.0, &lt; 1.3.0")
            || page.body.contains("thermo-1 ≥ 1.2.0, &#60; 1.3.0"),
        "{}",
        page.body
    );
    assert!(anon.get("/advisories").await.body.contains(&id));
    assert!(
        anon.get("/security")
            .await
            .body
            .contains("href=\"/advisories\"")
    );
    // The reporter's own status page links the advisory.
    assert!(
        hub.hub
            .db
            .report_messages(&report_id, false)
            .await
            .expect("db")
            .iter()
            .any(|m| m.body.contains(&format!("/advisories/{id}")))
    );

    // An edit by staff: modified moves on, published stays, audited.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // a new second
    let (s, body) = api(
        &mut operator,
        Method::PUT,
        &format!("/api/v1/advisories/{id}"),
        Some(input("Leaky diagnostics page", &report)),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["published_at"].as_i64(), Some(published_at));
    assert!(body["modified_at"].as_i64().expect("modified") > published_at);
    // Invalid edits are refused with the reason, and change nothing.
    let mut bad = input("x", "");
    bad["cve"] = json!("CVE-26-1");
    let (s, _) = api(
        &mut operator,
        Method::PUT,
        &format!("/api/v1/advisories/{id}"),
        Some(bad),
    )
    .await;
    assert_eq!(s, 400);
    let mut bad = input("x", "");
    bad["affected"] = json!("no-such-model 1.0.0");
    let (s, _) = api(
        &mut operator,
        Method::PUT,
        &format!("/api/v1/advisories/{id}"),
        Some(bad),
    )
    .await;
    assert_eq!(s, 400);
    let audit = admin.get("/audit").await.body;
    assert!(audit.contains("advisory.edit"));
    hub.hub.shutdown().await;
}
