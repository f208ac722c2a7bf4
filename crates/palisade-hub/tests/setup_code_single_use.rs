//! AUTH-1, AUTH-2, AUTH-12: no default account; the first administrator is created
//! only with the one-time setup code, which works once, expires, and is gone after setup.

mod common;

use common::{ADMIN_PASSWORD, TestHub};
use palisade_hub::accounts::{self, Actor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_code_works_once_then_setup_is_closed() {
    let hub = TestHub::start().await;
    let code = hub
        .hub
        .setup_code
        .clone()
        .expect("setup code printed at first start");
    assert!(
        palisade_crypto::token::normalize_code(&code).len() * 5 >= 128,
        "≥128 bits: {code}"
    );
    assert_eq!(
        hub.hub.db.users().await.expect("users").len(),
        0,
        "no default account exists"
    );

    // Before setup, nothing but the public pages: the home page sends to /setup.
    let mut b = hub.browser();
    assert_eq!(b.get("/").await.location(), "/setup");

    // A wrong code is refused.
    b.get("/setup").await;
    let r = b
        .post_form(
            "/setup",
            &[
                ("code", "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG"),
                ("username", "mallory"),
                ("email", "m@example.org"),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("not valid"), "{}", r.body);

    let (_admin, _) = hub.setup_admin().await;

    // The same code a second time: setup is closed (404), and the code is used up.
    let mut other = hub.browser();
    assert_eq!(other.get("/setup").await.status, 404);
    other.get("/login").await; // a valid CSRF token, so only the setup rule decides
    let r = other
        .post_form(
            "/setup",
            &[
                ("code", &code),
                ("username", "second"),
                ("email", "s@example.org"),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(!hub.hub.db.setup_code_valid(&code).await.expect("db"));
    assert_eq!(hub.hub.db.users().await.expect("users").len(), 1);

    // `palisade setup --new-code` refuses once an administrator exists.
    let err = accounts::issue_setup_code(&hub.hub.db, &Actor::cli())
        .await
        .expect_err("refused after setup");
    assert!(err.to_string().contains("already complete"), "{err}");
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_replaced_setup_codes_are_refused() {
    let hub = TestHub::start().await;
    let first = hub.hub.setup_code.clone().expect("code");
    // A fresh code (as `palisade setup --new-code` issues) replaces the first one.
    let second = accounts::issue_setup_code(&hub.hub.db, &Actor::cli())
        .await
        .expect("new code");
    assert!(
        !hub.hub.db.setup_code_valid(&first).await.expect("db"),
        "the earlier code no longer works"
    );
    assert!(hub.hub.db.setup_code_valid(&second).await.expect("db"));
    // An expired code (stored already past its 30 minutes) is refused by the form.
    let expired = palisade_crypto::token::human_code(130);
    hub.hub
        .db
        .store_setup_code(&expired, -1)
        .await
        .expect("store");
    let mut b = hub.browser();
    b.get("/setup").await;
    let r = b
        .post_form(
            "/setup",
            &[
                ("code", &expired),
                ("username", "late"),
                ("email", "late@example.org"),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert!(r.body.contains("not valid"), "{}", r.body);
    assert_eq!(hub.hub.db.users().await.expect("users").len(), 0);
    hub.hub.shutdown().await;
}
