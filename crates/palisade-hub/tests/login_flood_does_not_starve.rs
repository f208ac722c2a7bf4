//! RES-2, AUTH-9: password hashing is bounded (a semaphore over blocking threads), so
//! a flood of sign-in attempts leaves the rest of the hub answering and the real
//! user able to sign in. Liveness is checked, never wall-clock times.

mod common;

use common::TestHub;
use palisade_crypto::password::{Password, hash};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{Email, Username};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_does_not_starve_the_hub() {
    let hub = TestHub::start_with(|c| {
        c.limits.hashing_concurrency = 1;
        c.limits.hashing_queue_timeout_secs = 1;
        c.limits.auth_attempts_per_minute_per_source = 1000;
    })
    .await;
    let password = "juniper cobalt harbour violin";
    let phc = hash(&Password::new(password)).expect("hash");
    hub.hub
        .db
        .insert_user(NewUser {
            username: &Username::parse("real-rita").expect("name"),
            email: &Email::parse("rita@example.org").expect("email"),
            role: Role::Owner,
            status: Status::Active,
            password_hash: Some(&phc),
        })
        .await
        .expect("user");

    let mut flood = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mut b = hub.browser();
        flood.spawn(async move {
            b.get("/login").await;
            let user = format!("attacker-{i}");
            b.post_form(
                "/login",
                &[
                    ("username", user.as_str()),
                    ("password", "wrong wrong wrong wrong"),
                ],
            )
            .await
            .status
        });
    }
    // While the flood runs, the hub keeps answering other requests.
    let mut probe = hub.browser();
    for _ in 0..20 {
        assert_eq!(probe.get("/healthz").await.status, 200);
        assert_eq!(probe.get("/login").await.status, 200);
    }
    let mut statuses = Vec::new();
    while let Some(status) = flood.join_next().await {
        statuses.push(status.expect("task"));
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "wrong-password page or 'busy, retry': {statuses:?}"
    );

    // The real user signs in afterwards.
    let mut rita = hub.browser();
    let page = rita.sign_in("real-rita", password, None).await;
    assert_eq!(page.location(), "/", "{}", page.body);
    hub.hub.shutdown().await;
}
