//! PRIV-1: a substantive policy change notifies every owner (e-mail and a banner on
//! the page they are sent to) and each owner must accept it before using any other
//! console page; the acceptance (version, time) is recorded and audited. A minor
//! change asks nobody. Staff are not stopped, and a forged acceptance of a version
//! that is not current is refused.

mod common;

use common::{TestHub, invite_user};
use palisade_hub::ids::Username;

const POLICY: &str = "# Policy\n\n## What data we collect\n\nYour e-mail address.\n\n## Why we collect it\n\nTo run the service.\n\n## Who receives it\n\nNo third parties.\n\n## How long we keep it\n\n30 days.\n\n## Your rights\n\nExport and delete on your account page.\n\n## Contact\n\nprivacy@example.org\n";

async fn publish(admin: &mut common::Browser, body: &str, change: &str, summary: &str) {
    admin.get("/privacy/publish").await;
    let page = admin
        .post_form(
            "/privacy/publish",
            &[("body", body), ("change", change), ("summary", summary)],
        )
        .await;
    assert!(page.body.contains(" published."), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_accept_substantive_changes_and_not_minor_ones() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;
    let mut anna = invite_user(&hub, &mut admin, "owner-anna", "owner").await;
    let mut bert = invite_user(&hub, &mut admin, "owner-bert", "owner").await;
    assert_eq!(
        anna.get("/devices").await.status,
        200,
        "no policy yet: nothing to accept"
    );

    publish(&mut admin, POLICY, "substantive", "first policy").await;

    // Every owner is e-mailed.
    for owner in ["owner-anna", "owner-bert"] {
        let mail = hub
            .wait_for_mail(
                &format!("{owner}@example.org"),
                "changed our privacy policy",
            )
            .await;
        assert!(mail.contains("/privacy"), "{mail}");
        assert!(mail.contains("X-Palisade-Category: service"));
    }

    // Anna is sent to the policy before anything else, with a banner.
    for path in ["/", "/devices", "/account"] {
        let page = anna.get(path).await;
        assert_eq!(page.status, 303, "{path}");
        assert_eq!(page.location(), "/privacy/accept", "{path}");
    }
    let accept = anna.get("/privacy/accept").await;
    assert_eq!(accept.status, 200);
    assert!(accept.body.contains("id=\"policy-banner\""));
    assert!(accept.body.contains("first policy"));
    // State-changing console requests are held back too.
    let held = anna
        .post_form("/account/marketing", &[("marketing", "on")])
        .await;
    assert_eq!(held.location(), "/privacy/accept");

    // Staff are not stopped (they are not owners).
    assert_eq!(admin.get("/users").await.status, 200);

    // A forged acceptance of a version that does not exist is refused.
    anna.get("/privacy/accept").await;
    let forged = anna.post_form("/privacy/accept", &[("version", "7")]).await;
    assert_eq!(forged.status, 409);
    let anna_id = db
        .user_by_username(&Username::parse("owner-anna").expect("name"))
        .await
        .expect("db")
        .expect("anna")
        .id;
    assert_eq!(db.accepted_policy(&anna_id).await.expect("db"), None);

    // Accepting records version and time, and the console opens.
    anna.get("/privacy/accept").await;
    let done = anna.post_form("/privacy/accept", &[("version", "1")]).await;
    assert_eq!(done.location(), "/", "{}", done.body);
    let (version, at) = db
        .accepted_policy(&anna_id)
        .await
        .expect("db")
        .expect("recorded");
    assert_eq!(version, 1);
    assert!(at > 0);
    assert_eq!(anna.get("/devices").await.status, 200);
    let account = anna.get("/account").await;
    assert!(
        account.body.contains("you accepted version 1"),
        "{}",
        account.body
    );
    assert!(
        db.audit_entries(100, None)
            .await
            .expect("audit")
            .iter()
            .any(|e| e.action == "privacy.accept" && e.target == "owner-anna")
    );
    // Bert has not accepted: still held.
    assert_eq!(bert.get("/devices").await.location(), "/privacy/accept");

    // A minor change: nobody is asked, nobody is e-mailed about it.
    publish(
        &mut admin,
        &POLICY.replace("privacy@example.org", "dpo@example.org"),
        "minor",
        "new contact address",
    )
    .await;
    assert_eq!(
        anna.get("/devices").await.status,
        200,
        "a minor change asks nothing"
    );
    assert_eq!(db.acceptance_count(2).await.expect("db"), 0);

    // Another substantive change: asked again.
    publish(
        &mut admin,
        &POLICY.replace("30 days.", "90 days."),
        "substantive",
        "telemetry kept longer",
    )
    .await;
    hub.wait_for_mail("owner-anna@example.org", "telemetry kept longer")
        .await;
    assert_eq!(anna.get("/devices").await.location(), "/privacy/accept");
    let accept = anna.get("/privacy/accept").await;
    assert!(accept.body.contains("version 3"), "{}", accept.body);
    anna.post_form("/privacy/accept", &[("version", "3")]).await;
    assert_eq!(anna.get("/devices").await.status, 200);
    // No e-mail was ever sent about the minor change.
    assert!(
        !hub.mail_to("owner-anna@example.org")
            .iter()
            .any(|m| m.contains("version 2")),
        "owners are not mailed about minor changes"
    );
    hub.hub.shutdown().await;
}
