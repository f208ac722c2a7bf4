//! ACC-1, DESIGN.md invariant 5: every route outside a short public allowlist answers
//! 401 or 403 without a session. The route table is enumerated, so a route added
//! without an access decision, or wrongly public, fails here.

mod common;

use common::TestHub;
use palisade_hub::web::{Access, route_table};

/// The public allowlist. Changing it is a security decision: update this list in the
/// same change, with a reason.
const PUBLIC: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/static/console.css"),
    ("GET", "/setup"),
    ("POST", "/setup"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/signup"),
    ("POST", "/signup"),
    ("GET", "/verify-email"),
    ("POST", "/verify-email"),
    ("GET", "/recover"),
    ("POST", "/recover"),
    ("GET", "/recover/reset"),
    ("POST", "/recover/reset"),
    ("GET", "/invite"),
    ("POST", "/invite"),
    // Vulnerability disclosure (VULN-1, VULN-2): researchers have no account. The
    // form is bounded and rate-limited per source and overall; the status page and
    // replies need the report's own secret (report_status_link_needs_its_secret.rs).
    ("GET", "/.well-known/security.txt"),
    ("GET", "/security"),
    ("POST", "/security/reports"),
    ("GET", "/security/status"),
    ("POST", "/security/status"),
    // Published advisories and their OSV and Atom feeds (VULN-6): public by design,
    // drafts answer 404 (`advisories_are_public_but_drafts_are_not.rs`).
    ("GET", "/advisories"),
    ("GET", "/advisories.atom"),
    ("GET", "/advisories/osv.json"),
    ("GET", "/advisories/{id}"),
    // The privacy policy, its history and the data inventory (PRIV-1, DATA-1).
    ("GET", "/privacy"),
    ("GET", "/privacy/data"),
    ("GET", "/privacy/history"),
    ("GET", "/privacy/versions/{version}"),
    // Issue 4: the TUF repository (metadata and targets carry their own integrity; see
    // docs/security-model.md) and the support periods (SUP-1: no login, by law).
    ("GET", "/tuf/{model}/metadata/{file}"),
    ("GET", "/tuf/{model}/targets/{name}"),
    ("GET", "/support"),
    // Device enrolment: the single-use claim code in the body is the credential
    // (AUTH-2); a device has no account or session. Throttled per source.
    ("POST", "/api/v1/devices/enroll"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_non_public_route_refuses_anonymous_callers() {
    let hub = TestHub::start().await;
    let table = route_table(hub.hub.state.clone());
    assert!(
        table.len() > 30,
        "the table lists every route ({})",
        table.len()
    );

    let public: Vec<(&str, &str)> = table
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(public, PUBLIC, "the public allowlist changed");

    let mut b = hub.browser();
    b.get("/login").await; // obtain a pre-session CSRF token, so CSRF does not mask the answer
    let csrf = b.csrf.clone().expect("csrf");
    let mut checked = 0;
    for route in table.iter().filter(|r| r.access != Access::Public) {
        let path = route
            .path
            .replace("{id}", "0123456789abcdef0123456789abcdef");
        let request = b
            .request(route.method.parse().expect("method"), &path)
            .header("x-csrf-token", &csrf);
        let page = b.send(request).await;
        assert!(
            page.status == 401 || page.status == 403,
            "{} {} answered {} without a session",
            route.method,
            route.path,
            page.status
        );
        checked += 1;
    }
    assert!(checked >= 20, "checked {checked} protected routes");

    // A forged or random session cookie is no better than none.
    b.cookies.insert(
        "__Host-palisade_session".into(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    );
    assert_eq!(b.get("/account").await.status, 401);
    // Nor is a made-up API token.
    let forged = b
        .request(reqwest::Method::GET, "/api/v1/me")
        .bearer_auth("pal_forged-token-value-0000000000000");
    assert_eq!(b.send(forged).await.status, 401);
    hub.hub.shutdown().await;
}
