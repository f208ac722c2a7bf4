//! AUTH-11, WEB-3: sessions are server-side, a new token is issued at every sign-in
//! step (a planted token is useless), logout kills the token, and a password change
//! ends the other sessions.

mod common;

use common::{ADMIN, ADMIN_PASSWORD, TestHub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_and_logged_out_tokens_are_worthless() {
    let hub = TestHub::start().await;
    let (mut admin, secret) = hub.setup_admin().await;

    // Cookies carry the safe attributes.
    let mut fresh = hub.browser();
    fresh.get("/login").await;
    let page = fresh
        .post_form(
            "/login",
            &[("username", ADMIN), ("password", ADMIN_PASSWORD)],
        )
        .await;
    let cookie = page.header("set-cookie").to_owned();
    assert!(cookie.starts_with("__Host-palisade_session="), "{cookie}");
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");

    // Fixation: the attacker plants a session token they know (here: a real one, at
    // the MFA stage) in the victim's browser; after the victim signs in, the planted
    // token is not the victim's session and grants nothing.
    let planted = fresh.session().expect("mfa-stage session");
    let mut victim = hub.browser();
    victim
        .cookies
        .insert("__Host-palisade_session".into(), planted.clone());
    victim.get("/login/mfa").await;
    let code = secret.code_at(common::now() + 30).expect("code");
    let page = victim.post_form("/login/mfa", &[("code", &code)]).await;
    assert_eq!(page.location(), "/", "{}", page.body);
    let victims = victim.session().expect("new session");
    assert_ne!(victims, planted, "sign-in issues a new token");
    let mut attacker = hub.browser();
    attacker
        .cookies
        .insert("__Host-palisade_session".into(), planted);
    assert_eq!(
        attacker.get("/account").await.status,
        401,
        "the planted token is dead"
    );

    // Replay after logout: the old token no longer works.
    let acct = victim.get("/account").await;
    assert_eq!(acct.status, 200, "{:?} {}", victim.cookies, acct.body);
    let stolen = victims.clone();
    let out = victim.post_form("/logout", &[]).await;
    assert_eq!(out.location(), "/login");
    let mut thief = hub.browser();
    thief
        .cookies
        .insert("__Host-palisade_session".into(), stolen);
    assert_eq!(
        thief.get("/account").await.status,
        401,
        "logged-out token is refused"
    );

    // A password change ends the other sessions but keeps the current one.
    // (The other session is made directly: a third TOTP sign-in would have to wait
    // for the next 30-second step, since each step is accepted once.)
    let admin_id = hub
        .hub
        .db
        .user_by_username(&palisade_hub::ids::Username::parse(ADMIN).expect("name"))
        .await
        .expect("db")
        .expect("admin")
        .id;
    let (other_token, _) = hub
        .hub
        .db
        .create_session(
            &admin_id,
            palisade_hub::db::sessions::Stage::Full,
            hub.hub.state.auth.session_times,
            "127.0.0.1",
            "other",
        )
        .await
        .expect("session");
    let mut other = hub.browser();
    other
        .cookies
        .insert("__Host-palisade_session".into(), other_token);
    assert_eq!(other.get("/account").await.status, 200);
    admin.get("/account").await;
    let page = admin
        .post_form(
            "/account/password",
            &[
                ("current", ADMIN_PASSWORD),
                ("new_password", "quartz meadow lantern ferry"),
            ],
        )
        .await;
    assert!(page.body.contains("Password changed"), "{}", page.body);
    assert_eq!(
        admin.get("/account").await.status,
        200,
        "current session kept"
    );
    assert_eq!(
        other.get("/account").await.status,
        401,
        "other session ended"
    );

    // A password change needs the current password.
    let page = admin
        .post_form(
            "/account/password",
            &[
                ("current", "not the password at all"),
                ("new_password", "another long passphrase here"),
            ],
        )
        .await;
    assert!(
        page.body.contains("current password is not correct"),
        "{}",
        page.body
    );
    hub.hub.shutdown().await;
}
