//! VULN-1 (ETSI 5.2-1, PSTI): anyone can report a vulnerability through `/security`
//! without an account and gets a tracking ID, a private status link and, when an
//! address is given, an acknowledgement e-mail through the outbox. DESIGN.md invariant
//! 4, RES-2: the form is bounded and rate-limited. Attacks that must fail: an oversized
//! description, a multi-line title (header/line injection), a body beyond the request
//! limit, a flood from one source (refused with 429 while another source still gets
//! through), a flood spread over many sources (the overall cap), a cross-site post
//! without the CSRF token, and using the acknowledgement e-mail to relay text to a
//! third party (the e-mail never repeats what was submitted).

mod common;

use common::{Browser, TestHub};

const TITLE: &str = "Stored XSS in device name";
const DESCRIPTION: &str =
    "Steps:\n1. Rename a device to <script>alert(1)</script>\n2. Open the list.";

async fn report(b: &mut Browser, title: &str, description: &str, email: &str) -> common::Page {
    let page = b.get("/security").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"report-form\""), "{}", page.body);
    b.post_form(
        "/security/reports",
        &[
            ("title", title),
            ("product", "cam-v2 firmware 1.4.2"),
            ("description", description),
            ("name", "Rita Researcher"),
            ("email", email),
        ],
    )
    .await
}

fn tracking_id(page: &str) -> String {
    let start = page.find("id=\"tracking-id\">").expect("tracking id") + 17;
    page[start..].chars().take_while(|c| *c != '<').collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyone_can_report_and_gets_a_tracking_id_and_an_acknowledgement() {
    let hub = TestHub::start().await;
    let mut anon = hub.browser();
    let page = report(&mut anon, TITLE, DESCRIPTION, "rita@example.net").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let id = tracking_id(&page.body);
    assert!(id.starts_with("VR-"), "{id}");
    assert!(page.body.contains("id=\"status-link\""));
    assert!(page.body.contains("/security/status?token="));
    assert!(anon.session().is_none(), "no account or session was needed");

    let mail = hub.wait_for_mail("rita@example.net", &id).await;
    assert!(mail.contains("/security/status?token="), "{mail}");
    assert!(mail.contains("within 3 days"), "{mail}");
    assert!(mail.contains("X-Palisade-Category: disclosure"), "{mail}");
    // The e-mail never repeats the submitted text: the form is no relay for spam.
    assert!(!mail.contains("Stored XSS"), "{mail}");
    assert!(!mail.contains("<script>"), "{mail}");

    let stored = hub.hub.db.reports(10).await.expect("reports");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].title, TITLE);
    assert_eq!(stored[0].description, DESCRIPTION);
    let audit = hub.hub.db.audit_entries(10, None).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "report.submit" && e.target == id),
        "the submission is audited"
    );

    // Without an e-mail address the report is still accepted.
    let page = report(&mut anon, "Second issue", "Details.", "").await;
    assert_eq!(page.status, 200, "{}", page.body);
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_malformed_and_cross_site_reports_are_refused() {
    let hub = TestHub::start().await;
    let mut anon = hub.browser();
    // One character over the description limit.
    let long = "a".repeat(20_001);
    let page = report(&mut anon, TITLE, &long, "").await;
    assert_eq!(page.status, 400);
    assert!(
        page.body.contains("longer than 20000 characters"),
        "{}",
        page.body
    );
    // What was typed comes back (escaped) so nothing is lost, except the refusal.
    assert!(page.body.contains("id=\"report-form\""));
    // A title with a line break (header or log injection).
    let page = report(&mut anon, "Subject\r\nBcc: victim@example.org", "x", "").await;
    assert_eq!(page.status, 400);
    // An e-mail address that is not one.
    let page = report(&mut anon, TITLE, "x", "victim@example.org\r\nBcc: x@y.z").await;
    assert_eq!(page.status, 400);
    // A body beyond the hub's request limit (64 KiB) never reaches the handler.
    let huge = "b".repeat(70_000);
    let page = report(&mut anon, TITLE, &huge, "").await;
    assert!(page.status == 400 || page.status == 413, "{}", page.status);
    // No CSRF token, or a cross-site post: refused.
    let page = anon
        .post_raw(
            "/security/reports",
            &[("title", TITLE), ("description", "x")],
        )
        .await;
    assert_eq!(page.status, 403);
    let csrf = anon.csrf.clone().expect("csrf");
    let req = anon
        .request(reqwest::Method::POST, "/security/reports")
        .header("origin", "https://evil.example")
        .form(&[
            ("csrf", csrf.as_str()),
            ("title", TITLE),
            ("description", "x"),
        ]);
    assert_eq!(anon.send(req).await.status, 403);
    assert!(
        hub.hub.db.reports(10).await.expect("reports").is_empty(),
        "nothing refused was stored"
    );
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_refused_per_source_and_overall() {
    let hub = TestHub::start_with(|c| {
        c.limits.reports_per_hour_per_source = 3;
        c.limits.reports_per_hour = 5;
    })
    .await;
    let a: std::net::IpAddr = "127.0.0.2".parse().expect("ip");
    let b: std::net::IpAddr = "127.0.0.3".parse().expect("ip");
    let c: std::net::IpAddr = "127.0.0.4".parse().expect("ip");
    let mut from_a = hub.browser_from(a);
    for i in 0..3 {
        let page = report(&mut from_a, &format!("issue {i}"), "x", "").await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    let page = report(&mut from_a, "issue 4", "x", "").await;
    assert_eq!(
        page.status, 429,
        "the fourth report from one source is refused"
    );
    assert!(!page.header("retry-after").is_empty());
    // Another source is not starved by the first one's flood...
    let mut from_b = hub.browser_from(b);
    for i in 0..2 {
        let page = report(&mut from_b, &format!("b {i}"), "x", "").await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    // ...but the overall cap bounds a flood spread over many addresses.
    assert_eq!(report(&mut from_b, "b 3", "x", "").await.status, 429);
    let mut from_c = hub.browser_from(c);
    assert_eq!(report(&mut from_c, "c 1", "x", "").await.status, 429);
    assert_eq!(hub.hub.db.reports(100).await.expect("reports").len(), 5);
    hub.hub.shutdown().await;
}
