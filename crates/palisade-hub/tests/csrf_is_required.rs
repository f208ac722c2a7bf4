//! WEB-1: every state change needs the anti-CSRF token and must come from this origin;
//! nothing changes state on GET.

mod common;

use common::TestHub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_without_the_token_or_from_another_site_fail() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    admin.get("/account").await;
    let good = admin.csrf.clone().expect("token");

    // No token.
    let page = admin.post_raw("/account/tokens", &[("name", "x")]).await;
    assert_eq!(page.status, 403, "{}", page.body);
    // A wrong token.
    let page = admin
        .post_raw(
            "/account/tokens",
            &[
                ("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ("name", "x"),
            ],
        )
        .await;
    assert_eq!(page.status, 403);
    // The pre-session token (double-submit cookie) is not the session's token.
    let mut anon = hub.browser();
    anon.get("/login").await;
    let foreign = anon.csrf.clone().expect("token");
    let page = admin
        .post_raw("/account/tokens", &[("csrf", &foreign), ("name", "x")])
        .await;
    assert_eq!(page.status, 403);
    // The right token, but the browser says the request came from another site.
    let req = admin
        .request(reqwest::Method::POST, "/account/tokens")
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", good.as_str()), ("name", "x")]);
    assert_eq!(admin.send(req).await.status, 403);
    // The right token, but a foreign Origin.
    let req = admin
        .request(reqwest::Method::POST, "/account/tokens")
        .header("origin", "https://evil.example")
        .form(&[("csrf", good.as_str()), ("name", "x")]);
    assert_eq!(admin.send(req).await.status, 403);
    assert!(
        hub.hub
            .db
            .api_tokens(&admin_id(&hub).await)
            .await
            .expect("db")
            .is_empty(),
        "nothing was created"
    );

    // With the token, from this origin: works.
    let origin = hub.hub.url();
    let req = admin
        .request(reqwest::Method::POST, "/account/tokens")
        .header("origin", origin)
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", good.as_str()), ("name", "script")]);
    let page = admin.send(req).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        hub.hub
            .db
            .api_tokens(&admin_id(&hub).await)
            .await
            .expect("db")
            .len(),
        1
    );

    // Sign-in itself needs the pre-session token (login CSRF).
    let mut fresh = hub.browser();
    let page = fresh
        .post_raw(
            "/login",
            &[
                ("username", common::ADMIN),
                ("password", common::ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 403);

    // GET never changes state: logout by GET does not exist.
    let page = admin.get("/logout").await;
    assert_eq!(page.status, 405, "logout is POST only");
    assert_eq!(admin.get("/account").await.status, 200, "still signed in");
    hub.hub.shutdown().await;
}

async fn admin_id(hub: &TestHub) -> palisade_hub::ids::UserId {
    let name = palisade_hub::ids::Username::parse(common::ADMIN).expect("name");
    hub.hub
        .db
        .user_by_username(&name)
        .await
        .expect("db")
        .expect("admin")
        .id
}
