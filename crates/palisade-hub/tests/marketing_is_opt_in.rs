//! PRIV-2: marketing e-mail is opt-in: off for every new account, sent only to owners
//! who switched it on, separate from security notices (which always go), withdrawn
//! with one click just like it is given, and each change recorded with its time and
//! audited. Changing it needs the owner's own session and a CSRF token.

mod common;

use common::{TestHub, invite_user};
use palisade_hub::accounts::{self, Actor};
use palisade_hub::ids::Username;
use palisade_hub::privacy::{self, Purpose};

fn marketing_mails(hub: &TestHub, to: &str) -> usize {
    hub.mail_to(to)
        .iter()
        .filter(|m| m.contains("X-Palisade-Category: marketing"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marketing_needs_opt_in_and_withdrawal_is_one_click() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;
    let mut anna = invite_user(&hub, &mut admin, "owner-anna", "owner").await;
    let _bert = invite_user(&hub, &mut admin, "owner-bert", "owner").await;
    let anna_user = db
        .user_by_username(&Username::parse("owner-anna").expect("name"))
        .await
        .expect("db")
        .expect("anna");

    // Off by default, never changed.
    let consent = db
        .consent(&anna_user.id, Purpose::Marketing)
        .await
        .expect("db");
    assert!(!consent.granted);
    assert_eq!(consent.changed_at, None);
    let page = anna.get("/account").await;
    assert!(
        page.body.contains("id=\"marketing-status\">off<"),
        "{}",
        page.body
    );

    // A campaign reaches nobody; a security notice still reaches Anna.
    let sent = privacy::send_marketing(
        db,
        &Actor::cli(),
        "Spring offers",
        "Buy more.",
        "https://127.0.0.1",
    )
    .await
    .expect("send");
    assert_eq!(sent, 0);
    accounts::notify(
        db,
        &anna_user,
        "New sign-in",
        "A new sign-in to your account.",
    )
    .await
    .expect("notify");
    hub.wait_for_mail("owner-anna@example.org", "A new sign-in")
        .await;
    assert_eq!(marketing_mails(&hub, "owner-anna@example.org"), 0);

    // The switch refuses a request without the CSRF token, and anonymous callers.
    let forged = anna
        .post_raw("/account/marketing", &[("marketing", "on")])
        .await;
    assert_eq!(forged.status, 403);
    let mut stranger = hub.browser();
    stranger.get("/login").await;
    let anonymous = stranger
        .post_form("/account/marketing", &[("marketing", "on")])
        .await;
    assert_eq!(anonymous.status, 401);
    assert!(
        !db.consent(&anna_user.id, Purpose::Marketing)
            .await
            .expect("db")
            .granted
    );

    // Anna opts in: recorded with its time, audited, and the next campaign reaches her
    // (and not Bert, who did not).
    anna.get("/account").await;
    let r = anna
        .post_form("/account/marketing", &[("marketing", "on")])
        .await;
    assert_eq!(r.status, 303);
    let consent = db
        .consent(&anna_user.id, Purpose::Marketing)
        .await
        .expect("db");
    assert!(consent.granted);
    assert!(consent.changed_at.is_some());
    let page = anna.get("/account").await;
    assert!(page.body.contains("id=\"marketing-status\">on<"));
    let sent = privacy::send_marketing(
        db,
        &Actor::cli(),
        "Summer offers",
        "Buy more.",
        "https://127.0.0.1",
    )
    .await
    .expect("send");
    assert_eq!(sent, 1);
    let mail = hub
        .wait_for_mail("owner-anna@example.org", "Summer offers")
        .await;
    assert!(mail.contains("X-Palisade-Category: marketing"));
    assert!(
        mail.contains("/account"),
        "every message says how to stop them"
    );
    assert_eq!(marketing_mails(&hub, "owner-bert@example.org"), 0);

    // Withdrawing is one click on the same page, and takes effect at once.
    let r = anna
        .post_form("/account/marketing", &[("marketing", "off")])
        .await;
    assert_eq!(r.status, 303);
    assert!(
        !db.consent(&anna_user.id, Purpose::Marketing)
            .await
            .expect("db")
            .granted
    );
    let sent = privacy::send_marketing(
        db,
        &Actor::cli(),
        "Autumn offers",
        "Buy more.",
        "https://127.0.0.1",
    )
    .await
    .expect("send");
    assert_eq!(sent, 0);
    accounts::notify(
        db,
        &anna_user,
        "Password changed",
        "Your password was changed.",
    )
    .await
    .expect("notify");
    hub.wait_for_mail("owner-anna@example.org", "Your password was changed")
        .await;
    assert_eq!(marketing_mails(&hub, "owner-anna@example.org"), 1);

    let audit = db.audit_entries(100, None).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "consent.give" && e.target == "owner-anna")
    );
    assert!(
        audit
            .iter()
            .any(|e| e.action == "consent.withdraw" && e.target == "owner-anna")
    );
    hub.hub.shutdown().await;
}
