//! PRIV-1: a privacy policy must say what data is processed, why, who receives it
//! (third parties included), how long it is kept, the owner's rights and how to use
//! them, and whom to contact. A policy missing any of these is refused, from the
//! console and from the library the CLI uses, with every missing part listed, and
//! nothing is published.

mod common;

use common::TestHub;
use palisade_hub::accounts::Actor;
use palisade_hub::privacy::{self, Change, check_policy};

const COMPLETE: &str = "# Policy\n\n## What data we collect\n\nYour e-mail address.\n\n## Why we collect it\n\nTo run the service.\n\n## Who receives it\n\nNo third parties.\n\n## How long we keep it\n\n30 days.\n\n## Your rights\n\nExport and delete on your account page.\n\n## Contact\n\nprivacy@example.org\n";

fn without(section: &str) -> String {
    let start = COMPLETE.find(section).expect("section");
    let end = COMPLETE[start + 3..]
        .find("## ")
        .map_or(COMPLETE.len(), |i| start + 3 + i);
    format!("{}{}", &COMPLETE[..start], &COMPLETE[end..])
}

#[test]
fn each_required_section_is_checked() {
    assert_eq!(check_policy(COMPLETE), Ok(()));
    for (section, named) in [
        ("## What data", "what data is collected"),
        ("## Why", "why it is collected"),
        ("## Who receives", "who receives it"),
        ("## How long", "how long it is kept"),
        ("## Your rights", "rights"),
        ("## Contact", "contact"),
    ] {
        let problems = check_policy(&without(section)).expect_err(section).0;
        assert!(
            problems
                .iter()
                .any(|p| p.contains("missing section") && p.contains(named)),
            "{section}: {problems:?}"
        );
    }
    // Several missing: all are listed at once.
    let both = without("## Contact").replace("## Your rights", "## Other");
    let problems = check_policy(&both).expect_err("two missing").0;
    assert!(problems.iter().any(|p| p.contains("contact")));
    assert!(problems.iter().any(|p| p.contains("rights")));
    // A heading with nothing under it does not count.
    let empty = COMPLETE.replace("30 days.", "");
    assert!(check_policy(&empty).is_err());
    // Recipients must address third parties, even to say there are none.
    let vague = COMPLETE.replace("No third parties.", "Our staff.");
    let problems = check_policy(&vague).expect_err("third parties").0;
    assert!(
        problems.iter().any(|p| p.contains("third parties")),
        "{problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_policy_is_not_published() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;

    // From the console: refused, every gap listed, the text kept for fixing.
    admin.get("/privacy/publish").await;
    let incomplete = without("## How long");
    let page = admin
        .post_form(
            "/privacy/publish",
            &[
                ("body", &incomplete),
                ("change", "substantive"),
                ("summary", ""),
            ],
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"problems\""), "{}", page.body);
    assert!(page.body.contains("missing section: how long it is kept"));
    assert!(
        page.body.contains("Your rights"),
        "the draft is kept in the form"
    );
    assert!(
        db.current_policy().await.expect("db").is_none(),
        "nothing published"
    );

    // Through the library (the CLI's path): refused too, and audited as a failure.
    let e = privacy::publish(
        db,
        &Actor::cli(),
        &without("## Contact"),
        Change::Minor,
        "",
        "https://127.0.0.1",
    )
    .await
    .expect_err("refused");
    assert!(e.to_string().contains("missing section: contact"), "{e}");
    assert!(db.current_policy().await.expect("db").is_none());
    let audit = db.audit_entries(50, None).await.expect("audit");
    assert!(
        audit
            .iter()
            .filter(|e| e.action == "privacy.publish" && e.outcome == "failure")
            .count()
            >= 2
    );

    // The complete policy is accepted.
    let ok = admin
        .post_form(
            "/privacy/publish",
            &[("body", COMPLETE), ("change", "minor"), ("summary", "")],
        )
        .await;
    assert!(ok.body.contains("Version 1 published"), "{}", ok.body);
    hub.hub.shutdown().await;
}
