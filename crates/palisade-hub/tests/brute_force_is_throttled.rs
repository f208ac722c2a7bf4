//! AUTH-7: a scripted wrong-password loop from several source addresses is stopped
//! long before 100 guesses reach the account, and the real user can still get in.

mod common;

use common::{ADMIN, ADMIN_EMAIL, ADMIN_PASSWORD, TestHub, link_token};
use palisade_hub::ids::Username;
use std::net::IpAddr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_loop_is_throttled_and_the_owner_recovers() {
    let hub = TestHub::start().await;
    let (_admin, secret) = hub.setup_admin().await;
    let sources: Vec<IpAddr> = (2..=5)
        .map(|i| format!("127.0.0.{i}").parse().expect("ip"))
        .collect();
    let mut browsers: Vec<_> = sources.iter().map(|ip| hub.browser_from(*ip)).collect();
    for b in &mut browsers {
        b.get("/login").await;
    }
    let (mut rate_limited, mut locked, mut plain_failures) = (0, 0, 0);
    for attempt in 0..100 {
        let b = &mut browsers[attempt % sources.len()];
        let guess = format!("wrong guess number {attempt:03}");
        let page = b
            .post_form("/login", &[("username", ADMIN), ("password", &guess)])
            .await;
        match page.status {
            429 => rate_limited += 1,
            200 if page.body.contains("Too many failed attempts")
                || page.body.contains("locked") =>
            {
                locked += 1
            }
            200 if page.body.contains("not correct") => plain_failures += 1,
            other => panic!("unexpected answer {other}: {}", page.body),
        }
        assert_ne!(page.status, 303, "a wrong password never signs in");
    }
    let user = hub
        .hub
        .db
        .user_by_username(&Username::parse(ADMIN).expect("name"))
        .await
        .expect("db")
        .expect("admin");
    // Only attempts that reached the password check count as failures.
    assert!(
        user.failed_logins < 20,
        "guesses that reached the account: {}",
        user.failed_logins
    );
    assert!(
        plain_failures <= 5,
        "only the first few guesses are even evaluated: {plain_failures}"
    );
    assert!(
        locked + rate_limited >= 90,
        "locked {locked}, rate-limited {rate_limited}"
    );
    assert!(
        user.is_locked(palisade_hub::db::now()),
        "the account is in a delay"
    );

    // Even the right password is refused while the account is locked…
    let mut owner = hub.browser_from("127.0.0.9".parse().expect("ip"));
    let page = owner.sign_in(ADMIN, ADMIN_PASSWORD, None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Too many failed attempts"),
        "{}",
        page.body
    );

    // …but the real user recovers with an e-mailed link: new password, lock cleared.
    owner.get("/recover").await;
    owner.post_form("/recover", &[("email", ADMIN_EMAIL)]).await;
    let mail = hub
        .wait_for_mail(ADMIN_EMAIL, "/recover/reset?token=")
        .await;
    let token = link_token(&mail, "/recover/reset");
    let form = owner.get(&format!("/recover/reset?token={token}")).await;
    assert_eq!(form.status, 200);
    let new_password = "gravel lantern osprey thimble";
    let done = owner
        .post_form(
            "/recover/reset",
            &[("token", &token), ("password", new_password)],
        )
        .await;
    assert!(
        done.body.contains("Your password is changed"),
        "{}",
        done.body
    );
    let page = owner
        .sign_in(ADMIN, new_password, Some((&secret, common::now() + 30)))
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location(), "/");
    // The reset link is single use.
    owner.get(&format!("/recover/reset?token={token}")).await;
    let again = owner
        .post_form(
            "/recover/reset",
            &[
                ("token", &token),
                ("password", "another fine long passphrase"),
            ],
        )
        .await;
    assert_eq!(again.status, 400);
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_lock_needs_recovery_or_an_administrator() {
    let hub = TestHub::start().await;
    hub.setup_admin().await;
    let name = Username::parse(ADMIN).expect("name");
    let user = hub
        .hub
        .db
        .user_by_username(&name)
        .await
        .expect("db")
        .expect("admin");
    let actor = palisade_hub::accounts::Actor::anonymous("127.0.0.7");
    let mut last = (0, false);
    for _ in 0..palisade_hub::auth::HARD_LOCK_AT {
        let fresh = hub.hub.db.user(&user.id).await.expect("db").expect("user");
        last = palisade_hub::accounts::record_failure(
            &hub.hub.db,
            &actor,
            &fresh,
            "test",
            "https://hub",
        )
        .await
        .expect("record");
    }
    assert!(
        last.1,
        "hard lock after {} failures (below 100)",
        palisade_hub::auth::HARD_LOCK_AT
    );
    // The owner is told, with a recovery link.
    let mail = hub.wait_for_mail(ADMIN_EMAIL, "locked").await;
    assert!(mail.contains("/recover/reset?token="), "{mail}");
    // An administrator (here the CLI) can unlock.
    let locked = hub.hub.db.user(&user.id).await.expect("db").expect("user");
    assert!(
        locked.is_locked(i64::MAX / 2),
        "hard lock does not expire by itself"
    );
    palisade_hub::accounts::unlock(&hub.hub.db, &palisade_hub::accounts::Actor::cli(), &locked)
        .await
        .expect("unlock");
    let unlocked = hub.hub.db.user(&user.id).await.expect("db").expect("user");
    assert!(!unlocked.is_locked(palisade_hub::db::now()));
    assert_eq!(unlocked.failed_logins, 0);
    hub.hub.shutdown().await;
}
