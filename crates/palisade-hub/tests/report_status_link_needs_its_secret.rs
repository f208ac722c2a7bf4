//! VULN-1, DESIGN.md invariant 7: a reporter follows their report and replies through
//! a private status link, without an account. The link's secret is stored only as a
//! digest. Attacks that must fail: no secret, a wrong or truncated secret, and one
//! report's secret used to read or answer another (all answer 404, like a page that
//! does not exist); a reply without the CSRF token; reading staff's internal notes
//! through the status page. The reporter sees every status change and staff replies.

mod common;

use common::{Browser, TestHub};
use palisade_hub::accounts::Actor;
use palisade_hub::vuln::intake;
use palisade_hub::vuln::triage::State;
use sqlx::Row;

/// Submit a report; returns (tracking id, status path with its secret).
async fn submit(b: &mut Browser, title: &str, email: &str) -> (String, String) {
    b.get("/security").await;
    let page = b
        .post_form(
            "/security/reports",
            &[
                ("title", title),
                ("description", "details"),
                ("email", email),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let start = page.body.find("id=\"tracking-id\">").expect("id") + 17;
    let id: String = page.body[start..]
        .chars()
        .take_while(|c| *c != '<')
        .collect();
    let start = page.body.find("id=\"status-link\" href=\"").expect("link") + 23;
    let link: String = page.body[start..]
        .chars()
        .take_while(|c| *c != '"')
        .collect();
    let path = link[link.find("/security/status").expect("path")..].to_owned();
    (id, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_opens_only_with_its_own_secret() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let mut rita = hub.browser();
    let (id, path) = submit(&mut rita, "Rita's finding", "rita@example.net").await;
    let (_, other_path) = submit(&mut hub.browser(), "Someone else's finding", "").await;
    let secret = path.split("token=").nth(1).expect("secret").to_owned();
    assert!(secret.len() >= 22, "at least 128 bits");

    // The right secret opens the report, from any browser, without an account.
    let page = hub.browser().get(&path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&id));
    assert!(page.body.contains("Rita&#39;s finding"), "{}", page.body);
    assert!(page.body.contains("waiting for acknowledgement"));

    // Attacks: nothing, wrong, truncated, and another report's secret.
    let mut eve = hub.browser();
    for probe in [
        "/security/status".to_owned(),
        "/security/status?token=".to_owned(),
        format!("/security/status?token={}", "A".repeat(secret.len())),
        format!("/security/status?token={}", &secret[..secret.len() - 1]),
        format!("/security/status?token={id}"),
    ] {
        let page = eve.get(&probe).await;
        assert_eq!(page.status, 404, "{probe}");
        assert!(!page.body.contains("Rita"), "{probe}");
    }
    let other = eve.get(&other_path).await;
    assert_eq!(other.status, 200);
    assert!(!other.body.contains("Rita"), "one secret opens one report");

    // The secret is stored only as a digest.
    let rows = sqlx::query("SELECT status_hash FROM vuln_reports")
        .fetch_all(db.pool())
        .await
        .expect("rows");
    for r in rows {
        let stored: String = r.try_get("status_hash").expect("hash");
        assert_ne!(stored, secret);
        assert!(!stored.contains(&secret));
    }

    // The reporter replies through the page (CSRF token required, secret in the form).
    rita.get(&path).await;
    let page = rita
        .post_form(
            "/security/status",
            &[("token", &secret), ("body", "More detail: port 8443.")],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("More detail: port 8443."));
    let page = rita
        .post_raw(
            "/security/status",
            &[("token", &secret), ("body", "no csrf")],
        )
        .await;
    assert_eq!(page.status, 403);
    // A reply with a wrong secret is refused like a missing page.
    let page = rita
        .post_form(
            "/security/status",
            &[("token", &"B".repeat(43)), ("body", "x")],
        )
        .await;
    assert_eq!(page.status, 404);

    // Staff: an internal note stays internal; a state change and a reply reach the
    // reporter (status page always, e-mail because an address was given).
    let report = db
        .reports(10)
        .await
        .expect("reports")
        .into_iter()
        .find(|r| r.id.as_str() == id)
        .expect("report");
    let actor = Actor::cli();
    let config = hub.hub.state.config.clone();
    intake::staff_message(
        db,
        &config,
        &actor,
        &report,
        "INTERNAL: looks real, CVE likely",
        true,
    )
    .await
    .expect("note");
    intake::change_state(db, &config, &actor, &report, State::Acknowledged)
        .await
        .expect("acknowledge");
    intake::staff_message(
        db,
        &config,
        &actor,
        &report,
        "Thanks, we reproduced it.",
        false,
    )
    .await
    .expect("reply");
    let page = hub.browser().get(&path).await;
    assert!(
        page.body.contains("Acknowledged; we are assessing"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Thanks, we reproduced it."));
    assert!(page.body.contains("More detail: port 8443."));
    assert!(
        !page.body.contains("INTERNAL"),
        "internal notes never reach the reporter"
    );
    let mail = hub
        .wait_for_mail("rita@example.net", "Update on your vulnerability report")
        .await;
    assert!(mail.contains(&id));
    assert!(!mail.contains("INTERNAL"));
    hub.hub.shutdown().await;
}
