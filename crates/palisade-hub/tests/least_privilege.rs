//! ACC-2: roles are enforced on the server, per object. Operators and owners cannot
//! reach administration; API tokens carry their owner's rights and no more; one
//! user cannot act on another user's objects.

mod common;

use common::{ADMIN, TestHub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_and_owners_cannot_administer() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let mut operator = hub.invite(&mut admin, "ops-olga", "operator").await;
    let mut owner = hub.invite(&mut admin, "owner-otto", "owner").await;

    for b in [&mut operator, &mut owner] {
        assert_eq!(b.get("/").await.status, 200);
        assert_eq!(b.get("/users").await.status, 403);
        assert_eq!(b.get("/audit").await.status, 403);
        b.get("/account").await;
        let target = format!("/users/{}/role", user_id(&hub, ADMIN).await);
        let page = b.post_form(&target, &[("role", "owner")]).await;
        assert_eq!(page.status, 403, "cannot demote the admin");
    }
    assert_eq!(admin.get("/users").await.status, 200);
    assert!(
        admin
            .get("/users")
            .await
            .body
            .contains("id=\"users-table\"")
    );

    // API tokens: the owner's token reads /me but not the user list.
    owner.get("/account").await;
    let page = owner
        .post_form("/account/tokens", &[("name", "script")])
        .await;
    let start = page
        .body
        .find("id=\"new-token\">")
        .expect("token shown once")
        + "id=\"new-token\">".len();
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
    let body: serde_json::Value = me.json().await.expect("json");
    assert_eq!(body["username"], "owner-otto");
    assert!(
        body.get("password_hash").is_none() && !body.to_string().contains("argon2"),
        "no secrets in API: {body}"
    );
    let users = client
        .get(hub.url("/api/v1/users"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("users");
    assert_eq!(users.status(), 403);
    // API tokens are for /api/ only: they cannot drive the console (mint tokens,
    // read the account page).
    let console = client
        .get(hub.url("/account"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("account");
    assert_eq!(console.status(), 401);
    let mint = client
        .post(hub.url("/account/tokens"))
        .bearer_auth(&token)
        .form(&[("name", "more")])
        .send()
        .await
        .expect("mint");
    assert_eq!(mint.status(), 401);

    // Per object: the operator cannot revoke the owner's token by its id.
    let owner_id = user_id(&hub, "owner-otto").await;
    let owner_uid = palisade_hub::ids::UserId::parse(&owner_id).expect("id");
    let token_id = hub.hub.db.api_tokens(&owner_uid).await.expect("db")[0]
        .id
        .clone();
    operator.get("/account").await;
    let page = operator
        .post_form(&format!("/account/tokens/{token_id}/revoke"), &[])
        .await;
    assert_eq!(page.status, 404);
    assert_eq!(
        hub.hub.db.api_tokens(&owner_uid).await.expect("db").len(),
        1
    );

    // A disabled account's token stops working at once.
    admin.get("/users").await;
    let page = admin
        .post_form(&format!("/users/{owner_id}/disable"), &[])
        .await;
    assert!(page.body.contains("is disabled"), "{}", page.body);
    let me = client
        .get(hub.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 401);
    assert_eq!(
        owner.get("/account").await.status,
        401,
        "sessions ended too"
    );

    // The console shows which users have MFA.
    let page = admin.get("/users").await;
    assert!(
        page.body.contains("class=\"mfa-yes\"") && page.body.contains("class=\"mfa-no\""),
        "{}",
        page.body
    );
    hub.hub.shutdown().await;
}

async fn user_id(hub: &TestHub, name: &str) -> String {
    let name = palisade_hub::ids::Username::parse(name).expect("name");
    hub.hub
        .db
        .user_by_username(&name)
        .await
        .expect("db")
        .expect("user")
        .id
        .to_string()
}
