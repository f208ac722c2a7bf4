//! AUTH-8: TOTP is required for administrators; a code is accepted once (a replayed
//! code is refused, RFC 6238 §5.2) and recovery codes work once each.

mod common;

use common::{ADMIN, ADMIN_PASSWORD, TestHub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_totp_code_is_accepted_only_once() {
    let hub = TestHub::start().await;
    let (mut admin, secret) = hub.setup_admin().await;
    let at = common::now() + 30; // the enrolment used the current step
    let mut first = hub.browser();
    let page = first
        .sign_in(ADMIN, ADMIN_PASSWORD, Some((&secret, at)))
        .await;
    assert_eq!(
        page.location(),
        "/",
        "first use of the code signs in: {}",
        page.body
    );

    // The same code again, from another browser (an attacker who saw it): refused.
    let mut replay = hub.browser();
    let page = replay
        .sign_in(ADMIN, ADMIN_PASSWORD, Some((&secret, at)))
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("not valid"), "{}", page.body);
    assert!(
        replay.get("/account").await.status == 401,
        "no full session from a replayed code"
    );

    // An older code (already-passed step) is refused too.
    let mut old = hub.browser();
    let page = old
        .sign_in(ADMIN, ADMIN_PASSWORD, Some((&secret, at - 60)))
        .await;
    assert!(page.body.contains("not valid"), "{}", page.body);

    // Administrators cannot turn MFA off.
    admin.get("/account").await;
    let page = admin
        .post_form(
            "/account/mfa/disable",
            &[("password", ADMIN_PASSWORD), ("code", "000000")],
        )
        .await;
    assert_eq!(page.status, 403);
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_codes_work_once_each() {
    let hub = TestHub::start().await;
    let code = hub.hub.setup_code.clone().expect("code");
    let mut b = hub.browser();
    b.get("/setup").await;
    b.post_form(
        "/setup",
        &[
            ("code", &code),
            ("username", ADMIN),
            ("email", common::ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
        ],
    )
    .await;
    let secret = common::totp_secret_from(&b.get("/mfa/enrol").await.body);
    let page = b
        .post_form(
            "/mfa/enrol",
            &[("code", &secret.code_at(common::now()).expect("code"))],
        )
        .await;
    let start = page.body.find("<ul id=\"recovery-codes\"").expect("codes");
    let recovery: Vec<String> = page.body[start..]
        .split("<code>")
        .skip(1)
        .take(10)
        .map(|s| s.split('<').next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);

    let mut one = hub.browser();
    one.get("/login").await;
    one.post_form(
        "/login",
        &[("username", ADMIN), ("password", ADMIN_PASSWORD)],
    )
    .await;
    one.get("/login/mfa").await;
    let page = one
        .post_form("/login/mfa", &[("code", &recovery[0].to_lowercase())])
        .await;
    assert_eq!(
        page.location(),
        "/",
        "a recovery code signs in (case and dashes do not matter): {}",
        page.body
    );

    let mut two = hub.browser();
    two.get("/login").await;
    two.post_form(
        "/login",
        &[("username", ADMIN), ("password", ADMIN_PASSWORD)],
    )
    .await;
    two.get("/login/mfa").await;
    let page = two.post_form("/login/mfa", &[("code", &recovery[0])]).await;
    assert!(
        page.body.contains("not valid"),
        "a used recovery code is refused: {}",
        page.body
    );
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mfa_removes_factor_and_password() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let name = palisade_hub::ids::Username::parse(ADMIN).expect("name");
    let user = hub
        .hub
        .db
        .user_by_username(&name)
        .await
        .expect("db")
        .expect("admin");
    palisade_hub::accounts::reset_mfa(
        &hub.hub.db,
        &palisade_hub::accounts::Actor::cli(),
        &user,
        &hub.hub.url(),
    )
    .await
    .expect("reset");
    assert_eq!(admin.get("/account").await.status, 401, "sessions ended");
    // The old password no longer works…
    let mut b = hub.browser();
    let page = b.sign_in(ADMIN, ADMIN_PASSWORD, None).await;
    assert!(page.body.contains("not correct"), "{}", page.body);
    // …the e-mailed link sets a new one, and the administrator must enrol again.
    let mail = hub
        .wait_for_mail(
            common::ADMIN_EMAIL,
            "two-factor authentication and the password",
        )
        .await;
    let token = common::link_token(&mail, "/recover/reset");
    b.get(&format!("/recover/reset?token={token}")).await;
    let done = b
        .post_form(
            "/recover/reset",
            &[
                ("token", &token),
                ("password", "cobalt meadow lantern ferry"),
            ],
        )
        .await;
    assert!(
        done.body.contains("Your password is changed"),
        "{}",
        done.body
    );
    let page = b.sign_in(ADMIN, "cobalt meadow lantern ferry", None).await;
    assert_eq!(page.location(), "/mfa/enrol", "{}", page.body);
    assert_eq!(
        b.get("/users").await.status,
        401,
        "no full session before enrolment"
    );
    let audit = hub.hub.db.audit_entries(50, None).await.expect("audit");
    assert!(audit.iter().any(|e| e.action == "mfa.reset"));
    hub.hub.shutdown().await;
}
