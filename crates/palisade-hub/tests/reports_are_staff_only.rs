//! ACC-1, ACC-5, VULN-3: vulnerability reports (the researcher's unpublished findings)
//! are for staff only, in the console and the API. Attacks that must fail: reading the
//! list or a report without signing in, or as a device owner (console, API with a
//! session, and API with the owner's token); an owner changing a report's state.
//! Staff triage works end to end: state along allowed transitions only (409
//! otherwise), CVSS scored by the hub, assignee limited to staff, internal notes, and
//! every change in the audit log. Report text is escaped on the triage page.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_staff_read_and_triage_reports() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let mut operator = hub.invite(&mut admin, "ops-olga", "operator").await;
    let mut owner = hub.invite(&mut admin, "owner-anna", "owner").await;

    let mut rita = hub.browser();
    rita.get("/security").await;
    let page = rita
        .post_form(
            "/security/reports",
            &[
                ("title", "RCE via <b>firmware</b> upload"),
                ("description", "<script>alert(1)</script>"),
            ],
        )
        .await;
    assert_eq!(page.status, 200);
    let id = hub.hub.db.reports(1).await.expect("reports")[0]
        .id
        .to_string();
    let detail = format!("/reports/{id}");
    let api_detail = format!("/api/v1/reports/{id}");

    // Nobody signed in.
    let mut anon = hub.browser();
    anon.get("/login").await;
    for path in [
        "/reports",
        detail.as_str(),
        "/api/v1/reports",
        api_detail.as_str(),
    ] {
        assert_eq!(anon.get(path).await.status, 401, "{path}");
    }
    let (status, _) = api(
        &mut anon,
        Method::POST,
        &format!("{api_detail}/state"),
        Some(json!({"state": "acknowledged"})),
    )
    .await;
    assert_eq!(status, 401);

    // A device owner: forbidden everywhere, and no link to the pages.
    assert!(!owner.get("/").await.body.contains("href=\"/reports\""));
    for path in [
        "/reports",
        detail.as_str(),
        "/api/v1/reports",
        api_detail.as_str(),
    ] {
        let page = owner.get(path).await;
        assert_eq!(page.status, 403, "{path}");
        assert!(!page.body.contains("firmware"), "{path}");
    }
    let (status, _) = api(
        &mut owner,
        Method::POST,
        &format!("{api_detail}/state"),
        Some(json!({"state": "acknowledged"})),
    )
    .await;
    assert_eq!(status, 403);
    let page = owner
        .post_form(&format!("{detail}/state"), &[("state", "acknowledged")])
        .await;
    assert_eq!(page.status, 403);
    assert_eq!(
        hub.hub.db.reports(1).await.expect("reports")[0]
            .state
            .as_str(),
        "new",
        "nothing changed"
    );

    // Staff: an operator triages in the console; report text is escaped.
    assert!(operator.get("/").await.body.contains("href=\"/reports\""));
    let page = operator.get(&detail).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("&#60;script&#62;alert(1)"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"));
    let page = operator
        .post_form(&format!("{detail}/state"), &[("state", "fixed")])
        .await;
    assert_eq!(page.status, 200, "refusal shown on the page");
    assert!(page.body.contains("cannot become fixed"), "{}", page.body);
    let page = operator
        .post_form(&format!("{detail}/state"), &[("state", "acknowledged")])
        .await;
    assert_eq!(page.status, 303);
    let page = operator
        .post_form(
            &format!("{detail}/assess"),
            &[
                ("cvss", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
                ("affected", "cam-v2 >= 1.2.0, < 1.4.3"),
                ("assignee", ""),
            ],
        )
        .await;
    assert_eq!(page.status, 303);
    let page = operator.get(&detail).await;
    assert!(page.body.contains("9.8 critical"), "{}", page.body);
    let page = operator
        .post_form(
            &format!("{detail}/assess"),
            &[("cvss", "CVSS:3.1/AV:N"), ("affected", "")],
        )
        .await;
    assert!(page.body.contains("lacks the base metric"), "{}", page.body);

    // Staff through the API (administrator's session).
    admin.get("/reports").await;
    let (status, list) = api(&mut admin, Method::GET, "/api/v1/reports", None).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["state"], "acknowledged");
    assert_eq!(list[0]["cvss"]["score_tenths"], 98);
    assert!(list[0]["deadlines"]["next_update_by"].is_i64());
    // The owner cannot be made assignee; an operator can.
    let owner_id = hub
        .hub
        .db
        .users()
        .await
        .expect("users")
        .into_iter()
        .find(|u| u.username.as_str() == "owner-anna")
        .expect("owner")
        .id;
    let (status, _) = api(
        &mut admin,
        Method::POST,
        &format!("{api_detail}/assessment"),
        Some(json!({"cvss_vector": "", "affected": "", "assignee": owner_id.to_string()})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = api(
        &mut admin,
        Method::POST,
        &format!("{api_detail}/state"),
        Some(json!({"state": "disclosed"})),
    )
    .await;
    assert_eq!(status, 409, "disclosure needs a fix first");
    let (status, body) = api(
        &mut admin,
        Method::POST,
        &format!("{api_detail}/messages"),
        Some(json!({"body": "Looks like CVE material."})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let messages = body["messages"].as_array().expect("messages");
    assert!(
        messages
            .iter()
            .any(|m| m["internal"] == true && m["body"] == "Looks like CVE material.")
    );

    // Every change is in the audit log.
    let audit = hub.hub.db.audit_entries(100, None).await.expect("audit");
    for action in [
        "report.submit",
        "report.state",
        "report.assess",
        "report.message",
    ] {
        assert!(
            audit.iter().any(|e| e.action == action && e.target == id),
            "{action} audited"
        );
    }
    hub.hub.shutdown().await;
}
