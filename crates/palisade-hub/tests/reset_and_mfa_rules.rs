//! AUTH-3, AUTH-4, AUTH-11: a password reset by e-mailed link revokes every API token of
//! the account and activates an account still waiting for e-mail verification (the link
//! proves the address); an account whose short password is allowed only with MFA
//! cannot turn MFA off.

mod common;

use common::{TestHub, link_token};
use palisade_crypto::password::{Password, hash};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{Email, Username};

async fn owner(hub: &TestHub, name: &str, password: &str, status: Status) {
    let phc = hash(&Password::new(password)).expect("hash");
    hub.hub
        .db
        .insert_user(NewUser {
            username: &Username::parse(name).expect("name"),
            email: &Email::parse(&format!("{name}@example.org")).expect("email"),
            role: Role::Owner,
            status,
            password_hash: Some(&phc),
        })
        .await
        .expect("user");
}

async fn reset(hub: &TestHub, name: &str, new_password: &str) {
    let mut b = hub.browser();
    b.get("/recover").await;
    b.post_form("/recover", &[("email", &format!("{name}@example.org"))])
        .await;
    let mail = hub
        .wait_for_mail(&format!("{name}@example.org"), "/recover/reset?token=")
        .await;
    let token = link_token(&mail, "/recover/reset");
    b.get(&format!("/recover/reset?token={token}")).await;
    let page = b
        .post_form(
            "/recover/reset",
            &[("token", &token), ("password", new_password)],
        )
        .await;
    assert!(
        page.body.contains("Your password is changed"),
        "{}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_revokes_api_tokens_and_verifies_a_pending_account() {
    let hub = TestHub::start().await;
    owner(
        &hub,
        "token-tina",
        "juniper cobalt harbour violin",
        Status::Active,
    )
    .await;
    let mut tina = hub.browser();
    assert_eq!(
        tina.sign_in("token-tina", "juniper cobalt harbour violin", None)
            .await
            .location(),
        "/"
    );
    tina.get("/account").await;
    let page = tina
        .post_form("/account/tokens", &[("name", "script")])
        .await;
    let start = page.body.find("id=\"new-token\">").expect("token") + "id=\"new-token\">".len();
    let token: String = page.body[start..]
        .chars()
        .take_while(|c| *c != '<')
        .collect();
    let client = common::client(&hub, None);
    let me = client
        .get(hub.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200);
    reset(&hub, "token-tina", "gravel lantern osprey thimble").await;
    let me = client
        .get(hub.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 401, "the reset revoked the token");

    owner(
        &hub,
        "pending-pete",
        "juniper cobalt harbour violin",
        Status::Pending,
    )
    .await;
    let mut pete = hub.browser();
    let page = pete
        .sign_in("pending-pete", "juniper cobalt harbour violin", None)
        .await;
    assert!(
        page.body.contains("Confirm your e-mail address first"),
        "{}",
        page.body
    );
    reset(&hub, "pending-pete", "quartz meadow lantern ferry").await;
    assert_eq!(
        pete.sign_in("pending-pete", "quartz meadow lantern ferry", None)
            .await
            .location(),
        "/"
    );
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_password_keeps_mfa_on() {
    let hub = TestHub::start().await;
    owner(
        &hub,
        "short-sam",
        "juniper cobalt harbour violin",
        Status::Active,
    )
    .await;
    let mut sam = hub.browser();
    sam.sign_in("short-sam", "juniper cobalt harbour violin", None)
        .await;
    sam.get("/account").await;
    assert_eq!(
        sam.post_form("/account/mfa/start", &[]).await.location(),
        "/mfa/enrol"
    );
    let secret = common::totp_secret_from(&sam.get("/mfa/enrol").await.body);
    let page = sam
        .post_form(
            "/mfa/enrol",
            &[("code", &secret.code_at(common::now()).expect("code"))],
        )
        .await;
    assert!(page.body.contains("recovery-codes"), "{}", page.body);
    sam.get("/account").await;
    // With MFA on, 8 characters are enough…
    let page = sam
        .post_form(
            "/account/password",
            &[
                ("current", "juniper cobalt harbour violin"),
                ("new_password", "rv8#qpL2"),
            ],
        )
        .await;
    assert!(page.body.contains("Password changed"), "{}", page.body);
    // …and so MFA cannot be turned off until the password is long again.
    let code = secret.code_at(common::now() + 30).expect("code");
    let page = sam
        .post_form(
            "/account/mfa/disable",
            &[("password", "rv8#qpL2"), ("code", &code)],
        )
        .await;
    assert!(
        page.body.contains("at least 15 characters"),
        "{}",
        page.body
    );
    let user = hub
        .hub
        .db
        .user_by_username(&Username::parse("short-sam").expect("name"))
        .await
        .expect("db")
        .expect("user");
    assert!(user.has_mfa(), "MFA stays on");
    hub.hub.shutdown().await;
}
